//! A cache of answers per network: a value is stored for an address range (a network the
//! GeoIP database returned for one lookup) and found again by any address inside it.
//!
//! ```text
//! insert(first..=last, value) ─▶ BTreeMap first ─▶ (last, value)   (IPv4 and IPv6 apart)
//! get(ip) ─▶ the entry with the greatest first <= ip ─▶ its value if ip <= last
//! ```
//!
//! A MaxMind database is a binary trie whose leaves are disjoint networks, so the entry
//! whose range starts closest below an address is the only one that can hold it. When the
//! cache is full it is emptied; the networks in use come back after one lookup each.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// An address range of one family, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Span {
    /// IPv4 addresses as integers.
    V4 { first: u32, last: u32 },
    /// IPv6 addresses as integers.
    V6 { first: u128, last: u128 },
}

impl Span {
    /// The range of the network from `first` to `last` that a lookup of `ip` returned.
    ///
    /// NOTE: for an IPv4 address, a database that stores IPv4 inside its IPv6 trie may
    /// answer from a node above the IPv4 subtree, as an IPv6 network: the answer then holds
    /// for every IPv4 address. An IPv4 network for an IPv6 address cannot occur; `None`.
    pub(super) fn new(ip: IpAddr, first: IpAddr, last: IpAddr) -> Option<Span> {
        match (ip, first, last) {
            (IpAddr::V4(_), IpAddr::V4(first), IpAddr::V4(last)) => Some(Span::V4 {
                first: first.into(),
                last: last.into(),
            }),
            (IpAddr::V4(_), IpAddr::V6(_), _) => Some(Span::V4 {
                first: 0,
                last: u32::MAX,
            }),
            (IpAddr::V6(_), IpAddr::V6(first), IpAddr::V6(last)) => Some(Span::V6 {
                first: first.into(),
                last: last.into(),
            }),
            _ => None,
        }
    }
}

/// Values by network, at most `capacity` of them.
#[derive(Debug)]
pub(super) struct NetworkCache<V> {
    v4: BTreeMap<u32, (u32, V)>,
    v6: BTreeMap<u128, (u128, V)>,
    capacity: usize,
}

impl<V> NetworkCache<V> {
    /// An empty cache that holds at most `capacity` networks.
    pub(super) fn new(capacity: usize) -> NetworkCache<V> {
        NetworkCache {
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
            capacity,
        }
    }

    /// Networks held.
    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The value of the network holding `ip`, if one is cached.
    pub(super) fn get(&self, ip: IpAddr) -> Option<&V> {
        match ip {
            IpAddr::V4(ip) => holding(&self.v4, ip.into()),
            IpAddr::V6(ip) => holding(&self.v6, ip.into()),
        }
    }

    /// Remembers `value` for every address of `span`; empties the cache first if it is full.
    pub(super) fn insert(&mut self, span: Span, value: V) {
        if self.len() >= self.capacity {
            self.v4.clear();
            self.v6.clear();
        }
        match span {
            Span::V4 { first, last } => {
                self.v4.insert(first, (last, value));
            }
            Span::V6 { first, last } => {
                self.v6.insert(first, (last, value));
            }
        }
    }
}

/// The value of the range in `ranges` that holds `ip`.
fn holding<K: Ord + Copy, V>(ranges: &BTreeMap<K, (K, V)>, ip: K) -> Option<&V> {
    let (_, (last, value)) = ranges.range(..=ip).next_back()?;
    (ip <= *last).then_some(value)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(text: &str) -> IpAddr {
        IpAddr::V4(text.parse::<Ipv4Addr>().unwrap())
    }

    fn span(first: &str, last: &str) -> Span {
        Span::new(v4(first), v4(first), v4(last)).unwrap()
    }

    #[test]
    fn an_address_finds_the_network_that_holds_it() {
        let mut cache = NetworkCache::new(10);
        cache.insert(span("10.0.0.0", "10.0.255.255"), "a");
        cache.insert(span("10.2.0.0", "10.2.0.255"), "b");
        assert_eq!(cache.get(v4("10.0.0.0")), Some(&"a"));
        assert_eq!(cache.get(v4("10.0.77.1")), Some(&"a"));
        assert_eq!(cache.get(v4("10.0.255.255")), Some(&"a"));
        assert_eq!(cache.get(v4("10.1.0.0")), None, "between the networks");
        assert_eq!(cache.get(v4("9.255.255.255")), None, "below the first");
        assert_eq!(cache.get(v4("10.2.0.128")), Some(&"b"));
        assert_eq!(cache.get(v4("10.2.1.0")), None, "above the last");
        let v6 = IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(cache.get(v6), None, "families are kept apart");
    }

    #[test]
    fn ipv6_networks_and_ipv4_answers_from_the_ipv6_trie() {
        let ip: IpAddr = "2001:db8:1::".parse().unwrap();
        let first: IpAddr = "2001:db8::".parse().unwrap();
        let last: IpAddr = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let mut cache = NetworkCache::new(10);
        cache.insert(Span::new(ip, first, last).unwrap(), 6);
        assert_eq!(cache.get("2001:db8:abcd::".parse().unwrap()), Some(&6));
        assert_eq!(cache.get("2001:db9::".parse().unwrap()), None);

        let everything = Span::new(v4("1.2.3.4"), Ipv6Addr::UNSPECIFIED.into(), last).unwrap();
        cache.insert(everything, 4);
        assert_eq!(cache.get(v4("0.0.0.0")), Some(&4));
        assert_eq!(cache.get(v4("255.255.255.255")), Some(&4));
        assert_eq!(Span::new(ip, v4("1.0.0.0"), v4("1.0.0.255")), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let mut cache = NetworkCache::new(2);
        cache.insert(span("1.0.0.0", "1.0.0.255"), 1);
        cache.insert(span("2.0.0.0", "2.0.0.255"), 2);
        assert_eq!(cache.len(), 2);
        cache.insert(span("3.0.0.0", "3.0.0.255"), 3);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(v4("1.0.0.1")), None);
        assert_eq!(cache.get(v4("3.0.0.1")), Some(&3));
    }
}
