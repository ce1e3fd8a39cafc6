//! Predicting which shard a partition key lands on, as Kinesis decides it:
//!
//! ```text
//! partition key ─MD5─▶ 128-bit hash key (big-endian) ─▶ the open shard whose
//!                                                        [starting, ending] range holds it
//! ```
//!
//! The producer groups user records by predicted shard so that one aggregated record holds
//! only records of one shard, then places the aggregate there with an explicit hash key
//! inside that shard's range.

use md5::{Digest, Md5};

use crate::stream::Shard;

/// The hash key Kinesis derives from a partition key: its MD5 digest as a big-endian integer.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The inclusive hash key ranges Kinesis gives a new stream of `count` shards: each shard
/// gets `2^128 / count` keys (rounded down) and the last one also takes the remainder, up to
/// `u128::MAX`. Empty for zero shards.
pub fn split_evenly(count: u32) -> Vec<(u128, u128)> {
    if count == 0 {
        return Vec::new();
    }
    let n = u128::from(count);
    // floor(2^128 / n) without 2^128: u128::MAX / n, plus one when n divides 2^128 exactly
    // (then u128::MAX leaves remainder n - 1). For n = 1 the single shard ends at MAX anyway.
    let step = if n == 1 {
        0
    } else {
        u128::MAX / n + u128::from(u128::MAX % n == n - 1)
    };
    (0..n)
        .map(|i| {
            let start = i * step;
            let end = if i + 1 == n {
                u128::MAX
            } else {
                start + step - 1
            };
            (start, end)
        })
        .collect()
}

/// The open shards of a stream, ordered by hash key range, for placing records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardMap {
    /// Open shards sorted by `starting_hash_key`.
    shards: Vec<Shard>,
}

impl ShardMap {
    /// A map of the open shards among `shards` (closed ones take no writes).
    pub fn new(shards: &[Shard]) -> ShardMap {
        let mut open: Vec<Shard> = shards.iter().filter(|s| s.open).cloned().collect();
        open.sort_by_key(|s| s.starting_hash_key);
        ShardMap { shards: open }
    }

    /// The open shards, ordered by hash key range.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The open shard owning `hash_key`; `None` only if the shard list has a gap there (a
    /// listing taken mid-reshard).
    pub fn shard_for(&self, hash_key: u128) -> Option<&Shard> {
        let after = self
            .shards
            .partition_point(|s| s.starting_hash_key <= hash_key);
        let candidate = self.shards.get(after.checked_sub(1)?)?;
        candidate.owns(hash_key).then_some(candidate)
    }

    /// An explicit hash key that places a record on `shard_id` (its starting hash key), for
    /// an aggregate whose user records all belong there; `None` if the shard is not open.
    pub fn explicit_hash_key_for(&self, shard_id: &str) -> Option<u128> {
        self.shards
            .iter()
            .find(|s| s.id == shard_id)
            .map(|s| s.starting_hash_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, range: (u128, u128), open: bool) -> Shard {
        Shard {
            id: id.to_owned(),
            starting_hash_key: range.0,
            ending_hash_key: range.1,
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            open,
        }
    }

    fn stream(count: u32) -> Vec<Shard> {
        split_evenly(count)
            .into_iter()
            .enumerate()
            .map(|(i, range)| shard(&format!("shardId-{i:012}"), range, true))
            .collect()
    }

    #[test]
    fn hash_key_is_the_big_endian_md5() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn split_matches_kinesis_ranges() {
        assert_eq!(split_evenly(0), Vec::new());
        assert_eq!(split_evenly(1), vec![(0, u128::MAX)]);
        assert_eq!(
            split_evenly(2),
            vec![(0, (1 << 127) - 1), (1 << 127, u128::MAX)]
        );
        // What Kinesis (and moto) give a 3-shard stream.
        assert_eq!(
            split_evenly(3),
            vec![
                (0, 113427455640312821154458202477256070484),
                (
                    113427455640312821154458202477256070485,
                    226854911280625642308916404954512140969
                ),
                (226854911280625642308916404954512140970, u128::MAX),
            ]
        );
        for count in [4, 5, 7, 64, 1000, 65_536] {
            let ranges = split_evenly(count);
            assert_eq!(ranges.len(), count as usize);
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[ranges.len() - 1].1, u128::MAX);
            assert!(
                ranges
                    .windows(2)
                    .all(|w| w[0].1 + 1 == w[1].0 && w[0].0 <= w[0].1)
            );
            let width = ranges[0].1 - ranges[0].0;
            assert!(
                ranges[..ranges.len() - 1]
                    .iter()
                    .all(|r| r.1 - r.0 == width)
            );
        }
    }

    #[test]
    fn every_hash_key_finds_the_shard_that_owns_it() {
        let map = ShardMap::new(&stream(5));
        for key in ["session-1", "séance", "", "e-42"] {
            let h = hash_key(key);
            let found = map.shard_for(h).unwrap();
            assert!(found.owns(h), "{key}");
        }
        for s in map.shards() {
            assert_eq!(map.shard_for(s.starting_hash_key), Some(s));
            assert_eq!(map.shard_for(s.ending_hash_key), Some(s));
        }
        assert_eq!(map.shard_for(u128::MAX).unwrap().id, "shardId-000000000004");
    }

    #[test]
    fn closed_shards_are_skipped_and_order_does_not_matter() {
        let mut shards = stream(2);
        shards.reverse();
        let parent = shard("shardId-000000000009", (0, u128::MAX), false);
        shards.push(parent);
        let map = ShardMap::new(&shards);
        assert_eq!(map.shards().len(), 2);
        assert_eq!(map.shard_for(0).unwrap().id, "shardId-000000000000");
        assert_eq!(map.explicit_hash_key_for("shardId-000000000009"), None);
    }

    #[test]
    fn explicit_hash_key_lands_on_its_shard() {
        let map = ShardMap::new(&stream(4));
        for s in map.shards() {
            let ehk = map.explicit_hash_key_for(&s.id).unwrap();
            assert_eq!(map.shard_for(ehk).unwrap().id, s.id);
        }
        assert_eq!(map.explicit_hash_key_for("shardId-000000000099"), None);
    }

    #[test]
    fn gaps_and_empty_maps_find_nothing() {
        let map = ShardMap::new(&[shard("a", (10, 20), true), shard("b", (30, 40), true)]);
        assert_eq!(map.shard_for(5), None);
        assert_eq!(map.shard_for(25), None);
        assert_eq!(map.shard_for(41), None);
        assert_eq!(map.shard_for(20).unwrap().id, "a");
        assert_eq!(ShardMap::new(&[]).shard_for(0), None);
    }
}
