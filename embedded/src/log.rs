//! One shard's append-only log file, read side: recovery when the stream opens, and reading
//! records back. Both walk frames in large positional reads (`pread`), so readers share one
//! file handle with each other and never disturb the writer appending behind them.
//!
//! ```text
//! file:  | frame @0 | frame @31 | frame @1048637 | … | tip (fsynced length) | not yet durable
//! walk:  read ≤ 4 MiB chunk ─▶ decode frames in it ─▶ visit(offset, key, data = chunk slice)
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use adpipe_core::event::EpochMillis;
use adpipe_core::stream::{SequenceNumber, StreamError, StreamRecord};
use bytes::Bytes;

use crate::error::{OpenError, into_io};
use crate::frame::{self, Decoded, HEADER_BYTES, Problem};

/// Bytes per read syscall: one maximum-size record, so catching up takes few syscalls, and a
/// read that stops mid-chunk (at its record or byte limit) leaves little to read again.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Most record bytes one read returns (at least one record, whatever its size), as Kinesis'
/// `GetRecords` caps a call at 10 MiB: a reader catching up on a long backlog holds one
/// read's worth of memory, not `limit` records' worth.
pub const MAX_READ_BYTES: usize = 10 * 1024 * 1024;

/// A valid frame met by `walk`.
pub struct Visit<'a> {
    /// Its offset in the log: the record's sequence number.
    pub offset: u64,
    /// When the stream accepted it.
    pub arrival_ms: i64,
    /// Its partition key.
    pub partition_key: &'a str,
    /// Its data, sharing the read buffer.
    pub data: Bytes,
}

/// The first frame `walk` could not decode.
#[derive(Debug)]
pub struct BadFrame {
    /// Where it starts.
    pub offset: u64,
    /// Where its header says it ends, when there is a header.
    pub claimed_end: Option<u64>,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Calls `visit` for each frame in `from..to` until it returns `false`; returns the first
/// frame that does not decode (one running past `to` included), if any.
pub fn walk(
    file: &File,
    from: u64,
    to: u64,
    mut visit: impl FnMut(Visit<'_>) -> bool,
) -> io::Result<Option<BadFrame>> {
    let mut pos = from;
    let mut min_read = 0;
    while pos < to {
        let want = clamp_len(to - pos, READ_CHUNK_BYTES.max(min_read));
        let chunk = read_chunk(file, pos, want)?;
        min_read = 0;
        let mut off = 0;
        while off < chunk.len() {
            let at = pos + off as u64;
            match frame::decode(&chunk[off..]) {
                Decoded::Frame(f) => {
                    let visited = Visit {
                        offset: at,
                        arrival_ms: f.arrival_ms,
                        partition_key: f.partition_key,
                        data: chunk.slice(off + f.data.start..off + f.data.end),
                    };
                    off += f.frame_len;
                    if !visit(visited) {
                        return Ok(None);
                    }
                }
                Decoded::Incomplete { needed } => {
                    let end = needed.map(|n| at + n as u64);
                    if end.is_none_or(|end| end > to) {
                        return Ok(Some(BadFrame {
                            offset: at,
                            claimed_end: end,
                            problem: Problem::Truncated,
                        }));
                    }
                    // The chunk cut this frame: read again from its start, all of it.
                    min_read = needed.unwrap_or(HEADER_BYTES);
                    break;
                }
                Decoded::Corrupt {
                    problem,
                    claimed_len,
                } => {
                    return Ok(Some(BadFrame {
                        offset: at,
                        claimed_end: Some(at.saturating_add(claimed_len as u64)),
                        problem,
                    }));
                }
            }
        }
        pos += off as u64;
    }
    Ok(None)
}

/// What recovery found in a shard log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The length of the valid frames, which is where appends continue.
    pub len: u64,
    /// The offset of the last valid frame.
    pub last_record: Option<u64>,
}

/// Opens (creating) the shard log at `path`, checks every frame, and truncates a torn tail:
/// a frame cut short, running past the end of the file, ending exactly at it, or followed only
/// by zeroes (space the file system allocated before a crash but never wrote). Any other bad
/// frame has valid-looking data after it; dropping that could lose acknowledged records, so
/// it is an error naming the file and offset.
pub fn recover(path: &Path) -> Result<Recovered, OpenError> {
    let io_error = |step, source| OpenError::Io {
        step,
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_error("open", e))?;
    let file_len = file.metadata().map_err(|e| io_error("stat", e))?.len();
    let mut last_record = None;
    let bad = walk(&file, 0, file_len, |visit| {
        last_record = Some(visit.offset);
        true
    })
    .map_err(|e| io_error("read", e))?;
    let Some(bad) = bad else {
        return Ok(Recovered {
            len: file_len,
            last_record,
        });
    };
    let torn = bad.claimed_end.is_none_or(|end| end >= file_len)
        || only_zeroes(&file, bad.offset, file_len).map_err(|e| io_error("read", e))?;
    if !torn {
        return Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            offset: bad.offset,
            problem: bad.problem,
        });
    }
    tracing::warn!(
        path = %path.display(),
        offset = bad.offset,
        dropped_bytes = file_len - bad.offset,
        problem = %bad.problem,
        "truncating the torn tail of a shard log (a write that was never acknowledged)"
    );
    file.set_len(bad.offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("truncate", e))?;
    Ok(Recovered {
        len: bad.offset,
        last_record,
    })
}

/// Whether every byte of `from..to` is zero.
fn only_zeroes(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut pos = from;
    while pos < to {
        let chunk = read_chunk(file, pos, clamp_len(to - pos, READ_CHUNK_BYTES))?;
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += chunk.len() as u64;
    }
    Ok(true)
}

/// Where a read of a shard starts.
#[derive(Clone, Copy, Debug)]
pub enum ReadFrom {
    /// The first record.
    Start,
    /// The record after the one at this offset.
    After(u64),
}

/// Up to `limit` records and [`MAX_READ_BYTES`] of the log at `path` from `from`, none at or
/// past `tip` (the fsynced length, always a frame boundary). `shard_id` names the shard in
/// errors.
pub fn read_records(
    file: &File,
    path: &Path,
    shard_id: &str,
    from: ReadFrom,
    tip: u64,
    limit: usize,
) -> Result<Vec<StreamRecord>, StreamError> {
    let (start, mut skip) = match from {
        ReadFrom::Start => (0, None),
        ReadFrom::After(offset) => (offset, Some(offset)),
    };
    let mut records = Vec::new();
    let mut bytes = 0;
    let bad = walk(file, start, tip, |visit| {
        if skip.take() == Some(visit.offset) {
            return true;
        }
        bytes += visit.data.len();
        if bytes > MAX_READ_BYTES && !records.is_empty() {
            return false;
        }
        records.push(StreamRecord {
            sequence: SequenceNumber::from_u64(visit.offset),
            partition_key: visit.partition_key.to_owned(),
            data: visit.data,
            arrived_at: EpochMillis(visit.arrival_ms),
        });
        records.len() < limit
    })
    .map_err(|e| into_io("read", path, e))?;
    match bad {
        None => Ok(records),
        Some(bad) if bad.offset == start && skip.is_some() => Err(StreamError::NotFound(format!(
            "sequence number {start} is not the start of a record of {shard_id}"
        ))),
        Some(bad) => Err(StreamError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "failed to read {}: corrupt frame at offset {} ({})",
                path.display(),
                bad.offset,
                bad.problem
            ),
        ))),
    }
}

fn read_chunk(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, pos)?;
    Ok(Bytes::from(buf))
}

/// `remaining` bytes, but at most `cap`.
fn clamp_len(remaining: u64, cap: usize) -> usize {
    usize::try_from(remaining).map_or(cap, |r| r.min(cap))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use super::*;

    fn append(path: &Path, key: &str, data: &[u8]) {
        let mut buf = Vec::new();
        frame::encode_head(&mut buf, 42, key, data.len()).unwrap();
        frame::seal(&mut buf, data);
        buf.extend_from_slice(data);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(&buf).unwrap();
    }

    fn keys(path: &Path, from: ReadFrom, limit: usize) -> Vec<String> {
        let file = File::open(path).unwrap();
        let tip = file.metadata().unwrap().len();
        read_records(&file, path, "shard", from, tip, limit)
            .unwrap()
            .into_iter()
            .map(|r| r.partition_key)
            .collect()
    }

    #[test]
    fn records_larger_than_a_read_chunk_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let big = vec![7u8; frame::MAX_RECORD_BYTES - 1];
        for key in ["a", "b", "c", "d", "e"] {
            append(&path, key, &big);
        }
        let file = File::open(&path).unwrap();
        let tip = file.metadata().unwrap().len();
        let records = read_records(&file, &path, "s", ReadFrom::Start, tip, 10).unwrap();
        assert_eq!(records.len(), 5);
        assert!(records.iter().all(|r| r.data.len() == big.len()));
        let second = records[1].sequence.as_u64().unwrap();
        assert_eq!(keys(&path, ReadFrom::After(second), 2), ["c", "d"]);
    }

    #[test]
    fn a_read_returns_at_most_ten_mib_and_the_next_read_goes_on_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let half = vec![7u8; frame::MAX_RECORD_BYTES / 2];
        let names: Vec<String> = (0..24).map(|i| format!("k{i}")).collect();
        for key in &names {
            append(&path, key, &half);
        }
        let file = File::open(&path).unwrap();
        let tip = file.metadata().unwrap().len();
        let first = read_records(&file, &path, "s", ReadFrom::Start, tip, 100).unwrap();
        assert_eq!(first.len(), MAX_READ_BYTES / half.len());
        let last = first.last().unwrap().sequence.as_u64().unwrap();
        let rest = keys(&path, ReadFrom::After(last), 100);
        assert_eq!(rest, names[first.len()..]);
    }

    #[test]
    fn reading_after_an_offset_that_is_no_record_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        append(&path, "a", b"0123456789");
        append(&path, "b", b"0123456789");
        let file = File::open(&path).unwrap();
        let tip = file.metadata().unwrap().len();
        assert!(matches!(
            read_records(&file, &path, "s", ReadFrom::After(3), tip, 10),
            Err(StreamError::NotFound(_))
        ));
    }

    #[test]
    fn trailing_zeroes_are_a_torn_tail_but_garbage_before_valid_data_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        append(&path, "a", b"first");
        let good_len = fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0; 4096]).unwrap();
        let recovered = recover(&path).unwrap();
        assert_eq!(recovered.len, good_len);
        assert_eq!(recovered.last_record, Some(0));
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);

        append(&path, "b", b"second");
        append(&path, "c", b"third");
        let mut bytes = fs::read(&path).unwrap();
        bytes[good_len as usize + 20] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        match recover(&path) {
            Err(OpenError::Corrupt {
                offset, path: p, ..
            }) => {
                assert_eq!(offset, good_len);
                assert_eq!(p, path);
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }
}
