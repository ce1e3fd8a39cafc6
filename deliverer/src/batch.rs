//! The open batch of one shard: the records read since the last flush, already encoded into
//! the files they will become.
//!
//! ```text
//! record (seq, events, errors) ─┬─▶ events by Partition::of(received_at) ─▶ one Parquet file each
//!                               └─▶ errors by date of arrival            ─▶ one .jsonl.gz each
//! finish ─▶ SealedBatch { range: first..=last record, objects: [(key, body)], partitions }
//! ```
//!
//! Each file is named after the first and last sequence number of the records *it* holds, so
//! the same range of the shard always yields the same object keys, whatever happened before.

use std::collections::BTreeMap;
use std::io::Write;

use adpipe_core::event::{AdEvent, EpochMillis};
use adpipe_core::lake::{FileSpan, Partition, data_key, error_key};
use adpipe_core::stream::{PendingRange, SequenceNumber};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::time::Instant;

use crate::decode::ErrorEntry;
use crate::error::EncodeError;
use crate::parquet_file::ParquetFile;

/// Events are handed to the Parquet writer in chunks of this many rows: a chunk's events and
/// their strings (~250 KB) are still in the CPU's cache when they are encoded, which costs
/// less than larger chunks do (measured: 256 rows beat 1,024 by ~15 % and 8,192 by ~40 % of
/// rows per CPU-second); the writer still fills whole pages, whatever the chunk size.
const STAGED_ROWS: usize = 256;
/// A partition holds one UTC hour: events of the same hour since the epoch share it.
const HOUR_MS: i64 = 3_600_000;

/// What names a batch's files: the lake prefix, the partner and the shard.
#[derive(Clone, Copy, Debug)]
pub struct FileNames<'a> {
    /// `spec.deliverer.sink.prefix`.
    pub prefix: &'a str,
    /// `spec.partner`.
    pub partner: &'a str,
    /// The shard the batch was read from.
    pub shard_id: &'a str,
}

/// The kind of a lake object, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A Parquet file of events.
    Data,
    /// A gzipped JSON-lines file of undecodable records.
    Errors,
}

impl ObjectKind {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Data => "data",
            ObjectKind::Errors => "errors",
        }
    }
}

/// One finished file, ready to put.
#[derive(Clone, Debug)]
pub struct LakeObject {
    /// The object key, relative to the bucket or lake root.
    pub key: String,
    /// The file's bytes.
    pub body: Bytes,
    /// Data or errors.
    pub kind: ObjectKind,
    /// Events or error entries in the file.
    pub rows: usize,
}

/// A closed batch: the range to checkpoint and the files that hold it.
#[derive(Debug)]
pub struct SealedBatch {
    /// Every record of the batch, first to last.
    pub range: PendingRange,
    /// The files, data first, in partition order.
    pub objects: Vec<LakeObject>,
    /// The partitions the data files are in, in order: what the catalog must know before
    /// the batch is committed.
    pub partitions: Vec<Partition>,
    /// How many events the data files hold.
    pub events: usize,
}

#[derive(Debug)]
struct SeqSpan {
    first: SequenceNumber,
    last: SequenceNumber,
}

impl SeqSpan {
    fn new(sequence: &SequenceNumber) -> SeqSpan {
        SeqSpan {
            first: sequence.clone(),
            last: sequence.clone(),
        }
    }

    fn extend(&mut self, sequence: &SequenceNumber) {
        self.last = sequence.clone();
    }

    fn file_span<'a>(&'a self, shard_id: &'a str) -> FileSpan<'a> {
        FileSpan {
            shard_id,
            first: &self.first,
            last: &self.last,
        }
    }
}

#[derive(Debug)]
struct DataFile {
    span: SeqSpan,
    parquet: ParquetFile,
}

struct ErrorFile {
    span: SeqSpan,
    partition: Partition,
    gzip: GzEncoder<Vec<u8>>,
    entries: usize,
}

impl std::fmt::Debug for ErrorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorFile")
            .field("span", &self.span)
            .field("entries", &self.entries)
            .finish()
    }
}

/// Records read since the last flush, grouped into the files they will become.
#[derive(Debug, Default)]
pub struct Batch {
    opened_at: Option<Instant>,
    range: Option<SeqSpan>,
    data: BTreeMap<Partition, DataFile>,
    errors: BTreeMap<String, ErrorFile>,
    events: usize,
    /// The last event's hour since the epoch and its partition: consecutive events are
    /// nearly always of the same hour, which spares a calendar conversion per event.
    last_partition: Option<(i64, Partition)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// When the first record was added.
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    /// Starts adding the records of one read. Their events may borrow from the read (`'r`):
    /// they are staged per file and encoded in chunks while the read is alive, and
    /// [`ReadStaging::finish`] encodes the rest.
    pub fn begin_read<'r>(&mut self) -> ReadStaging<'_, 'r> {
        ReadStaging {
            batch: self,
            staged: Vec::new(),
        }
    }

    /// The partition of an event received at `received_at`.
    fn partition_of(&mut self, received_at: EpochMillis) -> Partition {
        let hour = received_at.0.div_euclid(HOUR_MS);
        match self.last_partition {
            Some((last, partition)) if last == hour => partition,
            _ => {
                let partition = Partition::of(received_at);
                self.last_partition = Some((hour, partition));
                partition
            }
        }
    }

    /// Counts the record at `sequence` in `partition`'s file, opening the file first if
    /// this is the partition's first record.
    fn open(&mut self, partition: Partition, sequence: &SequenceNumber) -> Result<(), EncodeError> {
        match self.data.entry(partition) {
            std::collections::btree_map::Entry::Occupied(file) => {
                file.into_mut().span.extend(sequence);
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(DataFile {
                    span: SeqSpan::new(sequence),
                    parquet: ParquetFile::new()?,
                });
            }
        }
        Ok(())
    }

    /// Encodes `events` into `partition`'s file, which [`Batch::open`] opened.
    fn write(&mut self, partition: Partition, events: &[AdEvent<'_>]) -> Result<(), EncodeError> {
        match self.data.get_mut(&partition) {
            Some(file) => file.parquet.write(events),
            None => Err(EncodeError::NoFile(format!("{partition:?}"))),
        }
    }

    fn add_errors(
        &mut self,
        sequence: &SequenceNumber,
        arrived_at: EpochMillis,
        errors: &[ErrorEntry],
    ) -> Result<(), EncodeError> {
        if errors.is_empty() {
            return Ok(());
        }
        let partition = Partition::of(arrived_at);
        let file = self
            .errors
            .entry(partition.date())
            .or_insert_with(|| ErrorFile {
                span: SeqSpan::new(sequence),
                partition,
                gzip: GzEncoder::new(Vec::new(), Compression::default()),
                entries: 0,
            });
        file.span.extend(sequence);
        for entry in errors {
            serde_json::to_writer(&mut file.gzip, entry)?;
            file.gzip.write_all(b"\n")?;
            file.entries += 1;
        }
        Ok(())
    }

    /// The encoded size of every file of the batch so far.
    pub fn estimated_size(&self) -> u64 {
        let data: usize = self.data.values().map(|f| f.parquet.estimated_size()).sum();
        let errors: usize = self.errors.values().map(|f| f.gzip.get_ref().len()).sum();
        (data + errors) as u64
    }

    /// Closes every file; `None` when no record was added.
    pub fn finish(self, names: FileNames<'_>) -> Result<Option<SealedBatch>, EncodeError> {
        let Some(range) = self.range else {
            return Ok(None);
        };
        let mut objects = Vec::with_capacity(self.data.len() + self.errors.len());
        let partitions = self.data.keys().copied().collect();
        for (partition, file) in self.data {
            let span = file.span.file_span(names.shard_id);
            objects.push(LakeObject {
                key: data_key(names.prefix, names.partner, partition, &span),
                rows: file.parquet.rows(),
                body: file.parquet.finish()?,
                kind: ObjectKind::Data,
            });
        }
        for file in self.errors.into_values() {
            let span = file.span.file_span(names.shard_id);
            objects.push(LakeObject {
                key: error_key(names.prefix, names.partner, file.partition, &span),
                rows: file.entries,
                body: Bytes::from(file.gzip.finish()?),
                kind: ObjectKind::Errors,
            });
        }
        Ok(Some(SealedBatch {
            range: PendingRange {
                first: range.first,
                last: range.last,
            },
            objects,
            partitions,
            events: self.events,
        }))
    }
}

/// The events of one read on their way into a [`Batch`]. They borrow from the read's
/// records, so they cannot wait in the batch for the next read: each file's are encoded
/// every [`STAGED_ROWS`] events, and [`ReadStaging::finish`] encodes the rest.
#[must_use = "staged events are encoded only by `finish`"]
#[derive(Debug)]
pub struct ReadStaging<'b, 'r> {
    batch: &'b mut Batch,
    /// Each partition's events not yet encoded; a read rarely spans more than two hours.
    staged: Vec<(Partition, Vec<AdEvent<'r>>)>,
}

impl<'r> ReadStaging<'_, 'r> {
    /// Adds one stream record: its events and its error entries (either may be empty; the
    /// record still counts towards the batch's range).
    pub fn add(
        &mut self,
        sequence: &SequenceNumber,
        arrived_at: EpochMillis,
        events: Vec<AdEvent<'r>>,
        errors: &[ErrorEntry],
    ) -> Result<(), EncodeError> {
        let batch = &mut *self.batch;
        batch.opened_at.get_or_insert_with(Instant::now);
        match &mut batch.range {
            Some(range) => range.extend(sequence),
            None => batch.range = Some(SeqSpan::new(sequence)),
        }
        batch.events += events.len();
        // The partition whose file already counts this record: a record's events are
        // nearly always of one hour.
        let mut counted = None;
        for event in events {
            let partition = batch.partition_of(event.received_at);
            if counted != Some(partition) {
                batch.open(partition, sequence)?;
                counted = Some(partition);
            }
            let index = match self.staged.iter().position(|(p, _)| *p == partition) {
                Some(index) => index,
                None => {
                    self.staged
                        .push((partition, Vec::with_capacity(STAGED_ROWS)));
                    self.staged.len() - 1
                }
            };
            let staged = &mut self.staged[index].1;
            staged.push(event);
            if staged.len() >= STAGED_ROWS {
                batch.write(partition, staged)?;
                staged.clear();
            }
        }
        batch.add_errors(sequence, arrived_at, errors)
    }

    /// Encodes every event still staged, so that [`Batch::estimated_size`] counts it.
    pub fn finish(self) -> Result<(), EncodeError> {
        self.staged
            .iter()
            .try_for_each(|(partition, events)| self.batch.write(*partition, events))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::decode::ErrorCategory;

    // 2026-11-28T13:59:59.999Z
    const LAST_MS_OF_13H: i64 = 1_795_874_399_999;

    const NAMES: FileNames<'static> = FileNames {
        prefix: "events",
        partner: "acme-video",
        shard_id: "shardId-000000000001",
    };

    fn event(id: &str, received_at: i64) -> AdEvent<'static> {
        AdEvent {
            event_id: id.to_owned().into(),
            received_at: EpochMillis(received_at),
            ..AdEvent::default()
        }
    }

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::from_u64(n)
    }

    /// Adds one record as a read of its own.
    fn add(
        batch: &mut Batch,
        sequence: u64,
        arrived_at: EpochMillis,
        events: Vec<AdEvent<'_>>,
        errors: &[ErrorEntry],
    ) {
        let mut staging = batch.begin_read();
        staging
            .add(&seq(sequence), arrived_at, events, errors)
            .unwrap();
        staging.finish().unwrap();
    }

    #[test]
    fn an_hour_boundary_splits_the_batch_into_one_file_per_partition() {
        let mut batch = Batch::new();
        let t = EpochMillis(LAST_MS_OF_13H);
        add(&mut batch, 10, t, vec![event("a", LAST_MS_OF_13H)], &[]);
        add(&mut batch, 11, t, vec![event("b", LAST_MS_OF_13H + 1)], &[]);
        add(&mut batch, 12, t, vec![event("c", LAST_MS_OF_13H)], &[]);
        add(&mut batch, 13, t, vec![], &[]);
        assert!(batch.opened_at().is_some());

        let sealed = batch.finish(NAMES).unwrap().unwrap();
        assert_eq!(
            sealed.range,
            PendingRange {
                first: seq(10),
                last: seq(13)
            }
        );
        assert_eq!(sealed.events, 3);
        assert_eq!(
            sealed.partitions,
            [
                Partition::of(t),
                Partition::of(EpochMillis(LAST_MS_OF_13H + 1))
            ]
        );
        let keys: Vec<(&str, usize)> = sealed
            .objects
            .iter()
            .map(|o| (o.key.as_str(), o.rows))
            .collect();
        assert_eq!(
            keys,
            [
                (
                    "events/partner=acme-video/dt=2026-11-28/hour=13/shardId-000000000001-10-12.parquet",
                    2
                ),
                (
                    "events/partner=acme-video/dt=2026-11-28/hour=14/shardId-000000000001-11-11.parquet",
                    1
                ),
            ]
        );
    }

    #[test]
    fn error_entries_go_to_a_gzipped_json_lines_file_by_date() {
        let entry = ErrorEntry {
            shard_id: NAMES.shard_id.into(),
            sequence: "7".into(),
            sub_sequence: Some(2),
            partition_key: "pk".into(),
            reason: "failed to parse JSON".into(),
            arrived_at: EpochMillis(LAST_MS_OF_13H),
            data_base64: "eA==".into(),
            category: ErrorCategory::NotJson,
        };
        let mut batch = Batch::new();
        add(
            &mut batch,
            7,
            EpochMillis(LAST_MS_OF_13H),
            vec![],
            &[entry.clone(), entry],
        );
        let sealed = batch.finish(NAMES).unwrap().unwrap();
        assert!(
            sealed.partitions.is_empty(),
            "error files are not in the table"
        );
        let [object] = &sealed.objects[..] else {
            panic!("expected one object, got {:?}", sealed.objects)
        };
        assert_eq!(
            object.key,
            "events/_errors/partner=acme-video/dt=2026-11-28/shardId-000000000001-7-7.jsonl.gz"
        );
        assert_eq!(object.kind, ObjectKind::Errors);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&object.body[..])
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "failed to parse JSON");
        assert_eq!(lines[0]["sub_sequence"], 2);
    }

    #[test]
    fn an_empty_batch_has_nothing_to_write() {
        assert!(Batch::new().finish(NAMES).unwrap().is_none());
    }
}
