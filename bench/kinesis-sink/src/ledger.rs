//! The sink's books: what every stored record costs and whether its events sit on the right
//! shard.
//!
//! ```text
//! record (partition key, explicit hash key?, data) on shard S
//!   ├─ billed units: ceil((key + data bytes) / 25 KiB)       what Kinesis charges
//!   ├─ ideal units:  (key + data bytes) / 25 KiB              what perfect packing would cost
//!   └─ KPL de-aggregation ─▶ each user record's own shard == S ? correct : misplaced
//!                        └─▶ `event_id` of each event ─▶ ids file (optional)
//! ```
//!
//! A consumer reading shard S sees every event of the aggregate; an event whose key belongs
//! to another shard is read by the wrong worker, out of order with the rest of its session.
//! That is what "misplaced" counts.

use std::collections::BTreeMap;
use std::io::{self, Write};

use adpipe_core::kpl;
use adpipe_core::shard::{hash_key, split_evenly};
use serde::Serialize;

/// Kinesis bills PUT payload in 25 KB units per record, rounded up; a 1 MiB record is 40
/// units, so the KB is 1024 bytes. The record's size is its data plus its partition key.
pub const PUT_PAYLOAD_UNIT_BYTES: u64 = 25 * 1024;

/// What the stream writes before a shard's sequence counter, so sequence numbers look like
/// Kinesis' long decimal ones and sort per shard.
const SEQUENCE_PREFIX: u64 = 49_000;

/// The field of a standard ad event (on the stream) whose value the ids file records.
const EVENT_ID_FIELD: &[u8] = br#""event_id":""#;

/// One shard: its hash key range and what was stored on it.
#[derive(Debug, Clone)]
pub struct ShardBook {
    /// `shardId-000000000000` and so on, as Kinesis names the shards of a new stream.
    pub id: String,
    /// First hash key the shard owns.
    pub starting_hash_key: u128,
    /// Last hash key the shard owns (inclusive).
    pub ending_hash_key: u128,
    records: u64,
    user_records: u64,
    bytes: u64,
}

impl ShardBook {
    /// The sequence number of the shard's first record, for `ListShards`.
    pub fn starting_sequence_number(&self, index: usize) -> String {
        sequence_number(index, 0)
    }
}

/// Counters over every record stored so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Kinesis records stored.
    pub records: u64,
    /// Events in them (an aggregated record holds many, a plain one is one).
    pub user_records: u64,
    /// Data plus partition key bytes of the stored records.
    pub bytes: u64,
    /// PUT payload units Kinesis would bill for them.
    pub billed_units: u64,
    /// Records in the KPL aggregated format.
    pub aggregated_records: u64,
    /// Events inside aggregated records.
    pub aggregated_user_records: u64,
    /// Events stored on a shard their own key does not belong to.
    pub misplaced_user_records: u64,
    /// Aggregated records holding at least one misplaced event.
    pub records_with_misplaced: u64,
    /// Records with the KPL magic that do not decode (bad digest, bad protobuf).
    pub undecodable_records: u64,
    /// Records refused with `ProvisionedThroughputExceededException`.
    pub throttled_records: u64,
    /// Whole calls refused (invalid requests, unknown stream or operation).
    pub rejected_calls: u64,
}

/// Per-shard figures in [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardFigures {
    /// The shard id.
    pub id: String,
    /// Records stored on it.
    pub records: u64,
    /// Events in them.
    pub user_records: u64,
    /// Their data plus partition key bytes.
    pub bytes: u64,
}

/// Everything `GET /stats` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The stream's name.
    pub stream: String,
    /// Calls by operation (`PutRecords`, `ListShards`, …).
    pub calls: BTreeMap<String, u64>,
    /// The counters.
    #[serde(flatten)]
    pub totals: Totals,
    /// Units a producer packing every byte into full units would pay: bytes / 25 KiB.
    pub ideal_units: f64,
    /// The shards.
    pub per_shard: Vec<ShardFigures>,
}

/// The books of one stream.
pub struct Ledger {
    stream: String,
    shards: Vec<ShardBook>,
    totals: Totals,
    calls: BTreeMap<String, u64>,
    ids: Option<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("stream", &self.stream)
            .field("shards", &self.shards.len())
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A stream of `shard_count` shards splitting the hash key space evenly, as Kinesis does
    /// for a new stream. With `ids`, the `event_id` of every stored event is written there, one
    /// a line.
    pub fn new(stream: &str, shard_count: u32, ids: Option<Box<dyn Write + Send>>) -> Ledger {
        let shards = split_evenly(shard_count.max(1))
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| ShardBook {
                id: format!("shardId-{i:012}"),
                starting_hash_key: start,
                ending_hash_key: end,
                records: 0,
                user_records: 0,
                bytes: 0,
            })
            .collect();
        Ledger {
            stream: stream.to_owned(),
            shards,
            totals: Totals::default(),
            calls: BTreeMap::new(),
            ids,
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The shards, in hash key order.
    pub fn shards(&self) -> &[ShardBook] {
        &self.shards
    }

    /// Counts one call of `operation`.
    pub fn called(&mut self, operation: &str) {
        *self.calls.entry(operation.to_owned()).or_default() += 1;
    }

    /// Counts a call refused as a whole.
    pub fn rejected(&mut self) {
        self.totals.rejected_calls += 1;
    }

    /// Counts a record refused for the shard's write limit.
    pub fn throttled(&mut self) {
        self.totals.throttled_records += 1;
    }

    /// The index of the shard a record goes to: the one owning its explicit hash key, else the
    /// MD5 of its partition key.
    pub fn place(&self, partition_key: &str, explicit_hash_key: Option<u128>) -> usize {
        shard_index(
            &self.shards,
            explicit_hash_key.unwrap_or_else(|| hash_key(partition_key)),
        )
    }

    /// Stores a record on shard `shard` (from [`Ledger::place`]) and returns its sequence
    /// number. Failing to write the ids file is the only error.
    pub fn store(&mut self, shard: usize, partition_key: &str, data: &[u8]) -> io::Result<String> {
        let bytes = (partition_key.len() + data.len()) as u64;
        self.totals.records += 1;
        self.totals.bytes += bytes;
        self.totals.billed_units += bytes.div_ceil(PUT_PAYLOAD_UNIT_BYTES);
        let events = if data.starts_with(&kpl::MAGIC) {
            self.totals.aggregated_records += 1;
            match kpl::deaggregate(data, partition_key) {
                Ok(users) => {
                    let misplaced =
                        users.iter().filter(|u| self.user_shard(u) != shard).count() as u64;
                    self.totals.aggregated_user_records += users.len() as u64;
                    self.totals.misplaced_user_records += misplaced;
                    if misplaced > 0 {
                        self.totals.records_with_misplaced += 1;
                    }
                    if let Some(ids) = self.ids.as_mut() {
                        for user in &users {
                            write_event_id(ids.as_mut(), &user.data)?;
                        }
                    }
                    users.len() as u64
                }
                Err(_) => {
                    self.totals.undecodable_records += 1;
                    0
                }
            }
        } else {
            if let Some(ids) = self.ids.as_mut() {
                write_event_id(ids.as_mut(), data)?;
            }
            1
        };
        self.totals.user_records += events;
        let book = &mut self.shards[shard];
        book.records += 1;
        book.user_records += events;
        book.bytes += bytes;
        Ok(sequence_number(shard, book.records))
    }

    fn user_shard(&self, user: &kpl::UserRecord) -> usize {
        let key = user
            .explicit_hash_key
            .as_deref()
            .and_then(|k| k.parse::<u128>().ok())
            .unwrap_or_else(|| hash_key(&user.partition_key));
        shard_index(&self.shards, key)
    }

    /// Writes what the ids file holds so far to disk.
    pub fn flush_ids(&mut self) -> io::Result<()> {
        self.ids.as_mut().map_or(Ok(()), |ids| ids.flush())
    }

    /// The figures so far.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stream: self.stream.clone(),
            calls: self.calls.clone(),
            totals: self.totals.clone(),
            ideal_units: self.totals.bytes as f64 / PUT_PAYLOAD_UNIT_BYTES as f64,
            per_shard: self
                .shards
                .iter()
                .map(|s| ShardFigures {
                    id: s.id.clone(),
                    records: s.records,
                    user_records: s.user_records,
                    bytes: s.bytes,
                })
                .collect(),
        }
    }
}

/// The shard owning `key`; shards cover the whole key space in order, so one always does.
fn shard_index(shards: &[ShardBook], key: u128) -> usize {
    shards
        .partition_point(|s| s.starting_hash_key <= key)
        .saturating_sub(1)
}

fn sequence_number(shard: usize, n: u64) -> String {
    format!("{}{n:020}", SEQUENCE_PREFIX + shard as u64)
}

/// Writes the event's `event_id` (the stream JSON's, unescaped ids only) as one line.
fn write_event_id(out: &mut dyn Write, data: &[u8]) -> io::Result<()> {
    let Some(at) = data
        .windows(EVENT_ID_FIELD.len())
        .position(|w| w == EVENT_ID_FIELD)
    else {
        return Ok(());
    };
    let rest = &data[at + EVENT_ID_FIELD.len()..];
    let Some(end) = rest.iter().position(|b| *b == b'"') else {
        return Ok(());
    };
    out.write_all(&rest[..end])?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use adpipe_core::kpl::Aggregator;

    use super::*;

    /// A key whose MD5 lands on `shard` of a two-shard stream.
    fn key_on(ledger: &Ledger, shard: usize, salt: &str) -> String {
        (0..)
            .map(|i| format!("{salt}-{i}"))
            .find(|k| ledger.place(k, None) == shard)
            .unwrap()
    }

    fn aggregate(records: &[(&str, &str)]) -> kpl::AggregatedRecord {
        let mut aggregator = Aggregator::new(kpl::MAX_RECORD_BYTES);
        for (key, data) in records {
            aggregator.try_add(key, data.as_bytes()).unwrap();
        }
        aggregator.finish().unwrap()
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_plain_record_is_one_event_billed_by_key_and_data() {
        let mut ledger = Ledger::new("s", 2, None);
        let shard = ledger.place("k", None);
        ledger.store(shard, "k", &[b'x'; 25 * 1024 - 1]).unwrap();
        ledger.store(shard, "k", &[b'x'; 25 * 1024]).unwrap();
        let snap = ledger.snapshot();
        assert_eq!(snap.totals.records, 2);
        assert_eq!(snap.totals.user_records, 2);
        // 25 600 bytes is one unit, 25 601 two.
        assert_eq!(snap.totals.billed_units, 3);
        assert_eq!(snap.totals.bytes, 2 * 25 * 1024 + 1);
        assert!((snap.ideal_units - (2.0 + 1.0 / 25600.0)).abs() < 1e-9);
        assert_eq!(snap.totals.aggregated_records, 0);
        assert_eq!(snap.per_shard[shard].records, 2);
        assert_eq!(snap.per_shard[1 - shard].records, 0);
    }

    #[test]
    fn an_aggregate_of_one_shard_is_all_correct() {
        let mut ledger = Ledger::new("s", 2, None);
        let a = key_on(&ledger, 1, "a");
        let b = key_on(&ledger, 1, "b");
        let record = aggregate(&[(&a, "1"), (&b, "2"), (&a, "3")]);
        let shard = ledger.place(&record.partition_key, None);
        assert_eq!(shard, 1);
        ledger
            .store(shard, &record.partition_key, &record.data)
            .unwrap();
        let t = ledger.snapshot().totals;
        assert_eq!((t.records, t.user_records, t.aggregated_records), (1, 3, 1));
        assert_eq!((t.misplaced_user_records, t.records_with_misplaced), (0, 0));
    }

    #[test]
    fn events_of_another_shard_in_an_aggregate_are_misplaced() {
        let mut ledger = Ledger::new("s", 2, None);
        let here = key_on(&ledger, 0, "here");
        let there = key_on(&ledger, 1, "there");
        let record = aggregate(&[(&here, "1"), (&there, "2"), (&there, "3")]);
        let shard = ledger.place(&record.partition_key, None);
        ledger
            .store(shard, &record.partition_key, &record.data)
            .unwrap();
        let t = ledger.snapshot().totals;
        assert_eq!(t.aggregated_user_records, 3);
        assert_eq!(t.misplaced_user_records, 2);
        assert_eq!(t.records_with_misplaced, 1);
    }

    #[test]
    fn an_explicit_hash_key_decides_the_shard() {
        let mut ledger = Ledger::new("s", 4, None);
        let key = key_on(&ledger, 0, "k");
        let third = ledger.shards()[2].starting_hash_key;
        assert_eq!(ledger.place(&key, Some(third)), 2);
        // An aggregate of shard-2 keys sent under a shard-0 outer key but with shard 2's
        // explicit hash key, as adpipe's producer sends it, is correct.
        let inner = key_on(&ledger, 2, "inner");
        let record = aggregate(&[(&inner, "1")]);
        ledger.store(2, &key, &record.data).unwrap();
        assert_eq!(ledger.snapshot().totals.misplaced_user_records, 0);
        assert_eq!(ledger.place(&key, Some(u128::MAX)), 3);
    }

    #[test]
    fn a_broken_aggregate_is_counted_not_trusted() {
        let mut ledger = Ledger::new("s", 1, None);
        let mut data = aggregate(&[("k", "1")]).data.to_vec();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        ledger.store(0, "k", &data).unwrap();
        let t = ledger.snapshot().totals;
        assert_eq!(
            (t.records, t.undecodable_records, t.user_records),
            (1, 1, 0)
        );
    }

    #[test]
    fn event_ids_of_plain_and_aggregated_records_are_recorded() {
        let out = Shared::default();
        let mut ledger = Ledger::new("s", 1, Some(Box::new(out.clone())));
        ledger
            .store(0, "k", br#"{"event_id":"e-1","partner":"p"}"#)
            .unwrap();
        let record = aggregate(&[
            ("k", r#"{"event_id":"e-2"}"#),
            ("j", r#"{"partner":"no id"}"#),
            ("k", r#"{"x":1,"event_id":"e-3"}"#),
        ]);
        ledger.store(0, "k", &record.data).unwrap();
        ledger.flush_ids().unwrap();
        assert_eq!(
            String::from_utf8(out.0.lock().unwrap().clone()).unwrap(),
            "e-1\ne-2\ne-3\n"
        );
    }

    #[test]
    fn sequence_numbers_grow_per_shard_and_calls_are_counted() {
        let mut ledger = Ledger::new("s", 2, None);
        let first = ledger.store(0, "k", b"a").unwrap();
        let second = ledger.store(0, "k", b"b").unwrap();
        let other = ledger.store(1, "k", b"c").unwrap();
        let parse = |s: &str| adpipe_core::stream::SequenceNumber::parse(s).unwrap();
        assert!(parse(&first) < parse(&second));
        assert_ne!(first, other);
        ledger.called("PutRecords");
        ledger.called("PutRecords");
        ledger.called("ListShards");
        let snap = ledger.snapshot();
        assert_eq!(snap.calls["PutRecords"], 2);
        assert_eq!(snap.calls["ListShards"], 1);
        assert_eq!(snap.per_shard[0].records, 2);
    }
}
