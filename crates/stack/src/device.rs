//! smoltcp's `Device` over one received frame and the runtime's transmitter; every frame in
//! and out is shown to the TCP tracker.

use crate::recovery::Recovery;
use crate::tracker::{Dir, Tracker};
use d11_element::Transmit;
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;
use std::time::Instant;

pub(crate) struct FrameIo<'a> {
    pub rx: Option<&'a [u8]>,
    pub tx: &'a mut dyn Transmit,
    pub scratch: &'a mut Vec<u8>,
    pub mtu: usize,
    /// smoltcp's max_burst_size (0 = no limit).
    pub burst: usize,
    pub tracker: &'a mut Tracker,
    pub recovery: &'a mut Recovery,
    pub now: Instant,
}

pub(crate) struct RxTok<'a> {
    frame: &'a [u8],
}

pub(crate) struct TxTok<'a> {
    tx: &'a mut dyn Transmit,
    scratch: &'a mut Vec<u8>,
    tracker: &'a mut Tracker,
    recovery: &'a mut Recovery,
    now: Instant,
}

impl smoltcp::phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        let r = f(&mut self.scratch[..len]);
        self.tracker
            .observe(self.now, &self.scratch[..len], Dir::Out);
        self.recovery.on_out(self.now, &self.scratch[..len]);
        self.tx.send(0, &self.scratch[..len]);
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
        self.tracker.observe(self.now, frame, Dir::In);
        Some((
            RxTok { frame },
            TxTok {
                tx: &mut *self.tx,
                scratch: &mut *self.scratch,
                tracker: &mut *self.tracker,
                recovery: &mut *self.recovery,
                now: self.now,
            },
        ))
    }

    fn transmit(&mut self, _t: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok {
            tx: &mut *self.tx,
            scratch: &mut *self.scratch,
            tracker: &mut *self.tracker,
            recovery: &mut *self.recovery,
            now: self.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + 14;
        c.max_burst_size = (self.burst > 0).then_some(self.burst);
        c
    }
}
