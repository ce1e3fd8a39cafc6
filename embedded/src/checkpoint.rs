//! `FileCheckpoints`: a consumer group's per-shard progress as one small JSON file per shard,
//! `{root}/checkpoints/{stream}/{consumer group}/{shard id}.json`, each replaced atomically
//! (temp file, fsync, rename, fsync directory) so a crash leaves the old or the new state.
//!
//! ```json
//! {"committed": "4711", "pending": {"first": "4742", "last": "9001"}, "finished": false}
//! ```
//!
//! Sequence numbers are decimal strings, as in the core `SequenceNumber`; a shard never read
//! has no file and loads as the default checkpoint.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use adpipe_core::stream::{Checkpoint, CheckpointStore, PendingRange, SequenceNumber, StreamError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{OpenError, check_name, into_io};
use crate::fsutil::{create_dir_all_durably, write_atomically};

/// Durable per-shard progress of one consumer group of one embedded stream.
#[derive(Clone, Debug)]
pub struct FileCheckpoints {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Serialises read-modify-write of the files, which `begin` and `commit` are.
    update: Mutex<()>,
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    committed: Option<String>,
    pending: Option<StoredRange>,
    #[serde(default)]
    finished: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredRange {
    first: String,
    last: String,
}

impl FileCheckpoints {
    /// The checkpoints of `consumer_group` reading `stream`, under `root`; creates the
    /// directory. Blocking: call it at start-up or from `spawn_blocking`.
    pub fn open(
        root: &Path,
        stream: &str,
        consumer_group: &str,
    ) -> Result<FileCheckpoints, OpenError> {
        check_name("stream name", stream)?;
        check_name("consumer group", consumer_group)?;
        let dir = root.join("checkpoints").join(stream).join(consumer_group);
        create_dir_all_durably(&dir).map_err(|source| OpenError::Io {
            step: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(FileCheckpoints {
            inner: Arc::new(Inner {
                dir,
                update: Mutex::new(()),
            }),
        })
    }

    /// Runs `change` on the shard's checkpoint and stores the result, off the async runtime.
    async fn update(
        &self,
        shard_id: &str,
        change: impl FnOnce(&mut Checkpoint) + Send + 'static,
    ) -> Result<(), StreamError> {
        let path = self.path(shard_id)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _serialised = inner.update.lock().unwrap_or_else(PoisonError::into_inner);
            let mut checkpoint = read(&path)?;
            change(&mut checkpoint);
            write(&path, &checkpoint)
        })
        .await
        .map_err(|e| StreamError::Unavailable(format!("failed to update checkpoint: {e}")))?
    }

    fn path(&self, shard_id: &str) -> Result<PathBuf, StreamError> {
        check_name("shard id", shard_id)
            .map_err(|_| StreamError::NotFound(format!("shard {shard_id}")))?;
        Ok(self.inner.dir.join(format!("{shard_id}.json")))
    }
}

#[async_trait]
impl CheckpointStore for FileCheckpoints {
    async fn load(&self, shard_id: &str) -> Result<Checkpoint, StreamError> {
        let path = self.path(shard_id)?;
        tokio::task::spawn_blocking(move || read(&path))
            .await
            .map_err(|e| StreamError::Unavailable(format!("failed to load checkpoint: {e}")))?
    }

    async fn begin(&self, shard_id: &str, range: &PendingRange) -> Result<(), StreamError> {
        let range = range.clone();
        self.update(shard_id, move |checkpoint| {
            checkpoint.pending = Some(range);
        })
        .await
    }

    async fn commit(
        &self,
        shard_id: &str,
        last: &SequenceNumber,
        finished: bool,
    ) -> Result<(), StreamError> {
        let last = last.clone();
        self.update(shard_id, move |checkpoint| {
            checkpoint.committed = Some(last);
            checkpoint.pending = None;
            checkpoint.finished = finished;
        })
        .await
    }
}

fn read(path: &Path) -> Result<Checkpoint, StreamError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
        Err(e) => return Err(into_io("read", path, e).into()),
    };
    let invalid = |message: String| {
        StreamError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("failed to parse checkpoint {}: {message}", path.display()),
        ))
    };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let sequence = |text: String| {
        SequenceNumber::parse(&text)
            .ok_or_else(|| invalid(format!("{text:?} is not a sequence number")))
    };
    Ok(Checkpoint {
        committed: stored.committed.map(sequence).transpose()?,
        pending: stored
            .pending
            .map(|range| {
                Ok::<_, StreamError>(PendingRange {
                    first: sequence(range.first)?,
                    last: sequence(range.last)?,
                })
            })
            .transpose()?,
        finished: stored.finished,
    })
}

fn write(path: &Path, checkpoint: &Checkpoint) -> Result<(), StreamError> {
    let stored = Stored {
        committed: checkpoint.committed.as_ref().map(ToString::to_string),
        pending: checkpoint.pending.as_ref().map(|range| StoredRange {
            first: range.first.to_string(),
            last: range.last.to_string(),
        }),
        finished: checkpoint.finished,
    };
    let body = serde_json::to_vec(&stored).map_err(io::Error::other)?;
    write_atomically(path, &body).map_err(StreamError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::from_u64(n)
    }

    #[tokio::test]
    async fn a_shard_never_read_has_the_default_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let store = FileCheckpoints::open(root.path(), "ads", "lake").unwrap();
        assert_eq!(
            store.load("shardId-000000000000").await.unwrap(),
            Checkpoint::default()
        );
    }

    #[tokio::test]
    async fn begin_records_the_pending_range_and_commit_moves_past_it() {
        let root = tempfile::tempdir().unwrap();
        let store = FileCheckpoints::open(root.path(), "ads", "lake").unwrap();
        let shard = "shardId-000000000001";
        store.commit(shard, &seq(10), false).await.unwrap();
        let range = PendingRange {
            first: seq(20),
            last: seq(90),
        };
        store.begin(shard, &range).await.unwrap();
        assert_eq!(
            store.load(shard).await.unwrap(),
            Checkpoint {
                committed: Some(seq(10)),
                pending: Some(range),
                finished: false,
            }
        );
        store.commit(shard, &seq(90), true).await.unwrap();
        assert_eq!(
            store.load(shard).await.unwrap(),
            Checkpoint {
                committed: Some(seq(90)),
                pending: None,
                finished: true,
            }
        );
    }

    #[tokio::test]
    async fn checkpoints_persist_in_the_documented_file() {
        let root = tempfile::tempdir().unwrap();
        let shard = "shardId-000000000000";
        let store = FileCheckpoints::open(root.path(), "ads", "lake").unwrap();
        store.commit(shard, &seq(4711), false).await.unwrap();
        drop(store);

        let file = root
            .path()
            .join("checkpoints/ads/lake/shardId-000000000000.json");
        let json: serde_json::Value = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
        assert_eq!(json["committed"], "4711");

        let reopened = FileCheckpoints::open(root.path(), "ads", "lake").unwrap();
        assert_eq!(
            reopened.load(shard).await.unwrap().committed,
            Some(seq(4711))
        );
        let other_group = FileCheckpoints::open(root.path(), "ads", "other").unwrap();
        assert_eq!(
            other_group.load(shard).await.unwrap(),
            Checkpoint::default()
        );
    }

    #[tokio::test]
    async fn a_shard_id_that_is_no_file_name_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = FileCheckpoints::open(root.path(), "ads", "lake").unwrap();
        assert!(matches!(
            store.load("../escape").await,
            Err(StreamError::NotFound(_))
        ));
    }
}
