//! smoltcp's `Device` over one received frame and the runtime's transmitter; every frame in
//! and out is shown to the TCP tracker.
//!
//! On a port with offloads (`--offload`: a TAP with `IFF_VNET_HDR`), smoltcp's segmentation
//! offload is on: a TCP socket with more than one segment to send builds one super-frame of up
//! to 64 KiB, which goes to the TAP whole with its `virtio_net_hdr` (the kernel cuts it where
//! it must, or hands it whole to a local receiver), and smoltcp leaves TCP checksums to the
//! device: here a single segment's is computed, a super-frame's is left partial as TSO wants
//! it. Received frames with a partial checksum (the kernel's own, not yet summed) are trusted,
//! as a NIC's driver trusts them; the stack checks every other TCP checksum itself.

use crate::recovery::Recovery;
use crate::tracker::{Dir, Tracker};
use d11_element::Transmit;
use d11_wire::gso::{self, Gso};
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant as SmolInstant;
use std::time::Instant;

/// What the stack keeps where it meets the wire: the transmit buffer, the link's limits, and
/// the observers every frame passes (the TCP tracker, loss recovery).
pub(crate) struct Wire {
    pub scratch: Vec<u8>,
    pub mtu: usize,
    /// smoltcp's max_burst_size (0 = no limit).
    pub burst: usize,
    pub tracker: Tracker,
    pub recovery: Recovery,
    /// The port takes offloaded frames: TSO super-frames out, partial checksums in.
    pub offload: bool,
    /// Super-frames smoltcp built (TSO; the runtime passes them whole to a port with offloads).
    pub super_frames: u64,
}

/// The largest frame smoltcp may build for the device to segment, Ethernet header included.
/// Linux cuts in software any super-frame whose length with its link header reaches the
/// outgoing device's `gso_max_size` (65,536 unless raised: `gso_features_check`), so a frame
/// of 65,536 octets or more written to our TAP would be cut before the next hop.
const TSO_MAX: usize = 65535;

pub(crate) struct FrameIo<'a> {
    pub rx: Option<&'a [u8]>,
    pub tx: &'a mut dyn Transmit,
    pub wire: &'a mut Wire,
    pub now: Instant,
}

pub(crate) struct RxTok<'a> {
    frame: &'a [u8],
}

pub(crate) struct TxTok<'a> {
    tx: &'a mut dyn Transmit,
    wire: &'a mut Wire,
    now: Instant,
    /// The segment size smoltcp asks the device to cut a super-frame into.
    seg: Option<u16>,
}

/// Whether an Ethernet frame holds TCP over IPv4.
pub(crate) fn is_tcp4(frame: &[u8]) -> bool {
    frame.len() >= 34 && frame[12..14] == [8, 0] && frame[23] == 6
}

/// A SYN we send (no ACK) echoes no timestamp: RFC 7323 §3.2 says its TSecr SHOULD be zero.
/// smoltcp echoes the last TSval its socket saw, which for a socket reused from a closed
/// connection (see `Inner::spare`) is the previous peer's. Sets it to zero, adjusting a
/// complete checksum if `fix_checksum`. Anything else is left as it is.
pub(crate) fn zero_syn_tsecr(frame: &mut [u8], fix_checksum: bool) {
    if !is_tcp4(frame) {
        return;
    }
    let tcp = 14 + d11_wire::ip::header_len(&frame[14..]);
    let Some(&flags) = frame.get(tcp + 13) else {
        return;
    };
    if flags & 0x12 != 0x02 {
        return;
    }
    let end = tcp + usize::from(frame[tcp + 12] >> 4) * 4;
    if end > frame.len() {
        return;
    }
    let mut at = tcp + 20;
    while at < end {
        match frame[at] {
            0 => return,
            1 => at += 1,
            kind => {
                let Some(&n) = frame.get(at + 1) else { return };
                let n = usize::from(n);
                if n < 2 || at + n > end {
                    return;
                }
                if kind == 8 && n == 10 {
                    let ecr = at + 6..at + 10;
                    if frame[ecr.clone()] == [0; 4] {
                        return;
                    }
                    // The sum is over 16-bit words from the TCP header's start, and the
                    // option may start at an odd offset (smoltcp's does): adjust over the
                    // whole words around the field.
                    let lo = tcp + (ecr.start - tcp) / 2 * 2;
                    let hi = (tcp + (ecr.end - tcp).div_ceil(2) * 2).min(end);
                    let mut old = [0u8; 6];
                    let old = &mut old[..hi - lo];
                    old.copy_from_slice(&frame[lo..hi]);
                    frame[ecr].fill(0);
                    if fix_checksum {
                        let sum = u16::from_be_bytes([frame[tcp + 16], frame[tcp + 17]]);
                        let c = d11_wire::checksum_adjust(sum, old, &frame[lo..hi]);
                        frame[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
                    }
                    return;
                }
                at += n;
            }
        }
    }
}

/// A TCP segment's checksum, where smoltcp left it to the device: complete for one segment,
/// partial for a super-frame of segments of `seg` octets. Returns the frame's metadata
/// ([`Gso::NONE`] for a frame that is not TCP over IPv4).
pub(crate) fn tcp_checksum(frame: &mut [u8], seg: Option<u16>) -> Gso {
    if !is_tcp4(frame) {
        return Gso::NONE;
    }
    match gso::offload_tcp4(frame, seg.unwrap_or(0)) {
        Ok(g) if seg.is_some() => g,
        Ok(g) => {
            // (offload_tcp4 checked the offsets complete_checksum uses.)
            let _ = gso::complete_checksum(frame, &g);
            Gso::NONE
        }
        Err(_) => Gso::NONE,
    }
}

impl smoltcp::phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let w = self.wire;
        if w.scratch.len() < len {
            w.scratch.resize(len, 0);
        }
        let r = f(&mut w.scratch[..len]);
        let frame = &mut w.scratch[..len];
        // (smoltcp filled the TCP checksum unless the port offloads, when it is done below.)
        zero_syn_tsecr(frame, !w.offload);
        let g = if w.offload {
            tcp_checksum(frame, self.seg)
        } else {
            Gso::NONE
        };
        if !g.is_single() {
            w.super_frames += 1;
        }
        w.tracker.observe(self.now, frame, Dir::Out);
        w.recovery.on_out(self.now, frame, g.gso_size);
        self.tx.send_gso(0, frame, &g);
        r
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.seg = meta.segmentation_offload_size.map(|n| n.get());
    }
}

impl Device for FrameIo<'_> {
    type RxToken<'b>
        = RxTok<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b>
    where
        Self: 'b;

    fn receive(&mut self, _t: SmolInstant) -> Option<(RxTok<'_>, TxTok<'_>)> {
        let frame = self.rx.take()?;
        // Recorded as it is handed over: smoltcp reads every frame it takes.
        self.wire.tracker.observe(self.now, frame, Dir::In);
        Some((
            RxTok { frame },
            TxTok {
                tx: &mut *self.tx,
                wire: &mut *self.wire,
                now: self.now,
                seg: None,
            },
        ))
    }

    fn transmit(&mut self, _t: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok {
            tx: &mut *self.tx,
            wire: &mut *self.wire,
            now: self.now,
            seg: None,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.wire.mtu + 14;
        c.max_burst_size = (self.wire.burst > 0).then_some(self.wire.burst);
        if self.wire.offload {
            c.segmentation.tcpv4 = std::num::NonZeroUsize::new(TSO_MAX);
            c.checksum.tcp = Checksum::None;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 frame with `flags` and a timestamp option (TSval 7, TSecr `ecr`), its
    /// checksums complete.
    fn segment(flags: u8, ecr: u32) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 40];
        f[12..14].copy_from_slice(&[8, 0]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&60u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        d11_wire::fill_ipv4_checksum(ip);
        let t = &mut f[34..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 10 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        // MSS, SACK permitted, timestamps, NOP, window scale.
        t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        t[24..26].copy_from_slice(&[4, 2]);
        t[26..28].copy_from_slice(&[8, 10]);
        t[28..32].copy_from_slice(&7u32.to_be_bytes());
        t[32..36].copy_from_slice(&ecr.to_be_bytes());
        t[36..40].copy_from_slice(&[1, 3, 3, 7]);
        let _ = tcp_checksum(&mut f, None);
        f
    }

    fn ok(f: &[u8]) -> bool {
        d11_wire::ip::tcp_checksum_ok(
            d11_wire::ip::src(&f[14..]),
            d11_wire::ip::dst(&f[14..]),
            &f[34..],
        )
    }

    /// A SYN as smoltcp builds it: MSS, window scale, SACK permitted, then the timestamps at
    /// an odd offset from the TCP header, so the field straddles 16-bit words of the sum.
    #[test]
    fn a_smoltcp_syn_echoes_no_timestamp_and_its_checksum_stays_right() {
        use smoltcp::wire::*;
        let (src, dst) = (
            std::net::Ipv4Addr::new(10, 0, 0, 1),
            std::net::Ipv4Addr::new(10, 0, 0, 2),
        );
        let repr = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1000),
            ack_number: None,
            window_len: 64240,
            window_scale: Some(7),
            max_seg_size: Some(1460),
            sack_permitted: true,
            sack_ranges: [None, None, None],
            timestamp: Some(TcpTimestampRepr::new(7, 0x1234_5678)),
            payload: &[],
        };
        let mut f = vec![0u8; 14 + 20 + repr.header_len()];
        f[12..14].copy_from_slice(&[8, 0]);
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: repr.header_len(),
            hop_limit: 64,
        };
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[14..34]), &caps);
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut f[34..]),
            &src.into(),
            &dst.into(),
            &caps,
        );
        assert!(ok(&f));
        zero_syn_tsecr(&mut f, true);
        assert!(ok(&f), "checksum adjusted over whole words");
        let tcp = TcpPacket::new_checked(&f[34..]).unwrap();
        let mut opts = tcp.options();
        let mut ts = None;
        while !opts.is_empty() {
            let (rest, o) = TcpOption::parse(opts).unwrap();
            if let TcpOption::TimeStamp { tsval, tsecr } = o {
                ts = Some((tsval, tsecr));
            }
            opts = rest;
        }
        assert_eq!(ts, Some((7, 0)));
    }

    #[test]
    fn a_syn_echoes_no_timestamp_and_its_checksum_stays_right() {
        let mut syn = segment(0x02, 0xdead_beef);
        assert!(ok(&syn));
        zero_syn_tsecr(&mut syn, true);
        assert_eq!(syn[34 + 32..34 + 36], [0; 4]);
        assert_eq!(syn[34 + 28..34 + 32], 7u32.to_be_bytes(), "TSval kept");
        assert!(ok(&syn), "checksum adjusted");
        // A SYN-ACK echoes the peer's TSval, as it must.
        let mut synack = segment(0x12, 0xdead_beef);
        let before = synack.clone();
        zero_syn_tsecr(&mut synack, true);
        assert_eq!(synack, before);
        // Without fixing the checksum (the device computes it afterwards).
        let mut syn = segment(0x02, 5);
        zero_syn_tsecr(&mut syn, false);
        assert_eq!(syn[34 + 32..34 + 36], [0; 4]);
        // Truncated options are left alone, without a panic.
        for n in 34..syn.len() {
            let mut f = segment(0x02, 5)[..n].to_vec();
            zero_syn_tsecr(&mut f, true);
        }
    }
}
