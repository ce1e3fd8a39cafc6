//! Enrichment: what adpipe adds to an event beyond what the partner sent.
//!
//! * [`anonymise_ip`] runs in the receiver, so a full address never reaches the stream.
//! * [`Enricher`] runs in the deliverer: device type, OS and browser from the user agent
//!   (woothee, whose rules are compiled in, so nothing is downloaded or shipped beside the
//!   binary), and country, region and city from a MaxMind database file when one is given.
//!   Fields the partner already filled are kept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::event::AdEvent;
use crate::spec::Enrichment;

/// Cuts an address to its network: IPv4 to /24, IPv6 to /48.
pub fn anonymise_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Ipv4Addr::new(a, b, c, 0).to_string()
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

/// The deliverer's enrichment steps, ready to run.
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

    /// Adds what the enabled steps know to `event`.
    pub fn enrich(&self, event: &mut AdEvent) {
        if let (Some(parser), Some(ua)) = (&self.user_agent, event.user_agent.as_deref())
            && let Some(result) = parser.parse(ua)
        {
            let device = device_type(result.category);
            let os = known(result.os);
            let browser = known(result.name);
            event.device_type.get_or_insert_with(|| device.to_owned());
            if let Some(os) = os {
                event.os.get_or_insert_with(|| os.to_owned());
            }
            if let Some(browser) = browser {
                event.browser.get_or_insert_with(|| browser.to_owned());
            }
        }
        if let (Some(reader), Some(ip)) = (&self.geoip, event.ip.as_deref())
            && let Ok(ip) = ip.parse::<IpAddr>()
        {
            apply_geo(reader, ip, event);
        }
    }
}

fn apply_geo(reader: &maxminddb::Reader<Vec<u8>>, ip: IpAddr, event: &mut AdEvent) {
    let Ok(found) = reader.lookup(ip) else { return };
    let Ok(Some(city)) = found.decode::<maxminddb::geoip2::City<'_>>() else {
        return;
    };
    if event.country.is_none() {
        event.country = city.country.iso_code.map(str::to_owned);
    }
    if event.region.is_none() {
        event.region = city
            .subdivisions
            .first()
            .and_then(|s| s.iso_code)
            .map(str::to_owned);
    }
    if event.city.is_none() {
        event.city = city.city.names.english.map(str::to_owned);
    }
}

fn known(value: &str) -> Option<&str> {
    (!value.is_empty() && value != woothee::woothee::VALUE_UNKNOWN).then_some(value)
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
    use super::*;

    #[test]
    fn ips_are_cut_to_their_network() {
        assert_eq!(anonymise_ip("203.0.113.77".parse().unwrap()), "203.0.113.0");
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
    fn geoip_without_a_database_is_skipped_not_fatal() {
        let enricher = Enricher::new(&[Enrichment::Geoip], None).unwrap();
        assert!(!enricher.geoip_enabled());
        let err =
            Enricher::new(&[Enrichment::Geoip], Some(Path::new("/nonexistent.mmdb"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent.mmdb"));
    }
}
