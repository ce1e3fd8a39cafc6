//! The adpipe domain, shared by the receiver, the deliverer, the operator and the CLI.
//!
//! ```text
//! spec ─▶ validate            (what a PartnerPipeline may say)
//! source ─▶ event             (partner request ─▶ standard ad events; partner logic lives here only)
//! auth, secrets               (who may send)
//! kpl                         (KPL aggregated records: user records packed, MD5-checked, unpacked)
//! shard                       (partition key ─▶ MD5 hash key ─▶ the open shard that owns it)
//! enrich, lake                (what the deliverer adds and where files go)
//! stream, sink                (the traits the Kinesis/S3 and embedded backends implement)
//! group                       (consumer groups: shard leases, the catalog)
//! ```
//!
//! Nothing here opens a socket; everything is a plain unit test.

pub mod auth;
pub mod enrich;
pub mod event;
pub mod group;
pub mod kpl;
pub mod lake;
pub mod secrets;
pub mod shard;
pub mod sink;
pub mod source;
pub mod spec;
pub mod stream;
pub mod validate;
