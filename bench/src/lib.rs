//! What the benchmark tools in `src/bin/` share.
//!
//! ```text
//! workload   acme-video batches: unique ids, current times, sessions; HMAC-SHA256 signatures
//! procfs     CPU seconds and memory of a process, from /proc
//! ```

pub mod procfs;
pub mod workload;
