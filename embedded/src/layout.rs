//! A stream's shard layout: created once as a Kinesis stream of N equal shards would be,
//! persisted in `stream.json`, and read back on every later open so records keep landing on
//! the shards their hash keys always went to.
//!
//! ```json
//! {"format": 1, "name": "ads", "shards": [
//!   {"id": "shardId-000000000000", "starting_hash_key": "0", "ending_hash_key": "170141183460469231731687303715884105727"},
//!   {"id": "shardId-000000000001", "starting_hash_key": "170141183460469231731687303715884105728", "ending_hash_key": "340282366920938463463374607431768211455"}]}
//! ```
//!
//! Hash keys are decimal strings, as Kinesis prints them, since JSON numbers lose precision
//! past 2^53 in most readers.

use std::fs;
use std::io;
use std::path::Path;

use adpipe_core::shard::split_evenly;
use adpipe_core::stream::Shard;
use serde::{Deserialize, Serialize};

use crate::error::{OpenError, check_name};
use crate::fsutil::write_atomically;

/// The metadata file in a stream's directory.
pub const METADATA_FILE: &str = "stream.json";

/// The on-disk format this code reads and writes; bumped when frames or files change.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Metadata {
    format: u32,
    name: String,
    shards: Vec<ShardEntry>,
}

#[derive(Serialize, Deserialize)]
struct ShardEntry {
    id: String,
    starting_hash_key: String,
    ending_hash_key: String,
}

/// The Kinesis-style id of the `index`-th shard of a new stream.
pub fn shard_id(index: usize) -> String {
    format!("shardId-{index:012}")
}

/// Reads the layout of the stream in `dir`, or creates one of `shards` equal shards when the
/// stream is new. An existing layout wins over `shards` (resharding is not supported here).
pub fn load_or_create(dir: &Path, name: &str, shards: u32) -> Result<Vec<Shard>, OpenError> {
    let path = dir.join(METADATA_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let layout = parse(&path, &bytes)?;
            if layout.len() != shards as usize {
                tracing::warn!(
                    stream = name,
                    existing = layout.len(),
                    requested = shards,
                    "keeping the existing shard layout of the embedded stream; it cannot be resharded"
                );
            }
            Ok(layout)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path, name, shards),
        Err(source) => Err(OpenError::Io {
            step: "read",
            path,
            source,
        }),
    }
}

fn create(path: &Path, name: &str, count: u32) -> Result<Vec<Shard>, OpenError> {
    if count == 0 {
        return Err(OpenError::NoShards {
            name: name.to_owned(),
        });
    }
    let shards: Vec<Shard> = split_evenly(count)
        .into_iter()
        .enumerate()
        .map(|(index, (start, end))| Shard {
            id: shard_id(index),
            starting_hash_key: start,
            ending_hash_key: end,
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            open: true,
        })
        .collect();
    let metadata = Metadata {
        format: FORMAT_VERSION,
        name: name.to_owned(),
        shards: shards
            .iter()
            .map(|s| ShardEntry {
                id: s.id.clone(),
                starting_hash_key: s.starting_hash_key.to_string(),
                ending_hash_key: s.ending_hash_key.to_string(),
            })
            .collect(),
    };
    let body = serde_json::to_vec_pretty(&metadata).map_err(|e| OpenError::Metadata {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomically(path, &body).map_err(|source| OpenError::Io {
        step: "write",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(shards)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Shard>, OpenError> {
    let invalid = |message: String| OpenError::Metadata {
        path: path.to_path_buf(),
        message,
    };
    let metadata: Metadata = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if metadata.format != FORMAT_VERSION {
        return Err(invalid(format!(
            "format {} is not the supported format {FORMAT_VERSION}",
            metadata.format
        )));
    }
    let mut shards = Vec::with_capacity(metadata.shards.len());
    for entry in metadata.shards {
        check_name("shard id", &entry.id).map_err(|e| invalid(e.to_string()))?;
        let key = |text: &str| {
            text.parse::<u128>()
                .map_err(|_| invalid(format!("{text:?} is not a hash key")))
        };
        shards.push(Shard {
            starting_hash_key: key(&entry.starting_hash_key)?,
            ending_hash_key: key(&entry.ending_hash_key)?,
            id: entry.id,
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            open: true,
        });
    }
    shards.sort_by_key(|s| s.starting_hash_key);
    if !covers_key_space(&shards) {
        return Err(invalid(
            "the shards' hash key ranges do not cover 0..=2^128-1 without gaps or overlaps"
                .to_owned(),
        ));
    }
    Ok(shards)
}

/// Whether sorted `shards` tile the whole hash key space, so every key has exactly one owner.
fn covers_key_space(shards: &[Shard]) -> bool {
    let (Some(first), Some(last)) = (shards.first(), shards.last()) else {
        return false;
    };
    first.starting_hash_key == 0
        && last.ending_hash_key == u128::MAX
        && shards
            .iter()
            .all(|s| s.starting_hash_key <= s.ending_hash_key)
        && shards
            .windows(2)
            .all(|w| w[0].ending_hash_key.checked_add(1) == Some(w[1].starting_hash_key))
}

/// The index of the shard owning `hash_key` in `shards`, sorted and tiling the key space as
/// `load_or_create` returns them.
pub fn route(shards: &[Shard], hash_key: u128) -> usize {
    shards
        .partition_point(|s| s.starting_hash_key <= hash_key)
        .saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_layout_splits_the_key_space_evenly_and_reads_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let created = load_or_create(dir.path(), "ads", 4).unwrap();
        assert_eq!(created.len(), 4);
        assert_eq!(created[0].id, "shardId-000000000000");
        assert_eq!(created[3].id, "shardId-000000000003");
        assert_eq!(created[1].starting_hash_key, 1u128 << 126);
        assert_eq!(load_or_create(dir.path(), "ads", 4).unwrap(), created);
    }

    #[test]
    fn reopening_with_another_count_keeps_the_existing_layout() {
        let dir = tempfile::tempdir().unwrap();
        let created = load_or_create(dir.path(), "ads", 2).unwrap();
        assert_eq!(load_or_create(dir.path(), "ads", 8).unwrap(), created);
    }

    #[test]
    fn zero_shards_or_a_gap_in_the_key_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_or_create(dir.path(), "ads", 0),
            Err(OpenError::NoShards { .. })
        ));
        let gap = r#"{"format":1,"name":"ads","shards":[
            {"id":"shardId-000000000000","starting_hash_key":"0","ending_hash_key":"10"},
            {"id":"shardId-000000000001","starting_hash_key":"12","ending_hash_key":"340282366920938463463374607431768211455"}]}"#;
        fs::write(dir.path().join(METADATA_FILE), gap).unwrap();
        assert!(matches!(
            load_or_create(dir.path(), "ads", 2),
            Err(OpenError::Metadata { .. })
        ));
    }

    #[test]
    fn every_hash_key_routes_to_the_shard_that_owns_it() {
        let dir = tempfile::tempdir().unwrap();
        let shards = load_or_create(dir.path(), "ads", 3).unwrap();
        for key in [
            0,
            1,
            shards[1].starting_hash_key - 1,
            shards[1].starting_hash_key,
            u128::MAX,
        ] {
            assert!(shards[route(&shards, key)].owns(key), "{key}");
        }
    }
}
