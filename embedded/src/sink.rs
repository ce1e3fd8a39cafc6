//! `DirectorySink`: the lake of `adpipe local`, an `ObjectSink` storing object `key` as the
//! file `{lake root}/{key}`.
//!
//! ```text
//! put(key, body) ─▶ create missing parent dirs (fsync their parents)
//!                ─▶ write .{name}.tmp-{unique} beside the final name ─▶ fsync
//!                ─▶ rename over {name} ─▶ fsync the directory ─▶ Ok
//! ```
//!
//! Readers such as DuckDB never see a partial file, and writing a key again replaces the file
//! in one step, which is what makes the deliverer's replays idempotent. A crash can leave a
//! hidden temp file behind; no lake glob (`*.parquet`, `*.jsonl.gz`) matches it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use adpipe_core::sink::{ObjectSink, SinkError};
use async_trait::async_trait;
use bytes::Bytes;

use crate::fsutil::{create_dir_all_durably, write_atomically};

/// An object sink over a local directory, for `adpipe local`'s lake.
#[derive(Clone, Debug)]
pub struct DirectorySink {
    root: Arc<Path>,
}

impl DirectorySink {
    /// A sink writing under `lake_root`, which is created on the first put if missing.
    pub fn new(lake_root: impl Into<PathBuf>) -> DirectorySink {
        DirectorySink {
            root: lake_root.into().into(),
        }
    }

    /// The lake root, for telling users where data lands.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`; `None` if the key is empty or would leave the root.
    fn path_of(&self, key: &str) -> Option<PathBuf> {
        let plain = !key.contains('\0')
            && key
                .split('/')
                .all(|name| !name.is_empty() && name != "." && name != "..");
        plain.then(|| self.root.join(key))
    }
}

#[async_trait]
impl ObjectSink for DirectorySink {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let Some(path) = self.path_of(key) else {
            return Err(SinkError::Write {
                key: key.to_owned(),
                message: "the key must be a relative path of plain names, inside the lake"
                    .to_owned(),
            });
        };
        let written = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                create_dir_all_durably(parent)?;
            }
            write_atomically(&path, &body)
        })
        .await;
        match written {
            Ok(result) => result.map_err(|source| SinkError::Io {
                key: key.to_owned(),
                source,
            }),
            Err(join) => Err(SinkError::Write {
                key: key.to_owned(),
                message: format!("the write task failed: {join}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const KEY: &str = "events/partner=acme/dt=2026-05-01/hour=07/shardId-000000000000-0-42.parquet";

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn an_object_lands_under_its_key_and_a_rewrite_replaces_it() {
        let lake = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(lake.path().join("lake"));
        sink.put(KEY, Bytes::from_static(b"first version, longer"))
            .await
            .unwrap();
        sink.put(KEY, Bytes::from_static(b"second")).await.unwrap();

        let path = lake.path().join("lake").join(KEY);
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            files_in(path.parent().unwrap()),
            ["shardId-000000000000-0-42.parquet"],
            "no temp file may stay behind"
        );
    }

    #[tokio::test]
    async fn keys_that_would_leave_the_lake_are_refused() {
        let lake = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(lake.path().join("lake"));
        for key in [
            "",
            "/etc/passwd",
            "../outside",
            "a/../../outside",
            "a/./b",
            "a//b",
            "dir/",
        ] {
            assert!(
                matches!(
                    sink.put(key, Bytes::from_static(b"x")).await,
                    Err(SinkError::Write { .. })
                ),
                "{key:?} accepted"
            );
        }
        assert_eq!(files_in(lake.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn concurrent_rewrites_of_one_key_leave_one_whole_version() {
        let lake = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(lake.path());
        let bodies: Vec<Bytes> = (0..8u8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
        let writes: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let sink = sink.clone();
                tokio::spawn(async move { sink.put("dir/obj.bin", body).await })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        let stored = fs::read(lake.path().join("dir/obj.bin")).unwrap();
        assert!(bodies.iter().any(|b| b[..] == stored[..]));
        assert_eq!(files_in(&lake.path().join("dir")), ["obj.bin"]);
    }
}
