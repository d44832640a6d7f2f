//! smoltcp's `Device` over one received frame and the runtime's transmitter; every frame in
//! and out is shown to the TCP tracker.

use crate::recovery::Recovery;
use crate::tracker::{Dir, Tracker};
use d11_element::Transmit;
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
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
}

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
        w.tracker.observe(self.now, &w.scratch[..len], Dir::Out);
        w.recovery.on_out(self.now, &w.scratch[..len]);
        self.tx.send(0, &w.scratch[..len]);
        r
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
            },
        ))
    }

    fn transmit(&mut self, _t: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok {
            tx: &mut *self.tx,
            wire: &mut *self.wire,
            now: self.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.wire.mtu + 14;
        c.max_burst_size = (self.wire.burst > 0).then_some(self.wire.burst);
        c
    }
}
