//! A deterministic, realistic day-part of acme-video traffic, as the receiver puts it on the
//! stream.
//!
//! ```text
//! seed ─▶ Rng ─▶ pool of open ad sessions ─▶ next event of a random session ─▶ AdEvent
//!   (campaign, placement, creative, user agent, /24 or /48, deal; a video funnel:
//!    impression, viewable, quartiles, complete, sometimes a click)
//! ```
//!
//! Events carry what acme-video's mapping gives the receiver (id, type, times, session,
//! campaign, placement, creative, user agent, anonymised IP) plus the unmapped fields as
//! `attributes`, and nothing the deliverer fills in (device, OS, browser, geography). Receive
//! times are spread evenly over one hour, so the lake gets one partition.

use std::collections::BTreeMap;

use adpipe_core::event::{AdEvent, EpochMillis, EventType};

/// 2026-11-28T13:00:00Z: a fixed hour, so that every run lands the same partition.
const FIRST_RECEIVED_AT_MS: i64 = 1_795_870_800_000;
/// The hour the receive times are spread over.
const SPAN_MS: i64 = 3_600_000;
/// Sessions interleaved at any moment: enough that neighbouring rows rarely share one, as on
/// a busy stream.
const OPEN_SESSIONS: usize = 2_000;
/// Distinct campaigns, placements, creatives per campaign and deals (a mid-sized partner).
const CAMPAIGNS: u64 = 40;
const PLACEMENTS: u64 = 150;
const CREATIVES_PER_CAMPAIGN: u64 = 8;
const DEALS: u64 = 60;

/// Browser user agents as real traffic shows them, with a weight each (a share in %).
const USER_AGENTS: [(u32, &str); 12] = [
    (
        24,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        18,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    ),
    (
        16,
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    ),
    (
        8,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    ),
    (
        7,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        6,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    ),
    (
        5,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    ),
    (
        5,
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    ),
    (
        4,
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    ),
    (
        3,
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) 7.0 TV Safari/537.36",
    ),
    (
        2,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        2,
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
];
/// Player sizes, an unmapped field acme-video sends.
const VIDEO_SIZES: [&str; 4] = ["640x360", "1280x720", "1920x1080", "400x300"];

/// Share (in %) of viewers in the test GeoIP database's IPv4 network (the rest of the IPv4
/// viewers are in networks it does not hold, as most lookups of a partial database miss).
const GEO_HIT_V4_PERCENT: u64 = 40;
/// Share (in %) of IPv6 viewers, all inside the test database's IPv6 network.
const IPV6_PERCENT: u64 = 10;

/// splitmix64: tiny, fast, and the same sequence for a seed on every machine.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence follows from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant at these sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// Skewed towards small values, as campaign and placement popularity is.
    fn skewed(&mut self, n: u64) -> u64 {
        self.below(n).min(self.below(n))
    }
}

/// One ad view in progress: its fixed properties and the events still to come.
#[derive(Debug)]
struct Session {
    id: String,
    campaign: u64,
    placement: u64,
    creative: u64,
    user_agent: &'static str,
    ip: String,
    deal: Option<u64>,
    video_size: &'static str,
    /// Remaining event types, next last.
    to_come: Vec<EventType>,
}

impl Session {
    fn new(rng: &mut Rng) -> Session {
        let campaign = rng.skewed(CAMPAIGNS);
        let mut funnel = vec![EventType::Impression];
        if rng.percent(70) {
            funnel.push(EventType::ViewableImpression);
            for (step, keep) in [
                (EventType::FirstQuartile, 80),
                (EventType::Midpoint, 85),
                (EventType::ThirdQuartile, 90),
                (EventType::VideoComplete, 90),
            ] {
                if !rng.percent(keep) {
                    break;
                }
                funnel.push(step);
            }
        }
        if rng.percent(2) {
            let at = 1 + rng.below(funnel.len() as u64) as usize;
            funnel.insert(at.min(funnel.len()), EventType::Click);
        }
        funnel.reverse();
        Session {
            id: format!("{:016x}", rng.next()),
            campaign,
            placement: rng.skewed(PLACEMENTS),
            creative: campaign * CREATIVES_PER_CAMPAIGN + rng.below(CREATIVES_PER_CAMPAIGN),
            user_agent: user_agent(rng),
            ip: viewer_network(rng),
            deal: rng.percent(70).then(|| rng.skewed(DEALS)),
            video_size: VIDEO_SIZES[rng.below(VIDEO_SIZES.len() as u64) as usize],
            to_come: funnel,
        }
    }
}

fn user_agent(rng: &mut Rng) -> &'static str {
    let total: u32 = USER_AGENTS.iter().map(|(w, _)| w).sum();
    let mut pick = rng.below(u64::from(total)) as u32;
    for (weight, ua) in USER_AGENTS {
        if pick < weight {
            return ua;
        }
        pick -= weight;
    }
    USER_AGENTS[0].1
}

/// The viewer's address as the receiver leaves it: cut to its /24 or /48.
fn viewer_network(rng: &mut Rng) -> String {
    let r = rng.below(100);
    if r < IPV6_PERCENT {
        format!("2001:db8:{:x}::", rng.below(0x1_0000))
    } else if r < IPV6_PERCENT + GEO_HIT_V4_PERCENT {
        "203.0.113.0".to_owned()
    } else {
        // Public unicast space outside the documentation networks.
        format!(
            "{}.{}.{}.0",
            11 + rng.below(180),
            rng.below(256),
            rng.below(256)
        )
    }
}

fn uuid_v4(rng: &mut Rng) -> String {
    let bits = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    uuid::Builder::from_random_bytes(bits.to_be_bytes())
        .into_uuid()
        .to_string()
}

/// Produces `total` events of acme-video, in stream order.
#[derive(Debug)]
pub struct Events {
    rng: Rng,
    open: Vec<Session>,
    total: u64,
    made: u64,
}

impl Events {
    /// `total` events from `seed`.
    pub fn new(seed: u64, total: u64) -> Events {
        let mut rng = Rng::new(seed);
        let open = (0..OPEN_SESSIONS).map(|_| Session::new(&mut rng)).collect();
        Events {
            rng,
            open,
            total,
            made: 0,
        }
    }
}

impl Iterator for Events {
    type Item = AdEvent<'static>;

    fn next(&mut self) -> Option<AdEvent<'static>> {
        if self.made >= self.total {
            return None;
        }
        let rng = &mut self.rng;
        let slot = rng.below(OPEN_SESSIONS as u64) as usize;
        if self.open[slot].to_come.is_empty() {
            self.open[slot] = Session::new(rng);
        }
        let session = &mut self.open[slot];
        let event_type = session.to_come.pop().unwrap_or(EventType::Impression);
        let offset = i64::try_from(self.made).unwrap_or(i64::MAX) * SPAN_MS
            / i64::try_from(self.total).unwrap_or(i64::MAX);
        let received_at = FIRST_RECEIVED_AT_MS + offset;
        let mut attributes = BTreeMap::new();
        if let Some(deal) = session.deal {
            attributes.insert("deal".into(), format!("pmp-{:04}", 1000 + deal).into());
        }
        attributes.insert("vsize".into(), session.video_size.into());
        let event = AdEvent {
            event_id: uuid_v4(rng).into(),
            partner: "acme-video".into(),
            event_type: event_type.into(),
            event_time: EpochMillis(received_at - 300 - rng.below(4_000) as i64),
            received_at: EpochMillis(received_at),
            ad_session_id: Some(session.id.clone().into()),
            campaign_id: Some(format!("cmp-2026q4-{:03}", session.campaign).into()),
            placement_id: Some(format!("plc-{:04}-preroll", session.placement).into()),
            creative_id: Some(format!("crv-{:05}", session.creative).into()),
            user_agent: Some(session.user_agent.into()),
            ip: Some(session.ip.clone().into()),
            attributes,
            ..AdEvent::default()
        };
        self.made += 1;
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let a: Vec<AdEvent<'static>> = Events::new(7, 500).collect();
        let b: Vec<AdEvent<'static>> = Events::new(7, 500).collect();
        assert_eq!(a, b);
        assert_ne!(a, Events::new(8, 500).collect::<Vec<_>>());
        assert_eq!(a.len(), 500);
    }

    #[test]
    fn events_look_like_the_receivers() {
        let events: Vec<AdEvent<'static>> = Events::new(1, 5_000).collect();
        let first = &events[0];
        assert_eq!(
            uuid::Uuid::parse_str(&first.event_id)
                .unwrap()
                .get_version_num(),
            4
        );
        assert!(
            events
                .iter()
                .all(|e| e.received_at.0 - e.event_time.0 >= 300)
        );
        assert!(events.iter().all(|e| e.country.is_none() && e.os.is_none()));
        let impressions = events
            .iter()
            .filter(|e| e.event_type == EventType::Impression.into())
            .count();
        assert!(impressions > 1_000 && impressions < 3_000, "{impressions}");
        let last = events.last().unwrap().received_at.0;
        assert!(last < FIRST_RECEIVED_AT_MS + SPAN_MS);
    }
}
