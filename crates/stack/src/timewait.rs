//! TIME-WAIT outside smoltcp, as Linux keeps it in a small `inet_timewait_sock` rather than the
//! whole socket.
//!
//! A smoltcp socket in TIME-WAIT keeps its buffers and its place in the socket set, and smoltcp
//! walks every socket of the set at every poll. A server that closes first (HTTP with
//! `Connection: close`, a balancer closing its client side) makes hundreds of them a second, so
//! an endpoint that had served a few thousand short connections spent most of its time walking
//! sockets that only wait (docs/perf.md, the balancer's profile). Here a closed connection in
//! TIME-WAIT leaves the socket set for an entry of this table, which does what TIME-WAIT is for
//! (RFC 9293 §3.10.7.4): a retransmitted FIN is acknowledged again and restarts the wait; a new
//! SYN for the same four-tuple opens a new connection; a RST ends the wait; anything else of
//! the old connection is dropped, not answered with a RST as a segment for no socket would be.
//!
//! A socket moves here only once its ACK of the peer's FIN has gone out: once its program
//! has closed it, it sends its ACKs without delay. (Before, an ACK waiting out its delay left
//! with the socket, unsent: the peer sent its FIN again after a second, and this table's ACK
//! of it advertised a window of zero; every journey's capture showed eight of each.)

use crate::syncookie::{Reply, Seg, ACK, RST, SYN};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// How long a connection stays in TIME-WAIT: smoltcp's own delay, as before this table.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// Entries at most; past it a connection leaving for TIME-WAIT is forgotten at once (as
/// Linux does past `tcp_max_tw_buckets`) and counted.
pub(crate) const MAX: usize = 32768;
const FIN: u8 = 0x01;

/// What to do with a segment that came in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not of a connection in TIME-WAIT (or a SYN that opens a new one): on to smoltcp.
    Pass,
    /// Of a connection in TIME-WAIT, and needing nothing.
    Drop,
    /// A retransmitted FIN: this ACK goes back.
    Ack([u8; 54]),
}

#[derive(Debug, Default)]
pub(crate) struct TimeWait {
    /// (local, remote) -> when the wait ends.
    conns: HashMap<(SocketAddrV4, SocketAddrV4), Instant>,
    next_prune: Option<Instant>,
    pub(crate) acks: u64,
    pub(crate) dropped_segments: u64,
}

impl TimeWait {
    /// A connection enters TIME-WAIT; false if the table is full (the connection is forgotten).
    pub(crate) fn enter(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> bool {
        if self.conns.len() >= MAX && !self.conns.contains_key(&(local, remote)) {
            return false;
        }
        self.conns.insert((local, remote), now + WAIT);
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// The segment `s` of `frame` came in for us (whose MAC is `mac`).
    pub(crate) fn on_segment(
        &mut self,
        now: Instant,
        frame: &[u8],
        s: &Seg,
        mac: [u8; 6],
    ) -> Verdict {
        if self.conns.is_empty() {
            return Verdict::Pass;
        }
        let key = (
            SocketAddrV4::new(s.dst, s.dport),
            SocketAddrV4::new(s.src, s.sport),
        );
        let Some(until) = self.conns.get_mut(&key) else {
            return Verdict::Pass;
        };
        if now >= *until {
            self.conns.remove(&key);
            return Verdict::Pass;
        }
        if s.flags & SYN != 0 {
            // A new incarnation of the connection (or the answer to our own new SYN).
            self.conns.remove(&key);
            return Verdict::Pass;
        }
        if s.flags & RST != 0 {
            self.conns.remove(&key);
            return Verdict::Drop;
        }
        if s.flags & FIN == 0 {
            self.dropped_segments += 1;
            return Verdict::Drop;
        }
        // The peer did not hear our ACK of its FIN: acknowledge it again, wait anew.
        *until = now + WAIT;
        let Some(len) = payload_len(frame, s.at) else {
            self.dropped_segments += 1;
            return Verdict::Drop;
        };
        self.acks += 1;
        Verdict::Ack(ack_of_fin(frame, s, len, mac))
    }

    /// Forgets the waits that are over (looking once a second at most).
    pub(crate) fn prune(&mut self, now: Instant) {
        if !self.conns.is_empty() && crate::tracker::prune_due(&mut self.next_prune, now) {
            self.conns.retain(|_, until| now < *until);
        }
    }
}

/// The TCP payload's length of the IPv4 frame whose TCP header is at `at`.
fn payload_len(frame: &[u8], at: usize) -> Option<u32> {
    let total = usize::from(u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]));
    let ihl = d11_wire::ip::header_len(frame.get(14..)?);
    let doff = usize::from(frame.get(at + 12)? >> 4) * 4;
    let len = total.checked_sub(ihl + doff)?;
    Some(len as u32)
}

/// The ACK of the FIN segment `s` (with `len` octets of data): to the sender's MAC and
/// address, our sequence number being what it acknowledged.
fn ack_of_fin(frame: &[u8], s: &Seg, len: u32, mac: [u8; 6]) -> [u8; 54] {
    let mut f = [0u8; 54];
    let reply = Reply {
        seq: s.ack,
        ack: s.seq.wrapping_add(len).wrapping_add(1),
        flags: ACK,
        window: 0,
    };
    reply.write(&mut f, frame, s, mac, &[]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncookie::fill_tcp_checksum;
    use std::net::Ipv4Addr;

    const US: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 443);
    const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 3), 40000);
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// A segment from the peer to us with these flags, `data` octets of payload.
    fn from_peer(flags: u8, seq: u32, ack: u32, data: usize) -> (Vec<u8>, Seg) {
        let mut f = vec![0u8; 54 + data];
        f[0..6].copy_from_slice(&MAC);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 3]);
        f[12..14].copy_from_slice(&[8, 0]);
        d11_wire::ip::write_header(&mut f[14..34], 40 + data, 64, 6, *PEER.ip(), *US.ip());
        f[34..36].copy_from_slice(&PEER.port().to_be_bytes());
        f[36..38].copy_from_slice(&US.port().to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&ack.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        fill_tcp_checksum(&mut f, 34, 20 + data);
        let s = Seg::parse(&f, 34).unwrap();
        (f, s)
    }

    #[test]
    fn a_retransmitted_fin_is_acknowledged_and_the_rest_dropped() {
        let mut tw = TimeWait::default();
        let t0 = Instant::now();
        assert!(tw.enter(t0, US, PEER));
        // The peer's FIN again (with 3 octets of data it sent with it).
        let (f, s) = from_peer(FIN | ACK, 1000, 5000, 3);
        let Verdict::Ack(a) = tw.on_segment(t0, &f, &s, MAC) else {
            panic!("an ACK");
        };
        let back = Seg::parse(&a, 34).unwrap();
        assert_eq!((back.src, back.sport), (*US.ip(), US.port()));
        assert_eq!((back.dst, back.dport), (*PEER.ip(), PEER.port()));
        assert_eq!((back.seq, back.ack, back.flags), (5000, 1004, ACK));
        assert_eq!(&a[0..6], &f[6..12], "to the sender's MAC");
        assert!(
            d11_wire::ip::pseudo_checksum(*US.ip(), *PEER.ip(), 6, &a[34..]) == 0
                || d11_wire::ip::pseudo_checksum(*US.ip(), *PEER.ip(), 6, &a[34..]) == 0xffff
        );
        // A stray ACK of the old connection: dropped, not answered.
        let (f, s) = from_peer(ACK, 1004, 5000, 0);
        assert_eq!(tw.on_segment(t0, &f, &s, MAC), Verdict::Drop);
        assert_eq!((tw.acks, tw.dropped_segments), (1, 1));
        // Another connection: not ours to judge.
        let (mut f, _) = from_peer(ACK, 1, 1, 0);
        f[34..36].copy_from_slice(&40001u16.to_be_bytes());
        let s = Seg::parse(&f, 34).unwrap();
        assert_eq!(tw.on_segment(t0, &f, &s, MAC), Verdict::Pass);
    }

    #[test]
    fn a_new_syn_or_a_rst_ends_the_wait_and_time_does_too() {
        let mut tw = TimeWait::default();
        let t0 = Instant::now();
        tw.enter(t0, US, PEER);
        let (f, s) = from_peer(SYN, 9000, 0, 0);
        assert_eq!(tw.on_segment(t0, &f, &s, MAC), Verdict::Pass);
        assert_eq!(tw.len(), 0);
        tw.enter(t0, US, PEER);
        let (f, s) = from_peer(RST, 1004, 0, 0);
        assert_eq!(tw.on_segment(t0, &f, &s, MAC), Verdict::Drop);
        assert_eq!(tw.len(), 0);
        tw.enter(t0, US, PEER);
        // A FIN at 9 s restarts the wait: still there at 15 s, gone at 20 s.
        let (f, s) = from_peer(FIN | ACK, 1000, 5000, 0);
        assert!(matches!(
            tw.on_segment(t0 + Duration::from_secs(9), &f, &s, MAC),
            Verdict::Ack(_)
        ));
        tw.prune(t0 + Duration::from_secs(15));
        assert_eq!(tw.len(), 1);
        tw.prune(t0 + Duration::from_secs(20));
        assert_eq!(tw.len(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut tw = TimeWait::default();
        let t0 = Instant::now();
        for i in 0..MAX {
            let peer = SocketAddrV4::new(*PEER.ip(), (i % 60000) as u16);
            let us = SocketAddrV4::new(*US.ip(), 1000 + (i / 60000) as u16);
            assert!(tw.enter(t0, us, peer));
        }
        assert!(!tw.enter(t0, US, SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 1)));
        assert_eq!(tw.len(), MAX);
    }
}
