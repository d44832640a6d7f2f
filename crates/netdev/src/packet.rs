//! AF_PACKET sockets on one interface: what a capture reads and what a test or a frame
//! generator writes raw frames with, as a misbehaving neighbour would. One opener for all of
//! them (the lab's captures, `d11-blast`, the netns tests' injection).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A packet socket on one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    /// Opens a packet socket on `ifname` (in the current namespace). With `receive`, it is
    /// bound for every EtherType (a capture); without, it only sends (protocol 0 at socket():
    /// nothing is queued for it).
    pub fn open(ifname: &str, receive: bool) -> io::Result<Self> {
        let c = CString::new(ifname).map_err(|_| io::Error::other("a NUL in the name"))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {ifname:?}"),
            ));
        }
        // SAFETY: socket returns a new descriptor, which we own from here.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor of ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let s = Self { fd, addr };
        if receive {
            let mut bind = s.addr;
            bind.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: binding with a fully initialised sockaddr_ll.
            if unsafe {
                libc::bind(
                    s.fd.as_raw_fd(),
                    (&bind as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(s)
    }

    /// Puts the interface in promiscuous mode for as long as the socket is open (a bridge
    /// then hands its device every frame that enters it).
    pub fn promiscuous(&self) -> io::Result<()> {
        let mreq = libc::packet_mreq {
            mr_ifindex: self.addr.sll_ifindex,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
    }

    /// A socket option with a value of type `T`.
    pub fn setsockopt<T>(&self, level: i32, name: i32, value: &T) -> io::Result<()> {
        // SAFETY: the value is a valid T of the size given.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: sending from a valid buffer to our address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&self.addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The interface's address, for `sendmmsg` headers.
    pub fn addr(&self) -> libc::sockaddr_ll {
        self.addr
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: borrowed for as long as self lives.
        unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) }
    }
}
