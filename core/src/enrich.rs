//! Enrichment: what adpipe adds to an event beyond what the partner sent.
//!
//! * [`anonymise_ip`] runs in the receiver, so a full address never reaches the stream.
//! * [`Enricher`] runs in the deliverer: device type, OS and browser from the user agent
//!   (woothee, whose rules are compiled in, so nothing is downloaded or shipped beside the
//!   binary), and country, region and city from a MaxMind database file when one is given.
//!   Fields the partner already filled are kept.
//!
//! Each shard worker enriches through its own [`CachingEnricher`], which remembers answers so
//! that the parser and the database are asked once per user agent and once per network, not
//! once per event:
//!
//! ```text
//! AdEvent ─▶ CachingEnricher ─┬─ user_agent ─▶ LRU by user agent ──miss──▶ woothee
//!                             │                 (device type, OS, browser)
//!                             └─ ip ─▶ network cache ──miss──▶ MaxMind lookup
//!                                      (country, region, city of the network holding the ip)
//! ```
//!
//! Both caches give exactly what [`Enricher::enrich`] gives without them.

mod networks;

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::path::Path;

use lru::LruCache;

use crate::event::AdEvent;
use crate::spec::Enrichment;
use networks::{NetworkCache, Span};

/// User agents a worker remembers. Real traffic comes from a few hundred browser and app
/// versions; this holds that head with room to spare, at a few hundred bytes an entry.
const CACHED_USER_AGENTS: usize = 4096;
/// Longest user agent that is cached. Longer ones are rare (and often junk); they are parsed
/// each time, so a flood of them cannot make the cache hold megabytes.
const MAX_CACHED_USER_AGENT_BYTES: usize = 512;
/// Networks a worker remembers. A city database has millions, but traffic of one partner
/// comes from far fewer at a time; at about 100 bytes an entry this stays under 2 MB.
const CACHED_NETWORKS: usize = 16_384;

/// Cuts an address to its network: IPv4 to /24, IPv6 to /48.
pub fn anonymise_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            // Written out with `itoa` rather than through `Display`: the receiver does this
            // for nearly every event, and the formatting machinery cost more than the rest.
            let mut text = String::with_capacity("255.255.255.0".len());
            let mut digits = itoa::Buffer::new();
            for octet in &v4.octets()[..3] {
                text.push_str(digits.format(*octet));
                text.push('.');
            }
            text.push('0');
            text
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
        }
    }
}

/// Why an enricher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// The MaxMind database cannot be opened.
    #[error("failed to open GeoIP database {path}: {source}")]
    GeoIpDatabase {
        /// The file.
        path: String,
        /// What the reader said.
        source: maxminddb::MaxMindDbError,
    },
}

/// The deliverer's enrichment steps, ready to run. Shared by the workers of a deliverer; each
/// enriches through its own [`CachingEnricher`].
pub struct Enricher {
    user_agent: Option<woothee::parser::Parser>,
    geoip: Option<maxminddb::Reader<Vec<u8>>>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("user_agent", &self.user_agent.is_some())
            .field("geoip", &self.geoip.is_some())
            .finish()
    }
}

impl Enricher {
    /// Prepares the steps a pipeline asks for. `geoip` needs a database; without one the
    /// step is skipped and [`Enricher::geoip_enabled`] says so.
    pub fn new(
        steps: &[Enrichment],
        geoip_database: Option<&Path>,
    ) -> Result<Enricher, EnrichError> {
        let user_agent = steps
            .contains(&Enrichment::UserAgent)
            .then(woothee::parser::Parser::new);
        let geoip = match (steps.contains(&Enrichment::Geoip), geoip_database) {
            (true, Some(path)) => {
                Some(maxminddb::Reader::open_readfile(path).map_err(|source| {
                    EnrichError::GeoIpDatabase {
                        path: path.display().to_string(),
                        source,
                    }
                })?)
            }
            _ => None,
        };
        Ok(Enricher { user_agent, geoip })
    }

    /// Whether GeoIP lookups run.
    pub fn geoip_enabled(&self) -> bool {
        self.geoip.is_some()
    }

    /// Adds what the enabled steps know to `event`, asking the parser and the database each
    /// time. A worker uses [`Enricher::caching`] instead, which gives the same result faster.
    pub fn enrich<'e>(&'e self, event: &mut AdEvent<'e>) {
        if let (Some(parser), Some(ua)) = (&self.user_agent, event.user_agent.as_deref())
            && let Some(agent) = Agent::parse(parser, ua)
        {
            agent.apply(event);
        }
        if let (Some(reader), Some(ip)) = (&self.geoip, event.ip.as_deref())
            && let Ok(ip) = ip.parse::<IpAddr>()
            && let Some((place, _)) = Place::look_up(reader, ip)
        {
            place.apply(event);
        }
    }

    /// A worker's own view of these steps, with empty caches: one per shard worker, so that
    /// no lock is shared between them.
    pub fn caching(&self) -> CachingEnricher<'_> {
        let capacity = NonZeroUsize::new(CACHED_USER_AGENTS).unwrap_or(NonZeroUsize::MIN);
        CachingEnricher {
            enricher: self,
            agents: self.user_agent.is_some().then(|| LruCache::new(capacity)),
            places: NetworkCache::new(CACHED_NETWORKS),
        }
    }
}

/// An [`Enricher`] that remembers what the parser said per user agent (least recently used
/// ones are forgotten first) and what the database said per network (forgotten all at once
/// when full). Not shared: each worker owns one, so it needs no lock.
pub struct CachingEnricher<'a> {
    enricher: &'a Enricher,
    /// `None` when the user-agent step is off.
    agents: Option<LruCache<String, Option<Agent>>>,
    places: NetworkCache<Place<'a>>,
}

impl std::fmt::Debug for CachingEnricher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingEnricher")
            .field("enricher", self.enricher)
            .field(
                "user_agents",
                &self.agents.as_ref().map_or(0, LruCache::len),
            )
            .field("networks", &self.places.len())
            .finish()
    }
}

impl<'a> CachingEnricher<'a> {
    /// Adds what the enabled steps know to `event`: the same as [`Enricher::enrich`]. The
    /// event may borrow what it is given for as long as the enricher lives.
    pub fn enrich<'e>(&mut self, event: &mut AdEvent<'e>)
    where
        'a: 'e,
    {
        if let (Some(parser), Some(agents), Some(ua)) = (
            &self.enricher.user_agent,
            &mut self.agents,
            event.user_agent.as_deref(),
        ) {
            if ua.len() > MAX_CACHED_USER_AGENT_BYTES {
                if let Some(agent) = Agent::parse(parser, ua) {
                    agent.apply(event);
                }
            } else if let Some(agent) = agents.get_or_insert_ref(ua, || Agent::parse(parser, ua)) {
                agent.apply(event);
            }
        }
        if let (Some(reader), Some(ip)) = (&self.enricher.geoip, event.ip.as_deref())
            && let Ok(ip) = ip.parse::<IpAddr>()
        {
            if let Some(place) = self.places.get(ip) {
                place.apply(event);
            } else if let Some((place, span)) = Place::look_up(reader, ip) {
                place.apply(event);
                if let Some(span) = span {
                    self.places.insert(span, place);
                }
            }
        }
    }
}

/// What the user-agent step adds for one user agent.
#[derive(Debug)]
struct Agent {
    device_type: &'static str,
    os: Option<Cow<'static, str>>,
    browser: Option<Cow<'static, str>>,
}

impl Agent {
    /// What woothee makes of `user_agent`; `None` if it knows nothing.
    fn parse(parser: &woothee::parser::Parser, user_agent: &str) -> Option<Agent> {
        let result = parser.parse(user_agent)?;
        Some(Agent {
            device_type: device_type(result.category),
            os: known(result.os).map(woothee_name),
            browser: known(result.name).map(woothee_name),
        })
    }

    /// Fills the fields the partner left empty.
    fn apply(&self, event: &mut AdEvent<'_>) {
        event
            .device_type
            .get_or_insert(Cow::Borrowed(self.device_type));
        if let Some(os) = &self.os {
            event.os.get_or_insert_with(|| os.clone());
        }
        if let Some(browser) = &self.browser {
            event.browser.get_or_insert_with(|| browser.clone());
        }
    }
}

/// What the GeoIP step adds for one network; all `None` where the database knows nothing.
/// The names lie in the database, which outlives every event enriched from it, so events
/// borrow them rather than each taking copies.
#[derive(Debug, Default)]
struct Place<'db> {
    country: Option<&'db str>,
    region: Option<&'db str>,
    city: Option<&'db str>,
}

impl<'db> Place<'db> {
    /// What the database says about `ip`, and the network it says it for (`None` in the rare
    /// case the network is not one the cache can hold); `None` if the lookup failed.
    fn look_up(
        reader: &'db maxminddb::Reader<Vec<u8>>,
        ip: IpAddr,
    ) -> Option<(Place<'db>, Option<Span>)> {
        let found = reader.lookup(ip).ok()?;
        let span = found
            .network()
            .ok()
            .and_then(|network| Span::new(ip, network.network(), network.broadcast()));
        let place = match found.decode::<maxminddb::geoip2::City<'_>>() {
            Ok(Some(city)) => Place {
                country: city.country.iso_code,
                region: city.subdivisions.first().and_then(|s| s.iso_code),
                city: city.city.names.english,
            },
            _ => Place::default(),
        };
        Some((place, span))
    }

    /// Fills the fields the partner left empty.
    fn apply<'e>(&self, event: &mut AdEvent<'e>)
    where
        'db: 'e,
    {
        for (slot, value) in [
            (&mut event.country, self.country),
            (&mut event.region, self.region),
            (&mut event.city, self.city),
        ] {
            if slot.is_none()
                && let Some(value) = value
            {
                *slot = Some(Cow::Borrowed(value));
            }
        }
    }
}

fn known(value: &str) -> Option<&str> {
    (!value.is_empty() && value != woothee::woothee::VALUE_UNKNOWN).then_some(value)
}

/// `name` as it lies in woothee's compiled-in dataset, so that every event of a user agent
/// shares it; a copy only for a name the dataset does not hold. Asked once per user agent.
fn woothee_name(name: &str) -> Cow<'static, str> {
    woothee::dataset::DATASET
        .values()
        .flat_map(|entry| [entry.name, entry.os])
        .find(|known| *known == name)
        .map_or_else(|| Cow::Owned(name.to_owned()), Cow::Borrowed)
}

fn device_type(category: &str) -> &'static str {
    match category {
        "pc" => "desktop",
        "smartphone" | "mobilephone" => "mobile",
        "appliance" => "tv",
        "crawler" => "bot",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn ips_are_cut_to_their_network() {
        assert_eq!(anonymise_ip("203.0.113.77".parse().unwrap()), "203.0.113.0");
        for octets in [
            [0, 0, 0, 1],
            [9, 10, 99, 100],
            [100, 199, 200, 255],
            [255; 4],
        ] {
            let [a, b, c, _] = octets;
            assert_eq!(
                anonymise_ip(Ipv4Addr::from(octets).into()),
                Ipv4Addr::new(a, b, c, 0).to_string()
            );
        }
        assert_eq!(
            anonymise_ip("2001:db8:abcd:12::1".parse().unwrap()),
            "2001:db8:abcd::"
        );
    }

    #[test]
    fn user_agents_give_device_os_and_browser() {
        let enricher = Enricher::new(&[Enrichment::UserAgent], None).unwrap();
        let mut event = AdEvent {
            user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1".into()),
            ..AdEvent::default()
        };
        enricher.enrich(&mut event);
        assert_eq!(event.device_type.as_deref(), Some("mobile"));
        assert_eq!(event.os.as_deref(), Some("iPhone"));
        assert_eq!(event.browser.as_deref(), Some("Safari"));

        let mut desktop = AdEvent {
            user_agent: Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36".into()),
            device_type: Some("ctv".into()),
            ..AdEvent::default()
        };
        enricher.enrich(&mut desktop);
        assert_eq!(
            desktop.device_type.as_deref(),
            Some("ctv"),
            "the partner's value is kept"
        );
        assert_eq!(desktop.browser.as_deref(), Some("Chrome"));
    }

    #[test]
    fn the_caches_change_nothing_but_the_speed() {
        let database =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/geoip/GeoIP2-City-Test.mmdb");
        let enricher =
            Enricher::new(&[Enrichment::UserAgent, Enrichment::Geoip], Some(&database)).unwrap();
        let long_agent = format!(
            "Mozilla/5.0 (Windows NT 10.0) Chrome/120.0 {}",
            "x".repeat(600)
        );
        let agents = [
            Some(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            ),
            Some(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            ),
            Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            Some("curl/8.5.0"),
            Some(""),
            Some(long_agent.as_str()),
            None,
        ];
        let ips = [
            Some("203.0.113.0"),
            Some("203.0.113.77"),
            Some("203.0.114.0"),
            Some("198.51.100.0"),
            Some("2001:db8:abcd::"),
            Some("2001:db8:1::"),
            Some("2001:db9::"),
            Some("::ffff:203.0.113.0"),
            Some("not an address"),
            None,
        ];
        let mut events = Vec::new();
        for round in 0..3 {
            for (i, agent) in agents.iter().enumerate() {
                for (j, ip) in ips.iter().enumerate() {
                    let filled = (round + i + j) % 4 == 0;
                    events.push(AdEvent {
                        user_agent: agent.map(Cow::Borrowed),
                        ip: ip.map(Cow::Borrowed),
                        os: filled.then_some(Cow::Borrowed("partner-os")),
                        city: filled.then_some(Cow::Borrowed("partner-city")),
                        ..AdEvent::default()
                    });
                }
            }
        }

        let mut cached = events.clone();
        let mut caching = enricher.caching();
        cached.iter_mut().for_each(|e| caching.enrich(e));
        assert_eq!(
            caching.agents.as_ref().map(LruCache::len),
            Some(5),
            "every short user agent, once"
        );
        assert!(
            caching.places.len() < 8,
            "addresses of one network share an entry: {caching:?}"
        );
        events.iter_mut().for_each(|e| enricher.enrich(e));
        assert_eq!(cached, events);
        assert!(events.iter().any(|e| e.city.as_deref() == Some("Berlin")));
        assert!(
            events
                .iter()
                .any(|e| e.browser.as_deref() == Some("Safari"))
        );
        assert!(
            events
                .iter()
                .any(|e| e.device_type.as_deref() == Some("bot"))
        );
        assert!(events.iter().any(|e| e.ip.is_some() && e.country.is_none()));
    }

    #[test]
    fn geoip_without_a_database_is_skipped_not_fatal() {
        let enricher = Enricher::new(&[Enrichment::Geoip], None).unwrap();
        assert!(!enricher.geoip_enabled());
        let err =
            Enricher::new(&[Enrichment::Geoip], Some(Path::new("/nonexistent.mmdb"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent.mmdb"));
    }
}
