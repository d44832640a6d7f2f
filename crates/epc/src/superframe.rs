//! G-PDUs as UDP super-frames: what lets a TCP super-frame cross the GTP-U elements whole.
//!
//! A TCP super-frame cannot go into one G-PDU: a T-PDU is one packet of the tunnel's MTU.
//! Nor can the kernel's UDP-tunnel offload carry it, as it carries VXLAN: it would copy the
//! GTP-U header, length and all, onto every segment. What can carry it is UDP segmentation
//! (Linux's `SKB_GSO_UDP_L4`, `TUN_F_USO4`): one outer Ethernet, IPv4 and UDP header over the
//! payloads of many datagrams of one size. Here those payloads are whole G-PDUs, each a GTP-U
//! header and one segment of the TCP super-frame, one after the other. Wherever the
//! super-frame is cut (by a TAP that cannot take it, by the kernel, or by
//! [`d11_wire::gso::segment`]) each datagram is exactly the G-PDU an element would have sent
//! on its own; a capture on a link where it travels whole shows it as the kernel carries it,
//! as tcpdump shows a TCP super-frame.
//!
//! - The tunnel's entry (the eNodeB uplink, the PGW downlink) cuts the TCP super-frame into
//!   segments and [`pack`]s them, each behind its G-PDU header.
//! - The SGW switches every G-PDU of the super-frame in place, as it switches one.
//! - The tunnel's exit (the PGW uplink, the eNodeB downlink) takes each G-PDU out and merges
//!   their T-PDUs back into a TCP super-frame ([`d11_wire::gso::coalesce_tcp4`], which checks
//!   each segment as GRO would); what does not merge goes on packet by packet.

use crate::tunnel::Endpoint;
use d11_wire::gso::{self, Gso};
use d11_wire::gtpu::HEADER_LEN;
use std::net::Ipv4Addr;

/// Room enough for any segment (or frame) cut from a super-frame.
pub const CUT_LEN: usize = 65536 + 64;

/// The G-PDUs of a UDP super-frame to the GTP-U port.
pub struct GPdus<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The UDP payload: G-PDUs of `size` octets each (the last the rest).
    pub payload: &'a mut [u8],
    pub size: usize,
}

impl GPdus<'_> {
    /// Each G-PDU.
    pub fn iter(&self) -> std::slice::Chunks<'_, u8> {
        self.payload.chunks(self.size)
    }

    /// Each G-PDU, to switch in place.
    pub fn iter_mut(&mut self) -> std::slice::ChunksMut<'_, u8> {
        self.payload.chunks_mut(self.size)
    }

    /// The TEID of the one tunnel of `ep` every G-PDU is for, if each is one its fast path
    /// may take ([`Endpoint::plain_g_pdu`]: from the tunnel's far end among others).
    pub fn one_tunnel(&self, ep: &Endpoint) -> Option<u32> {
        let mut teid = None;
        for pdu in self.iter() {
            let t = ep.plain_g_pdu(self.src, pdu);
            if t.is_none() || teid.is_some_and(|x| Some(x) != t) {
                return None;
            }
            teid = t;
        }
        teid
    }

    /// Counts every G-PDU as delivered by tunnel `teid` of `ep`; how many were.
    pub fn deliver(&self, ep: &mut Endpoint, teid: u32) -> u64 {
        self.iter().filter(|p| ep.delivered(teid, p.len())).count() as u64
    }

    /// The T-PDUs merged into one TCP super-frame in `out`, as
    /// [`d11_wire::gso::coalesce_tcp4`] merges segments: behind `eth` if the T-PDUs are IP
    /// packets; if they are Ethernet frames (`eth` `None`), behind theirs, which must all be
    /// the same. `None` if they do not merge.
    pub fn merge(&self, eth: Option<[u8; 14]>, out: &mut Vec<u8>) -> Option<Gso> {
        let (eth, skip) = match eth {
            Some(e) => (e, HEADER_LEN),
            None => {
                let e = self
                    .iter()
                    .next()
                    .and_then(|p| ethernet_of(&p[HEADER_LEN..]))?;
                let same = |p: &[u8]| p.get(HEADER_LEN..HEADER_LEN + 14) == Some(&e[..]);
                if !self.iter().all(same) {
                    return None;
                }
                (e, HEADER_LEN + 14)
            }
        };
        let packets = self.iter().map(|p| p.get(skip..).unwrap_or_default());
        gso::coalesce_tcp4(&eth, packets, out)
    }
}

/// [`pack`] into tunnel `teid` of `ep`, each G-PDU's header the tunnel's (counted as sent):
/// the size of each G-PDU, how many there are and the far end to send them to.
pub fn pack_for(
    ep: &mut Endpoint,
    teid: u32,
    (frame, g): (&[u8], &Gso),
    cut: &mut Vec<u8>,
    strip_ethernet: bool,
    out: &mut Vec<u8>,
) -> Option<(u16, u64, Ipv4Addr)> {
    cut.resize(CUT_LEN, 0);
    let mut to = None;
    let header = |len| {
        let (h, t) = ep.g_pdu_header(teid, len)?;
        to = Some(t);
        Some(h)
    };
    let (size, n) = pack(frame, g, cut, strip_ethernet, header, out)?;
    Some((size, n as u64, to?))
}

/// The G-PDUs in `frame` if it is a UDP super-frame ([`Gso::is_udp_segments`]) to the
/// GTP-U port: Ethernet, IPv4 without options and not a fragment, its header's checksum
/// right, UDP whose length is the frame's, each datagram big enough for a GTP-U header. `None` for
/// anything else (which the caller cuts and takes packet by packet). The UDP checksum is
/// partial, as the sender's offload leaves it: the datagrams' checksums are made where the
/// super-frame is cut.
pub fn g_pdus<'a>(frame: &'a mut [u8], g: &Gso) -> Option<GPdus<'a>> {
    let size = usize::from(g.gso_size);
    if !g.is_udp_segments() || size < HEADER_LEN || frame.len() < 42 + HEADER_LEN {
        return None;
    }
    // Ethernet, IPv4, UDP whose length is the frame's; no IP options, no fragment, the IP
    // header's checksum right, to the GTP-U port.
    if gso::udp4_layout(frame).ok()? != 34 {
        return None;
    }
    let ip = &frame[14..];
    if ip[6] & 0x3f != 0
        || ip[7] != 0
        || usize::from(u16::from_be_bytes([ip[2], ip[3]])) != ip.len()
        || d11_wire::ones_sum(&ip[..20]) != 0xffff
        || u16::from_be_bytes([ip[22], ip[23]]) != d11_wire::gtpu::UDP_PORT
    {
        return None;
    }
    let (src, dst) = (d11_wire::ip::src(ip), d11_wire::ip::dst(ip));
    let payload = &mut frame[42..];
    if !payload.len().is_multiple_of(size) && payload.len() % size < HEADER_LEN {
        return None;
    }
    Some(GPdus {
        src,
        dst,
        payload,
        size,
    })
}

/// Packs the segments of the TCP/IPv4 super-frame `frame` (as `g` describes it) into `out`
/// as G-PDUs one after the other: for each, the header `header(len)` gives for a T-PDU of
/// `len` octets, then the T-PDU, the segment's Ethernet frame or (`strip_ethernet`) its IP
/// packet. `cut` is where each segment is made. Returns the size of each G-PDU (the last may
/// be shorter) and how many there are, or `None` if the frame could not be cut or `header`
/// refused (then `out` holds nothing of use).
pub fn pack(
    frame: &[u8],
    g: &Gso,
    cut: &mut [u8],
    strip_ethernet: bool,
    mut header: impl FnMut(usize) -> Option<[u8; HEADER_LEN]>,
    out: &mut Vec<u8>,
) -> Option<(u16, usize)> {
    out.clear();
    let skip = if strip_ethernet { 14 } else { 0 };
    let mut size = 0;
    let mut ok = true;
    let n = gso::segment(frame, g, cut, |s| {
        let Some(tpdu) = s.get(skip..).filter(|_| ok) else {
            ok = false;
            return;
        };
        match header(tpdu.len()) {
            Some(h) => {
                if size == 0 {
                    size = HEADER_LEN + tpdu.len();
                }
                out.extend_from_slice(&h);
                out.extend_from_slice(tpdu);
            }
            None => ok = false,
        }
    })
    .ok()?;
    (ok && size > 0 && size <= usize::from(u16::MAX)).then_some((size as u16, n))
}

/// The Ethernet header of a frame (its first 14 octets).
pub fn ethernet_of(frame: &[u8]) -> Option<[u8; 14]> {
    frame.get(..14)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::gtpu::{MessageType, Packet};

    /// A TCP/IPv4 super-frame of `n` octets of data, MSS 1000, checksum partial.
    fn tcp_super_frame(n: usize) -> (Vec<u8>, Gso) {
        let mut f = vec![0u8; 54 + n];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x10]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x20]);
        f[12..14].copy_from_slice(&[8, 0]);
        let (a, b) = (Ipv4Addr::new(10, 45, 0, 2), Ipv4Addr::new(198, 51, 100, 7));
        d11_wire::ip::write_header(&mut f[14..34], 40 + n, 64, 6, a, b);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5201u16.to_be_bytes());
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[42..46].copy_from_slice(&1u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = 0x18;
        f[48..50].copy_from_slice(&500u16.to_be_bytes());
        for (i, x) in f[54..].iter_mut().enumerate() {
            *x = (i % 247) as u8;
        }
        let g = gso::offload_tcp4(&mut f, 1000).unwrap();
        (f, g)
    }

    #[test]
    fn segments_go_behind_their_headers_and_come_back_as_the_super_frame() {
        let (f, g) = tcp_super_frame(4500);
        let mut cut = vec![0u8; 2000];
        for strip in [false, true] {
            let mut out = Vec::new();
            let mut lens = Vec::new();
            let (size, n) = pack(
                &f,
                &g,
                &mut cut,
                strip,
                |len| {
                    lens.push(len);
                    let mut h = [0u8; HEADER_LEN];
                    d11_wire::gtpu::Repr::g_pdu(77, len).emit(&mut h).ok()?;
                    Some(h)
                },
                &mut out,
            )
            .unwrap();
            let t = if strip { 0 } else { 14 };
            assert_eq!(n, 5);
            assert_eq!(usize::from(size), 8 + t + 1040);
            assert_eq!(lens, [t + 1040, t + 1040, t + 1040, t + 1040, t + 540]);
            let mut tpdus = Vec::new();
            for c in out.chunks(usize::from(size)) {
                let p = Packet::new_checked(c).unwrap();
                assert_eq!((p.message_type(), p.teid()), (MessageType::GPdu, 77));
                assert_eq!(usize::from(p.length()), c.len() - 8);
                tpdus.push(c[8 + t..].to_vec());
            }
            let eth = ethernet_of(&f).unwrap();
            let mut back = Vec::new();
            let m = gso::coalesce_tcp4(&eth, tpdus.iter().map(|p| &p[..]), &mut back).unwrap();
            assert_eq!((back, m), (f.clone(), g), "the same super-frame");
        }
        // A header refused (the tunnel gone): nothing.
        let mut out = Vec::new();
        assert_eq!(pack(&f, &g, &mut cut, true, |_| None, &mut out), None);
    }

    /// A UDP super-frame to the GTP-U port with `n` octets of payload.
    fn udp_super_frame(n: usize) -> Vec<u8> {
        let mut f = vec![0u8; 42 + n];
        f[12..14].copy_from_slice(&[8, 0]);
        let (a, b) = (Ipv4Addr::new(172, 16, 1, 2), Ipv4Addr::new(172, 16, 1, 3));
        d11_wire::ip::write_header(&mut f[14..34], 28 + n, 64, 17, a, b);
        f[34..36].copy_from_slice(&2152u16.to_be_bytes());
        f[36..38].copy_from_slice(&2152u16.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + n) as u16).to_be_bytes());
        f
    }

    #[test]
    fn only_a_udp_super_frame_to_the_gtp_u_port_is_read_as_g_pdus() {
        let mut f = udp_super_frame(3 * 100 + 50);
        let g = Gso::udp_segments(100);
        let p = g_pdus(&mut f, &g).unwrap();
        assert_eq!(p.dst, Ipv4Addr::new(172, 16, 1, 3));
        assert_eq!(
            p.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [100, 100, 100, 50]
        );
        assert!(g_pdus(&mut f, &Gso::NONE).is_none(), "not a super-frame");
        assert!(
            g_pdus(&mut f, &Gso::udp_segments(4)).is_none(),
            "no room for a header"
        );
        let mut other = f.clone();
        other[37] = 0x69; // port 2153
        assert!(g_pdus(&mut other, &g).is_none());
        let mut bad = f.clone();
        bad[24] ^= 1; // the IP checksum
        assert!(g_pdus(&mut bad, &g).is_none());
        let mut short = f.clone();
        short[39] ^= 1; // a UDP length that is not the frame's
        assert!(g_pdus(&mut short, &g).is_none());
        let mut tail = udp_super_frame(3 * 100 + 5);
        assert!(
            g_pdus(&mut tail, &g).is_none(),
            "a last datagram of 5 octets"
        );
    }
}
