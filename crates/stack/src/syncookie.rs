//! SYN cookies (RFC 4987 §3.6) for the accept pools.
//!
//! smoltcp keeps one socket per half-open connection, and a listener has a fixed pool of them
//! (see [`crate::tcp::Pool`]). When a SYN arrives and every socket of the port's pool is
//! half-open (a flood of SYNs whose sources never answer), the stack answers it itself with a
//! SYN-ACK whose initial sequence number is a cookie, and keeps nothing. A client that is real
//! answers with an ACK of that cookie plus one; the stack checks it, and only then gives the
//! connection a socket: it hands smoltcp the SYN the client sent (rebuilt from the ACK and the
//! cookie's MSS), drops smoltcp's own SYN-ACK, and from then on shifts the sequence numbers of
//! that connection between the cookie's space (the wire) and smoltcp's (the socket).
//!
//! The cookie, as in RFC 4987 and Linux: 5 bits of a 64-second counter, 3 bits for the MSS
//! (an index in [`MSS`]), and 24 bits of a keyed hash (SipHash, a key drawn at start) of the
//! counter, the connection's addresses and ports, the client's ISN and the MSS index. It is
//! good for two counter periods (64 to 128 s). Like Linux without timestamps, a cookie
//! connection has no window scaling, SACK or timestamps: the cookie has no room for them, so
//! the SYN-ACK offers only the MSS.
//!
//! Sans-IO: time is passed in; frames in, frames out.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The MSS values a cookie can carry (3 bits), as Linux's table.
pub(crate) const MSS: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1460, 8960];

/// How long after the last cookie sent its ACKs are looked for (two counter periods).
const VALID: Duration = Duration::from_secs(128);

pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const ACK: u8 = 0x10;

/// A connection as the stack sees it: the remote address and port, and our port.
pub(crate) type Tuple = (Ipv4Addr, u16, u16);

/// The TCP segment of an IPv4 frame that passed the frame guard: where its header is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg {
    /// Offset of the TCP header in the frame.
    pub at: usize,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl Seg {
    /// Reads the TCP header at `at` (the frame guard checked that 20 octets are there).
    pub fn parse(frame: &[u8], at: usize) -> Option<Seg> {
        let t = frame.get(at..at + 20)?;
        let ip4 = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
        Some(Seg {
            at,
            src: ip4(26),
            dst: ip4(30),
            sport: u16::from_be_bytes([t[0], t[1]]),
            dport: u16::from_be_bytes([t[2], t[3]]),
            seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            flags: t[13],
        })
    }

    /// The connection, seen from us (the segment came in).
    pub fn tuple_in(&self) -> Tuple {
        (self.src, self.sport, self.dport)
    }

    /// A SYN opening a connection (no ACK, no RST).
    pub fn is_syn(&self) -> bool {
        self.flags & (SYN | ACK | RST) == SYN
    }

    /// A segment of an established connection (ACK, no SYN, no RST).
    pub fn is_ack(&self) -> bool {
        self.flags & (SYN | ACK | RST) == ACK
    }
}

/// The MSS option of a SYN, if it has one.
fn mss_option(frame: &[u8], at: usize) -> Option<u16> {
    let off = usize::from(frame.get(at + 12)? >> 4) * 4;
    let opts = frame.get(at + 20..at + off)?;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if kind == 2 && len == 4 {
                    return Some(u16::from_be_bytes([opts[i + 2], opts[i + 3]]));
                }
                i += len;
            }
        }
    }
    None
}

/// A segment we answer with, outside smoltcp (a cookie SYN-ACK, a TIME-WAIT ACK).
pub(crate) struct Reply {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

impl Reply {
    /// Writes the answer to the segment `s` of `frame` into `out` (of 54 octets and the
    /// options' length): to the sender's MAC and address from ours, with `opts` (a multiple of
    /// four octets) and complete checksums.
    pub fn write(&self, out: &mut [u8], frame: &[u8], s: &Seg, mac: [u8; 6], opts: &[u8]) {
        let tcp_len = 20 + opts.len();
        out[0..6].copy_from_slice(&frame[6..12]);
        out[6..12].copy_from_slice(&mac);
        out[12..14].copy_from_slice(&[0x08, 0x00]);
        d11_wire::ip::write_header(
            &mut out[14..34],
            20 + tcp_len,
            crate::DEFAULT_TTL,
            6,
            s.dst,
            s.src,
        );
        let t = 34;
        out[t..t + 2].copy_from_slice(&s.dport.to_be_bytes());
        out[t + 2..t + 4].copy_from_slice(&s.sport.to_be_bytes());
        out[t + 4..t + 8].copy_from_slice(&self.seq.to_be_bytes());
        out[t + 8..t + 12].copy_from_slice(&self.ack.to_be_bytes());
        out[t + 12] = ((tcp_len / 4) as u8) << 4;
        out[t + 13] = self.flags;
        out[t + 14..t + 16].copy_from_slice(&self.window.to_be_bytes());
        out[t + 16..t + 20].fill(0);
        out[t + 20..t + tcp_len].copy_from_slice(opts);
        fill_tcp_checksum(out, t, tcp_len);
    }
}

/// The pseudo-header sum and the TCP checksum of the segment at `at` (of `len` octets).
pub(crate) fn fill_tcp_checksum(frame: &mut [u8], at: usize, len: usize) {
    frame[at + 16] = 0;
    frame[at + 17] = 0;
    let ip = &frame[14..];
    let c = d11_wire::ip::pseudo_checksum(
        d11_wire::ip::src(ip),
        d11_wire::ip::dst(ip),
        6,
        &frame[at..at + len],
    );
    frame[at + 16..at + 18].copy_from_slice(&c.to_be_bytes());
}

/// Rewrites the 32-bit word at `off` (a sequence or acknowledgment number) of the segment at
/// `at`, and its checksum, incrementally (RFC 1624).
fn rewrite_u32(frame: &mut [u8], at: usize, off: usize, new: u32) {
    let p = at + off;
    let old: [u8; 4] = frame[p..p + 4].try_into().unwrap_or_default();
    let new = new.to_be_bytes();
    let sum = u16::from_be_bytes([frame[at + 16], frame[at + 17]]);
    let sum = d11_wire::checksum_adjust(sum, &old, &new);
    frame[p..p + 4].copy_from_slice(&new);
    frame[at + 16..at + 18].copy_from_slice(&sum.to_be_bytes());
}

/// The stack's SYN cookies and the connections they opened.
pub(crate) struct SynCookies {
    key: std::collections::hash_map::RandomState,
    epoch: Instant,
    /// When the last cookie went out: ACKs are checked for cookies only until `VALID` after.
    last_sent: Option<Instant>,
    /// Connections opened by a cookie: what to add to smoltcp's sequence numbers to get the
    /// wire's (the cookie minus smoltcp's own ISN).
    pub shifted: HashMap<Tuple, u32>,
    next_sweep: Option<Instant>,
}

impl SynCookies {
    pub fn new(epoch: Instant) -> Self {
        Self {
            key: Default::default(),
            epoch,
            last_sent: None,
            shifted: HashMap::new(),
            next_sweep: None,
        }
    }

    fn counter(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.epoch).as_secs() / 64) as u32
    }

    fn hash(&self, t: u32, s: &Seg, client_isn: u32, mss: u8) -> u32 {
        let h = self
            .key
            .hash_one((t, s.src, s.dst, s.sport, s.dport, client_isn, mss));
        (h & 0x00ff_ffff) as u32
    }

    /// The cookie for a SYN `s` (the client's ISN is its sequence number) that offered
    /// `client_mss`, from a stack whose own MSS is `our_mss`; and the MSS it carries.
    pub fn make(&self, now: Instant, s: &Seg, client_mss: u16, our_mss: u16) -> (u32, u16) {
        let want = client_mss.min(our_mss);
        let idx = MSS.iter().rposition(|m| *m <= want).unwrap_or(0) as u8;
        let t = self.counter(now);
        let cookie = ((t & 0x1f) << 27) | (u32::from(idx) << 24) | self.hash(t, s, s.seq, idx);
        (cookie, MSS[usize::from(idx)])
    }

    /// Whether the ACK `s` acknowledges a cookie of ours (sent in the last two periods); the
    /// MSS it carries.
    pub fn check(&self, now: Instant, s: &Seg) -> Option<u16> {
        let cookie = s.ack.wrapping_sub(1);
        let client_isn = s.seq.wrapping_sub(1);
        let idx = ((cookie >> 24) & 7) as u8;
        let t = self.counter(now);
        [t, t.wrapping_sub(1)]
            .into_iter()
            .filter(|t| t & 0x1f == cookie >> 27)
            .any(|t| self.hash(t, s, client_isn, idx) == cookie & 0x00ff_ffff)
            .then_some(MSS[usize::from(idx)])
    }

    /// Whether cookies went out recently enough for an ACK to carry one.
    pub fn active(&self, now: Instant) -> bool {
        self.last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < VALID)
    }

    /// The SYN-ACK answering the SYN in `frame` (segment `s`) with a cookie, from `mac`,
    /// offering `window` and the cookie's MSS.
    pub fn syn_ack(
        &mut self,
        now: Instant,
        frame: &[u8],
        s: &Seg,
        our_mss: u16,
        window: u16,
        mac: [u8; 6],
    ) -> [u8; 58] {
        let client_mss = mss_option(frame, s.at).unwrap_or(536);
        let (cookie, mss) = self.make(now, s, client_mss, our_mss);
        self.last_sent = Some(now);
        let mut f = [0u8; 58];
        let reply = Reply {
            seq: cookie,
            ack: s.seq.wrapping_add(1),
            flags: SYN | ACK,
            window,
        };
        reply.write(&mut f, frame, s, mac, &[2, 4, (mss >> 8) as u8, mss as u8]);
        f
    }

    /// The SYN the client of the cookie ACK `s` (in `frame`) sent, as smoltcp must see it to
    /// open the connection: its ISN, its window, the cookie's MSS, and no other option.
    pub fn rebuilt_syn(frame: &[u8], s: &Seg, mss: u16) -> [u8; 58] {
        let mut f = [0u8; 58];
        f[0..12].copy_from_slice(&frame[0..12]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        d11_wire::ip::write_header(&mut f[14..34], 44, 64, 6, s.src, s.dst);
        let t = 34;
        f[t..t + 2].copy_from_slice(&s.sport.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&s.dport.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&s.seq.wrapping_sub(1).to_be_bytes());
        f[t + 12] = 6 << 4;
        f[t + 13] = SYN;
        f[t + 14..t + 16].copy_from_slice(&frame[s.at + 14..s.at + 16]);
        f[t + 20..t + 24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        fill_tcp_checksum(&mut f, t, 24);
        f
    }

    /// Records a connection opened by a cookie: smoltcp answered its rebuilt SYN with
    /// `smoltcp_isn`; the wire knows the cookie (the client's ACK minus one).
    pub fn opened(&mut self, now: Instant, s: &Seg, smoltcp_isn: u32) {
        let cookie = s.ack.wrapping_sub(1);
        self.shifted
            .insert(s.tuple_in(), cookie.wrapping_sub(smoltcp_isn));
        self.next_sweep.get_or_insert(now + Duration::from_secs(1));
    }

    /// An incoming segment of a cookie connection: its acknowledgment number into smoltcp's
    /// space.
    pub fn shift_in(&self, frame: &mut [u8], s: &Seg) {
        if s.flags & ACK == 0 {
            return;
        }
        if let Some(d) = self.shifted.get(&s.tuple_in()) {
            rewrite_u32(frame, s.at, 8, s.ack.wrapping_sub(*d));
        }
    }

    /// When the connections opened by cookies should be checked for closing.
    pub fn sweep_at(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Forgets the connections for which `open` is false (their socket is gone or closed).
    pub fn sweep(&mut self, now: Instant, open: impl Fn(&Tuple) -> bool) {
        self.shifted.retain(|t, _| open(t));
        self.next_sweep = (!self.shifted.is_empty()).then(|| now + Duration::from_secs(1));
    }
}

/// The transmitter of a poll while cookie connections exist: their outgoing sequence numbers
/// go into the wire's space (a copy into `scratch`, only for those connections).
pub(crate) struct ShiftOut<'a> {
    pub tx: &'a mut dyn d11_element::Transmit,
    pub shifted: &'a HashMap<Tuple, u32>,
    pub scratch: &'a mut Vec<u8>,
}

impl d11_element::Transmit for ShiftOut<'_> {
    fn send(&mut self, port: d11_element::PortId, frame: &[u8]) {
        if let Some((at, d)) = tcp_out(frame).and_then(|s| {
            self.shifted
                .get(&(s.dst, s.dport, s.sport))
                .map(|d| (s.at, s.seq.wrapping_add(*d)))
        }) {
            self.scratch.clear();
            self.scratch.extend_from_slice(frame);
            rewrite_u32(self.scratch, at, 4, d);
            self.tx.send(port, self.scratch);
        } else {
            self.tx.send(port, frame);
        }
    }
    fn wants_notes(&self, port: d11_element::PortId) -> bool {
        self.tx.wants_notes(port)
    }
}

/// The TCP segment of a frame the stack sends (IPv4, any header length).
pub(crate) fn tcp_out(frame: &[u8]) -> Option<Seg> {
    if frame.len() < 54 || frame[12..14] != [8, 0] || frame[23] != 6 {
        return None;
    }
    let at = 14 + d11_wire::ip::header_len(&frame[14..]);
    Seg::parse(frame, at)
}

/// Drops smoltcp's SYN-ACK for a connection being opened by a cookie, and notes its ISN;
/// passes every other frame on.
pub(crate) struct TakeSynAck<'a> {
    pub tx: &'a mut dyn d11_element::Transmit,
    pub tuple: Tuple,
    pub isn: Option<u32>,
}

impl d11_element::Transmit for TakeSynAck<'_> {
    fn send(&mut self, port: d11_element::PortId, frame: &[u8]) {
        if let Some(s) = tcp_out(frame) {
            if s.flags & (SYN | ACK) == SYN | ACK && (s.dst, s.dport, s.sport) == self.tuple {
                self.isn = Some(s.seq);
                return;
            }
        }
        self.tx.send(port, frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(seq: u32, mss: u16) -> Vec<u8> {
        let mut f = vec![0u8; 58];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14..24].copy_from_slice(&[0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6]);
        f[26..30].copy_from_slice(&[10, 0, 1, 9]);
        f[30..34].copy_from_slice(&[10, 0, 2, 20]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&443u16.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[46] = 6 << 4;
        f[47] = SYN;
        f[48..50].copy_from_slice(&64240u16.to_be_bytes());
        f[54..58].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        fill_tcp_checksum(&mut f, 34, 24);
        f
    }

    /// The client's answer to `synack`: ACK, seq ISN+1.
    fn ack_of(synack: &[u8], client_isn: u32) -> Vec<u8> {
        let s = Seg::parse(synack, 34).unwrap();
        let mut f = syn(client_isn.wrapping_add(1), 0)[..54].to_vec();
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[42..46].copy_from_slice(&s.seq.wrapping_add(1).to_be_bytes());
        f[46] = 5 << 4;
        f[47] = ACK;
        fill_tcp_checksum(&mut f, 34, 20);
        f
    }

    #[test]
    fn a_cookie_comes_back_valid_with_its_mss_and_forgeries_do_not() {
        let t0 = Instant::now();
        let mut c = SynCookies::new(t0);
        let f = syn(0xfffffff0, 1460);
        let s = Seg::parse(&f, 34).unwrap();
        let sa = c.syn_ack(t0, &f, &s, 1410, 65535, [2, 0, 0, 0, 0, 9]);
        // Our MSS is 1410: the largest cookie MSS under it.
        let sas = Seg::parse(&sa, 34).unwrap();
        assert_eq!((sas.flags, sas.ack), (SYN | ACK, 0xfffffff1));
        assert_eq!(mss_option(&sa, 34), Some(1400));
        assert_eq!(d11_wire::internet_checksum(&sa[14..34]), 0);
        let a = ack_of(&sa, 0xfffffff0);
        let sa_ = Seg::parse(&a, 34).unwrap();
        assert!(c.active(t0));
        assert_eq!(c.check(t0, &sa_), Some(1400));
        // Still good in the next period, not two later.
        assert_eq!(c.check(t0 + Duration::from_secs(100), &sa_), Some(1400));
        assert_eq!(c.check(t0 + Duration::from_secs(200), &sa_), None);
        // Another port, another ISN, a guessed number: refused.
        let mut other = sa_;
        other.sport = 40001;
        assert_eq!(c.check(t0, &other), None);
        let mut other = sa_;
        other.seq = other.seq.wrapping_add(1);
        assert_eq!(c.check(t0, &other), None);
        let mut other = sa_;
        other.ack ^= 0x10;
        assert_eq!(c.check(t0, &other), None);
        // Another stack (another key) does not take this stack's cookies.
        assert_eq!(SynCookies::new(t0).check(t0, &sa_), None);
    }

    #[test]
    fn a_cookie_connection_shifts_both_ways_with_valid_checksums() {
        let t0 = Instant::now();
        let mut c = SynCookies::new(t0);
        let f = syn(1000, 1460);
        let s = Seg::parse(&f, 34).unwrap();
        let sa = c.syn_ack(t0, &f, &s, 1460, 65535, [2, 0, 0, 0, 0, 9]);
        let mut a = ack_of(&sa, 1000);
        let s = Seg::parse(&a, 34).unwrap();
        let mss = c.check(t0, &s).unwrap();
        let rebuilt = SynCookies::rebuilt_syn(&a, &s, mss);
        let r = Seg::parse(&rebuilt, 34).unwrap();
        assert!(r.is_syn());
        assert_eq!((r.seq, mss_option(&rebuilt, 34)), (1000, Some(1460)));
        // smoltcp answered the rebuilt SYN with ISN 77.
        c.opened(t0, &s, 77);
        c.shift_in(&mut a, &s);
        let after = Seg::parse(&a, 34).unwrap();
        assert_eq!(after.ack, 78);
        let check = |f: &[u8]| {
            let mut g = f.to_vec();
            let len = g.len() - 34;
            fill_tcp_checksum(&mut g, 34, len);
            assert_eq!(g, f, "checksum");
        };
        check(&a);
        // Out: smoltcp's sequence numbers become the cookie's.
        let mut ours = ack_of(&sa, 1000);
        ours[26..30].copy_from_slice(&[10, 0, 2, 20]);
        ours[30..34].copy_from_slice(&[10, 0, 1, 9]);
        ours[34..36].copy_from_slice(&443u16.to_be_bytes());
        ours[36..38].copy_from_slice(&40000u16.to_be_bytes());
        ours[38..42].copy_from_slice(&78u32.to_be_bytes());
        fill_tcp_checksum(&mut ours, 34, 20);
        let mut sink = d11_element::Collect::default();
        let mut scratch = Vec::new();
        let mut out = ShiftOut {
            tx: &mut sink,
            shifted: &c.shifted,
            scratch: &mut scratch,
        };
        d11_element::Transmit::send(&mut out, 0, &ours);
        let sent = &sink.frames[0].1;
        assert_eq!(Seg::parse(sent, 34).unwrap().seq, sas_seq(&sa) + 1);
        check(sent);
        c.sweep(t0, |_| false);
        assert!(c.shifted.is_empty());
    }

    fn sas_seq(sa: &[u8]) -> u32 {
        Seg::parse(sa, 34).unwrap().seq
    }
}
