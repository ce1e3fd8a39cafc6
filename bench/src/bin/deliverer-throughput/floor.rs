//! The least CPU any deliverer on the crates adpipe's deliverer uses must spend on the
//! dataset: the three steps no such deliverer can skip, each timed alone over every event,
//! with the data already in memory and nothing of the worker around them.
//!
//! ```text
//! every aggregate ─▶ MD5 of its message (the KPL trailer check)                  md-5
//! every event     ─▶ UTF-8 check and typed parse of its stream JSON, borrowed     serde_json
//! every event     ─▶ Arrow arrays ─▶ zstd Parquet, the lake's columns and encodings
//!                    (ParquetFile, fed 256 rows at a time as the deliverer's batch feeds it)
//! ```
//!
//! Reading the stream, the protobuf, enrichment, batching and writing files come on top. The
//! benchmark sets the sum against DuckDB's whole conversion of the same events: a deliverer on
//! these crates can be no faster than this floor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use adpipe_bench::procfs;
use adpipe_core::kpl;
use adpipe_deliverer::decode::{Split, decode};
use adpipe_deliverer::parquet_file::ParquetFile;
use anyhow::{Context, ensure};
use md5::{Digest, Md5};
use serde::Deserialize;

use crate::stages::{open_dataset, read_all};

/// Rows handed to the Parquet writer at once, as the deliverer's batch stages them.
const STAGED_ROWS: usize = 256;
/// The MD5 digest that ends a KPL aggregate, after its protobuf message.
const KPL_DIGEST_BYTES: usize = 16;

/// Every column of the lake, as the stream JSON holds it, borrowing its text.
#[derive(Debug, Deserialize)]
struct StreamEvent<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    partner: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    event_time: i64,
    received_at: i64,
    #[serde(borrow)]
    ad_session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    campaign_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    placement_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    creative_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    publisher_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    page_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    city: Option<Cow<'a, str>>,
    #[serde(borrow)]
    device_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    os: Option<Cow<'a, str>>,
    #[serde(borrow)]
    browser: Option<Cow<'a, str>>,
    in_view_ms: Option<i64>,
    price_micros: Option<i64>,
    #[serde(borrow)]
    currency: Option<Cow<'a, str>>,
    #[serde(borrow)]
    consent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    attributes: Option<BTreeMap<Text<'a>, Text<'a>>>,
}

impl StreamEvent<'_> {
    /// Hands every field to `black_box`, so that the parse of none is optimised away.
    fn keep(&self) {
        black_box((&self.event_id, &self.partner, &self.event_type));
        black_box((
            self.event_time,
            self.received_at,
            self.in_view_ms,
            self.price_micros,
        ));
        black_box((&self.ad_session_id, &self.campaign_id, &self.placement_id));
        black_box((&self.creative_id, &self.publisher_id, &self.page_url));
        black_box((
            &self.user_agent,
            &self.ip,
            &self.country,
            &self.region,
            &self.city,
        ));
        black_box((&self.device_type, &self.os, &self.browser));
        black_box((&self.currency, &self.consent));
        for (key, value) in self.attributes.iter().flatten() {
            black_box((&key.0, &value.0));
        }
    }
}

/// A JSON string, borrowed from the record unless it has escapes to decode (serde's own
/// `Cow` is a copy anywhere but directly in a field marked `borrow`).
#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Times the three steps over the dataset in `dir` and prints one JSON line: rows and the
/// CPU seconds of each step and of all three.
pub async fn floor(dir: &Path) -> anyhow::Result<()> {
    let (meta, doc, stream) = open_dataset(dir)?;
    let spec = &doc.spec;
    let records = read_all(&stream).await?;
    let splits: Vec<Split> = records.iter().map(Split::of).collect();
    let mut user_records = Vec::new();
    for record in &records {
        user_records.extend(kpl::deaggregate_shared(
            &record.data,
            &record.partition_key,
        )?);
    }
    let mut events = Vec::with_capacity(user_records.len());
    for (record, split) in records.iter().zip(&splits) {
        events.extend(decode("shardId-000000000000", &spec.partner, record, split).events);
    }
    ensure!(
        events.len() as u64 == meta.events && user_records.len() == events.len(),
        "the stream holds {} events",
        events.len()
    );

    let messages = records
        .iter()
        .map(|record| {
            let end = record.data.len().checked_sub(KPL_DIGEST_BYTES)?;
            record
                .data
                .get(kpl::MAGIC.len()..end)
                .filter(|_| record.data.starts_with(&kpl::MAGIC))
        })
        .collect::<Option<Vec<&[u8]>>>()
        .context("the stream holds a record that is not a KPL aggregate")?;

    let md5_s = cpu_seconds_of(|| {
        let mut digests = 0u8;
        for message in &messages {
            digests ^= Md5::digest(message)[0];
        }
        black_box(digests);
        Ok(())
    })?;
    let json_s = cpu_seconds_of(|| {
        for user_record in &user_records {
            let text = std::str::from_utf8(&user_record.data)?;
            let event: StreamEvent<'_> = serde_json::from_str(text)?;
            event.keep();
        }
        Ok(())
    })?;
    let mut bytes = 0;
    let parquet_s = cpu_seconds_of(|| {
        let mut file = ParquetFile::new()?;
        for chunk in events.chunks(STAGED_ROWS) {
            file.write(chunk)?;
        }
        bytes = file.finish()?.len();
        Ok(())
    })?;
    let report = serde_json::json!({
        "rows": events.len(), "md5_s": md5_s, "json_s": json_s, "parquet_s": parquet_s,
        "cpu_s": md5_s + json_s + parquet_s, "bytes": bytes,
    });
    println!("{report}");
    Ok(())
}

/// CPU seconds this process spends in `work`.
fn cpu_seconds_of(work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let before = procfs::cpu_seconds(std::process::id())?;
    work()?;
    Ok(procfs::cpu_seconds(std::process::id())? - before)
}
