//! One shard's writer: a dedicated thread appending frames to the shard log with group
//! commit, so the async runtime never blocks on the disk and concurrent puts share fsyncs.
//!
//! ```text
//! put (any task) ── AppendBatch ──▶ channel ──▶ writer thread: take every queued batch
//!                                                 ─▶ seal CRCs ─▶ one vectored write
//!                                                 ─▶ fdatasync ─▶ publish the tip (watch)
//! put ◀── base offset of its batch (oneshot) ◀────── reply to each batch
//! ```
//!
//! Record data is never copied in user space: the frame heads sit in one buffer per batch,
//! the data `Bytes` go to the kernel as they came (`write_vectored`). The tip — the fsynced
//! length, which is all readers may see — moves only after the fsync and before any reply,
//! so a record is readable as soon as its put returns. A failed write or fsync is rolled back
//! by truncating to the old tip; if even that fails the writer refuses every later batch,
//! and reopening the stream recovers the file.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::error::into_io;
use crate::frame::{self, InvalidRecord};

/// How much one group commit takes from the queue before it syncs: bounds the time to the
/// next acknowledgement under a flood of puts, while still sharing one fsync among many.
const GROUP_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// The durable end of a shard log, as readers may see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tip {
    /// The fsynced length of the log: the offset the next record gets.
    pub len: u64,
    /// The offset of the last durable record, `None` while the log is empty.
    pub last_record: Option<u64>,
}

/// Why a batch was not stored; shared by every batch of a failed group.
pub type AppendResult = Result<u64, String>;

/// Records for one shard from one put, in order.
pub struct AppendBatch {
    heads: Vec<u8>,
    frames: Vec<PendingFrame>,
    bytes: u64,
    last_offset: u64,
    arrival_ms: i64,
}

struct PendingFrame {
    head_end: usize,
    data: Bytes,
}

impl AppendBatch {
    /// An empty batch whose records all arrive at `arrival_ms`.
    pub fn new(arrival_ms: i64) -> AppendBatch {
        AppendBatch {
            heads: Vec::new(),
            frames: Vec::new(),
            bytes: 0,
            last_offset: 0,
            arrival_ms,
        }
    }

    /// Adds a record; returns the length of its frame, which places it after the batch's
    /// base offset.
    pub fn push(&mut self, partition_key: &str, data: &Bytes) -> Result<u64, InvalidRecord> {
        let start = self.heads.len();
        frame::encode_head(&mut self.heads, self.arrival_ms, partition_key, data.len())?;
        let frame_len = (self.heads.len() - start + data.len()) as u64;
        self.frames.push(PendingFrame {
            head_end: self.heads.len(),
            data: data.clone(),
        });
        self.last_offset = self.bytes;
        self.bytes += frame_len;
        Ok(frame_len)
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// The handle of a shard's writer thread; dropping it lets the thread finish the queued
/// batches and waits for it.
pub struct ShardWriter {
    queue: Option<mpsc::Sender<(AppendBatch, oneshot::Sender<AppendResult>)>>,
    thread: Option<JoinHandle<()>>,
}

impl ShardWriter {
    /// Starts the writer of the log at `path`, opened for appending, whose durable end is
    /// `tip`; it publishes every new tip on `tips`.
    pub fn spawn(
        path: &Path,
        file: File,
        tip: Tip,
        tips: Arc<watch::Sender<Tip>>,
        thread_name: String,
    ) -> io::Result<ShardWriter> {
        let (queue, batches) = mpsc::channel();
        let log = Log {
            path: path.to_path_buf(),
            file,
            tip,
            tips,
            broken: None,
        };
        let thread = thread::Builder::new()
            .name(thread_name)
            .spawn(move || log.run(&batches))?;
        Ok(ShardWriter {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `batch` at once; the returned future answers its base offset once it is
    /// durable. Queueing before awaiting lets one put hand batches to several shards' writers
    /// that then work in parallel.
    pub fn append(&self, batch: AppendBatch) -> impl Future<Output = AppendResult> + use<> {
        let (reply, answer) = oneshot::channel();
        let queued = match &self.queue {
            Some(queue) => queue.send((batch, reply)).is_ok(),
            None => false,
        };
        async move {
            let stopped = || "the shard's writer thread has stopped".to_owned();
            if !queued {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        }
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // NOTE: joining makes a reopen in this process wait until the old writer is done
            // with the file; a panic in the thread has nothing left to report here.
            let _ = thread.join();
        }
    }
}

/// The writer thread's state.
struct Log {
    path: PathBuf,
    file: File,
    tip: Tip,
    tips: Arc<watch::Sender<Tip>>,
    /// Why the log refuses writes: a failed write could not be rolled back.
    broken: Option<String>,
}

impl Log {
    fn run(mut self, batches: &mpsc::Receiver<(AppendBatch, oneshot::Sender<AppendResult>)>) {
        while let Ok(first) = batches.recv() {
            let mut bytes = first.0.bytes;
            let mut group = vec![first];
            while bytes < GROUP_MAX_BYTES {
                let Ok(next) = batches.try_recv() else { break };
                bytes += next.0.bytes;
                group.push(next);
            }
            self.commit(group);
        }
    }

    /// Writes and syncs a group of batches, publishes the new tip, then answers each batch.
    fn commit(&mut self, mut group: Vec<(AppendBatch, oneshot::Sender<AppendResult>)>) {
        let outcome = match &self.broken {
            Some(reason) => Err(reason.clone()),
            None => self.write_group(&mut group),
        };
        match outcome {
            Ok(()) => {
                let mut bases = Vec::with_capacity(group.len());
                for (batch, _) in &group {
                    bases.push(self.tip.len);
                    if !batch.is_empty() {
                        self.tip.last_record = Some(self.tip.len + batch.last_offset);
                    }
                    self.tip.len += batch.bytes;
                }
                self.tips.send_replace(self.tip);
                for ((_, reply), base) in group.into_iter().zip(bases) {
                    // NOTE: a dropped put future no longer waits; its records are stored
                    // all the same, as with any stream whose client went away.
                    let _ = reply.send(Ok(base));
                }
            }
            Err(reason) => {
                for (_, reply) in group {
                    let _ = reply.send(Err(reason.clone()));
                }
            }
        }
    }

    fn write_group(
        &mut self,
        group: &mut [(AppendBatch, oneshot::Sender<AppendResult>)],
    ) -> Result<(), String> {
        let Err(error) = append_durably(&mut self.file, group) else {
            return Ok(());
        };
        let error = into_io("append to", &self.path, error).to_string();
        if let Err(rollback) = self
            .file
            .set_len(self.tip.len)
            .and_then(|()| self.file.sync_data())
        {
            let reason = format!(
                "{error}; failed to roll {} back to {} bytes ({rollback}), so the shard takes no \
                 more writes until the stream is reopened",
                self.path.display(),
                self.tip.len
            );
            tracing::error!("{reason}");
            self.broken = Some(reason);
        }
        Err(error)
    }
}

/// Seals every frame of `group`, writes them all with as few syscalls as the kernel allows,
/// and syncs the data.
fn append_durably(
    file: &mut File,
    group: &mut [(AppendBatch, oneshot::Sender<AppendResult>)],
) -> io::Result<()> {
    for (batch, _) in group.iter_mut() {
        let mut head_start = 0;
        for pending in &batch.frames {
            frame::seal(
                &mut batch.heads[head_start..pending.head_end],
                &pending.data,
            );
            head_start = pending.head_end;
        }
    }
    let frames: usize = group.iter().map(|(b, _)| b.frames.len()).sum();
    let mut slices = Vec::with_capacity(frames * 2);
    for (batch, _) in group.iter() {
        let mut head_start = 0;
        for pending in &batch.frames {
            slices.push(IoSlice::new(&batch.heads[head_start..pending.head_end]));
            slices.push(IoSlice::new(&pending.data));
            head_start = pending.head_end;
        }
    }
    write_all_vectored(file, &mut slices)?;
    file.sync_data()
}

fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
