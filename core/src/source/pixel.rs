//! `format: pixel`: a tracking pixel the viewer's browser loads.
//!
//! `GET /v1/{partner}/pixel.gif?type=imp&…` is one event whose fields are query parameters.
//! The request comes from the viewer, so its address and `User-Agent` fill `ip` and
//! `user_agent` when the query does not carry them. `HEAD` answers without recording.

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::Method;

use super::mapping::{Fallbacks, Record, Value};
use super::{Decoded, InboundRequest, Mapper, Reply, RequestError, SourceFormat};
use crate::auth::PIXEL_SIGNATURE_PARAM;

/// The route below `/v1/{partner}/`.
pub(super) const ROUTE: &str = "pixel.gif";

pub(super) fn decode(
    request: &InboundRequest<'_>,
    mapper: &Mapper,
) -> Result<Decoded, RequestError> {
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

/// Query parameters whose fields are found by name.
struct QueryRecord<'a>(&'a [(String, String)]);

impl Record for QueryRecord<'_> {
    fn field(&self, selector: &str) -> Option<Value<'_>> {
        self.0
            .iter()
            .find(|(k, _)| k == selector)
            .map(|(_, v)| Value::Text(Cow::Borrowed(v.as_str())))
    }

    fn describe(&self, selector: &str) -> String {
        format!("query parameter `{selector}`")
    }

    fn attributes(&self, mapped: &[&str]) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(k, _)| k != PIXEL_SIGNATURE_PARAM && !mapped.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
