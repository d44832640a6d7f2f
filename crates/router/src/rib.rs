//! The routing information base and the forwarding table built from it.
//!
//! Every source (connected subnets, static routes now, BGP later) adds candidate routes to the
//! RIB; per prefix the candidate with the lowest administrative distance whose next hop
//! resolves is installed in the FIB. Lookup is longest-prefix match: one hash map per prefix
//! length, tried from /32 down over the lengths that are in use.

use crate::PortId;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Where a route came from; the order is the administrative distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Connected,
    Static,
    Ebgp,
    Ibgp,
}

impl Source {
    pub fn distance(self) -> u8 {
        match self {
            Source::Connected => 0,
            Source::Static => 1,
            Source::Ebgp => 20,
            Source::Ibgp => 200,
        }
    }
}

/// A candidate route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub prefix: Ipv4Net,
    /// Gateway; `None` means the destination is on the link.
    pub next_hop: Option<Ipv4Addr>,
    /// The port, if the source names it; otherwise resolved from the next hop.
    pub port: Option<PortId>,
    pub source: Source,
}

/// An installed route: where a packet to `prefix` leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FibEntry {
    pub prefix: Ipv4Net,
    pub port: PortId,
    pub next_hop: Option<Ipv4Addr>,
    pub source: Source,
}

#[derive(Debug, Default)]
pub struct Rib {
    candidates: Vec<Route>,
    fib: Vec<HashMap<u32, FibEntry>>,
    /// Bit n set when some /n is installed.
    lengths: u64,
}

fn key(addr: Ipv4Addr, len: u8) -> u32 {
    let a = u32::from(addr);
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

impl Rib {
    pub fn new() -> Self {
        Self {
            candidates: Vec::new(),
            fib: vec![HashMap::new(); 33],
            lengths: 0,
        }
    }

    /// Adds a candidate (replacing one with the same prefix and source) and rebuilds the FIB.
    pub fn add(&mut self, route: Route) {
        let route = Route {
            prefix: route.prefix.trunc(),
            ..route
        };
        self.candidates
            .retain(|r| !(r.prefix == route.prefix && r.source == route.source));
        self.candidates.push(route);
        self.rebuild();
    }

    /// Withdraws the candidate for `prefix` from `source`; true if there was one.
    pub fn remove(&mut self, prefix: Ipv4Net, source: Source) -> bool {
        let prefix = prefix.trunc();
        let before = self.candidates.len();
        self.candidates
            .retain(|r| !(r.prefix == prefix && r.source == source));
        let changed = self.candidates.len() != before;
        if changed {
            self.rebuild();
        }
        changed
    }

    /// Longest-prefix match.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&FibEntry> {
        let mut lengths = self.lengths;
        while lengths != 0 {
            let len = 63 - lengths.leading_zeros() as u8;
            lengths &= !(1u64 << len);
            if let Some(e) = self.fib[usize::from(len)].get(&key(dst, len)) {
                return Some(e);
            }
        }
        None
    }

    pub fn candidates(&self) -> &[Route] {
        &self.candidates
    }

    pub fn installed(&self) -> Vec<FibEntry> {
        let mut v: Vec<FibEntry> = self.fib.iter().flat_map(|m| m.values().copied()).collect();
        v.sort_by_key(|e| {
            (
                std::cmp::Reverse(e.prefix.prefix_len()),
                u32::from(e.prefix.addr()),
            )
        });
        v
    }

    fn rebuild(&mut self) {
        for m in &mut self.fib {
            m.clear();
        }
        self.lengths = 0;
        let mut order: Vec<&Route> = self.candidates.iter().collect();
        // Lower distance first, so a next hop resolves through routes already installed.
        order.sort_by_key(|r| {
            (
                r.source.distance(),
                std::cmp::Reverse(r.prefix.prefix_len()),
            )
        });
        let mut installed: Vec<FibEntry> = Vec::new();
        for r in order {
            let len = r.prefix.prefix_len();
            if self.fib[usize::from(len)].contains_key(&key(r.prefix.addr(), len)) {
                continue; // a better source already holds this prefix
            }
            let port = match (r.port, r.next_hop) {
                (Some(p), _) => Some(p),
                (None, Some(nh)) => {
                    // Resolve the gateway through what is installed (not through this prefix).
                    let via = self.lookup(nh).filter(|e| e.prefix != r.prefix).copied();
                    via.map(|e| e.port)
                }
                (None, None) => None,
            };
            let Some(port) = port else { continue };
            let e = FibEntry {
                prefix: r.prefix,
                port,
                next_hop: r.next_hop,
                source: r.source,
            };
            self.fib[usize::from(len)].insert(key(r.prefix.addr(), len), e);
            self.lengths |= 1u64 << len;
            installed.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rib() -> Rib {
        let mut r = Rib::new();
        r.add(Route {
            prefix: net("10.0.1.0/24"),
            next_hop: None,
            port: Some(0),
            source: Source::Connected,
        });
        r.add(Route {
            prefix: net("10.0.2.0/24"),
            next_hop: None,
            port: Some(1),
            source: Source::Connected,
        });
        r.add(Route {
            prefix: net("0.0.0.0/0"),
            next_hop: Some(ip("10.0.2.254")),
            port: None,
            source: Source::Static,
        });
        r.add(Route {
            prefix: net("192.168.0.0/16"),
            next_hop: Some(ip("10.0.1.9")),
            port: None,
            source: Source::Static,
        });
        r
    }

    #[test]
    fn longest_prefix_wins() {
        let r = rib();
        assert_eq!(r.lookup(ip("10.0.1.7")).unwrap().port, 0);
        assert_eq!(
            r.lookup(ip("192.168.4.4")).unwrap().next_hop,
            Some(ip("10.0.1.9"))
        );
        assert_eq!(r.lookup(ip("192.168.4.4")).unwrap().port, 0);
        let d = r.lookup(ip("8.8.8.8")).unwrap();
        assert_eq!((d.port, d.next_hop), (1, Some(ip("10.0.2.254"))));
    }

    #[test]
    fn unresolvable_next_hop_is_not_installed_and_distance_decides() {
        let mut r = rib();
        r.add(Route {
            prefix: net("172.16.0.0/12"),
            next_hop: Some(ip("10.9.9.9")),
            port: None,
            source: Source::Static,
        });
        // 10.9.9.9 resolves only through the default route, which is allowed (recursive).
        assert!(r.lookup(ip("172.16.1.1")).is_some());
        let mut r = Rib::new();
        r.add(Route {
            prefix: net("172.16.0.0/12"),
            next_hop: Some(ip("10.9.9.9")),
            port: None,
            source: Source::Static,
        });
        assert!(r.lookup(ip("172.16.1.1")).is_none());

        let mut r = rib();
        r.add(Route {
            prefix: net("192.168.0.0/16"),
            next_hop: Some(ip("10.0.2.1")),
            port: None,
            source: Source::Ebgp,
        });
        assert_eq!(r.lookup(ip("192.168.1.1")).unwrap().source, Source::Static);
        assert!(r.remove(net("192.168.0.0/16"), Source::Static));
        assert_eq!(r.lookup(ip("192.168.1.1")).unwrap().source, Source::Ebgp);
    }

    #[test]
    fn no_route() {
        let mut r = Rib::new();
        r.add(Route {
            prefix: net("10.0.1.0/24"),
            next_hop: None,
            port: Some(0),
            source: Source::Connected,
        });
        assert!(r.lookup(ip("10.0.2.1")).is_none());
    }
}
