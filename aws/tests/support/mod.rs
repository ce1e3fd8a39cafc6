//! The moto server and helpers of `adpipe-testkit`, shared by every crate's AWS tests.

pub use adpipe_testkit::{REGION, moto, unique};
