//! VXLAN (RFC 7348 §5).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-----------------------------------------------+
//! |R|R|R|R|I|R|R|R|                   Reserved                    |
//! +-+-+-+-+-+-+-+-+-------------------------------+---------------+
//! |       VXLAN Network Identifier (VNI)          |   Reserved    |
//! +-----------------------------------------------+---------------+
//! ```
//!
//! The I flag must be 1 for a valid VNI; reserved bits are sent as zero and ignored on
//! receipt. etherparse and smoltcp have no VXLAN, so it is ours (eight octets).

use crate::{need, Error, Result};

/// The IANA-assigned UDP port.
pub const UDP_PORT: u16 = 4789;
pub const HEADER_LEN: usize = 8;
/// Octets VXLAN over IPv4 adds to an inner Ethernet frame: 14 + 20 + 8 + 8.
pub const IPV4_OVERHEAD: usize = 50;
const FLAG_I: u8 = 0x08;
const LAYER: &str = "vxlan";

/// A read/write view of a VXLAN header followed by the inner Ethernet frame.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self { buffer };
        p.check_len()?;
        Ok(p)
    }
    pub fn check_len(&self) -> Result<()> {
        need(LAYER, self.buffer.as_ref(), 0, HEADER_LEN)
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    /// True when the I flag says the VNI is valid.
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }
    /// The reserved bits, which a receiver ignores; exposed so a tool can show them.
    pub fn reserved_bits_set(&self) -> bool {
        let b = self.buffer.as_ref();
        b[0] & !FLAG_I != 0 || b[1] | b[2] | b[3] | b[7] != 0
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A VXLAN header: only the VNI carries meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// 24-bit VXLAN Network Identifier.
    pub vni: u32,
}

impl Repr {
    pub const MAX_VNI: u32 = 0x00ff_ffff;

    pub fn new(vni: u32) -> Result<Self> {
        if vni > Self::MAX_VNI {
            return Err(Error::Invalid {
                layer: LAYER,
                field: "VNI (more than 24 bits)",
            });
        }
        Ok(Self { vni })
    }

    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.vni_valid() {
            return Err(Error::Invalid {
                layer: LAYER,
                field: "I flag (VNI not valid)",
            });
        }
        Ok(Self { vni: packet.vni() })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the eight header octets at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(LAYER, buf, 0, HEADER_LEN)?;
        let v = self.vni.to_be_bytes();
        buf[..HEADER_LEN].copy_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
        Ok(())
    }
}

/// The VXLAN packet in Ethernet frame `frame` if it is one for `addr`: IPv4, not a fragment,
/// UDP to port 4789. Returns its source address and where its VXLAN header starts. Checks no
/// checksum: for frames whose metadata says the kernel has not filled them in yet (an
/// offloaded super-frame, whose headers it made itself).
pub fn in_frame_for(frame: &[u8], addr: std::net::Ipv4Addr) -> Option<(std::net::Ipv4Addr, usize)> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [8, 0] || ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if frag != 0 || crate::ip::dst(ip) != addr {
        return None;
    }
    let udp = crate::ip::header_len(ip);
    let u = ip.get(udp..udp + 8)?;
    (u16::from_be_bytes([u[2], u[3]]) == UDP_PORT).then(|| (crate::ip::src(ip), 14 + udp + 8))
}

/// An offloaded frame from the underlay (see [`crate::gso`]), as the VTEP at `addr` sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloaded {
    /// VXLAN for this VTEP: from `from`, its VXLAN header at `at`, and the metadata of the
    /// inner frame (offsets from its start).
    Vxlan {
        from: std::net::Ipv4Addr,
        at: usize,
        inner: crate::gso::Gso,
    },
    /// VXLAN for this VTEP whose metadata does not match where its inner frame is.
    Malformed,
    /// A super-frame in a UDP tunnel that is not VXLAN for this VTEP (nothing a VTEP forwards).
    OtherTunnel,
    /// Anything else: not the VTEP's (a router's).
    NotVxlan,
}

/// Sorts an offloaded frame from the underlay for the VTEP at `addr`.
pub fn offloaded_for(frame: &[u8], gso: &crate::gso::Gso, addr: std::net::Ipv4Addr) -> Offloaded {
    match in_frame_for(frame, addr) {
        Some((from, at)) => match gso.unwrapped((at + HEADER_LEN) as u16) {
            Some(inner) => Offloaded::Vxlan { from, at, inner },
            None => Offloaded::Malformed,
        },
        None if gso.is_tunnel() => Offloaded::OtherTunnel,
        None => Offloaded::NotVxlan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn golden() {
        let mut b = [0xa5u8; 8];
        Repr::new(1001).unwrap().emit(&mut b).unwrap();
        assert_eq!(b, hex!("08 000000 0003e9 00"));
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap().vni, 1001);
        assert!(!p.reserved_bits_set());
    }

    #[test]
    fn rejects() {
        for n in 0..8 {
            assert!(Packet::new_checked(&[0x08u8; 8][..n]).is_err());
        }
        let p = Packet::new_checked(&hex!("00 000000 0003e9 00")[..]).unwrap();
        assert!(Repr::parse(&p).is_err());
        assert!(Repr::new(1 << 24).is_err());
        // Reserved bits are ignored on receipt.
        let p = Packet::new_checked(&hex!("ff ffffff 0003e9 ff")[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap().vni, 1001);
        assert!(p.reserved_bits_set());
    }

    proptest! {
        #[test]
        fn round_trip(vni in 0u32..=Repr::MAX_VNI) {
            let mut b = [0u8; 8];
            Repr::new(vni).unwrap().emit(&mut b).unwrap();
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap().vni, vni);
        }
    }
}
