//! One stream record → standard ad events, and error entries for what cannot be decoded.
//!
//! ```text
//! StreamRecord ─▶ kpl::deaggregate_shared ─▶ user records ─▶ JSON object ─▶ defaults ─▶ AdEvent
//!                      │ bad KPL                         │ not JSON / wrong types
//!                      ▼                                 ▼
//!                 ErrorEntry (whole record)         ErrorEntry (that user record)
//! ```
//!
//! Other producers may write the stream too, so decoding is lenient: unknown keys are
//! ignored, nulls count as absent, non-standard event types are kept, and missing
//! `received_at`, `event_time`, `event_type` and `event_id` are filled in. `partner` is
//! always the pipeline's: the stream belongs to one partner, and a row must agree with the
//! `partner=` partition it lands in. A
//! generated `event_id` is derived from the record's position (shard, sequence, index), never
//! random, so that replaying a range after a crash rewrites identical files.
//!
//! A user record is read in one pass ([`one_pass`]) when it is ordinary, which is what this
//! crate spends most of its CPU on; anything else (an error, a repeated key) goes the careful
//! way through a `serde_json::Value`, which gives the same events and names what is wrong.
//! Events from the one pass borrow their text from the user records ([`Split`]) and the
//! partner's name, so a read's events cost no copy of their strings until Parquet encodes
//! them; the caller keeps the read's splits until then.

use std::borrow::Cow;

use adpipe_core::event::{AdEvent, EpochMillis, EventType};
use adpipe_core::kpl;
use adpipe_core::stream::StreamRecord;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

mod one_pass;

/// A stream record split into its user records (or why it could not be): what the events
/// [`decode`] makes of it borrow from.
#[derive(Debug)]
pub struct Split(Result<Vec<kpl::UserRecord>, kpl::DecodeError>);

impl Split {
    /// De-aggregates `record`; its user records share its buffer.
    pub fn of(record: &StreamRecord) -> Split {
        Split(kpl::deaggregate_shared(&record.data, &record.partition_key))
    }
}

/// What one stream record turned into.
#[derive(Debug, Default)]
pub struct Decoded<'r> {
    /// The events, in user record order.
    pub events: Vec<AdEvent<'r>>,
    /// The user records (or the whole record) that could not be decoded.
    pub errors: Vec<ErrorEntry>,
    /// How many user records the record held (0 when it could not be de-aggregated).
    pub user_records: usize,
}

/// Why something could not be decoded: a fixed set, used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The KPL envelope is broken; the category of [`kpl::DecodeError`].
    Kpl(&'static str),
    /// The user record is not JSON.
    NotJson,
    /// The JSON is not an event: not an object, or a field of the wrong type.
    Schema,
}

impl ErrorCategory {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Kpl(category) => category,
            ErrorCategory::NotJson => "not_json",
            ErrorCategory::Schema => "schema",
        }
    }
}

/// One line of an error file: enough to find the record on the stream and to replay it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorEntry {
    /// The shard the record was read from.
    pub shard_id: String,
    /// The record's sequence number.
    pub sequence: String,
    /// The user record's index in its aggregate; absent when the whole record failed.
    pub sub_sequence: Option<usize>,
    /// The (user) record's partition key.
    pub partition_key: String,
    /// What went wrong.
    pub reason: String,
    /// When the stream accepted the record (decides the error file's date).
    pub arrived_at: EpochMillis,
    /// The undecodable bytes.
    pub data_base64: String,
    /// The reason's category, for metrics.
    #[serde(skip)]
    pub category: ErrorCategory,
}

/// Decodes `record`, read from `shard_id` of `partner`'s stream and split into `split`.
pub fn decode<'r>(
    shard_id: &str,
    partner: &'r str,
    record: &StreamRecord,
    split: &'r Split,
) -> Decoded<'r> {
    let user_records = match &split.0 {
        Ok(user_records) => user_records,
        Err(e) => {
            let entry = error_entry(
                shard_id,
                record,
                None,
                &record.partition_key,
                &record.data,
                ErrorCategory::Kpl(e.category()),
                e.to_string(),
            );
            return Decoded {
                errors: vec![entry],
                ..Decoded::default()
            };
        }
    };
    let mut decoded = Decoded {
        events: Vec::with_capacity(user_records.len()),
        user_records: user_records.len(),
        ..Decoded::default()
    };
    for (index, user) in user_records.iter().enumerate() {
        match parse_event(shard_id, partner, record, index, &user.data) {
            Ok(event) => decoded.events.push(event),
            Err((category, reason)) => decoded.errors.push(error_entry(
                shard_id,
                record,
                Some(index),
                &user.partition_key,
                &user.data,
                category,
                reason,
            )),
        }
    }
    decoded
}

fn error_entry(
    shard_id: &str,
    record: &StreamRecord,
    sub_sequence: Option<usize>,
    partition_key: &str,
    data: &[u8],
    category: ErrorCategory,
    reason: String,
) -> ErrorEntry {
    ErrorEntry {
        shard_id: shard_id.to_owned(),
        sequence: record.sequence.to_string(),
        sub_sequence,
        partition_key: partition_key.to_owned(),
        reason,
        arrived_at: record.arrived_at,
        data_base64: base64::engine::general_purpose::STANDARD.encode(data),
        category,
    }
}

fn parse_event<'r>(
    shard_id: &str,
    partner: &'r str,
    record: &StreamRecord,
    index: usize,
    data: &'r [u8],
) -> Result<AdEvent<'r>, (ErrorCategory, String)> {
    match one_pass::parse(data) {
        Some(fields) => Ok(complete(fields, shard_id, partner, record, index)),
        None => parse_event_carefully(shard_id, partner, record, index, data),
    }
}

/// Fills in what the user record left out, as [`parse_event_carefully`] does.
fn complete<'r>(
    fields: one_pass::Fields<'r>,
    shard_id: &str,
    partner: &'r str,
    record: &StreamRecord,
    index: usize,
) -> AdEvent<'r> {
    let received_at = fields.received_at.unwrap_or(record.arrived_at);
    let event_id = match fields.event_id {
        Some(id) if !id.is_empty() => id,
        _ => Cow::Owned(derived_event_id(
            shard_id,
            record.sequence.as_str(),
            index,
            record.arrived_at,
        )),
    };
    let attributes = fields.attributes.unwrap_or_default().0;
    AdEvent {
        event_id,
        partner: Cow::Borrowed(partner),
        event_type: fields
            .event_type
            .unwrap_or_else(|| EventType::Custom.into()),
        event_time: fields.event_time.unwrap_or(received_at),
        received_at,
        attributes,
        ..fields.rest
    }
}

/// Decodes through a `serde_json::Value`: slower, but it names the field that is wrong.
/// Used for whatever [`one_pass`] leaves to it.
fn parse_event_carefully(
    shard_id: &str,
    partner: &str,
    record: &StreamRecord,
    index: usize,
    data: &[u8],
) -> Result<AdEvent<'static>, (ErrorCategory, String)> {
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| (ErrorCategory::NotJson, format!("failed to parse JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err((
            ErrorCategory::Schema,
            format!("failed to read event: expected a JSON object, found {value}"),
        ));
    };
    fields.retain(|_, v| !v.is_null());
    fields.retain(|k, v| !(k == "event_id" && v == ""));
    let received_at = fields
        .entry("received_at")
        .or_insert_with(|| record.arrived_at.0.into())
        .clone();
    fields.entry("event_time").or_insert(received_at);
    fields.insert("partner".to_owned(), partner.to_owned().into());
    fields
        .entry("event_type")
        .or_insert_with(|| EventType::Custom.as_str().into());
    fields.entry("event_id").or_insert_with(|| {
        derived_event_id(shard_id, record.sequence.as_str(), index, record.arrived_at).into()
    });
    if let Some(Value::Object(attributes)) = fields.get_mut("attributes") {
        stringify_values(attributes);
    }
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        (
            ErrorCategory::Schema,
            format!("failed to read event field `{}`: {}", e.path(), e.inner()),
        )
    })
}

/// Attributes are strings in the lake; other producers may send numbers or booleans, which
/// keep their JSON text. Nulls are dropped.
fn stringify_values(attributes: &mut Map<String, Value>) {
    attributes.retain(|_, v| !v.is_null());
    for value in attributes.values_mut() {
        if !value.is_string() {
            *value = Value::String(value.to_string());
        }
    }
}

/// A UUIDv7 whose time is the record's arrival and whose "random" bits are a digest of the
/// record's position: unique per user record, sortable like the receiver's ids, and the same
/// on every replay.
fn derived_event_id(
    shard_id: &str,
    sequence: &str,
    index: usize,
    arrived_at: EpochMillis,
) -> String {
    let digest = Sha256::new()
        .chain_update(shard_id)
        .chain_update([0])
        .chain_update(sequence)
        .chain_update([0])
        .chain_update(index.to_be_bytes())
        .finalize();
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(arrived_at.0).unwrap_or_default();
    uuid::Builder::from_unix_timestamp_millis(millis, &bits)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use adpipe_core::event::EventTypeField;
    use adpipe_core::stream::SequenceNumber;
    use bytes::Bytes;

    use super::*;

    fn record(seq: u64, data: impl Into<Bytes>) -> StreamRecord {
        StreamRecord {
            sequence: SequenceNumber::from_u64(seq),
            partition_key: "pk".into(),
            data: data.into(),
            arrived_at: EpochMillis(1_795_871_100_000),
        }
    }

    /// A record and its split, kept together as the worker keeps a read's.
    struct Read {
        record: StreamRecord,
        split: Split,
    }

    impl Read {
        fn new(seq: u64, data: impl Into<Bytes>) -> Read {
            let record = record(seq, data);
            let split = Split::of(&record);
            Read { record, split }
        }

        fn decode(&self) -> Decoded<'_> {
            decode("shardId-0", "acme-video", &self.record, &self.split)
        }
    }

    fn aggregate(bodies: &[&[u8]]) -> Bytes {
        let mut agg = kpl::Aggregator::new(kpl::MAX_RECORD_BYTES);
        for body in bodies {
            agg.try_add("session-1", body).unwrap();
        }
        agg.finish().unwrap().data
    }

    #[test]
    fn plain_json_records_become_one_event_with_defaults_filled() {
        let read = Read::new(
            7,
            r#"{"event_type":"click","campaign_id":"c","extra":{"x":1}}"#,
        );
        let decoded = read.decode();
        assert!(decoded.errors.is_empty());
        let event = &decoded.events[0];
        assert_eq!(event.partner, "acme-video");
        assert_eq!(event.event_type, EventType::Click.into());
        assert_eq!(event.received_at, EpochMillis(1_795_871_100_000));
        assert_eq!(event.event_time, event.received_at);
        assert_eq!(event.campaign_id.as_deref(), Some("c"));
        let id = uuid::Uuid::parse_str(&event.event_id).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let again_read = Read::new(7, r#"{"event_type":"click"}"#);
        let again = again_read.decode();
        assert_eq!(again.events[0].event_id, event.event_id, "ids are stable");
        let other_read = Read::new(8, r#"{"event_type":"click"}"#);
        let other = other_read.decode();
        assert_ne!(other.events[0].event_id, event.event_id);
    }

    #[test]
    fn aggregated_records_keep_what_the_producer_wrote() {
        let full = br#"{"event_id":"e1","partner":"other","event_type":"heartbeat","event_time":5,"received_at":6,"ip":null,"price_micros":9,"attributes":{"a":"x","n":3,"b":true,"z":null}}"#;
        let read = Read::new(1, aggregate(&[full, br#"{"event_type":"impression"}"#]));
        let decoded = read.decode();
        assert_eq!(decoded.user_records, 2);
        let [first, second] = &decoded.events[..] else {
            panic!("expected two events, got {:?}", decoded.events)
        };
        assert_eq!(first.event_id, "e1");
        assert_eq!(first.partner, "acme-video", "the pipeline's partner wins");
        assert_eq!(first.event_type, EventTypeField::Other("heartbeat".into()));
        assert_eq!(
            (first.event_time, first.received_at),
            (EpochMillis(5), EpochMillis(6))
        );
        assert_eq!(first.ip, None);
        assert_eq!(first.price_micros, Some(9));
        assert_eq!(
            first
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            ["a=x", "b=true", "n=3"]
        );
        assert_ne!(second.event_id, first.event_id);
        assert_eq!(second.partner, "acme-video");
    }

    #[test]
    fn text_without_escapes_points_into_the_record_and_escaped_text_is_decoded() {
        let read = Read::new(
            5,
            aggregate(&[
                br#"{"campaign_id":"cmp-1","city":"K\u00f6ln","attributes":{"deal":"pmp-1","n":2}}"#,
            ]),
        );
        let decoded = read.decode();
        let event = &decoded.events[0];
        let buffer = read.record.data.as_ptr_range();
        let in_record = |text: &Cow<'_, str>| match text {
            Cow::Borrowed(text) => buffer.contains(&text.as_ptr()),
            Cow::Owned(_) => false,
        };
        assert!(in_record(event.campaign_id.as_ref().unwrap()));
        assert!(in_record(&event.attributes["deal"]));
        assert_eq!(event.city.as_deref(), Some("Köln"));
        assert!(
            !in_record(event.city.as_ref().unwrap()),
            "escaped text is decoded into a copy"
        );
        assert_eq!(event.attributes["n"], "2");
        assert!(matches!(event.partner, Cow::Borrowed("acme-video")));
    }

    #[test]
    fn undecodable_user_records_become_error_entries_beside_good_ones() {
        let read = Read::new(
            3,
            aggregate(&[b"not json", br#"{"event_time":"yesterday"}"#, b"[1]", b"{}"]),
        );
        let decoded = read.decode();
        assert_eq!(decoded.events.len(), 1);
        let reasons: Vec<(Option<usize>, &str, &str)> = decoded
            .errors
            .iter()
            .map(|e| (e.sub_sequence, e.category.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(reasons[0].0, Some(0));
        assert_eq!(reasons[0].1, "not_json");
        assert_eq!(reasons[1].1, "schema");
        assert!(reasons[1].2.contains("event_time"), "{}", reasons[1].2);
        assert_eq!(reasons[2].1, "schema");
        let entry = &decoded.errors[0];
        assert_eq!(
            (
                entry.shard_id.as_str(),
                entry.sequence.as_str(),
                entry.partition_key.as_str()
            ),
            ("shardId-0", "3", "session-1")
        );
        assert_eq!(entry.data_base64, "bm90IGpzb24=");
    }

    #[test]
    fn the_one_pass_and_careful_paths_agree() {
        let receiver = br#"{"event_id":"66ee1354-f5b3-40c7-bb58-41715cec5bf6","partner":"acme-video","event_type":"impression","event_time":1795870798579,"received_at":1795870800000,"ad_session_id":"d61463bf07f4ebec","campaign_id":"cmp-015","placement_id":"plc-0000","creative_id":"crv-00125","user_agent":"Mozilla/5.0 (X11)","ip":"203.0.113.0","attributes":{"deal":"pmp-1024","vsize":"640x360"}}"#;
        let every_column = br#"{"event_id":"e","event_type":"click","event_time":1,"received_at":2,"ad_session_id":"s","campaign_id":"c","placement_id":"p","creative_id":"cr","publisher_id":"pub","page_url":"https://x/\u00e9","user_agent":"ua","ip":"::","country":"DE","region":"BE","city":"Berlin","device_type":"tv","os":"o","browser":"b","in_view_ms":-5,"price_micros":9007199254740993,"currency":"EUR","consent":"CP","attributes":{"n":1.50,"b":false,"o":{"z":[1,{"y":null}],"a":"\""},"s":"\u00e9","x":null}}"#;
        let ordinary: [&[u8]; 9] = [
            receiver,
            every_column,
            br#"{"attributes":{"a":"x","a":null,"b":1,"b":"y","c":[1,"2",null,{}],"d":-0,"e":1.0e2,"f":-7,"g":18446744073709551615,"h":true,"i":null}}"#,
            br#"{"attributes":{"a":null}}"#,
            br#"{"attributes":{"k\u00e9\n":"v\"\u00e9"}}"#,
            br#"{}"#,
            br#" { "event_id" : "" , "event_type" : null, "attributes": null, "ip": null } "#,
            br#"{"event_type":"heartbeat","extra":{"deep":[1,2,{"x":"y"}]},"partner":"x"}"#,
            br#"{"received_at":7,"attributes":{}}"#,
        ];
        let unusual: [&[u8]; 15] = [
            br#"{"event_type":"heartbeat","partner":42}"#,
            br#"{"attributes":5}"#,
            br#"{"attributes":{"a":1e400}}"#,
            br#"{"event_id":"a","event_id":"b"}"#,
            br#"{"event_id":"a","event_id":null}"#,
            br#"{"event\u005fid":"escaped"}"#,
            br#"{"x":1,"x":2}"#,
            br#"{"event_time":-0}"#,
            br#"{"event_time":5.0}"#,
            br#"{"event_time":1e400}"#,
            br#"{"other":1e400}"#,
            br#"{"other":"\ud800"}"#,
            b"{\"other\":\"\xff\"}",
            br#"{"event_time":"yesterday"}"#,
            br#"[{"event_id":"a"}]"#,
        ];
        let deep = format!(r#"{{"other":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let record = record(11, "unused");
        let careful =
            |data: &[u8]| parse_event_carefully("shardId-0", "acme-video", &record, 3, data);
        for data in ordinary {
            let fields = one_pass::parse(data)
                .unwrap_or_else(|| panic!("{} is ordinary", String::from_utf8_lossy(data)));
            let fast = complete(fields, "shardId-0", "acme-video", &record, 3);
            assert_eq!(Ok(fast), careful(data), "{}", String::from_utf8_lossy(data));
        }
        for data in unusual.iter().copied().chain([deep.as_bytes()]) {
            if let Some(fields) = one_pass::parse(data) {
                let fast = complete(fields, "shardId-0", "acme-video", &record, 3);
                assert_eq!(Ok(fast), careful(data), "{}", String::from_utf8_lossy(data));
            }
            assert_eq!(
                parse_event("shardId-0", "acme-video", &record, 3, data),
                careful(data),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn a_broken_kpl_record_is_one_error_entry() {
        let mut data = aggregate(&[b"{}"]).to_vec();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        let read = Read::new(4, data);
        let decoded = read.decode();
        assert!(decoded.events.is_empty());
        let entry = &decoded.errors[0];
        assert_eq!(entry.category.as_str(), "checksum");
        assert_eq!(entry.sub_sequence, None);
        let line = serde_json::to_value(entry).unwrap();
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "arrived_at",
                "data_base64",
                "partition_key",
                "reason",
                "sequence",
                "shard_id",
                "sub_sequence"
            ]
        );
    }
}
