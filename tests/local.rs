//! `adpipe local` end to end: the real binary, real HTTP, the embedded stream on disk, and
//! the Parquet lake read back with the `parquet` crate.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::*;

/// One row of the lake, as much of it as the tests look at.
#[derive(Debug, Clone)]
struct Row {
    file: String,
    event_id: String,
    partner: String,
    event_type: String,
    received_at: i64,
    ip: Option<String>,
    device_type: Option<String>,
}

fn read_lake(lake: &std::path::Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for path in parquet_files(lake) {
        let file = std::fs::File::open(&path).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let names: Vec<_> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, COLUMNS, "{}", path.display());
        assert_eq!(
            builder
                .schema()
                .field_with_name("received_at")
                .unwrap()
                .data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        let codec = builder.metadata().row_group(0).column(0).compression();
        assert!(
            matches!(codec, parquet::basic::Compression::ZSTD(_)),
            "{codec:?}"
        );
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let text = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_string::<i32>()
                    .clone()
            };
            let (ids, partners, types, ips, devices) = (
                text("event_id"),
                text("partner"),
                text("event_type"),
                text("ip"),
                text("device_type"),
            );
            let received = batch
                .column_by_name("received_at")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                .clone();
            for i in 0..batch.num_rows() {
                rows.push(Row {
                    file: path.strip_prefix(lake).unwrap().display().to_string(),
                    event_id: ids.value(i).to_owned(),
                    partner: partners.value(i).to_owned(),
                    event_type: types.value(i).to_owned(),
                    received_at: received.value(i),
                    ip: (!ips.is_null(i)).then(|| ips.value(i).to_owned()),
                    device_type: (!devices.is_null(i)).then(|| devices.value(i).to_owned()),
                });
            }
        }
    }
    rows
}

fn count_by_id(rows: &[Row]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row.event_id.clone()).or_default() += 1;
    }
    counts
}

#[test]
fn events_in_every_form_land_exactly_once_and_bad_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let mut local = Local::start(dir.path(), &[]);
    let client = reqwest::blocking::Client::new();
    let events_url = format!("{}/v1/acme-video/events", local.base);
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();

    for (content_type, body) in [
        ("application/json", json(acme_event("j1"))),
        (
            "application/json",
            json(serde_json::json!([acme_event("j2"), acme_event("j3")])),
        ),
        (
            "application/json",
            json(serde_json::json!({"events": [acme_event("j4")]})),
        ),
        (
            "application/x-ndjson",
            format!("{}\n{}\n", acme_event("j5"), acme_event("j6")).into_bytes(),
        ),
    ] {
        let r = post_signed(&client, &events_url, content_type, body, ACME_SECRET);
        assert_eq!(r.status(), 200);
    }
    let partial = post_signed(
        &client,
        &events_url,
        "application/json",
        json(serde_json::json!([acme_event("j7"), {"id": "bad1", "type": "imp", "ts": "soon"}])),
        ACME_SECRET,
    );
    assert_eq!(partial.status(), 200);
    let summary: serde_json::Value = partial.json().unwrap();
    assert_eq!(
        (summary["accepted"].as_u64(), summary["rejected"].as_u64()),
        (Some(1), Some(1))
    );

    let forged = post_signed(
        &client,
        &events_url,
        "application/json",
        json(acme_event("bad2")),
        "not-the-secret",
    );
    assert_eq!(forged.status(), 401);
    let huge = post_signed(
        &client,
        &events_url,
        "application/json",
        vec![b' '; 2 * 1024 * 1024],
        ACME_SECRET,
    );
    assert_eq!(huge.status(), 413);
    let body: serde_json::Value = huge.json().unwrap();
    assert!(body["reason"].as_str().unwrap().contains("limit"));

    let t = now_ms() / 1000;
    for id in ["px1", "px2"] {
        let r = client
            .get(pixel_url(
                &local.base,
                &format!("ev=imp&eid={id}&sid=ps&t={t}&cid=c9"),
            ))
            .header(
                "user-agent",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0 Safari/537.36",
            )
            .send()
            .unwrap();
        assert!(r.status().is_success());
        assert_eq!(r.bytes().unwrap().len(), 43);
    }
    let forged_pixel = client
        .get(format!(
            "{}/v1/pixelco/pixel.gif?ev=imp&eid=bad3&sig=00",
            local.base
        ))
        .send()
        .unwrap();
    assert_eq!(forged_pixel.status(), 401);

    let challenge = client.get(format!("{}/v1/metaco/webhook?hub.mode=subscribe&hub.verify_token={META_SECRET}&hub.challenge=c-42", local.base)).send().unwrap();
    assert_eq!(challenge.text().unwrap(), "c-42");
    let envelope = serde_json::json!({"object": "page", "entry": [{"id": "1", "time": t, "changes": [
        {"field": "ads", "value": {"event_id": "m1", "event_name": "Impression", "event_time": t}},
        {"field": "ads", "value": {"event_id": "m2", "event_name": "Click", "event_time": t}}]}]});
    let r = post_signed(
        &client,
        &format!("{}/v1/metaco/webhook", local.base),
        "application/json",
        json(envelope),
        META_SECRET,
    );
    assert_eq!(r.status(), 200);

    let metrics = client
        .get(format!("{}/metrics", local.metrics))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        r#"adpipe_receiver_events_accepted_total{partner="acme-video"} 7"#,
        r#"adpipe_receiver_events_rejected_total{partner="acme-video",reason="invalid_time"} 1"#,
        r#"adpipe_receiver_requests_total{partner="acme-video",route="events",status="401"} 1"#,
        r#"adpipe_receiver_requests_total{partner="acme-video",route="events",status="413"} 1"#,
        r#"adpipe_receiver_events_accepted_total{partner="metaco"} 2"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains(ACME_SECRET),
        "secrets never reach metrics"
    );

    assert!(
        local.process.interrupt().success(),
        "{}",
        local.process.log()
    );
    assert!(
        !local.process.log().contains(ACME_SECRET),
        "secrets never reach logs"
    );
    let rows = read_lake(&local.lake());
    let counts = count_by_id(&rows);
    let expected: BTreeSet<&str> = [
        "j1", "j2", "j3", "j4", "j5", "j6", "j7", "px1", "px2", "m1", "m2",
    ]
    .into();
    assert_eq!(
        counts.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");

    for row in &rows {
        let when = chrono::DateTime::from_timestamp_millis(row.received_at).unwrap();
        let partition = format!(
            "partner={}/dt={}/hour={}/",
            row.partner,
            when.format("%Y-%m-%d"),
            when.format("%H")
        );
        assert!(
            row.file.contains(&partition),
            "{} is not under {partition}",
            row.file
        );
        assert!(row.file.starts_with("ads-lake/events/"), "{}", row.file);
    }
    let j1 = rows.iter().find(|r| r.event_id == "j1").unwrap();
    assert_eq!(
        (j1.event_type.as_str(), j1.ip.as_deref()),
        ("impression", Some("203.0.113.0"))
    );
    assert_eq!(
        j1.device_type.as_deref(),
        Some("mobile"),
        "user-agent enrichment ran"
    );
    let m2 = rows.iter().find(|r| r.event_id == "m2").unwrap();
    assert_eq!(m2.event_type, "click");
}

#[test]
fn a_sigkill_after_durable_acks_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut local = Local::start(dir.path(), &["--flush-interval", "1s"]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let send =
        |base: String, round: usize, acked: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>| {
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let url = format!("{base}/v1/acme-video/events");
                for request in 0.. {
                    if stop.load(Ordering::SeqCst) || request >= 400 {
                        break;
                    }
                    let ids: Vec<String> =
                        (0..5).map(|i| format!("r{round}-{request}-{i}")).collect();
                    let body: Vec<_> = ids.iter().map(|id| acme_event(id)).collect();
                    let body = serde_json::to_vec(&body).unwrap();
                    match client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header(
                            "x-hub-signature-256",
                            format!(
                                "sha256={}",
                                adpipe_core::auth::sign(ACME_SECRET.as_bytes(), &body)
                            ),
                        )
                        .body(body)
                        .send()
                    {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                        Ok(_) | Err(_) => {}
                    }
                }
            })
        };

    let sender = send(local.base.clone(), 1, acked.clone(), stop.clone());
    // Kill mid-stream, once some events are acknowledged and some files may be written.
    while acked.lock().unwrap().len() < 500 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    local.process.kill();
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let before_restart = acked.lock().unwrap().len();
    assert!(before_restart >= 500);

    local.process.restart();
    send(
        local.base.clone(),
        2,
        acked.clone(),
        Arc::new(AtomicBool::new(false)),
    )
    .join()
    .unwrap();
    assert!(
        local.process.interrupt().success(),
        "{}",
        local.process.log()
    );

    let counts = count_by_id(&read_lake(&local.lake()));
    let acked = acked.lock().unwrap();
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "duplicated: {:?}",
        &duplicated[..duplicated.len().min(5)]
    );
    assert!(
        acked.len() > before_restart,
        "the restarted pipeline accepted events too"
    );
}
