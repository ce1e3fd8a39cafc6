//! The adpipe operator: one `PartnerPipeline` in, a running pipeline out.
//!
//! ```text
//! PartnerPipeline ─▶ controller ─▶ validate ─▶ stream (Kinesis, one step per reconcile)
//!                               ─▶ children as data (children) ─▶ apply only what changed
//!                               ─▶ status conditions + Events
//! leader (Lease) gates the controller; metrics count reconciles, errors and API writes
//! ```

pub mod apply;
pub mod children;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod stream;

/// The field manager of every write and the `app.kubernetes.io/managed-by` label value.
pub const MANAGER: &str = "adpipe-operator";
