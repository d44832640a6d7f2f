//! Capturing a segment or a port to pcapng, from an AF_PACKET socket.
//!
//! A segment is captured on its bridge with the bridge in promiscuous mode: the kernel then
//! hands the bridge device every frame that enters the bridge from any port (not only frames
//! addressed to the bridge), so each frame on the segment is seen once. A port is captured on
//! its fabric-side interface (TAP or veth), both directions, with pcapng direction flags from
//! the node's point of view.

use anyhow::{bail, Context, Result};
use d11_netdev::pcap::{Direction, PcapngSink};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    let cname = CString::new(opts.ifname)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {:?} to capture on", opts.ifname);
    }
    // Protocol 0 at socket(): nothing is queued until bind() names the interface.
    // SAFETY: socket returns a new descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket (needs root)");
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding with a fully initialised sockaddr_ll.
    if unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error()).context("bind AF_PACKET");
    }
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex as i32,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    let rcvbuf: libc::c_int = 8 << 20;
    // SAFETY: plain socket options with correctly sized values.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as u32,
        );
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcvbuf as *const libc::c_int).cast(),
            4,
        );
    }
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
    let mut n_frames = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        if opts.count.is_some_and(|c| n_frames >= c)
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut flen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: bounded receive into our buffer, address into a sockaddr_ll.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut flen,
            )
        };
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
        if sink
            .write(&buf[..n as usize], dir, None)
            .and_then(|_| sink.flush())
            .is_err()
        {
            break; // reader went away (e.g. Wireshark closed)
        }
        n_frames += 1;
    }
    let _ = sink.flush();
    Ok(n_frames)
}
