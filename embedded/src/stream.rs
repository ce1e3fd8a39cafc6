//! `EmbeddedStream`: the durable, sharded stream of `adpipe local`, implementing the core
//! `StreamWriter` and `StreamReader` traits over one append-only log per shard.
//!
//! ```text
//! put(entries) ─ hash key ─▶ shard ─ AppendBatch ─▶ writer thread ─ write + fdatasync ─▶ Accepted
//!                                                        │ tip (watch)
//! read(shard, from) ◀─ pread frames up to the tip ◀──────┘──▶ wait_for_append wakes
//! ```
//!
//! Every handle to one stream directory in a process shares one set of writers (a
//! process-wide registry), so a second `open` sees the first one's appends and two writers
//! never interleave in one file. Separate processes must not open the same stream.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};

use adpipe_core::event::EpochMillis;
use adpipe_core::shard::hash_key;
use adpipe_core::stream::{
    PutEntry, PutOutcome, ReadBatch, SequenceNumber, Shard, StartPosition, StreamError,
    StreamReader, StreamWriter,
};
use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{OpenError, check_name};
use crate::fsutil::create_dir_all_durably;
use crate::layout::{self, route};
use crate::log::{self, ReadFrom};
use crate::writer::{AppendBatch, ShardWriter, Tip};

/// Kinesis' per-entry code for a failure on its side; the producer retries these.
const INTERNAL_FAILURE: &str = "InternalFailure";

/// Kinesis' code for an entry it refuses as invalid; retrying cannot help.
const INVALID_ARGUMENT: &str = "InvalidArgumentException";

/// The streams open in this process by canonical directory; a dead entry is a stream whose
/// last handle is being dropped, and `open` waits on the condvar until its writers are done.
static OPEN_STREAMS: (Mutex<BTreeMap<PathBuf, Weak<Inner>>>, Condvar) =
    (Mutex::new(BTreeMap::new()), Condvar::new());

/// A durable, sharded, append-only stream in `{root}/streams/{name}/`; cheap to clone, and
/// every clone or second `open` of the same directory shares the same logs.
#[derive(Clone)]
pub struct EmbeddedStream {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    registry_key: PathBuf,
    shards: Vec<Shard>,
    logs: Vec<ShardLog>,
    /// An exclusive advisory lock on `{dir}/lock`, held while the stream is open, so a
    /// second process cannot interleave writes into the same logs.
    _lock: File,
}

struct ShardLog {
    path: Arc<Path>,
    reader: Arc<File>,
    tips: Arc<watch::Sender<Tip>>,
    writer: ShardWriter,
}

impl EmbeddedStream {
    /// Creates the stream `name` under `root` with `shards` equal shards, or reopens it:
    /// an existing shard layout is kept (with a warning if `shards` differs) and each shard
    /// log is checked, its torn tail truncated. Blocking: call it at start-up or from
    /// `spawn_blocking`.
    pub fn open(root: &Path, name: &str, shards: u32) -> Result<EmbeddedStream, OpenError> {
        check_name("stream name", name)?;
        let dir = root.join("streams").join(name);
        create_dir_all_durably(&dir).map_err(|source| OpenError::Io {
            step: "create directory",
            path: dir.clone(),
            source,
        })?;
        let key = dir.canonicalize().map_err(|source| OpenError::Io {
            step: "resolve",
            path: dir.clone(),
            source,
        })?;
        let (lock, dropped) = &OPEN_STREAMS;
        let mut open = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match open.get(&key).map(Weak::upgrade) {
                Some(Some(inner)) => {
                    if inner.shards.len() != shards as usize {
                        tracing::warn!(
                            stream = name,
                            existing = inner.shards.len(),
                            requested = shards,
                            "keeping the existing shard layout of the embedded stream; it cannot be resharded"
                        );
                    }
                    return Ok(EmbeddedStream { inner });
                }
                Some(None) => open = dropped.wait(open).unwrap_or_else(PoisonError::into_inner),
                None => break,
            }
        }
        let inner = Arc::new(Inner::open(&dir, name, shards, key.clone())?);
        open.insert(key, Arc::downgrade(&inner));
        Ok(EmbeddedStream { inner })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Waits until `shard_id` holds a durable record after `after` (any record, for
    /// `TrimHorizon`); returns at once if it already does. A reader that got an empty batch
    /// awaits this, next to its flush timer, instead of polling:
    ///
    /// ```no_run
    /// # async fn f(stream: adpipe_embedded::EmbeddedStream) -> Result<(), adpipe_core::stream::StreamError> {
    /// use adpipe_core::stream::{StartPosition, StreamReader};
    /// let from = StartPosition::TrimHorizon;
    /// let batch = stream.read("shardId-000000000000", &from, 1000).await?;
    /// if batch.records.is_empty() {
    ///     stream.wait_for_append("shardId-000000000000", &from).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_append(
        &self,
        shard_id: &str,
        after: &StartPosition,
    ) -> Result<(), StreamError> {
        let log = self.log(shard_id)?;
        let after = match after {
            StartPosition::TrimHorizon => None,
            StartPosition::After(sequence) => Some(offset_of(sequence)?),
        };
        let mut tips = log.tips.subscribe();
        tips.wait_for(|tip| match (tip.last_record, after) {
            (Some(last), Some(after)) => last > after,
            (last, None) => last.is_some(),
            (None, Some(_)) => false,
        })
        .await
        .map_err(|_| StreamError::Unavailable(format!("{} was closed", self.inner.name)))?;
        Ok(())
    }

    fn log(&self, shard_id: &str) -> Result<&ShardLog, StreamError> {
        self.inner
            .shards
            .iter()
            .position(|s| s.id == shard_id)
            .and_then(|index| self.inner.logs.get(index))
            .ok_or_else(|| {
                StreamError::NotFound(format!("shard {shard_id} of stream {}", self.inner.name))
            })
    }
}

impl fmt::Debug for EmbeddedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStream")
            .field("name", &self.inner.name)
            .field("dir", &self.inner.registry_key)
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl Inner {
    fn open(
        dir: &Path,
        name: &str,
        shards: u32,
        registry_key: PathBuf,
    ) -> Result<Inner, OpenError> {
        let lock = lock_directory(dir)?;
        let shards = layout::load_or_create(dir, name, shards)?;
        let mut logs = Vec::with_capacity(shards.len());
        for (index, shard) in shards.iter().enumerate() {
            let path: Arc<Path> = dir.join(format!("{}.log", shard.id)).into();
            let recovered = log::recover(&path)?;
            let io_error = |step, source| OpenError::Io {
                step,
                path: path.to_path_buf(),
                source,
            };
            let appender = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io_error("open", e))?;
            let reader = File::open(&path).map_err(|e| io_error("open", e))?;
            let tip = Tip {
                len: recovered.len,
                last_record: recovered.last_record,
            };
            let tips = Arc::new(watch::Sender::new(tip));
            let writer = ShardWriter::spawn(
                &path,
                appender,
                tip,
                Arc::clone(&tips),
                format!("adpipe-log-{index}"),
            )
            .map_err(|source| OpenError::SpawnWriter {
                path: path.to_path_buf(),
                source,
            })?;
            logs.push(ShardLog {
                path,
                reader: Arc::new(reader),
                tips,
                writer,
            });
        }
        Ok(Inner {
            _lock: lock,
            name: name.to_owned(),
            registry_key,
            shards,
            logs,
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the writers first (each drop waits for its thread), then let a waiting `open`
        // take the directory over.
        self.logs.clear();
        let (lock, dropped) = &OPEN_STREAMS;
        let mut open = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if open
            .get(&self.registry_key)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            open.remove(&self.registry_key);
        }
        dropped.notify_all();
    }
}

#[async_trait]
impl StreamWriter for EmbeddedStream {
    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        Ok(self.inner.shards.clone())
    }

    async fn put(&self, entries: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        let arrival_ms = EpochMillis::now().0;
        let shards = &self.inner.shards;
        let mut outcomes = Vec::with_capacity(entries.len());
        // Per shard: its batch and, per record, the entry index and frame length.
        let mut batches: Vec<Option<(AppendBatch, Vec<(usize, u64)>)>> =
            shards.iter().map(|_| None).collect();
        for (index, entry) in entries.iter().enumerate() {
            let hash = entry
                .explicit_hash_key
                .unwrap_or_else(|| hash_key(&entry.partition_key));
            let Some(slot) = batches.get_mut(route(shards, hash)) else {
                outcomes.push(failed(INTERNAL_FAILURE, "no shard owns the hash key", true));
                continue;
            };
            let (batch, placed) =
                slot.get_or_insert_with(|| (AppendBatch::new(arrival_ms), Vec::new()));
            match batch.push(&entry.partition_key, &entry.data) {
                Ok(frame_len) => {
                    placed.push((index, frame_len));
                    outcomes.push(failed(INTERNAL_FAILURE, "not written", true));
                }
                Err(invalid) => {
                    outcomes.push(failed(INVALID_ARGUMENT, &invalid.to_string(), false))
                }
            }
        }
        // Queue every shard's batch before awaiting any, so the shards write in parallel.
        let pending: Vec<_> = batches
            .into_iter()
            .zip(&self.inner.logs)
            .zip(shards)
            .filter_map(|((slot, log), shard)| {
                let (batch, placed) = slot.filter(|(batch, _)| !batch.is_empty())?;
                Some((shard, placed, log.writer.append(batch)))
            })
            .collect();
        for (shard, placed, appended) in pending {
            let result = appended.await;
            let mut offset = result.as_ref().map_or(0, |base| *base);
            for (index, frame_len) in placed {
                let Some(outcome) = outcomes.get_mut(index) else {
                    continue;
                };
                *outcome = match &result {
                    Ok(_) => PutOutcome::Accepted {
                        shard_id: shard.id.clone(),
                        sequence: SequenceNumber::from_u64(offset),
                    },
                    Err(reason) => failed(INTERNAL_FAILURE, reason, true),
                };
                offset += frame_len;
            }
        }
        Ok(outcomes)
    }
}

fn failed(code: &str, message: &str, retryable: bool) -> PutOutcome {
    PutOutcome::Failed {
        code: code.to_owned(),
        message: message.to_owned(),
        retryable,
    }
}

#[async_trait]
impl StreamReader for EmbeddedStream {
    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        Ok(self.inner.shards.clone())
    }

    /// Records after `from`, up to the last durable one. `millis_behind_latest` is 0 when the
    /// batch reaches the last durable record (or is empty), else the age of its last record;
    /// `shard_end` is always false, as embedded shards never close.
    async fn read(
        &self,
        shard_id: &str,
        from: &StartPosition,
        limit: usize,
    ) -> Result<ReadBatch, StreamError> {
        let log = self.log(shard_id)?;
        let tip = *log.tips.borrow();
        let caught_up = ReadBatch {
            records: Vec::new(),
            millis_behind_latest: Some(0),
            shard_end: false,
        };
        let Some(last_record) = tip.last_record else {
            return match from {
                StartPosition::TrimHorizon => Ok(caught_up),
                StartPosition::After(sequence) => Err(past_end(sequence, shard_id)),
            };
        };
        let start = match from {
            StartPosition::TrimHorizon => ReadFrom::Start,
            StartPosition::After(sequence) => {
                let offset = offset_of(sequence)?;
                if offset > last_record {
                    return Err(past_end(sequence, shard_id));
                }
                if offset == last_record {
                    return Ok(caught_up);
                }
                ReadFrom::After(offset)
            }
        };
        if limit == 0 {
            return Ok(caught_up);
        }
        let (file, path, id) = (
            Arc::clone(&log.reader),
            Arc::clone(&log.path),
            shard_id.to_owned(),
        );
        let records = tokio::task::spawn_blocking(move || {
            log::read_records(&file, &path, &id, start, tip.len, limit)
        })
        .await
        .map_err(|e| StreamError::Unavailable(format!("failed to read {shard_id}: {e}")))??;
        let millis_behind_latest = match records.last() {
            Some(last) if last.sequence.as_u64() != Some(last_record) => {
                u64::try_from(EpochMillis::now().0.saturating_sub(last.arrived_at.0)).unwrap_or(0)
            }
            _ => 0,
        };
        Ok(ReadBatch {
            records,
            millis_behind_latest: Some(millis_behind_latest),
            shard_end: false,
        })
    }
}

fn offset_of(sequence: &SequenceNumber) -> Result<u64, StreamError> {
    sequence.as_u64().ok_or_else(|| {
        StreamError::NotFound(format!(
            "sequence number {sequence} is not a position of the embedded stream"
        ))
    })
}

fn past_end(sequence: &SequenceNumber, shard_id: &str) -> StreamError {
    StreamError::NotFound(format!(
        "sequence number {sequence} is past the last record of {shard_id}"
    ))
}

/// Takes the stream directory's lock, failing at once when another process holds it.
fn lock_directory(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| OpenError::Io {
            step: "open",
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::Io {
            step: "lock",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_second_holder_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_directory(dir.path()).unwrap();
        let err = lock_directory(dir.path()).unwrap_err();
        assert!(matches!(err, OpenError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
    }
}
