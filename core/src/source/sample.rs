//! A valid sample request for any pipeline, built from its own mapping: what `adpipe local`
//! prints as a ready-to-paste `curl`, and what the benchmarks send.

use serde_json::{Map, Value as Json};

use crate::event::{EpochMillis, EventType, StandardField};
use crate::spec::{PartnerPipelineSpec, TimeFormat};

use super::{SourceFormat, json, meta_webhook, pixel};

/// A request that the pipeline accepts (before signing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    /// The route below `/v1/{partner}/`.
    pub route: &'static str,
    /// The JSON body of a `POST`, or `None` for a `GET`.
    pub body: Option<String>,
    /// The query string of a `GET` (unsigned), empty for a `POST`.
    pub query: String,
}

/// A sample request carrying one event with every mapped field filled, or `None` when the
/// mapping cannot be filled (a pointer into an array, say).
pub fn sample_request(spec: &PartnerPipelineSpec, now: EpochMillis) -> Option<SampleRequest> {
    let source = &spec.source;
    let values: Vec<(&str, Json)> = source
        .mapping
        .iter()
        .map(|(field, selector)| (selector.as_str(), sample_value(*field, spec, now)))
        .collect();
    match source.format {
        SourceFormat::Json | SourceFormat::MetaWebhook => {
            let mut object = Json::Object(Map::new());
            for (pointer, value) in values {
                set_pointer(&mut object, pointer, value)?;
            }
            let body = if source.format == SourceFormat::Json {
                object
            } else {
                serde_json::json!({"object": "page", "entry": [{"id": "demo", "time": now.0 / 1000,
                    "changes": [{"field": "ads", "value": object}]}]})
            };
            let route = if source.format == SourceFormat::Json {
                json::ROUTE
            } else {
                meta_webhook::ROUTE
            };
            Some(SampleRequest {
                route,
                body: Some(body.to_string()),
                query: String::new(),
            })
        }
        SourceFormat::Pixel => {
            let pairs: Vec<(&str, String)> = values
                .into_iter()
                .map(|(name, value)| match value {
                    Json::String(s) => (name, s),
                    other => (name, other.to_string()),
                })
                .collect();
            let query = serde_urlencoded::to_string(&pairs).ok()?;
            Some(SampleRequest {
                route: pixel::ROUTE,
                body: None,
                query,
            })
        }
    }
}

fn sample_value(field: StandardField, spec: &PartnerPipelineSpec, now: EpochMillis) -> Json {
    match field {
        StandardField::EventId => "demo-event-1".into(),
        StandardField::EventType => spec
            .source
            .event_types
            .iter()
            .find(|(_, t)| **t == EventType::Impression)
            .or_else(|| spec.source.event_types.iter().next())
            .map_or_else(
                || EventType::Impression.as_str().into(),
                |(k, _)| k.as_str().into(),
            ),
        StandardField::EventTime => match spec.source.time_format {
            TimeFormat::UnixMillis => now.0.into(),
            TimeFormat::UnixSeconds => (now.0 / 1000).into(),
            TimeFormat::Rfc3339 => now
                .to_datetime()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
                .into(),
        },
        StandardField::AdSessionId => "demo-session".into(),
        StandardField::Ip => "203.0.113.7".into(),
        StandardField::UserAgent => {
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0".into()
        }
        StandardField::PageUrl => "https://publisher.example/article".into(),
        StandardField::InViewMs => 1200.into(),
        StandardField::PriceMicros => 1_500_000.into(),
        StandardField::Currency => "USD".into(),
        StandardField::Country => "US".into(),
        _ => "demo".into(),
    }
}

/// Puts `value` at `pointer`, creating objects on the way; `None` if the pointer goes
/// through something that is not an object.
fn set_pointer(root: &mut Json, pointer: &str, value: Json) -> Option<()> {
    let mut current = root;
    let mut segments = pointer.strip_prefix('/')?.split('/').peekable();
    while let Some(raw) = segments.next() {
        let key = raw.replace("~1", "/").replace("~0", "~");
        let map = current.as_object_mut()?;
        if segments.peek().is_none() {
            map.insert(key, value);
            return Some(());
        }
        current = map.entry(key).or_insert_with(|| Json::Object(Map::new()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Decoded, InboundRequest, Mapper};

    /// The id and type of each event `sample` decodes to under `spec`.
    fn decode(
        spec: &PartnerPipelineSpec,
        sample: &SampleRequest,
        now: EpochMillis,
    ) -> Vec<(String, String)> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        let method = if sample.body.is_some() {
            http::Method::POST
        } else {
            http::Method::GET
        };
        let body = sample.body.clone().unwrap_or_default();
        let request = InboundRequest {
            method: &method,
            route: sample.route,
            query: &sample.query,
            headers: &headers,
            body: body.as_bytes(),
            client_ip: None,
            received_at: now,
        };
        let mapper = Mapper::new(&spec.partner, &spec.source);
        match spec.source.format.decode(&request, &mapper, None).unwrap() {
            Decoded::Events { results, .. } => results
                .into_iter()
                .map(|r| {
                    let event = r.unwrap();
                    (
                        event.event_id.into_owned(),
                        event.event_type.as_str().to_owned(),
                    )
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_sample_of_every_example_pipeline_is_accepted_by_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines");
        let now = EpochMillis::now();
        for entry in std::fs::read_dir(dir).unwrap() {
            let doc = crate::validate::load_file(&entry.unwrap().path())
                .unwrap()
                .remove(0);
            let sample = sample_request(&doc.spec, now).unwrap();
            assert_eq!(
                decode(&doc.spec, &sample, now),
                [("demo-event-1".to_owned(), "impression".to_owned())],
                "{}",
                doc.metadata.name
            );
        }
    }
}
