//! A minimal Kinesis endpoint for the benchmarks: it accepts what producers put, stores
//! nothing but counts, and answers like Kinesis so that both adpipe's receiver (Rust SDK) and
//! the Node.js reference design (JavaScript SDK v3) write to it unchanged.
//!
//! ```text
//! api       PutRecords, PutRecord, ListShards, DescribeStreamSummary (awsJson1_1)
//! ledger    calls, records, events, billed 25 KiB units, shard placement of every event
//! throttle  Kinesis' per-shard write limits, for overload runs
//! server    HTTP/1.1 keep-alive, injected put latency, GET /stats
//! ```
//!
//! An emulator such as moto stores and indexes every record and is far slower than a
//! receiver; this sink costs little per record, so a benchmark measures the producer.

pub mod api;
pub mod ledger;
pub mod server;
pub mod throttle;
