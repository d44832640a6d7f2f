//! Programs built on the router: the NAT, the eNodeB, SGW and PGW, the cloud's gateway node and
//! the virtual switch are each a [`Router`] (ARP, ping, ICMP errors, routes, next hops) and a
//! logic of their own, which sees the router's packets through its [`Hook`] and adds what its
//! role needs. [`RouterElement`] is the [`Element`] around the two: one plumbing for all of
//! them, so each writes only its logic.
//!
//! The logic is sans-IO like the router: it is given frames and time and leaves what it wants
//! sent in its [`Outbox`], which the element empties after each frame and each poll:
//! - `datagrams`: UDP from the router's own addresses (GTP, VXLAN, signalling);
//! - `packets`: IP packets from the router's own addresses (a health probe);
//! - `frames`: frames sent as they are on a port the logic owns (an eNodeB's radio, a switch's
//!   VM ports);
//! - `inject`: frames that arrived through the logic's tunnels, for the router as if received
//!   on the tunnel port (a PGW's UE side, the gateway's VPC router);
//! - `gso_datagrams`: datagrams whose payload is an offloaded frame (a gateway's TCP
//!   super-frames in VXLAN), sent whole where the port takes them and cut for the others.
//! - `segmented`: datagrams whose payload is many datagrams' payloads of one size (a PGW's
//!   G-PDUs, one after the other), sent as one UDP super-frame.
//!
//! A *tunnel port* is a router port that is no device: what the router sends there is handed
//! to [`RouterProgram::tunnel_frame`] (to be wrapped in GTP-U or VXLAN).
//!
//! A place is left for a control plane on the router's own addresses (BGP over TCP): a logic
//! sees every packet for the router in [`Hook::local`] and answers through its outbox.

use crate::udp::Datagram;
use crate::{Divert, Hook, Router};
use d11_element::{Element, PortId, Transmit};
use d11_wire::gso::Gso;
use serde_json::Value;
use std::time::Instant;

/// What a logic leaves for the wire. Its buffers come back once sent: a logic that takes
/// them from [`Outbox::buffer`] allocates nothing per packet once warm.
#[derive(Debug, Default)]
pub struct Outbox {
    pub datagrams: Vec<Datagram>,
    pub packets: Vec<Vec<u8>>,
    pub frames: Vec<(PortId, Vec<u8>)>,
    pub inject: Vec<Vec<u8>>,
    /// The same, offloaded (a super-frame out of a tunnel), with its metadata.
    pub inject_gso: Vec<(Vec<u8>, Gso)>,
    /// Datagrams whose payload holds an offloaded frame at the offset given, as
    /// [`Router::send_udp_gso`] takes them.
    pub gso_datagrams: Vec<(Datagram, usize, Gso)>,
    /// Datagrams whose payload is that of many datagrams to the same place, each of the size
    /// given (the last the rest), as [`Router::send_udp_segments`] takes them.
    pub segmented: Vec<(Datagram, u16)>,
    /// Buffers sent, kept for reuse.
    spare: Vec<Vec<u8>>,
}

/// Buffers kept for reuse at most.
const SPARE: usize = 256;

/// Keeps `b` for reuse, up to [`SPARE`] buffers.
fn keep_spare(spare: &mut Vec<Vec<u8>>, b: Vec<u8>) {
    if spare.len() < SPARE {
        spare.push(b);
    }
}

impl Outbox {
    /// An empty buffer for a payload or a frame: one sent before, if there is one.
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// A buffer holding a copy of `data`.
    pub fn copy(&mut self, data: &[u8]) -> Vec<u8> {
        let mut b = self.buffer();
        b.extend_from_slice(data);
        b
    }

    /// Gives a buffer back once its content is sent.
    pub fn recycle(&mut self, b: Vec<u8>) {
        keep_spare(&mut self.spare, b);
    }

    fn is_idle(&self) -> bool {
        self.datagrams.is_empty()
            && self.packets.is_empty()
            && self.frames.is_empty()
            && self.inject.is_empty()
            && self.inject_gso.is_empty()
            && self.gso_datagrams.is_empty()
            && self.segmented.is_empty()
    }
}

/// The logic of a program built on the router.
pub trait RouterProgram: Hook {
    /// The role name (`d11 show NODE info`).
    fn role(&self) -> &'static str;

    /// Where the logic leaves what it wants sent.
    fn outbox(&mut self) -> &mut Outbox;

    /// Whether transit super-frames may pass the router whole: the logic's hooks leave
    /// transit packets alone (BGP's control plane) or handle partial checksums. Otherwise the
    /// runtime cuts them into segments first.
    fn takes_gso(&self) -> bool {
        false
    }

    /// A frame on a port the logic owns, not the router (an eNodeB's radio, a switch's VM
    /// ports): the logic takes it and returns true. Other ports' frames go to the router.
    /// What it sends of the frame may go through `out` at once, while the frame is still
    /// borrowed (copied once, into the frame sent), or through the outbox.
    fn own_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        out: &mut Direct<'_>,
    ) -> bool {
        let _ = (now, port, frame, out);
        false
    }

    /// Whether the logic also takes super-frames inside a UDP tunnel (a VTEP's own
    /// [`own_frame_gso`](Self::own_frame_gso)); otherwise the runtime cuts them first.
    fn takes_tunnel_gso(&self) -> bool {
        false
    }

    /// Whether the logic also takes UDP super-frames ([`Gso::is_udp_segments`]: G-PDUs one
    /// after the other) in [`own_frame_gso`](Self::own_frame_gso); otherwise the runtime
    /// cuts them first.
    fn takes_udp_segments(&self) -> bool {
        false
    }

    /// Whether an offloaded frame from `port` that the logic did not take may go to the
    /// router whole. If not, the element cuts it into plain frames first, as the runtime
    /// would for a logic that does not take offloaded frames at all.
    fn routes_gso(&self, port: PortId, gso: &Gso) -> bool {
        let _ = (port, gso);
        true
    }

    /// An offloaded frame (see [`takes_gso`](Self::takes_gso)) the logic takes itself, as
    /// [`own_frame`](Self::own_frame): returns true if it did. Others go to the router. What
    /// it sends of the frame goes through `out` at once, while the frame is still borrowed (a
    /// super-frame is up to 64 KiB: not copied into the outbox).
    fn own_frame_gso(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        out: &mut Direct<'_>,
    ) -> bool {
        let _ = (now, port, frame, gso, out);
        false
    }

    /// The router port that is no device but the logic's tunnels.
    fn tunnel_port(&self) -> Option<PortId> {
        None
    }

    /// A frame the router sent to the tunnel port.
    fn tunnel_frame(&mut self, now: Instant, frame: &[u8]) {
        let _ = (now, frame);
    }

    /// An offloaded frame the router sent to the tunnel port (a super-frame, or a partial
    /// checksum): true if the logic took it whole; otherwise the element cuts it and hands
    /// each segment to [`tunnel_frame`](Self::tunnel_frame).
    fn tunnel_frame_gso(&mut self, now: Instant, frame: &[u8], gso: &Gso) -> bool {
        let _ = (now, frame, gso);
        false
    }

    /// When the logic wants [`RouterProgram::poll`] (its own timers).
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// The logic's timers: called at every poll of the element, it acts on what is due.
    fn poll(&mut self, now: Instant) {
        let _ = now;
    }

    /// The logic's own tables for `d11 show`, after the router's.
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// One of the logic's tables; `None` for the router's.
    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        let _ = (table, now);
        None
    }

    /// The logic's counters, after the router's.
    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        let _ = out;
    }

    /// What the runtime waits on besides frames and timers (a task of the logic's that has
    /// something for the router).
    fn wakeup(&self) -> Option<std::rc::Rc<tokio::sync::Notify>> {
        None
    }

    /// Routes the logic learned or lost (BGP), for the router's RIB.
    fn route_changes(&mut self) -> Vec<crate::bgp::RouteOp> {
        Vec::new()
    }
}

/// Sends for a logic at once, from data it borrows: a frame whole to a port, or a datagram
/// from the router built from parts (a tunnel's header and the frame).
pub struct Direct<'a> {
    router: &'a mut Router,
    tx: &'a mut dyn Transmit,
}

impl Direct<'_> {
    /// `frame` to `port` with its offload metadata (cut if the port cannot take it whole).
    pub fn frame(&mut self, port: PortId, frame: &[u8], gso: &Gso) {
        if gso.is_plain() {
            self.tx.send(port, frame);
        } else {
            self.tx.send_gso(port, frame, gso);
        }
    }

    /// A datagram from `src` whose payload is `parts`, as [`Router::send_udp_gso`] sends it.
    pub fn udp(
        &mut self,
        now: Instant,
        (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr),
        ports: (u16, u16),
        parts: &[&[u8]],
        inner: (usize, &Gso),
    ) -> bool {
        self.router
            .send_udp_gso(now, src, dst, ports, parts, inner, self.tx)
    }

    /// A datagram from `src` whose payload is that of many, each `size` octets (the last the
    /// rest), as [`Router::send_udp_segments`] sends it.
    pub fn udp_segments(
        &mut self,
        now: Instant,
        addrs: (std::net::Ipv4Addr, std::net::Ipv4Addr),
        ports: (u16, u16),
        payload: &[u8],
        size: u16,
    ) -> bool {
        self.router
            .send_udp_segments(now, addrs, ports, payload, size, self.tx)
    }
}

/// How many rounds of "the router sent to the tunnels, the tunnels delivered to the router"
/// one frame or poll may cause (a loop between them ends here).
const SETTLE_ROUNDS: usize = 64;

/// A router and the logic of a program built on it, as one [`Element`].
pub struct RouterElement<L> {
    pub router: Router,
    pub logic: L,
    /// Frames the router sent to the tunnel port, on their way to the logic, and the buffers
    /// they were kept in, for reuse.
    kept: Vec<(Vec<u8>, Gso)>,
    kept_spare: Vec<Vec<u8>>,
    /// Where a kept super-frame is cut for a logic that reads segments.
    cut: Vec<u8>,
}

impl<L: RouterProgram> RouterElement<L> {
    pub fn new(mut router: Router, logic: L) -> Self {
        router.set_tunnel_port(logic.tunnel_port());
        Self {
            router,
            logic,
            kept: Vec::new(),
            kept_spare: Vec::new(),
            cut: Vec::new(),
        }
    }

    /// The router's transmitter for this element: the tunnel port's frames are kept.
    fn divert<'a>(
        tunnel: Option<PortId>,
        tx: &'a mut dyn Transmit,
        kept: &'a mut Vec<(Vec<u8>, Gso)>,
        spare: &'a mut Vec<Vec<u8>>,
    ) -> Divert<'a> {
        Divert {
            inner: tx,
            port: tunnel.unwrap_or(PortId::MAX),
            kept,
            spare,
        }
    }

    /// Sends what the logic left, hands the logic what the router sent to its tunnels, and the
    /// router what came out of them, until all is done.
    fn settle(&mut self, now: Instant, tx: &mut dyn Transmit) {
        for op in self.logic.route_changes() {
            let rib = self.router.rib_mut();
            match op {
                crate::bgp::RouteOp::Add {
                    prefix,
                    next_hop,
                    source,
                } => rib.add(crate::rib::Route {
                    prefix,
                    next_hop: Some(next_hop),
                    port: None,
                    source,
                }),
                crate::bgp::RouteOp::Remove { prefix } => {
                    rib.remove(prefix, crate::rib::Source::Ebgp);
                    rib.remove(prefix, crate::rib::Source::Ibgp);
                }
            }
        }
        let tunnel = self.logic.tunnel_port();
        let mut kept = std::mem::take(&mut self.kept);
        for _ in 0..SETTLE_ROUNDS {
            for (f, g) in kept.drain(..) {
                if g.is_plain() {
                    self.logic.tunnel_frame(now, &f);
                } else if !self.logic.tunnel_frame_gso(now, &f, &g) {
                    let mut cut = std::mem::take(&mut self.cut);
                    cut.resize(d11_netdev::MAX_FRAME, 0);
                    let logic = &mut self.logic;
                    let _ =
                        d11_wire::gso::segment(&f, &g, &mut cut, |s| logic.tunnel_frame(now, s));
                    self.cut = cut;
                }
                keep_spare(&mut self.kept_spare, f);
            }
            let ob = self.logic.outbox();
            if ob.is_idle() {
                break;
            }
            let Outbox {
                datagrams,
                packets,
                frames,
                inject,
                inject_gso,
                gso_datagrams,
                segmented,
                spare,
            } = ob;
            for (p, f) in frames.drain(..) {
                tx.send(p, &f);
                keep_spare(spare, f);
            }
            let mut inject = std::mem::take(inject);
            let mut inject_gso = std::mem::take(inject_gso);
            {
                let mut d = Self::divert(tunnel, tx, &mut kept, &mut self.kept_spare);
                for g in datagrams.drain(..) {
                    self.router.send_udp(
                        now,
                        Some(g.src),
                        g.dst,
                        g.sport,
                        g.dport,
                        &g.payload,
                        &mut d,
                    );
                    keep_spare(spare, g.payload);
                }
                for (dg, at, g) in gso_datagrams.drain(..) {
                    self.router.send_udp_gso(
                        now,
                        dg.src,
                        dg.dst,
                        (dg.sport, dg.dport),
                        &[&dg.payload],
                        (at, &g),
                        &mut d,
                    );
                    keep_spare(spare, dg.payload);
                }
                for (dg, size) in segmented.drain(..) {
                    self.router.send_udp_segments(
                        now,
                        (dg.src, dg.dst),
                        (dg.sport, dg.dport),
                        &dg.payload,
                        size,
                        &mut d,
                    );
                    keep_spare(spare, dg.payload);
                }
                for ip in packets.drain(..) {
                    self.router.send_ip(now, &ip, &mut d);
                    keep_spare(spare, ip);
                }
            }
            if let Some(p) = tunnel {
                for f in inject.iter_mut() {
                    let mut d = Self::divert(tunnel, tx, &mut kept, &mut self.kept_spare);
                    self.router
                        .handle_frame_with(now, p, f, &mut d, &mut self.logic);
                }
                for (f, g) in inject_gso.iter_mut() {
                    let mut d = Self::divert(tunnel, tx, &mut kept, &mut self.kept_spare);
                    self.router
                        .handle_frame_gso_with(now, p, f, g, &mut d, &mut self.logic);
                }
            }
            // The injected frames' buffers, and the queues themselves, go back.
            let ob = self.logic.outbox();
            for f in inject.drain(..) {
                ob.recycle(f);
            }
            for (f, _) in inject_gso.drain(..) {
                ob.recycle(f);
            }
            if ob.inject.is_empty() {
                ob.inject = inject;
            }
            if ob.inject_gso.is_empty() {
                ob.inject_gso = inject_gso;
            }
        }
        kept.clear();
        self.kept = kept;
    }
}

impl<L: RouterProgram> RouterElement<L> {
    /// A frame from a port (with its offload metadata, if the port has offloads): the logic's
    /// if it owns it, the router's otherwise; then what that left is sent.
    fn receive(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: Option<&Gso>,
        tx: &mut dyn Transmit,
    ) {
        let tunnel = self.logic.tunnel_port();
        let mut kept = std::mem::take(&mut self.kept);
        {
            let mut d = Self::divert(tunnel, tx, &mut kept, &mut self.kept_spare);
            let mut direct = Direct {
                router: &mut self.router,
                tx: &mut d,
            };
            let taken = match gso {
                None => self.logic.own_frame(now, port, frame, &mut direct),
                Some(g) => self.logic.own_frame_gso(now, port, frame, g, &mut direct),
            };
            if !taken {
                match gso {
                    None => {
                        self.router
                            .handle_frame_with(now, port, frame, &mut d, &mut self.logic)
                    }
                    Some(g) if !g.is_plain() && !self.logic.routes_gso(port, g) => {
                        // Cut here for the router, as the runtime would have.
                        let mut cut = std::mem::take(&mut self.cut);
                        cut.resize(d11_netdev::MAX_FRAME, 0);
                        let (router, logic) = (&mut self.router, &mut self.logic);
                        if d11_wire::gso::segment(frame, g, &mut cut, |s| {
                            router.handle_frame_with(now, port, s, &mut d, logic)
                        })
                        .is_err()
                        {
                            router.count_gso_dropped();
                        }
                        self.cut = cut;
                    }
                    Some(g) => self.router.handle_frame_gso_with(
                        now,
                        port,
                        frame,
                        g,
                        &mut d,
                        &mut self.logic,
                    ),
                }
            }
        }
        self.kept = kept;
        self.settle(now, tx);
    }
}

impl<L: RouterProgram> Element for RouterElement<L> {
    fn role(&self) -> &'static str {
        self.logic.role()
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
    ) {
        self.receive(now, port, frame, None, tx);
    }

    fn takes_gso(&self) -> bool {
        self.logic.takes_gso()
    }

    fn takes_tunnel_gso(&self) -> bool {
        self.logic.takes_tunnel_gso()
    }

    fn takes_udp_segments(&self) -> bool {
        self.logic.takes_udp_segments()
    }

    fn handle_frame_gso(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        tx: &mut dyn Transmit,
    ) {
        self.receive(now, port, frame, Some(gso), tx);
    }

    fn poll_at(&self) -> Option<Instant> {
        [self.router.poll_at(), self.logic.poll_at()]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll(&mut self, now: Instant, tx: &mut dyn Transmit) {
        // (The logic checks its own deadlines: it may have several.)
        self.logic.poll(now);
        if self.router.poll_at().is_some_and(|t| t <= now) {
            let tunnel = self.logic.tunnel_port();
            let mut kept = std::mem::take(&mut self.kept);
            {
                let mut d = Self::divert(tunnel, tx, &mut kept, &mut self.kept_spare);
                self.router.poll(now, &mut d);
            }
            self.kept = kept;
        }
        self.settle(now, tx);
    }

    fn tables(&self) -> Vec<String> {
        let mut t = self.router.tables();
        t.extend(self.logic.tables().iter().map(|s| s.to_string()));
        t
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        self.logic
            .show(table, now)
            .or_else(|| self.router.show(table, now))
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.router.counters(out);
        self.logic.counters(out);
    }

    fn wakeup(&self) -> Option<std::rc::Rc<tokio::sync::Notify>> {
        self.logic.wakeup()
    }
}
