//! UDP for a router's owner: reading the datagrams addressed to it ([`parse_udp`], from
//! [`Hook::local`](crate::Hook::local)) and what it sends ([`Datagram`], through the outbox of
//! [`crate::program`]).

use std::net::Ipv4Addr;

/// A UDP datagram addressed to us, read from a validated IPv4 packet.
#[derive(Debug)]
pub struct Udp<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

/// Why a datagram to us was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpError {
    NotUdp,
    BadLength,
    BadChecksum,
}

/// Reads the UDP datagram in `ip` (an IPv4 packet the router validated: version, IHL, lengths,
/// header checksum). Checks the UDP length and, when present, the checksum.
pub fn parse_udp(ip: &[u8]) -> Result<Udp<'_>, UdpError> {
    if ip.len() < 20 || ip[9] != 17 {
        return Err(UdpError::NotUdp);
    }
    let ihl = d11_wire::ip::header_len(ip);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let udp = ip.get(ihl..total).ok_or(UdpError::BadLength)?;
    if udp.len() < 8 {
        return Err(UdpError::BadLength);
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if len < 8 || len > udp.len() {
        return Err(UdpError::BadLength);
    }
    let udp = &udp[..len];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let sum = u16::from_be_bytes([udp[6], udp[7]]);
    if sum != 0 && !d11_wire::ip::udp_checksum_ok(src, dst, udp) {
        return Err(UdpError::BadChecksum);
    }
    Ok(Udp {
        src,
        dst,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[8..],
    })
}

/// A datagram to send from one of our addresses.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}
