//! `format: json`: partner events posted as JSON.
//!
//! A body is one event object, an array of them, `{"events": […]}`, or NDJSON (one object a
//! line). Fields are found by JSON pointer. A record that is not an object, or an NDJSON
//! line that is not JSON, is rejected on its own; a body that is not JSON at all is a `400`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::Method;
use serde_json::Value as Json;

use super::mapping::{EventError, EventErrorKind, Fallbacks, Record, Value};
use super::{Decoded, InboundRequest, Mapper, Reply, RequestError, SourceFormat};

/// The route below `/v1/{partner}/`.
pub(super) const ROUTE: &str = "events";

const EXPECTED_TYPES: &str = "application/json or application/x-ndjson";

/// How the body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A single JSON document (object, array or `{"events": […]}`).
    Document,
    /// One JSON document per line.
    Lines,
}

pub(super) fn decode(
    request: &InboundRequest<'_>,
    mapper: &Mapper,
) -> Result<Decoded, RequestError> {
    if request.route != ROUTE {
        return Err(RequestError::unknown_route(
            SourceFormat::Json,
            request.route,
        ));
    }
    if request.method != Method::POST {
        return Err(RequestError::method_not_allowed(request));
    }
    let framing = framing(request)?;
    let records = split(request.body, framing)?;
    let fallbacks = Fallbacks::default();
    let results = records
        .iter()
        .map(|record| match record {
            Ok(json) => map_object(json, mapper, request, &fallbacks),
            Err(e) => Err(e.clone()),
        })
        .collect();
    Ok(Decoded::Events {
        results,
        reply: Reply::Summary,
    })
}

fn framing(request: &InboundRequest<'_>) -> Result<Framing, RequestError> {
    let found = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = found
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Framing::Document),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Ok(Framing::Lines),
        other if other.starts_with("application/") && other.ends_with("+json") => {
            Ok(Framing::Document)
        }
        _ => Err(RequestError::UnsupportedMediaType {
            found: if found.is_empty() {
                "(none)".to_owned()
            } else {
                found.to_owned()
            },
            expected: EXPECTED_TYPES,
        }),
    }
}

/// Splits a body into partner records. Documents with trailing JSON values are read as
/// NDJSON, since partners often label NDJSON as `application/json`.
fn split(body: &[u8], framing: Framing) -> Result<Vec<Result<Json, EventError>>, RequestError> {
    if framing == Framing::Document {
        match serde_json::from_slice::<Json>(body) {
            Ok(document) => return Ok(unwrap_document(document)),
            Err(e) if e.classify() == serde_json::error::Category::Syntax && is_trailing(&e) => {}
            Err(e) => {
                return Err(RequestError::Malformed(format!(
                    "body is not valid JSON: {e}"
                )));
            }
        }
    }
    let records: Vec<_> = body
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(n, line)| {
            serde_json::from_slice::<Json>(line).map_err(|e| {
                EventError::new(
                    EventErrorKind::InvalidJson,
                    format_args!("line {} is not valid JSON: {e}", n + 1),
                )
            })
        })
        .collect();
    if records.is_empty() {
        return Err(RequestError::Malformed("body holds no events".to_owned()));
    }
    Ok(records)
}

fn is_trailing(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("trailing characters")
}

fn unwrap_document(document: Json) -> Vec<Result<Json, EventError>> {
    match document {
        Json::Array(items) => items.into_iter().map(Ok).collect(),
        Json::Object(mut map)
            if map.len() == 1 && map.get("events").is_some_and(Json::is_array) =>
        {
            match map.remove("events") {
                Some(Json::Array(items)) => items.into_iter().map(Ok).collect(),
                _ => Vec::new(),
            }
        }
        other => vec![Ok(other)],
    }
}

/// Maps a JSON record that must be an object.
pub(super) fn map_object(
    json: &Json,
    mapper: &Mapper,
    request: &InboundRequest<'_>,
    fallbacks: &Fallbacks<'_>,
) -> Result<crate::event::AdEvent, EventError> {
    if !json.is_object() {
        return Err(EventError::new(
            EventErrorKind::NotAnObject,
            format_args!("expected a JSON object, found {}", kind(json)),
        ));
    }
    mapper.map(&JsonRecord(json), request.received_at, fallbacks)
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A JSON object whose fields are found by JSON pointer.
pub(super) struct JsonRecord<'a>(pub &'a Json);

impl Record for JsonRecord<'_> {
    fn field(&self, selector: &str) -> Option<Value<'_>> {
        match self.0.pointer(selector)? {
            Json::Null => None,
            Json::String(s) => Some(Value::Text(Cow::Borrowed(s))),
            Json::Number(n) => Some(Value::Number(n)),
            Json::Bool(b) => Some(Value::Bool(*b)),
            nested => Some(Value::Nested(nested.to_string())),
        }
    }

    fn describe(&self, selector: &str) -> String {
        format!("`{selector}`")
    }

    fn attributes(&self, mapped: &[&str]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Json::Object(map) = self.0 {
            let mut pointer = String::new();
            let mut name = String::new();
            flatten(map, mapped, &mut pointer, &mut name, &mut out);
        }
        out
    }
}

/// Collects every leaf of `map` that no mapped pointer names, keyed by its dotted path
/// (`device.model`); arrays are kept whole as JSON.
fn flatten(
    map: &serde_json::Map<String, Json>,
    mapped: &[&str],
    pointer: &mut String,
    name: &mut String,
    out: &mut BTreeMap<String, String>,
) {
    for (key, value) in map {
        let (pointer_len, name_len) = (pointer.len(), name.len());
        pointer.push('/');
        pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(key);
        if !mapped.contains(&pointer.as_str()) {
            match value {
                Json::Null => {}
                Json::Object(inner) => flatten(inner, mapped, pointer, name, out),
                Json::String(s) => {
                    out.insert(name.clone(), s.clone());
                }
                other => {
                    out.insert(name.clone(), other.to_string());
                }
            }
        }
        pointer.truncate(pointer_len);
        name.truncate(name_len);
    }
}
