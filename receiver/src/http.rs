//! The HTTP surface: warp filters that extract a request, and the one handler that serves
//! every partner route.
//!
//! ```text
//! /v1/{partner}/{route} ─▶ partner? ─▶ draining? ─▶ in-flight bytes? ─▶ rate limit ─▶ route?
//!      ─▶ body ≤ limit
//!      ─▶ auth (signature / key) ─▶ SourceFormat::decode ─▶ reserve buffer ─▶ producer
//!      ─▶ durable: wait for the stream │ buffered: 202 at once
//! /healthz, /readyz                      liveness, readiness (draining or stream down ⇒ 503)
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use adpipe_core::auth::{self, Signed};
use adpipe_core::event::EpochMillis;
use adpipe_core::source::{Decoded, InboundRequest, Reply, RequestError};
use adpipe_core::spec::AckMode;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use tokio::sync::{Semaphore, SemaphorePermit};
use warp::Filter;
use warp::reply::Response;

use crate::partner::Partner;
use crate::producer::{OutgoingRecord, ProduceError, budget_bytes};
use crate::reply::{self, ApiError, RejectedEvent, Summary};
use crate::server::PeerAddr;

/// What the requests being served may hold at once, in bytes as [`request_footprint`]
/// counts them. Each holds its body and decoded events until its answer (for `durable`,
/// until the stream took them); the producer's byte budget bounds what is queued for the
/// stream, and this bounds the rest, so memory stays flat however many connections a flood
/// opens. Counted in bytes rather than requests so that small requests, which wait as long
/// as large ones for their put, are not turned away at a load the receiver keeps up with:
/// ~450 requests of 20 events of the benchmark's (7.3 KB) fit, or ~1,750 single events
/// (512 requests of any size before, which refused 0.03-0.6 % of 10k single-event requests
/// a second).
pub const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;
/// A request's share besides its body: its head, its handler's state and its answer.
const REQUEST_BYTES: usize = 8 * 1024;
/// A body is held with what is made of it, each about its size: the decoded events, their
/// stream records and the records' copy in an aggregate.
const BODY_COPIES: usize = 4;

/// What a request counts against [`MAX_IN_FLIGHT_BYTES`] while it is served: a fixed share
/// and its body's copies. A body of unknown length (chunked) counts as the largest the
/// partner may send.
pub fn request_footprint(headers: &HeaderMap, max_body_bytes: u64) -> usize {
    let body = if let Some(declared) = declared_length(headers) {
        declared.min(max_body_bytes)
    } else if headers.contains_key(http::header::TRANSFER_ENCODING) {
        max_body_bytes
    } else {
        0
    };
    let body = usize::try_from(body).unwrap_or(usize::MAX);
    body.saturating_mul(BODY_COPIES)
        .saturating_add(REQUEST_BYTES)
}

/// What every request handler shares.
#[derive(Debug)]
pub struct ReceiverState {
    partners: HashMap<String, Arc<Partner>>,
    draining: AtomicBool,
    in_flight: Semaphore,
    in_flight_bytes: usize,
}

impl ReceiverState {
    /// The state serving `partners`, keyed by `spec.partner`.
    pub fn new(partners: impl IntoIterator<Item = Partner>) -> ReceiverState {
        ReceiverState {
            partners: partners
                .into_iter()
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
            draining: AtomicBool::new(false),
            in_flight: Semaphore::new(MAX_IN_FLIGHT_BYTES),
            in_flight_bytes: MAX_IN_FLIGHT_BYTES,
        }
    }

    /// The same state serving requests of at most `bytes` at once (as [`request_footprint`]
    /// counts them), for tests of the refusal.
    pub fn with_in_flight_bytes(mut self, bytes: usize) -> ReceiverState {
        self.in_flight = Semaphore::new(bytes);
        self.in_flight_bytes = bytes;
        self
    }

    /// The partners served.
    pub fn partners(&self) -> impl Iterator<Item = &Arc<Partner>> {
        self.partners.values()
    }

    /// Stops taking events: new requests get `503`, `/readyz` fails so load balancers
    /// move traffic away, requests in progress finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn is_ready(&self) -> bool {
        !self.is_draining() && self.partners.values().all(|p| p.producer.is_healthy())
    }

    /// Holds `footprint` bytes of the in-flight limit while a request is served, or `None`
    /// when they are not free now. A request larger than the whole limit holds all of it
    /// rather than being refused forever.
    fn hold_in_flight(&self, footprint: usize) -> Option<SemaphorePermit<'_>> {
        let permits = u32::try_from(footprint.min(self.in_flight_bytes)).ok()?;
        self.in_flight.try_acquire_many(permits).ok()
    }
}

/// Every route of the receiver's main port.
pub fn routes(
    state: Arc<ReceiverState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let ready_state = state.clone();
    let ready = warp::path!("readyz").and(warp::get()).map(move || {
        if ready_state.is_ready() {
            reply::json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
        } else {
            ApiError::Unavailable("not ready: draining or the stream is unreachable".into())
                .into_response()
        }
    });
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let api = warp::path("v1")
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(warp::method())
        .and(raw_query)
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerAddr>().map(|peer: Option<PeerAddr>| peer.map(|p| p.0)))
        .and(warp::body::stream())
        .then(
            move |partner: String, tail: warp::path::Tail, method, query, headers, remote, body| {
                let state = state.clone();
                async move {
                    let request = RawRequest {
                        method,
                        query,
                        headers,
                        remote,
                    };
                    handle(&state, &partner, tail.as_str(), request, body).await
                }
            },
        );
    health
        .or(ready)
        .unify()
        .or(api)
        .unify()
        .recover(|_| async {
            Ok::<_, Infallible>(
                ApiError::NotFound(
                    "no such route; partner routes live under /v1/{partner}/".into(),
                )
                .into_response(),
            )
        })
        .unify()
}

/// The request parts the handler reads, besides the path and the body.
struct RawRequest {
    method: Method,
    query: String,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
}

async fn handle<S, B>(
    state: &ReceiverState,
    partner: &str,
    route: &str,
    request: RawRequest,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let started = Instant::now();
    let Some(partner) = state.partners.get(partner) else {
        return ApiError::NotFound(format!("unknown partner `{partner}`")).into_response();
    };
    let sent_body = request.headers.contains_key(http::header::CONTENT_LENGTH)
        || request
            .headers
            .contains_key(http::header::TRANSFER_ENCODING);
    let response = match serve(state, partner, route, &request, body).await {
        Ok(response) => response,
        Err(error) => {
            let close = sent_body && error.may_leave_body_unread();
            let mut response = error.into_response();
            if close {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            response
        }
    };
    let route_label = if partner.format.serves(route) {
        route
    } else {
        "other"
    };
    partner
        .metrics
        .request(route_label, response.status().as_u16(), started.elapsed());
    response
}

async fn serve<S, B>(
    state: &ReceiverState,
    partner: &Partner,
    route: &str,
    request: &RawRequest,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let received_at = EpochMillis::now();
    if state.is_draining() {
        return Err(ApiError::Unavailable(
            "the receiver is shutting down; retry".into(),
        ));
    }
    let Some(_slot) =
        state.hold_in_flight(request_footprint(&request.headers, partner.max_body_bytes))
    else {
        return Err(ApiError::Unavailable(
            "too many requests in flight; retry".into(),
        ));
    };
    if !partner.admit() {
        return Err(ApiError::RateLimited(partner.name.clone()));
    }
    partner
        .format
        .check_route(&request.method, route)
        .map_err(request_error)?;
    let body = read_body(&request.headers, body, partner.max_body_bytes).await?;
    let inbound = InboundRequest {
        method: &request.method,
        route,
        query: &request.query,
        headers: &request.headers,
        body: &body,
        client_ip: client_ip(&request.headers, request.remote),
        received_at,
    };
    let secret = partner.secret();
    if !partner.format.skips_signature(&inbound) {
        let signed = Signed {
            headers: &request.headers,
            query: &request.query,
            body: &body,
            has_body: request.method == Method::POST,
        };
        auth::authenticate(&partner.auth, secret.as_deref(), signed)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    }
    match partner
        .format
        .decode(&inbound, &partner.mapper, secret.as_deref())
    {
        Ok(Decoded::Challenge(challenge)) => Ok(reply::text(challenge)),
        Ok(Decoded::Empty) => Ok(reply::empty(StatusCode::NO_CONTENT)),
        Ok(Decoded::Events { results, reply }) => accept(partner, results, reply).await,
        Err(e) => Err(request_error(e)),
    }
}

/// Validated events to the producer; rejected ones into the summary.
async fn accept(
    partner: &Partner,
    results: Vec<Result<adpipe_core::event::AdEvent<'_>, adpipe_core::source::EventError>>,
    reply: Reply,
) -> Result<Response, ApiError> {
    let mut records = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(event) => records.push(OutgoingRecord {
                partition_key: event.partition_key().to_owned(),
                data: event.to_stream_json(),
            }),
            Err(e) => {
                partner.metrics.event_rejected(e.kind.as_str());
                errors.push(RejectedEvent {
                    index,
                    reason: e.message,
                });
            }
        }
    }
    let summary = Summary {
        accepted: records.len(),
        rejected: errors.len(),
        errors,
        reason: None,
    };
    if records.is_empty() {
        return Err(ApiError::NoValidEvent(summary));
    }
    let reservation = partner
        .producer
        .reserve(budget_bytes(&records))
        .map_err(|_| ApiError::Unavailable("buffers are full; retry shortly".into()))?;
    let accepted = records.len();
    let ack = partner.producer.submit(records, reservation);
    partner.metrics.events_accepted(accepted);
    let status = match partner.ack {
        AckMode::Buffered => StatusCode::ACCEPTED,
        AckMode::Durable => match ack.await {
            Ok(Ok(())) => StatusCode::OK,
            Ok(Err(ProduceError::Refused(why))) => return Err(ApiError::Internal(why)),
            Ok(Err(e)) => {
                return Err(ApiError::Unavailable(format!(
                    "{e}; the events were not stored, retry"
                )));
            }
            Err(_) => {
                return Err(ApiError::Unavailable(
                    "the receiver is shutting down; the events were not stored, retry".into(),
                ));
            }
        },
    };
    Ok(match reply {
        Reply::Summary => reply::json(status, &summary),
        Reply::Pixel => reply::pixel(status),
    })
}

fn request_error(error: RequestError) -> ApiError {
    match error {
        e @ RequestError::UnknownRoute { .. } => ApiError::NotFound(e.to_string()),
        e @ RequestError::MethodNotAllowed { .. } => ApiError::MethodNotAllowed(e.to_string()),
        e @ RequestError::UnsupportedMediaType { .. } => {
            ApiError::UnsupportedMediaType(e.to_string())
        }
        RequestError::Malformed(why) => ApiError::BadRequest(why),
        RequestError::Forbidden(why) => ApiError::Forbidden(why),
    }
}

/// Reads the body, refusing anything above `limit` before and while it arrives.
async fn read_body<S, B>(headers: &HeaderMap, body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let capacity = declared.unwrap_or(0).min(limit);
    let mut buffer = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("failed to read body: {e}")))?;
        if (buffer.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        buffer.put(chunk);
    }
    Ok(buffer.freeze())
}

/// The body length the request declares in `Content-Length`.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The viewer's address: the first `X-Forwarded-For` hop set by the ingress, else the peer.
fn client_ip(headers: &HeaderMap, remote: Option<SocketAddr>) -> Option<IpAddr> {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|first| first.trim().parse().ok())
        .or_else(|| remote.map(|r| r.ip()))
}
