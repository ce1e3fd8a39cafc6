//! The common case of decoding a user record, in one pass: stream JSON straight into the
//! fields of an [`AdEvent`], without building a `serde_json::Value` of the whole object first.
//!
//! ```text
//! bytes ─▶ serde_json map visitor ─▶ Fields: known keys typed, other keys parsed and dropped
//!              │ anything unusual: any error, a repeated or escaped key
//!              ▼
//!           None: the caller takes the careful path, which gives the exact error (or result)
//! ```
//!
//! It accepts only what the careful path accepts, with the same result: every other key's
//! value is still parsed as a `Value` (so numbers out of range and nesting past
//! serde_json's limit fail here as they fail there), and known keys go through the same
//! `Deserialize` impls the careful path ends up calling. A repeated known key (the careful
//! path keeps the last), a key written with escapes and a record that is not UTF-8 give
//! `None`. Attributes go straight
//! into the lake's string map: strings as they are, any other value as the JSON text its
//! `Value` would print, nulls dropped.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use adpipe_core::event::{AdEvent, EpochMillis, EventTypeField};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The keys of a user record, as written; absent and `null` alike are `None`. Text without
/// escapes borrows from the record (`'de`).
#[derive(Debug, Default)]
pub(super) struct Fields<'de> {
    pub(super) event_id: Option<Cow<'de, str>>,
    pub(super) event_type: Option<EventTypeField>,
    pub(super) event_time: Option<EpochMillis>,
    pub(super) received_at: Option<EpochMillis>,
    /// The attributes, as the lake stores them.
    pub(super) attributes: Option<Attributes<'de>>,
    /// Every optional column, already in place; the fields above are left at their defaults.
    pub(super) rest: AdEvent<'de>,
}

/// `data`'s fields, or `None` when the careful path must decide.
pub(super) fn parse(data: &[u8]) -> Option<Fields<'_>> {
    // NOTE: one UTF-8 check of the whole record, instead of one per string as a slice
    // reader does; a record that fails it goes the careful way, which names the error.
    let text = std::str::from_utf8(data).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = (&mut de).deserialize_map(FieldsVisitor).ok()?;
    de.end().ok()?;
    Some(fields)
}

struct FieldsVisitor;

/// A JSON string that borrows from the record when it has no escapes to decode.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text<'de>, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(value)))
    }
}

/// An event's attributes as the lake stores them.
#[derive(Debug, Default)]
pub(super) struct Attributes<'de>(pub(super) BTreeMap<Cow<'de, str>, Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for Attributes<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Attributes<'de>, D::Error> {
        deserializer.deserialize_map(AttributesVisitor)
    }
}

struct AttributesVisitor;

impl<'de> Visitor<'de> for AttributesVisitor {
    type Value = Attributes<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attributes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes<'de>, A::Error> {
        let mut attributes = BTreeMap::new();
        while let Some(Text(key)) = map.next_key()? {
            // NOTE: a repeated key keeps its last value, and a last value of null drops it,
            // as the careful path's object does.
            match map.next_value::<AttributeValue<'de>>()?.0 {
                Some(text) => attributes.insert(key, text),
                None => attributes.remove(key.as_ref()),
            };
        }
        Ok(Attributes(attributes))
    }
}

/// One attribute value as the lake stores it; `None` for null.
struct AttributeValue<'de>(Option<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for AttributeValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AttributeValue<'de>, D::Error> {
        deserializer.deserialize_any(AttributeValueVisitor)
    }
}

struct AttributeValueVisitor;

impl AttributeValueVisitor {
    /// A non-string value, printed as its `Value` prints.
    fn text<'de, E>(value: Value) -> Result<AttributeValue<'de>, E> {
        Ok(AttributeValue(Some(Cow::Owned(value.to_string()))))
    }
}

impl<'de> Visitor<'de> for AttributeValueVisitor {
    type Value = AttributeValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<AttributeValue<'de>, E> {
        Ok(AttributeValue(Some(Cow::Borrowed(value))))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<AttributeValue<'de>, E> {
        Ok(AttributeValue(Some(Cow::Owned(value.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<AttributeValue<'de>, E> {
        Ok(AttributeValue(Some(Cow::Owned(value))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<AttributeValue<'de>, E> {
        Ok(AttributeValue(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<AttributeValue<'de>, E> {
        Ok(AttributeValue(None))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<AttributeValue<'de>, E> {
        Self::text(value.into())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<AttributeValue<'de>, E> {
        Self::text(value.into())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<AttributeValue<'de>, E> {
        Self::text(value.into())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<AttributeValue<'de>, E> {
        Self::text(value.into())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<AttributeValue<'de>, A::Error> {
        Self::text(de::Deserialize::deserialize(SeqAccessDeserializer::new(
            seq,
        ))?)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AttributeValue<'de>, A::Error> {
        Self::text(de::Deserialize::deserialize(MapAccessDeserializer::new(
            map,
        ))?)
    }
}

/// Reads the next value into `slot`, refusing a key seen before.
fn once<'de, A, T>(map: &mut A, slot: &mut Option<T>, seen: &mut bool) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: de::Deserialize<'de>,
{
    if std::mem::replace(seen, true) {
        return Err(de::Error::custom("repeated key"));
    }
    *slot = map.next_value()?;
    Ok(())
}

/// Reads the next string value into `slot`, borrowed when it has no escapes, refusing a key
/// seen before.
fn text<'de, A>(
    map: &mut A,
    slot: &mut Option<Cow<'de, str>>,
    seen: &mut bool,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
{
    let mut value: Option<Text<'de>> = None;
    once(map, &mut value, seen)?;
    *slot = value.map(|Text(text)| text);
    Ok(())
}

/// How many known keys there are (the `seen` flags).
const KNOWN_KEYS: usize = 23;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut f = Fields::default();
        let mut seen = [false; KNOWN_KEYS];
        let r = &mut f.rest;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "event_id" => text(&mut map, &mut f.event_id, &mut seen[0])?,
                "event_type" => once(&mut map, &mut f.event_type, &mut seen[1])?,
                "event_time" => once(&mut map, &mut f.event_time, &mut seen[2])?,
                "received_at" => once(&mut map, &mut f.received_at, &mut seen[3])?,
                "attributes" => once(&mut map, &mut f.attributes, &mut seen[4])?,
                "ad_session_id" => text(&mut map, &mut r.ad_session_id, &mut seen[5])?,
                "campaign_id" => text(&mut map, &mut r.campaign_id, &mut seen[6])?,
                "placement_id" => text(&mut map, &mut r.placement_id, &mut seen[7])?,
                "creative_id" => text(&mut map, &mut r.creative_id, &mut seen[8])?,
                "publisher_id" => text(&mut map, &mut r.publisher_id, &mut seen[9])?,
                "page_url" => text(&mut map, &mut r.page_url, &mut seen[10])?,
                "user_agent" => text(&mut map, &mut r.user_agent, &mut seen[11])?,
                "ip" => text(&mut map, &mut r.ip, &mut seen[12])?,
                "country" => text(&mut map, &mut r.country, &mut seen[13])?,
                "region" => text(&mut map, &mut r.region, &mut seen[14])?,
                "city" => text(&mut map, &mut r.city, &mut seen[15])?,
                "device_type" => text(&mut map, &mut r.device_type, &mut seen[16])?,
                "os" => text(&mut map, &mut r.os, &mut seen[17])?,
                "browser" => text(&mut map, &mut r.browser, &mut seen[18])?,
                "in_view_ms" => once(&mut map, &mut r.in_view_ms, &mut seen[19])?,
                "price_micros" => once(&mut map, &mut r.price_micros, &mut seen[20])?,
                "currency" => text(&mut map, &mut r.currency, &mut seen[21])?,
                "consent" => text(&mut map, &mut r.consent, &mut seen[22])?,
                // NOTE: the pipeline's partner replaces whatever `partner` holds. A string, as
                // the receiver writes it, is skipped without a copy; anything else is left to
                // the careful path.
                "partner" => {
                    map.next_value::<Text<'de>>()?;
                }
                _ => {
                    map.next_value::<Value>()?;
                }
            }
        }
        Ok(f)
    }
}
