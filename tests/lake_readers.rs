//! The lake `adpipe local` writes, read by DuckDB and pyarrow (the readers platform teams
//! use) through `tests/python/read_lake.py`: the contract's columns and types, Hive
//! partitions that match `received_at`, every event exactly once.
#![cfg(feature = "external-tests")]
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::*;

#[test]
fn duckdb_and_pyarrow_read_the_lake_with_the_contract_columns() {
    let dir = tempfile::tempdir().unwrap();
    let geoip = repo().join("testdata/geoip/GeoIP2-City-Test.mmdb");
    let mut local = Local::start(dir.path(), &["--geoip-database", geoip.to_str().unwrap()]);
    let client = reqwest::blocking::Client::new();
    let events: Vec<_> = (0..50).map(|i| acme_event(&format!("a{i:02}"))).collect();
    let r = post_signed(
        &client,
        &format!("{}/v1/acme-video/events", local.base),
        "application/json",
        serde_json::to_vec(&events).unwrap(),
        ACME_SECRET,
    );
    assert_eq!(r.status(), 200);
    let t = now_ms() / 1000;
    let r = client.get(pixel_url(&local.base, &format!("ev=click&eid=p01&sid=s&t={t}")))
        .header("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")
        .send().unwrap();
    assert!(r.status().is_success());
    assert!(
        local.process.interrupt().success(),
        "{}",
        local.process.log()
    );

    let lake = local.lake().join("ads-lake/events");
    let out = adpipe_testkit::run_python("read_lake.py", &[lake.to_str().unwrap()]);
    let seen: Value = serde_json::from_str(&out).unwrap();

    let duck: BTreeMap<String, String> = seen["duckdb_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap().to_owned(),
                c[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(duck["event_time"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(duck["received_at"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(duck["attributes"], "MAP(VARCHAR, VARCHAR)");
    assert_eq!(duck["price_micros"], "BIGINT");
    assert_eq!(duck["event_id"], "VARCHAR");
    for partition in ["dt", "hour"] {
        assert!(
            duck.contains_key(partition),
            "DuckDB sees the Hive partition `{partition}`"
        );
    }

    let rows = seen["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 51);
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 51, "no duplicates");
    for row in rows {
        let received =
            chrono::DateTime::from_timestamp_millis(row["received_at"].as_i64().unwrap()).unwrap();
        assert_eq!(
            row["dt"].as_str().unwrap(),
            received.format("%Y-%m-%d").to_string()
        );
        assert_eq!(
            row["hour"].as_str().unwrap().parse::<u32>().unwrap(),
            received.format("%H").to_string().parse::<u32>().unwrap()
        );
    }
    let a00 = rows.iter().find(|r| r["event_id"] == "a00").unwrap();
    assert_eq!(a00["partner"], "acme-video");
    assert_eq!(a00["event_type"], "impression");
    assert_eq!(a00["ip"], "203.0.113.0");
    assert_eq!(
        a00["deal"], "d-1",
        "unmapped partner fields are in the attributes map"
    );
    assert_eq!(a00["device_type"], "mobile");
    let geo = (
        a00["country"].as_str(),
        a00["region"].as_str(),
        a00["city"].as_str(),
    );
    assert_eq!(
        geo,
        (Some("US"), Some("CA"), Some("San Francisco")),
        "GeoIP enrichment ran"
    );
    let p01 = rows.iter().find(|r| r["event_id"] == "p01").unwrap();
    assert_eq!(
        (p01["partner"].as_str(), p01["event_type"].as_str()),
        (Some("pixelco"), Some("click"))
    );
    assert_eq!(p01["browser"], "Chrome");
    assert_eq!(
        p01["ip"], "127.0.0.0",
        "the pixel's viewer is the client address, anonymised"
    );

    let arrow: BTreeMap<String, String> = seen["pyarrow_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap().to_owned(),
                c[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(arrow["event_time"], "timestamp[ms, tz=UTC]");
    assert_eq!(
        seen["pyarrow_attributes"],
        serde_json::json!(["True", "string", "string"]),
        "{}",
        arrow["attributes"]
    );
    assert_eq!(seen["pyarrow_rows"], 51);
}
