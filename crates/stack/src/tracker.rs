//! TCP connections as the wire shows them: every segment the stack sends and receives is read
//! here, so `d11 show NODE tcp` can give what smoltcp keeps private: sequence numbers
//! (absolute and relative to the ISN, as Wireshark shows them), the windows each side
//! advertised (scaled), and how many segments were sent again.

use serde::Serialize;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpOption, TcpPacket,
};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

/// One connection, keyed by (local, remote).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conn {
    pub isn_local: u32,
    pub isn_remote: u32,
    /// Highest sequence number sent + 1 (SND.MAX).
    pub snd_max: u32,
    /// Highest acknowledgment received (SND.UNA as the wire shows it).
    pub snd_una: u32,
    /// Highest acknowledgment sent (RCV.NXT as the wire shows it).
    pub rcv_nxt: u32,
    /// Peer's last advertised window, scaled.
    pub snd_wnd: u32,
    /// Our last advertised window, scaled.
    pub rcv_wnd: u32,
    pub ws_local: Option<u8>,
    pub ws_remote: Option<u8>,
    pub mss_remote: Option<u16>,
    pub segments_out: u64,
    pub segments_in: u64,
    pub retransmits: u64,
    /// Peer segments whose data arrived behind later data: retransmitted or reordered.
    pub late_in: u64,
    pub resets_in: u64,
    #[serde(skip)]
    sent_any: bool,
    /// Highest sequence number received + 1.
    #[serde(skip)]
    rcv_max: u32,
    #[serde(skip)]
    received_any: bool,
    #[serde(skip)]
    last: Option<Instant>,
}

impl Conn {
    fn shift_out(&self) -> u8 {
        if self.ws_local.is_some() && self.ws_remote.is_some() {
            self.ws_local.unwrap_or(0)
        } else {
            0
        }
    }
    fn shift_in(&self) -> u8 {
        if self.ws_local.is_some() && self.ws_remote.is_some() {
            self.ws_remote.unwrap_or(0)
        } else {
            0
        }
    }
}

/// Keeps at most this many connections; the least recently active go first.
const MAX: usize = 8192;

#[derive(Debug, Default)]
pub struct Tracker {
    conns: HashMap<(SocketAddrV4, SocketAddrV4), Conn>,
    retransmits: u64,
    late_in: u64,
    /// When [`Tracker::prune`] next looks (it scans every connection: once a second at most).
    next_prune: Option<Instant>,
}

/// How long a tracked connection (here and in the recovery) may stay silent before it is
/// forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(120);

/// How often the prunes scan their tables. They run at every poll; a scan of every connection
/// at every poll made an endpoint that had closed a few thousand connections in the last two
/// minutes spend most of its time there (see docs/perf.md, the balancer's profile).
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Whether a prune due at `next` runs at `now`; if so, the next one is scheduled.
pub(crate) fn prune_due(next: &mut Option<Instant>, now: Instant) -> bool {
    if next.is_some_and(|t| now < t) {
        return false;
    }
    *next = Some(now + PRUNE_EVERY);
    true
}

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Tracker {
    pub fn get(&self, local: SocketAddrV4, remote: SocketAddrV4) -> Option<&Conn> {
        self.conns.get(&(local, remote))
    }

    pub fn total_retransmits(&self) -> u64 {
        self.retransmits
    }

    pub fn total_late_in(&self) -> u64 {
        self.late_in
    }

    /// Reads one Ethernet frame; anything that is not a well-formed TCP/IPv4 segment is ignored.
    pub fn observe(&mut self, now: Instant, frame: &[u8], dir: Dir) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return;
        };
        if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
            return;
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            return;
        };
        let (src, dst): (Ipv4Addr, Ipv4Addr) = (ip.src_addr(), ip.dst_addr());
        let a = SocketAddrV4::new(src, tcp.src_port());
        let b = SocketAddrV4::new(dst, tcp.dst_port());
        let key = if dir == Dir::Out { (a, b) } else { (b, a) };
        if !self.conns.contains_key(&key) && self.conns.len() >= MAX {
            // Full: the stalest of a few (a sample, not a scan of every connection at every
            // new one: the table is full exactly when connections come and go fastest).
            if let Some(oldest) = self
                .conns
                .iter()
                .take(8)
                .min_by_key(|(_, c)| c.last)
                .map(|(k, _)| *k)
            {
                self.conns.remove(&oldest);
            }
        }
        let c = self.conns.entry(key).or_default();
        c.last = Some(now);
        let mut ws = None;
        let mut mss = None;
        let mut opts = tcp.options();
        while !opts.is_empty() {
            let Ok((rest, opt)) = TcpOption::parse(opts) else {
                break;
            };
            match opt {
                TcpOption::WindowScale(s) => ws = Some(s),
                TcpOption::MaxSegmentSize(m) => mss = Some(m),
                TcpOption::EndOfList => break,
                _ => {}
            }
            opts = rest;
        }
        let seq = tcp.seq_number().0 as u32;
        let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
        match dir {
            Dir::Out => {
                c.segments_out += 1;
                if tcp.syn() {
                    c.isn_local = seq;
                    c.ws_local = ws;
                }
                let end = seq.wrapping_add(len);
                if len > 0 {
                    if c.sent_any && !after(end, c.snd_max) {
                        c.retransmits += 1;
                        self.retransmits += 1;
                    }
                    if !c.sent_any || after(end, c.snd_max) {
                        c.snd_max = end;
                    }
                    c.sent_any = true;
                }
                if tcp.ack() {
                    c.rcv_nxt = tcp.ack_number().0 as u32;
                }
                let w = u32::from(tcp.window_len());
                c.rcv_wnd = if tcp.syn() { w } else { w << c.shift_out() };
            }
            Dir::In => {
                c.segments_in += 1;
                if tcp.syn() {
                    c.isn_remote = seq;
                    c.ws_remote = ws;
                    c.mss_remote = mss;
                }
                if tcp.rst() {
                    c.resets_in += 1;
                }
                let end = seq.wrapping_add(len);
                if len > 0 {
                    if c.received_any && !after(end, c.rcv_max) {
                        c.late_in += 1;
                        self.late_in += 1;
                    }
                    if !c.received_any || after(end, c.rcv_max) {
                        c.rcv_max = end;
                    }
                    c.received_any = true;
                }
                if tcp.ack() {
                    let ack = tcp.ack_number().0 as u32;
                    if after(ack, c.snd_una) || c.snd_una == 0 {
                        c.snd_una = ack;
                    }
                }
                let w = u32::from(tcp.window_len());
                c.snd_wnd = if tcp.syn() { w } else { w << c.shift_in() };
            }
        }
    }

    /// Forgets connections silent for two minutes (looking once a second at most).
    pub fn prune(&mut self, now: Instant) {
        if self.conns.len() > 256 && prune_due(&mut self.next_prune, now) {
            self.conns.retain(|_, c| {
                c.last
                    .is_some_and(|l| now.saturating_duration_since(l) < FORGET_AFTER)
            });
        }
    }

    /// Forgets a connection that is over.
    pub fn forget(&mut self, local: SocketAddrV4, remote: SocketAddrV4) {
        self.conns.remove(&(local, remote));
    }

    /// How many connections are tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::tests::seg;

    fn conn(i: u16) -> (SocketAddrV4, SocketAddrV4) {
        (
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 443),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 3), 10000 + i),
        )
    }

    /// Connections silent for two minutes are forgotten, by a prune that looks at most once a
    /// second however often it is called.
    #[test]
    fn silent_connections_are_forgotten_by_a_prune_once_a_second() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        for i in 0..300 {
            let (us, peer) = conn(i);
            t.observe(t0, &seg(us, peer, 1, 1, b"x", &[]), Dir::Out);
        }
        // One of them goes on talking.
        let (us, peer) = conn(0);
        let later = t0 + FORGET_AFTER - Duration::from_millis(500);
        t.observe(later, &seg(us, peer, 2, 1, b"y", &[]), Dir::Out);
        t.prune(later);
        assert_eq!(t.len(), 300, "none silent for two minutes yet");
        // Two minutes of silence passed, but the last scan was under a second ago.
        let due = t0 + FORGET_AFTER;
        t.prune(due);
        assert_eq!(t.len(), 300, "at most one scan a second");
        t.prune(later + PRUNE_EVERY);
        assert_eq!(t.len(), 1, "only the one still talking is kept");
        assert!(t.get(us, peer).is_some());
    }
}
