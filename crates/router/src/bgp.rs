//! BGP on the router (stage 2): the speaker of `d11-bgp` over our TCP (`d11-stack`, port
//! 179) on the router's own addresses, its best paths in the router's RIB.
//!
//! The TCP endpoint is a `d11-stack` inside the router, given every address of the router's
//! ports: TCP packets for the router (the router's [`Hook::local`]) go to it as frames, and
//! what it sends comes back as IP packets the router routes as its own (so ARP, next hops and
//! TTL are the router's). The stack's ARP questions are answered here: every next hop is the
//! router itself.
//!
//! An async task drives the sessions (connect, accept, read, write, timers) and leaves the
//! route changes for [`RouterProgram::route_changes`], which the element applies to the RIB.
//!
//! BFD (RFC 5880/5881) runs in the element itself, beside the forwarding: its control
//! packets are UDP to port 3784 with TTL 255 both ways, read from [`Hook::local`] and sent as
//! the router's own packets. Packets from an address that is no BFD neighbour, with another
//! TTL, or malformed, are counted and dropped. A session that leaves Up takes its BGP session
//! down at once (the driver is told through a queue and a wakeup).

use crate::program::{Outbox, RouterProgram};
use crate::rib::Source;
use crate::{Hook, HookVerdict};
use d11_bgp::bfd;
use d11_bgp::rib::{Change, PeerId};
use d11_bgp::speaker::{Conn, Dir, Out, Speaker, SpeakerConfig};
use d11_element::{App, Element, PortConfig, PortId, Transmit};
use d11_stack::{Stack, StackConfig, StackElement, TcpStream};
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

/// BGP's port.
pub const PORT: u16 = 179;

/// A route change for the router's RIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    Add {
        prefix: Ipv4Net,
        next_hop: Ipv4Addr,
        source: Source,
    },
    Remove {
        prefix: Ipv4Net,
    },
}

/// The router's BGP, when its config has a `bgp` table.
pub struct Bgp {
    element: StackElement,
    /// What the stack believes every next hop's MAC is.
    peer_mac: [u8; 6],
    stack_mac: [u8; 6],
    speaker: Rc<RefCell<Speaker>>,
    ops: Rc<RefCell<Vec<RouteOp>>>,
}

/// BFD with one BGP neighbour.
struct BfdPeer {
    peer: PeerId,
    addr: Ipv4Addr,
    local: Ipv4Addr,
    /// Our source port, the same for every packet of the session (RFC 5881 §4).
    sport: u16,
    session: bfd::Session,
}

/// BFD's counters.
#[derive(Debug, Default)]
struct BfdCounters {
    packets_in: u64,
    packets_out: u64,
    not_a_neighbour: u64,
    bad_ttl: u64,
    bad_udp: u64,
    malformed: u64,
    /// Sessions that went Down from Up, each taking its BGP session down.
    sessions_down: u64,
}

/// The router's program: BGP if configured, else nothing (a plain router).
#[derive(Default)]
pub struct BgpLogic {
    outbox: Outbox,
    bgp: Option<Bgp>,
    bfd: Vec<BfdPeer>,
    bfd_c: BfdCounters,
    /// Peers whose BFD went down, for the driver.
    bfd_down: Rc<RefCell<Vec<PeerId>>>,
    /// Wakes the driver.
    driver_wake: Rc<Notify>,
    /// Frames the stack sent, between its call and their unwrapping.
    frames: Vec<Vec<u8>>,
}

/// Collects what the stack transmits.
struct Collect<'a>(&'a mut Vec<Vec<u8>>);

impl Transmit for Collect<'_> {
    fn send(&mut self, _: PortId, frame: &[u8]) {
        self.0.push(frame.to_vec());
    }
}

impl BgpLogic {
    /// The logic for a router with `ports` and an optional `bgp` table; the task that runs
    /// the sessions, if there is BGP.
    pub fn new(
        name: &str,
        ports: &[PortConfig],
        cfg: Option<&SpeakerConfig>,
    ) -> anyhow::Result<(Self, Option<App>)> {
        let Some(cfg) = cfg else {
            return Ok((Self::default(), None));
        };
        let mut cfg = cfg.clone();
        // Each neighbour's local address: ours on its subnet.
        let addrs: Vec<Ipv4Net> = ports.iter().flat_map(|p| p.addresses.clone()).collect();
        for n in &mut cfg.neighbours {
            if n.local_address.is_none() {
                n.local_address = addrs
                    .iter()
                    .find(|a| a.contains(&n.address))
                    .map(|a| a.addr());
            }
            if n.local_address.is_none() {
                anyhow::bail!(
                    "bgp neighbour {}: on none of the router's subnets (only directly connected neighbours)",
                    n.address
                );
            }
        }
        let speaker = Rc::new(RefCell::new(Speaker::new(&cfg)?));
        let stack_cfg: StackConfig = serde_json::from_value(json!({
            "name": format!("{name}-bgp"),
            "ports": [{"name": "bgp", "addresses": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()}],
        }))?;
        let (stack, element) = Stack::new(&stack_cfg, "router")?;
        let stack_mac = PortConfig {
            name: "bgp".into(),
            mac: None,
            addresses: Vec::new(),
            mtu: None,
            offload: false,
        }
        .mac_for(&format!("{name}-bgp"))?;
        let ops = Rc::new(RefCell::new(Vec::new()));
        // Listening before the router reports ready: a peer started after us finds it.
        let listener = stack.listen(PORT, 16)?;
        let bfd_down = Rc::new(RefCell::new(Vec::new()));
        let driver_wake = Rc::new(Notify::new());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32);
        let start = now();
        let bfd = cfg
            .neighbours
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let b = n.bfd.clone()?;
                let disc = ((seed as u32) & 0xffff_0000) | (i as u32 + 1);
                Some(BfdPeer {
                    peer: i,
                    addr: n.address,
                    local: n.local_address?,
                    sport: 49152 + i as u16,
                    session: bfd::Session::new(b, disc, seed.rotate_left(i as u32 * 7), start),
                })
            })
            .collect();
        let app = run(
            stack,
            listener,
            speaker.clone(),
            ops.clone(),
            bfd_down.clone(),
            driver_wake.clone(),
        );
        Ok((
            Self {
                outbox: Outbox::default(),
                bgp: Some(Bgp {
                    element,
                    peer_mac: [0x02, 0xd1, 0xb9, 0x00, 0x00, 0x01],
                    stack_mac,
                    speaker,
                    ops,
                }),
                bfd,
                bfd_c: BfdCounters::default(),
                bfd_down,
                driver_wake,
                frames: Vec::new(),
            },
            Some(app),
        ))
    }

    /// Runs `f` on the stack, then hands what it sent on: ARP questions answered back into
    /// it, IP packets to the router's outbox.
    fn with_stack(&mut self, now: Instant, f: impl FnOnce(&mut StackElement, &mut dyn Transmit)) {
        let Some(b) = self.bgp.as_mut() else { return };
        let mut frames = std::mem::take(&mut self.frames);
        f(&mut b.element, &mut Collect(&mut frames));
        for _ in 0..4 {
            if frames.is_empty() {
                break;
            }
            let mut answers = Vec::new();
            for fr in frames.drain(..) {
                if fr.len() >= 42 && fr[12..14] == [0x08, 0x06] && fr[20..22] == [0, 1] {
                    // An ARP request: the router is every next hop.
                    let mut a = fr.clone();
                    a[0..6].copy_from_slice(&b.stack_mac);
                    a[6..12].copy_from_slice(&b.peer_mac);
                    a[20..22].copy_from_slice(&[0, 2]);
                    a[22..28].copy_from_slice(&b.peer_mac);
                    a[28..32].copy_from_slice(&fr[38..42]);
                    a[32..38].copy_from_slice(&fr[22..28]);
                    a[38..42].copy_from_slice(&fr[28..32]);
                    answers.push(a);
                } else if fr.len() > 34 && fr[12..14] == [0x08, 0x00] {
                    let ip = self.outbox.copy(&fr[14..]);
                    self.outbox.packets.push(ip);
                }
            }
            for mut a in answers {
                b.element
                    .handle_frame(now, 0, &mut a, &mut Collect(&mut frames));
            }
        }
        frames.clear();
        self.frames = frames;
    }

    /// A BFD control packet for the router (UDP to port 3784).
    fn bfd_in(&mut self, now: Instant, ip: &[u8], udp: &crate::udp::Udp) {
        let Some(i) = self.bfd.iter().position(|b| b.addr == udp.src) else {
            self.bfd_c.not_a_neighbour += 1;
            return;
        };
        // Single hop: only a packet no router has forwarded (RFC 5881 §5).
        if ip[8] != bfd::TTL {
            self.bfd_c.bad_ttl += 1;
            return;
        }
        let p = match bfd::Packet::decode(udp.payload) {
            Ok(p) => p,
            Err(_) => {
                self.bfd_c.malformed += 1;
                return;
            }
        };
        self.bfd_c.packets_in += 1;
        let ev = self.bfd[i].session.on_packet(now, &p);
        self.bfd_event(i, ev);
        self.bfd_poll(now);
    }

    fn bfd_event(&mut self, i: usize, ev: Option<bfd::Event>) {
        let b = &self.bfd[i];
        match ev {
            Some(bfd::Event::Up) => tracing::info!(neighbour = %b.addr, "BFD session up"),
            Some(bfd::Event::Down(d)) => {
                tracing::warn!(neighbour = %b.addr, diagnostic = bfd::diag::name(d), "BFD session down");
                self.bfd_c.sessions_down += 1;
                self.bfd_down.borrow_mut().push(b.peer);
                self.driver_wake.notify_one();
            }
            None => {}
        }
    }

    /// BFD's timers: packets due go out as the router's own, TTL 255.
    fn bfd_poll(&mut self, now: Instant) {
        for i in 0..self.bfd.len() {
            if self.bfd[i].session.poll_at().is_none_or(|t| t > now) {
                continue;
            }
            let (pkt, ev) = self.bfd[i].session.poll(now);
            self.bfd_event(i, ev);
            let Some(pkt) = pkt else { continue };
            let b = &self.bfd[i];
            let (src, dst, sport) = (b.local, b.addr, b.sport);
            let mut ip = self.outbox.buffer();
            ip.resize(20 + 8 + bfd::LEN, 0);
            d11_wire::ip::write_header(&mut ip, 20 + 8 + bfd::LEN, bfd::TTL, 17, src, dst);
            ip[20..22].copy_from_slice(&sport.to_be_bytes());
            ip[22..24].copy_from_slice(&bfd::PORT.to_be_bytes());
            ip[24..26].copy_from_slice(&((8 + bfd::LEN) as u16).to_be_bytes());
            ip[28..].copy_from_slice(&pkt.encode());
            let sum = d11_wire::ip::udp_checksum(src, dst, &ip[20..]);
            ip[26..28].copy_from_slice(&sum.to_be_bytes());
            self.outbox.packets.push(ip);
            self.bfd_c.packets_out += 1;
        }
    }
}

/// The destination port of a UDP datagram too broken to read whole (its header may run past
/// the packet: then `None`).
fn udp_dport(ip: &[u8]) -> Option<u16> {
    let at = d11_wire::ip::header_len(ip);
    Some(u16::from_be_bytes([*ip.get(at + 2)?, *ip.get(at + 3)?]))
}

impl Hook for BgpLogic {
    fn local(&mut self, now: Instant, _in_port: PortId, ip: &[u8]) -> HookVerdict {
        if ip.len() >= 20 && ip[9] == 17 && !self.bfd.is_empty() {
            match crate::udp::parse_udp(ip) {
                Ok(u) if u.dport == bfd::PORT => {
                    self.bfd_in(now, ip, &u);
                    return HookVerdict::Drop;
                }
                Err(crate::udp::UdpError::BadLength | crate::udp::UdpError::BadChecksum)
                    if udp_dport(ip) == Some(bfd::PORT) =>
                {
                    self.bfd_c.bad_udp += 1;
                    return HookVerdict::Drop;
                }
                _ => {}
            }
        }
        let Some(b) = self.bgp.as_ref() else {
            return HookVerdict::Continue;
        };
        if ip.len() < 20 || ip[9] != 6 {
            return HookVerdict::Continue;
        }
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&b.stack_mac);
        frame.extend_from_slice(&b.peer_mac);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(ip);
        self.with_stack(now, |st, tx| st.handle_frame(now, 0, &mut frame, tx));
        // Taken: nothing more for the router to do with it.
        HookVerdict::Drop
    }
}

impl RouterProgram for BgpLogic {
    fn role(&self) -> &'static str {
        "router"
    }

    /// BGP and BFD see only the router's own packets (which are cut first): transit
    /// super-frames pass whole.
    fn takes_gso(&self) -> bool {
        true
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    fn poll_at(&self) -> Option<Instant> {
        let stack = self.bgp.as_ref().and_then(|b| b.element.poll_at());
        self.bfd
            .iter()
            .filter_map(|b| b.session.poll_at())
            .chain(stack)
            .min()
    }

    fn poll(&mut self, now: Instant) {
        self.bfd_poll(now);
        let stack = self.bgp.as_ref().and_then(|b| b.element.poll_at());
        if stack.is_some_and(|t| t <= now) {
            self.with_stack(now, |st, tx| st.poll(now, tx));
        }
    }

    fn wakeup(&self) -> Option<Rc<Notify>> {
        self.bgp.as_ref().and_then(|b| b.element.wakeup())
    }

    fn route_changes(&mut self) -> Vec<RouteOp> {
        self.bgp
            .as_ref()
            .map(|b| std::mem::take(&mut *b.ops.borrow_mut()))
            .unwrap_or_default()
    }

    fn tables(&self) -> &'static [&'static str] {
        if self.bgp.is_some() {
            &["bgp", "bgp-routes", "bfd"]
        } else {
            &[]
        }
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        let b = self.bgp.as_ref()?;
        match table {
            "bgp" => Some(b.speaker.borrow().show(now)),
            "bgp-routes" => Some(b.speaker.borrow().rib.show_routes()),
            "bfd" => Some(json!(self
                .bfd
                .iter()
                .map(|p| {
                    let mut v = p.session.show(now);
                    v["neighbour"] = json!(p.addr.to_string());
                    v["local_address"] = json!(p.local.to_string());
                    v["source_port"] = json!(p.sport);
                    v
                })
                .collect::<Vec<_>>())),
            _ => None,
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        if let Some(b) = &self.bgp {
            b.element.counters(&mut |k, v| {
                if k.starts_with("tcp_") {
                    out(&format!("bgp_{k}"), v)
                }
            });
        }
        if !self.bfd.is_empty() {
            let c = &self.bfd_c;
            out("bfd_packets_in", c.packets_in);
            out("bfd_packets_out", c.packets_out);
            out("bfd_dropped_not_a_neighbour", c.not_a_neighbour);
            out("bfd_dropped_bad_ttl", c.bad_ttl);
            out("bfd_dropped_bad_udp", c.bad_udp);
            out("bfd_dropped_malformed", c.malformed);
            out("bfd_sessions_down", c.sessions_down);
        }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The task that runs the sessions over the stack.
fn run(
    stack: Stack,
    listener: d11_stack::TcpListener,
    speaker: Rc<RefCell<Speaker>>,
    ops: Rc<RefCell<Vec<RouteOp>>>,
    bfd_down: Rc<RefCell<Vec<PeerId>>>,
    timer: Rc<Notify>,
) -> App {
    Box::pin(async move {
        let d = Rc::new(Driver {
            stack: stack.clone(),
            speaker: speaker.clone(),
            ops,
            writers: RefCell::new(HashMap::new()),
            next_gen: std::cell::Cell::new(0),
            timer,
        });
        let d2 = d.clone();
        tokio::task::spawn_local(async move {
            loop {
                let Ok((conn, peer)) = listener.accept().await else {
                    continue;
                };
                let p = d2.speaker.borrow().peer(*peer.ip());
                let Some(p) = p else {
                    // Not a neighbour: closed at once (counted by the stack).
                    drop(conn);
                    continue;
                };
                d2.attach((p, Dir::In), conn);
                let outs = d2.speaker.borrow_mut().on_accepted(now(), p);
                d2.dispatch(outs);
            }
        });
        let outs = speaker.borrow_mut().start(now());
        d.dispatch(outs);
        loop {
            let down = std::mem::take(&mut *bfd_down.borrow_mut());
            for p in down {
                let outs = d.speaker.borrow_mut().link_down(now(), p);
                d.dispatch(outs);
            }
            let at = d.speaker.borrow().poll_at();
            match at {
                Some(t) => {
                    let t = tokio::time::Instant::from_std(t);
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {
                            let outs = d.speaker.borrow_mut().poll(now());
                            d.dispatch(outs);
                        }
                        _ = d.timer.notified() => {}
                    }
                }
                None => d.timer.notified().await,
            }
        }
    })
}

/// Where a connection's writer takes the octets to send.
type Writer = mpsc::UnboundedSender<Vec<u8>>;

/// The sessions' connections.
struct Driver {
    stack: Stack,
    speaker: Rc<RefCell<Speaker>>,
    ops: Rc<RefCell<Vec<RouteOp>>>,
    /// Each connection's writer, with the connection's number.
    writers: RefCell<HashMap<Conn, (u64, Writer)>>,
    next_gen: std::cell::Cell<u64>,
    timer: Rc<Notify>,
}

impl Driver {
    /// A connection's reader (octets to the speaker) and writer (the speaker's octets out).
    fn attach(self: &Rc<Self>, c: Conn, conn: TcpStream) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        // The same (peer, direction) names the next connection too: each has its own number,
        // so that the end of an old one (a FIN that arrives late) never closes a new one.
        let gen = self.next_gen.get();
        self.next_gen.set(gen + 1);
        self.writers.borrow_mut().insert(c, (gen, tx));
        let (mut r, mut w) = tokio::io::split(conn);
        tokio::task::spawn_local(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        let d = self.clone();
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let outs = d.speaker.borrow_mut().on_bytes(now(), c, &buf[..n]);
                        d.dispatch(outs);
                    }
                }
            }
            // Closed by the peer (or by us: then the speaker knows already).
            let ours = {
                let mut w = d.writers.borrow_mut();
                let current = w.get(&c).is_some_and(|(g, _)| *g == gen);
                if current {
                    w.remove(&c);
                }
                current
            };
            if ours {
                let outs = d.speaker.borrow_mut().on_closed(now(), c);
                d.dispatch(outs);
            }
        });
    }

    fn dispatch(self: &Rc<Self>, outs: Vec<Out>) {
        for o in outs {
            match o {
                Out::Connect(p) => {
                    let addr = self.speaker.borrow().rib.peers[p].addr;
                    let d = self.clone();
                    tokio::task::spawn_local(async move {
                        let to = SocketAddrV4::new(addr, PORT);
                        // Given up before the ConnectRetry timer (5 s by default) would
                        // start another attempt over it.
                        let r = tokio::time::timeout(
                            std::time::Duration::from_secs(3),
                            d.stack.connect(to),
                        )
                        .await;
                        let outs = match r {
                            Ok(Ok(conn)) => {
                                d.attach((p, Dir::Out), conn);
                                d.speaker.borrow_mut().on_connected(now(), p)
                            }
                            _ => d.speaker.borrow_mut().on_closed(now(), (p, Dir::Out)),
                        };
                        d.dispatch(outs);
                    });
                }
                Out::Send(c, b) => {
                    if let Some((_, w)) = self.writers.borrow().get(&c) {
                        let _ = w.send(b);
                    }
                }
                Out::Close(c) => {
                    // The writer ends (after what it has queued) and shuts the stream down.
                    self.writers.borrow_mut().remove(&c);
                }
                Out::Route(Change::Best {
                    prefix,
                    next_hop: Some(nh),
                    from,
                }) => {
                    let ibgp = from.is_some_and(|p| {
                        let s = self.speaker.borrow();
                        s.rib.peers[p].remote_as == s.rib.local_as
                    });
                    let source = if ibgp { Source::Ibgp } else { Source::Ebgp };
                    self.ops.borrow_mut().push(RouteOp::Remove { prefix });
                    self.ops.borrow_mut().push(RouteOp::Add {
                        prefix,
                        next_hop: nh,
                        source,
                    });
                }
                Out::Route(Change::Best { next_hop: None, .. }) => {}
                Out::Route(Change::Gone { prefix }) => {
                    self.ops.borrow_mut().push(RouteOp::Remove { prefix });
                }
                Out::Up(p) => tracing::info!(peer = p, "BGP session established"),
                Out::Down(p, why) => tracing::warn!(peer = p, %why, "BGP session down"),
            }
        }
        self.stack.kick();
        self.timer.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::udp_dport;

    #[test]
    fn a_udp_header_past_the_packet_reads_as_no_port() {
        // IHL 15 (60 octets of header) in a packet of 24: no port, no panic.
        let mut ip = vec![0u8; 24];
        ip[0] = 0x4f;
        assert_eq!(udp_dport(&ip), None);
        ip[0] = 0x45;
        ip[22..24].copy_from_slice(&3784u16.to_be_bytes());
        assert_eq!(udp_dport(&ip), Some(3784));
    }
}
