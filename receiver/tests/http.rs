//! The receiver's HTTP contract, exercised through warp's test client (no socket) against
//! an in-memory stream that records what was put.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use adpipe_core::auth::sign;
use adpipe_core::event::AdEvent;
use adpipe_core::kpl::deaggregate;
use adpipe_core::shard::{ShardMap, hash_key, split_evenly};
use adpipe_core::spec::PipelineDocument;
use adpipe_core::stream::{PutEntry, PutOutcome, SequenceNumber, Shard, StreamError, StreamWriter};
use adpipe_receiver::http::request_footprint;
use adpipe_receiver::metrics::ReceiverMetrics;
use adpipe_receiver::partner::Partner;
use adpipe_receiver::producer::{Producer, ProducerOptions};
use adpipe_receiver::{ReceiverState, routes};
use async_trait::async_trait;
use tokio::sync::Semaphore;

const ACME_SECRET: &str = "demo-acme-video-secret";
const PIXEL_SECRET: &str = "demo-pixelco-secret";
const META_SECRET: &str = "demo-metaco-app-secret";

/// A stream that keeps every accepted entry; `gate` can hold puts back.
struct MemoryStream {
    shards: Vec<Shard>,
    entries: Mutex<Vec<(String, PutEntry)>>,
    gate: Option<Arc<Semaphore>>,
}

impl MemoryStream {
    fn new(gate: Option<Arc<Semaphore>>) -> MemoryStream {
        let shards = split_evenly(2)
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| Shard {
                id: format!("shardId-{i:012}"),
                starting_hash_key: start,
                ending_hash_key: end,
                parent_shard_id: None,
                adjacent_parent_shard_id: None,
                open: true,
            })
            .collect();
        MemoryStream {
            shards,
            entries: Mutex::new(Vec::new()),
            gate,
        }
    }

    /// Every event put, de-aggregated, with the shard its record landed on.
    fn events(&self) -> Vec<(String, AdEvent<'static>)> {
        let map = ShardMap::new(&self.shards);
        let mut out = Vec::new();
        for (shard, entry) in self.entries.lock().unwrap().iter() {
            for user in deaggregate(&entry.data, &entry.partition_key).unwrap() {
                let predicted = map.shard_for(hash_key(&user.partition_key)).unwrap();
                assert_eq!(
                    &predicted.id, shard,
                    "a user record landed on a shard that does not own its key"
                );
                out.push((shard.clone(), serde_json::from_slice(&user.data).unwrap()));
            }
        }
        out
    }
}

#[async_trait]
impl StreamWriter for MemoryStream {
    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        Ok(self.shards.clone())
    }

    async fn put(&self, entries: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        if let Some(gate) = &self.gate {
            let _permit = gate
                .acquire()
                .await
                .map_err(|e| StreamError::Unavailable(e.to_string()))?;
        }
        let map = ShardMap::new(&self.shards);
        let mut stored = self.entries.lock().unwrap();
        Ok(entries
            .iter()
            .map(|e| {
                let hash = e
                    .explicit_hash_key
                    .unwrap_or_else(|| hash_key(&e.partition_key));
                let shard = map.shard_for(hash).unwrap().id.clone();
                stored.push((shard.clone(), e.clone()));
                PutOutcome::Accepted {
                    shard_id: shard,
                    sequence: SequenceNumber::from_u64(stored.len() as u64),
                }
            })
            .collect())
    }
}

struct Harness {
    state: Arc<ReceiverState>,
    stream: Arc<MemoryStream>,
}

/// The repository root, from the directory cargo runs these tests in: a build made in another
/// clone that shares the target directory would otherwise point at that clone's files.
fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn pipeline(name: &str) -> PipelineDocument {
    let path = repo()
        .join("examples/pipelines")
        .join(format!("{name}.yaml"));
    adpipe_core::validate::load_file(&path).unwrap().remove(0)
}

fn harness_with(
    doc: PipelineDocument,
    options: ProducerOptions,
    gate: Option<Arc<Semaphore>>,
) -> Harness {
    let stream = Arc::new(MemoryStream::new(gate));
    let registry = prometheus::Registry::new();
    let metrics = ReceiverMetrics::register(&registry).unwrap();
    let partner_metrics = metrics.partner(&doc.spec.partner);
    let (producer, _task) = Producer::start(stream.clone(), options, partner_metrics.clone());
    let secrets = repo().join("examples/secrets");
    let partner = Partner::new(&doc, &secrets, producer, partner_metrics).unwrap();
    Harness {
        state: Arc::new(ReceiverState::new([partner])),
        stream,
    }
}

fn harness(name: &str) -> Harness {
    harness_with(pipeline(name), ProducerOptions::default(), None)
}

fn now_ms() -> i64 {
    adpipe_core::event::EpochMillis::now().0
}

fn acme_event(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "type": "imp", "ts": now_ms(), "session": format!("s-{id}"),
        "campaign": "c1", "ua": "Mozilla/5.0", "ip": "203.0.113.77", "extra": {"deal": "d9"}})
}

async fn post_signed(
    h: &Harness,
    path: &str,
    content_type: &str,
    body: &[u8],
    secret: &str,
) -> warp::http::Response<bytes::Bytes> {
    warp::test::request()
        .method("POST")
        .path(path)
        .header("content-type", content_type)
        .header(
            "x-hub-signature-256",
            format!("sha256={}", sign(secret.as_bytes(), body)),
        )
        .body(body)
        .reply(&routes(h.state.clone()))
        .await
}

fn json_body(r: &warp::http::Response<bytes::Bytes>) -> serde_json::Value {
    serde_json::from_slice(r.body()).unwrap()
}

#[tokio::test]
async fn every_json_body_shape_lands_as_standard_events() {
    let h = harness("acme-video");
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "application/json",
            serde_json::to_vec(&acme_event("a1")).unwrap(),
        ),
        (
            "application/json",
            serde_json::to_vec(&serde_json::json!([acme_event("a2"), acme_event("a3")])).unwrap(),
        ),
        (
            "application/json",
            serde_json::to_vec(&serde_json::json!({"events": [acme_event("a4")]})).unwrap(),
        ),
        (
            "application/x-ndjson",
            format!("{}\n\n{}\n", acme_event("a5"), acme_event("a6")).into_bytes(),
        ),
    ];
    for (content_type, body) in bodies {
        let r = post_signed(
            &h,
            "/v1/acme-video/events",
            content_type,
            &body,
            ACME_SECRET,
        )
        .await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(json_body(&r)["rejected"], 0);
    }
    let mut events = h.stream.events();
    events.sort_by(|a, b| a.1.event_id.cmp(&b.1.event_id));
    let ids: Vec<_> = events.iter().map(|(_, e)| e.event_id.as_ref()).collect();
    assert_eq!(ids, ["a1", "a2", "a3", "a4", "a5", "a6"]);
    let first = &events[0].1;
    assert_eq!(first.partner, "acme-video");
    assert_eq!(first.event_type.as_str(), "impression");
    assert_eq!(
        first.ip.as_deref(),
        Some("203.0.113.0"),
        "the address is anonymised before the stream"
    );
    assert_eq!(first.ad_session_id.as_deref(), Some("s-a1"));
    assert_eq!(
        first.attributes.get("extra.deal").map(AsRef::as_ref),
        Some("d9")
    );
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_lands() {
    let h = harness("acme-video");
    let body = serde_json::to_vec(&acme_event("x")).unwrap();
    let r = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &body,
        "wrong-secret",
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(
        json_body(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256")
    );
    let unsigned = warp::test::request()
        .method("POST")
        .path("/v1/acme-video/events")
        .header("content-type", "application/json")
        .body(body)
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(unsigned.status(), 401);
    assert!(h.stream.events().is_empty());
}

#[tokio::test]
async fn one_bad_event_is_rejected_alone_and_all_bad_is_400() {
    let h = harness("acme-video");
    let mut stale = acme_event("old");
    stale["ts"] = serde_json::json!(now_ms() - 8 * 24 * 3600 * 1000);
    let mut unknown = acme_event("u");
    unknown["type"] = serde_json::json!("hover");
    let body =
        serde_json::to_vec(&serde_json::json!([acme_event("ok"), stale, unknown, 42])).unwrap();
    let r = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &body,
        ACME_SECRET,
    )
    .await;
    assert_eq!(r.status(), 200);
    let summary = json_body(&r);
    assert_eq!(summary["accepted"], 1);
    assert_eq!(summary["rejected"], 3);
    let errors = summary["errors"].as_array().unwrap();
    assert_eq!(errors[0]["index"], 1);
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("older than 7 days")
    );
    assert_eq!(errors[1]["index"], 2);
    assert!(
        errors[1]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown event type `hover`")
    );
    assert!(
        errors[2]["reason"]
            .as_str()
            .unwrap()
            .contains("expected a JSON object")
    );

    let bad = serde_json::to_vec(&serde_json::json!([{"id": "n", "ts": now_ms()}])).unwrap();
    let r = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &bad,
        ACME_SECRET,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        json_body(&r)["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("`/type` is missing")
    );
    assert_eq!(h.stream.events().len(), 1);
}

#[tokio::test]
async fn oversize_wrong_type_and_broken_json_get_their_statuses() {
    let h = harness("acme-video");
    let big = vec![b' '; 1024 * 1024 + 1];
    let r = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &big,
        ACME_SECRET,
    )
    .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "the unread body must not be taken for the next request"
    );
    assert!(
        json_body(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("1048576")
    );
    let r = post_signed(
        &h,
        "/v1/acme-video/events",
        "text/plain",
        b"{}",
        ACME_SECRET,
    )
    .await;
    assert_eq!(r.status(), 415);
    assert!(
        json_body(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );
    let r = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        b"{\"id\":",
        ACME_SECRET,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        json_body(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let r = warp::test::request()
        .path("/v1/nobody/events")
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(r.status(), 404);
    assert!(
        json_body(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("unknown partner `nobody`")
    );
    let r = warp::test::request()
        .path("/v1/acme-video/pixel.gif")
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(r.status(), 404);
    let r = warp::test::request()
        .method("GET")
        .path("/v1/acme-video/events")
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(r.status(), 405);
    assert!(h.stream.events().is_empty());
}

#[tokio::test]
async fn a_signed_pixel_answers_a_no_cache_gif_and_takes_the_viewer_from_the_request() {
    let h = harness("pixelco");
    let query = format!(
        "ev=imp&eid=p1&sid=sess-9&t={}&cid=camp&cb=123",
        now_ms() / 1000
    );
    let sig = sign(PIXEL_SECRET.as_bytes(), query.as_bytes());
    let r = warp::test::request()
        .path(&format!("/v1/pixelco/pixel.gif?{query}&sig={sig}"))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        )
        .header("x-forwarded-for", "198.51.100.23, 10.0.0.1")
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(r.status(), 202, "pixelco acknowledges buffered");
    assert_eq!(r.body().len(), 43);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let head = warp::test::request()
        .method("HEAD")
        .path("/v1/pixelco/pixel.gif?x=1")
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(head.status(), 204);
    let forged = warp::test::request()
        .path(&format!(
            "/v1/pixelco/pixel.gif?ev=click&eid=p1&sid=sess-9&sig={sig}"
        ))
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(forged.status(), 401);

    let events = wait_for_events(&h, 1).await;
    let event = &events[0].1;
    assert_eq!(event.ip.as_deref(), Some("198.51.100.0"));
    assert_eq!(
        event.user_agent.as_deref(),
        Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")
    );
    assert_eq!(event.attributes.get("cb").map(AsRef::as_ref), Some("123"));
    assert!(!event.attributes.contains_key("sig"));
}

async fn wait_for_events(h: &Harness, n: usize) -> Vec<(String, AdEvent<'static>)> {
    for _ in 0..500 {
        let events = h.stream.events();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the stream never received {n} events");
}

#[tokio::test]
async fn the_meta_handshake_echoes_the_challenge_only_for_the_right_token() {
    let h = harness("metaco");
    let ok = warp::test::request()
        .path(&format!("/v1/metaco/webhook?hub.mode=subscribe&hub.verify_token={META_SECRET}&hub.challenge=12345"))
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.body().as_ref(), b"12345");
    let wrong = warp::test::request()
        .path("/v1/metaco/webhook?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=12345")
        .reply(&routes(h.state.clone()))
        .await;
    assert_eq!(wrong.status(), 403);

    let t = now_ms() / 1000;
    let envelope = serde_json::json!({"object": "page", "entry": [
        {"id": "e1", "time": t, "changes": [
            {"field": "ads", "value": {"event_id": "m1", "event_name": "Impression", "event_time": t, "campaign_id": "c"}},
            {"field": "ads", "value": {"event_id": "m2", "event_name": "Purchase", "event_time": t, "spend_micros": 1500000, "currency": "EUR"}}
        ]}
    ]});
    let body = serde_json::to_vec(&envelope).unwrap();
    let r = post_signed(
        &h,
        "/v1/metaco/webhook",
        "application/json",
        &body,
        META_SECRET,
    )
    .await;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    assert_eq!(json_body(&r)["accepted"], 2);
    let mut events = h.stream.events();
    events.sort_by(|a, b| a.1.event_id.cmp(&b.1.event_id));
    assert_eq!(events[1].1.event_type.as_str(), "conversion");
    assert_eq!(events[1].1.price_micros, Some(1_500_000));
    assert_eq!(
        events[1].1.attributes.get("meta_field").map(AsRef::as_ref),
        Some("ads")
    );
}

/// Posts `body` signed, in a task of its own, and returns once the request is held in the
/// producer (its stream's `gate` has no permits); the task answers when the gate opens.
async fn post_held<F>(
    h: &Harness,
    routes: &F,
    body: &[u8],
) -> tokio::task::JoinHandle<http::Response<bytes::Bytes>>
where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let producer = h.state.partners().next().unwrap().producer.clone();
    let buffered_before = producer.buffered_bytes();
    let signature = format!("sha256={}", sign(ACME_SECRET.as_bytes(), body));
    let (routes, body) = (routes.clone(), body.to_vec());
    let held = tokio::spawn(async move {
        warp::test::request()
            .method("POST")
            .path("/v1/acme-video/events")
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .reply(&routes)
            .await
    });
    for _ in 0..1000 {
        if producer.buffered_bytes() > buffered_before {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        producer.buffered_bytes() > buffered_before,
        "the held request never reached the producer"
    );
    held
}

#[tokio::test]
async fn full_buffers_answer_503_with_retry_after_and_draining_fails_readiness() {
    let gate = Arc::new(Semaphore::new(0));
    let options = ProducerOptions {
        max_buffered_bytes: 300,
        ..ProducerOptions::default()
    };
    let h = harness_with(pipeline("acme-video"), options, Some(gate.clone()));
    let body = serde_json::to_vec(&acme_event("held")).unwrap();
    let routes = routes(h.state.clone());
    // Once the held request owns the budget, the next one cannot fit.
    let first = post_held(&h, &routes, &body).await;
    refused_for_now(&h, &body, "buffers are full").await;

    gate.add_permits(1000);
    let first = first.await.unwrap();
    assert_eq!(
        first.status(),
        200,
        "the held request is answered once the stream takes it"
    );

    let ready = warp::test::request().path("/readyz").reply(&routes).await;
    assert_eq!(ready.status(), 200);
    h.state.start_draining();
    let ready = warp::test::request().path("/readyz").reply(&routes).await;
    assert_eq!(ready.status(), 503);
    let r = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &body,
        ACME_SECRET,
    )
    .await;
    assert_eq!(r.status(), 503);
}

/// Posts `body` and checks it is refused for now: `503`, `Retry-After: 1`, and a reason
/// that says `why`.
async fn refused_for_now(
    h: &Harness,
    body: &[u8],
    why: &str,
) -> warp::http::Response<bytes::Bytes> {
    let refused = post_signed(
        h,
        "/v1/acme-video/events",
        "application/json",
        body,
        ACME_SECRET,
    )
    .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let reason = json_body(&refused)["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains(why), "{reason}");
    refused
}

/// An acme-video harness whose stream holds every put until the returned gate opens, and
/// whose requests in flight may count at most what one request with a body of `len` bytes
/// counts.
fn gated_with_room_for(len: usize) -> (Harness, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let doc = pipeline("acme-video");
    let max_body_bytes = doc.spec.receiver.max_body_bytes;
    let mut h = harness_with(doc, ProducerOptions::default(), Some(gate.clone()));
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_LENGTH, len.into());
    let room = request_footprint(&headers, max_body_bytes);
    h.state = Arc::new(Arc::into_inner(h.state).unwrap().with_in_flight_bytes(room));
    (h, gate)
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_answer_503_and_close_the_connection() {
    let body = serde_json::to_vec(&acme_event("held")).unwrap();
    let (h, gate) = gated_with_room_for(body.len());
    let routes = routes(h.state.clone());
    let first = post_held(&h, &routes, &body).await;

    let refused = refused_for_now(&h, &body, "in flight").await;
    assert_eq!(refused.headers()["connection"], "close");

    gate.add_permits(1000);
    assert_eq!(first.await.unwrap().status(), 200);
    let after = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &body,
        ACME_SECRET,
    )
    .await;
    assert_eq!(
        after.status(),
        200,
        "the slot is free again once the first is answered"
    );
}

#[tokio::test]
async fn small_requests_waiting_for_the_stream_are_not_refused_where_large_ones_would_be() {
    let batch: Vec<serde_json::Value> = (0..20).map(|n| acme_event(&format!("b{n}"))).collect();
    let large = serde_json::to_vec(&batch).unwrap();
    let (h, gate) = gated_with_room_for(large.len());
    let routes = routes(h.state.clone());
    // Two single events fit in the room of one 20-event request, and wait for the stream
    // there; counted as requests, the second would have been refused.
    let mut held = Vec::new();
    for n in 0..2 {
        let single = serde_json::to_vec(&acme_event(&format!("s{n}"))).unwrap();
        held.push(post_held(&h, &routes, &single).await);
    }
    refused_for_now(&h, &large, "in flight").await;

    gate.add_permits(1000);
    for answer in held {
        assert_eq!(answer.await.unwrap().status(), 200);
    }
    assert_eq!(wait_for_events(&h, 2).await.len(), 2);
}

#[tokio::test]
async fn the_rate_limit_answers_429() {
    let mut doc = pipeline("acme-video");
    doc.spec.receiver.rate_limit = Some(adpipe_core::spec::RateLimit {
        requests_per_second: 1,
        burst: Some(1),
    });
    let h = harness_with(doc, ProducerOptions::default(), None);
    let body = serde_json::to_vec(&acme_event("r1")).unwrap();
    let first = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &body,
        ACME_SECRET,
    )
    .await;
    assert_eq!(first.status(), 200);
    let second = post_signed(
        &h,
        "/v1/acme-video/events",
        "application/json",
        &body,
        ACME_SECRET,
    )
    .await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
}
