//! TAP devices through a few `ioctl`s on `/dev/net/tun`.
//!
//! Why not a crate: `tun-tap` is unmaintained (last release 2023, its default features pull
//! tokio 0.1 and mio 0.6, no offload or multi-queue). `tun-rs` 2.x is maintained and fine, but
//! we need exactly four ioctls (create, flags, MTU, join a bridge) plus a namespace switch that
//! must happen around the open, and nothing of its async or offload layers: a hundred lines
//! here cost less build time and keep the namespace handling visible.
//!
//! The device is not persistent (no `TUNSETPERSIST`): when the process dies its TAP goes with
//! it, so a crashed program never leaves a device behind.

use crate::{cvt, cvt_size, netns, FrameDevice, Gso};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
// TUNSETOFFLOAD: what we take from the kernel (it may then hand us such frames).
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;
// Linux 6.2 and later: UDP super-frames (the kernel takes both or neither).
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;
// Linux 6.17 and later: TCP super-frames inside a UDP tunnel (VXLAN), with or without the
// outer UDP checksum; the header is then 24 octets.
const TUN_F_UDP_TUNNEL_GSO: libc::c_ulong = 0x080;
const TUN_F_UDP_TUNNEL_GSO_CSUM: libc::c_ulong = 0x100;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: IfReqData,
}

#[repr(C)]
union IfReqData {
    flags: libc::c_short,
    ifindex: libc::c_int,
    mtu: libc::c_int,
    _pad: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<Self> {
        let c = CString::new(name).map_err(|_| invalid("interface name contains NUL"))?;
        let bytes = c.as_bytes_with_nul();
        if bytes.len() > libc::IFNAMSIZ {
            return Err(invalid(&format!(
                "interface name {name:?} is longer than 15 bytes"
            )));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: IfReqData { _pad: [0; 24] },
        };
        for (d, s) in req.name.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        Ok(req)
    }
}

/// TUNSETOFFLOAD: what the kernel may hand this TAP.
fn set_offload(fd: RawFd, flags: libc::c_ulong) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes a value.
    cvt(unsafe { libc::ioctl(fd, TUNSETOFFLOAD as _, flags) }).map(|_| ())
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// How to open a TAP.
#[derive(Debug, Clone, Default)]
pub struct TapConfig<'a> {
    /// Interface name (at most 15 bytes).
    pub name: &'a str,
    /// Namespace to create the device in (e.g. the lab's fabric namespace); `None` = current.
    pub netns: Option<&'a Path>,
    /// A bridge in that namespace to join.
    pub bridge: Option<&'a str>,
    /// MTU of the kernel side; `None` leaves the default (1500).
    pub mtu: Option<u32>,
    /// A TUN (IP packets, no Ethernet header) instead of a TAP.
    pub tun: bool,
    /// Offloads: a `virtio_net_hdr` before every frame (`IFF_VNET_HDR`), and partial
    /// checksums and TCP/IPv4 super-frames taken from the kernel (`TUN_F_CSUM`,
    /// `TUN_F_TSO4`, `TUN_F_TSO_ECN`), and where the kernel has them (6.17 and later) the same
    /// inside a UDP tunnel (`TUN_F_UDP_TUNNEL_GSO`, a 24-octet header).
    pub offloads: bool,
}

/// A TAP device: frames written here appear on the kernel interface, and frames the kernel
/// sends to the interface are read here.
pub struct Tap {
    file: File,
    name: String,
    offloads: bool,
    /// What TUNSETOFFLOAD was given.
    offload_flags: libc::c_ulong,
    /// The offload header's length: 0 (none), [`Gso::LEN`] or [`Gso::TUNNEL_LEN`].
    hdr_len: usize,
}

impl Tap {
    /// Creates the TAP (in `cfg.netns` if given), sets MTU, joins the bridge, sets it up.
    pub fn open(cfg: &TapConfig<'_>) -> io::Result<Self> {
        netns::within(cfg.netns, || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open("/dev/net/tun")?;
            let mut req = IfReq::new(cfg.name)?;
            req.data.flags = if cfg.tun { IFF_TUN } else { IFF_TAP }
                | IFF_NO_PI
                | if cfg.offloads { IFF_VNET_HDR } else { 0 };
            // SAFETY: TUNSETIFF reads and writes an ifreq we own.
            cvt(unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) })
                .map_err(|e| io::Error::new(e.kind(), format!("TUNSETIFF {}: {e}", cfg.name)))?;
            let mut hdr_len = 0;
            let mut offload_flags = 0;
            if cfg.offloads {
                let fd = file.as_raw_fd();
                let set_hdr = |len: usize| {
                    let size = len as libc::c_int;
                    // SAFETY: TUNSETVNETHDRSZ reads an int we own.
                    cvt(unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ as _, &size) })
                        .map_err(|e| io::Error::new(e.kind(), format!("TUNSETVNETHDRSZ: {e}")))
                };
                let flags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN;
                let tunnel = flags | TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM;
                // The tunnel header first (the kernel refuses tunnel offloads with a shorter
                // one); a kernel without them refuses the flags, and keeps the short header.
                set_hdr(Gso::TUNNEL_LEN)?;
                if set_offload(fd, tunnel).is_ok() {
                    hdr_len = Gso::TUNNEL_LEN;
                    offload_flags = tunnel;
                } else {
                    set_hdr(Gso::LEN)?;
                    set_offload(fd, flags)
                        .map_err(|e| io::Error::new(e.kind(), format!("TUNSETOFFLOAD: {e}")))?;
                    hdr_len = Gso::LEN;
                    offload_flags = flags;
                }
            }
            let ctl = ControlSocket::new()?;
            if let Some(mtu) = cfg.mtu {
                ctl.set_mtu(cfg.name, mtu)?;
            }
            if let Some(br) = cfg.bridge {
                ctl.add_to_bridge(br, cfg.name)?;
            }
            ctl.set_up(cfg.name)?;
            Ok(Tap {
                file,
                name: cfg.name.to_string(),
                offloads: cfg.offloads,
                hdr_len,
                offload_flags,
            })
        })
    }
}

impl Tap {
    fn read_gso(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, Gso)>> {
        let mut hdr = [0u8; Gso::TUNNEL_LEN];
        let hdr = &mut hdr[..self.hdr_len];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both buffers are ours and the iovecs bound them.
        let r = unsafe { libc::readv(self.file.as_raw_fd(), iov.as_ptr(), 2) };
        match cvt_size(r) {
            Ok(n) if n < hdr.len() => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a read shorter than the offload header",
            )),
            Ok(n) => Ok(Some((n - hdr.len(), Gso::parse(hdr)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_gso(&mut self, frame: &[u8], gso: &Gso) -> io::Result<()> {
        let mut hdr = [0u8; Gso::TUNNEL_LEN];
        let hdr = &mut hdr[..self.hdr_len];
        gso.emit_into(hdr);
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: the kernel only reads through these iovecs, which bound buffers we borrow.
        let r = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), 2) };
        cvt_size(r).map(|_| ())
    }
}

impl FrameDevice for Tap {
    fn name(&self) -> &str {
        &self.name
    }
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.offloads {
            // A reader that takes plain frames only: a partial checksum is completed; a
            // super-frame is refused (the runtime reads with `recv_gso` and cuts it).
            return match self.read_gso(buf)? {
                None => Ok(None),
                Some((n, g)) if g.is_single() => {
                    d11_wire::gso::complete_checksum(&mut buf[..n], &g)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    Ok(Some(n))
                }
                Some(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a super-frame to a plain reader",
                )),
            };
        }
        // SAFETY: reading into a buffer we own, bounded by its length.
        let r = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match cvt_size(r) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn send(&mut self, _now: Instant, frame: &[u8]) -> io::Result<()> {
        if self.offloads {
            return self.write_gso(frame, &Gso::NONE);
        }
        // SAFETY: writing from a slice we borrow, bounded by its length.
        let r = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        cvt_size(r).map(|_| ())
    }
    fn offloads(&self) -> bool {
        self.offloads
    }
    fn tunnel_offloads(&self) -> bool {
        self.hdr_len == Gso::TUNNEL_LEN
    }
    fn take_udp_segments(&mut self) -> bool {
        if !self.offloads {
            return false;
        }
        let flags = self.offload_flags | TUN_F_USO4 | TUN_F_USO6;
        if set_offload(self.file.as_raw_fd(), flags).is_err() {
            return false;
        }
        self.offload_flags = flags;
        true
    }
    fn recv_gso(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<(usize, Gso)>> {
        if self.offloads {
            self.read_gso(buf)
        } else {
            Ok(self.recv(now, buf)?.map(|n| (n, Gso::NONE)))
        }
    }
    fn send_gso(&mut self, now: Instant, frame: &[u8], gso: &Gso) -> io::Result<()> {
        if gso.is_tunnel() && !self.tunnel_offloads() {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a UDP-tunnel super-frame to a TAP without tunnel offloads",
            ))
        } else if self.offloads {
            self.write_gso(frame, gso)
        } else if gso.is_plain() {
            self.send(now, frame)
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an offloaded frame to a TAP without offloads",
            ))
        }
    }
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// An AF_INET datagram socket used only for interface ioctls in the current namespace.
struct ControlSocket(std::os::fd::OwnedFd);

impl ControlSocket {
    fn new() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket(2) returns a new descriptor we take ownership of.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl(&self, what: &str, req: libc::c_ulong, ifr: &mut IfReq) -> io::Result<()> {
        // SAFETY: every request used here reads/writes a struct ifreq.
        cvt(unsafe { libc::ioctl(self.0.as_raw_fd(), req as _, ifr as *mut IfReq) })
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
    }

    fn set_mtu(&self, name: &str, mtu: u32) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        r.data.mtu = mtu as libc::c_int;
        self.ioctl(
            &format!("set MTU {mtu} on {name}"),
            libc::SIOCSIFMTU,
            &mut r,
        )
    }

    fn set_up(&self, name: &str) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        self.ioctl("get flags", libc::SIOCGIFFLAGS, &mut r)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        unsafe { r.data.flags |= libc::IFF_UP as libc::c_short };
        self.ioctl(&format!("set {name} up"), libc::SIOCSIFFLAGS, &mut r)
    }

    fn add_to_bridge(&self, bridge: &str, name: &str) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        self.ioctl(&format!("find {name}"), libc::SIOCGIFINDEX, &mut r)?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member.
        let index = unsafe { r.data.ifindex };
        let mut b = IfReq::new(bridge)?;
        b.data.ifindex = index;
        self.ioctl(
            &format!("add {name} to bridge {bridge}"),
            SIOCBRADDIF,
            &mut b,
        )
    }
}
