//! The first look at an untrusted frame: is it well-formed enough to act on?
//!
//! Every element runs [`check_frame`] before it trusts a frame, so that malformed input is
//! counted by reason ([`DropReason::name`]) and dropped in one place, and the code behind it
//! can index fields without fear.

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol,
    Ipv4Address, Ipv4Packet,
};

/// Why a frame was dropped before any element logic saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    EthernetTruncated,
    EthernetSourceMulticast,
    ArpMalformed,
    Ipv4Truncated,
    Ipv4BadVersion,
    Ipv4BadHeaderLength,
    Ipv4BadTotalLength,
    Ipv4BadChecksum,
    Ipv4BadSource,
    UnknownEthertype,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        Self::EthernetTruncated,
        Self::EthernetSourceMulticast,
        Self::ArpMalformed,
        Self::Ipv4Truncated,
        Self::Ipv4BadVersion,
        Self::Ipv4BadHeaderLength,
        Self::Ipv4BadTotalLength,
        Self::Ipv4BadChecksum,
        Self::Ipv4BadSource,
        Self::UnknownEthertype,
    ];

    /// A stable name for counters (`drop_<name>` in `d11 show`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::EthernetTruncated => "ethernet_truncated",
            Self::EthernetSourceMulticast => "ethernet_source_multicast",
            Self::ArpMalformed => "arp_malformed",
            Self::Ipv4Truncated => "ipv4_truncated",
            Self::Ipv4BadVersion => "ipv4_bad_version",
            Self::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            Self::Ipv4BadTotalLength => "ipv4_bad_total_length",
            Self::Ipv4BadChecksum => "ipv4_bad_checksum",
            Self::Ipv4BadSource => "ipv4_bad_source",
            Self::UnknownEthertype => "unknown_ethertype",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What a well-formed frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Arp {
        src_mac: EthernetAddress,
        dst_mac: EthernetAddress,
        arp: ArpRepr,
    },
    Ipv4 {
        src_mac: EthernetAddress,
        dst_mac: EthernetAddress,
        /// IPv4 header length in octets.
        header_len: usize,
        /// IPv4 total length (the frame may carry Ethernet padding after it).
        total_len: usize,
        protocol: IpProtocol,
        src: Ipv4Address,
        dst: Ipv4Address,
        ttl: u8,
    },
}

pub const ETHERNET_HEADER_LEN: usize = 14;

/// Validates Ethernet, and ARP or IPv4 headers (length, version, IHL, total length, checksum).
pub fn check_frame(frame: &[u8]) -> Result<Frame, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::EthernetTruncated)?;
    let src_mac = eth.src_addr();
    let dst_mac = eth.dst_addr();
    if src_mac.is_multicast() {
        return Err(DropReason::EthernetSourceMulticast);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let p = ArpPacket::new_checked(eth.payload()).map_err(|_| DropReason::ArpMalformed)?;
            let arp = ArpRepr::parse(&p).map_err(|_| DropReason::ArpMalformed)?;
            if let ArpRepr::EthernetIpv4 { operation, .. } = arp {
                if matches!(operation, ArpOperation::Unknown(_)) {
                    return Err(DropReason::ArpMalformed);
                }
            }
            Ok(Frame::Arp {
                src_mac,
                dst_mac,
                arp,
            })
        }
        EthernetProtocol::Ipv4 => {
            let b = eth.payload();
            if b.len() < 20 {
                return Err(DropReason::Ipv4Truncated);
            }
            if b[0] >> 4 != 4 {
                return Err(DropReason::Ipv4BadVersion);
            }
            let header_len = crate::ip::header_len(b);
            if header_len < 20 || header_len > b.len() {
                return Err(DropReason::Ipv4BadHeaderLength);
            }
            let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            if total_len < header_len || total_len > b.len() {
                return Err(DropReason::Ipv4BadTotalLength);
            }
            // A right header sums to all ones (RFC 1071), its checksum included.
            if crate::ones_sum(&b[..header_len]) != 0xffff {
                return Err(DropReason::Ipv4BadChecksum);
            }
            let p = Ipv4Packet::new_unchecked(b);
            let src = p.src_addr();
            if src.is_broadcast() || src.is_multicast() {
                return Err(DropReason::Ipv4BadSource);
            }
            Ok(Frame::Ipv4 {
                src_mac,
                dst_mac,
                header_len,
                total_len,
                protocol: p.next_header(),
                src,
                dst: p.dst_addr(),
                ttl: p.hop_limit(),
            })
        }
        _ => Err(DropReason::UnknownEthertype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    fn ipv4_frame() -> Vec<u8> {
        let mut f = hex!("020000000002 020000000001 0800").to_vec();
        // 20-octet header, 4 octets of payload, checksum filled below
        f.extend_from_slice(&hex!(
            "45 00 0018 0001 4000 40 11 0000 0a000001 0a000002 01020304"
        ));
        let mut p = Ipv4Packet::new_unchecked(&mut f[14..]);
        p.fill_checksum();
        f
    }

    #[test]
    fn accepts_and_classifies() {
        let f = ipv4_frame();
        match check_frame(&f).unwrap() {
            Frame::Ipv4 {
                header_len,
                total_len,
                ttl,
                ..
            } => {
                assert_eq!((header_len, total_len, ttl), (20, 24, 64))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_each_fault() {
        let good = ipv4_frame();
        for n in 0..good.len() {
            assert!(check_frame(&good[..n]).is_err(), "prefix {n}");
        }
        let mut f = good.clone();
        f[14] = 0x65;
        assert_eq!(check_frame(&f), Err(DropReason::Ipv4BadVersion));
        let mut f = good.clone();
        f[14] = 0x44;
        assert_eq!(check_frame(&f), Err(DropReason::Ipv4BadHeaderLength));
        let mut f = good.clone();
        f[14] = 0x4f;
        assert_eq!(check_frame(&f), Err(DropReason::Ipv4BadHeaderLength));
        let mut f = good.clone();
        f[17] = 0xff;
        assert_eq!(check_frame(&f), Err(DropReason::Ipv4BadTotalLength));
        let mut f = good.clone();
        f[24] ^= 1;
        assert_eq!(check_frame(&f), Err(DropReason::Ipv4BadChecksum));
        let mut f = good.clone();
        f[6] = 0x01;
        assert_eq!(check_frame(&f), Err(DropReason::EthernetSourceMulticast));
        // ARP with a hardware length of 8 instead of 6.
        let arp = hex!("ffffffffffff 020000000001 0806 0001 0800 08 04 0001 020000000001 0a000001 000000000000 0a000002");
        assert_eq!(check_frame(&arp), Err(DropReason::ArpMalformed));
    }
}
