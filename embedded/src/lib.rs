//! The embedded backends of `adpipe local`: what Kinesis, DynamoDB and S3 are in the cloud,
//! as files on local disk.
//!
//! ```text
//! receiver ─put─▶ EmbeddedStream ──read / wait_for_append──▶ deliverer ─put─▶ DirectorySink
//!                 {root}/streams/…                            │               {lake}/{key}
//!                                                  FileCheckpoints {root}/checkpoints/…
//! ```
//!
//! - [`EmbeddedStream`] implements `StreamWriter` and `StreamReader`: a durable, sharded,
//!   append-only stream. A put returns `Accepted` only after the records are fsynced, so a
//!   `SIGKILL` (or power loss) after it returned loses nothing.
//! - [`FileCheckpoints`] implements `CheckpointStore`.
//! - [`DirectorySink`] implements `ObjectSink`, replacing files atomically.
//!
//! # On-disk format
//!
//! ```text
//! {root}/streams/{stream}/stream.json                       shard layout (format 1)
//! {root}/streams/{stream}/shardId-000000000000.log          one append-only log per shard
//! {root}/checkpoints/{stream}/{consumer group}/{shard}.json one checkpoint per shard
//! {lake root}/{key}                                         one file per object
//! ```
//!
//! **`stream.json`** is written once, when the stream is created: `{"format": 1, "name": …,
//! "shards": [{"id", "starting_hash_key", "ending_hash_key"}, …]}`, hash keys as decimal
//! strings. The layout is that of a new Kinesis stream of N equal shards (ids
//! `shardId-{index:012}`, `adpipe_core::shard::split_evenly`). Reopening with another shard
//! count keeps it and logs a warning: the embedded stream cannot be resharded.
//!
//! **Shard logs** are sequences of frames, nothing else (no file header; the format version
//! lives in `stream.json`). All integers are little-endian:
//!
//! ```text
//! frame   = payload_len: u32 | crc: u32 | payload[payload_len]
//! payload = arrival_ms: i64 | key_len: u16 | partition key: UTF-8[key_len] | data
//! ```
//!
//! `crc` is the CRC-32 (IEEE, `crc32fast`) of the payload; `arrival_ms` is when the stream
//! accepted the record, in Unix milliseconds. A record's **sequence number is the byte offset
//! of its frame** in the shard log (`SequenceNumber::from_u64`), so sequence numbers grow
//! within a shard and reading after a checkpoint is a seek. Records are routed as Kinesis
//! routes them: to the shard owning `explicit_hash_key`, else the MD5 hash key of the
//! partition key. Entries Kinesis would refuse (partition key not 1–256 characters, data and
//! key over 1 MiB) fail with `InvalidArgumentException`, not retryable.
//!
//! **Durability.** Each shard has a writer thread. It takes every batch queued for the shard,
//! writes them with one vectored `write`, calls `fdatasync` once, and only then publishes the
//! new durable end (the *tip*) and answers the puts: one fsync per shard per group of
//! concurrent puts, never one per record. Readers see records up to the tip only.
//!
//! **Recovery.** Opening a stream walks every frame of every log and checks its CRC. A bad
//! frame at the end — cut short, running past the end of the file, ending exactly at it, or
//! followed only by zero bytes — is a write that was never acknowledged: it is truncated
//! away with a warning. A bad frame followed by other data is an error naming the file and
//! offset, since truncating there could drop acknowledged records. Opening thus reads every
//! log once; logs are never trimmed (there is no retention in `adpipe local`).
//!
//! **Checkpoints** are `{"committed": "4711" | null, "pending": {"first", "last"} | null,
//! "finished": bool}`, sequence numbers as decimal strings. Checkpoints and lake objects are
//! replaced atomically: a hidden temp file `.{name}.tmp-{pid}-{nanos}-{n}` in the same
//! directory, fsync, rename over the final name, fsync the directory.
//!
//! # Sharing
//!
//! Every handle to one stream directory in a process (clones, or a second `open`) shares one
//! set of logs and writer threads, so a reader sees a writer's appends and two writers never
//! interleave in one file. Two processes must not open the same stream at once.
//! [`EmbeddedStream::wait_for_append`] lets a caught-up reader sleep until a shard grows.

mod checkpoint;
mod error;
mod frame;
mod fsutil;
mod layout;
mod log;
mod sink;
mod stream;
mod writer;

pub use checkpoint::FileCheckpoints;
pub use error::OpenError;
pub use frame::{MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES};
pub use sink::DirectorySink;
pub use stream::EmbeddedStream;
