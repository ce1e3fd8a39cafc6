//! `format: meta-webhook`: Meta-style webhooks.
//!
//! `GET /v1/{partner}/webhook` is the subscription handshake: `hub.mode=subscribe`,
//! `hub.verify_token` equal to the partner's secret, and `hub.challenge` echoed back.
//! `POST /v1/{partner}/webhook` carries `{"object": …, "entry": [{"id", "time", "changes":
//! [{"field", "value"}]}]}`; every `changes[].value` is one event, mapped with JSON pointers
//! relative to the value.

use std::borrow::Cow;

use http::Method;
use serde_json_borrow::Value as Json;

use super::json::{map_object, member};
use super::mapping::{EventError, EventErrorKind, Fallbacks};
use super::{Decoded, InboundRequest, Mapper, Reply, RequestError, SourceFormat};
use crate::secrets::Secret;

/// The route below `/v1/{partner}/`.
pub(super) const ROUTE: &str = "webhook";

/// The handshake's query parameters, as Meta names them.
const MODE: &str = "hub.mode";
const VERIFY_TOKEN: &str = "hub.verify_token";
const CHALLENGE: &str = "hub.challenge";

pub(super) fn decode<'a>(
    request: &InboundRequest<'a>,
    mapper: &'a Mapper,
    secret: Option<&Secret>,
) -> Result<Decoded<'a>, RequestError> {
    if request.route != ROUTE {
        return Err(RequestError::unknown_route(
            SourceFormat::MetaWebhook,
            request.route,
        ));
    }
    match *request.method {
        Method::GET => {
            let secret = secret.ok_or_else(|| {
                RequestError::Forbidden("this partner has no verify token configured".to_owned())
            })?;
            verify_handshake(request.query, secret).map(Decoded::Challenge)
        }
        Method::POST => decode_changes(request, mapper),
        _ => Err(RequestError::method_not_allowed(request)),
    }
}

/// Whether `request` is the subscription handshake, which proves itself with the verify token
/// instead of a signature.
pub(super) fn is_handshake(request: &InboundRequest<'_>) -> bool {
    request.route == ROUTE && request.method == Method::GET
}

/// The handshake of a `GET`: checks the mode and the token, and returns the challenge to
/// echo. The partner's secret doubles as the verify token.
fn verify_handshake(query: &str, secret: &Secret) -> Result<String, RequestError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| RequestError::Malformed(format!("query string cannot be read: {e}")))?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match get(MODE) {
        Some("subscribe") => {}
        Some(other) => {
            return Err(RequestError::Malformed(format!(
                "`{MODE}` must be `subscribe`, found `{other}`"
            )));
        }
        None => return Err(RequestError::Malformed(format!("`{MODE}` is missing"))),
    }
    let token = get(VERIFY_TOKEN).unwrap_or("");
    if !secret.matches(token.as_bytes()) {
        return Err(RequestError::Forbidden(format!(
            "`{VERIFY_TOKEN}` does not match"
        )));
    }
    get(CHALLENGE)
        .map(str::to_owned)
        .ok_or_else(|| RequestError::Malformed(format!("`{CHALLENGE}` is missing")))
}

fn decode_changes<'a>(
    request: &InboundRequest<'a>,
    mapper: &'a Mapper,
) -> Result<Decoded<'a>, RequestError> {
    let envelope: Json<'_> = serde_json::from_slice(request.body)
        .map_err(|e| RequestError::Malformed(format!("body is not valid JSON: {e}")))?;
    let object = get(&envelope, "object")
        .and_then(Json::as_str)
        .ok_or_else(|| {
            RequestError::Malformed("`object` is missing: not a webhook envelope".to_owned())
        })?;
    let entries = get(&envelope, "entry")
        .and_then(Json::as_array)
        .ok_or_else(|| RequestError::Malformed("`entry` is missing or not an array".to_owned()))?;
    let fallbacks = Fallbacks::default();
    let mut results = Vec::new();
    for (e, entry) in entries.iter().enumerate() {
        let Some(changes) = get(entry, "changes").and_then(Json::as_array) else {
            results.push(Err(EventError::new(
                EventErrorKind::MissingField,
                format_args!("`/entry/{e}/changes` is missing or not an array"),
            )));
            continue;
        };
        for (c, change) in changes.iter().enumerate() {
            let Some(value) = get(change, "value") else {
                results.push(Err(EventError::new(
                    EventErrorKind::MissingField,
                    format_args!("`/entry/{e}/changes/{c}/value` is missing"),
                )));
                continue;
            };
            results.push(
                map_object(value, mapper, request, &fallbacks).map(|mut event| {
                    event
                        .attributes
                        .insert("meta_object".into(), Cow::Owned(object.to_owned()));
                    if let Some(id) = get(entry, "id") {
                        event
                            .attributes
                            .insert("meta_entry_id".into(), Cow::Owned(scalar(id)));
                    }
                    if let Some(field) = get(change, "field") {
                        event
                            .attributes
                            .insert("meta_field".into(), Cow::Owned(scalar(field)));
                    }
                    event
                }),
            );
        }
    }
    if results.is_empty() {
        return Err(RequestError::Malformed(
            "the envelope holds no changes".to_owned(),
        ));
    }
    Ok(Decoded::Events {
        results,
        reply: Reply::Summary,
    })
}

/// The member `key` of `json` when it is an object.
fn get<'v, 'a>(json: &'v Json<'a>, key: &str) -> Option<&'v Json<'a>> {
    json.as_object().and_then(|object| member(object, key))
}

fn scalar(json: &Json<'_>) -> String {
    match json {
        Json::Str(s) => s.to_string(),
        other => serde_json::Value::from(other).to_string(),
    }
}
