//! HTTP/1.1 keep-alive serving of a [`Sink`], as a local Kinesis endpoint.
//!
//! ```text
//! POST /  (X-Amz-Target) ─▶ body ─▶ Sink::call (under a lock) ─▶ [latency] ─▶ JSON reply
//! GET /stats             ─▶ flush the ids file ─▶ Ledger::snapshot as JSON
//! GET /healthz           ─▶ 200
//! ```
//!
//! The injected latency is paid by each `PutRecords`/`PutRecord` call after it is stored,
//! without holding the lock, like a Kinesis round trip that producers overlap.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::api::Sink;

/// The content type of the `awsJson1_1` protocol.
const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// How a sink is served.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Added to every put call before it is answered.
    pub put_latency: Duration,
}

/// Serves `sink` on `listener` until `shutdown` resolves, then flushes the ids file.
pub async fn serve(
    listener: TcpListener,
    sink: Arc<Mutex<Sink>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("kinesis-sink: failed to accept a connection: {e}");
                continue;
            }
        };
        // NOTE: small answers on a keep-alive connection; without it each waits for an ACK.
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(sink.clone(), options, request));
            // A client that hangs up mid-request is its own business.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(e) = sink.ledger_mut().flush_ids() {
        eprintln!("kinesis-sink: failed to flush the ids file: {e}");
    }
}

async fn answer(
    sink: Arc<Mutex<Sink>>,
    options: ServeOptions,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/stats") => {
            let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = sink.ledger_mut().flush_ids() {
                return Ok(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("failed to flush the ids file: {e}"),
                ));
            }
            let body = serde_json::to_vec(&sink.ledger().snapshot()).unwrap_or_default();
            Ok(json(StatusCode::OK, body, "application/json"))
        }
        (&Method::GET, "/healthz") => Ok(plain(StatusCode::OK, "ok".to_owned())),
        (&Method::POST, "/") => {
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    return Ok(plain(
                        StatusCode::BAD_REQUEST,
                        format!("failed to read the body: {e}"),
                    ));
                }
            };
            let reply = {
                let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
                sink.call(&target, &body, Instant::now())
            };
            let put = target.ends_with(".PutRecords") || target.ends_with(".PutRecord");
            if put && !options.put_latency.is_zero() {
                tokio::time::sleep(options.put_latency).await;
            }
            let mut response = json(reply.status, reply.body, AMZ_JSON);
            if let Some(kind) = reply.error_type {
                response
                    .headers_mut()
                    .insert("x-amzn-errortype", HeaderValue::from_static(kind));
            }
            Ok(response)
        }
        _ => Ok(plain(StatusCode::NOT_FOUND, "no such route".to_owned())),
    }
}

fn json(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert("x-amzn-requestid", HeaderValue::from_static("kinesis-sink"));
    response
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
