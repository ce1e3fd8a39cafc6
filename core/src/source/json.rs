//! `format: json`: partner events posted as JSON.
//!
//! A body is one event object, an array of them, `{"events": […]}`, or NDJSON (one object a
//! line). Fields are found by JSON pointer. A record that is not an object, or an NDJSON
//! line that is not JSON, is rejected on its own; a body that is not JSON at all is a `400`.
//!
//! Records are parsed into [`serde_json_borrow::Value`]s: strings and keys borrow from the
//! request body and objects are vectors, so a record costs a few allocations instead of one
//! per key and per string (the receiver's hottest path, see `bench/README.md`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::Method;
use serde_json_borrow::{ObjectAsVec, Value as Json};

use super::mapping::{EventError, EventErrorKind, Fallbacks, Record, Selector, Value};
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

pub(super) fn decode<'a>(
    request: &InboundRequest<'a>,
    mapper: &'a Mapper,
) -> Result<Decoded<'a>, RequestError> {
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
fn split(body: &[u8], framing: Framing) -> Result<Vec<Result<Json<'_>, EventError>>, RequestError> {
    if framing == Framing::Document {
        match parse(body) {
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
            parse(line).map_err(|e| {
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

/// Parses one JSON document. Valid UTF-8 is checked once for the whole of `bytes` (a fast,
/// vectorised pass) rather than string by string as serde_json's byte reader does; bytes that
/// fail it go to that reader, which says where they are wrong.
fn parse(bytes: &[u8]) -> serde_json::Result<Json<'_>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

fn is_trailing(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("trailing characters")
}

fn unwrap_document(document: Json<'_>) -> Vec<Result<Json<'_>, EventError>> {
    match document {
        Json::Array(items) => items.into_iter().map(Ok).collect(),
        Json::Object(map)
            if map.len() == 1 && member(&map, "events").is_some_and(Json::is_array) =>
        {
            match map.into_vec().pop() {
                Some((_, Json::Array(items))) => items.into_iter().map(Ok).collect(),
                _ => Vec::new(),
            }
        }
        other => vec![Ok(other)],
    }
}

/// The value of `key` in `object`; the last one when a key repeats, as serde_json reads it.
pub(super) fn member<'v, 'a>(object: &'v ObjectAsVec<'a>, key: &str) -> Option<&'v Json<'a>> {
    object
        .as_vec()
        .iter()
        .rev()
        .find_map(|(k, v)| (**k == *key).then_some(v))
}

/// Follows a JSON pointer, as `serde_json::Value::pointer` does.
fn pointer<'v, 'a>(json: &'v Json<'a>, selector: &Selector) -> Option<&'v Json<'a>> {
    selector
        .pointer_tokens()?
        .iter()
        .try_fold(json, |target, token| match target {
            Json::Object(map) => member(map, token),
            Json::Array(items) => array_index(token).and_then(|i| items.get(i)),
            _ => None,
        })
}

/// An array index token: digits without a sign or a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Maps a JSON record that must be an object.
pub(super) fn map_object<'a>(
    json: &Json<'a>,
    mapper: &'a Mapper,
    request: &InboundRequest<'a>,
    fallbacks: &Fallbacks<'a>,
) -> Result<crate::event::AdEvent<'a>, EventError> {
    if !json.is_object() {
        return Err(EventError::new(
            EventErrorKind::NotAnObject,
            format_args!("expected a JSON object, found {}", kind(json)),
        ));
    }
    mapper.map(&JsonRecord(json), request.received_at, fallbacks)
}

fn kind(json: &Json<'_>) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::Str(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A JSON object whose fields are found by JSON pointer.
pub(super) struct JsonRecord<'v, 'a>(pub &'v Json<'a>);

impl<'a> Record<'a> for JsonRecord<'_, 'a> {
    fn field(&self, selector: &Selector) -> Option<Value<'a>> {
        match pointer(self.0, selector)? {
            Json::Null => None,
            // NOTE: a clone of a borrowed `Cow` still points into the body; only strings the
            // parser had to unescape are copied.
            Json::Str(s) => Some(Value::Text(s.clone())),
            Json::Number(n) => Some(Value::Number((*n).into())),
            Json::Bool(b) => Some(Value::Bool(*b)),
            nested => Some(Value::Nested(compact(nested))),
        }
    }

    fn describe(&self, selector: &Selector) -> String {
        format!("`{}`", selector.as_str())
    }

    fn attributes(&self, mapped: &[Selector]) -> BTreeMap<Cow<'a, str>, Cow<'a, str>> {
        let mut out = BTreeMap::new();
        if let Json::Object(map) = self.0 {
            let mut pointer = String::new();
            flatten(map, mapped, &mut pointer, None, &mut out);
        }
        out
    }
}

/// A nested value as compact JSON text, keys sorted, as serde_json writes its own values.
fn compact(json: &Json<'_>) -> String {
    serde_json::Value::from(json).to_string()
}

/// Collects every leaf of `map` that no mapped pointer names, keyed by its dotted path
/// (`device.model`); arrays are kept whole as JSON. A repeated key counts once, with its
/// last value. `parent` is the dotted path of `map` itself (`None` at the top). Names are
/// copies (the parser lends keys only as long as the object); values are borrowed.
fn flatten<'a>(
    map: &ObjectAsVec<'a>,
    mapped: &[Selector],
    pointer: &mut String,
    parent: Option<&str>,
    out: &mut BTreeMap<Cow<'a, str>, Cow<'a, str>>,
) {
    let entries = map.as_vec();
    for (index, (key, value)) in entries.iter().enumerate() {
        if entries[index + 1..].iter().any(|(later, _)| later == key) {
            continue;
        }
        let pointer_len = pointer.len();
        pointer.push('/');
        if key.contains(['~', '/']) {
            pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
        } else {
            pointer.push_str(key);
        }
        if !mapped.iter().any(|m| m.as_str() == pointer.as_str()) {
            let name = || -> Cow<'a, str> {
                match parent {
                    None => Cow::Owned(key.to_string()),
                    Some(parent) => Cow::Owned(format!("{parent}.{}", &**key)),
                }
            };
            match value {
                Json::Null => {}
                Json::Object(inner) => flatten(inner, mapped, pointer, Some(&name()), out),
                Json::Str(s) => {
                    out.insert(name(), s.clone());
                }
                Json::Bool(b) => {
                    out.insert(name(), Cow::Borrowed(if *b { "true" } else { "false" }));
                }
                Json::Number(n) => {
                    out.insert(name(), Cow::Owned(serde_json::Number::from(*n).to_string()));
                }
                Json::Array(_) => {
                    out.insert(name(), Cow::Owned(compact(value)));
                }
            }
        }
        pointer.truncate(pointer_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r#"{
        "id": "e-1", "n": 42, "neg": -7, "f": 1.5e20, "ok": true, "none": null,
        "a/b": "slash", "m~n": "tilde", "": "empty key",
        "list": [10, {"x": "deep"}], "obj": {"k": "v", "inner": {"z": 1}},
        "dup": "first", "dup": "last", "esc\"aped": "q\u00e9"
    }"#;

    #[test]
    fn pointers_find_what_serde_json_finds() {
        let owned: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let borrowed: Json<'_> = serde_json::from_str(DOCUMENT).unwrap();
        for selector in [
            "",
            "/id",
            "/n",
            "/neg",
            "/f",
            "/ok",
            "/none",
            "/a~1b",
            "/m~0n",
            "/",
            "/list",
            "/list/0",
            "/list/1/x",
            "/list/01",
            "/list/+1",
            "/list/2",
            "/obj/inner/z",
            "/dup",
            "/esc\"aped",
            "/missing",
            "/id/deeper",
            "id",
        ] {
            let ours = pointer(&borrowed, &Selector::new(selector)).map(serde_json::Value::from);
            assert_eq!(
                ours.as_ref(),
                owned.pointer(selector),
                "selector {selector:?}"
            );
        }
    }

    #[test]
    fn fields_read_as_text_numbers_and_nested_json() {
        let borrowed: Json<'_> = serde_json::from_str(DOCUMENT).unwrap();
        let record = JsonRecord(&borrowed);
        let text = |selector: &str| {
            record
                .field(&Selector::new(selector))
                .map(|v| v.to_text().into_owned())
        };
        assert_eq!(text("/id").as_deref(), Some("e-1"));
        assert_eq!(text("/n").as_deref(), Some("42"));
        assert_eq!(text("/neg").as_deref(), Some("-7"));
        assert_eq!(text("/f").as_deref(), Some("1.5e+20"));
        assert_eq!(text("/ok").as_deref(), Some("true"));
        assert_eq!(text("/none"), None);
        assert_eq!(text("/dup").as_deref(), Some("last"));
        assert_eq!(
            text("/obj").as_deref(),
            Some(r#"{"inner":{"z":1},"k":"v"}"#)
        );
        assert_eq!(text("/esc\"aped").as_deref(), Some("qé"));
    }

    #[test]
    fn attributes_are_the_unmapped_leaves_by_dotted_path() {
        let borrowed: Json<'_> = serde_json::from_str(DOCUMENT).unwrap();
        let mapped = ["/id", "/obj/k", "/a~1b", "/list"].map(Selector::new);
        let attributes = JsonRecord(&borrowed).attributes(&mapped);
        let expected: BTreeMap<Cow<'_, str>, Cow<'_, str>> = [
            ("", "empty key"),
            ("dup", "last"),
            ("esc\"aped", "qé"),
            ("f", "1.5e+20"),
            ("m~n", "tilde"),
            ("n", "42"),
            ("neg", "-7"),
            ("obj.inner.z", "1"),
            ("ok", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
        .collect();
        assert_eq!(attributes, expected);
    }

    #[test]
    fn mapped_text_without_escapes_points_into_the_body() {
        let body = br#"{"id": "e-1", "session": "s-1", "deal": "d-9"}"#;
        let borrowed: Json<'_> = serde_json::from_slice(body).unwrap();
        let record = JsonRecord(&borrowed);
        let in_body = |text: &Cow<'_, str>| matches!(text, Cow::Borrowed(s) if body.as_ptr_range().contains(&s.as_ptr()));
        let Some(Value::Text(id)) = record.field(&Selector::new("/id")) else {
            panic!("`/id` is text");
        };
        assert!(in_body(&id), "an unescaped string is not copied");
        let Some(Value::Text(session)) = record.field(&Selector::new("/session")) else {
            panic!("`/session` is text");
        };
        assert_eq!(session, "s-1", "an escaped string is decoded");
        let attributes = record.attributes(&[Selector::new("/id"), Selector::new("/session")]);
        assert!(attributes.get("deal").is_some_and(in_body));
    }

    #[test]
    fn bodies_split_into_records_whatever_their_shape() {
        let count = |body: &str, framing| split(body.as_bytes(), framing).map(|r| r.len());
        assert_eq!(count(r#"{"id": 1}"#, Framing::Document).ok(), Some(1));
        assert_eq!(
            count(r#"[{"id": 1}, {"id": 2}]"#, Framing::Document).ok(),
            Some(2)
        );
        assert_eq!(
            count(r#"{"events": [{"id": 1}, 2, {}]}"#, Framing::Document).ok(),
            Some(3)
        );
        assert_eq!(
            count("{\"id\": 1}\n{\"id\": 2}\n", Framing::Document).ok(),
            Some(2)
        );
        assert_eq!(
            count("{\"id\": 1}\n\nnot json\n", Framing::Lines).ok(),
            Some(2)
        );
        assert!(matches!(
            split(b"{\"id\": ", Framing::Document),
            Err(RequestError::Malformed(m)) if m.starts_with("body is not valid JSON")
        ));
        let lines = split(b"{}\nnot json", Framing::Lines).unwrap();
        assert!(matches!(&lines[1], Err(e) if e.message.starts_with("line 2 is not valid JSON")));
        let lines = split(b"{\"id\": \"\xff\"}\n{\"id\": \"ok\"}", Framing::Lines).unwrap();
        assert!(
            matches!(&lines[0], Err(e) if e.message == "line 1 is not valid JSON: invalid unicode code point at line 1 column 9"),
            "{:?}",
            lines[0]
        );
        assert!(lines[1].is_ok(), "a bad line does not spoil the next");
    }
}
