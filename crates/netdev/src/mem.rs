//! An in-memory pair of connected frame devices, for tests without root.
//!
//! Built on `socketpair(AF_UNIX, SOCK_SEQPACKET)`: frame boundaries are kept, both ends are
//! non-blocking and have a real descriptor, so the same runtime code that waits on a TAP can
//! wait on them.

use crate::{cvt, cvt_size, FrameDevice};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

pub struct MemPort {
    fd: OwnedFd,
    name: String,
}

pub struct MemPair;

impl MemPair {
    /// Two connected ports: what one sends the other receives.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(a: &str, b: &str) -> io::Result<(MemPort, MemPort)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills two new descriptors that we take ownership of.
        cvt(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        })?;
        let mk = |fd, name: &str| -> io::Result<MemPort> {
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let size: libc::c_int = 4 << 20;
            // SAFETY: setting an integer socket option on our descriptor.
            cvt(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            })?;
            Ok(MemPort {
                fd,
                name: name.to_string(),
            })
        };
        Ok((mk(fds[0], a)?, mk(fds[1], b)?))
    }
}

impl FrameDevice for MemPort {
    fn name(&self) -> &str {
        &self.name
    }
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: bounded read into our buffer.
        let r = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match cvt_size(r) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn send(&mut self, _now: Instant, frame: &[u8]) -> io::Result<()> {
        // SAFETY: bounded write from a borrowed slice.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        cvt_size(r).map(|_| ())
    }
    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_with_boundaries() {
        let (mut a, mut b) = MemPair::new("a", "b").unwrap();
        let now = Instant::now();
        a.send(now, &[1, 2, 3]).unwrap();
        a.send(now, &[4; 100]).unwrap();
        let mut buf = [0u8; 2048];
        assert_eq!(b.recv(now, &mut buf).unwrap(), Some(3));
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(b.recv(now, &mut buf).unwrap(), Some(100));
        assert_eq!(b.recv(now, &mut buf).unwrap(), None);
    }
}
