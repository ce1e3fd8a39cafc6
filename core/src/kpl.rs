//! The KPL aggregated record format: many small user records packed into one Kinesis record,
//! readable by any standard consumer library (KCL, `aws-kinesis-agg`).
//!
//! ```text
//! F3 89 9A C2 │ protobuf AggregatedRecord                               │ MD5(protobuf)
//!   magic     │ partition_key_table: [k0, k1, …]  (de-duplicated)       │ 16 bytes
//!             │ records: [{partition_key_index, data}, …]               │
//! ```
//!
//! Encoding ([`Aggregator`]) writes each user record's protobuf bytes once, when it is added,
//! into two buffers (the key table and the records); `finish` concatenates them behind the
//! magic and appends the digest. The size of the finished record is known exactly before each
//! add, so an aggregate never exceeds its budget. Decoding ([`deaggregate_shared`]) checks
//! the digest once per aggregate and hands out each user record's data as a slice of the
//! aggregate's buffer, not a copy; it passes a record without the magic through as one plain
//! user record.

use std::collections::HashMap;

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Kinesis' limit on one record: its data plus its partition key, 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Kinesis' limit on a partition key, in Unicode characters; the outer record's key is the
/// first user record's, so a longer key would make the whole aggregate unputtable.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Length of the MD5 trailer.
const DIGEST_BYTES: usize = 16;

/// Bytes an aggregate has before any user record: magic and digest.
const FRAME_BYTES: usize = MAGIC.len() + DIGEST_BYTES;

// Protobuf field keys, `(field number << 3) | wire type`; every field number here is below 16,
// so each key is a single byte.
/// `AggregatedRecord.partition_key_table` (1, length-delimited).
const KEY_TABLE_ENTRY: u8 = (1 << 3) | 2;
/// `AggregatedRecord.records` (3, length-delimited).
const RECORDS_ENTRY: u8 = (3 << 3) | 2;
/// `Record.partition_key_index` (1, varint).
const RECORD_KEY_INDEX: u8 = 1 << 3;
/// `Record.data` (3, length-delimited).
const RECORD_DATA: u8 = (3 << 3) | 2;

/// The protobuf messages, as the KPL's `messages.proto` defines them (proto2).
mod proto {
    /// The payload between the magic and the digest.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AggregatedRecord {
        /// Partition keys, referenced by index from the records.
        #[prost(string, repeated, tag = "1")]
        pub partition_key_table: Vec<String>,
        /// Explicit hash keys (decimal), referenced by index from the records.
        #[prost(string, repeated, tag = "2")]
        pub explicit_hash_key_table: Vec<String>,
        /// The user records.
        #[prost(message, repeated, tag = "3")]
        pub records: Vec<Record>,
    }

    /// One user record.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        /// Index into `partition_key_table`.
        #[prost(uint64, required, tag = "1")]
        pub partition_key_index: u64,
        /// Index into `explicit_hash_key_table`.
        #[prost(uint64, optional, tag = "2")]
        pub explicit_hash_key_index: Option<u64>,
        /// The user record's body: a slice of the aggregate when decoded from `Bytes`.
        #[prost(bytes = "bytes", required, tag = "3")]
        pub data: bytes::Bytes,
        /// Free-form tags, which adpipe neither writes nor reads.
        #[prost(message, repeated, tag = "4")]
        pub tags: Vec<Tag>,
    }

    /// A KPL tag.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tag {
        /// Tag name.
        #[prost(string, required, tag = "1")]
        pub key: String,
        /// Tag value.
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
}

/// One record as the producer meant it, recovered from a (possibly aggregated) stream record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The user record's own partition key (it decided the shard the aggregate went to).
    pub partition_key: String,
    /// The explicit hash key (a decimal 128-bit integer) the producer set, if any.
    pub explicit_hash_key: Option<String>,
    /// The body.
    pub data: Bytes,
}

/// Why a user record was not added to an [`Aggregator`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The aggregate has no room left for this record: `finish` it, then add the record again.
    #[error("failed to add the record: the aggregate is full")]
    Full,
    /// The record does not fit even in an empty aggregate; it can never be sent.
    #[error("failed to add the record: {size} bytes exceed the {max} byte limit even alone")]
    TooLarge {
        /// The aggregate size the record alone would need, partition key included.
        size: usize,
        /// The aggregator's limit.
        max: usize,
    },
    /// Kinesis refuses the partition key: it must have 1 to 256 Unicode characters.
    #[error("failed to add the record: a partition key must have 1 to 256 characters")]
    InvalidKey,
}

/// An aggregate ready to put: one Kinesis record carrying `user_records` user records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregatedRecord {
    /// The outer record's partition key: the first user record's key.
    pub partition_key: String,
    /// Magic, protobuf and digest.
    pub data: Bytes,
    /// How many user records it carries.
    pub user_records: usize,
}

/// Packs user records into aggregated records of at most `max_bytes` (data plus the outer
/// partition key, as Kinesis counts a record against its 1 MiB limit).
#[derive(Debug)]
pub struct Aggregator {
    max_bytes: usize,
    /// Encoded `partition_key_table` entries.
    keys: Vec<u8>,
    /// Encoded `records` entries.
    records: Vec<u8>,
    /// Key → its index in the table.
    key_index: HashMap<String, u64>,
    /// The first user record's key, once there is one.
    first_key: Option<String>,
    /// Where each user record ends in `keys` and `records`: what cutting needs.
    ends: Vec<(usize, usize)>,
}

impl Aggregator {
    /// An empty aggregator whose records will not exceed `max_bytes`; use
    /// [`MAX_RECORD_BYTES`] to fill Kinesis records, less to bound latency or memory.
    pub fn new(max_bytes: usize) -> Aggregator {
        Aggregator {
            max_bytes,
            keys: Vec::new(),
            records: Vec::new(),
            key_index: HashMap::new(),
            first_key: None,
            ends: Vec::new(),
        }
    }

    /// Adds one user record if it fits; on [`AddError::Full`] nothing changed.
    pub fn try_add(&mut self, partition_key: &str, data: &[u8]) -> Result<(), AddError> {
        if partition_key.is_empty() || partition_key.chars().count() > MAX_PARTITION_KEY_CHARS {
            return Err(AddError::InvalidKey);
        }
        let known = self.key_index.get(partition_key).copied();
        let index = known.unwrap_or(self.key_index.len() as u64);
        let key_cost = match known {
            Some(_) => 0,
            None => field_len(partition_key.len()),
        };
        let body = record_body_len(index, data.len());
        let added = key_cost + field_len(body);
        let outer_key = self.first_key.as_deref().unwrap_or(partition_key).len();
        if self.size_bytes() + added + outer_key > self.max_bytes {
            let alone = FRAME_BYTES
                + field_len(partition_key.len())
                + field_len(record_body_len(0, data.len()));
            return Err(if alone + partition_key.len() > self.max_bytes {
                AddError::TooLarge {
                    size: alone + partition_key.len(),
                    max: self.max_bytes,
                }
            } else {
                AddError::Full
            });
        }
        if known.is_none() {
            self.keys.push(KEY_TABLE_ENTRY);
            put_varint(&mut self.keys, partition_key.len() as u64);
            self.keys.extend_from_slice(partition_key.as_bytes());
            self.key_index.insert(partition_key.to_owned(), index);
        }
        self.records.push(RECORDS_ENTRY);
        put_varint(&mut self.records, body as u64);
        self.records.push(RECORD_KEY_INDEX);
        put_varint(&mut self.records, index);
        self.records.push(RECORD_DATA);
        put_varint(&mut self.records, data.len() as u64);
        self.records.extend_from_slice(data);
        if self.first_key.is_none() {
            self.first_key = Some(partition_key.to_owned());
        }
        self.ends.push((self.keys.len(), self.records.len()));
        Ok(())
    }

    /// How many user records are waiting.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no user record is waiting.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The exact length of the data `finish` would return now (the outer partition key not
    /// included).
    pub fn size_bytes(&self) -> usize {
        FRAME_BYTES + self.keys.len() + self.records.len()
    }

    /// The aggregate of every user record added since the last `finish` (`None` if there is
    /// none); the aggregator is then empty and ready for reuse.
    pub fn finish(&mut self) -> Option<AggregatedRecord> {
        self.finish_first(self.ends.len())
    }

    /// The aggregate of the first `count` user records only, cut without encoding them
    /// again: a producer cuts at a billing-unit boundary and sends the rest later. The
    /// aggregator is then empty; the caller adds the records after the cut again.
    pub fn finish_first(&mut self, count: usize) -> Option<AggregatedRecord> {
        let count = count.min(self.ends.len());
        let (keys_end, records_end) = *self.ends.get(count.checked_sub(1)?)?;
        let partition_key = self.first_key.take()?;
        let mut data = Vec::with_capacity(MAGIC.len() + keys_end + records_end + DIGEST_BYTES);
        data.extend_from_slice(&MAGIC);
        data.extend_from_slice(&self.keys[..keys_end]);
        data.extend_from_slice(&self.records[..records_end]);
        let digest = Md5::digest(&data[MAGIC.len()..]);
        data.extend_from_slice(&digest);
        self.keys.clear();
        self.records.clear();
        self.key_index.clear();
        self.ends.clear();
        Some(AggregatedRecord {
            partition_key,
            data: Bytes::from(data),
            user_records: count,
        })
    }
}

/// Why a stream record could not be split into user records.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Magic present but too short to hold a digest.
    #[error("failed to decode the KPL record: {len} bytes is too short for magic and digest")]
    Truncated {
        /// The record's length.
        len: usize,
    },
    /// The MD5 trailer does not match the protobuf bytes.
    #[error("failed to verify the KPL record's MD5 checksum")]
    Checksum,
    /// The protobuf payload is malformed.
    #[error("failed to decode the KPL record's protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A user record points past the end of a key table.
    #[error("failed to resolve the KPL record's {table} index {index} (table has {len} entries)")]
    KeyIndex {
        /// `partition_key_table` or `explicit_hash_key_table`.
        table: &'static str,
        /// The index the user record holds.
        index: u64,
        /// The table's length.
        len: usize,
    },
}

impl DecodeError {
    /// A fixed label for metrics and error files.
    pub fn category(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Checksum => "checksum",
            DecodeError::Protobuf(_) => "protobuf",
            DecodeError::KeyIndex { .. } => "key_index",
        }
    }
}

/// Splits a stream record into its user records. A record without the magic is a plain
/// record: one user record with the outer partition key.
///
/// NOTE: KCL treats a magic-prefixed record whose digest does not match as a plain record. We
/// return [`DecodeError::Checksum`] instead, so the caller sets the record aside with its
/// reason: handing protobuf bytes on as if they were an event would only fail later, further
/// from the cause.
///
/// Copies `data` once; [`deaggregate_shared`] does not copy it at all.
pub fn deaggregate(data: &[u8], partition_key: &str) -> Result<Vec<UserRecord>, DecodeError> {
    deaggregate_shared(&Bytes::copy_from_slice(data), partition_key)
}

/// [`deaggregate`] for a record already in a [`Bytes`] (as a stream read returns it): each
/// user record's data is a slice of `data`, sharing its buffer, so nothing is copied.
pub fn deaggregate_shared(
    data: &Bytes,
    partition_key: &str,
) -> Result<Vec<UserRecord>, DecodeError> {
    if !data.starts_with(&MAGIC) {
        return Ok(vec![UserRecord {
            partition_key: partition_key.to_owned(),
            explicit_hash_key: None,
            data: data.clone(),
        }]);
    }
    let Some(end) = data
        .len()
        .checked_sub(DIGEST_BYTES)
        .filter(|&end| end >= MAGIC.len())
    else {
        return Err(DecodeError::Truncated { len: data.len() });
    };
    let (message, digest) = (data.slice(MAGIC.len()..end), &data[end..]);
    if Md5::digest(&message).as_slice() != digest {
        return Err(DecodeError::Checksum);
    }
    let aggregate = proto::AggregatedRecord::decode(message)?;
    aggregate
        .records
        .into_iter()
        .map(|record| {
            let partition_key = lookup(
                &aggregate.partition_key_table,
                "partition_key_table",
                record.partition_key_index,
            )?;
            let explicit_hash_key = record
                .explicit_hash_key_index
                .map(|index| {
                    lookup(
                        &aggregate.explicit_hash_key_table,
                        "explicit_hash_key_table",
                        index,
                    )
                })
                .transpose()?;
            Ok(UserRecord {
                partition_key,
                explicit_hash_key,
                data: record.data,
            })
        })
        .collect()
}

/// The table entry at `index`.
fn lookup(table: &[String], name: &'static str, index: u64) -> Result<String, DecodeError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .ok_or(DecodeError::KeyIndex {
            table: name,
            index,
            len: table.len(),
        })
}

/// Encoded length of a `Record` holding a key index and `data_len` bytes of data.
fn record_body_len(index: u64, data_len: usize) -> usize {
    1 + varint_len(index) + field_len(data_len)
}

/// Encoded length of a length-delimited field with a one-byte key and `len` bytes of payload.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Bytes a protobuf varint of `value` takes: one per 7 significant bits.
fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a protobuf varint.
fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push(((value & 0x7F) as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic sizes and bytes without a crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn frame(protobuf: &[u8]) -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(protobuf);
        data.extend_from_slice(&Md5::digest(protobuf));
        data
    }

    #[test]
    fn a_cut_aggregate_is_the_aggregate_of_its_first_records() {
        let input = [
            ("s-1", "one"),
            ("s-2", "two"),
            ("s-1", "three"),
            ("s-3", "four"),
        ];
        for cut in 1..=input.len() {
            let mut whole = Aggregator::new(MAX_RECORD_BYTES);
            let mut head = Aggregator::new(MAX_RECORD_BYTES);
            for (i, (key, data)) in input.iter().enumerate() {
                whole.try_add(key, data.as_bytes()).unwrap();
                if i < cut {
                    head.try_add(key, data.as_bytes()).unwrap();
                }
            }
            let cut_off = whole.finish_first(cut).unwrap();
            assert_eq!(cut_off, head.finish().unwrap(), "cut after {cut}");
            assert!(whole.is_empty() && whole.finish().is_none());
        }
        assert!(Aggregator::new(MAX_RECORD_BYTES).finish_first(3).is_none());
    }

    #[test]
    fn round_trip_keeps_keys_data_and_order() {
        let mut agg = Aggregator::new(MAX_RECORD_BYTES);
        let input = [
            ("session-1", b"{\"a\":1}".to_vec()),
            ("séance-ü", vec![0, 255, 0xF3, 0x89]),
            ("session-1", Vec::new()),
        ];
        for (key, data) in &input {
            agg.try_add(key, data).unwrap();
        }
        assert_eq!(agg.len(), 3);
        let size = agg.size_bytes();
        let out = agg.finish().unwrap();
        assert_eq!(out.partition_key, "session-1");
        assert_eq!(out.user_records, 3);
        assert_eq!(out.data.len(), size);
        assert!(out.data.starts_with(&MAGIC));
        let back = deaggregate(&out.data, &out.partition_key).unwrap();
        let got: Vec<_> = back
            .iter()
            .map(|r| (r.partition_key.as_str(), r.data.to_vec()))
            .collect();
        let want: Vec<_> = input.iter().map(|(k, d)| (*k, d.clone())).collect();
        assert_eq!(got, want);
        assert!(back.iter().all(|r| r.explicit_hash_key.is_none()));
    }

    #[test]
    fn shared_records_point_into_the_aggregate() {
        let mut agg = Aggregator::new(MAX_RECORD_BYTES);
        agg.try_add("a", b"first").unwrap();
        agg.try_add("b", b"second").unwrap();
        let out = agg.finish().unwrap();
        let back = deaggregate_shared(&out.data, &out.partition_key).unwrap();
        assert_eq!(back, deaggregate(&out.data, &out.partition_key).unwrap());
        let whole = out.data.as_ptr_range();
        for user in &back {
            assert!(whole.contains(&user.data.as_ptr()), "{user:?} was copied");
        }
        let plain = Bytes::from_static(b"{}");
        let back = deaggregate_shared(&plain, "k").unwrap();
        assert_eq!(back[0].data.as_ptr(), plain.as_ptr());
    }

    #[test]
    fn encoding_matches_prost_and_dedups_keys() {
        let mut agg = Aggregator::new(MAX_RECORD_BYTES);
        for (key, data) in [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4"), ("c", "5")] {
            agg.try_add(key, data.as_bytes()).unwrap();
        }
        let out = agg.finish().unwrap();
        let expected = proto::AggregatedRecord {
            partition_key_table: vec!["a".into(), "b".into(), "c".into()],
            explicit_hash_key_table: Vec::new(),
            records: [(0, "1"), (1, "2"), (0, "3"), (1, "4"), (2, "5")]
                .into_iter()
                .map(|(index, data)| proto::Record {
                    partition_key_index: index,
                    explicit_hash_key_index: None,
                    data: Bytes::copy_from_slice(data.as_bytes()),
                    tags: Vec::new(),
                })
                .collect(),
        };
        assert_eq!(
            out.data.as_ref(),
            frame(&expected.encode_to_vec()).as_slice()
        );
    }

    #[test]
    fn size_never_exceeds_the_budget() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for max in [64, 300, 4096, 70_000] {
            let mut agg = Aggregator::new(max);
            let mut sent = 0;
            let mut received = 0;
            for _ in 0..2_000 {
                let key = format!("k{}", rng.below(40));
                let longest = if rng.below(10) == 0 { 20_000 } else { 200 };
                let len = rng.below(longest);
                let data = rng.bytes(len);
                match agg.try_add(&key, &data) {
                    Ok(()) => {}
                    Err(AddError::Full) => {
                        let expected = agg.size_bytes();
                        let out = agg.finish().unwrap();
                        assert_eq!(out.data.len(), expected);
                        assert!(out.data.len() + out.partition_key.len() <= max);
                        received += deaggregate(&out.data, &out.partition_key).unwrap().len();
                        agg.try_add(&key, &data).unwrap();
                    }
                    Err(AddError::TooLarge { size, .. }) => {
                        assert!(size > max);
                        continue;
                    }
                    Err(AddError::InvalidKey) => unreachable!(),
                }
                sent += 1;
            }
            if let Some(out) = agg.finish() {
                assert!(out.data.len() + out.partition_key.len() <= max);
                received += deaggregate(&out.data, &out.partition_key).unwrap().len();
            }
            assert_eq!(received, sent, "max {max}");
        }
    }

    #[test]
    fn size_bytes_is_exact_and_records_fill_the_budget() {
        let mut agg = Aggregator::new(1000);
        agg.try_add("k", &[7; 200]).unwrap();
        let room = 1000 - agg.size_bytes() - 1;
        // Entry key, body length (2 bytes), index key and index, data key, data length (2).
        let fits = room - (1 + 2 + 1 + 1 + 1 + 2);
        assert_eq!(agg.try_add("k", &vec![1; fits + 1]), Err(AddError::Full));
        agg.try_add("k", &vec![1; fits]).unwrap();
        assert_eq!(agg.size_bytes() + 1, 1000);
        assert_eq!(agg.finish().unwrap().data.len() + 1, 1000);
    }

    #[test]
    fn too_large_and_invalid_keys_are_refused() {
        let mut agg = Aggregator::new(100);
        assert!(matches!(
            agg.try_add("k", &[0; 100]),
            Err(AddError::TooLarge { max: 100, .. })
        ));
        assert_eq!(agg.try_add("", b"x"), Err(AddError::InvalidKey));
        assert_eq!(
            agg.try_add(&"é".repeat(257), b"x"),
            Err(AddError::InvalidKey)
        );
        assert!(agg.is_empty());
        assert_eq!(agg.finish(), None);
        let mut agg = Aggregator::new(MAX_RECORD_BYTES);
        agg.try_add(&"é".repeat(256), b"x").unwrap();
        assert_eq!(agg.finish().unwrap().partition_key.chars().count(), 256);
    }

    #[test]
    fn reuse_after_finish_starts_a_fresh_key_table() {
        let mut agg = Aggregator::new(MAX_RECORD_BYTES);
        agg.try_add("a", b"1").unwrap();
        agg.finish().unwrap();
        agg.try_add("b", b"2").unwrap();
        let out = agg.finish().unwrap();
        assert_eq!(out.partition_key, "b");
        let back = deaggregate(&out.data, &out.partition_key).unwrap();
        assert_eq!(back[0].partition_key, "b");
        assert_eq!(back[0].data.as_ref(), b"2");
    }

    #[test]
    fn plain_records_pass_through() {
        let back = deaggregate(b"{\"event_id\":\"e1\"}", "outer").unwrap();
        assert_eq!(
            back,
            vec![UserRecord {
                partition_key: "outer".into(),
                explicit_hash_key: None,
                data: Bytes::from_static(b"{\"event_id\":\"e1\"}"),
            }]
        );
        assert_eq!(deaggregate(b"", "k").unwrap()[0].data.len(), 0);
    }

    #[test]
    fn corruption_is_detected() {
        let mut agg = Aggregator::new(MAX_RECORD_BYTES);
        agg.try_add("k", b"payload").unwrap();
        let mut data = agg.finish().unwrap().data.to_vec();
        let middle = data.len() / 2;
        data[middle] ^= 1;
        let err = deaggregate(&data, "k").unwrap_err();
        assert!(matches!(err, DecodeError::Checksum));
        assert_eq!(err.category(), "checksum");
        assert!(matches!(
            deaggregate(&[0xF3, 0x89, 0x9A, 0xC2, 1, 2], "k"),
            Err(DecodeError::Truncated { len: 6 })
        ));
        assert!(matches!(
            deaggregate(&frame(&[0xFF, 0xFF]), "k"),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn explicit_hash_keys_and_bad_indexes_are_resolved() {
        let record = |key, ehk| proto::Record {
            partition_key_index: key,
            explicit_hash_key_index: ehk,
            data: Bytes::from_static(b"d"),
            tags: vec![proto::Tag {
                key: "t".into(),
                value: None,
            }],
        };
        let good = proto::AggregatedRecord {
            partition_key_table: vec!["p".into()],
            explicit_hash_key_table: vec!["12345".into()],
            records: vec![record(0, Some(0)), record(0, None)],
        };
        let back = deaggregate(&frame(&good.encode_to_vec()), "outer").unwrap();
        assert_eq!(back[0].partition_key, "p");
        assert_eq!(back[0].explicit_hash_key.as_deref(), Some("12345"));
        assert_eq!(back[1].explicit_hash_key, None);

        let bad_key = proto::AggregatedRecord {
            records: vec![record(1, None)],
            ..good.clone()
        };
        let err = deaggregate(&frame(&bad_key.encode_to_vec()), "outer").unwrap_err();
        assert!(matches!(
            err,
            DecodeError::KeyIndex {
                table: "partition_key_table",
                index: 1,
                len: 1
            }
        ));
        let bad_ehk = proto::AggregatedRecord {
            records: vec![record(0, Some(3))],
            ..good
        };
        let err = deaggregate(&frame(&bad_ehk.encode_to_vec()), "outer").unwrap_err();
        assert_eq!(err.category(), "key_index");
    }

    #[test]
    fn varint_lengths_match_encoding() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
            assert_eq!(buf.len(), prost::length_delimiter_len(value as usize));
        }
    }
}
