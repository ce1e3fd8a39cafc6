//! What the receiver answers: success bodies, the pixel, and one error type that turns every
//! refusal into a status with a JSON reason.

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use warp::reply::Response;

/// A transparent 1×1 GIF: the smallest valid image a browser accepts for a pixel.
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Seconds a client should wait after a `503` for full buffers or a draining receiver.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The answer to a request carrying events.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Events stored (durable) or buffered (buffered).
    pub accepted: usize,
    /// Events refused.
    pub rejected: usize,
    /// Why each refused event was refused, by its index in the request.
    pub errors: Vec<RejectedEvent>,
    /// Why the whole request failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One refused event.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RejectedEvent {
    /// Position in the request (array index, NDJSON line among non-empty lines, webhook
    /// change in order).
    pub index: usize,
    /// What was wrong.
    pub reason: String,
}

/// Every way a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `404`.
    #[error("{0}")]
    NotFound(String),
    /// `405`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// `400`.
    #[error("{0}")]
    BadRequest(String),
    /// `400` with the per-event reasons: no event of the request was valid.
    #[error("no valid event in the request")]
    NoValidEvent(Summary),
    /// `401`.
    #[error("{0}")]
    Unauthorized(String),
    /// `403`.
    #[error("{0}")]
    Forbidden(String),
    /// `413`.
    #[error("body is larger than this partner's limit of {limit} bytes")]
    PayloadTooLarge {
        /// `spec.receiver.maxBodyBytes`.
        limit: u64,
    },
    /// `415`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `429`.
    #[error("rate limit exceeded for partner `{0}`")]
    RateLimited(String),
    /// `503` with `Retry-After`: full buffers, draining, or the stream is down. Nothing of
    /// the request was stored.
    #[error("{0}")]
    Unavailable(String),
    /// `500`: the stream refused the events for good.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) | ApiError::NoValidEvent(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this refusal can come before the body was read. A client that sent a body
    /// must then not reuse the connection: its unread bytes would be taken for the next
    /// request.
    pub fn may_leave_body_unread(&self) -> bool {
        matches!(
            self,
            ApiError::PayloadTooLarge { .. }
                | ApiError::RateLimited(_)
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed(_)
                | ApiError::Unavailable(_)
        )
    }

    /// The response: a JSON body with the reason, and `Retry-After` where waiting helps.
    pub fn into_response(self) -> Response {
        let status = self.status();
        let retry = matches!(self, ApiError::RateLimited(_) | ApiError::Unavailable(_));
        let mut response = match self {
            ApiError::NoValidEvent(mut summary) => {
                summary.reason = Some("no valid event in the request".to_owned());
                json(status, &summary)
            }
            other => json(
                status,
                &ErrorBody {
                    reason: other.to_string(),
                },
            ),
        };
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

#[derive(Serialize)]
struct ErrorBody {
    reason: String,
}

/// A JSON response.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The pixel, never cached so every view reaches us.
pub fn pixel(status: StatusCode) -> Response {
    let mut response = Response::new(PIXEL_GIF.to_vec().into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    response
}

/// An empty answer (pixel `HEAD`).
pub fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Vec::new().into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A plain-text answer (the webhook challenge).
pub fn text(body: String) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
