//! The Kinesis operations the sink speaks, in the `awsJson1_1` protocol both the Rust SDK
//! and the JavaScript SDK v3 use for Kinesis: `POST /`, the operation in
//! `X-Amz-Target: Kinesis_20131202.{Operation}`, JSON in and out, record data in base64.
//!
//! ```text
//! (target, body) ─▶ PutRecords │ PutRecord ─▶ validate like Kinesis ─▶ per record:
//!                  │                            place ─▶ throttle? ─▶ Ledger::store
//!                  ├ ListShards, DescribeStreamSummary ─▶ the fixed shard layout
//!                  └ anything else ─▶ 400 UnknownOperationException
//! ```
//!
//! Signatures are not checked: the sink measures what a producer sends, it guards nothing.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::throttle::Throttle;

/// The prefix of every Kinesis `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";
/// PutRecords API limit: entries per call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// PutRecords API limit: data and partition keys of one call.
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// Kinesis' limit on one record, data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis' limit on a partition key, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// The account id in ARNs, as emulators use.
const ACCOUNT: &str = "000000000000";
/// The region in ARNs.
const REGION: &str = "us-east-1";
/// Retention the stream reports (Kinesis' default).
const RETENTION_HOURS: u32 = 24;

/// An answer: status, body and, for errors, the `x-amzn-ErrorType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Vec<u8>,
    /// The error's type, also in the body's `__type`.
    pub error_type: Option<&'static str>,
}

impl Reply {
    fn ok(body: &impl Serialize) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: serde_json::to_vec(body).unwrap_or_default(),
            error_type: None,
        }
    }

    fn error(error_type: &'static str, message: impl Into<String>) -> Reply {
        let body = serde_json::json!({"__type": error_type, "message": message.into()});
        Reply {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::to_vec(&body).unwrap_or_default(),
            error_type: Some(error_type),
        }
    }
}

/// A stream: its books and, for overload runs, its write limits.
#[derive(Debug)]
pub struct Sink {
    ledger: Ledger,
    throttle: Option<Throttle>,
    created: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamRef {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

// NOTE: no `#[serde(flatten)]` in the inputs: it buffers the whole document before
// deserialising it, which would make the sink, not the producer, the cost of big calls.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    records: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    data: String,
    partition_key: String,
    explicit_hash_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    data: String,
    partition_key: String,
    explicit_hash_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListShardsInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    next_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ResultEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
}

/// A validated record, decoded.
struct Record {
    partition_key: String,
    explicit_hash_key: Option<u128>,
    data: Vec<u8>,
}

impl Sink {
    /// A sink storing into `ledger`; with `throttle`, shards refuse writes over their limit.
    pub fn new(ledger: Ledger, throttle: Option<Throttle>) -> Sink {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Sink {
            ledger,
            throttle,
            created,
        }
    }

    /// The books.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The books, to flush the ids file.
    pub fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    /// Serves one call: `target` is the `X-Amz-Target` header, `body` the request body.
    pub fn call(&mut self, target: &str, body: &[u8], now: Instant) -> Reply {
        let Some(operation) = target.strip_prefix(TARGET_PREFIX) else {
            self.ledger.rejected();
            return Reply::error(
                "UnknownOperationException",
                format!("`{target}` is not a Kinesis operation"),
            );
        };
        self.ledger.called(operation);
        let reply = match operation {
            "PutRecords" => self.put_records(body, now),
            "PutRecord" => self.put_record(body, now),
            "ListShards" => self.list_shards(body),
            "DescribeStreamSummary" => self.describe_stream_summary(body),
            other => Err(Reply::error(
                "UnknownOperationException",
                format!("the benchmark sink does not implement {other}"),
            )),
        };
        reply.unwrap_or_else(|error| {
            self.ledger.rejected();
            error
        })
    }

    fn put_records(&mut self, body: &[u8], now: Instant) -> Result<Reply, Reply> {
        let input: PutRecordsInput = parse(body)?;
        self.check_stream(StreamRef {
            stream_name: input.stream_name,
            stream_arn: input.stream_arn,
        })?;
        if input.records.is_empty() || input.records.len() > MAX_RECORDS_PER_CALL {
            return Err(Reply::error(
                "ValidationException",
                format!(
                    "Records must hold 1 to {MAX_RECORDS_PER_CALL} entries, not {}",
                    input.records.len()
                ),
            ));
        }
        let records = input
            .records
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let total: usize = records
            .iter()
            .map(|r| r.data.len() + r.partition_key.len())
            .sum();
        if total > MAX_BYTES_PER_CALL {
            return Err(Reply::error(
                "InvalidArgumentException",
                format!("the call carries {total} bytes, more than {MAX_BYTES_PER_CALL}"),
            ));
        }
        let mut failed = 0;
        let mut results = Vec::with_capacity(records.len());
        for record in &records {
            let entry = self.store(record, now)?;
            if entry.error_code.is_some() {
                failed += 1;
            }
            results.push(entry);
        }
        Ok(Reply::ok(&serde_json::json!({
            "FailedRecordCount": failed,
            "Records": results,
            "EncryptionType": "NONE",
        })))
    }

    fn put_record(&mut self, body: &[u8], now: Instant) -> Result<Reply, Reply> {
        let input: PutRecordInput = parse(body)?;
        self.check_stream(StreamRef {
            stream_name: input.stream_name,
            stream_arn: input.stream_arn,
        })?;
        let record = decode(Entry {
            data: input.data,
            partition_key: input.partition_key,
            explicit_hash_key: input.explicit_hash_key,
        })?;
        let entry = self.store(&record, now)?;
        match (entry.sequence_number, entry.shard_id) {
            (Some(sequence), Some(shard)) => Ok(Reply::ok(&serde_json::json!({
                "SequenceNumber": sequence,
                "ShardId": shard,
                "EncryptionType": "NONE",
            }))),
            _ => Err(Reply::error(
                "ProvisionedThroughputExceededException",
                entry.error_message.unwrap_or_default(),
            )),
        }
    }

    fn store(&mut self, record: &Record, now: Instant) -> Result<ResultEntry, Reply> {
        let shard = self
            .ledger
            .place(&record.partition_key, record.explicit_hash_key);
        let size = record.data.len() + record.partition_key.len();
        let admitted = self
            .throttle
            .as_mut()
            .is_none_or(|t| t.admit(shard, size, now));
        let shard_id = self.ledger.shards()[shard].id.clone();
        if !admitted {
            self.ledger.throttled();
            return Ok(ResultEntry {
                sequence_number: None,
                shard_id: None,
                error_code: Some("ProvisionedThroughputExceededException"),
                error_message: Some(format!(
                    "Rate exceeded for shard {shard_id} in stream {} under account {ACCOUNT}.",
                    self.ledger.stream()
                )),
            });
        }
        let sequence = self
            .ledger
            .store(shard, &record.partition_key, &record.data)
            .map_err(|e| {
                Reply::error(
                    "InternalFailure",
                    format!("failed to record event ids: {e}"),
                )
            })?;
        Ok(ResultEntry {
            sequence_number: Some(sequence),
            shard_id: Some(shard_id),
            error_code: None,
            error_message: None,
        })
    }

    fn list_shards(&mut self, body: &[u8]) -> Result<Reply, Reply> {
        let input: ListShardsInput = parse(body)?;
        if input.next_token.is_none() {
            self.check_stream(StreamRef {
                stream_name: input.stream_name,
                stream_arn: input.stream_arn,
            })?;
        }
        let shards: Vec<_> = self
            .ledger
            .shards()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({
                    "ShardId": s.id,
                    "HashKeyRange": {
                        "StartingHashKey": s.starting_hash_key.to_string(),
                        "EndingHashKey": s.ending_hash_key.to_string(),
                    },
                    "SequenceNumberRange": {
                        "StartingSequenceNumber": s.starting_sequence_number(i),
                    },
                })
            })
            .collect();
        Ok(Reply::ok(&serde_json::json!({ "Shards": shards })))
    }

    fn describe_stream_summary(&mut self, body: &[u8]) -> Result<Reply, Reply> {
        let input: StreamRef = parse(body)?;
        self.check_stream(input)?;
        let name = self.ledger.stream();
        Ok(Reply::ok(&serde_json::json!({
            "StreamDescriptionSummary": {
                "StreamName": name,
                "StreamARN": arn(name),
                "StreamStatus": "ACTIVE",
                "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                "RetentionPeriodHours": RETENTION_HOURS,
                "StreamCreationTimestamp": self.created,
                "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                "EncryptionType": "NONE",
                "OpenShardCount": self.ledger.shards().len(),
                "ConsumerCount": 0,
            }
        })))
    }

    fn check_stream(&self, stream: StreamRef) -> Result<(), Reply> {
        let name = self.ledger.stream();
        let matches = match (&stream.stream_name, &stream.stream_arn) {
            (Some(n), _) => n == name,
            (None, Some(a)) => *a == arn(name),
            (None, None) => false,
        };
        if matches {
            Ok(())
        } else {
            Err(Reply::error(
                "ResourceNotFoundException",
                format!(
                    "Stream {} under account {ACCOUNT} not found.",
                    stream
                        .stream_name
                        .as_deref()
                        .or(stream.stream_arn.as_deref())
                        .unwrap_or("(none)")
                ),
            ))
        }
    }
}

fn arn(name: &str) -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}")
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| {
        Reply::error(
            "SerializationException",
            format!("failed to parse the request: {e}"),
        )
    })
}

fn decode(entry: Entry) -> Result<Record, Reply> {
    let chars = entry.partition_key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(Reply::error(
            "ValidationException",
            format!("a partition key must have 1 to {MAX_PARTITION_KEY_CHARS} characters"),
        ));
    }
    let explicit_hash_key = entry
        .explicit_hash_key
        .map(|k| {
            k.parse::<u128>().map_err(|_| {
                Reply::error(
                    "InvalidArgumentException",
                    format!("ExplicitHashKey `{k}` is not a 128-bit decimal integer"),
                )
            })
        })
        .transpose()?;
    let data = STANDARD.decode(&entry.data).map_err(|e| {
        Reply::error(
            "SerializationException",
            format!("failed to decode record data as base64: {e}"),
        )
    })?;
    if data.len() + entry.partition_key.len() > MAX_RECORD_BYTES {
        return Err(Reply::error(
            "ValidationException",
            format!(
                "a record of {} bytes exceeds {MAX_RECORD_BYTES}",
                data.len() + entry.partition_key.len()
            ),
        ));
    }
    Ok(Record {
        partition_key: entry.partition_key,
        explicit_hash_key,
        data,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn sink(throttled: bool) -> Sink {
        let ledger = Ledger::new("ads", 2, None);
        let throttle = throttled.then(|| Throttle::new(2, Instant::now()));
        Sink::new(ledger, throttle)
    }

    fn call(sink: &mut Sink, op: &str, body: Value) -> (StatusCode, Value) {
        let reply = sink.call(
            &format!("{TARGET_PREFIX}{op}"),
            &serde_json::to_vec(&body).unwrap(),
            Instant::now(),
        );
        (reply.status, serde_json::from_slice(&reply.body).unwrap())
    }

    fn entry(key: &str, data: &[u8]) -> Value {
        json!({"PartitionKey": key, "Data": STANDARD.encode(data)})
    }

    #[test]
    fn put_records_answers_one_result_per_entry_in_order() {
        let mut sink = sink(false);
        let (status, out) = call(
            &mut sink,
            "PutRecords",
            json!({"StreamName": "ads", "Records": [entry("a", b"1"), entry("b", b"22")]}),
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(out["FailedRecordCount"], 0);
        let records = out["Records"].as_array().unwrap();
        assert_eq!(records.len(), 2);
        for (r, key) in records.iter().zip(["a", "b"]) {
            let shard = sink.ledger().place(key, None);
            assert_eq!(r["ShardId"], sink.ledger().shards()[shard].id);
            assert!(r["SequenceNumber"].as_str().unwrap().len() > 20);
        }
        let snap = sink.ledger().snapshot();
        assert_eq!(snap.totals.bytes, 5);
        assert_eq!(snap.calls["PutRecords"], 1);
    }

    #[test]
    fn the_stream_arn_names_the_stream_too() {
        let mut sink = sink(false);
        let (status, _) = call(
            &mut sink,
            "PutRecords",
            json!({"StreamARN": arn("ads"), "Records": [entry("a", b"1")]}),
        );
        assert_eq!(status, StatusCode::OK);
        let (status, out) = call(
            &mut sink,
            "PutRecords",
            json!({"StreamName": "other", "Records": [entry("a", b"1")]}),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(out["__type"], "ResourceNotFoundException");
        assert_eq!(sink.ledger().snapshot().totals.rejected_calls, 1);
    }

    #[test]
    fn invalid_calls_are_refused_whole() {
        let mut sink = sink(false);
        let too_many: Vec<_> = (0..501).map(|_| entry("k", b"x")).collect();
        let cases = [
            (
                json!({"StreamName": "ads", "Records": too_many}),
                "ValidationException",
            ),
            (
                json!({"StreamName": "ads", "Records": []}),
                "ValidationException",
            ),
            (
                json!({"StreamName": "ads", "Records": [entry("", b"x")]}),
                "ValidationException",
            ),
            (
                json!({"StreamName": "ads", "Records": [
                    {"PartitionKey": "k", "Data": "x", "ExplicitHashKey": "12a"}]}),
                "InvalidArgumentException",
            ),
            (
                json!({"StreamName": "ads", "Records": [{"PartitionKey": "k", "Data": "!!"}]}),
                "SerializationException",
            ),
        ];
        for (body, expected) in cases {
            let (status, out) = call(&mut sink, "PutRecords", body);
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(out["__type"], expected);
        }
        assert_eq!(sink.ledger().snapshot().totals.records, 0);
    }

    #[test]
    fn throttled_entries_fail_alone_with_the_throughput_code() {
        let mut sink = sink(true);
        let big = vec![b'x'; 600 * 1024];
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| sink.ledger().place(k, None) == 0)
            .unwrap();
        let (status, out) = call(
            &mut sink,
            "PutRecords",
            json!({"StreamName": "ads", "Records": [entry(&key, &big), entry(&key, &big)]}),
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(out["FailedRecordCount"], 1);
        assert!(out["Records"][0]["SequenceNumber"].is_string());
        assert_eq!(
            out["Records"][1]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
        let totals = sink.ledger().snapshot().totals;
        assert_eq!((totals.records, totals.throttled_records), (1, 1));
    }

    #[test]
    fn list_shards_and_summary_describe_the_even_split() {
        let mut sink = sink(false);
        let (status, out) = call(&mut sink, "ListShards", json!({"StreamName": "ads"}));
        assert_eq!(status, StatusCode::OK);
        let shards = out["Shards"].as_array().unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0]["HashKeyRange"]["StartingHashKey"], "0");
        assert_eq!(
            shards[1]["HashKeyRange"]["EndingHashKey"],
            u128::MAX.to_string()
        );
        let (_, out) = call(
            &mut sink,
            "DescribeStreamSummary",
            json!({"StreamName": "ads"}),
        );
        assert_eq!(out["StreamDescriptionSummary"]["OpenShardCount"], 2);
        assert_eq!(out["StreamDescriptionSummary"]["StreamStatus"], "ACTIVE");
    }

    #[test]
    fn put_record_and_unknown_operations() {
        let mut sink = sink(false);
        let mut body = entry("a", b"1");
        body["StreamName"] = json!("ads");
        let (status, out) = call(&mut sink, "PutRecord", body);
        assert_eq!(status, StatusCode::OK);
        assert!(out["ShardId"].is_string());
        let (status, out) = call(&mut sink, "GetRecords", json!({}));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(out["__type"], "UnknownOperationException");
        let reply = sink.call("DynamoDB_20120810.GetItem", b"{}", Instant::now());
        assert_eq!(reply.error_type, Some("UnknownOperationException"));
    }
}
