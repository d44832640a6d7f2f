//! Loss recovery below smoltcp, from the wire.
//!
//! smoltcp 0.14 recovers from loss poorly as a sender: its minimum RTO is 1 s, a timeout goes
//! back to SND.UNA with a one-segment window, fast retransmit resends one segment and needs
//! three duplicate ACKs with an unchanged window (Linux's often change), and it reads no SACK
//! blocks. Under 2% loss nearly every loss costs a second.
//!
//! This module sits where the stack meets the wire and repairs holes itself:
//! - it keeps a copy of each data segment the stack sends until it is acknowledged;
//! - with SACK (the peer sends SACK blocks; smoltcp advertises SACK-permitted), a segment is
//!   lost when at least three segments' worth of data above it has been SACKed (RFC 6675's
//!   rule), and is sent again at once;
//! - without SACK, three duplicate ACKs resend the segment at the ACK, and each partial ACK
//!   during recovery resends the next one (RFC 6582, NewReno);
//! - a segment is sent again at most once per `RESEND_GAP`;
//! - when neither an ACK has advanced nor new data gone out for a probe timeout (2 x SRTT +
//!   10 ms, at least 20 ms, doubling while nothing moves, RFC 8985's PTO; 2 x SRTT + 20 ms for
//!   a lone segment, whose ACK the peer may delay), the first unacknowledged segment is sent
//!   again, long before smoltcp's 1 s RTO would go back to SND.UNA.
//!
//! A super-frame (TSO, on a port with offloads) is kept and sent again whole, with the segment
//! size the device cuts it into: it counts as one segment here, so loss in it is repaired by
//! the probe timeout rather than by SACK (such ports carry no impairment).
//!
//! The copies are the frames as they were sent (headers included): a receiver discards data it
//! already has, and the stale ACK and window fields of a copy are older than what the peer
//! knows, so TCP ignores them (RFC 9293 §3.10.7.4). smoltcp stays in charge of everything
//! else; it sees only its ACKs advance sooner.

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpOption, TcpPacket,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

const RESEND_GAP: Duration = Duration::from_millis(200);
/// Copies kept per connection at most (octets of payload); beyond it, sending goes on
/// without copies and smoltcp's own recovery applies.
const MAX_KEPT: usize = 4 << 20;
/// Segments sent again per incoming ACK at most, so a burst of loss does not become a burst.
const MAX_PER_ACK: usize = 8;
const DUP_THRESH: u32 = 3;

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

struct Seg {
    seq: u32,
    end: u32,
    frame: Vec<u8>,
    /// The segment size of a super-frame (0: one segment).
    gso_size: u16,
    sacked: bool,
    sent: Instant,
    resent: Option<Instant>,
}

#[derive(Default)]
struct Flight {
    segs: VecDeque<Seg>,
    kept: usize,
    last_ack: u32,
    have_ack: bool,
    dupacks: u32,
    /// NewReno: the highest sequence sent when recovery began.
    recover: Option<u32>,
    last: Option<Instant>,
    /// When the probe timer last started: new data went out, the ACK advanced, or a probe
    /// was sent (RFC 8985 §7.2 restarts it after each transmission of new data).
    progress: Option<Instant>,
    srtt: Option<Duration>,
    /// Probe timeouts in a row without progress (the PTO doubles with each).
    backoff: u32,
}

/// How much longer a probe waits when one segment is in flight, whose ACK the peer may delay
/// (RFC 8985 §7.2 adds WCDelAckT then): twice our own delayed-ACK timer (10 ms), so a probe
/// waits out the ACK our own stack delays, with room for the timer's lateness. Linux holds an
/// ACK 40 ms or more, and against it a lone segment may still be probed before its ACK comes;
/// waiting that long too cost 11 % of the orders under 5 % loss (docs/perf.md, "A probe for a
/// lone segment").
const LONE_SEGMENT_ACK_DELAY: Duration = Duration::from_millis(20);

impl Flight {
    fn pto(&self) -> Duration {
        let base = self.srtt.map_or(Duration::from_millis(200), |s| {
            let lone = self.segs.len() == 1 && self.segs.front().is_some_and(|g| g.gso_size == 0);
            let delay = if lone {
                LONE_SEGMENT_ACK_DELAY
            } else {
                Duration::from_millis(10)
            };
            (s * 2 + delay).max(Duration::from_millis(20))
        });
        (base * (1 << self.backoff.min(6))).min(Duration::from_secs(1))
    }
}

#[derive(Default)]
pub(crate) struct Recovery {
    flights: HashMap<(SocketAddrV4, SocketAddrV4), Flight>,
    free: Vec<Vec<u8>>,
    pub(crate) resent: u64,
    pub(crate) probes: u64,
    next_prune: Option<Instant>,
    /// The connections with unacknowledged copies: the only ones a probe timeout concerns.
    /// (The timer walks these, not every connection of the last two minutes.)
    busy: HashSet<(SocketAddrV4, SocketAddrV4)>,
}

/// Copies to send again, each with its segment size (see [`Recovery::on_out`]).
pub(crate) type Resend = Vec<(Vec<u8>, u16)>;

struct Seen<'a> {
    local: SocketAddrV4,
    remote: SocketAddrV4,
    seq: u32,
    ack: Option<u32>,
    payload: usize,
    syn_fin_rst: bool,
    rst: bool,
    opts: &'a [u8],
}

fn parse(frame: &[u8], out: bool) -> Option<Seen<'_>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&frame[14..]).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 || ip.more_frags() {
        return None;
    }
    let hl = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let tcp_bytes = frame.get(14 + hl..14 + total)?;
    let tcp = TcpPacket::new_checked(tcp_bytes).ok()?;
    let a = SocketAddrV4::new(ip.src_addr(), tcp.src_port());
    let b = SocketAddrV4::new(ip.dst_addr(), tcp.dst_port());
    let (local, remote) = if out { (a, b) } else { (b, a) };
    let header = usize::from(tcp.header_len());
    Some(Seen {
        local,
        remote,
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack().then(|| tcp.ack_number().0 as u32),
        payload: tcp_bytes.len().saturating_sub(header),
        syn_fin_rst: tcp.syn() || tcp.fin() || tcp.rst(),
        rst: tcp.rst(),
        opts: &tcp_bytes[20.min(header)..header],
    })
}

impl Recovery {
    /// A frame the stack sends (a super-frame of `gso_size` segments, if not 0): keep a copy of
    /// new data.
    pub(crate) fn on_out(&mut self, now: Instant, frame: &[u8], gso_size: u16) {
        let Some(s) = parse(frame, true) else { return };
        if s.payload == 0 || s.syn_fin_rst {
            return;
        }
        let f = self.flights.entry((s.local, s.remote)).or_default();
        f.last = Some(now);
        let end = s.seq.wrapping_add(s.payload as u32);
        if f.segs.back().is_some_and(|b| !after(end, b.end)) {
            return; // smoltcp's own retransmission of data we hold
        }
        if f.kept + s.payload > MAX_KEPT {
            return;
        }
        let mut copy = self.free.pop().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(frame);
        f.kept += s.payload;
        f.progress = Some(now);
        if f.segs.is_empty() {
            self.busy.insert((s.local, s.remote));
        }
        f.segs.push_back(Seg {
            seq: s.seq,
            end,
            frame: copy,
            gso_size,
            sacked: false,
            sent: now,
            resent: None,
        });
    }

    /// A frame the stack received: learn what the peer has, and return copies to send again.
    pub(crate) fn on_in(&mut self, now: Instant, frame: &[u8], resend: &mut Resend) {
        let Some(s) = parse(frame, false) else { return };
        let key = (s.local, s.remote);
        if s.rst {
            // A RST ends the connection: forget it.
            if let Some(f) = self.flights.remove(&key) {
                self.free.extend(f.segs.into_iter().map(|s| s.frame));
            }
            self.busy.remove(&key);
            return;
        }
        let Some(ack) = s.ack else { return };
        let Some(f) = self.flights.get_mut(&key) else {
            return;
        };
        f.last = Some(now);
        // Drop what is acknowledged; time the newest never-resent segment (Karn's rule).
        let mut sample = None;
        while f.segs.front().is_some_and(|g| !after(g.end, ack)) {
            if let Some(g) = f.segs.pop_front() {
                f.kept -= (g.end.wrapping_sub(g.seq)) as usize;
                if g.resent.is_none() {
                    sample = Some(now.saturating_duration_since(g.sent));
                }
                self.free.push(g.frame);
            }
        }
        if let Some(r) = sample {
            f.srtt = Some(f.srtt.map_or(r, |s| (s * 7 + r) / 8));
        }
        if self.free.len() > 1024 {
            self.free.truncate(1024);
        }
        // SACK blocks.
        let mut blocks = [(0u32, 0u32); 4];
        let mut nb = 0;
        let mut opts = s.opts;
        while !opts.is_empty() {
            let Ok((rest, opt)) = TcpOption::parse(opts) else {
                break;
            };
            if let TcpOption::SackRange(r) = opt {
                for (l, r) in r.iter().flatten() {
                    if nb < blocks.len() {
                        blocks[nb] = (*l, *r);
                        nb += 1;
                    }
                }
            }
            if matches!(opt, TcpOption::EndOfList) {
                break;
            }
            opts = rest;
        }
        let pure = s.payload == 0 && !s.syn_fin_rst;
        let new_ack = !f.have_ack || after(ack, f.last_ack);
        if new_ack {
            f.last_ack = ack;
            f.have_ack = true;
            f.dupacks = 0;
            f.progress = Some(now);
            f.backoff = 0;
        } else if pure && ack == f.last_ack && !f.segs.is_empty() {
            f.dupacks += 1;
        }
        let mut sent = 0;
        let mut send = |g: &mut Seg, resend: &mut Resend, n: &mut u64| {
            if sent < MAX_PER_ACK
                && g.resent
                    .is_none_or(|t| now.saturating_duration_since(t) >= RESEND_GAP)
            {
                g.resent = Some(now);
                resend.push((g.frame.clone(), g.gso_size));
                *n += 1;
                sent += 1;
            }
        };
        if nb > 0 {
            // RFC 6675: lost when DupThresh segments' worth above it is SACKed.
            for g in f.segs.iter_mut() {
                if blocks[..nb]
                    .iter()
                    .any(|&(l, r)| !after(l, g.seq) && !after(g.end, r))
                {
                    g.sacked = true;
                }
            }
            let mut sacked_above = 0usize;
            let mut lost = vec![false; f.segs.len()];
            for (i, g) in f.segs.iter().enumerate().rev() {
                let len = g.end.wrapping_sub(g.seq) as usize;
                if g.sacked {
                    sacked_above += len;
                } else if sacked_above >= DUP_THRESH as usize * len {
                    lost[i] = true;
                }
            }
            for (g, l) in f.segs.iter_mut().zip(lost) {
                if l {
                    send(g, resend, &mut self.resent);
                }
            }
        } else if let Some(back_end) = f.segs.back().map(|b| b.end) {
            let Some(g) = f.segs.front_mut() else { return };
            // NewReno: three duplicate ACKs start recovery; a partial ACK in it resends the
            // next hole.
            let partial = new_ack && f.recover.is_some_and(|r| after(r, ack));
            if f.dupacks == DUP_THRESH || partial {
                if f.dupacks == DUP_THRESH && f.recover.is_none() {
                    f.recover = Some(back_end);
                }
                send(g, resend, &mut self.resent);
            }
            if f.recover.is_some_and(|r| !after(r, ack)) {
                f.recover = None;
            }
        }
        if f.segs.is_empty() {
            f.recover = None;
            self.busy.remove(&key);
        }
    }

    /// When the next probe timeout falls due.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.busy
            .iter()
            .filter_map(|k| self.flights.get(k))
            .filter(|f| !f.segs.is_empty())
            .filter_map(|f| f.progress.map(|p| p + f.pto()))
            .min()
    }

    /// Probe timeouts due at `now`: the first unacknowledged segment of each goes again.
    pub(crate) fn on_timer(&mut self, now: Instant, resend: &mut Resend) {
        for k in &self.busy {
            let Some(f) = self.flights.get_mut(k) else {
                continue;
            };
            let Some(p) = f.progress else { continue };
            if f.segs.is_empty() || now < p + f.pto() {
                continue;
            }
            if let Some(g) = f.segs.front_mut() {
                g.resent = Some(now);
                resend.push((g.frame.clone(), g.gso_size));
                self.resent += 1;
                self.probes += 1;
            }
            f.backoff += 1;
            f.progress = Some(now);
        }
    }

    /// Forgets a connection that is over, and gives its copies back to the free list.
    pub(crate) fn forget(&mut self, local: SocketAddrV4, remote: SocketAddrV4) {
        if let Some(f) = self.flights.remove(&(local, remote)) {
            self.free.extend(f.segs.into_iter().map(|s| s.frame));
            self.free.truncate(1024);
        }
        self.busy.remove(&(local, remote));
    }

    /// Forgets connections silent for two minutes (looking once a second at most).
    pub(crate) fn prune(&mut self, now: Instant) {
        if self.flights.len() > 64 && crate::tracker::prune_due(&mut self.next_prune, now) {
            self.flights.retain(|_, f| {
                f.last.is_some_and(|l| {
                    now.saturating_duration_since(l) < crate::tracker::FORGET_AFTER
                })
            });
            let flights = &self.flights;
            self.busy.retain(|k| flights.contains_key(k));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, IpProtocol as P, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    const US: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 2, 2), 19);
    const PEER: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 1, 3), 40000);

    /// A TCP segment from `from` to `to` as an Ethernet frame.
    pub(crate) fn seg(
        from: SocketAddrV4,
        to: SocketAddrV4,
        seq: u32,
        ack: u32,
        payload: &[u8],
        sack: &[(u32, u32)],
    ) -> Vec<u8> {
        let mut ranges = [None; 3];
        for (r, s) in ranges.iter_mut().zip(sack) {
            *r = Some(*s);
        }
        let tcp = TcpRepr {
            src_port: from.port(),
            dst_port: to.port(),
            control: TcpControl::None,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(ack as i32)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: ranges,
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: *from.ip(),
            dst_addr: *to.ip(),
            next_header: P::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut f = vec![0u8; 14 + ip.buffer_len() + tcp.buffer_len()];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[14..34]), &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut f[34..]),
            &IpAddress::Ipv4(*from.ip()),
            &IpAddress::Ipv4(*to.ip()),
            &caps,
        );
        f
    }

    fn data(i: u32) -> Vec<u8> {
        seg(US, PEER, 1000 + i * 100, 1, &[i as u8; 100], &[])
    }

    fn seq_of(frame: &[u8]) -> u32 {
        TcpPacket::new_checked(&frame[34..]).unwrap().seq_number().0 as u32
    }

    #[test]
    fn sack_marks_holes_lost_and_resends_them_once() {
        let mut r = Recovery::default();
        let t = Instant::now();
        for i in 0..10 {
            r.on_out(t, &data(i), 0);
        }
        // Segments 2 and 5 lost: the peer ACKs 1200 and SACKs 1300..1500 and 1600..2000.
        let mut out = Vec::new();
        r.on_in(
            t,
            &seg(PEER, US, 1, 1200, &[], &[(1300, 1500), (1600, 2000)]),
            &mut out,
        );
        let mut resent: Vec<u32> = out.iter().map(|(f, _)| seq_of(f)).collect();
        resent.sort();
        assert_eq!(resent, vec![1200, 1500], "both holes, at once");
        // The same ACK again: nothing twice within RESEND_GAP.
        out.clear();
        r.on_in(
            t,
            &seg(PEER, US, 1, 1200, &[], &[(1300, 1500), (1600, 2000)]),
            &mut out,
        );
        assert!(out.is_empty());
        // Not enough above a hole: segment 9 alone missing at the tail is not "lost" by SACK.
        let mut r = Recovery::default();
        for i in 0..10 {
            r.on_out(t, &data(i), 0);
        }
        out.clear();
        r.on_in(t, &seg(PEER, US, 1, 1800, &[], &[(1900, 2000)]), &mut out);
        assert!(out.is_empty(), "one segment above is below DupThresh");
    }

    #[test]
    fn a_probe_for_a_lone_segment_waits_out_the_peers_delayed_ack() {
        let mut r = Recovery::default();
        let t = Instant::now();
        let mut out = Vec::new();
        // An RTT sample of 5 ms.
        r.on_out(t, &data(0), 0);
        let t = t + Duration::from_millis(5);
        r.on_in(t, &seg(PEER, US, 1, 1100, &[], &[]), &mut out);
        assert!(r.poll_at().is_none());
        // One segment in flight: the peer may hold its ACK for its delayed-ACK timer.
        r.on_out(t, &data(1), 0);
        assert_eq!(r.poll_at(), Some(t + Duration::from_millis(2 * 5 + 20)));
        // Nothing comes back in 2 x SRTT + 10 ms: no probe yet.
        r.on_timer(t + Duration::from_millis(20), &mut out);
        assert!(out.is_empty());
        // Two in flight: the peer ACKs every second segment at once. New data restarts the
        // timer (RFC 8985 §7.2): the probe is due 2 x SRTT + 10 ms after the second segment.
        let t2 = t + Duration::from_millis(15);
        r.on_out(t2, &data(2), 0);
        assert_eq!(r.poll_at(), Some(t2 + Duration::from_millis(2 * 5 + 10)));
        r.on_timer(t + Duration::from_millis(30), &mut out);
        assert!(
            out.is_empty(),
            "not before 2 x SRTT + 10 ms after the last new data"
        );
        r.on_timer(t2 + Duration::from_millis(20), &mut out);
        assert_eq!(
            out.iter().map(|(f, _)| seq_of(f)).collect::<Vec<_>>(),
            vec![1100]
        );
    }

    #[test]
    fn newreno_without_sack_and_probe_timeout() {
        let mut r = Recovery::default();
        let t = Instant::now();
        for i in 0..5 {
            r.on_out(t, &data(i), 0);
        }
        let mut out = Vec::new();
        r.on_in(t, &seg(PEER, US, 1, 1100, &[], &[]), &mut out); // new ACK
        for _ in 0..2 {
            r.on_in(t, &seg(PEER, US, 1, 1100, &[], &[]), &mut out);
        }
        assert!(out.is_empty(), "two duplicates are not enough");
        r.on_in(t, &seg(PEER, US, 1, 1100, &[], &[]), &mut out);
        assert_eq!(
            out.iter().map(|(f, _)| seq_of(f)).collect::<Vec<_>>(),
            vec![1100]
        );
        // Nothing moves: a probe timeout resends the first unacknowledged segment.
        out.clear();
        let due = r.poll_at().expect("a deadline");
        r.on_timer(due, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(r.probes, 1);
        // Everything acknowledged: no copies, no deadline.
        r.on_in(due, &seg(PEER, US, 1, 1500, &[], &[]), &mut out);
        assert!(r.poll_at().is_none());
        assert_eq!(r.flights.values().map(|f| f.kept).sum::<usize>(), 0);
    }
}
