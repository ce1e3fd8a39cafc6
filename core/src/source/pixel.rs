//! `format: pixel`: a tracking pixel the viewer's browser loads.
//!
//! `GET /v1/{partner}/pixel.gif?type=imp&…` is one event whose fields are query parameters.
//! The request comes from the viewer, so its address and `User-Agent` fill `ip` and
//! `user_agent` when the query does not carry them. `HEAD` answers without recording.

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::Method;

use super::mapping::{Fallbacks, Record, Selector, Value};
use super::{Decoded, InboundRequest, Mapper, Reply, RequestError, SourceFormat};
use crate::auth::PIXEL_SIGNATURE_PARAM;

/// The route below `/v1/{partner}/`.
pub(super) const ROUTE: &str = "pixel.gif";

pub(super) fn decode<'a>(
    request: &InboundRequest<'a>,
    mapper: &'a Mapper,
) -> Result<Decoded<'a>, RequestError> {
    if request.route != ROUTE {
        return Err(RequestError::unknown_route(
            SourceFormat::Pixel,
            request.route,
        ));
    }
    match *request.method {
        Method::HEAD => return Ok(Decoded::Empty),
        Method::GET => {}
        _ => return Err(RequestError::method_not_allowed(request)),
    }
    let params: Vec<(String, String)> = serde_urlencoded::from_str(request.query)
        .map_err(|e| RequestError::Malformed(format!("query string cannot be read: {e}")))?;
    let fallbacks = Fallbacks {
        ip: request.client_ip,
        user_agent: request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    };
    let result = mapper.map(&QueryRecord(&params), request.received_at, &fallbacks);
    Ok(Decoded::Events {
        results: vec![result],
        reply: Reply::Pixel,
    })
}

/// Query parameters whose fields are found by name. The parameters are decoded into the
/// request's own buffers, so an event copies what it keeps (one event a request).
struct QueryRecord<'q>(&'q [(String, String)]);

impl<'a> Record<'a> for QueryRecord<'_> {
    fn field(&self, selector: &Selector) -> Option<Value<'a>> {
        self.0
            .iter()
            .find(|(k, _)| k == selector.as_str())
            .map(|(_, v)| Value::Text(Cow::Owned(v.clone())))
    }

    fn describe(&self, selector: &Selector) -> String {
        format!("query parameter `{}`", selector.as_str())
    }

    fn attributes(&self, mapped: &[Selector]) -> BTreeMap<Cow<'a, str>, Cow<'a, str>> {
        self.0
            .iter()
            .filter(|(k, _)| k != PIXEL_SIGNATURE_PARAM && !mapped.iter().any(|m| m.as_str() == k))
            .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
            .collect()
    }
}
