//! Async TCP over smoltcp: a listener with an accept backlog, and streams for tokio tasks.

use crate::{Inner, Stack, StackCounters};
use serde_json::{json, Value};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self as stcp, State};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) type Socket<'a> = stcp::Socket<'a>;

/// The accept backlog of one port: sockets listening, and when each went half-open.
pub(crate) struct Pool {
    port: u16,
    pub(crate) sockets: Vec<(SocketHandle, Option<Instant>)>,
}

impl Pool {
    /// Notes half-open sockets; sends those past `syn_timeout` back to listening, and re-arms
    /// sockets that closed before they were accepted. True if a socket changed.
    pub(crate) fn maintain(
        &mut self,
        now: Instant,
        syn_timeout: Duration,
        sockets: &mut SocketSet<'static>,
        c: &mut StackCounters,
    ) -> bool {
        let mut changed = false;
        for (h, since) in &mut self.sockets {
            let s = sockets.get_mut::<Socket>(*h);
            match s.state() {
                State::SynReceived => {
                    let t = *since.get_or_insert(now);
                    if now.saturating_duration_since(t) >= syn_timeout {
                        s.abort();
                        let _ = s.listen(self.port);
                        *since = None;
                        c.tcp_syn_timeouts += 1;
                        changed = true;
                    }
                }
                State::Closed | State::TimeWait => {
                    // Reset or closed before accept: listen again.
                    s.abort();
                    let _ = s.listen(self.port);
                    *since = None;
                    changed = true;
                }
                _ => *since = None,
            }
        }
        changed
    }

    /// A SYN is about to arrive for this port: if no socket is listening, the oldest half-open
    /// one is aborted (its peer gets a RST) and listens again, so the new SYN gets a socket.
    /// A flood of SYNs then churns the pool instead of locking it, and memory stays that of
    /// the pool. True if a socket was taken back.
    pub(crate) fn make_room(&mut self, now: Instant, sockets: &mut SocketSet<'static>) -> bool {
        if self
            .sockets
            .iter()
            .any(|(h, _)| sockets.get::<Socket>(*h).state() == State::Listen)
        {
            return false;
        }
        let oldest = self
            .sockets
            .iter_mut()
            .filter(|(h, _)| sockets.get::<Socket>(*h).state() == State::SynReceived)
            .min_by_key(|(_, since)| since.unwrap_or(now));
        let Some((h, since)) = oldest else {
            return false;
        };
        let s = sockets.get_mut::<Socket>(*h);
        s.abort();
        let _ = s.listen(self.port);
        *since = None;
        true
    }

    pub(crate) fn next_deadline(&self, syn_timeout: Duration) -> Option<Instant> {
        self.sockets
            .iter()
            .filter_map(|(_, s)| s.map(|t| t + syn_timeout))
            .min()
    }
}

/// Accepts TCP connections on a port. smoltcp has no accept queue: a listening socket takes
/// one client and is done, so the listener keeps `backlog` sockets listening and puts a fresh
/// one in each accepted socket's place.
pub struct TcpListener {
    stack: Stack,
    port: u16,
}

impl Stack {
    /// Listens on `port` with `backlog` sockets ready for clients at once.
    pub fn listen(&self, port: u16, backlog: usize) -> io::Result<TcpListener> {
        let mut i = self.inner.borrow_mut();
        if i.pools.contains_key(&port) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("port {port} is already listening"),
            ));
        }
        let mut pool = Pool {
            port,
            sockets: Vec::new(),
        };
        for _ in 0..backlog.max(1) {
            let mut s = i.tcp_socket();
            s.listen(port).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("listen {port}: {e}"))
            })?;
            pool.sockets.push((i.sockets.add(s), None));
        }
        i.pools.insert(port, pool);
        drop(i);
        self.kick();
        Ok(TcpListener {
            stack: self.clone(),
            port,
        })
    }

    /// Opens a connection to `remote` from an ephemeral port.
    pub async fn connect(&self, remote: SocketAddrV4) -> io::Result<TcpStream> {
        let handle = {
            let mut i = self.inner.borrow_mut();
            if i.tcp_count() >= i.tuning.max_sockets {
                return Err(io::Error::other("too many sockets"));
            }
            let local = i.ephemeral_port();
            i.probe_neighbour(*remote.ip());
            let mut s = i.tcp_socket();
            s.set_tsval_generator(Some(tsval));
            let Inner { iface, .. } = &mut *i;
            s.connect(
                iface.context(),
                IpEndpoint::new((*remote.ip()).into(), remote.port()),
                local,
            )
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("connect {remote}: {e}"),
                )
            })?;
            i.sockets.add(s)
        };
        self.kick();
        let stream = TcpStream {
            stack: self.clone(),
            handle,
            closed_by_us: false,
        };
        poll_fn(|cx| {
            let mut i = self.inner.borrow_mut();
            let s = i.sockets.get_mut::<Socket>(handle);
            match s.state() {
                State::Established | State::CloseWait => {
                    i.c.tcp_connected += 1;
                    Poll::Ready(Ok(()))
                }
                State::Closed | State::TimeWait => {
                    i.c.tcp_connect_failed += 1;
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("connection to {remote} refused or reset"),
                    )))
                }
                _ => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await?;
        Ok(stream)
    }
}

/// TCP timestamps (RFC 7323) of the connections we open: milliseconds, counted from the wall
/// clock at the stack's start and then by the runtime's time, so that they grow from one
/// connection to the next on the same four-tuple, across restarts too.
///
/// Why: a server that closed first holds the old connection in TIME-WAIT (60 s on Linux), and
/// a balancer opening thousands of connections a second to it comes back to the same source
/// port within that time. Linux takes a SYN in TIME-WAIT as a new connection when its
/// timestamp is newer than the old connection's (or its sequence number is above the old
/// one's, which smoltcp's random ISNs are only half the time); otherwise it answers with the
/// old connection's ACK, we reset, and smoltcp sends the SYN again a second later. Measured:
/// through d11-lb to nginx with a new connection per request, a few thousand requests a
/// second fell to tens, each waiting a second (docs/perf.md). smoltcp drops the option when
/// the peer's SYN-ACK has none.
///
/// smoltcp asks a plain `fn()`, so the stack sets the value before each poll
/// ([`set_tsval`]); the stack reads no clock for it.
fn tsval() -> u32 {
    TSVAL.with(std::cell::Cell::get)
}

thread_local! {
    static TSVAL: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The timestamp clock's value for what the stack polls next (see [`tsval`]).
pub(crate) fn set_tsval(ms: u32) {
    TSVAL.with(|t| t.set(ms));
}

impl Stack {
    /// Waits until no connection is still closing (every TCP socket is listening, closed or in
    /// TIME-WAIT), at most `timeout`: a program that is about to exit calls it so its FINs
    /// reach the wire.
    pub async fn quiesce(&self, timeout: Duration) {
        let _ = tokio::time::timeout(
            timeout,
            poll_fn(|cx| {
                let mut i = self.inner.borrow_mut();
                let mut busy = false;
                for (_, s) in i.sockets.iter_mut() {
                    if let smoltcp::socket::Socket::Tcp(s) = s {
                        if !matches!(s.state(), State::Closed | State::TimeWait | State::Listen) {
                            busy = true;
                            s.register_send_waker(cx.waker());
                        }
                    }
                }
                if busy {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            }),
        )
        .await;
    }
}

fn endpoint(e: Option<IpEndpoint>) -> Option<SocketAddrV4> {
    // (IPv4 only: the frame guard lets no IPv6 through.)
    e.and_then(|e| match e.addr {
        smoltcp::wire::IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
        smoltcp::wire::IpAddress::Ipv6(_) => None,
    })
}

impl TcpListener {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for an established connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        poll_fn(|cx| {
            let mut guard = self.stack.inner.borrow_mut();
            let i = &mut *guard;
            let Some(pool) = i.pools.get_mut(&self.port) else {
                return Poll::Ready(Err(io::Error::other("listener closed")));
            };
            let ready = pool.sockets.iter().position(|(h, _)| {
                matches!(
                    i.sockets.get::<Socket>(*h).state(),
                    State::Established | State::CloseWait
                )
            });
            if let Some(k) = ready {
                let (h, _) = pool.sockets.swap_remove(k);
                let remote = endpoint(i.sockets.get::<Socket>(h).remote_endpoint())
                    .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                // Re-arm: a fresh socket takes the accepted one's place, unless the stack is full.
                if i.tcp_count() < i.tuning.max_sockets {
                    let mut s = i.tcp_socket();
                    if s.listen(IpListenEndpoint {
                        addr: None,
                        port: self.port,
                    })
                    .is_ok()
                    {
                        let nh = i.sockets.add(s);
                        if let Some(pool) = i.pools.get_mut(&self.port) {
                            pool.sockets.push((nh, None));
                        }
                    }
                } else {
                    i.c.tcp_refused_full += 1;
                }
                i.c.tcp_accepted += 1;
                drop(guard);
                self.stack.kick();
                return Poll::Ready(Ok((
                    TcpStream {
                        stack: self.stack.clone(),
                        handle: h,
                        closed_by_us: false,
                    },
                    remote,
                )));
            }
            for (h, _) in &pool.sockets {
                i.sockets
                    .get_mut::<Socket>(*h)
                    .register_recv_waker(cx.waker());
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let mut i = self.stack.inner.borrow_mut();
        if let Some(pool) = i.pools.remove(&self.port) {
            for (h, _) in pool.sockets {
                let s = i.sockets.get_mut::<Socket>(h);
                let ends = crate::endpoints(s);
                s.abort();
                i.orphans.push((h, ends));
            }
        }
    }
}

/// A TCP connection on the userspace stack: `AsyncRead` + `AsyncWrite` for tokio tasks.
/// Dropping it closes the connection gracefully (FIN after the queued data).
pub struct TcpStream {
    stack: Stack,
    handle: SocketHandle,
    closed_by_us: bool,
}

impl TcpStream {
    pub fn local_addr(&self) -> Option<SocketAddrV4> {
        endpoint(
            self.stack
                .inner
                .borrow()
                .sockets
                .get::<Socket>(self.handle)
                .local_endpoint(),
        )
    }

    pub fn peer_addr(&self) -> Option<SocketAddrV4> {
        endpoint(
            self.stack
                .inner
                .borrow()
                .sockets
                .get::<Socket>(self.handle)
                .remote_endpoint(),
        )
    }

    /// Octets sent but not yet acknowledged, or not yet sent.
    pub fn send_queue(&self) -> usize {
        self.stack
            .inner
            .borrow()
            .sockets
            .get::<Socket>(self.handle)
            .send_queue()
    }

    /// Waits until every octet written has been acknowledged, or the connection ended.
    pub async fn drain(&self) {
        poll_fn(|cx| {
            let mut i = self.stack.inner.borrow_mut();
            let s = i.sockets.get_mut::<Socket>(self.handle);
            if s.send_queue() == 0
                || !s.may_send()
                    && !matches!(s.state(), State::FinWait1 | State::Closing | State::LastAck)
            {
                Poll::Ready(())
            } else {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut i = this.stack.inner.borrow_mut();
        let s = i.sockets.get_mut::<Socket>(this.handle);
        if s.can_recv() {
            let n = s.recv_slice(buf.initialize_unfilled()).unwrap_or(0);
            buf.advance(n);
            drop(i);
            // Reading opens the window: let the stack tell the peer.
            this.stack.kick();
            return Poll::Ready(Ok(()));
        }
        if !s.may_recv() {
            return match s.state() {
                // Closed without our close and without a FIN: reset or timed out.
                State::Closed if !this.closed_by_us => {
                    Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
                }
                _ => Poll::Ready(Ok(())), // end of stream
            };
        }
        s.register_recv_waker(cx.waker());
        Poll::Pending
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut i = this.stack.inner.borrow_mut();
        let s = i.sockets.get_mut::<Socket>(this.handle);
        if !s.may_send() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if s.can_send() {
            let n = s.send_slice(data).unwrap_or(0);
            drop(i);
            this.stack.kick();
            return Poll::Ready(Ok(n));
        }
        s.register_send_waker(cx.waker());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is in the socket's buffer; the stack sends it as the window allows.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.closed_by_us = true;
        let mut i = this.stack.inner.borrow_mut();
        let s = i.sockets.get_mut::<Socket>(this.handle);
        s.close();
        // An end that closes first reaches TIME-WAIT when the peer's FIN comes; if its
        // program has let go of it, it then leaves smoltcp's set for the TIME-WAIT table at
        // the next poll, and an ACK still waiting out its delay would leave with it, unsent
        // (the peer would send its FIN again). From here on, ACKs go at once.
        s.set_ack_delay(None);
        drop(i);
        this.stack.kick();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        {
            let mut i = self.stack.inner.borrow_mut();
            let s = i.sockets.get_mut::<Socket>(self.handle);
            let ends = crate::endpoints(s);
            s.close();
            // As in `poll_shutdown`: the peer's FIN, when it comes, is acknowledged at once.
            s.set_ack_delay(None);
            i.orphans.push((self.handle, ends));
        }
        self.stack.kick();
    }
}

/// The `tcp` table of `d11 show`: every socket, with what the wire showed of it.
pub(crate) fn show(i: &Inner, _now: Instant) -> Value {
    let mut rows = Vec::new();
    // One row per listening port: its accept pool, with how many sockets wait for a client.
    let mut ports: Vec<_> = i.pools.iter().collect();
    ports.sort_by_key(|(p, _)| **p);
    for (port, pool) in ports {
        let listening = pool
            .sockets
            .iter()
            .filter(|(h, _)| i.sockets.get::<Socket>(*h).state() == State::Listen)
            .count();
        rows.push(json!({
            "state": "LISTEN",
            "local": format!("*:{port}"),
            "remote": null,
            "backlog": format!("{listening}/{} listening", pool.sockets.len()),
        }));
    }
    for (_, s) in i.sockets.iter() {
        let smoltcp::socket::Socket::Tcp(s) = s else {
            continue;
        };
        if s.state() == State::Listen {
            continue;
        }
        let local = endpoint(s.local_endpoint());
        let remote = endpoint(s.remote_endpoint());
        let listen = s.listen_endpoint().port;
        let mut row = json!({
            "state": s.state().to_string(),
            "local": local.map(|l| l.to_string()).unwrap_or_else(|| format!("*:{listen}")),
            "remote": remote.map(|r| r.to_string()),
            "send_queue": s.send_queue(),
            "recv_queue": s.recv_queue(),
        });
        if let (Some(l), Some(r)) = (local, remote) {
            if let Some(c) = i.wire.tracker.get(l, r) {
                row["seq"] = json!(c.snd_max.wrapping_sub(c.isn_local));
                row["ack"] = json!(c.rcv_nxt.wrapping_sub(c.isn_remote));
                row["snd_wnd"] = json!(c.snd_wnd);
                row["rcv_wnd"] = json!(c.rcv_wnd);
                row["retransmits"] = json!(c.retransmits);
                row["late_in"] = json!(c.late_in);
                row["isn"] = json!(c.isn_local);
            }
        }
        rows.push(row);
    }
    Value::Array(rows)
}
