//! Segmentation offload metadata and software segmentation: the `virtio_net_hdr` a TAP opened
//! with `IFF_VNET_HDR` puts before every frame (Linux `include/uapi/linux/virtio_net.h`, the
//! virtio specification §5.1.6), and what to do with a frame it describes when the next device
//! cannot take it as it is.
//!
//! With offloads on, the kernel hands a TAP TCP "super-frames" of up to 64 KiB: one Ethernet,
//! IP and TCP header over the data of many segments (`gso_type` TCPV4, `gso_size` the MSS),
//! with the TCP checksum left partial (`NEEDS_CSUM`: the pseudo-header's sum in the field, to be
//! completed over `csum_start..`). A program that forwards such a frame whole does one read and
//! one write for what would have been forty-four frames each way; a program that must see
//! segments, or a port without offloads, cuts it here as the kernel's GSO would.
//!
//! Since Linux 6.17 a TAP also takes and hands out super-frames *inside a UDP tunnel*
//! (`TUN_F_UDP_TUNNEL_GSO`): outer Ethernet, IPv4 and UDP (VXLAN's), then the inner frame's
//! headers over the data of many inner TCP segments. The header is then the 24-octet
//! `struct virtio_net_hdr_v1_hash_tunnel`, whose last two fields say where the outer UDP
//! header and the inner IP header start; `gso_type` is the inner type or'ed with
//! [`GSO_UDP_TUNNEL_IPV4`], and `csum_start` points at the inner TCP header.

use crate::ip;

/// `flags`: the checksum at `csum_start + csum_offset` is partial and must be completed.
pub const NEEDS_CSUM: u8 = 1;
/// `flags`: the checksums were checked already (the kernel's `CHECKSUM_UNNECESSARY`).
pub const DATA_VALID: u8 = 2;
/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation (Linux's `SKB_GSO_UDP_L4`, `TUN_F_USO4`): one Ethernet, IP and UDP header
/// over many datagrams' payloads, each `gso_size` octets (the last the rest); the UDP checksum
/// partial, its pseudo-header counting the whole length. Each segment is a datagram of its
/// own: a tunnel's packets one after the other (G-PDUs, each whole) travel as one.
pub const GSO_UDP_L4: u8 = 5;
/// Or'ed into `gso_type`: the TCP segments carry ECN's CWR on the first one only.
pub const GSO_ECN: u8 = 0x80;
/// Or'ed into `gso_type`: the segments are inside a UDP tunnel over IPv4 (or IPv6).
pub const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
pub const GSO_UDP_TUNNEL_IPV6: u8 = 0x40;
/// `flags`: each segment's outer UDP checksum is to be computed (else it is zero).
pub const UDP_TUNNEL_CSUM: u8 = 8;

/// The metadata of one frame, as the 10-octet `struct virtio_net_hdr` carries it (little
/// endian, as a TAP without `TUNSETVNETBE` uses on this machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gso {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// In a UDP tunnel: where the outer UDP header and the inner IP header start (zero
    /// otherwise). Carried only by the 24-octet header ([`Gso::TUNNEL_LEN`]).
    pub outer_th: u16,
    pub inner_nh: u16,
}

/// Why a frame could not be segmented or completed (counted and dropped by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    #[error("a GSO type other than TCP over IPv4")]
    Unsupported,
    #[error("headers or offsets that do not fit the frame")]
    Malformed,
    #[error("a segment larger than the buffer")]
    TooBig,
}

impl Gso {
    /// A frame that needs nothing done.
    pub const NONE: Gso = Gso {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
        outer_th: 0,
        inner_nh: 0,
    };
    /// The header's size on the wire of the TAP: `struct virtio_net_hdr`.
    pub const LEN: usize = 10;
    /// With UDP-tunnel offloads: `struct virtio_net_hdr_v1_hash_tunnel` (the 10 octets, the
    /// number of buffers, 8 of hash report, then the two tunnel offsets).
    pub const TUNNEL_LEN: usize = 24;

    /// Reads a header of [`Gso::LEN`] or [`Gso::TUNNEL_LEN`] octets (a shorter slice reads
    /// as zeros).
    pub fn parse(b: &[u8]) -> Gso {
        let u = |i: usize| match (b.get(i), b.get(i + 1)) {
            (Some(&lo), Some(&hi)) => u16::from_le_bytes([lo, hi]),
            _ => 0,
        };
        Gso {
            flags: b.first().copied().unwrap_or(0),
            gso_type: b.get(1).copied().unwrap_or(0),
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
            outer_th: u(20),
            inner_nh: u(22),
        }
    }

    /// The header in the TAP's format: the first `out.len()` octets of the 24 (10 or 24).
    pub fn emit_into(&self, out: &mut [u8]) {
        let mut b = [0u8; Self::TUNNEL_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[20..22].copy_from_slice(&self.outer_th.to_le_bytes());
        b[22..24].copy_from_slice(&self.inner_nh.to_le_bytes());
        let n = out.len().min(Self::TUNNEL_LEN);
        out[..n].copy_from_slice(&b[..n]);
    }

    /// The 10-octet header.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        self.emit_into(&mut b);
        b
    }

    /// Metadata of a UDP/IPv4 super-frame (Ethernet, then IPv4 without options, then UDP)
    /// whose datagrams carry `size` octets each: what [`segment`] cuts and a TAP with
    /// `TUN_F_USO4` takes whole. The UDP header must hold the length of the whole and the
    /// pseudo-header's sum ([`udp4_partial`]).
    pub fn udp_segments(size: u16) -> Gso {
        Gso {
            flags: NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 14 + 20 + 8,
            gso_size: size,
            csum_start: 14 + 20,
            csum_offset: 6,
            outer_th: 0,
            inner_nh: 0,
        }
    }

    /// UDP segmentation ([`GSO_UDP_L4`]).
    pub fn is_udp_segments(&self) -> bool {
        self.gso_type & !GSO_ECN == GSO_UDP_L4
    }

    /// Segments inside a UDP tunnel (a VXLAN super-frame).
    pub fn is_tunnel(&self) -> bool {
        self.gso_type & (GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6) != 0
    }

    /// The same segments wrapped in `outer` more octets of headers in front (a tunnel's):
    /// every offset moves by `outer`, and the type says "in a UDP tunnel over IPv4" whose UDP
    /// header starts at `udp`. A frame with only a partial checksum stays one frame.
    pub fn wrapped(&self, outer: u16, udp: u16) -> Gso {
        // (Saturating: offsets come from a TAP's header, and nothing that large is sent.)
        let mut g = Gso {
            hdr_len: self.hdr_len.saturating_add(outer),
            csum_start: self.csum_start.saturating_add(outer),
            ..*self
        };
        if !self.is_single() {
            g.gso_type |= GSO_UDP_TUNNEL_IPV4;
            g.outer_th = udp;
            g.inner_nh = outer.saturating_add(14);
        }
        g
    }

    /// What is left once the first `outer` octets (the tunnel's headers) are taken off: the
    /// inner frame's metadata, or `None` if the checksum to complete or the tunnel's inner
    /// frame is not where `outer` says (a partial checksum in the outer headers needs
    /// nothing once they are gone).
    pub fn unwrapped(&self, outer: u16) -> Option<Gso> {
        if self.is_tunnel() {
            if self.inner_nh != outer.saturating_add(14)
                || self.csum_start < outer
                || self.hdr_len < outer
                || self.gso_type & GSO_UDP_TUNNEL_IPV6 != 0
            {
                return None;
            }
            return Some(Gso {
                flags: self.flags & NEEDS_CSUM,
                gso_type: self.gso_type & !(GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6),
                hdr_len: self.hdr_len - outer,
                gso_size: self.gso_size,
                csum_start: self.csum_start - outer,
                csum_offset: self.csum_offset,
                outer_th: 0,
                inner_nh: 0,
            });
        }
        if !self.is_single() {
            return None;
        }
        if self.flags & NEEDS_CSUM == 0 || self.csum_start < outer {
            return Some(Gso::NONE);
        }
        Some(Gso {
            flags: NEEDS_CSUM,
            hdr_len: self.hdr_len.saturating_sub(outer),
            csum_start: self.csum_start - outer,
            outer_th: 0,
            inner_nh: 0,
            ..*self
        })
    }

    /// A frame as any device and any program takes it: complete, and one segment.
    pub fn is_plain(&self) -> bool {
        self.flags & NEEDS_CSUM == 0 && self.is_single()
    }

    /// One segment (the checksum may still be partial).
    pub fn is_single(&self) -> bool {
        self.gso_type & !GSO_ECN == GSO_NONE
    }
}

/// Completes a partial checksum in place (the field holds the pseudo-header's sum; the sum
/// over `csum_start..` is complemented into it). A UDP checksum of zero is sent as all ones.
pub fn complete_checksum(frame: &mut [u8], g: &Gso) -> Result<(), GsoError> {
    if g.flags & NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(g.csum_start);
    let at = start + usize::from(g.csum_offset);
    if at + 2 > frame.len() {
        return Err(GsoError::Malformed);
    }
    let mut c = !crate::ones_sum(&frame[start..]);
    if g.csum_offset == 6 && c == 0 {
        // UDP (its checksum is at offset 6; TCP's at 16): zero means "none".
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Turns a TCP/IPv4 frame with a complete checksum into what a kernel with TSO hands a TAP:
/// the checksum partial (the pseudo-header's sum, its length field that of the whole segment)
/// and, if `gso_size` is not zero, one super-frame of segments of that size. Returns its
/// metadata. (Tests, and anything that makes offloaded frames, start here.)
pub fn offload_tcp4(frame: &mut [u8], gso_size: u16) -> Result<Gso, GsoError> {
    let (tcp, data) = tcp4_layout(frame, 0)?;
    let (src, dst) = (ip::src(&frame[14..]), ip::dst(&frame[14..]));
    let mut ph = [0u8; 12];
    ph[0..4].copy_from_slice(&src.octets());
    ph[4..8].copy_from_slice(&dst.octets());
    ph[9] = 6;
    ph[10..12].copy_from_slice(&((frame.len() - tcp) as u16).to_be_bytes());
    frame[tcp + 16..tcp + 18].copy_from_slice(&crate::ones_sum(&ph).to_be_bytes());
    Ok(Gso {
        flags: NEEDS_CSUM,
        gso_type: if gso_size == 0 { GSO_NONE } else { GSO_TCPV4 },
        hdr_len: data as u16,
        gso_size,
        csum_start: tcp as u16,
        csum_offset: 16,
        outer_th: 0,
        inner_nh: 0,
    })
}

/// Makes the UDP checksum of a UDP/IPv4 frame partial, as a kernel with checksum offload
/// leaves it: the pseudo-header's sum (addresses, protocol, the UDP length) in the field.
pub fn udp4_partial(frame: &mut [u8]) -> Result<(), GsoError> {
    let udp = udp4_layout(frame)?;
    let (src, dst) = (ip::src(&frame[14..]), ip::dst(&frame[14..]));
    let mut ph = [0u8; 12];
    ph[0..4].copy_from_slice(&src.octets());
    ph[4..8].copy_from_slice(&dst.octets());
    ph[9] = 17;
    ph[10..12].copy_from_slice(&frame[udp + 4..udp + 6]);
    frame[udp + 6..udp + 8].copy_from_slice(&crate::ones_sum(&ph).to_be_bytes());
    Ok(())
}

/// The offset of a UDP/IPv4 frame's UDP header, its length field checked against the frame.
pub fn udp4_layout(frame: &[u8]) -> Result<usize, GsoError> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 {
        return Err(GsoError::Malformed);
    }
    let udp = 14 + ip::header_len(&frame[14..]);
    if frame[14 + 9] != 17 || udp < 34 || frame.len() < udp + 8 {
        return Err(GsoError::Malformed);
    }
    if usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]])) != frame.len() - udp {
        return Err(GsoError::Malformed);
    }
    Ok(udp)
}

/// The offsets of a TCP/IPv4 frame's headers, its Ethernet header at `base`: (TCP, data).
fn tcp4_layout(frame: &[u8], base: usize) -> Result<(usize, usize), GsoError> {
    let ipo = base + 14;
    if frame.len() < ipo + 20 || frame[base + 12..ipo] != [0x08, 0x00] || frame[ipo] >> 4 != 4 {
        return Err(GsoError::Malformed);
    }
    let tcp = ipo + ip::header_len(&frame[ipo..]);
    if frame[ipo + 9] != 6 || tcp < ipo + 20 || frame.len() < tcp + 20 {
        return Err(GsoError::Malformed);
    }
    let data = tcp + usize::from(frame[tcp + 12] >> 4) * 4;
    if data < tcp + 20 || data > frame.len() {
        return Err(GsoError::Malformed);
    }
    Ok((tcp, data))
}

/// The outer headers of a UDP-tunnel super-frame, checked: (the outer UDP header's offset,
/// the inner Ethernet header's).
fn tunnel_layout(frame: &[u8], g: &Gso) -> Result<(usize, usize), GsoError> {
    if g.gso_type & GSO_UDP_TUNNEL_IPV6 != 0 {
        return Err(GsoError::Unsupported);
    }
    let (udp, inner_nh) = (usize::from(g.outer_th), usize::from(g.inner_nh));
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 {
        return Err(GsoError::Malformed);
    }
    if frame[14 + 9] != 17 || udp != 14 + ip::header_len(&frame[14..]) || inner_nh < udp + 8 + 14 {
        return Err(GsoError::Malformed);
    }
    Ok((udp, inner_nh - 14))
}

/// The length of the largest frame `frame` stands for once cut (itself, if it is one
/// segment): its headers and one `gso_size` of data, the outer headers too for a tunnel
/// super-frame. Read from the headers, not from `hdr_len`: a TAP puts the length of the
/// kernel's linear part there, which may hold data as well. A frame whose headers cannot be
/// read counts as itself (too big to pass whole, so it is cut, and the cut refuses it).
pub fn largest_segment(frame: &[u8], g: &Gso) -> usize {
    if g.is_single() {
        return frame.len();
    }
    if g.is_udp_segments() {
        return match udp4_layout(frame) {
            Ok(udp) => (udp + 8 + usize::from(g.gso_size)).min(frame.len()),
            Err(_) => frame.len(),
        };
    }
    let base = if g.is_tunnel() {
        tunnel_layout(frame, g).map(|(_, b)| b)
    } else {
        Ok(0)
    };
    match base.and_then(|b| tcp4_layout(frame, b)) {
        Ok((_, data)) => (data + usize::from(g.gso_size)).min(frame.len()),
        Err(_) => frame.len(),
    }
}

/// Cuts a TCP/IPv4 super-frame into the segments it stands for, as Linux's `tcp_gso_segment`
/// does: each gets the headers, `gso_size` octets of data (the last the rest), the IP total
/// length, an IP identification one more than the previous, its sequence number, FIN and PSH
/// on the last only, CWR on the first only, and complete checksums. Each segment is built in
/// `buf` and handed to `emit`; a frame that is one segment already is completed and handed on.
///
/// A super-frame inside a UDP tunnel (VXLAN) is cut the same way inside, and each segment
/// gets the outer headers as Linux's `skb_udp_tunnel_segment` gives them: the outer IP total
/// length, identification and checksum, the UDP length, and a UDP checksum of zero (or a
/// complete one if `flags` has [`UDP_TUNNEL_CSUM`]).
///
/// A UDP super-frame ([`GSO_UDP_L4`]) is cut as Linux's `__udp_gso_segment` cuts it: each
/// datagram gets the headers and `gso_size` octets of the payload (the last the rest), its
/// own IP total length, identification and checksum, UDP length and complete checksum.
pub fn segment(
    frame: &[u8],
    g: &Gso,
    buf: &mut [u8],
    mut emit: impl FnMut(&mut [u8]),
) -> Result<usize, GsoError> {
    if g.is_single() {
        let n = frame.len();
        let out = buf.get_mut(..n).ok_or(GsoError::TooBig)?;
        out.copy_from_slice(frame);
        complete_checksum(out, g)?;
        emit(out);
        return Ok(1);
    }
    if g.is_udp_segments() {
        return segment_udp(frame, g, buf, emit);
    }
    let (outer_udp, base) = if g.is_tunnel() {
        let (u, b) = tunnel_layout(frame, g)?;
        (Some(u), b)
    } else {
        (None, 0)
    };
    if g.gso_type & !(GSO_ECN | GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6) != GSO_TCPV4 {
        return Err(GsoError::Unsupported);
    }
    let (tcp, data) = tcp4_layout(frame, base)?;
    let mss = usize::from(g.gso_size);
    if mss == 0 {
        return Err(GsoError::Malformed);
    }
    let payload = &frame[data..];
    // The largest segment: a whole gso_size, or all the data if there is less.
    if data + mss.min(payload.len()) > buf.len() {
        return Err(GsoError::TooBig);
    }
    let ipo = base + 14;
    let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let id = be16(ipo + 4);
    let outer_id = be16(18);
    let seq = u32::from_be_bytes([
        frame[tcp + 4],
        frame[tcp + 5],
        frame[tcp + 6],
        frame[tcp + 7],
    ]);
    let flags = frame[tcp + 13];
    let (src, dst) = (ip::src(&frame[ipo..]), ip::dst(&frame[ipo..]));
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let len = data + chunk.len();
        let out = &mut buf[..len];
        out[..data].copy_from_slice(&frame[..data]);
        out[data..].copy_from_slice(chunk);
        // IP: length, identification, checksum.
        out[ipo + 2..ipo + 4].copy_from_slice(&((len - ipo) as u16).to_be_bytes());
        out[ipo + 4..ipo + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        crate::fill_ipv4_checksum(&mut out[ipo..tcp]);
        // TCP: sequence number, flags, checksum.
        let s = seq.wrapping_add((i * mss) as u32);
        out[tcp + 4..tcp + 8].copy_from_slice(&s.to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(0x01 | 0x08); // FIN, PSH: the last segment's
        }
        if i > 0 {
            f &= !0x80; // CWR: the first segment's
        }
        out[tcp + 13] = f;
        out[tcp + 16] = 0;
        out[tcp + 17] = 0;
        let c = ip::pseudo_checksum(src, dst, 6, &out[tcp..]);
        out[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        if let Some(udp) = outer_udp {
            out[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
            out[18..20].copy_from_slice(&outer_id.wrapping_add(i as u16).to_be_bytes());
            crate::fill_ipv4_checksum(&mut out[14..udp]);
            out[udp + 4..udp + 6].copy_from_slice(&((len - udp) as u16).to_be_bytes());
            out[udp + 6..udp + 8].fill(0);
            if g.flags & UDP_TUNNEL_CSUM != 0 {
                let (osrc, odst) = (ip::src(&out[14..]), ip::dst(&out[14..]));
                let c = ip::udp_checksum(osrc, odst, &out[udp..]);
                out[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
        emit(out);
    }
    Ok(count)
}

/// Builds one TCP/IPv4 super-frame in `out` from IP packets that are consecutive segments of
/// one flow, as Linux's GRO merges them: `eth` (the Ethernet header to give it), then the
/// first packet's headers and every packet's data. Each packet must be whole and checked (IP
/// and TCP checksums right, no IP options or fragments), and each must follow the one before:
/// the same addresses, ports, TTL, TOS, acknowledgement, window, TCP options and flags, its
/// sequence number where the last one's data ended, as much data as the first (the last may
/// have less), no SYN, RST or URG, PSH or FIN on the last only, CWR on the first only.
/// Returns the super-frame's metadata ([`offload_tcp4`]'s: the checksum partial), or `None`
/// when the packets are not that (or are fewer than two): the caller sends them as they are.
pub fn coalesce_tcp4<'a>(
    eth: &[u8; 14],
    packets: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Option<Gso> {
    out.clear();
    let (mut mss, mut hl, mut next_seq, mut count) = (0, 0, 0u32, 0);
    let (mut ended, mut flags_last) = (false, 0u8);
    for p in packets {
        if ended {
            return None;
        }
        let data = checked_tcp4(p)?;
        let len = p.len() - data;
        let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
        let flags = p[33];
        if flags & (0x02 | 0x04 | 0x20) != 0 || len == 0 {
            return None; // SYN, RST, URG; or no data
        }
        if count == 0 {
            out.extend_from_slice(eth);
            out.extend_from_slice(&p[..data]);
            (mss, hl) = (len, data);
        } else {
            let first = &out[14..14 + hl];
            // IP: version, IHL, TOS; DF; TTL, protocol; addresses. TCP: ports; acknowledgement;
            // data offset; window; urgent pointer; options.
            let same = data == hl
                && p[0..2] == first[0..2]
                && p[6..10] == first[6..10]
                && p[12..20] == first[12..20]
                && p[20..24] == first[20..24]
                && p[28..33] == first[28..33]
                && p[34..36] == first[34..36]
                && p[38..data] == first[38..data]
                && (flags & !(0x01 | 0x08)) == (first[33] & !(0x01 | 0x08 | 0x80));
            if !same || seq != next_seq || len > mss {
                return None;
            }
        }
        ended = len < mss || flags & (0x01 | 0x08) != 0;
        flags_last = flags;
        next_seq = seq.wrapping_add(len as u32);
        count += 1;
        if out.len() + len > 14 + usize::from(u16::MAX) {
            return None;
        }
        out.extend_from_slice(&p[data..]);
    }
    if count < 2 {
        return None;
    }
    let total = out.len() - 14;
    let ipo = &mut out[14..];
    ipo[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    crate::fill_ipv4_checksum(&mut ipo[..20]);
    let cwr = ipo[33] & 0x80 != 0;
    ipo[33] |= flags_last & (0x01 | 0x08);
    let mut g = offload_tcp4(out, mss as u16).ok()?;
    if cwr {
        g.gso_type |= GSO_ECN;
    }
    Some(g)
}

/// Where the data of a whole, checked TCP/IPv4 packet starts (its TCP header is at 20): its
/// total length the packet's, no options or fragments, both checksums right.
fn checked_tcp4(p: &[u8]) -> Option<usize> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != 6 || p[6] & 0x3f != 0 || p[7] != 0 {
        return None;
    }
    if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len()
        || crate::ones_sum(&p[..20]) != 0xffff
    {
        return None;
    }
    let data = 20 + usize::from(p[32] >> 4) * 4;
    if data < 40 || data > p.len() {
        return None;
    }
    // Right when the sum over the pseudo-header and the segment, checksum included, is all
    // ones: what is left to complement is zero.
    (ip::pseudo_checksum(ip::src(p), ip::dst(p), 6, &p[20..]) == 0).then_some(data)
}

/// [`segment`] for a UDP super-frame.
fn segment_udp(
    frame: &[u8],
    g: &Gso,
    buf: &mut [u8],
    mut emit: impl FnMut(&mut [u8]),
) -> Result<usize, GsoError> {
    let udp = udp4_layout(frame)?;
    let size = usize::from(g.gso_size);
    if size == 0 {
        return Err(GsoError::Malformed);
    }
    let payload = &frame[udp + 8..];
    if udp + 8 + size.min(payload.len()) > buf.len() {
        return Err(GsoError::TooBig);
    }
    let id = u16::from_be_bytes([frame[18], frame[19]]);
    let (src, dst) = (ip::src(&frame[14..]), ip::dst(&frame[14..]));
    let count = payload.len().div_ceil(size).max(1);
    for i in 0..count {
        let chunk = &payload[(i * size).min(payload.len())..((i + 1) * size).min(payload.len())];
        let len = udp + 8 + chunk.len();
        let out = &mut buf[..len];
        out[..udp + 8].copy_from_slice(&frame[..udp + 8]);
        out[udp + 8..].copy_from_slice(chunk);
        out[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        out[18..20].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        crate::fill_ipv4_checksum(&mut out[14..udp]);
        out[udp + 4..udp + 6].copy_from_slice(&((len - udp) as u16).to_be_bytes());
        out[udp + 6..udp + 8].fill(0);
        let c = ip::udp_checksum(src, dst, &out[udp..]);
        out[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
        emit(out);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket};
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 30);

    /// A TCP/IPv4 super-frame as the kernel hands it: `n` octets of data, checksum partial.
    fn super_frame(n: usize, flags: u8) -> (Vec<u8>, Gso) {
        let mut f = vec![0u8; 14 + 20 + 20 + n];
        f[12..14].copy_from_slice(&[8, 0]);
        ip::write_header(&mut f[14..34], 40 + n, 64, 6, SRC, DST);
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        crate::fill_ipv4_checksum(&mut f[14..34]);
        let t = 34;
        f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&9000u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&0xffff_f000u32.to_be_bytes());
        f[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = flags;
        f[t + 14..t + 16].copy_from_slice(&502u16.to_be_bytes());
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        let g = offload_tcp4(&mut f, 1448).unwrap();
        (f, g)
    }

    #[test]
    fn the_header_round_trips() {
        let g = Gso {
            flags: 1,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            outer_th: 0,
            inner_nh: 0,
        };
        assert_eq!(Gso::parse(&g.emit()), g);
        let t = g.wrapped(50, 34);
        let mut b = [0u8; Gso::TUNNEL_LEN];
        t.emit_into(&mut b);
        assert_eq!(Gso::parse(&b), t);
        assert_eq!(b[22..24], [64, 0], "inner_nh, little endian");
        assert_eq!(
            Gso::parse(&t.emit()).inner_nh,
            0,
            "the short header has no offsets"
        );
        assert_eq!(g.emit()[4..6], [0xa8, 0x05], "little endian");
        assert!(!g.is_single() && !g.is_plain() && Gso::NONE.is_plain());
    }

    #[test]
    fn a_super_frame_becomes_valid_segments_that_carry_its_data() {
        let (f, g) = super_frame(10_000, 0x18 | 0x01); // ACK PSH FIN
        let mut buf = vec![0u8; 2000];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let n = segment(&f, &g, &mut buf, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!((n, segs.len()), (7, 7));
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let ipp = Ipv4Packet::new_checked(&s[14..]).unwrap();
            assert!(ipp.verify_checksum(), "IP checksum of segment {i}");
            let r = Ipv4Repr::parse(&ipp, &Default::default()).unwrap();
            assert_eq!(
                (r.src_addr, r.dst_addr, r.next_header),
                (SRC, DST, IpProtocol::Tcp)
            );
            assert_eq!(ipp.ident(), 0x1234 + i as u16);
            let t = TcpPacket::new_checked(ipp.payload()).unwrap();
            assert!(t.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)));
            assert_eq!(
                t.seq_number().0 as u32,
                0xffff_f000u32.wrapping_add(1448 * i as u32),
                "sequence numbers wrap"
            );
            let last = i == 6;
            assert_eq!((t.fin(), t.psh(), t.ack()), (last, last, true));
            assert_eq!(
                t.payload().len(),
                if last { 10_000 - 6 * 1448 } else { 1448 }
            );
            data.extend_from_slice(t.payload());
        }
        assert_eq!(&data[..], &f[54..]);
    }

    /// `inner` wrapped in Ethernet, IPv4, UDP (port 4789) and an 8-octet VXLAN header.
    fn in_vxlan(inner: &[u8], g: &Gso) -> (Vec<u8>, Gso) {
        let mut f = vec![0u8; 50];
        f[12..14].copy_from_slice(&[8, 0]);
        let (a, b) = (Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 12));
        ip::write_header(&mut f[14..34], 36 + inner.len(), 64, 17, a, b);
        f[18..20].copy_from_slice(&0x4000u16.to_be_bytes());
        crate::fill_ipv4_checksum(&mut f[14..34]);
        f[34..36].copy_from_slice(&50000u16.to_be_bytes());
        f[36..38].copy_from_slice(&4789u16.to_be_bytes());
        f[38..40].copy_from_slice(&((16 + inner.len()) as u16).to_be_bytes());
        f[42] = 0x08;
        f[46..49].copy_from_slice(&[0, 0x03, 0xe9]);
        f.extend_from_slice(inner);
        (f, g.wrapped(50, 34))
    }

    #[test]
    fn a_super_frame_in_vxlan_becomes_vxlan_segments_each_whole() {
        let (inner, ig) = super_frame(10_000, 0x18);
        let (f, g) = in_vxlan(&inner, &ig);
        assert!(g.is_tunnel() && !g.is_single());
        assert_eq!(
            g.unwrapped(50),
            Some(ig),
            "unwrapping gives the inner metadata back"
        );
        for csum in [false, true] {
            let g = Gso {
                flags: g.flags | if csum { UDP_TUNNEL_CSUM } else { 0 },
                ..g
            };
            let mut buf = vec![0u8; 2000];
            let mut segs: Vec<Vec<u8>> = Vec::new();
            assert_eq!(segment(&f, &g, &mut buf, |s| segs.push(s.to_vec())), Ok(7));
            let mut data = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                let outer = Ipv4Packet::new_checked(&s[14..]).unwrap();
                assert!(outer.verify_checksum(), "outer IP checksum of segment {i}");
                assert_eq!(usize::from(outer.total_len()), s.len() - 14);
                assert_eq!(outer.ident(), 0x4000 + i as u16);
                let u = smoltcp::wire::UdpPacket::new_checked(outer.payload()).unwrap();
                assert_eq!(usize::from(u.len()), s.len() - 34);
                if csum {
                    assert!(u.verify_checksum(
                        &IpAddress::Ipv4(outer.src_addr()),
                        &IpAddress::Ipv4(outer.dst_addr())
                    ));
                } else {
                    assert_eq!(u.checksum(), 0);
                }
                assert_eq!(&s[42..50], &f[42..50], "the VXLAN header");
                let ipp = Ipv4Packet::new_checked(&s[64..]).unwrap();
                assert!(ipp.verify_checksum());
                assert_eq!(ipp.ident(), 0x1234 + i as u16);
                let t = TcpPacket::new_checked(ipp.payload()).unwrap();
                assert!(t.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)));
                data.extend_from_slice(t.payload());
            }
            assert_eq!(&data[..], &inner[54..]);
        }
        // Offsets that do not fit the frame are refused.
        let mut buf = vec![0u8; 2000];
        for bad in [
            Gso { inner_nh: 40, ..g },
            Gso { outer_th: 30, ..g },
            Gso {
                gso_type: GSO_UDP_TUNNEL_IPV6 | GSO_TCPV4,
                ..g
            },
        ] {
            assert!(segment(&f, &bad, &mut buf, |_| {}).is_err(), "{bad:?}");
        }
        assert_eq!(Gso { inner_nh: 60, ..g }.unwrapped(50), None);
    }

    #[test]
    fn a_partial_checksum_inside_or_outside_a_tunnel_unwraps_as_it_should() {
        let (inner, mut ig) = super_frame(300, 0x18);
        ig.gso_type = GSO_NONE;
        let (_, g) = in_vxlan(&inner, &ig);
        assert!(g.is_single() && !g.is_tunnel());
        assert_eq!(g.csum_start, ig.csum_start + 50);
        assert_eq!(g.unwrapped(50), Some(ig));
        // The checksum to complete is the outer UDP's: nothing is left to do inside.
        let outer = Gso {
            csum_start: 34,
            csum_offset: 6,
            ..g
        };
        assert_eq!(outer.unwrapped(50), Some(Gso::NONE));
        assert_eq!(Gso::NONE.unwrapped(50), Some(Gso::NONE));
    }

    #[test]
    fn a_single_frame_with_a_partial_checksum_is_completed() {
        let (f, mut g) = super_frame(300, 0x18);
        g.gso_type = GSO_NONE;
        let mut buf = vec![0u8; 2000];
        let mut out = Vec::new();
        segment(&f, &g, &mut buf, |s| out = s.to_vec()).unwrap();
        let t = TcpPacket::new_checked(&out[34..]).unwrap();
        assert!(t.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)));
    }

    #[test]
    fn what_cannot_be_cut_is_refused_not_a_panic() {
        let (f, g) = super_frame(5000, 0x10);
        let mut small = vec![0u8; 1000];
        assert_eq!(segment(&f, &g, &mut small, |_| {}), Err(GsoError::TooBig));
        // Less data than one gso_size: one segment, the frame's size, fits a buffer of it.
        let (short, g9000) = super_frame(300, 0x10);
        let g9000 = Gso {
            gso_size: 9000,
            ..g9000
        };
        let mut exact = vec![0u8; short.len()];
        assert_eq!(segment(&short, &g9000, &mut exact, |_| {}), Ok(1));
        let mut buf = vec![0u8; 2000];
        let udp = Gso {
            gso_type: GSO_UDP,
            ..g
        };
        assert_eq!(
            segment(&f, &udp, &mut buf, |_| {}),
            Err(GsoError::Unsupported)
        );
        let zero = Gso { gso_size: 0, ..g };
        assert_eq!(
            segment(&f, &zero, &mut buf, |_| {}),
            Err(GsoError::Malformed)
        );
        for cut in [0, 13, 20, 34, 40, 53] {
            assert_eq!(
                segment(&f[..cut], &g, &mut buf, |_| {}),
                Err(GsoError::Malformed),
                "cut at {cut}"
            );
        }
        let mut bad = f.clone();
        bad[14 + 9] = 17;
        assert_eq!(
            segment(&bad, &g, &mut buf, |_| {}),
            Err(GsoError::Malformed)
        );
        let far = Gso {
            gso_type: GSO_NONE,
            csum_start: 60000,
            ..g
        };
        assert_eq!(segment(&f, &far, &mut buf, |_| {}), Err(GsoError::TooBig));
        let mut small_frame = f[..200].to_vec();
        assert_eq!(
            complete_checksum(&mut small_frame, &far),
            Err(GsoError::Malformed)
        );
    }

    #[test]
    fn a_udp_super_frame_becomes_whole_datagrams_each_with_its_checksum() {
        let data: Vec<u8> = (0..350).map(|i| (i * 7 % 253) as u8).collect();
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[8, 0]);
        ip::write_header(&mut f[14..34], 28 + data.len(), 64, 17, SRC, DST);
        f[18..20].copy_from_slice(&0xfffeu16.to_be_bytes());
        crate::fill_ipv4_checksum(&mut f[14..34]);
        f[34..36].copy_from_slice(&2152u16.to_be_bytes());
        f[36..38].copy_from_slice(&2152u16.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        f.extend_from_slice(&data);
        udp4_partial(&mut f).unwrap();
        let g = Gso::udp_segments(100);
        assert!(g.is_udp_segments() && !g.is_single() && !g.is_tunnel());
        assert_eq!(largest_segment(&f, &g), 142);
        let mut buf = vec![0u8; 2000];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        assert_eq!(segment(&f, &g, &mut buf, |s| segs.push(s.to_vec())), Ok(4));
        let mut got = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let ipp = Ipv4Packet::new_checked(&s[14..]).unwrap();
            assert!(ipp.verify_checksum(), "IP checksum of datagram {i}");
            assert_eq!(usize::from(ipp.total_len()), s.len() - 14);
            assert_eq!(ipp.ident(), 0xfffeu16.wrapping_add(i as u16), "wraps");
            let u = smoltcp::wire::UdpPacket::new_checked(ipp.payload()).unwrap();
            assert_eq!(usize::from(u.len()), s.len() - 34);
            assert!(u.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)));
            assert_eq!(u.payload().len(), if i == 3 { 50 } else { 100 });
            got.extend_from_slice(u.payload());
        }
        assert_eq!(got, data);
        // A UDP length that is not the frame's, a buffer too small, a size of zero: refused.
        let mut bad = f.clone();
        bad[38..40].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            segment(&bad, &g, &mut buf, |_| {}),
            Err(GsoError::Malformed)
        );
        assert_eq!(largest_segment(&bad, &g), bad.len());
        assert_eq!(
            segment(&f, &g, &mut buf[..100], |_| {}),
            Err(GsoError::TooBig)
        );
        let zero = Gso::udp_segments(0);
        assert_eq!(
            segment(&f, &zero, &mut buf, |_| {}),
            Err(GsoError::Malformed)
        );
        for cut in [0, 20, 34, 41] {
            assert!(
                segment(&f[..cut], &g, &mut buf, |_| {}).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn segments_of_one_flow_merge_into_the_super_frame_they_were_cut_from() {
        let (f, g) = super_frame(10_000, 0x18 | 0x01 | 0x80); // ACK PSH FIN CWR
        let mut buf = vec![0u8; 2000];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        segment(&f, &g, &mut buf, |s| segs.push(s.to_vec())).unwrap();
        let eth: [u8; 14] = f[..14].try_into().unwrap();
        let mut out = Vec::new();
        let m = coalesce_tcp4(&eth, segs.iter().map(|s| &s[14..]), &mut out).unwrap();
        assert_eq!((m.gso_size, m.gso_type), (1448, GSO_TCPV4 | GSO_ECN));
        assert_eq!((m.csum_start, m.csum_offset, m.hdr_len), (34, 16, 54));
        assert_eq!(out.len(), f.len());
        assert_eq!(&out[54..], &f[54..], "the data");
        let mut again: Vec<Vec<u8>> = Vec::new();
        segment(&out, &m, &mut buf, |s| again.push(s.to_vec())).unwrap();
        assert_eq!(again, segs, "cut again, the same segments");

        let ip = |v: &Vec<Vec<u8>>| v.iter().map(|s| s[14..].to_vec()).collect::<Vec<_>>();
        let merges = |v: &[Vec<u8>]| {
            let mut o = Vec::new();
            coalesce_tcp4(&eth, v.iter().map(|p| &p[..]), &mut o).is_some()
        };
        let good = ip(&segs);
        assert!(merges(&good));
        assert!(!merges(&good[..1]), "one is no super-frame");
        let mut gap = good.clone();
        gap.remove(3);
        assert!(!merges(&gap), "a segment missing");
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert!(!merges(&swapped), "out of order");
        let mut corrupt = good.clone();
        corrupt[2][100] ^= 1;
        assert!(!merges(&corrupt), "a TCP checksum wrong");
        let mut other_ack = good.clone();
        other_ack[4][28] ^= 1;
        assert!(!merges(&other_ack), "another acknowledgement");
        let mut spoofed = good.clone();
        spoofed[1][12] ^= 1;
        assert!(!merges(&spoofed), "another source (and a bad IP checksum)");
        let mut short = good.clone();
        let n = short[1].len() - 1;
        short[1].truncate(n);
        assert!(!merges(&short), "a total length that is not the packet's");
        // A segment with less data than the first ends the super-frame.
        let (f2, g2) = super_frame(3000, 0x10);
        let mut s2: Vec<Vec<u8>> = Vec::new();
        segment(
            &f2,
            &Gso {
                gso_size: 1000,
                ..g2
            },
            &mut buf,
            |s| s2.push(s[14..].to_vec()),
        )
        .unwrap();
        let (f3, g3) = super_frame(1500, 0x10);
        segment(
            &f3,
            &Gso {
                gso_size: 500,
                ..g3
            },
            &mut buf,
            |s| s2.push(s[14..].to_vec()),
        )
        .unwrap();
        assert_eq!(s2.len(), 6);
        assert!(merges(&s2[..3]));
        assert!(!merges(&s2[..4]), "a smaller segment from elsewhere");
    }
}
