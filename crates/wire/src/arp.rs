//! ARP frames (RFC 826) for Ethernet and IPv4, as every program writes them: one request, one
//! reply, padded to the Ethernet minimum as a NIC would. The codec is `smoltcp::wire`'s.

use core::net::Ipv4Addr;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};

/// Octets of an ARP frame as sent (the Ethernet minimum).
pub const FRAME_LEN: usize = 60;

/// Writes `arp` in an Ethernet frame from `src` to `dst` into `buf` (at least 60 octets);
/// returns the frame's length.
pub fn write_frame(buf: &mut [u8], src: [u8; 6], dst: [u8; 6], arp: &ArpRepr) -> usize {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let n = arp.buffer_len();
    arp.emit(&mut ArpPacket::new_unchecked(&mut buf[14..14 + n]));
    let end = (14 + n).max(FRAME_LEN);
    buf[14 + n..end].fill(0);
    end
}

/// Who has `target`? Tell `spa` (at `mac`): a broadcast request.
pub fn request(mac: [u8; 6], spa: Ipv4Addr, target: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    write_frame(
        &mut f,
        mac,
        [0xff; 6],
        &ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: spa,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        },
    );
    f
}

/// `spa` is at `mac`: the reply to a request from `tha`/`tpa`.
pub fn reply(mac: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    write_frame(
        &mut f,
        mac,
        tha,
        &ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: spa,
            target_hardware_addr: EthernetAddress(tha),
            target_protocol_addr: tpa,
        },
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    #[test]
    fn request_and_reply_are_the_octets_a_kernel_sends() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (ia, ib) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let q = request(a, ia, ib);
        assert_eq!(
            q[..42],
            hex!(
                "ffffffffffff 020000000001 0806"
                "0001 0800 06 04 0001 020000000001 0a000001 000000000000 0a000002"
            )
        );
        assert_eq!(q[42..], [0u8; 18]);
        let r = reply(b, ib, a, ia);
        assert_eq!(
            r[..42],
            hex!(
                "020000000001 020000000002 0806"
                "0001 0800 06 04 0002 020000000002 0a000002 020000000001 0a000001"
            )
        );
    }
}
