//! Partner sources: the one place that knows what partners send.
//!
//! ```text
//! HTTP request ──▶ SourceFormat::decode ──▶ json | pixel | meta_webhook ──▶ Mapper ──▶ AdEvent
//!   (method, route,      (routes, content      (split the request into    (mapping, eventTypes,
//!    query, headers,      types, envelope)      partner records)            timeFormat, limits)
//!    body)
//! ```
//!
//! Everything partner-specific lives below this module: which routes a format serves, how a
//! request body splits into records, and how a record's fields are found. The receiver only
//! turns HTTP into an [`InboundRequest`] and a [`Decoded`] back into HTTP. Adding a format
//! means a new variant of [`SourceFormat`], a new file here, and an arm in each `match`
//! below; nothing outside this module changes.

mod json;
mod mapping;
mod meta_webhook;
mod pixel;
mod sample;

use std::net::IpAddr;

use http::{HeaderMap, Method};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::{AdEvent, EpochMillis};
use crate::secrets::Secret;

pub use mapping::{EventError, EventErrorKind, Mapper};
pub use sample::{SampleRequest, sample_request};

/// The wire formats partners use.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// JSON events posted to `/v1/{partner}/events`: one object, an array, `{"events": […]}`
    /// or NDJSON.
    Json,
    /// A tracking pixel: `GET /v1/{partner}/pixel.gif?…`, one event per request.
    Pixel,
    /// Meta-style webhooks on `/v1/{partner}/webhook`: a verify handshake and change
    /// notifications.
    MetaWebhook,
}

impl SourceFormat {
    /// The name used in the spec and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Json => "json",
            SourceFormat::Pixel => "pixel",
            SourceFormat::MetaWebhook => "meta-webhook",
        }
    }

    /// The routes (below `/v1/{partner}/`) this format serves, for start-up summaries and
    /// documentation.
    pub fn routes(self) -> &'static [(&'static str, &'static str)] {
        match self {
            SourceFormat::Json => &[("POST", json::ROUTE)],
            SourceFormat::Pixel => &[("GET", pixel::ROUTE), ("HEAD", pixel::ROUTE)],
            SourceFormat::MetaWebhook => {
                &[("GET", meta_webhook::ROUTE), ("POST", meta_webhook::ROUTE)]
            }
        }
    }

    /// Whether `route` (the path below `/v1/{partner}/`) belongs to this format.
    pub fn serves(self, route: &str) -> bool {
        self.routes().iter().any(|(_, r)| *r == route)
    }

    /// Refuses a route or method this format does not serve, before the body is read or
    /// the request authenticated.
    pub fn check_route(self, method: &Method, route: &str) -> Result<(), RequestError> {
        if !self.serves(route) {
            return Err(RequestError::unknown_route(self, route));
        }
        if !self
            .routes()
            .iter()
            .any(|(m, r)| *r == route && *m == method.as_str())
        {
            return Err(RequestError::MethodNotAllowed {
                method: method.to_string(),
                route: route.to_owned(),
            });
        }
        Ok(())
    }

    /// Splits a request into standard events, each mapped and validated on its own.
    ///
    /// Authentication has already happened (see [`crate::auth`]) unless
    /// [`SourceFormat::skips_signature`] said the request needs none; `secret` is the
    /// partner's secret for such handshakes.
    /// The events borrow their text from the request and the mapper.
    pub fn decode<'a>(
        self,
        request: &InboundRequest<'a>,
        mapper: &'a Mapper,
        secret: Option<&Secret>,
    ) -> Result<Decoded<'a>, RequestError> {
        match self {
            SourceFormat::Json => json::decode(request, mapper),
            SourceFormat::Pixel => pixel::decode(request, mapper),
            SourceFormat::MetaWebhook => meta_webhook::decode(request, mapper, secret),
        }
    }

    /// Whether `request` skips the pipeline's signature check: a verification handshake
    /// carries its own proof (the Meta verify token), and a pixel `HEAD` stores nothing.
    pub fn skips_signature(self, request: &InboundRequest<'_>) -> bool {
        match self {
            SourceFormat::Json => false,
            SourceFormat::Pixel => request.method == Method::HEAD,
            SourceFormat::MetaWebhook => meta_webhook::is_handshake(request),
        }
    }
}

/// An HTTP request as the sources see it: only what a partner format may depend on.
#[derive(Debug)]
pub struct InboundRequest<'a> {
    /// The HTTP method.
    pub method: &'a Method,
    /// The path below `/v1/{partner}/`, e.g. `events`.
    pub route: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
    /// The address of the viewer, for formats where the request comes from the viewer's
    /// browser (pixels): the first `X-Forwarded-For` hop, else the peer address.
    pub client_ip: Option<IpAddr>,
    /// When the receiver accepted the request.
    pub received_at: EpochMillis,
}

/// What a request turned into.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// Partner records, each mapped to an event or rejected with a reason, in request order.
    Events {
        /// One entry per partner record.
        results: Vec<Result<AdEvent<'a>, EventError>>,
        /// How a successful request is answered.
        reply: Reply,
    },
    /// A verification handshake to answer with this text.
    Challenge(String),
    /// A request that carries no event and is answered with an empty success (pixel `HEAD`).
    Empty,
}

/// How a request whose events were accepted is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// JSON `{"accepted":N,"rejected":M,"errors":[…]}`.
    Summary,
    /// The 1×1 transparent GIF.
    Pixel,
}

/// A request that cannot be decoded at all. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// No such route for this partner's format (404).
    #[error("no route `{route}` for a `{format}` partner; it serves {expected}")]
    UnknownRoute {
        /// The requested route.
        route: String,
        /// The partner's format.
        format: &'static str,
        /// The routes it serves.
        expected: String,
    },
    /// The route exists, the method does not (405).
    #[error("method {method} is not allowed on `{route}`")]
    MethodNotAllowed {
        /// The requested method.
        method: String,
        /// The requested route.
        route: String,
    },
    /// The body's content type is not one the format reads (415).
    #[error("unsupported content type `{found}`; send {expected}")]
    UnsupportedMediaType {
        /// What the request said.
        found: String,
        /// What the format reads.
        expected: &'static str,
    },
    /// The request is malformed as a whole (400).
    #[error("{0}")]
    Malformed(String),
    /// A verification handshake with the wrong token (403).
    #[error("{0}")]
    Forbidden(String),
}

impl RequestError {
    fn unknown_route(format: SourceFormat, route: &str) -> RequestError {
        let expected = format
            .routes()
            .iter()
            .map(|(m, r)| format!("{m} {r}"))
            .collect::<Vec<_>>()
            .join(", ");
        RequestError::UnknownRoute {
            route: route.to_owned(),
            format: format.as_str(),
            expected,
        }
    }

    fn method_not_allowed(request: &InboundRequest<'_>) -> RequestError {
        RequestError::MethodNotAllowed {
            method: request.method.to_string(),
            route: request.route.to_owned(),
        }
    }
}
