//! The routing information base and the forwarding table built from it.
//!
//! Every source (connected subnets, static routes, BGP) adds candidate routes to the RIB; per
//! prefix the candidate with the lowest administrative distance whose next hop resolves is
//! installed in the FIB. Lookup is longest-prefix match: one hash map per prefix length, tried
//! from /32 down over the lengths that are in use.
//!
//! Changes are incremental: adding or removing a candidate looks again at its prefix only,
//! and, when what is installed for that prefix changed, at the routes whose next hop it
//! resolves (recursively), so a table of 100,000 BGP routes takes each change in constant time.

use crate::PortId;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
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

impl Route {
    /// The gateway this route resolves through the table, if it needs one.
    fn recursive(&self) -> Option<Ipv4Addr> {
        match (self.port, self.next_hop) {
            (None, Some(nh)) => Some(nh),
            _ => None,
        }
    }
}

/// An installed route: where a packet to `prefix` leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FibEntry {
    pub prefix: Ipv4Net,
    pub port: PortId,
    pub next_hop: Option<Ipv4Addr>,
    pub source: Source,
}

/// How many times one change may look at the same prefix again: a bound on routes whose next
/// hops resolve through each other in a loop.
const MAX_VISITS: u8 = 4;

#[derive(Debug)]
pub struct Rib {
    /// Per prefix, its candidates in order of distance.
    candidates: HashMap<Ipv4Net, Vec<Route>>,
    // (A fast hash, seeded per process: every lookup of every forwarded packet hashes here,
    // and the keys come from the configuration and from BGP neighbours we trust.)
    fib: Vec<foldhash::HashMap<u32, FibEntry>>,
    /// How many prefixes of each length are installed.
    per_length: [u32; 33],
    /// Bit n set when some /n is installed.
    lengths: u64,
    /// The prefixes with a candidate that resolves through each gateway.
    by_gateway: HashMap<Ipv4Addr, HashSet<Ipv4Net>>,
}

fn key(addr: Ipv4Addr, len: u8) -> u32 {
    let a = u32::from(addr);
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

impl Default for Rib {
    fn default() -> Self {
        Self::new()
    }
}

impl Rib {
    pub fn new() -> Self {
        Self {
            candidates: HashMap::new(),
            fib: vec![foldhash::HashMap::default(); 33],
            per_length: [0; 33],
            lengths: 0,
            by_gateway: HashMap::new(),
        }
    }

    /// Adds a candidate (replacing one with the same prefix and source) and updates the FIB.
    pub fn add(&mut self, route: Route) {
        let route = Route {
            prefix: route.prefix.trunc(),
            ..route
        };
        let prefix = route.prefix;
        let list = self.candidates.entry(prefix).or_default();
        let old = list
            .iter()
            .position(|r| r.source == route.source)
            .map(|i| list.remove(i));
        if let Some(nh) = route.recursive() {
            self.by_gateway.entry(nh).or_default().insert(prefix);
        }
        let at = list.partition_point(|r| r.source.distance() <= route.source.distance());
        list.insert(at, route);
        if let Some(old) = old {
            self.forget_gateway(&old);
        }
        self.refresh(prefix);
    }

    /// Withdraws the candidate for `prefix` from `source`; true if there was one.
    pub fn remove(&mut self, prefix: Ipv4Net, source: Source) -> bool {
        let prefix = prefix.trunc();
        let Some(list) = self.candidates.get_mut(&prefix) else {
            return false;
        };
        let Some(i) = list.iter().position(|r| r.source == source) else {
            return false;
        };
        let old = list.remove(i);
        if list.is_empty() {
            self.candidates.remove(&prefix);
        }
        self.forget_gateway(&old);
        self.refresh(prefix);
        true
    }

    /// Drops `old`'s prefix from its gateway's dependants unless another candidate of the
    /// prefix resolves through the same gateway.
    fn forget_gateway(&mut self, old: &Route) {
        let Some(nh) = old.recursive() else { return };
        let still = self
            .candidates
            .get(&old.prefix)
            .is_some_and(|l| l.iter().any(|r| r.recursive() == Some(nh)));
        if still {
            return;
        }
        if let Some(set) = self.by_gateway.get_mut(&nh) {
            set.remove(&old.prefix);
            if set.is_empty() {
                self.by_gateway.remove(&nh);
            }
        }
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

    /// The installed entry for exactly `prefix`.
    pub fn installed_for(&self, prefix: Ipv4Net) -> Option<&FibEntry> {
        let len = prefix.prefix_len();
        self.fib[usize::from(len)].get(&key(prefix.addr(), len))
    }

    /// Every candidate, in no particular order.
    pub fn candidates(&self) -> impl Iterator<Item = &Route> {
        self.candidates.values().flatten()
    }

    /// How many prefixes are installed.
    pub fn len(&self) -> usize {
        self.per_length.iter().map(|&n| n as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths == 0
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

    /// What `prefix` should have installed: its first candidate, by distance, that has a port.
    fn best(&self, prefix: Ipv4Net) -> Option<FibEntry> {
        self.candidates.get(&prefix)?.iter().find_map(|r| {
            let port = match (r.port, r.next_hop) {
                (Some(p), _) => p,
                // Resolve the gateway through what is installed (not through this prefix).
                (None, Some(nh)) => self.lookup(nh).filter(|e| e.prefix != prefix)?.port,
                (None, None) => return None,
            };
            Some(FibEntry {
                prefix,
                port,
                next_hop: r.next_hop,
                source: r.source,
            })
        })
    }

    /// Installs what `prefix` should have, then looks again at the prefixes whose gateways
    /// resolve through a prefix whose entry changed.
    fn refresh(&mut self, prefix: Ipv4Net) {
        let mut work = vec![prefix];
        let mut visits: HashMap<Ipv4Net, u8> = HashMap::new();
        while let Some(p) = work.pop() {
            let seen = visits.entry(p).or_default();
            if *seen >= MAX_VISITS {
                continue;
            }
            *seen += 1;
            let want = self.best(p);
            if self.installed_for(p).copied() == want {
                continue;
            }
            self.set(p, want);
            for (nh, deps) in &self.by_gateway {
                if p.contains(nh) {
                    work.extend(deps.iter().copied().filter(|d| *d != p));
                }
            }
        }
    }

    fn set(&mut self, prefix: Ipv4Net, entry: Option<FibEntry>) {
        let len = usize::from(prefix.prefix_len());
        let k = key(prefix.addr(), prefix.prefix_len());
        let had = match entry {
            Some(e) => self.fib[len].insert(k, e).is_some(),
            None => self.fib[len].remove(&k).is_some(),
        };
        match (had, entry.is_some()) {
            (false, true) => self.per_length[len] += 1,
            (true, false) => self.per_length[len] -= 1,
            _ => {}
        }
        if self.per_length[len] == 0 {
            self.lengths &= !(1u64 << len);
        } else {
            self.lengths |= 1u64 << len;
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

    #[test]
    fn a_change_of_the_gateways_route_moves_the_routes_through_it() {
        let mut r = rib();
        // Two BGP routes through 10.9.9.9, which only the default route resolves at first.
        for p in ["172.16.0.0/12", "203.0.113.0/24"] {
            r.add(Route {
                prefix: net(p),
                next_hop: Some(ip("10.9.9.9")),
                port: None,
                source: Source::Ebgp,
            });
        }
        assert_eq!(r.lookup(ip("203.0.113.5")).unwrap().port, 1);
        // A more specific static route for the gateway moves both.
        r.add(Route {
            prefix: net("10.9.9.0/24"),
            next_hop: Some(ip("10.0.1.9")),
            port: None,
            source: Source::Static,
        });
        assert_eq!(r.lookup(ip("203.0.113.5")).unwrap().port, 0);
        assert_eq!(r.lookup(ip("172.16.9.9")).unwrap().port, 0);
        // Without any way to the gateway they are uninstalled, and come back with it.
        assert!(r.remove(net("10.9.9.0/24"), Source::Static));
        assert!(r.remove(net("0.0.0.0/0"), Source::Static));
        assert!(r.lookup(ip("203.0.113.5")).is_none());
        assert_eq!(r.len(), 3);
        r.add(Route {
            prefix: net("10.9.0.0/16"),
            next_hop: None,
            port: Some(1),
            source: Source::Connected,
        });
        assert_eq!(r.lookup(ip("203.0.113.5")).unwrap().port, 1);
        assert_eq!(r.len(), 6);
        // Replacing a candidate keeps one per source.
        r.add(Route {
            prefix: net("203.0.113.0/24"),
            next_hop: Some(ip("10.0.1.1")),
            port: None,
            source: Source::Ebgp,
        });
        assert_eq!(
            r.candidates()
                .filter(|c| c.prefix == net("203.0.113.0/24"))
                .count(),
            1
        );
        assert_eq!(r.lookup(ip("203.0.113.5")).unwrap().port, 0);
    }

    #[test]
    fn gateways_that_resolve_through_each_other_end() {
        let mut r = Rib::new();
        r.add(Route {
            prefix: net("10.1.0.0/16"),
            next_hop: Some(ip("10.2.0.1")),
            port: None,
            source: Source::Static,
        });
        r.add(Route {
            prefix: net("10.2.0.0/16"),
            next_hop: Some(ip("10.1.0.1")),
            port: None,
            source: Source::Static,
        });
        assert!(r.is_empty());
    }
}
