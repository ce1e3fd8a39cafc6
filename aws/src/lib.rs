//! The cloud backends of adpipe, on the AWS SDK: the same traits `adpipe local` implements
//! on disk, implemented on Kinesis, S3 and Glue.
//!
//! ```text
//! config::load()  standard chain: AWS_REGION, AWS_ENDPOINT_URL, env / profile / IRSA credentials
//!    ├─▶ KinesisStream   StreamWriter (receiver) + StreamReader (deliverer)
//!    ├─▶ S3Sink          ObjectSink: PutObject, multipart above 16 MiB
//!    └─▶ GlueCatalog     Catalog: database, Hive-partitioned Parquet table, partitions
//! kinesis::admin        create / reshard / describe a stream (operator, tests)
//! ```
//!
//! Nothing here takes an endpoint or a region of its own: tests point the SDK at moto through
//! the standard variables, exactly as a user would.

pub mod config;
pub mod glue;
pub mod kinesis;
pub mod s3;

pub use glue::GlueCatalog;
pub use kinesis::KinesisStream;
pub use s3::S3Sink;
