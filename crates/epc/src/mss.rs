//! TCP MSS clamping: a SYN through a tunnel must not offer segments the tunnel cannot carry
//! whole. GTP-U over IPv4 adds 36 octets (and an Ethernet PDU session 14 more), so the PGW
//! lowers the MSS option of SYNs crossing it, and fixes the checksum (RFC 1624), as routers
//! do with `iptables -j TCPMSS --clamp-mss-to-pmtu`.

/// Lowers the MSS option of a TCP SYN in `ip` (a whole IPv4 packet) to `max`; true if it
/// changed the packet. Packets that are not SYNs, or carry no MSS option, are left alone.
pub fn clamp_mss(ip: &mut [u8], max: u16) -> bool {
    if ip.len() < 20 || ip[9] != 6 {
        return false;
    }
    let ihl = d11_wire::ip::header_len(ip);
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if frag != 0 || ip.len() < ihl + 20 {
        return false;
    }
    let tcp = &mut ip[ihl..];
    if tcp[13] & 0x02 == 0 {
        return false;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return false;
    }
    let mut at = 20;
    while at < doff {
        match tcp[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let Some(&len) = tcp.get(at + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || at + len > doff {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let mss = u16::from_be_bytes([tcp[at + 2], tcp[at + 3]]);
                    if mss <= max {
                        return false;
                    }
                    let old = [tcp[at + 2], tcp[at + 3]];
                    let new = max.to_be_bytes();
                    tcp[at + 2..at + 4].copy_from_slice(&new);
                    let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
                    let mut acc = u32::from(!sum)
                        + u32::from(!u16::from_be_bytes(old))
                        + u32::from(u16::from_be_bytes(new));
                    while acc >> 16 != 0 {
                        acc = (acc & 0xffff) + (acc >> 16);
                    }
                    tcp[16..18].copy_from_slice(&(!(acc as u16)).to_be_bytes());
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 10.45.0.2:40000 to 203.0.113.10:443 with MSS 1460, NOP, window scale 7.
    fn syn(mss: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 48, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 45, 0, 2, 203, 0, 113, 10,
        ];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x70, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(&[2, 4]);
        p.extend_from_slice(&mss.to_be_bytes());
        p.extend_from_slice(&[1, 3, 3, 7]);
        d11_wire::fill_ipv4_checksum(&mut p[..20]);
        let c = tcp_checksum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_checksum(p: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6, 0, (p.len() - 20) as u8]);
        let mut t = p[20..].to_vec();
        t[16] = 0;
        t[17] = 0;
        pseudo.extend_from_slice(&t);
        d11_wire::internet_checksum(&pseudo)
    }

    #[test]
    fn clamps_and_keeps_the_checksum_right() {
        let mut p = syn(1460);
        assert!(clamp_mss(&mut p, 1410));
        assert_eq!(&p[40..44], &[2, 4, 0x05, 0x82]);
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), tcp_checksum(&p));
        // Already small enough, not a SYN, or truncated: untouched.
        let mut q = syn(1200);
        assert!(!clamp_mss(&mut q, 1410));
        let mut r = syn(1460);
        r[33] = 0x10; // ACK only
        assert!(!clamp_mss(&mut r, 1410));
        for n in 0..p.len() {
            let mut t = syn(1460)[..n].to_vec();
            let _ = clamp_mss(&mut t, 1000);
        }
    }
}
