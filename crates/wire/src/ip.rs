//! What every program reads and writes of IPv4 headers, in one place: the header's length,
//! the addresses, a header for a packet we originate, and the transport checksums over the
//! pseudo-header (RFC 791, 768, 793). Parsing of untrusted packets is `guard` and
//! `smoltcp::wire`; these are for packets already checked.

use core::net::Ipv4Addr;

/// The TTL of the packets our forwarding programs originate (tunnel headers, ICMP errors,
/// health checks), as Linux's `ip_default_ttl`; a program reports it as `default_ttl` in its
/// `interfaces` table.
pub const DEFAULT_TTL: u8 = 64;

/// The header's length in octets (IHL × 4); 0 for an empty buffer.
pub fn header_len(ip: &[u8]) -> usize {
    ip.first().map_or(0, |b| usize::from(b & 0x0f) * 4)
}

/// The source address (the header must be there).
pub fn src(ip: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])
}

/// The destination address (the header must be there).
pub fn dst(ip: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])
}

/// Writes a 20-octet header for a packet we send: DF (path-MTU friendly, as Linux does),
/// identification 0, the checksum filled.
pub fn write_header(b: &mut [u8], total: usize, ttl: u8, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    b[0] = 0x45;
    b[1] = 0;
    b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    b[4..6].fill(0);
    b[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    b[8] = ttl;
    b[9] = proto;
    b[12..16].copy_from_slice(&src.octets());
    b[16..20].copy_from_slice(&dst.octets());
    crate::fill_ipv4_checksum(&mut b[..20]);
}

/// The checksum of a transport segment over the IPv4 pseudo-header, ready to store; `seg` is
/// the whole segment with its checksum field zero.
pub fn pseudo_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = proto;
    // The length as the 16-bit field it is (a segment over 65535 octets is no IPv4 segment).
    pseudo[10..12].copy_from_slice(&(seg.len() as u16).to_be_bytes());
    !crate::ones_add(crate::ones_sum(&pseudo), crate::ones_sum(seg))
}

/// The UDP checksum (RFC 768): zero comes out as 0xffff, since zero means "none".
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    match pseudo_checksum(src, dst, 17, udp) {
        0 => 0xffff,
        s => s,
    }
}

/// Whether a received UDP datagram's checksum (non-zero, in place) is right: the sum over the
/// pseudo-header and the whole datagram, checksum included, is all ones. Reads in place.
pub fn udp_checksum_ok(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> bool {
    pseudo_checksum(src, dst, 17, udp) == 0
}

/// Whether a received TCP segment's checksum is right (the sum over the pseudo-header and the
/// whole segment, checksum included, is all ones). Reads in place.
pub fn tcp_checksum_ok(src: Ipv4Addr, dst: Ipv4Addr, tcp: &[u8]) -> bool {
    pseudo_checksum(src, dst, 6, tcp) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_we_write_checks_and_reads_back() {
        let mut b = [0xa5u8; 20];
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        write_header(&mut b, 48, 64, 17, s, d);
        assert_eq!(crate::internet_checksum(&b), 0);
        assert_eq!((header_len(&b), src(&b), dst(&b)), (20, s, d));
        assert_eq!(header_len(&[]), 0);
        // A UDP segment whose sum is zero is sent as 0xffff.
        let udp = [0u8; 8];
        let c = udp_checksum(s, d, &udp);
        assert_ne!(c, 0);
        let mut seg = udp;
        seg[6..8].copy_from_slice(&pseudo_checksum(s, d, 17, &udp).to_be_bytes());
        assert_eq!(pseudo_checksum(s, d, 17, &seg), 0);
        // Received: the checksum checks in place, 0xffff standing for a zero sum included.
        let mut seg = [0x12u8, 0x34, 0x00, 0x35, 0, 11, 0, 0, 1, 2, 3];
        let c = udp_checksum(s, d, &seg);
        seg[6..8].copy_from_slice(&c.to_be_bytes());
        assert!(udp_checksum_ok(s, d, &seg));
        seg[10] ^= 1;
        assert!(!udp_checksum_ok(s, d, &seg));
        let mut zero_sum = [0u8; 8];
        zero_sum[6..8].copy_from_slice(&udp_checksum(s, d, &[0u8; 8]).to_be_bytes());
        assert!(udp_checksum_ok(s, d, &zero_sum));
    }
}
