//! The standard ad event: what every partner's format is converted into.
//!
//! On the stream an event is one JSON object whose keys are the lake's Parquet column names
//! (times as integer milliseconds since the Unix epoch, UTC); in the lake it is one Parquet
//! row. [`AdEvent`] is that object, so the JSON encoding is the stream contract.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How far in the future an event time may lie (partner clocks drift a little).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
/// How old an event may be: older ones would land in partitions that are already queried.
pub const MAX_EVENT_AGE_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Room reserved for one event's stream JSON: a typical event (ids, a user agent, a few
/// attributes) takes 400–500 bytes, so it is written without growing the buffer three times
/// from serde_json's 128.
const STREAM_JSON_CAPACITY: usize = 512;

/// The kinds of event adpipe knows.
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// An ad was served.
    Impression,
    /// An ad met the viewability standard.
    ViewableImpression,
    /// The user clicked the ad.
    Click,
    /// A video ad started.
    VideoStart,
    /// A video ad played to 25 %.
    FirstQuartile,
    /// A video ad played to 50 %.
    Midpoint,
    /// A video ad played to 75 %.
    ThirdQuartile,
    /// A video ad played to the end.
    VideoComplete,
    /// The user converted.
    Conversion,
    /// Anything else the partner reports.
    Custom,
}

impl EventType {
    /// Every event type, in the contract's order.
    pub const ALL: [EventType; 10] = [
        EventType::Impression,
        EventType::ViewableImpression,
        EventType::Click,
        EventType::VideoStart,
        EventType::FirstQuartile,
        EventType::Midpoint,
        EventType::ThirdQuartile,
        EventType::VideoComplete,
        EventType::Conversion,
        EventType::Custom,
    ];

    /// The name used on the stream and in the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Impression => "impression",
            EventType::ViewableImpression => "viewable_impression",
            EventType::Click => "click",
            EventType::VideoStart => "video_start",
            EventType::FirstQuartile => "first_quartile",
            EventType::Midpoint => "midpoint",
            EventType::ThirdQuartile => "third_quartile",
            EventType::VideoComplete => "video_complete",
            EventType::Conversion => "conversion",
            EventType::Custom => "custom",
        }
    }

    /// Parses a standard name.
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A standard field a partner's data can be mapped onto (the keys of `source.mapping`).
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum StandardField {
    /// → `event_id`; a UUIDv7 is generated when absent.
    EventId,
    /// → `event_type`, through `eventTypes`.
    EventType,
    /// → `event_time`, in `timeFormat`; the receive time when not mapped.
    EventTime,
    /// → `ad_session_id`, also the partition key.
    AdSessionId,
    /// → `campaign_id`.
    CampaignId,
    /// → `placement_id`.
    PlacementId,
    /// → `creative_id`.
    CreativeId,
    /// → `publisher_id`.
    PublisherId,
    /// → `page_url`.
    PageUrl,
    /// → `user_agent`; the request's `User-Agent` header when not mapped.
    UserAgent,
    /// → `ip`, anonymised; the client address when not mapped.
    Ip,
    /// → `country` (ISO 3166-1 alpha-2); GeoIP fills it when absent.
    Country,
    /// → `region`.
    Region,
    /// → `city`.
    City,
    /// → `device_type`.
    DeviceType,
    /// → `in_view_ms`, an integer.
    InViewMs,
    /// → `price_micros`, an integer.
    PriceMicros,
    /// → `currency` (ISO 4217).
    Currency,
    /// → `consent`, e.g. a TCF string.
    Consent,
}

/// Milliseconds since the Unix epoch, UTC: the one time representation of the pipeline.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    Deserialize,
    Serialize,
    JsonSchema,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(transparent)]
pub struct EpochMillis(pub i64);

impl EpochMillis {
    /// The current wall-clock time.
    pub fn now() -> EpochMillis {
        EpochMillis(chrono::Utc::now().timestamp_millis())
    }

    /// This instant as a UTC date-time; `None` outside chrono's range.
    pub fn to_datetime(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_millis(self.0)
    }
}

/// One standard ad event.
///
/// Its text borrows where it can (`'a`): the receiver maps a partner's request body into
/// events that point into that body, so an event costs no copy of its strings on the way to
/// the stream; the deliverer reads owned ones (`AdEvent<'static>`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct AdEvent<'a> {
    /// The partner's event id, or a generated UUIDv7.
    pub event_id: Cow<'a, str>,
    /// The partner (`spec.partner`).
    pub partner: Cow<'a, str>,
    /// The standard event type.
    pub event_type: EventTypeField,
    /// When the event happened, according to the partner.
    pub event_time: EpochMillis,
    /// When the receiver accepted it; decides the lake partition.
    pub received_at: EpochMillis,
    /// The ad session; events of one session stay ordered on one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_session_id: Option<Cow<'a, str>>,
    /// Campaign id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Cow<'a, str>>,
    /// Placement id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_id: Option<Cow<'a, str>>,
    /// Creative id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creative_id: Option<Cow<'a, str>>,
    /// Publisher id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_id: Option<Cow<'a, str>>,
    /// URL of the page that showed the ad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_url: Option<Cow<'a, str>>,
    /// The viewer's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Cow<'a, str>>,
    /// The viewer's IP, anonymised (IPv4 /24, IPv6 /48).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Cow<'a, str>>,
    /// ISO country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Cow<'a, str>>,
    /// Region (subdivision) code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Cow<'a, str>>,
    /// City name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<Cow<'a, str>>,
    /// `desktop`, `mobile`, `tablet`, `tv`, `bot` or `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<Cow<'a, str>>,
    /// Operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Cow<'a, str>>,
    /// Browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<Cow<'a, str>>,
    /// How long the ad was in view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_view_ms: Option<i64>,
    /// Price in millionths of `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_micros: Option<i64>,
    /// ISO 4217 currency code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Cow<'a, str>>,
    /// The user's consent string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Cow<'a, str>>,
    /// Partner fields that no mapping names, as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// The event type as read from the stream.
///
/// Our receiver only ever writes a standard type, but other producers may write anything;
/// the deliverer must still land such a record rather than drop it, so an unknown name is
/// kept as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventTypeField {
    /// One of the standard types.
    Known(EventType),
    /// A name another producer wrote.
    Other(String),
}

impl Default for EventTypeField {
    fn default() -> Self {
        EventTypeField::Known(EventType::Custom)
    }
}

impl EventTypeField {
    /// The name written to the lake.
    pub fn as_str(&self) -> &str {
        match self {
            EventTypeField::Known(t) => t.as_str(),
            EventTypeField::Other(s) => s,
        }
    }
}

impl From<EventType> for EventTypeField {
    fn from(t: EventType) -> Self {
        EventTypeField::Known(t)
    }
}

impl Serialize for EventTypeField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventTypeField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(EventTypeFieldVisitor)
    }
}

/// Reads an event type's name where it lies, so only a name adpipe does not know is copied:
/// the deliverer decodes one per event.
struct EventTypeFieldVisitor;

impl serde::de::Visitor<'_> for EventTypeFieldVisitor {
    type Value = EventTypeField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event type name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<EventTypeField, E> {
        Ok(EventType::from_name(name).map_or_else(
            || EventTypeField::Other(name.to_owned()),
            EventTypeField::Known,
        ))
    }

    fn visit_string<E: serde::de::Error>(self, name: String) -> Result<EventTypeField, E> {
        Ok(EventType::from_name(&name).map_or(EventTypeField::Other(name), EventTypeField::Known))
    }
}

impl JsonSchema for EventTypeField {
    fn schema_name() -> Cow<'static, str> {
        "EventTypeName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

impl AdEvent<'_> {
    /// The Kinesis partition key: the ad session, so that one session stays ordered on one
    /// shard, else the event id.
    pub fn partition_key(&self) -> &str {
        match &self.ad_session_id {
            Some(session) if !session.is_empty() => session,
            _ => &self.event_id,
        }
    }

    /// The event as it travels on the stream.
    pub fn to_stream_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(STREAM_JSON_CAPACITY);
        // NOTE: serialising a struct of strings, integers and a string map cannot fail.
        match serde_json::to_writer(&mut json, self) {
            Ok(()) => json,
            Err(_) => Vec::new(),
        }
    }
}
