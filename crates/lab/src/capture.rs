//! Capturing a segment or a port to pcapng, from an AF_PACKET socket.
//!
//! A segment is captured on its bridge with the bridge in promiscuous mode: the kernel then
//! hands the bridge device every frame that enters the bridge from any port (not only frames
//! addressed to the bridge), so each frame on the segment is seen once. A port is captured on
//! its fabric-side interface (TAP or veth), both directions, with pcapng direction flags from
//! the node's point of view. Each frame carries the kernel's timestamp of when it crossed the
//! interface (`SO_TIMESTAMPNS`), so that frames the capture reads late, in a burst, keep
//! their real spacing.

use anyhow::{Context, Result};
use d11_netdev::packet::PacketSocket;
use d11_netdev::pcap::{Direction, PcapngSink};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// What to capture and when to stop.
pub struct CaptureOptions<'a> {
    /// Interface in the current namespace.
    pub ifname: &'a str,
    /// Name written into the pcapng interface block (the segment or NODE:PORT).
    pub label: &'a str,
    /// True for a node's port: directions are reported from the node's side.
    pub port: bool,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// Captures until SIGINT/SIGTERM, `count` frames or `duration`; calls `ready` once the socket
/// is bound (frames from then on are captured). Returns the number of frames written.
pub fn capture<W: Write>(opts: &CaptureOptions<'_>, out: W, ready: impl FnOnce()) -> Result<u64> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let sock = PacketSocket::open(opts.ifname, true)
        .with_context(|| format!("cannot capture on {:?} (needs root)", opts.ifname))?;
    sock.promiscuous().context("promiscuous mode")?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    let rcvbuf: libc::c_int = 8 << 20;
    sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    // Each frame stamped by the kernel when it crossed the interface, not when this process
    // read it: frames that wait in the socket's queue keep their own spacing.
    let on: libc::c_int = 1;
    sock.setsockopt(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on)
        .context("kernel timestamps (SO_TIMESTAMPNS)")?;
    // (Best effort: a smaller buffer only drops more under load.)
    let _ = sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf);
    let mut sink = PcapngSink::new(
        out,
        opts.label,
        Some(&format!(
            "d11 capture of {} (interface {})",
            opts.label, opts.ifname
        )),
    )?;
    sink.flush()?;
    ready();
    let started = Instant::now();
    let mut buf = vec![0u8; 65536 + 64];
    // Room for one control message holding a `timespec` (u64 words: aligned as cmsghdr).
    let mut control = [0u64; 8];
    let mut n_frames = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        if opts.count.is_some_and(|c| n_frames >= c)
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr; its pointers are set just below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() * std::mem::size_of::<u64>();
        // SAFETY: a bounded receive into our buffer, address and control space.
        let n = unsafe { libc::recvmsg(sock.fd().as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ if e.raw_os_error() == Some(libc::ENETDOWN)
                    || e.raw_os_error() == Some(libc::ENXIO) =>
                {
                    break
                }
                _ => return Err(e).context("capture receive"),
            }
        }
        let dir = if !opts.port {
            Direction::Unknown
        } else if from.sll_pkttype == libc::PACKET_OUTGOING {
            Direction::Inbound // the kernel sends it into the TAP: the node receives it
        } else {
            Direction::Outbound
        };
        let written = match kernel_time(&msg) {
            Some(ts) => sink.write_at(ts, &buf[..n as usize], dir, None),
            None => sink.write(&buf[..n as usize], dir, None),
        };
        if written.and_then(|_| sink.flush()).is_err() {
            break; // reader went away (e.g. Wireshark closed)
        }
        n_frames += 1;
    }
    let _ = sink.flush();
    Ok(n_frames)
}

/// The kernel's timestamp of a received frame (`SCM_TIMESTAMPNS`), as time since the Unix
/// epoch; `None` if the message carries none.
fn kernel_time(msg: &libc::msghdr) -> Option<Duration> {
    // SAFETY: walking the control messages the kernel wrote into `msg`'s buffer, by the
    // CMSG macros, within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}
