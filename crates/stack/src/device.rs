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
    /// Super-frames smoltcp built and the device was handed whole.
    pub super_frames: u64,
}

/// The largest frame smoltcp may build for the device to segment: an IPv4 packet of 65,535
/// octets with its Ethernet header.
const TSO_MAX: usize = 14 + 65535;

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

/// A TCP segment's checksum, where smoltcp left it to the device: complete for one segment,
/// partial for a super-frame of segments of `seg` octets. Returns the frame's metadata
/// ([`Gso::NONE`] for a frame that is not TCP over IPv4).
pub(crate) fn tcp_checksum(frame: &mut [u8], seg: Option<u16>) -> Gso {
    let tcp4 = frame.len() >= 34 && frame[12..14] == [8, 0] && frame[23] == 6;
    if !tcp4 {
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
