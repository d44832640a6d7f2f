//! The neighbour (ARP) cache of a forwarding element.
//!
//! A packet for a next hop whose MAC is unknown waits in a short queue (as Linux's
//! `unres_qlen`) while ARP requests go out once a second, three times; after that the queue is
//! given back to the caller for ICMP host-unreachable. A resolved entry is used for
//! `REACHABLE`; after that it is still used but re-probed, and forgotten after `STALE_LIMIT`
//! without confirmation. The table holds at most `MAX_ENTRIES` (Linux's `gc_thresh3`): ARP
//! requests from strangers (each names a sender to remember) or packets to every address of
//! a connected prefix cannot grow it without bound. When it is full, a stranger's sender is
//! not remembered, and a next hop the element needs takes the place of the entry confirmed
//! longest ago; both are counted (`neighbour_table_full`).

use crate::PortId;
use foldhash::HashMap;
use serde::Serialize;
use smoltcp::wire::EthernetAddress;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const RETRY: Duration = Duration::from_secs(1);
pub const TRIES: u8 = 3;
pub const QUEUE: usize = 8;
pub const REACHABLE: Duration = Duration::from_secs(30);
pub const STALE_LIMIT: Duration = Duration::from_secs(60);
pub const MAX_ENTRIES: usize = 1024;

#[derive(Debug)]
enum State {
    Incomplete {
        queue: VecDeque<Vec<u8>>,
        tries: u8,
        next_try: Instant,
    },
    Reachable {
        mac: EthernetAddress,
        confirmed: Instant,
        probed: Option<Instant>,
    },
}

/// What the caller must do after [`Neighbours::resolve`].
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Send now to this MAC; if `probe`, also send an ARP request to refresh the entry.
    Known { mac: EthernetAddress, probe: bool },
    /// The frame was queued; if `request`, send an ARP request now.
    Queued { request: bool },
    /// The queue was full: the oldest frame was dropped to make room.
    QueuedDroppedOldest { request: bool },
    /// The table is full of next hops still being resolved: the frame was dropped.
    TableFull,
}

/// Work that timers produced.
#[derive(Debug, Default)]
pub struct Expired {
    /// (port, address) to send another ARP request for.
    pub retry: Vec<(PortId, Ipv4Addr)>,
    /// Frames whose next hop never answered.
    pub failed: Vec<(PortId, Vec<u8>)>,
}

/// A resolved entry's MAC while it may be used (up to [`STALE_LIMIT`]), and whether it is due
/// a probe (past [`REACHABLE`], none in the last [`RETRY`]), which is then noted as sent.
fn usable(e: &mut State, now: Instant) -> Option<(EthernetAddress, bool)> {
    let State::Reachable {
        mac,
        confirmed,
        probed,
    } = e
    else {
        return None;
    };
    let age = now.saturating_duration_since(*confirmed);
    if age < REACHABLE {
        return Some((*mac, false));
    }
    if age >= STALE_LIMIT {
        return None;
    }
    let probe = probed.is_none_or(|p| now.saturating_duration_since(p) >= RETRY);
    if probe {
        *probed = Some(now);
    }
    Some((*mac, probe))
}

#[derive(Debug, Default)]
pub struct Neighbours {
    entries: HashMap<(PortId, Ipv4Addr), State>,
    full: u64,
}

#[derive(Debug, Serialize)]
pub struct NeighbourView {
    pub port: PortId,
    pub address: Ipv4Addr,
    pub state: &'static str,
    pub mac: Option<String>,
    pub age_s: Option<f64>,
    pub queued: usize,
}

/// What [`Neighbours::solicit`] found.
enum Solicit<'a> {
    Full,
    Known {
        mac: EthernetAddress,
        probe: bool,
    },
    Wait {
        queue: &'a mut VecDeque<Vec<u8>>,
        request: bool,
    },
}

impl Neighbours {
    pub fn lookup(&self, port: PortId, addr: Ipv4Addr) -> Option<EthernetAddress> {
        match self.entries.get(&(port, addr)) {
            Some(State::Reachable { mac, .. }) => Some(*mac),
            _ => None,
        }
    }

    /// The MAC for `addr` on `port` if it may be used now, as [`resolve`](Self::resolve)
    /// finds it (and whether to probe it: the probe is counted as sent), with nothing queued
    /// or made when it may not.
    pub fn known(
        &mut self,
        now: Instant,
        port: PortId,
        addr: Ipv4Addr,
    ) -> Option<(EthernetAddress, bool)> {
        usable(self.entries.get_mut(&(port, addr))?, now)
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries not made, or made in another's place, because the table was full.
    pub fn full(&self) -> u64 {
        self.full
    }

    /// Makes room for one entry in a full table: the resolved entry confirmed longest ago
    /// goes. False if every entry is still being resolved.
    fn evict(&mut self) -> bool {
        let oldest = self
            .entries
            .iter()
            .filter_map(|(k, s)| match s {
                State::Reachable { confirmed, .. } => Some((*confirmed, *k)),
                State::Incomplete { .. } => None,
            })
            .min();
        match oldest {
            Some((_, k)) => {
                self.entries.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Finds the MAC for `addr` on `port`, or queues `frame` (a whole Ethernet frame whose
    /// destination MAC is to be filled in) until ARP answers.
    pub fn resolve(
        &mut self,
        now: Instant,
        port: PortId,
        addr: Ipv4Addr,
        frame: &[u8],
    ) -> Resolution {
        let (queue, request) = match self.solicit(now, port, addr) {
            Solicit::Full => return Resolution::TableFull,
            Solicit::Known { mac, probe } => return Resolution::Known { mac, probe },
            Solicit::Wait { queue, request } => (queue, request),
        };
        let dropped = if queue.len() >= QUEUE {
            queue.pop_front();
            true
        } else {
            false
        };
        queue.push_back(frame.to_vec());
        if dropped {
            Resolution::QueuedDroppedOldest { request }
        } else {
            Resolution::Queued { request }
        }
    }

    /// Whether an ARP request for `addr` should go out now, for a caller that has nothing to
    /// queue (a super-frame, cut and sent another way meanwhile): as [`resolve`](Self::resolve)
    /// would decide it, the entry made incomplete if it was not usable.
    pub fn wanted(&mut self, now: Instant, port: PortId, addr: Ipv4Addr) -> bool {
        matches!(
            self.solicit(now, port, addr),
            Solicit::Wait { request: true, .. }
        )
    }

    /// The entry for `addr`, made (incomplete) if there was none or it was stale: its MAC if
    /// usable, else its queue and whether to ask now.
    fn solicit(&mut self, now: Instant, port: PortId, addr: Ipv4Addr) -> Solicit<'_> {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&(port, addr)) {
            self.full += 1;
            if !self.evict() {
                return Solicit::Full;
            }
        }
        let e = self
            .entries
            .entry((port, addr))
            .or_insert_with(|| State::Incomplete {
                queue: VecDeque::new(),
                tries: 0,
                next_try: now,
            });
        if let Some((mac, probe)) = usable(e, now) {
            return Solicit::Known { mac, probe };
        }
        if let State::Reachable { .. } = e {
            *e = State::Incomplete {
                queue: VecDeque::new(),
                tries: 0,
                next_try: now,
            };
        }
        let State::Incomplete {
            queue,
            tries,
            next_try,
        } = e
        else {
            unreachable!("entry was made incomplete above")
        };
        let request = *tries == 0;
        if request {
            *tries = 1;
            *next_try = now + RETRY;
        }
        Solicit::Wait { queue, request }
    }

    /// Records `mac` for `addr`. With `create` false only an existing entry is updated (RFC 826:
    /// a node learns from every ARP packet only what it already knows, unless it is the target).
    /// Returns the frames that were waiting for it.
    pub fn learn(
        &mut self,
        now: Instant,
        port: PortId,
        addr: Ipv4Addr,
        mac: EthernetAddress,
        create: bool,
    ) -> Vec<Vec<u8>> {
        let key = (port, addr);
        if !self.entries.contains_key(&key) {
            if !create {
                return Vec::new();
            }
            if self.entries.len() >= MAX_ENTRIES {
                self.full += 1;
                return Vec::new();
            }
        }
        let reachable = State::Reachable {
            mac,
            confirmed: now,
            probed: None,
        };
        match self.entries.insert(key, reachable) {
            Some(State::Incomplete { queue, .. }) => queue.into(),
            _ => Vec::new(),
        }
    }

    pub fn poll_at(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|s| match s {
                State::Incomplete { next_try, .. } => Some(*next_try),
                State::Reachable { .. } => None,
            })
            .min()
    }

    /// Retries and expiries due at `now`; entries past the stale limit are forgotten.
    pub fn poll(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        self.entries.retain(|&(port, addr), s| match s {
            State::Incomplete {
                queue,
                tries,
                next_try,
            } => {
                if *next_try > now {
                    return true;
                }
                if *tries >= TRIES {
                    out.failed.extend(queue.drain(..).map(|f| (port, f)));
                    return false;
                }
                *tries += 1;
                *next_try = now + RETRY;
                out.retry.push((port, addr));
                true
            }
            State::Reachable { confirmed, .. } => {
                now.saturating_duration_since(*confirmed) < STALE_LIMIT
            }
        });
        out
    }

    pub fn view(&self, now: Instant) -> Vec<NeighbourView> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|(&(port, address), s)| match s {
                State::Incomplete { queue, .. } => NeighbourView {
                    port,
                    address,
                    state: "incomplete",
                    mac: None,
                    age_s: None,
                    queued: queue.len(),
                },
                State::Reachable { mac, confirmed, .. } => {
                    let age = now.saturating_duration_since(*confirmed);
                    NeighbourView {
                        port,
                        address,
                        state: if age < REACHABLE {
                            "reachable"
                        } else {
                            "stale"
                        },
                        mac: Some(d11_element::mac_string(&mac.0)),
                        age_s: Some(age.as_secs_f64()),
                        queued: 0,
                    }
                }
            })
            .collect();
        v.sort_by_key(|n| (n.port, u32::from(n.address)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

    #[test]
    fn queue_then_learn_releases_frames() {
        let mut n = Neighbours::default();
        let t = Instant::now();
        assert_eq!(
            n.resolve(t, 0, A, &[1]),
            Resolution::Queued { request: true }
        );
        assert_eq!(
            n.resolve(t, 0, A, &[2]),
            Resolution::Queued { request: false }
        );
        assert_eq!(n.learn(t, 0, A, MAC, true), vec![vec![1], vec![2]]);
        assert_eq!(
            n.resolve(t, 0, A, &[3]),
            Resolution::Known {
                mac: MAC,
                probe: false
            }
        );
        // Stale: still used, probed once per RETRY.
        let later = t + REACHABLE + Duration::from_millis(1);
        assert_eq!(
            n.resolve(later, 0, A, &[4]),
            Resolution::Known {
                mac: MAC,
                probe: true
            }
        );
        assert_eq!(
            n.resolve(later, 0, A, &[4]),
            Resolution::Known {
                mac: MAC,
                probe: false
            }
        );
    }

    /// `known` finds what `resolve` would send to, probes included, and makes or queues
    /// nothing where there is none.
    #[test]
    fn known_is_resolve_without_the_queue() {
        let mut n = Neighbours::default();
        let t = Instant::now();
        assert_eq!(n.known(t, 0, A), None);
        assert!(n.is_empty());
        n.resolve(t, 0, A, &[1]);
        assert_eq!(n.known(t, 0, A), None, "still being resolved");
        n.learn(t, 0, A, MAC, true);
        assert_eq!(n.known(t, 0, A), Some((MAC, false)));
        let stale = t + REACHABLE + Duration::from_millis(1);
        assert_eq!(n.known(stale, 0, A), Some((MAC, true)));
        assert_eq!(
            n.known(stale, 0, A),
            Some((MAC, false)),
            "probed once per RETRY"
        );
        assert_eq!(
            n.resolve(stale, 0, A, &[2]),
            Resolution::Known {
                mac: MAC,
                probe: false
            }
        );
        assert_eq!(n.known(t + STALE_LIMIT, 0, A), None);
    }

    #[test]
    fn retries_then_fails() {
        let mut n = Neighbours::default();
        let mut t = Instant::now();
        n.resolve(t, 0, A, &[9]);
        let mut retries = 0;
        loop {
            t = n.poll_at().expect("pending");
            let e = n.poll(t);
            retries += e.retry.len();
            if !e.failed.is_empty() {
                assert_eq!(e.failed, vec![(0, vec![9])]);
                break;
            }
        }
        assert_eq!(retries, usize::from(TRIES) - 1);
        assert!(n.poll_at().is_none());
    }

    #[test]
    fn queue_is_bounded_and_unsolicited_learning_needs_an_entry() {
        let mut n = Neighbours::default();
        let t = Instant::now();
        for i in 0..QUEUE {
            n.resolve(t, 0, A, &[i as u8]);
        }
        assert_eq!(
            n.resolve(t, 0, A, &[99]),
            Resolution::QueuedDroppedOldest { request: false }
        );
        assert!(n.learn(t, 1, A, MAC, false).is_empty());
        assert!(n.lookup(1, A).is_none());
    }

    #[test]
    fn the_table_is_bounded_and_a_next_hop_takes_the_oldest_place() {
        let mut n = Neighbours::default();
        let t = Instant::now();
        let addr = |i: usize| Ipv4Addr::from(0x0a00_0000 + i as u32);
        for i in 0..MAX_ENTRIES {
            n.learn(t + Duration::from_millis(i as u64), 0, addr(i), MAC, true);
        }
        assert_eq!(n.len(), MAX_ENTRIES);
        // A stranger's ARP is not remembered.
        assert!(n.learn(t, 0, addr(MAX_ENTRIES), MAC, true).is_empty());
        assert!(n.lookup(0, addr(MAX_ENTRIES)).is_none());
        assert_eq!((n.len(), n.full()), (MAX_ENTRIES, 1));
        // A next hop the element needs replaces the entry confirmed longest ago.
        let later = t + Duration::from_secs(1);
        assert_eq!(
            n.resolve(later, 0, addr(MAX_ENTRIES + 1), &[1]),
            Resolution::Queued { request: true }
        );
        assert!(n.lookup(0, addr(0)).is_none());
        assert!(n.lookup(0, addr(1)).is_some());
        assert_eq!((n.len(), n.full()), (MAX_ENTRIES, 2));
        // Known entries are updated as before, full or not.
        n.learn(
            later,
            0,
            addr(1),
            EthernetAddress([2, 0, 0, 0, 0, 9]),
            false,
        );
        assert_eq!(
            n.lookup(0, addr(1)),
            Some(EthernetAddress([2, 0, 0, 0, 0, 9]))
        );
        assert_eq!(n.full(), 2);
    }

    #[test]
    fn a_table_full_of_unresolved_next_hops_drops_the_frame() {
        let mut n = Neighbours::default();
        let t = Instant::now();
        for i in 0..MAX_ENTRIES {
            n.resolve(t, 0, Ipv4Addr::from(0x0a00_0000 + i as u32), &[0]);
        }
        assert_eq!(
            n.resolve(t, 0, Ipv4Addr::new(192, 0, 2, 1), &[1]),
            Resolution::TableFull
        );
        assert_eq!((n.len(), n.full()), (MAX_ENTRIES, 1));
    }
}
