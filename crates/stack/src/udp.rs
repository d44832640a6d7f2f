//! Async UDP over smoltcp.

use crate::Stack;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddrV4;
use std::task::Poll;

/// A bound UDP socket.
pub struct UdpSocket {
    stack: Stack,
    handle: SocketHandle,
}

impl Stack {
    /// Binds UDP `port` (0 = an ephemeral port).
    pub fn udp_bind(&self, port: u16) -> io::Result<UdpSocket> {
        let mut i = self.inner.borrow_mut();
        let port = if port == 0 { i.ephemeral_port() } else { port };
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 256 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 256 * 1024]),
        );
        s.bind(port).map_err(|e| {
            io::Error::new(io::ErrorKind::AddrInUse, format!("bind udp {port}: {e}"))
        })?;
        let handle = i.sockets.add(s);
        Ok(UdpSocket {
            stack: self.clone(),
            handle,
        })
    }
}

impl UdpSocket {
    /// The port it is bound to.
    pub fn local_port(&self) -> Option<u16> {
        let i = self.stack.inner.borrow();
        let p = i.sockets.get::<udp::Socket>(self.handle).endpoint().port;
        (p != 0).then_some(p)
    }

    /// Receives one datagram into `buf`; returns its length (cut to `buf`) and sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        poll_fn(|cx| {
            let mut i = self.stack.inner.borrow_mut();
            let s = i.sockets.get_mut::<udp::Socket>(self.handle);
            match s.recv_slice(buf) {
                Ok((n, meta)) => {
                    let smoltcp::wire::IpAddress::Ipv4(a) = meta.endpoint.addr else {
                        // (The frame guard lets no IPv6 through: an IPv4-only stack.)
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    };
                    i.c.udp_received += 1;
                    Poll::Ready(Ok((n, SocketAddrV4::new(a, meta.endpoint.port))))
                }
                Err(udp::RecvError::Truncated) => {
                    Poll::Ready(Err(io::Error::other("datagram larger than the buffer")))
                }
                Err(udp::RecvError::Exhausted) => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Sends one datagram to `to`.
    pub async fn send_to(&self, data: &[u8], to: SocketAddrV4) -> io::Result<()> {
        self.stack.inner.borrow_mut().probe_neighbour(*to.ip());
        poll_fn(|cx| {
            let mut i = self.stack.inner.borrow_mut();
            let s = i.sockets.get_mut::<udp::Socket>(self.handle);
            match s.send_slice(data, IpEndpoint::new((*to.ip()).into(), to.port())) {
                Ok(()) => {
                    i.c.udp_sent += 1;
                    drop(i);
                    self.stack.kick();
                    Poll::Ready(Ok(()))
                }
                Err(udp::SendError::BufferFull) => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(io::Error::other(format!("send to {to}: {e}")))),
            }
        })
        .await
    }
}

/// How long a dropped socket's queued datagrams may wait for their next hop (the neighbour
/// cache gives up on an unanswered ARP within it).
const LINGER: std::time::Duration = std::time::Duration::from_secs(3);

impl Drop for UdpSocket {
    /// What was sent is not lost: datagrams still queued (their next hop being resolved) go
    /// out first, within [`LINGER`]; the socket then goes.
    fn drop(&mut self) {
        let mut i = self.stack.inner.borrow_mut();
        if i.sockets.get::<udp::Socket>(self.handle).send_queue() == 0 {
            i.sockets.remove(self.handle);
        } else {
            let until = i.clock + LINGER;
            i.udp_orphans.push((self.handle, until));
        }
    }
}
