//! The declarative part of a source: `mapping`, `eventTypes` and `timeFormat` applied to one
//! partner record, and the checks every event must pass.
//!
//! Formats differ only in how a record's fields are found ([`Record`]); everything after
//! that — type conversion, event-type lookup, the time window, IP anonymisation, attribute
//! collection — is shared here so every format behaves the same.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use chrono::DateTime;

use crate::enrich::anonymise_ip;
use crate::event::{
    AdEvent, EpochMillis, EventType, MAX_EVENT_AGE_MS, MAX_FUTURE_SKEW_MS, StandardField,
};
use crate::spec::{SourceSpec, TimeFormat};

/// Longest accepted value of any one field: a page URL or a consent string can be long, but
/// not unboundedly so, and one huge field must not balloon a lake file.
pub const MAX_FIELD_CHARS: usize = 8 * 1024;

/// Longest event id and session id: one of them becomes the Kinesis partition key, which
/// Kinesis limits to 256 characters.
pub const MAX_KEY_CHARS: usize = 256;

/// A scalar found in a partner record.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    /// Text, as sent.
    Text(Cow<'a, str>),
    /// A JSON number.
    Number(serde_json::Number),
    /// A JSON boolean.
    Bool(bool),
    /// A JSON object or array, kept as compact JSON text.
    Nested(String),
}

impl<'a> Value<'a> {
    pub(super) fn to_text(&self) -> Cow<'_, str> {
        match self {
            Value::Text(t) => Cow::Borrowed(t.as_ref()),
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Nested(j) => Cow::Borrowed(j),
        }
    }

    /// Its text, kept borrowed from the partner's request where it was.
    fn into_text(self) -> Cow<'a, str> {
        match self {
            Value::Text(t) => t,
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Value::Nested(j) => Cow::Owned(j),
        }
    }

    /// Whether its text has more than `max` characters. A number or a boolean is short by
    /// nature, so only text and nested JSON are measured (and never printed for it).
    fn is_longer_than(&self, max: usize) -> bool {
        let text = match self {
            Value::Text(t) => t.as_ref(),
            Value::Nested(j) => j.as_str(),
            Value::Number(_) | Value::Bool(_) => return false,
        };
        // A string has no more characters than bytes: count only the long ones.
        text.len() > max && text.chars().count() > max
    }

    fn to_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            Value::Text(t) => t.trim().parse().ok(),
            _ => None,
        }
    }

    fn to_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            Value::Text(t) => t.trim().parse().ok(),
            _ => None,
        }
    }
}

/// One partner record: a JSON object, a query string, a webhook change. `'a` is what the
/// values it gives borrow from: the request, so mapped text is not copied.
pub(crate) trait Record<'a> {
    /// The value at `selector` (a JSON pointer or a parameter name); `None` when absent or
    /// null.
    fn field(&self, selector: &Selector) -> Option<Value<'a>>;

    /// How `selector` is named in error messages, e.g. ``JSON pointer `/ts` ``.
    fn describe(&self, selector: &Selector) -> String;

    /// Every field that no selector in `mapped` names, flattened to strings.
    fn attributes(&self, mapped: &[Selector]) -> BTreeMap<Cow<'a, str>, Cow<'a, str>>;
}

/// A `source.mapping` selector, read once when the pipeline is loaded rather than for every
/// event: its text (a query parameter's name) and, when it is a JSON pointer, its unescaped
/// reference tokens.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    text: String,
    /// `None` when the text is not a JSON pointer (it neither is empty nor starts with `/`).
    tokens: Option<Vec<String>>,
}

impl Selector {
    /// Reads `text` as the pipeline wrote it.
    pub(crate) fn new(text: &str) -> Selector {
        let tokens = if text.is_empty() {
            Some(Vec::new())
        } else {
            text.strip_prefix('/').map(|rest| {
                rest.split('/')
                    .map(|token| token.replace("~1", "/").replace("~0", "~"))
                    .collect()
            })
        };
        Selector {
            text: text.to_owned(),
            tokens,
        }
    }

    /// The selector as written in the pipeline.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Its RFC 6901 reference tokens, unescaped; `None` when it is not a JSON pointer.
    pub(crate) fn pointer_tokens(&self) -> Option<&[String]> {
        self.tokens.as_deref()
    }
}

/// What the request adds to each record of a format where the viewer calls us directly.
#[derive(Debug, Default, Clone)]
pub(crate) struct Fallbacks<'a> {
    /// The viewer's address.
    pub ip: Option<IpAddr>,
    /// The viewer's `User-Agent` header.
    pub user_agent: Option<&'a str>,
}

/// Why one partner record was rejected, in words a partner's engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EventError {
    /// A bounded category, used as a metric label.
    pub kind: EventErrorKind,
    /// The full reason, naming the field and what was wrong with it.
    pub message: String,
}

/// The bounded set of reasons an event is rejected for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventErrorKind {
    /// The record is not valid JSON.
    InvalidJson,
    /// The record is not a JSON object.
    NotAnObject,
    /// A required field is absent.
    MissingField,
    /// The event type is not one the pipeline maps.
    UnknownEventType,
    /// The event time cannot be read.
    InvalidTime,
    /// The event time is too far in the future or the past.
    TimeOutOfRange,
    /// A field has the wrong type or form.
    InvalidValue,
    /// A field is longer than [`MAX_FIELD_CHARS`].
    TooLong,
}

impl EventErrorKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventErrorKind::InvalidJson => "invalid_json",
            EventErrorKind::NotAnObject => "not_an_object",
            EventErrorKind::MissingField => "missing_field",
            EventErrorKind::UnknownEventType => "unknown_event_type",
            EventErrorKind::InvalidTime => "invalid_time",
            EventErrorKind::TimeOutOfRange => "time_out_of_range",
            EventErrorKind::InvalidValue => "invalid_value",
            EventErrorKind::TooLong => "too_long",
        }
    }
}

impl EventError {
    pub(crate) fn new(kind: EventErrorKind, message: impl fmt::Display) -> EventError {
        EventError {
            kind,
            message: message.to_string(),
        }
    }
}

/// A pipeline's `source` compiled for fast, repeated use.
#[derive(Debug, Clone)]
pub struct Mapper {
    partner: String,
    /// The standard fields mapped, each read with the selector at its index in `selectors`.
    fields: Vec<StandardField>,
    /// What the fields are read with; also what a record's attributes leave out.
    selectors: Vec<Selector>,
    event_types: HashMap<String, EventType>,
    time_format: TimeFormat,
}

impl Mapper {
    /// Compiles the mapping of `source` for `partner`.
    pub fn new(partner: &str, source: &SourceSpec) -> Mapper {
        Mapper {
            partner: partner.to_owned(),
            fields: source.mapping.keys().copied().collect(),
            selectors: source.mapping.values().map(|s| Selector::new(s)).collect(),
            event_types: source
                .event_types
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            time_format: source.time_format,
        }
    }

    fn selector(&self, field: StandardField) -> Option<&Selector> {
        self.fields
            .iter()
            .zip(&self.selectors)
            .find_map(|(f, s)| (*f == field).then_some(s))
    }

    /// Maps one record, or says why it cannot be. The event borrows its text from the
    /// record's request and from this mapper.
    pub(crate) fn map<'a>(
        &'a self,
        record: &impl Record<'a>,
        received_at: EpochMillis,
        fallbacks: &Fallbacks<'a>,
    ) -> Result<AdEvent<'a>, EventError> {
        let mut event = AdEvent {
            partner: Cow::Borrowed(&self.partner),
            received_at,
            event_time: received_at,
            attributes: record.attributes(&self.selectors),
            ..AdEvent::default()
        };
        let mut event_type = None;
        let mut raw_ip = None;
        for (field, selector) in self.fields.iter().zip(&self.selectors) {
            let Some(value) = record.field(selector) else {
                continue;
            };
            if value.is_longer_than(MAX_FIELD_CHARS) {
                return Err(EventError::new(
                    EventErrorKind::TooLong,
                    format_args!(
                        "{} is longer than {MAX_FIELD_CHARS} characters",
                        record.describe(selector)
                    ),
                ));
            }
            match field {
                StandardField::EventId => event.event_id = value.into_text(),
                StandardField::EventType => {
                    event_type =
                        Some(self.event_type(&value.to_text(), || record.describe(selector))?);
                }
                StandardField::EventTime => {
                    event.event_time = self.event_time(&value, || record.describe(selector))?;
                }
                StandardField::InViewMs => {
                    event.in_view_ms = Some(integer(&value, || record.describe(selector))?);
                }
                StandardField::PriceMicros => {
                    event.price_micros = Some(integer(&value, || record.describe(selector))?);
                }
                StandardField::Ip => {
                    raw_ip = Some(ip_address(&value, || record.describe(selector))?)
                }
                StandardField::AdSessionId => event.ad_session_id = Some(value.into_text()),
                StandardField::CampaignId => event.campaign_id = Some(value.into_text()),
                StandardField::PlacementId => event.placement_id = Some(value.into_text()),
                StandardField::CreativeId => event.creative_id = Some(value.into_text()),
                StandardField::PublisherId => event.publisher_id = Some(value.into_text()),
                StandardField::PageUrl => event.page_url = Some(value.into_text()),
                StandardField::UserAgent => event.user_agent = Some(value.into_text()),
                StandardField::Country => event.country = Some(value.into_text()),
                StandardField::Region => event.region = Some(value.into_text()),
                StandardField::City => event.city = Some(value.into_text()),
                StandardField::DeviceType => event.device_type = Some(value.into_text()),
                StandardField::Currency => event.currency = Some(value.into_text()),
                StandardField::Consent => event.consent = Some(value.into_text()),
            }
        }
        event.event_type = match event_type {
            Some(t) => t.into(),
            None => {
                let missing = match self.selector(StandardField::EventType) {
                    Some(selector) => format!("{} is missing", record.describe(selector)),
                    None => "the pipeline maps no eventType".to_owned(),
                };
                return Err(EventError::new(EventErrorKind::MissingField, missing));
            }
        };
        check_time_window(event.event_time, received_at)?;
        for (field, value) in [
            (StandardField::EventId, Some(&event.event_id)),
            (StandardField::AdSessionId, event.ad_session_id.as_ref()),
        ] {
            if value.is_some_and(|v| v.chars().count() > MAX_KEY_CHARS)
                && let Some(selector) = self.selector(field)
            {
                return Err(EventError::new(
                    EventErrorKind::TooLong,
                    format_args!(
                        "{} is longer than {MAX_KEY_CHARS} characters",
                        record.describe(selector)
                    ),
                ));
            }
        }
        if event.event_id.is_empty() {
            event.event_id = Cow::Owned(uuid::Uuid::now_v7().to_string());
        }
        event.ip = raw_ip
            .or(fallbacks.ip)
            .map(|ip| Cow::Owned(anonymise_ip(ip)));
        if event.user_agent.is_none() {
            event.user_agent = fallbacks.user_agent.map(Cow::Borrowed);
        }
        Ok(event)
    }

    fn event_type(
        &self,
        value: &str,
        describe: impl Fn() -> String,
    ) -> Result<EventType, EventError> {
        let found = if self.event_types.is_empty() {
            EventType::from_name(value)
        } else {
            self.event_types.get(value).copied()
        };
        found.ok_or_else(|| {
            let mut known: Vec<&str> = if self.event_types.is_empty() {
                EventType::ALL.iter().map(|t| t.as_str()).collect()
            } else {
                self.event_types.keys().map(String::as_str).collect()
            };
            known.sort_unstable();
            EventError::new(
                EventErrorKind::UnknownEventType,
                format_args!(
                    "{}: unknown event type `{value}`; expected one of {}",
                    describe(),
                    known.join(", ")
                ),
            )
        })
    }

    fn event_time(
        &self,
        value: &Value<'_>,
        describe: impl Fn() -> String,
    ) -> Result<EpochMillis, EventError> {
        let parsed = match self.time_format {
            TimeFormat::UnixMillis => value.to_f64().map(|ms| ms.round() as i64),
            TimeFormat::UnixSeconds => value.to_f64().map(|s| (s * 1000.0).round() as i64),
            TimeFormat::Rfc3339 => match value {
                Value::Text(t) => DateTime::parse_from_rfc3339(t.trim())
                    .ok()
                    .map(|d| d.timestamp_millis()),
                _ => None,
            },
        };
        parsed.map(EpochMillis).ok_or_else(|| {
            let format = match self.time_format {
                TimeFormat::UnixMillis => "unix_millis",
                TimeFormat::UnixSeconds => "unix_seconds",
                TimeFormat::Rfc3339 => "rfc3339",
            };
            EventError::new(
                EventErrorKind::InvalidTime,
                format_args!(
                    "{} is not a {format} time: `{}`",
                    describe(),
                    value.to_text()
                ),
            )
        })
    }
}

fn integer(value: &Value<'_>, describe: impl Fn() -> String) -> Result<i64, EventError> {
    value.to_i64().ok_or_else(|| {
        EventError::new(
            EventErrorKind::InvalidValue,
            format_args!(
                "{} must be an integer, found `{}`",
                describe(),
                value.to_text()
            ),
        )
    })
}

fn ip_address(value: &Value<'_>, describe: impl Fn() -> String) -> Result<IpAddr, EventError> {
    value.to_text().trim().parse().map_err(|_| {
        EventError::new(
            EventErrorKind::InvalidValue,
            format_args!("{} is not an IP address: `{}`", describe(), value.to_text()),
        )
    })
}

/// Rejects event times outside the window the lake accepts.
pub(crate) fn check_time_window(
    event_time: EpochMillis,
    received_at: EpochMillis,
) -> Result<(), EventError> {
    let describe = |t: EpochMillis| {
        t.to_datetime()
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| t.0.to_string())
    };
    if event_time.0 > received_at.0.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(EventError::new(
            EventErrorKind::TimeOutOfRange,
            format_args!(
                "event time {} is more than 5 minutes in the future",
                describe(event_time)
            ),
        ));
    }
    if event_time.0 < received_at.0.saturating_sub(MAX_EVENT_AGE_MS) {
        return Err(EventError::new(
            EventErrorKind::TimeOutOfRange,
            format_args!("event time {} is older than 7 days", describe(event_time)),
        ));
    }
    Ok(())
}
