//! The routes a speaker knows, sans-IO: what each peer announced and import policy accepted
//! (Adj-RIB-In), the routes it originates, and for each prefix the best path by the decision
//! process of RFC 4271 §9.1.2.2 (the Loc-RIB), with the step that decided it.
//!
//! Import: a path whose AS_PATH holds our own AS is refused (loop detection, §9.1.2); an
//! eBGP peer's paths are refused without an import policy (RFC 8212); a policy's first
//! matching rule accepts or refuses and may set LOCAL_PREF, MED, communities or prepend.
//!
//! The decision, over the candidates for a prefix: a route of our own first; then the highest
//! LOCAL_PREF (100 when absent), the shortest AS_PATH (an AS_SET counts one), the lowest
//! ORIGIN, the lowest MED among paths from the same neighbouring AS (absent: 0), eBGP over
//! iBGP, the lowest cost to the next hop, the lowest BGP Identifier, the lowest peer address.

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A peer's index in the RIB.
pub type PeerId = usize;

/// NO_EXPORT (RFC 1997): not to be sent outside the AS.
pub const NO_EXPORT: u32 = 0xFFFF_FF01;
/// NO_ADVERTISE (RFC 1997): not to be sent to any peer.
pub const NO_ADVERTISE: u32 = 0xFFFF_FF02;

/// An AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub set: bool,
    pub asns: Vec<u32>,
}

/// The attributes of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    /// 0 IGP, 1 EGP, 2 INCOMPLETE.
    pub origin: u8,
    pub as_path: Vec<Segment>,
    pub next_hop: Ipv4Addr,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
}

impl Attrs {
    /// A route of our own: IGP origin, an empty AS_PATH.
    pub fn local(next_hop: Ipv4Addr) -> Self {
        Self {
            origin: 0,
            as_path: Vec::new(),
            next_hop,
            med: None,
            local_pref: None,
            communities: Vec::new(),
        }
    }

    /// The AS_PATH length for the decision: each AS of a sequence, one for a set (§9.1.2.2).
    pub fn path_len(&self) -> usize {
        self.as_path
            .iter()
            .map(|s| if s.set { 1 } else { s.asns.len() })
            .sum()
    }

    pub fn contains_as(&self, asn: u32) -> bool {
        self.as_path.iter().any(|s| s.asns.contains(&asn))
    }

    /// The neighbouring AS the path came through (the first of the AS_PATH).
    pub fn neighbour_as(&self) -> Option<u32> {
        self.as_path
            .first()
            .filter(|s| !s.set)
            .and_then(|s| s.asns.first().copied())
    }

    /// `count` copies of `asn` in front (AS-path prepending, and an eBGP speaker's own AS).
    pub fn prepend(&mut self, asn: u32, count: usize) {
        if count == 0 {
            return;
        }
        match self.as_path.first_mut() {
            Some(s) if !s.set => {
                s.asns.splice(0..0, std::iter::repeat_n(asn, count));
            }
            _ => self.as_path.insert(
                0,
                Segment {
                    set: false,
                    asns: vec![asn; count],
                },
            ),
        }
    }

    pub fn as_path_string(&self) -> String {
        self.as_path
            .iter()
            .map(|s| {
                let a: Vec<String> = s.asns.iter().map(|a| a.to_string()).collect();
                if s.set {
                    format!("{{{}}}", a.join(","))
                } else {
                    a.join(" ")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A prefix list entry: `net` and the prefixes inside it up to length `le` (its own length
/// if not given).
#[derive(Debug, Clone, Deserialize)]
pub struct PrefixMatch {
    pub net: Ipv4Net,
    #[serde(default)]
    pub le: Option<u8>,
}

impl PrefixMatch {
    pub fn matches(&self, p: &Ipv4Net) -> bool {
        self.net.contains(&p.network())
            && p.prefix_len() >= self.net.prefix_len()
            && p.prefix_len() <= self.le.unwrap_or(self.net.prefix_len())
    }
}

/// One rule of a policy: what it matches (every condition given must hold) and what it does.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    /// Prefixes it applies to (any of them); empty: every prefix.
    #[serde(default)]
    pub prefixes: Vec<PrefixMatch>,
    /// A community the path must carry.
    #[serde(default)]
    pub community: Option<u32>,
    /// Accept (default) or refuse what matches.
    #[serde(default = "yes")]
    pub accept: bool,
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub med: Option<u32>,
    /// Our AS this many times more in front (export).
    #[serde(default)]
    pub prepend: u8,
    #[serde(default)]
    pub add_communities: Vec<u32>,
}

fn yes() -> bool {
    true
}

/// A policy: the first matching rule decides; with none, `default_accept`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub default_accept: bool,
}

impl Policy {
    /// Accept everything as it is.
    pub fn accept_all() -> Self {
        Self {
            rules: Vec::new(),
            default_accept: true,
        }
    }

    /// Whether `prefix` with `attrs` passes, and `attrs` as the rule leaves them.
    pub fn apply(&self, local_as: u32, prefix: &Ipv4Net, attrs: &mut Attrs) -> bool {
        for r in &self.rules {
            let prefix_ok = r.prefixes.is_empty() || r.prefixes.iter().any(|m| m.matches(prefix));
            let community_ok = r.community.is_none_or(|c| attrs.communities.contains(&c));
            if !(prefix_ok && community_ok) {
                continue;
            }
            if !r.accept {
                return false;
            }
            if let Some(lp) = r.local_pref {
                attrs.local_pref = Some(lp);
            }
            if let Some(m) = r.med {
                attrs.med = Some(m);
            }
            attrs.prepend(local_as, usize::from(r.prepend));
            for c in &r.add_communities {
                if !attrs.communities.contains(c) {
                    attrs.communities.push(*c);
                }
            }
            return true;
        }
        self.default_accept
    }
}

/// A peer as the RIB sees it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Ipv4Addr,
    pub remote_as: u32,
    /// Its BGP Identifier, once the session is up.
    pub router_id: Ipv4Addr,
    /// `None` on an eBGP session: nothing accepted (RFC 8212). iBGP: everything if `None`.
    pub import: Option<Policy>,
    pub export: Option<Policy>,
    /// Our address on the session (the next hop we give an eBGP peer, or with next-hop-self).
    pub local_addr: Ipv4Addr,
    /// iBGP: our own address as the next hop of what we pass on.
    pub next_hop_self: bool,
}

/// Why a path is best.
pub type Why = &'static str;

/// A candidate: the peer, its path's attributes, the cost to its next hop.
type Candidate<'a> = (PeerId, &'a Attrs, u32);
/// One step of the decision: which candidates stay.
type Step<'s> = dyn Fn(&[Candidate]) -> Vec<bool> + 's;

/// A change of the best path for a prefix, for the forwarding table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Forward `prefix` to `next_hop` (`None`: a route of our own, nothing to install).
    Best {
        prefix: Ipv4Net,
        next_hop: Option<Ipv4Addr>,
        from: Option<PeerId>,
    },
    /// No path left for `prefix`.
    Gone { prefix: Ipv4Net },
}

/// Counters of a peer's routes.
#[derive(Debug, Clone, Default)]
pub struct PeerRoutes {
    pub received: u64,
    pub accepted: u64,
    pub refused_policy: u64,
    pub refused_loop: u64,
}

/// The paths of one prefix, one per peer, in the peers' order: a vector, as most prefixes
/// have one or two (a BTreeMap's node reserves room for eleven), each path's attributes shared
/// with the prefixes that arrived with the same ones.
#[derive(Debug, Default, Clone)]
struct Paths(Vec<(PeerId, Arc<Attrs>)>);

impl Paths {
    fn get(&self, peer: &PeerId) -> Option<&Attrs> {
        self.0.iter().find(|(p, _)| p == peer).map(|(_, a)| &**a)
    }

    fn contains_key(&self, peer: &PeerId) -> bool {
        self.0.iter().any(|(p, _)| p == peer)
    }

    fn insert(&mut self, peer: PeerId, attrs: Arc<Attrs>) {
        match self.0.binary_search_by_key(&peer, |(p, _)| *p) {
            Ok(i) => self.0[i].1 = attrs,
            Err(i) => self.0.insert(i, (peer, attrs)),
        }
    }

    fn remove(&mut self, peer: &PeerId) -> Option<Arc<Attrs>> {
        let i = self.0.iter().position(|(p, _)| p == peer)?;
        Some(self.0.remove(i).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (PeerId, &Attrs)> {
        self.0.iter().map(|(p, a)| (*p, &**a))
    }
}

/// The RIB of one speaker.
#[derive(Debug)]
pub struct Rib {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub peers: Vec<Peer>,
    /// The cost to reach a next hop (0 connected); a path whose next hop cannot be reached
    /// is not a candidate.
    pub igp_cost: fn(Ipv4Addr) -> Option<u32>,
    adj_in: HashMap<Ipv4Net, Paths>,
    own: HashMap<Ipv4Net, Attrs>,
    /// The attributes stored last: the next prefix with the same ones shares them (the
    /// prefixes of one UPDATE usually do).
    shared: Option<Arc<Attrs>>,
    /// The best path of each prefix: its source, why, and the next hop it had then.
    best: HashMap<Ipv4Net, (Option<PeerId>, Why, Ipv4Addr)>,
    pub routes: Vec<PeerRoutes>,
}

/// Every next hop reachable at cost 0 (a RIB whose caller has no IGP).
fn flat(_: Ipv4Addr) -> Option<u32> {
    Some(0)
}

impl Rib {
    pub fn new(local_as: u32, router_id: Ipv4Addr, peers: Vec<Peer>) -> Self {
        let n = peers.len();
        Self {
            local_as,
            router_id,
            peers,
            igp_cost: flat,
            adj_in: HashMap::new(),
            own: HashMap::new(),
            shared: None,
            best: HashMap::new(),
            routes: vec![PeerRoutes::default(); n],
        }
    }

    fn ebgp(&self, p: PeerId) -> bool {
        self.peers[p].remote_as != self.local_as
    }

    /// A prefix we originate.
    pub fn originate(&mut self, prefix: Ipv4Net, attrs: Attrs) -> Vec<Change> {
        self.own.insert(prefix, attrs);
        self.decide(prefix)
    }

    /// Stops originating `prefix`.
    pub fn unoriginate(&mut self, prefix: Ipv4Net) -> Vec<Change> {
        if self.own.remove(&prefix).is_none() {
            return Vec::new();
        }
        self.decide(prefix)
    }

    /// A path from `peer` (an UPDATE's NLRI with its attributes): import, then decide.
    pub fn announce(&mut self, peer: PeerId, prefix: Ipv4Net, mut attrs: Attrs) -> Vec<Change> {
        self.routes[peer].received += 1;
        let refuse = |me: &mut Self, loop_: bool| {
            if loop_ {
                me.routes[peer].refused_loop += 1;
            } else {
                me.routes[peer].refused_policy += 1;
            }
            // An implicit withdrawal of what the peer had for the prefix (RFC 4271 §9).
            me.withdraw(peer, prefix)
        };
        if attrs.contains_as(self.local_as) {
            return refuse(self, true);
        }
        let ok = match (&self.peers[peer].import, self.ebgp(peer)) {
            (Some(p), _) => p.apply(self.local_as, &prefix, &mut attrs),
            (None, true) => false,
            (None, false) => true,
        };
        if !ok {
            return refuse(self, false);
        }
        self.routes[peer].accepted += 1;
        let attrs = match &self.shared {
            Some(s) if **s == attrs => s.clone(),
            _ => {
                let s = Arc::new(attrs);
                self.shared = Some(s.clone());
                s
            }
        };
        self.adj_in.entry(prefix).or_default().insert(peer, attrs);
        self.decide(prefix)
    }

    /// `peer` withdrew `prefix`.
    pub fn withdraw(&mut self, peer: PeerId, prefix: Ipv4Net) -> Vec<Change> {
        let Some(m) = self.adj_in.get_mut(&prefix) else {
            return Vec::new();
        };
        if m.remove(&peer).is_none() {
            return Vec::new();
        }
        if m.is_empty() {
            self.adj_in.remove(&prefix);
        }
        self.decide(prefix)
    }

    /// `peer`'s session went down: all its paths go.
    pub fn peer_down(&mut self, peer: PeerId) -> Vec<Change> {
        let prefixes: Vec<Ipv4Net> = self
            .adj_in
            .iter()
            .filter(|(_, m)| m.contains_key(&peer))
            .map(|(p, _)| *p)
            .collect();
        let mut out = Vec::new();
        for p in prefixes {
            out.extend(self.withdraw(peer, p));
        }
        out
    }

    /// The best path for `prefix`: its source (`None` our own), its attributes, and why.
    pub fn best(&self, prefix: &Ipv4Net) -> Option<(Option<PeerId>, &Attrs, Why)> {
        let (from, why, _) = self.best.get(prefix)?;
        let attrs = match from {
            None => self.own.get(prefix)?,
            Some(p) => self.adj_in.get(prefix)?.get(p)?,
        };
        Some((*from, attrs, why))
    }

    /// Every prefix with a best path.
    pub fn prefixes(&self) -> Vec<Ipv4Net> {
        let mut v: Vec<Ipv4Net> = self.best.keys().copied().collect();
        v.sort();
        v
    }

    /// Runs the decision for `prefix`; the change, if the best path or its next hop changed.
    fn decide(&mut self, prefix: Ipv4Net) -> Vec<Change> {
        let old = self.best.get(&prefix).map(|(f, _, nh)| (*f, *nh));
        let Some((from, why)) = self.choose(&prefix) else {
            return match self.best.remove(&prefix) {
                Some(_) => vec![Change::Gone { prefix }],
                None => Vec::new(),
            };
        };
        let nh = match from {
            None => self.own[&prefix].next_hop,
            Some(p) => self
                .adj_in
                .get(&prefix)
                .and_then(|m| m.get(&p))
                .map_or(Ipv4Addr::UNSPECIFIED, |a| a.next_hop),
        };
        self.best.insert(prefix, (from, why, nh));
        if old == Some((from, nh)) {
            return Vec::new();
        }
        vec![Change::Best {
            prefix,
            next_hop: from.map(|_| nh),
            from,
        }]
    }

    /// The decision process over the candidates for `prefix`.
    fn choose(&self, prefix: &Ipv4Net) -> Option<(Option<PeerId>, Why)> {
        if self.own.contains_key(prefix) {
            return Some((None, "a route of our own"));
        }
        let paths = self.adj_in.get(prefix)?;
        // Candidates: paths whose next hop can be reached, with its cost.
        let mut c: Vec<Candidate> = paths
            .iter()
            .filter_map(|(p, a)| (self.igp_cost)(a.next_hop).map(|cost| (p, a, cost)))
            .collect();
        if c.is_empty() {
            return None;
        }
        if c.len() == 1 {
            return Some((Some(c[0].0), "the only path"));
        }
        let lp = |a: &Attrs| a.local_pref.unwrap_or(100);
        let steps: [(Why, &Step); 7] = [
            ("the highest LOCAL_PREF", &|c| {
                let m = c.iter().map(|x| lp(x.1)).max().unwrap_or(0);
                c.iter().map(|x| lp(x.1) == m).collect()
            }),
            ("the shortest AS_PATH", &|c| {
                let m = c.iter().map(|x| x.1.path_len()).min().unwrap_or(0);
                c.iter().map(|x| x.1.path_len() == m).collect()
            }),
            ("the lowest ORIGIN", &|c| {
                let m = c.iter().map(|x| x.1.origin).min().unwrap_or(0);
                c.iter().map(|x| x.1.origin == m).collect()
            }),
            ("the lowest MED from the same AS", &|c| {
                c.iter()
                    .map(|x| {
                        !c.iter().any(|y| {
                            y.1.neighbour_as() == x.1.neighbour_as()
                                && y.1.med.unwrap_or(0) < x.1.med.unwrap_or(0)
                        })
                    })
                    .collect()
            }),
            ("eBGP over iBGP", &|c| {
                let any_e = c.iter().any(|x| self.ebgp(x.0));
                c.iter().map(|x| !any_e || self.ebgp(x.0)).collect()
            }),
            ("the lowest cost to the next hop", &|c| {
                let m = c.iter().map(|x| x.2).min().unwrap_or(0);
                c.iter().map(|x| x.2 == m).collect()
            }),
            ("the lowest BGP Identifier", &|c| {
                let m = c.iter().map(|x| self.peers[x.0].router_id).min();
                c.iter()
                    .map(|x| Some(self.peers[x.0].router_id) == m)
                    .collect()
            }),
        ];
        for (why, keep) in steps {
            let k = keep(&c);
            if k.iter().all(|&b| b) {
                continue;
            }
            c = c
                .into_iter()
                .zip(k)
                .filter_map(|(x, k)| k.then_some(x))
                .collect();
            if c.len() == 1 {
                return Some((Some(c[0].0), why));
            }
        }
        c.sort_by_key(|x| self.peers[x.0].addr);
        Some((Some(c[0].0), "the lowest peer address"))
    }

    /// What peer `to` should have from us for `prefix`, by the rules of export (`None`: not
    /// to be sent, or to be withdrawn):
    /// - never back to the peer it came from;
    /// - NO_ADVERTISE to nobody, NO_EXPORT to no eBGP peer (RFC 1997);
    /// - a path learned over iBGP to no iBGP peer (RFC 4271 §9.2, no route reflection);
    /// - to an eBGP peer only through an export policy (RFC 8212), with our AS in front, our
    ///   address as the next hop, no LOCAL_PREF, and no MED but the policy's (§5.1.4);
    /// - to an iBGP peer through its policy if it has one, LOCAL_PREF kept (100 if none), the
    ///   next hop ours for our own routes or with next-hop-self.
    pub fn export(&self, to: PeerId, prefix: &Ipv4Net) -> Option<Attrs> {
        let (from, attrs, _) = self.best(prefix)?;
        if from == Some(to) {
            return None;
        }
        if attrs.communities.contains(&NO_ADVERTISE) {
            return None;
        }
        let peer = &self.peers[to];
        let to_ebgp = self.ebgp(to);
        if to_ebgp && attrs.communities.contains(&NO_EXPORT) {
            return None;
        }
        let from_ibgp = from.is_some_and(|f| !self.ebgp(f));
        if !to_ebgp && from_ibgp {
            return None;
        }
        let mut a = attrs.clone();
        if to_ebgp {
            a.local_pref = None;
            a.med = None;
            a.next_hop = peer.local_addr;
            let policy = peer.export.as_ref()?;
            if !policy.apply(self.local_as, prefix, &mut a) {
                return None;
            }
            a.prepend(self.local_as, 1);
        } else {
            a.local_pref = Some(a.local_pref.unwrap_or(100));
            if from.is_none() || peer.next_hop_self {
                a.next_hop = peer.local_addr;
            }
            if let Some(policy) = &peer.export {
                if !policy.apply(self.local_as, prefix, &mut a) {
                    return None;
                }
            }
        }
        Some(a)
    }

    /// `d11 show NODE bgp routes`: every path of every prefix, the best marked with why.
    pub fn show_routes(&self) -> Value {
        let mut prefixes: Vec<&Ipv4Net> = self.adj_in.keys().chain(self.own.keys()).collect();
        prefixes.sort();
        prefixes.dedup();
        let mut rows = Vec::new();
        for p in prefixes {
            let best = self.best.get(p);
            let row = |from: Option<PeerId>, a: &Attrs| {
                let is_best = best.is_some_and(|(f, _, _)| *f == from);
                let origin = ["IGP", "EGP", "INCOMPLETE"]
                    .get(usize::from(a.origin))
                    .copied()
                    .unwrap_or("?");
                json!({
                    "prefix": p.to_string(),
                    "from": from.map_or("local".to_string(), |i| self.peers[i].addr.to_string()),
                    "next_hop": a.next_hop.to_string(),
                    "as_path": a.as_path_string(),
                    "local_pref": a.local_pref,
                    "med": a.med,
                    "origin": origin,
                    "communities": a.communities,
                    "best": is_best,
                    "why": if is_best { best.map(|(_, w, _)| *w) } else { None },
                })
            };
            if let Some(a) = self.own.get(p) {
                rows.push(row(None, a));
            }
            for (peer, a) in self.adj_in.get(p).map(Paths::iter).into_iter().flatten() {
                rows.push(row(Some(peer), a));
            }
        }
        json!(rows)
    }
}
