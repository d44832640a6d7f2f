//! A BGP speaker, sans-IO: its sessions, its RIB and what it has sent each peer
//! (Adj-RIB-Out). Events in (connections, octets, time), [`Out`] out: connections to make,
//! octets to send, and changes of best paths for the forwarding table. A session that comes
//! up is sent the whole table; a change of a best path is sent to every peer whose export it
//! changes, announcements with the same attributes in one UPDATE.
//!
//! MRAI (RFC 4271 §9.2.1.1), per neighbour (`mrai_ms`, 0 for none): after an UPDATE that
//! announces, further announcements to that peer wait until the interval has passed, and then
//! go together (one timer per peer, a technique the section allows). Withdrawals are not held
//! back, as RFC 1771 had it and as most implementations do, so that a dead path leaves the
//! network at once. No jitter is applied to the interval.

use crate::rib::{Attrs, Change, Peer, PeerId, Policy, Rib};
use crate::session::{Action, Config, Session, State};
use crate::update;
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn default_hold() -> u16 {
    90
}

/// A neighbour of the topology's `bgp` table.
#[derive(Debug, Clone, Deserialize)]
pub struct NeighbourConfig {
    pub address: Ipv4Addr,
    pub remote_as: u32,
    /// Our address on the session (the lab fills it in from the port on the peer's subnet).
    #[serde(default)]
    pub local_address: Option<Ipv4Addr>,
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    #[serde(default)]
    pub passive: bool,
    #[serde(default)]
    pub import: Option<Policy>,
    #[serde(default)]
    pub export: Option<Policy>,
    #[serde(default)]
    pub next_hop_self: bool,
    /// BFD with the neighbour (RFC 5880/5881); its going down takes the session down.
    #[serde(default)]
    pub bfd: Option<crate::bfd::BfdConfig>,
    /// MinRouteAdvertisementInterval, milliseconds (0: announce at once). RFC 4271 suggests
    /// 30 s for eBGP and 5 s for iBGP.
    #[serde(default)]
    pub mrai_ms: u64,
}

/// A speaker's configuration (the topology's `bgp` table of a router).
#[derive(Debug, Clone, Deserialize)]
pub struct SpeakerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    #[serde(default)]
    pub networks: Vec<Ipv4Net>,
    #[serde(default)]
    pub neighbours: Vec<NeighbourConfig>,
    /// ConnectRetry, seconds (at least 4: a connection attempt is given 3 s).
    #[serde(default = "default_retry")]
    pub connect_retry_s: u64,
}

fn default_retry() -> u64 {
    5
}

/// Which of a peer's connections: the one we opened, or the one the peer opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    Out,
    In,
}

/// A connection: the peer and who opened it.
pub type Conn = (PeerId, Dir);

/// What the speaker wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Open a connection to the peer (it becomes `(peer, Dir::Out)`).
    Connect(PeerId),
    Send(Conn, Vec<u8>),
    Close(Conn),
    /// A best path changed: install or remove it.
    Route(Change),
    Up(PeerId),
    Down(PeerId, String),
}

/// The speaker.
#[derive(Debug)]
pub struct Speaker {
    pub rib: Rib,
    sessions: Vec<Session>,
    /// The connection each session runs on.
    dirs: Vec<Dir>,
    /// A second connection with the same peer while a collision is not resolved (§6.8):
    /// its session, on the other direction.
    second: Vec<Option<Session>>,
    /// What each peer has from us.
    sent: Vec<HashMap<Ipv4Net, Arc<Attrs>>>,
    /// Prefixes to look at again for each peer.
    dirty: Vec<BTreeSet<Ipv4Net>>,
    /// Each peer's MinRouteAdvertisementInterval, and until when announcements to it wait.
    mrai: Vec<Duration>,
    mrai_until: Vec<Option<Instant>>,
    /// Announcements that waited for MRAI, per peer, and the prefixes waiting now.
    mrai_held: Vec<u64>,
    held: Vec<BTreeSet<Ipv4Net>>,
}

impl Speaker {
    pub fn new(cfg: &SpeakerConfig) -> anyhow::Result<Self> {
        let mut peers = Vec::new();
        let mut sessions = Vec::new();
        for n in &cfg.neighbours {
            let Some(local) = n.local_address else {
                anyhow::bail!("neighbour {}: no local address", n.address);
            };
            if matches!(n.hold_time, 1 | 2) {
                anyhow::bail!(
                    "neighbour {}: hold time {} (0 or at least 3)",
                    n.address,
                    n.hold_time
                );
            }
            if let Some(b) = &n.bfd {
                b.check()
                    .map_err(|e| anyhow::anyhow!("neighbour {}: {e}", n.address))?;
            }
            let mut s = Config::new(cfg.asn, n.remote_as, cfg.router_id);
            s.hold_time = n.hold_time;
            s.passive = n.passive;
            s.connect_retry = Duration::from_secs(cfg.connect_retry_s.max(4));
            sessions.push(Session::new(s));
            peers.push(Peer {
                addr: n.address,
                remote_as: n.remote_as,
                router_id: Ipv4Addr::UNSPECIFIED,
                import: n.import.clone(),
                export: n.export.clone(),
                local_addr: local,
                next_hop_self: n.next_hop_self,
            });
        }
        let n = peers.len();
        let mrai = cfg
            .neighbours
            .iter()
            .map(|n| Duration::from_millis(n.mrai_ms))
            .collect();
        let mut rib = Rib::new(cfg.asn, cfg.router_id, peers);
        for net in &cfg.networks {
            rib.originate(*net, Attrs::local(Ipv4Addr::UNSPECIFIED));
        }
        Ok(Self {
            rib,
            dirs: vec![Dir::Out; n],
            second: (0..n).map(|_| None).collect(),
            sessions,
            sent: vec![HashMap::new(); n],
            dirty: vec![BTreeSet::new(); n],
            mrai,
            mrai_until: vec![None; n],
            mrai_held: vec![0; n],
            held: vec![BTreeSet::new(); n],
        })
    }

    /// Originates `prefix` (as a `networks` entry does) and tells the peers.
    pub fn originate(&mut self, now: Instant, prefix: Ipv4Net) -> Vec<Out> {
        let changes = self
            .rib
            .originate(prefix, Attrs::local(Ipv4Addr::UNSPECIFIED));
        self.changed(now, changes)
    }

    /// Stops originating `prefix` and tells the peers.
    pub fn unoriginate(&mut self, now: Instant, prefix: Ipv4Net) -> Vec<Out> {
        let changes = self.rib.unoriginate(prefix);
        self.changed(now, changes)
    }

    /// Marks what `changes` touched for every peer, then sends what is due.
    fn changed(&mut self, now: Instant, changes: Vec<Change>) -> Vec<Out> {
        for c in &changes {
            let prefix = match c {
                Change::Best { prefix, .. } | Change::Gone { prefix } => *prefix,
            };
            for d in &mut self.dirty {
                d.insert(prefix);
            }
        }
        let mut out: Vec<Out> = changes.into_iter().map(Out::Route).collect();
        out.extend(self.flush(now));
        out
    }

    /// The peer at `addr`, if it is one.
    pub fn peer(&self, addr: Ipv4Addr) -> Option<PeerId> {
        self.rib.peers.iter().position(|p| p.addr == addr)
    }

    pub fn session(&self, p: PeerId) -> &Session {
        &self.sessions[p]
    }

    pub fn peers(&self) -> usize {
        self.sessions.len()
    }

    /// Starts every session.
    pub fn start(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        for p in 0..self.sessions.len() {
            let acts = self.sessions[p].start(now);
            out.extend(self.handle(now, p, acts));
        }
        out
    }

    /// Our connection to peer `p` is up.
    pub fn on_connected(&mut self, now: Instant, p: PeerId) -> Vec<Out> {
        self.on_conn(now, p, Dir::Out)
    }

    /// Peer `p` connected to us.
    pub fn on_accepted(&mut self, now: Instant, p: PeerId) -> Vec<Out> {
        self.on_conn(now, p, Dir::In)
    }

    fn on_conn(&mut self, now: Instant, p: PeerId, dir: Dir) -> Vec<Out> {
        match self.sessions[p].state() {
            State::Idle if dir == Dir::In => {
                // A peer that connects while we wait out the idle hold: take it.
                let _ = self.sessions[p].start(now);
                self.dirs[p] = dir;
                let acts = self.sessions[p].on_connected(now);
                self.handle(now, p, acts)
            }
            State::Connect | State::Active => {
                // (Our own attempt, if it completes too, is a collision, resolved below.)
                self.dirs[p] = dir;
                let acts = self.sessions[p].on_connected(now);
                self.handle(now, p, acts)
            }
            State::OpenSent | State::OpenConfirm
                if self.second[p].is_none() && dir != self.dirs[p] =>
            {
                // Two connections: both go on until the OPENs tell which to keep.
                let mut s = Session::new(self.sessions[p].cfg.clone());
                s.cfg.passive = true;
                let _ = s.start(now);
                let acts = s.on_connected(now);
                self.second[p] = Some(s);
                acts.into_iter()
                    .filter_map(|a| match a {
                        Action::Send(b) => Some(Out::Send((p, dir), b)),
                        _ => None,
                    })
                    .collect()
            }
            _ => vec![Out::Close((p, dir))],
        }
    }

    pub fn on_closed(&mut self, now: Instant, (p, dir): Conn) -> Vec<Out> {
        if dir != self.dirs[p] {
            self.second[p] = None;
            return Vec::new();
        }
        let acts = self.sessions[p].on_closed(now);
        self.handle(now, p, acts)
    }

    pub fn on_bytes(&mut self, now: Instant, (p, dir): Conn, bytes: &[u8]) -> Vec<Out> {
        if dir != self.dirs[p] {
            let Some(s) = self.second[p].as_mut() else {
                return vec![Out::Close((p, dir))];
            };
            let acts = s.on_bytes(now, bytes);
            let mut out: Vec<Out> = acts
                .into_iter()
                .filter_map(|a| match a {
                    Action::Send(b) => Some(Out::Send((p, dir), b)),
                    Action::Close => Some(Out::Close((p, dir))),
                    _ => None,
                })
                .collect();
            if self.second[p]
                .as_ref()
                .is_some_and(|s| s.state() == State::Idle)
            {
                self.second[p] = None;
            }
            out.extend(self.resolve(now, p));
            return out;
        }
        let acts = self.sessions[p].on_bytes(now, bytes);
        let mut out = self.handle(now, p, acts);
        out.extend(self.resolve(now, p));
        out
    }

    /// A collision, once both connections have the peer's OPEN: the one opened by the side
    /// with the higher BGP Identifier stays, the other gets Cease (§6.8).
    fn resolve(&mut self, now: Instant, p: PeerId) -> Vec<Out> {
        let Some(second) = &self.second[p] else {
            return Vec::new();
        };
        let opened = |s: &Session| matches!(s.state(), State::OpenConfirm | State::Established);
        if !(opened(&self.sessions[p]) || opened(second)) {
            return Vec::new();
        }
        let Some(peer_id) = self.sessions[p].peer_id().or(second.peer_id()) else {
            return Vec::new();
        };
        let ours_wins = u32::from(self.rib.router_id) > u32::from(peer_id);
        let keep = if ours_wins { Dir::Out } else { Dir::In };
        let mut out = Vec::new();
        let Some(mut second) = self.second[p].take() else {
            return out;
        };
        if self.dirs[p] == keep {
            let lose = self.dirs[p];
            let lose = if lose == Dir::Out { Dir::In } else { Dir::Out };
            for a in second.lose_collision(now) {
                match a {
                    Action::Send(b) => out.push(Out::Send((p, lose), b)),
                    Action::Close => out.push(Out::Close((p, lose))),
                    _ => {}
                }
            }
        } else {
            // The second connection wins: it becomes the session.
            let lose = self.dirs[p];
            std::mem::swap(&mut self.sessions[p], &mut second);
            self.sessions[p].cfg.passive = second.cfg.passive;
            self.dirs[p] = keep;
            for a in second.lose_collision(now) {
                match a {
                    Action::Send(b) => out.push(Out::Send((p, lose), b)),
                    Action::Close => out.push(Out::Close((p, lose))),
                    _ => {}
                }
            }
        }
        out
    }

    /// BFD saw the path to peer `p` die: its session goes down at once.
    pub fn link_down(&mut self, now: Instant, p: PeerId) -> Vec<Out> {
        let mut out = Vec::new();
        if self.second[p].take().is_some() {
            let other = if self.dirs[p] == Dir::Out {
                Dir::In
            } else {
                Dir::Out
            };
            out.push(Out::Close((p, other)));
        }
        let acts = self.sessions[p].link_down(now, "BFD: the neighbour is down");
        out.extend(self.handle(now, p, acts));
        out
    }

    pub fn poll(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        for p in 0..self.sessions.len() {
            let acts = self.sessions[p].poll(now);
            out.extend(self.handle(now, p, acts));
            let other = if self.dirs[p] == Dir::Out {
                Dir::In
            } else {
                Dir::Out
            };
            if let Some(s) = self.second[p].as_mut() {
                for a in s.poll(now) {
                    match a {
                        Action::Send(b) => out.push(Out::Send((p, other), b)),
                        Action::Close => out.push(Out::Close((p, other))),
                        _ => {}
                    }
                }
                if s.state() == State::Idle {
                    self.second[p] = None;
                }
            }
        }
        // Announcements whose MRAI has passed.
        out.extend(self.flush(now));
        out
    }

    pub fn poll_at(&self) -> Option<Instant> {
        let mrai = (0..self.sessions.len())
            .filter(|&p| !self.dirty[p].is_empty())
            .filter_map(|p| self.mrai_until[p]);
        self.sessions
            .iter()
            .chain(self.second.iter().flatten())
            .filter_map(Session::poll_at)
            .chain(mrai)
            .min()
    }

    /// Carries out a session's actions.
    fn handle(&mut self, now: Instant, p: PeerId, acts: Vec<Action>) -> Vec<Out> {
        let mut out = Vec::new();
        let mut changes = Vec::new();
        for a in acts {
            match a {
                Action::Connect => {
                    self.dirs[p] = Dir::Out;
                    out.push(Out::Connect(p))
                }
                Action::Send(b) => out.push(Out::Send((p, self.dirs[p]), b)),
                Action::Close => out.push(Out::Close((p, self.dirs[p]))),
                Action::RouteRefresh => {
                    self.sent[p].clear();
                    self.dirty[p].extend(self.rib.prefixes());
                }
                Action::Up => {
                    self.rib.peers[p].router_id =
                        self.sessions[p].peer_id().unwrap_or(Ipv4Addr::UNSPECIFIED);
                    self.sent[p].clear();
                    self.dirty[p].extend(self.rib.prefixes());
                    out.push(Out::Up(p));
                }
                Action::Down(why) => {
                    self.sent[p].clear();
                    self.dirty[p].clear();
                    self.mrai_until[p] = None;
                    self.held[p].clear();
                    changes.extend(self.rib.peer_down(p));
                    out.push(Out::Down(p, why));
                }
                Action::Update(u) => {
                    for w in &u.withdrawn {
                        changes.extend(self.rib.withdraw(p, *w));
                    }
                    match &u.attrs {
                        Some(a) => {
                            for n in &u.announced {
                                changes.extend(self.rib.announce(p, *n, a.clone()));
                            }
                        }
                        None => {
                            for n in &u.announced {
                                changes.extend(self.rib.withdraw(p, *n));
                            }
                        }
                    }
                }
            }
        }
        out.extend(self.changed(now, changes));
        out
    }

    /// Sends each Established peer what changed for it.
    fn flush(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        for p in 0..self.sessions.len() {
            if self.sessions[p].state() != State::Established || self.dirty[p].is_empty() {
                continue;
            }
            let prefixes = std::mem::take(&mut self.dirty[p]);
            let waiting = self.mrai_until[p].is_some_and(|t| t > now);
            let mut withdraw = Vec::new();
            // Grouped by attributes, which the prefixes of a group share in `sent`.
            let mut announce: Vec<(Arc<Attrs>, Vec<Ipv4Net>)> = Vec::new();
            for prefix in prefixes {
                let want = self.rib.export(p, &prefix);
                let had = self.sent[p].get(&prefix).map(|a| &**a);
                if want.as_ref() == had {
                    continue;
                }
                match want {
                    None => {
                        self.sent[p].remove(&prefix);
                        withdraw.push(prefix);
                    }
                    Some(_) if waiting => {
                        // MRAI: announced when the interval has passed.
                        if self.held[p].insert(prefix) {
                            self.mrai_held[p] += 1;
                        }
                        self.dirty[p].insert(prefix);
                    }
                    Some(a) => {
                        let shared = match announce.iter_mut().find(|(x, _)| **x == a) {
                            Some((x, v)) => {
                                v.push(prefix);
                                x.clone()
                            }
                            None => {
                                let x = Arc::new(a);
                                announce.push((x.clone(), vec![prefix]));
                                x
                            }
                        };
                        self.sent[p].insert(prefix, shared);
                    }
                }
            }
            let (asn4, ibgp) = (self.sessions[p].asn4(), self.sessions[p].cfg.ibgp());
            // At most 500 prefixes an UPDATE (2,500 octets of NLRI: under 4,096 with any
            // attributes we send).
            for chunk in withdraw.chunks(500) {
                let u = update::build(chunk, None, asn4, ibgp);
                let acts = self.sessions[p].send_update(now, u);
                out.extend(acts.into_iter().filter_map(|a| match a {
                    Action::Send(b) => Some(Out::Send((p, self.dirs[p]), b)),
                    _ => None,
                }));
            }
            if !waiting {
                self.held[p].clear();
            }
            if !announce.is_empty() && !self.mrai[p].is_zero() {
                self.mrai_until[p] = Some(now + self.mrai[p]);
            }
            for (a, nets) in &announce {
                for chunk in nets.chunks(500) {
                    let u = update::build(&[], Some((a, chunk)), asn4, ibgp);
                    let acts = self.sessions[p].send_update(now, u);
                    out.extend(acts.into_iter().filter_map(|a| match a {
                        Action::Send(b) => Some(Out::Send((p, self.dirs[p]), b)),
                        _ => None,
                    }));
                }
            }
        }
        out
    }

    /// `d11 show NODE bgp`: each neighbour's session and routes.
    pub fn show(&self, now: Instant) -> Value {
        json!(self
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = s.show(now);
                let r = &self.rib.routes[i];
                v["neighbour"] = json!(self.rib.peers[i].addr.to_string());
                v["prefixes_received"] = json!(r.received);
                v["prefixes_accepted"] = json!(r.accepted);
                v["prefixes_refused"] = json!(r.refused_policy + r.refused_loop);
                v["prefixes_advertised"] = json!(self.sent[i].len());
                v["mrai_ms"] = json!(self.mrai[i].as_millis() as u64);
                v["announcements_held_by_mrai"] = json!(self.mrai_held[i]);
                v
            })
            .collect::<Vec<_>>())
    }
}
