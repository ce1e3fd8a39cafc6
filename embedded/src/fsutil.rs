//! Durable file operations shared by the stream, the checkpoints and the sink: an atomic
//! replace (hidden temp file, fsync, rename, fsync directory) and directory creation whose
//! new entries survive a crash. All of it is blocking I/O, for `spawn_blocking` or start-up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::into_io;

/// Tells temp files of one process apart; the process id and the clock tell processes apart.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `body`: a reader sees the old content or the new, never a part, and
/// the new content survives a crash once this returns. The temp file is hidden
/// (`.{name}.tmp-…`) in the same directory, so globs like `*.parquet` never match it.
pub fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("failed to write {}: it has no file name", path.display()),
            )
        })?;
    let temp = dir.join(format!(".{name}.tmp-{}", unique_suffix()));
    let result = write_and_rename(&temp, path, body).and_then(|()| sync_dir(&dir));
    if result.is_err() {
        // NOTE: best effort; after a successful rename the temp name no longer exists.
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_and_rename(temp: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| into_io("create", temp, e))?;
    file.write_all(body)
        .map_err(|e| into_io("write", temp, e))?;
    file.sync_all().map_err(|e| into_io("fsync", temp, e))?;
    fs::rename(temp, path).map_err(|e| into_io("rename", temp, e))
}

/// Creates `dir` and its missing ancestors, fsyncing the parent of each one created so the
/// new entries survive a crash.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut current = dir;
    while !current.as_os_str().is_empty() && !current.exists() {
        missing.push(current);
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }
    for created in missing.into_iter().rev() {
        match fs::create_dir(created) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => {}
            Err(e) => return Err(into_io("create directory", created, e)),
        }
        sync_dir(&parent_of(created))?;
    }
    Ok(())
}

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| into_io("fsync directory", dir, e))
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let count = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{count}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("state.json");
        create_dir_all_durably(path.parent().unwrap()).unwrap();
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }
}
