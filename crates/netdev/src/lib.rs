//! Frame devices: where d11 programs read and write Ethernet frames.
//!
//! One trait, [`FrameDevice`], with a real TAP ([`tap::Tap`]), an in-memory pair for tests
//! ([`mem::MemPair`]) and two wrappers that stack on any device: [`pcap::Capture`] (pcapng,
//! optional per-frame comments) and [`impair::Impaired`] (seeded loss, duplication, reorder,
//! delay, rate limit). Time is passed in; nothing here reads a clock or sleeps, except that
//! capture timestamps are wall-clock time, as pcapng requires.
//!
//! Every device is non-blocking and has a file descriptor, so a runtime can wait on it with
//! tokio's `AsyncFd` and drain it until `recv` returns `Ok(None)`.

pub mod impair;
pub mod mem;
pub mod netns;
pub mod packet;
pub mod pcap;
pub mod tap;

pub use d11_wire::gso::Gso;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// The largest frame any d11 device carries: 14 + 65535 (so a jumbo MTU fits), rounded up.
pub const MAX_FRAME: usize = 65536 + 64;

/// A non-blocking source and sink of Ethernet frames.
pub trait FrameDevice {
    /// The port's name (a TAP name, or a name given to a test device).
    fn name(&self) -> &str;

    /// Reads one frame into `buf`. `Ok(None)` when no frame is waiting.
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Writes one frame. A full queue below is reported as `ErrorKind::WouldBlock`.
    fn send(&mut self, now: Instant, frame: &[u8]) -> io::Result<()>;

    /// Whether [`send_noted`](Self::send_noted) would keep a note (so callers only format
    /// notes when someone reads them).
    fn wants_notes(&self) -> bool {
        false
    }

    /// Writes a frame with a human-readable note of what the sender decided; a capture wrapper
    /// stores it as the packet's comment.
    fn send_noted(&mut self, now: Instant, frame: &[u8], note: &str) -> io::Result<()> {
        let _ = note;
        self.send(now, frame)
    }

    /// The earliest time at which [`poll`](Self::poll) has work (delayed frames).
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// Does timed work: releases delayed frames, flushes captures.
    fn poll(&mut self, now: Instant) {
        let _ = now;
    }

    /// Whether frames here carry offload metadata (a TAP with `IFF_VNET_HDR`): TCP
    /// super-frames and partial checksums may come in, and may be sent with
    /// [`send_gso`](Self::send_gso).
    fn offloads(&self) -> bool {
        false
    }

    /// Whether super-frames inside a UDP tunnel (VXLAN) may come in and be sent whole too
    /// (a TAP with `TUN_F_UDP_TUNNEL_GSO`, Linux 6.17 and later).
    fn tunnel_offloads(&self) -> bool {
        false
    }

    /// Asks the device to hand UDP super-frames over whole too ([`Gso::is_udp_segments`]: a
    /// TAP with `TUN_F_USO4`, Linux 6.2 and later), for a program that takes them; true if
    /// it will. Sending them needs nothing asked: a TAP with offloads takes them, and the
    /// kernel cuts them for a device that cannot.
    fn take_udp_segments(&mut self) -> bool {
        false
    }

    /// Reads one frame and its offload metadata ([`Gso::NONE`] where there is none).
    fn recv_gso(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<(usize, Gso)>> {
        Ok(self.recv(now, buf)?.map(|n| (n, Gso::NONE)))
    }

    /// Writes one frame with its offload metadata. Only for a device that
    /// [`offloads`](Self::offloads); a caller cuts super-frames for the others
    /// ([`d11_wire::gso::segment`]).
    fn send_gso(&mut self, now: Instant, frame: &[u8], gso: &Gso) -> io::Result<()> {
        if gso.is_plain() {
            self.send(now, frame)
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an offloaded frame to a device without offloads",
            ))
        }
    }

    /// The descriptor that becomes readable when `recv` may return a frame.
    fn raw_fd(&self) -> RawFd;

    /// Counters of this device and its wrappers, as (name, value).
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let _ = out;
    }
}

impl<D: FrameDevice + ?Sized> FrameDevice for Box<D> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        (**self).recv(now, buf)
    }
    fn send(&mut self, now: Instant, frame: &[u8]) -> io::Result<()> {
        (**self).send(now, frame)
    }
    fn wants_notes(&self) -> bool {
        (**self).wants_notes()
    }
    fn send_noted(&mut self, now: Instant, frame: &[u8], note: &str) -> io::Result<()> {
        (**self).send_noted(now, frame, note)
    }
    fn poll_at(&self) -> Option<Instant> {
        (**self).poll_at()
    }
    fn poll(&mut self, now: Instant) {
        (**self).poll(now)
    }
    fn raw_fd(&self) -> RawFd {
        (**self).raw_fd()
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        (**self).counters(out)
    }
    fn offloads(&self) -> bool {
        (**self).offloads()
    }
    fn tunnel_offloads(&self) -> bool {
        (**self).tunnel_offloads()
    }
    fn take_udp_segments(&mut self) -> bool {
        (**self).take_udp_segments()
    }
    fn recv_gso(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<(usize, Gso)>> {
        (**self).recv_gso(now, buf)
    }
    fn send_gso(&mut self, now: Instant, frame: &[u8], gso: &Gso) -> io::Result<()> {
        (**self).send_gso(now, frame, gso)
    }
}

pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
