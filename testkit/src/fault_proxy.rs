//! A fault-injecting HTTP proxy in front of moto: throttled `PutRecords` and `GetRecords`
//! calls, partial `PutRecords` failures, and S3 `503 SlowDown`, each for a chosen fraction of
//! calls. Honest faults only: an entry reported as failed is never forwarded, so it is not
//! stored — exactly what Kinesis promises.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode};

/// What to inject, as fractions of calls (or entries) in 0.0..=1.0.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Whole `PutRecords` calls answered with a throttling error.
    pub put_throttle: f64,
    /// `PutRecords` entries answered as failed (throughput exceeded) and not stored.
    pub put_entry_failure: f64,
    /// `GetRecords` calls answered with a throttling error.
    pub read_throttle: f64,
    /// S3 `PUT`/`POST` requests answered with `503 SlowDown`.
    pub s3_unavailable: f64,
}

/// How many faults were injected.
#[derive(Debug, Default)]
pub struct Injected {
    /// Whole `PutRecords` calls throttled.
    pub put_throttles: AtomicU64,
    /// `PutRecords` entries failed.
    pub failed_entries: AtomicU64,
    /// `GetRecords` calls throttled.
    pub read_throttles: AtomicU64,
    /// S3 writes answered `503`.
    pub s3_errors: AtomicU64,
}

/// A running proxy; stops with the test process.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use as `AWS_ENDPOINT_URL`.
    pub url: String,
    /// What was injected so far.
    pub injected: Arc<Injected>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. moto's `http://127.0.0.1:PORT`) on a free port.
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let injected = Arc::new(Injected::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let counters = injected.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let client = reqwest::Client::new();
                let route = warp::method()
                    .and(warp::path::full())
                    .and(warp::query::raw().or(warp::any().map(String::new)).unify())
                    .and(warp::header::headers_cloned())
                    .and(warp::body::bytes())
                    .then(
                        move |method: Method,
                              path: warp::path::FullPath,
                              query: String,
                              headers: HeaderMap,
                              body: Bytes| {
                            let (client, upstream, counters) =
                                (client.clone(), upstream.clone(), counters.clone());
                            async move {
                                let call = Call {
                                    method,
                                    path: path.as_str().to_owned(),
                                    query,
                                    headers,
                                    body,
                                };
                                handle(&client, &upstream, faults, &counters, call).await
                            }
                        },
                    );
                warp::serve(route).incoming(listener).run().await;
            });
        });
        let addr: SocketAddr = rx.recv().unwrap();
        FaultProxy {
            url: format!("http://{addr}"),
            injected,
        }
    }
}

struct Call {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

fn chance(p: f64) -> bool {
    p > 0.0 && rand::rng().random_bool(p.min(1.0))
}

async fn handle(
    client: &reqwest::Client,
    upstream: &str,
    faults: Faults,
    injected: &Injected,
    call: Call,
) -> Response<Vec<u8>> {
    let target = call
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    match target.as_str() {
        "Kinesis_20131202.PutRecords" => {
            if chance(faults.put_throttle) {
                injected.put_throttles.fetch_add(1, Ordering::Relaxed);
                return throttled();
            }
            if faults.put_entry_failure > 0.0 {
                return partial_put(client, upstream, faults, injected, call).await;
            }
        }
        "Kinesis_20131202.GetRecords" if chance(faults.read_throttle) => {
            injected.read_throttles.fetch_add(1, Ordering::Relaxed);
            return throttled();
        }
        "" if (call.method == Method::PUT || call.method == Method::POST)
            && chance(faults.s3_unavailable) =>
        {
            injected.s3_errors.fetch_add(1, Ordering::Relaxed);
            return response(StatusCode::SERVICE_UNAVAILABLE, "application/xml",
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate (injected).</Message></Error>".to_vec());
        }
        _ => {}
    }
    forward(client, upstream, &call, call.body.clone()).await
}

/// Fails a random subset of entries without forwarding them, forwards the rest, and merges
/// the answers back in request order.
async fn partial_put(
    client: &reqwest::Client,
    upstream: &str,
    faults: Faults,
    injected: &Injected,
    call: Call,
) -> Response<Vec<u8>> {
    let Ok(mut request) = serde_json::from_slice::<Value>(&call.body) else {
        return forward(client, upstream, &call, call.body.clone()).await;
    };
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let failed: Vec<bool> = records
        .iter()
        .map(|_| chance(faults.put_entry_failure))
        .collect();
    let kept: Vec<Value> = records
        .iter()
        .zip(&failed)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.clone())
        .collect();
    let mut answers = Vec::new();
    let mut failed_count = failed.iter().filter(|f| **f).count() as u64;
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let upstream_response =
            forward(client, upstream, &call, Bytes::from(request.to_string())).await;
        if upstream_response.status() != StatusCode::OK {
            return upstream_response;
        }
        let Ok(answer) = serde_json::from_slice::<Value>(upstream_response.body()) else {
            return upstream_response;
        };
        failed_count += answer["FailedRecordCount"].as_u64().unwrap_or(0);
        answers = answer["Records"].as_array().cloned().unwrap_or_default();
    }
    injected.failed_entries.fetch_add(
        failed.iter().filter(|f| **f).count() as u64,
        Ordering::Relaxed,
    );
    let mut answers = answers.into_iter();
    let merged: Vec<Value> = failed
        .iter()
        .map(|f| if *f {
            json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard (injected)"})
        } else {
            answers.next().unwrap_or(Value::Null)
        })
        .collect();
    let body = json!({"FailedRecordCount": failed_count, "Records": merged}).to_string();
    response(
        StatusCode::OK,
        "application/x-amz-json-1.1",
        body.into_bytes(),
    )
}

fn throttled() -> Response<Vec<u8>> {
    response(StatusCode::BAD_REQUEST, "application/x-amz-json-1.1",
        br#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded (injected)"}"#.to_vec())
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    call: &Call,
    body: Bytes,
) -> Response<Vec<u8>> {
    let url = if call.query.is_empty() {
        format!("{upstream}{}", call.path)
    } else {
        format!("{upstream}{}?{}", call.path, call.query)
    };
    let mut request = client.request(call.method.clone(), url).body(body);
    for (name, value) in &call.headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let mut builder = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    builder = builder.header(name, value);
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            builder.body(bytes.to_vec()).unwrap()
        }
        Err(e) => response(
            StatusCode::BAD_GATEWAY,
            "text/plain",
            e.to_string().into_bytes(),
        ),
    }
}
