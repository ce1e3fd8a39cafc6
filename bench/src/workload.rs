//! The acme-video workload every benchmark tool sends or measures: batches of events as the
//! acme-video partner of `examples/pipelines/acme-video.yaml` posts them, a JSON array signed
//! with `X-Hub-Signature-256`.
//!
//! ```text
//! Batch::new(size, run)           template with fixed-width digit slots, built once
//!   └─ fill(out, first_seq, now)  copy + patch ids, times and sessions: a fresh body
//!        └─ signature(secret, body)  "sha256=<hex HMAC-SHA256>"
//! ```
//!
//! Event `seq` of run `run` has the id `evt-{run:04}-{seq:012}`, so a body costs one copy and
//! a few digit writes, and every event a receiver acknowledged can be found again downstream.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// Digits of the sequence number in an event id.
const SEQ_DIGITS: usize = 12;
/// Digits of a Unix time in milliseconds (until the year 2286).
const TIME_DIGITS: usize = 13;
/// Digits of the session number.
const SESSION_DIGITS: usize = 8;
/// Events one ad session sends in a row (impression, quartiles, completion): they share a
/// partition key, as a real session's events do.
const EVENTS_PER_SESSION: u64 = 5;
/// acme-video's event types (`spec.source.eventTypes`), cycled through by position.
const EVENT_TYPES: [&str; 7] = ["imp", "view", "q1", "q2", "q3", "done", "clk"];
/// What every event carries besides its id, type, time and session: ~370 bytes an event, as
/// the micro-benchmarks use; `deal` is unmapped and lands in `attributes`.
const CONSTANT_FIELDS: &str = concat!(
    r#""campaign":"cmp-2026-q4-video","placement":"plc-homepage-top","#,
    r#""creative":"crv-15s-bumper-v2","#,
    r#""ua":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "#,
    r#"(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1","#,
    r#""ip":"203.0.113.77","deal":"pmp-4471""#
);

/// Where one event's variable digits sit in the template.
#[derive(Debug, Clone, Copy)]
struct Slots {
    seq: usize,
    time: usize,
    session: usize,
}

/// A batch of `size` events, ready to be stamped with ids and times.
#[derive(Debug, Clone)]
pub struct Batch {
    template: Vec<u8>,
    slots: Vec<Slots>,
}

impl Batch {
    /// The template of a `size`-event batch for run `run` (the id prefix).
    pub fn new(size: usize, run: u16) -> Batch {
        let mut template = Vec::with_capacity(size * 400 + 2);
        let mut slots = Vec::with_capacity(size);
        template.push(b'[');
        for i in 0..size {
            if i > 0 {
                template.push(b',');
            }
            template.extend_from_slice(format!(r#"{{"id":"evt-{run:04}-"#).as_bytes());
            let seq = template.len();
            template.extend_from_slice(&[b'0'; SEQ_DIGITS]);
            let kind = EVENT_TYPES[i % EVENT_TYPES.len()];
            template.extend_from_slice(format!(r#"","type":"{kind}","ts":"#).as_bytes());
            let time = template.len();
            template.extend_from_slice(&[b'0'; TIME_DIGITS]);
            template.extend_from_slice(br#","session":"sess-"#);
            let session = template.len();
            template.extend_from_slice(&[b'0'; SESSION_DIGITS]);
            template.extend_from_slice(br#"","#);
            template.extend_from_slice(CONSTANT_FIELDS.as_bytes());
            template.push(b'}');
            slots.push(Slots { seq, time, session });
        }
        template.push(b']');
        Batch { template, slots }
    }

    /// Events per batch.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Bytes per body.
    pub fn body_len(&self) -> usize {
        self.template.len()
    }

    /// Writes into `out` (replacing its contents) the batch whose events are `first_seq`,
    /// `first_seq + 1`, … stamped with the time `now_ms`.
    pub fn fill(&self, out: &mut Vec<u8>, first_seq: u64, now_ms: u64) {
        out.clear();
        out.extend_from_slice(&self.template);
        for (i, slots) in self.slots.iter().enumerate() {
            let seq = first_seq + i as u64;
            write_digits(&mut out[slots.seq..slots.seq + SEQ_DIGITS], seq);
            write_digits(&mut out[slots.time..slots.time + TIME_DIGITS], now_ms);
            write_digits(
                &mut out[slots.session..slots.session + SESSION_DIGITS],
                seq / EVENTS_PER_SESSION,
            );
        }
    }
}

/// The id of event `seq` of run `run`.
pub fn event_id(run: u16, seq: u64) -> String {
    format!("evt-{run:04}-{seq:0SEQ_DIGITS$}")
}

/// The run and sequence number of an id made by [`event_id`].
pub fn parse_event_id(id: &str) -> Option<(u16, u64)> {
    let (run, seq) = id.strip_prefix("evt-")?.split_once('-')?;
    Some((run.parse().ok()?, seq.parse().ok()?))
}

/// The `X-Hub-Signature-256` value of `body`: `sha256=` and the hex HMAC-SHA256.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // NOTE: HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => String::new(),
    }
}

/// Writes `value` as zero-padded decimal filling `out` (its lowest digits if it is longer).
fn write_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_batch_is_a_json_array_of_distinct_current_events() {
        let batch = Batch::new(20, 7);
        let mut body = Vec::new();
        batch.fill(&mut body, 1000, 1_790_000_000_123);
        assert_eq!(body.len(), batch.body_len());
        let events: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(events.len(), 20);
        assert_eq!(events[0]["id"], event_id(7, 1000));
        assert_eq!(events[19]["id"], "evt-0007-000000001019");
        assert_eq!(events[3]["type"], "q2");
        assert!(events.iter().all(|e| e["ts"] == 1_790_000_000_123_u64));
        assert_eq!(events[0]["session"], "sess-00000200");
        assert_eq!(events[5]["session"], "sess-00000201");
        let per_event = body.len() / 20;
        assert!(
            (330..420).contains(&per_event),
            "{per_event} bytes an event"
        );
    }

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(parse_event_id(&event_id(3, 42)), Some((3, 42)));
        assert_eq!(parse_event_id("e-1"), None);
    }

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
