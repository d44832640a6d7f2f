//! An IPv4 router as a sans-IO [`Element`]: frames and time in, frames out.
//!
//! What it does to a packet it forwards (RFC 1812): checks the header, looks the destination up
//! by longest prefix ([`rib`]), decrements TTL and patches the checksum, rewrites source and
//! destination MAC for the next hop (resolved by ARP, [`neigh`]), and fragments or answers
//! "fragmentation needed" when the egress MTU is too small. Nothing else in the packet changes.
//! It answers ARP and ping for its own addresses, and sends ICMP time exceeded, destination
//! unreachable (net, host, port, protocol) and fragmentation needed, rate limited by a token
//! bucket, never about ICMP errors, fragments after the first, or non-unicast packets.

pub mod bgp;
pub mod neigh;
pub mod program;
pub mod rib;
pub mod udp;

use d11_element::counters::GuardDrops;
use d11_element::{counters, Element, PortId, Transmit};
use d11_wire::gso::Gso;
use d11_wire::guard::{check_frame, Frame, ETHERNET_HEADER_LEN as ETH};
use d11_wire::{fill_ipv4_checksum, internet_checksum};
use ipnet::Ipv4Net;
use neigh::{Neighbours, Resolution};
use rib::{FibEntry, Rib, Route, Source};
use serde::Deserialize;
use serde_json::json;
use smoltcp::wire::{ArpOperation, ArpRepr, EthernetAddress, IpProtocol};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub use d11_element::PortConfig;

/// A static route.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    pub prefix: Ipv4Net,
    #[serde(default)]
    pub via: Option<Ipv4Addr>,
    /// Leave by this port (for routes without a gateway, or to pin the port).
    #[serde(default)]
    pub port: Option<String>,
}

/// ICMP error rate limit: a token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IcmpLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for IcmpLimit {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 50,
        }
    }
}

/// The router's configuration: its node's entry of the topology file.
#[derive(Debug, Clone, Deserialize)]
pub struct RouterConfig {
    pub name: String,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub icmp_limit: IcmpLimit,
    /// BGP (stage 2): the AS, the router id, the prefixes originated and the neighbours.
    #[serde(default)]
    pub bgp: Option<d11_bgp::speaker::SpeakerConfig>,
}

counters! {
    pub struct RouterCounters {
        rx_frames,
        // Offloaded frames (super-frames, partial checksums) taken, segments cut from those
        // that could not go whole, and those that could not be cut.
        gso_frames,
        gso_cut,
        gso_dropped,
        rx_arp,
        rx_ipv4,
        not_for_us,
        forwarded,
        fragmented,
        fragments_sent,
        local_delivered,
        echo_replies,
        arp_requests_sent,
        arp_replies_sent,
        no_route,
        ttl_expired,
        frag_needed,
        host_unreachable,
        port_unreachable,
        protocol_unreachable,
        icmp_errors_sent,
        icmp_rate_limited,
        icmp_suppressed,
        neighbour_queue_dropped,
        neighbour_table_full_dropped,
        local_broadcast_dropped,
        local_tcp_dropped,
        local_sent,
        local_too_big,
    }
}

#[derive(Debug)]
struct RouterPort {
    name: String,
    mac: EthernetAddress,
    addrs: Vec<Ipv4Net>,
    mtu: usize,
}

impl RouterPort {
    /// The address to speak from towards `peer`: one on the same subnet, else the first.
    fn source_for(&self, peer: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addrs
            .iter()
            .find(|n| n.contains(&peer))
            .or(self.addrs.first())
            .map(|n| n.addr())
    }
}

/// ICMP error kinds the router sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcmpError {
    TimeExceeded,
    NetUnreachable,
    HostUnreachable,
    ProtocolUnreachable,
    PortUnreachable,
    FragNeeded(u16),
}

impl IcmpError {
    fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::TimeExceeded => (11, 0),
            IcmpError::NetUnreachable => (3, 0),
            IcmpError::HostUnreachable => (3, 1),
            IcmpError::ProtocolUnreachable => (3, 2),
            IcmpError::PortUnreachable => (3, 3),
            IcmpError::FragNeeded(_) => (3, 4),
        }
    }
}

/// What a [`Hook`] decides about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// Route the packet as it now stands (the hook may have rewritten it).
    Continue,
    /// Drop it (the hook counted why).
    Drop,
    /// From `prerouting` only: the hook turned a packet addressed to the router into one the
    /// router sends as its own, in place and at the same length (a tunnel endpoint switching
    /// a G-PDU from one tunnel to the next), so the router routes it from here as it would a
    /// datagram of its own: delivered, then sent, with no TTL taken off and no copy. Only for
    /// a plain frame (no offload metadata); elsewhere it reads as `Continue`.
    Send,
    /// From `prerouting` only: the packet, addressed to the router, carried a frame that the
    /// hook took out of a tunnel where it lies: from octet `at` of the packet on, a whole
    /// Ethernet frame (its header written by the hook if the tunnel carried only the IP
    /// packet), which arrived through the tunnel port `port`. The router counts the packet
    /// delivered and handles that frame as received on `port`, hooks and all, with no copy
    /// (a PGW's uplink). Only for a plain frame; elsewhere it reads as `Continue`.
    Decapsulated { at: usize, port: PortId },
}

/// Sees the IPv4 packets the router handles and may rewrite them in place, at two points as
/// Linux's netfilter does: `prerouting` for every packet received, before the routing decision
/// (a NAT translates destinations here), and `postrouting` for a packet being forwarded, after
/// the TTL check and the route lookup (a NAT translates sources here, so an ICMP error about
/// an expiring packet still goes to its real sender). `ip` is the whole IPv4 packet
/// (validated: version, IHL, lengths, header checksum).
pub trait Hook {
    fn prerouting(&mut self, now: Instant, in_port: PortId, ip: &mut [u8]) -> HookVerdict {
        let _ = (now, in_port, ip);
        HookVerdict::Continue
    }

    fn postrouting(
        &mut self,
        now: Instant,
        in_port: PortId,
        out_port: PortId,
        ip: &mut [u8],
    ) -> HookVerdict {
        let _ = (now, in_port, out_port, ip);
        HookVerdict::Continue
    }

    /// The offload metadata of the packets the next calls see, until told otherwise: a hook
    /// that rewrites addresses must know when the transport checksum is partial (the
    /// pseudo-header's sum, not complemented; the ports are summed later), as for a
    /// super-frame the router forwards whole. [`Gso::NONE`] for complete packets.
    fn offload(&mut self, gso: &Gso) {
        let _ = gso;
    }

    /// Sees a packet addressed to the router itself (not a fragment), before the router answers
    /// it (ping) or refuses it (port unreachable). A tunnel endpoint takes its UDP port here and
    /// returns `Drop` for what it consumed.
    fn local(&mut self, now: Instant, in_port: PortId, ip: &[u8]) -> HookVerdict {
        let _ = (now, in_port, ip);
        HookVerdict::Continue
    }

    /// A plain packet being forwarded to the router's tunnel port ([`Router::set_tunnel_port`]),
    /// after `postrouting`, the MTU check and the TTL: the hook may give the UDP tunnel that
    /// carries it (a PGW's G-PDU), and the router sends the datagram at once, the packet
    /// copied once into the frame sent, as [`Router::send_udp`] would send the tunnel's
    /// headers and the packet. Where the tunnel carries frames, `next_hop_mac` gives the MAC
    /// the router's ARP has for the packet's next hop on the tunnel port, if it may be used
    /// now (asking may note a refreshing ARP probe, which the router then sends). `None`
    /// sends the packet to the tunnel port as a frame, resolved by ARP (the way for what the
    /// hook does not take).
    fn encapsulate(
        &mut self,
        now: Instant,
        out_port: PortId,
        ip: &[u8],
        next_hop_mac: &mut dyn FnMut() -> Option<[u8; 6]>,
    ) -> Option<Encap> {
        let _ = (now, out_port, ip, next_hop_mac);
        None
    }
}

/// The UDP tunnel a [`Hook::encapsulate`] puts a packet in: addresses, ports, and the octets
/// in front of the packet in the datagram (the tunnel's header; then an Ethernet header where
/// the tunnel carries frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ports: (u16, u16),
    header: [u8; Encap::MAX_HEADER],
    len: usize,
}

impl Encap {
    /// The most octets in front of the packet.
    pub const MAX_HEADER: usize = 32;

    /// A tunnel from `src` to `dst` whose datagram carries `parts` (at most
    /// [`MAX_HEADER`](Self::MAX_HEADER) octets together) and then the packet; `None` if
    /// they do not fit.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16), parts: &[&[u8]]) -> Option<Self> {
        let mut header = [0u8; Self::MAX_HEADER];
        let mut len = 0;
        for p in parts {
            header.get_mut(len..len + p.len())?.copy_from_slice(p);
            len += p.len();
        }
        Some(Self {
            src,
            dst,
            ports,
            header,
            len,
        })
    }

    /// The octets in front of the packet.
    pub fn header(&self) -> &[u8] {
        &self.header[..self.len]
    }
}

/// A [`Transmit`] that keeps what the router sends to one port (a port that is no device but tunnels:
/// a PGW's UE side, a cloud gateway's VPC side) and passes the rest on.
pub struct Divert<'a> {
    pub inner: &'a mut dyn Transmit,
    pub port: PortId,
    /// Frames for the tunnel port, with their offload metadata (a super-frame stays whole).
    pub kept: &'a mut Vec<(Vec<u8>, Gso)>,
    /// Buffers to keep frames in (reused: no allocation per frame once warm).
    pub spare: &'a mut Vec<Vec<u8>>,
}

impl Divert<'_> {
    fn keep(&mut self, frame: &[u8], gso: &Gso) {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(frame);
        self.kept.push((b, *gso));
    }
}

impl Transmit for Divert<'_> {
    fn send(&mut self, port: PortId, frame: &[u8]) {
        if port == self.port {
            self.keep(frame, &Gso::NONE);
        } else {
            self.inner.send(port, frame);
        }
    }
    fn wants_notes(&self, port: PortId) -> bool {
        port != self.port && self.inner.wants_notes(port)
    }
    fn send_noted(&mut self, port: PortId, frame: &[u8], note: &str) {
        if port == self.port {
            self.keep(frame, &Gso::NONE);
        } else {
            self.inner.send_noted(port, frame, note);
        }
    }
    fn offloads(&self, port: PortId) -> bool {
        port != self.port && self.inner.offloads(port)
    }
    fn send_gso(&mut self, port: PortId, frame: &[u8], gso: &Gso) {
        if port != self.port {
            return self.inner.send_gso(port, frame, gso);
        }
        // Kept whole: the element hands it to a logic that takes super-frames, or cuts it.
        self.keep(frame, gso);
    }
}

/// The hook of a plain router: nothing.
pub struct NoHook;

impl Hook for NoHook {}

/// What a frame's capture comment will say; formatted only when a capture is on.
#[derive(Debug, Clone, Copy)]
enum Note {
    Forwarded {
        in_port: PortId,
        prefix: Ipv4Net,
        ttl: u8,
    },
    Originated,
}

/// The router.
pub struct Router {
    name: String,
    ports: Vec<RouterPort>,
    rib: Rib,
    neigh: Neighbours,
    c: RouterCounters,
    drops: GuardDrops,
    limit: IcmpLimit,
    tokens: f64,
    refilled: Option<Instant>,
    /// Addresses the router answers ARP for without owning them (a NAT's public pool).
    proxy_arp: Vec<(PortId, Ipv4Addr)>,
    /// Scratch for frames the router builds itself; reused, never allocated per frame.
    scratch: Vec<u8>,
    frag: Vec<u8>,
    /// The offload metadata of the frame being handled ([`Gso::NONE`] for a plain frame).
    gso: Gso,
    /// Where a super-frame that cannot go whole is cut.
    cut: Vec<u8>,
    /// The port that is no device but a tunnel's way in ([`Hook::encapsulate`]).
    tunnel: Option<PortId>,
}

fn eth(mac: [u8; 6]) -> EthernetAddress {
    EthernetAddress(mac)
}

impl Router {
    pub fn new(cfg: &RouterConfig) -> anyhow::Result<Self> {
        let mut ports = Vec::new();
        for p in &cfg.ports {
            let mac = p.mac_for(&cfg.name)?;
            let mtu = p.ip_mtu();
            if mtu < 68 {
                anyhow::bail!("port {}: MTU {mtu} is below the IPv4 minimum of 68", p.name);
            }
            ports.push(RouterPort {
                name: p.name.clone(),
                mac: eth(mac),
                addrs: p.addresses.clone(),
                mtu,
            });
        }
        let mut rib = Rib::new();
        for (i, p) in ports.iter().enumerate() {
            for a in &p.addrs {
                rib.add(Route {
                    prefix: a.trunc(),
                    next_hop: None,
                    port: Some(i),
                    source: Source::Connected,
                });
            }
        }
        for r in &cfg.routes {
            let port =
                match &r.port {
                    Some(n) => Some(ports.iter().position(|p| &p.name == n).ok_or_else(|| {
                        anyhow::anyhow!("route {}: no port named {n:?}", r.prefix)
                    })?),
                    None => None,
                };
            if port.is_none() && r.via.is_none() {
                anyhow::bail!("route {}: needs `via` or `port`", r.prefix);
            }
            rib.add(Route {
                prefix: r.prefix,
                next_hop: r.via,
                port,
                source: Source::Static,
            });
        }
        Ok(Self {
            name: cfg.name.clone(),
            ports,
            rib,
            neigh: Neighbours::default(),
            c: RouterCounters::default(),
            drops: GuardDrops::default(),
            tokens: f64::from(cfg.icmp_limit.burst),
            limit: cfg.icmp_limit.clone(),
            refilled: None,
            proxy_arp: Vec::new(),
            scratch: vec![0; 2048],
            frag: vec![0; d11_netdev::MAX_FRAME],
            gso: Gso::NONE,
            cut: Vec::new(),
            tunnel: None,
        })
    }

    /// Makes `port` the tunnel port: a plain packet forwarded there is first offered to
    /// [`Hook::encapsulate`].
    pub fn set_tunnel_port(&mut self, port: Option<PortId>) {
        self.tunnel = port;
    }

    /// Sends a UDP datagram the router's owner made (a tunnel endpoint's GTP-U, a signalling
    /// message): routes it, resolves the next hop and sends it. `src` `None` speaks from the
    /// outgoing port's address. Returns false, counted, when there is no route or the datagram
    /// does not fit the egress MTU.
    #[allow(clippy::too_many_arguments)]
    pub fn send_udp(
        &mut self,
        now: Instant,
        src: Option<Ipv4Addr>,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
        tx: &mut dyn Transmit,
    ) -> bool {
        self.send_udp_parts(now, src, dst, (sport, dport), &[payload], tx)
    }

    /// [`Router::send_udp`] with the payload in parts (a tunnel's header, then the frame it
    /// carries, where it lies): copied once, into the frame sent.
    pub fn send_udp_parts(
        &mut self,
        now: Instant,
        src: Option<Ipv4Addr>,
        dst: Ipv4Addr,
        (sport, dport): (u16, u16),
        parts: &[&[u8]],
        tx: &mut dyn Transmit,
    ) -> bool {
        let Some(route) = self.rib.lookup(dst).copied() else {
            self.c.no_route += 1;
            return false;
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = 20 + 8 + len;
        if total > self.ports[route.port].mtu {
            self.c.local_too_big += 1;
            return false;
        }
        let Some(src) = src.or_else(|| self.ports[route.port].source_for(dst)) else {
            self.c.no_route += 1;
            return false;
        };
        let b = self.udp_headers(src, dst, (sport, dport), parts, total);
        let sum = udp_checksum(src, dst, &b[20..]);
        b[26..28].copy_from_slice(&sum.to_be_bytes());
        self.c.local_sent += 1;
        self.output_routed(now, route, total, tx);
        true
    }

    /// Writes IPv4 and UDP headers (checksum zero) and the payload's parts into the scratch
    /// frame after its Ethernet header; returns the IP packet.
    fn udp_headers(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        (sport, dport): (u16, u16),
        parts: &[&[u8]],
        total: usize,
    ) -> &mut [u8] {
        if ETH + total > self.scratch.len() {
            self.scratch.resize(ETH + total, 0);
        }
        self.scratch[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let b = &mut self.scratch[ETH..ETH + total];
        write_ipv4_header(b, total, d11_wire::ip::DEFAULT_TTL, 17, src, dst);
        b[20..22].copy_from_slice(&sport.to_be_bytes());
        b[22..24].copy_from_slice(&dport.to_be_bytes());
        b[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
        b[26..28].fill(0);
        let mut at = 28;
        for p in parts {
            b[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        b
    }

    /// Sends a UDP datagram whose payload (`parts`, one after the other) carries offloaded
    /// data: from octet `inner_at` of it on, an Ethernet frame that `inner` describes (a VTEP's TCP super-frame, or a frame whose
    /// checksum is partial). It leaves whole, as a super-frame inside a UDP tunnel, when the
    /// next hop is known (the port cuts it if it has no tunnel offloads); otherwise it is cut
    /// here, since the neighbour queue keeps plain frames. The outer UDP checksum is zero, as
    /// a tunnel over IPv4 may send it (RFC 7348 §5; the inner checksum is not complete yet).
    /// Each segment must fit the port's MTU; returns false, counted, when one cannot.
    #[allow(clippy::too_many_arguments)]
    pub fn send_udp_gso(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ports: (u16, u16),
        parts: &[&[u8]],
        (inner_at, inner): (usize, &Gso),
        tx: &mut dyn Transmit,
    ) -> bool {
        if inner.is_plain() {
            return self.send_udp_parts(now, Some(src), dst, ports, parts, tx);
        }
        let Some(route) = self.rib.lookup(dst).copied() else {
            self.c.no_route += 1;
            return false;
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = 20 + 8 + len;
        let outer = ETH + 28 + inner_at;
        if total > usize::from(u16::MAX) || outer > ETH + total {
            self.c.local_too_big += 1;
            return false;
        }
        self.udp_headers(src, dst, ports, parts, total);
        // Each segment, once cut, must fit the port.
        let seg = d11_wire::gso::largest_segment(&self.scratch[outer..ETH + total], inner);
        if 28 + inner_at + seg > self.ports[route.port].mtu {
            self.c.local_too_big += 1;
            return false;
        }
        let g = inner.wrapped(outer as u16, (ETH + 20) as u16);
        self.c.local_sent += 1;
        self.send_scratch_gso(now, route, total, &g, tx)
    }

    /// Sends a UDP datagram whose payload is the payloads of many datagrams to the same
    /// place, one after the other, each `size` octets (the last the rest): a tunnel's packets
    /// (G-PDUs) as one super-frame ([`Gso::udp_segments`]), its UDP checksum partial; as
    /// several, if they are more than one IPv4 packet holds. It leaves whole when the next
    /// hop is known (the port, or the kernel, cuts it into the datagrams it stands for);
    /// otherwise it is cut here. Each datagram must fit the port's MTU; returns false,
    /// counted, when they cannot.
    pub fn send_udp_segments(
        &mut self,
        now: Instant,
        addrs: (Ipv4Addr, Ipv4Addr),
        ports: (u16, u16),
        payload: &[u8],
        size: u16,
        tx: &mut dyn Transmit,
    ) -> bool {
        let size = usize::from(size);
        let per = (usize::from(u16::MAX) - 28) / size.max(1);
        if size == 0 || per == 0 {
            self.c.local_too_big += 1;
            return false;
        }
        payload
            .chunks(per * size)
            .all(|p| self.send_udp_segments_one(now, addrs, ports, p, size as u16, tx))
    }

    /// [`Router::send_udp_segments`] for a payload one IPv4 packet holds.
    fn send_udp_segments_one(
        &mut self,
        now: Instant,
        (src, dst): (Ipv4Addr, Ipv4Addr),
        ports: (u16, u16),
        payload: &[u8],
        size: u16,
        tx: &mut dyn Transmit,
    ) -> bool {
        if payload.len() <= usize::from(size) {
            return self.send_udp_parts(now, Some(src), dst, ports, &[payload], tx);
        }
        let Some(route) = self.rib.lookup(dst).copied() else {
            self.c.no_route += 1;
            return false;
        };
        let total = 20 + 8 + payload.len();
        if total > usize::from(u16::MAX) || 28 + usize::from(size) > self.ports[route.port].mtu {
            self.c.local_too_big += 1;
            return false;
        }
        self.udp_headers(src, dst, ports, &[payload], total);
        if d11_wire::gso::udp4_partial(&mut self.scratch[..ETH + total]).is_err() {
            self.c.local_too_big += 1;
            return false;
        }
        self.c.local_sent += 1;
        self.send_scratch_gso(now, route, total, &Gso::udp_segments(size), tx)
    }

    /// Sends the offloaded frame of the router's own in the scratch (`total` octets of IP) by
    /// `route`: whole when the next hop is known, else cut here (the neighbour queue keeps
    /// plain frames). False if it could not be cut.
    fn send_scratch_gso(
        &mut self,
        now: Instant,
        route: FibEntry,
        total: usize,
        g: &Gso,
        tx: &mut dyn Transmit,
    ) -> bool {
        let g = *g;
        let nh = route
            .next_hop
            .unwrap_or(d11_wire::ip::dst(&self.scratch[ETH..]));
        if self.neigh.lookup(route.port, nh).is_some() {
            self.gso = g;
            self.output_routed(now, route, total, tx);
            self.gso = Gso::NONE;
            return true;
        }
        let frame = std::mem::take(&mut self.scratch);
        let mut cut = std::mem::take(&mut self.cut);
        cut.resize(d11_netdev::MAX_FRAME, 0);
        let r = d11_wire::gso::segment(&frame[..ETH + total], &g, &mut cut, |s| {
            self.c.gso_cut += 1;
            self.send_l2(now, route.port, nh, s, tx, Note::Originated);
        });
        if r.is_err() {
            self.c.gso_dropped += 1;
        }
        self.cut = cut;
        self.scratch = frame;
        r.is_ok()
    }

    /// Sends an IPv4 packet the router's owner made (a health-check probe): routes it and
    /// resolves the next hop. Returns false, counted, when there is no route or it is too big.
    pub fn send_ip(&mut self, now: Instant, ip: &[u8], tx: &mut dyn Transmit) -> bool {
        if ip.len() < 20 {
            return false;
        }
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let Some(route) = self.rib.lookup(dst).copied() else {
            self.c.no_route += 1;
            return false;
        };
        if ip.len() > self.ports[route.port].mtu {
            self.c.local_too_big += 1;
            return false;
        }
        if ETH + ip.len() > self.scratch.len() {
            self.scratch.resize(ETH + ip.len(), 0);
        }
        self.scratch[ETH..ETH + ip.len()].copy_from_slice(ip);
        self.c.local_sent += 1;
        self.output_routed(now, route, ip.len(), tx);
        true
    }

    /// Answers ARP for `addr` on `port` as if it were the router's own (proxy ARP).
    pub fn add_proxy_arp(&mut self, port: PortId, addr: Ipv4Addr) {
        self.proxy_arp.push((port, addr));
    }

    /// The port with this name.
    pub fn port_index(&self, name: &str) -> Option<PortId> {
        self.ports.iter().position(|p| p.name == name)
    }

    pub fn rib_mut(&mut self) -> &mut Rib {
        &mut self.rib
    }

    /// Counts an offloaded frame that could not be cut (for an owner that cuts for it).
    pub fn count_gso_dropped(&mut self) {
        self.c.gso_dropped += 1;
    }

    pub fn counters_ref(&self) -> &RouterCounters {
        &self.c
    }

    pub fn drops(&self) -> &GuardDrops {
        &self.drops
    }

    pub fn port_mac(&self, port: PortId) -> Option<EthernetAddress> {
        self.ports.get(port).map(|p| p.mac)
    }

    fn is_local(&self, a: Ipv4Addr) -> bool {
        self.ports
            .iter()
            .any(|p| p.addrs.iter().any(|n| n.addr() == a))
    }

    fn is_broadcast_for(&self, a: Ipv4Addr) -> bool {
        a.is_broadcast()
            || self.ports.iter().any(|p| {
                p.addrs
                    .iter()
                    .any(|n| n.prefix_len() < 31 && n.broadcast() == a)
            })
    }

    fn handle_arp(&mut self, now: Instant, port: PortId, arp: ArpRepr, tx: &mut dyn Transmit) {
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        } = arp
        else {
            return;
        };
        let p = &self.ports[port];
        let for_us =
            p.addrs.iter().any(|n| n.addr() == tpa) || self.proxy_arp.contains(&(port, tpa));
        let learnable = !spa.is_unspecified() && sha.is_unicast();
        if learnable {
            let waiting = self.neigh.learn(now, port, spa, sha, for_us);
            for mut f in waiting {
                f[0..6].copy_from_slice(&sha.0);
                if tx.wants_notes(port) {
                    let note = format!("released after ARP resolved {spa} on {}", p.name);
                    tx.send_noted(port, &f, &note);
                } else {
                    tx.send(port, &f);
                }
            }
        }
        if for_us && operation == ArpOperation::Request {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: p.mac,
                source_protocol_addr: tpa,
                target_hardware_addr: sha,
                target_protocol_addr: spa,
            };
            let n = write_arp(&mut self.scratch, p.mac, sha, &reply);
            tx.send(port, &self.scratch[..n]);
            self.c.arp_replies_sent += 1;
        }
    }

    fn send_arp_request(&mut self, port: PortId, target: Ipv4Addr, tx: &mut dyn Transmit) {
        let p = &self.ports[port];
        let Some(src) = p.source_for(target) else {
            return;
        };
        let req = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: p.mac,
            source_protocol_addr: src,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        // Its own buffer: this runs while a packet being sent holds the scratch.
        let mut buf = [0u8; 64];
        let n = write_arp(&mut buf, p.mac, EthernetAddress::BROADCAST, &req);
        tx.send(port, &buf[..n]);
        self.c.arp_requests_sent += 1;
    }

    /// Sends a whole Ethernet frame (source MAC set, destination to fill) to `next_hop` on
    /// `port`, resolving it by ARP.
    fn send_l2(
        &mut self,
        now: Instant,
        port: PortId,
        next_hop: Ipv4Addr,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
        note: Note,
    ) {
        frame[6..12].copy_from_slice(&self.ports[port].mac.0);
        match self.neigh.resolve(now, port, next_hop, frame) {
            Resolution::Known { mac, probe } => {
                frame[0..6].copy_from_slice(&mac.0);
                if !self.gso.is_plain() {
                    tx.send_gso(port, frame, &self.gso);
                } else if tx.wants_notes(port) {
                    let text = match note {
                        Note::Forwarded {
                            in_port,
                            prefix,
                            ttl,
                        } => format!(
                            "forwarded {} -> {}, route {prefix} via {next_hop}, ttl now {ttl}",
                            self.ports[in_port].name, self.ports[port].name
                        ),
                        Note::Originated => format!("originated by {}, via {next_hop}", self.name),
                    };
                    tx.send_noted(port, frame, &text);
                } else {
                    tx.send(port, frame);
                }
                if probe {
                    self.send_arp_request(port, next_hop, tx);
                }
            }
            Resolution::Queued { request } => {
                if request {
                    self.send_arp_request(port, next_hop, tx);
                }
            }
            Resolution::QueuedDroppedOldest { request } => {
                self.c.neighbour_queue_dropped += 1;
                if request {
                    self.send_arp_request(port, next_hop, tx);
                }
            }
            Resolution::TableFull => self.c.neighbour_table_full_dropped += 1,
        }
    }

    /// Routes a packet the router made itself; `buf[ETH..ETH + len]` holds the IP packet.
    fn output_local(&mut self, now: Instant, len: usize, tx: &mut dyn Transmit) {
        let Some(route) = self
            .rib
            .lookup(d11_wire::ip::dst(&self.scratch[ETH..]))
            .copied()
        else {
            self.c.no_route += 1;
            return;
        };
        self.output_routed(now, route, len, tx);
    }

    /// [`Router::output_local`] by the route the caller looked up for the packet's
    /// destination.
    fn output_routed(&mut self, now: Instant, route: FibEntry, len: usize, tx: &mut dyn Transmit) {
        let mut frame = std::mem::take(&mut self.scratch);
        self.send_routed(now, route, &mut frame[..ETH + len], tx);
        self.scratch = frame;
    }

    /// Sends a frame of the router's own by `route` (the IP packet's destination looked up).
    fn send_routed(
        &mut self,
        now: Instant,
        route: FibEntry,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
    ) {
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let nh = route.next_hop.unwrap_or(d11_wire::ip::dst(&frame[ETH..]));
        self.send_l2(now, route.port, nh, frame, tx, Note::Originated);
    }

    /// Sends a received frame that a hook rewrote into a packet of the router's own
    /// ([`HookVerdict::Send`]), where it lies: counted and checked as
    /// [`Router::send_udp`] does.
    fn send_own(&mut self, now: Instant, frame: &mut [u8], tx: &mut dyn Transmit) {
        let dst = d11_wire::ip::dst(&frame[ETH..]);
        let Some(route) = self.rib.lookup(dst).copied() else {
            self.c.no_route += 1;
            return;
        };
        if frame.len() - ETH > self.ports[route.port].mtu {
            self.c.local_too_big += 1;
            return;
        }
        self.c.local_sent += 1;
        self.send_routed(now, route, frame, tx);
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = self
            .refilled
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.refilled = Some(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(self.limit.per_second))
            .min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sends an ICMP error about `orig` (an IP packet as received) that arrived on `in_port`.
    fn icmp_error(
        &mut self,
        now: Instant,
        in_port: PortId,
        orig: &[u8],
        kind: IcmpError,
        tx: &mut dyn Transmit,
    ) {
        // RFC 1812 4.3.2.7: never about ICMP errors, non-initial fragments, or packets whose
        // source is not a unicast host or whose destination is not unicast.
        let ihl = d11_wire::ip::header_len(orig);
        let src = Ipv4Addr::new(orig[12], orig[13], orig[14], orig[15]);
        let dst = Ipv4Addr::new(orig[16], orig[17], orig[18], orig[19]);
        let frag_offset = u16::from_be_bytes([orig[6], orig[7]]) & 0x1fff;
        let is_icmp_error = orig[9] == 1
            && orig.len() > ihl
            && !matches!(orig[ihl], 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18);
        if is_icmp_error
            || frag_offset != 0
            || src.is_unspecified()
            || src.is_broadcast()
            || src.is_multicast()
            || src.is_loopback()
            || dst.is_multicast()
            || self.is_broadcast_for(dst)
        {
            self.c.icmp_suppressed += 1;
            return;
        }
        if !self.take_token(now) {
            self.c.icmp_rate_limited += 1;
            return;
        }
        // Speak from the address of the port the error leaves by (what traceroute shows).
        let out_port = self.rib.lookup(src).map_or(in_port, |r| r.port);
        let Some(from) = self.ports[out_port]
            .source_for(src)
            .or_else(|| self.ports[in_port].source_for(src))
        else {
            return;
        };
        // At most 576 octets in all (RFC 1812 4.3.2.3): 20 IP + 8 ICMP + 548 of the original.
        let quoted = orig.len().min(548);
        let total = 20 + 8 + quoted;
        let b = &mut self.scratch[ETH..ETH + total];
        write_ipv4_header(b, total, d11_wire::ip::DEFAULT_TTL, 1, from, src);
        let (t, c) = kind.type_code();
        let icmp = &mut b[20..];
        icmp[0] = t;
        icmp[1] = c;
        icmp[2..8].fill(0);
        if let IcmpError::FragNeeded(mtu) = kind {
            icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
        }
        icmp[8..8 + quoted].copy_from_slice(&orig[..quoted]);
        let sum = internet_checksum(icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        self.c.icmp_errors_sent += 1;
        self.output_local(now, total, tx);
    }

    fn deliver_local(
        &mut self,
        now: Instant,
        in_port: PortId,
        ip: &[u8],
        tx: &mut dyn Transmit,
        hook: &mut dyn Hook,
    ) {
        self.c.local_delivered += 1;
        let ihl = d11_wire::ip::header_len(ip);
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if frag & 0x3fff != 0 {
            // We do not reassemble; nothing addressed to a router needs it.
            self.c.icmp_suppressed += 1;
            return;
        }
        if hook.local(now, in_port, ip) == HookVerdict::Drop {
            return;
        }
        let payload = &ip[ihl..];
        match IpProtocol::from(ip[9]) {
            IpProtocol::Icmp => {
                if payload.len() < 8 || payload[0] != 8 || internet_checksum(payload) != 0 {
                    return;
                }
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                let total = 20 + payload.len();
                if ETH + total > self.scratch.len() {
                    self.scratch.resize(ETH + total, 0);
                }
                let b = &mut self.scratch[ETH..ETH + total];
                write_ipv4_header(b, total, d11_wire::ip::DEFAULT_TTL, 1, dst, src);
                b[20..].copy_from_slice(payload);
                b[20] = 0; // echo reply
                b[22..24].fill(0);
                let sum = internet_checksum(&b[20..]);
                b[22..24].copy_from_slice(&sum.to_be_bytes());
                self.c.echo_replies += 1;
                self.output_local(now, total, tx);
            }
            IpProtocol::Udp => {
                self.c.port_unreachable += 1;
                self.icmp_error(now, in_port, ip, IcmpError::PortUnreachable, tx);
            }
            IpProtocol::Tcp => self.c.local_tcp_dropped += 1,
            _ => {
                self.c.protocol_unreachable += 1;
                self.icmp_error(now, in_port, ip, IcmpError::ProtocolUnreachable, tx);
            }
        }
    }

    fn forward(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut [u8],
        total_len: usize,
        tx: &mut dyn Transmit,
        hook: &mut dyn Hook,
    ) {
        let dst = {
            let ip = &frame[ETH..];
            Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])
        };
        let ip_end = ETH + total_len;
        if frame[ETH + 8] <= 1 {
            self.c.ttl_expired += 1;
            let orig = frame[ETH..ip_end].to_vec();
            self.icmp_error(now, in_port, &orig, IcmpError::TimeExceeded, tx);
            return;
        }
        let Some(route) = self.rib.lookup(dst).copied() else {
            self.c.no_route += 1;
            let orig = frame[ETH..ip_end].to_vec();
            self.icmp_error(now, in_port, &orig, IcmpError::NetUnreachable, tx);
            return;
        };
        if !self.gso.is_plain() {
            // An offloaded frame goes on whole when its segments fit the next port and the
            // next hop is known (the neighbour queue keeps plain frames); otherwise it is cut
            // here and each segment forwarded on its own.
            let nh = route.next_hop.unwrap_or(dst);
            let seg =
                d11_wire::gso::largest_segment(&frame[..ip_end], &self.gso).saturating_sub(ETH);
            let fits = seg <= self.ports[route.port].mtu;
            if !fits || self.neigh.lookup(route.port, nh).is_none() {
                self.forward_cut(now, in_port, &frame[..ip_end], tx, hook);
                // Its segments may have gone into the tunnel at once (`Hook::encapsulate`),
                // which asks no ARP: ask now, so that the next one goes whole.
                if fits && self.tunnel == Some(route.port) && self.neigh.wanted(now, route.port, nh)
                {
                    self.send_arp_request(route.port, nh, tx);
                }
                return;
            }
        }
        if hook.postrouting(now, in_port, route.port, &mut frame[ETH..ip_end]) == HookVerdict::Drop
        {
            return;
        }
        let mtu = self.ports[route.port].mtu;
        let df = frame[ETH + 6] & 0x40 != 0;
        // A super-frame that goes whole was checked above: its segments fit.
        let total_len_on_wire = if self.gso.is_single() {
            total_len
        } else {
            mtu.min(total_len)
        };
        if total_len_on_wire > mtu && df {
            self.c.frag_needed += 1;
            let orig = frame[ETH..ip_end].to_vec();
            self.icmp_error(now, in_port, &orig, IcmpError::FragNeeded(mtu as u16), tx);
            return;
        }
        // TTL - 1 and an incremental checksum update (RFC 1624): the TTL is the high octet of
        // its 16-bit word, so the sum changes by 0x0100.
        frame[ETH + 8] -= 1;
        let old = u16::from_be_bytes([frame[ETH + 10], frame[ETH + 11]]);
        let mut sum = u32::from(!old) + u32::from(!0x0100u16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        frame[ETH + 10..ETH + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let nh = route.next_hop.unwrap_or(dst);
        if self.tunnel == Some(route.port) && self.gso.is_plain() && total_len <= mtu {
            let ip = &frame[ETH..ip_end];
            let mut probe = false;
            let neigh = &mut self.neigh;
            let mut mac = || {
                let (mac, p) = neigh.known(now, route.port, nh)?;
                probe = p;
                Some(mac.0)
            };
            let encap = hook.encapsulate(now, route.port, ip, &mut mac);
            if let Some(t) = &encap {
                self.c.forwarded += 1;
                let parts = [t.header(), ip];
                self.send_udp_parts(now, Some(t.src), t.dst, t.ports, &parts, tx);
            }
            if probe {
                self.send_arp_request(route.port, nh, tx);
            }
            if encap.is_some() {
                return;
            }
        }
        let note = Note::Forwarded {
            in_port,
            prefix: route.prefix,
            ttl: frame[ETH + 8],
        };
        if total_len_on_wire > mtu {
            self.c.fragmented += 1;
            let mut done = 0;
            let ip = frame[ETH..ip_end].to_vec();
            fragment(&ip, mtu, |f| {
                let n = ETH + f.len();
                let mut buf = std::mem::take(&mut self.frag);
                buf[ETH..n].copy_from_slice(f);
                buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                self.send_l2(now, route.port, nh, &mut buf[..n], tx, note);
                self.frag = buf;
                done += 1;
            });
            self.c.fragments_sent += done;
            return;
        }
        self.c.forwarded += 1;
        self.send_l2(now, route.port, nh, &mut frame[..ip_end], tx, note);
    }

    /// Cuts the offloaded frame being handled into segments (checksums completed) and
    /// forwards each as a plain frame.
    fn forward_cut(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &[u8],
        tx: &mut dyn Transmit,
        hook: &mut dyn Hook,
    ) {
        let gso = std::mem::replace(&mut self.gso, Gso::NONE);
        hook.offload(&Gso::NONE);
        let mut cut = std::mem::take(&mut self.cut);
        cut.resize(d11_netdev::MAX_FRAME, 0);
        let r = d11_wire::gso::segment(frame, &gso, &mut cut, |s| {
            self.c.gso_cut += 1;
            self.handle_frame_with(now, in_port, s, tx, hook);
        });
        if r.is_err() {
            self.c.gso_dropped += 1;
        }
        self.cut = cut;
        self.gso = gso;
        hook.offload(&gso);
    }

    /// Handles an offloaded frame (a TCP super-frame, or one whose checksum is partial): it is
    /// forwarded whole where it can be (a plain router's transit traffic to a port with
    /// offloads), and cut into segments for everything else (the router's own traffic, a
    /// hook's, a next port that needs smaller frames).
    pub fn handle_frame_gso_with(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        tx: &mut dyn Transmit,
        hook: &mut dyn Hook,
    ) {
        if gso.is_plain() {
            return self.handle_frame_with(now, port, frame, tx, hook);
        }
        self.c.gso_frames += 1;
        let transit = frame.len() >= ETH + 20
            && frame[12..14] == [8, 0]
            && !self.is_local(d11_wire::ip::dst(&frame[ETH..]));
        self.gso = *gso;
        hook.offload(gso);
        if transit {
            self.handle_frame_with(now, port, frame, tx, hook);
        } else {
            self.forward_cut(now, port, frame, tx, hook);
        }
        self.gso = Gso::NONE;
        hook.offload(&Gso::NONE);
    }

    /// Handles one frame, letting `hook` see (and rewrite) every IPv4 packet first.
    pub fn handle_frame_with(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
        hook: &mut dyn Hook,
    ) {
        self.c.rx_frames += 1;
        if port >= self.ports.len() {
            return;
        }
        let info = match check_frame(frame) {
            Ok(f) => f,
            Err(r) => {
                self.drops.count(r);
                return;
            }
        };
        match info {
            Frame::Arp { arp, .. } => {
                self.c.rx_arp += 1;
                self.handle_arp(now, port, arp, tx);
            }
            Frame::Ipv4 {
                dst_mac, total_len, ..
            } => {
                self.c.rx_ipv4 += 1;
                let mine = self.ports[port].mac;
                if dst_mac != mine && !dst_mac.is_broadcast() {
                    // A bridge floods unknown unicast: frames for other hosts reach us too.
                    self.c.not_for_us += 1;
                    return;
                }
                match hook.prerouting(now, port, &mut frame[ETH..ETH + total_len]) {
                    HookVerdict::Drop => return,
                    HookVerdict::Send if self.gso.is_plain() => {
                        self.c.local_delivered += 1;
                        self.send_own(now, &mut frame[..ETH + total_len], tx);
                        return;
                    }
                    HookVerdict::Decapsulated { at, port: inner }
                        if self.gso.is_plain() && at <= total_len =>
                    {
                        self.c.local_delivered += 1;
                        let inner_frame = &mut frame[ETH + at..ETH + total_len];
                        self.handle_frame_with(now, inner, inner_frame, tx, hook);
                        return;
                    }
                    HookVerdict::Send
                    | HookVerdict::Decapsulated { .. }
                    | HookVerdict::Continue => {}
                }
                // Read after the hook, which may have rewritten it.
                let dst = Ipv4Addr::new(
                    frame[ETH + 16],
                    frame[ETH + 17],
                    frame[ETH + 18],
                    frame[ETH + 19],
                );
                if self.is_local(dst) {
                    self.deliver_local(now, port, &frame[ETH..ETH + total_len], tx, hook);
                } else if dst_mac.is_broadcast() || self.is_broadcast_for(dst) || dst.is_multicast()
                {
                    self.c.local_broadcast_dropped += 1;
                } else {
                    self.forward(now, port, frame, total_len, tx, hook);
                }
            }
        }
    }
}

/// Splits an IPv4 packet into fragments of at most `mtu` octets (RFC 791 §3.2): offsets in
/// units of 8, MF on all but the last (or on all if the packet was itself a non-last fragment),
/// and only the options with the copied flag in fragments after the first.
pub fn fragment(ip: &[u8], mtu: usize, mut emit: impl FnMut(&[u8])) {
    let ihl = d11_wire::ip::header_len(ip);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let flags_off = u16::from_be_bytes([ip[6], ip[7]]);
    let orig_mf = flags_off & 0x2000 != 0;
    let orig_off = usize::from(flags_off & 0x1fff) * 8;
    let payload = &ip[ihl..total];

    let mut later_header = [0u8; 60];
    later_header[..20].copy_from_slice(&ip[..20]);
    let mut lh = 20;
    let mut i = 20;
    while i < ihl {
        let t = ip[i];
        match t {
            0 => break,
            1 => i += 1,
            _ => {
                let len = usize::from(*ip.get(i + 1).unwrap_or(&2)).max(2);
                let end = (i + len).min(ihl);
                if t & 0x80 != 0 {
                    later_header[lh..lh + end - i].copy_from_slice(&ip[i..end]);
                    lh += end - i;
                }
                i = end;
            }
        }
    }
    let lh = lh.div_ceil(4) * 4; // pad with End of Options (zeros)

    let mut out = vec![0u8; mtu];
    let mut at = 0;
    let mut first = true;
    while at < payload.len() {
        let hl = if first { ihl } else { lh };
        let room = (mtu - hl) / 8 * 8;
        let chunk = room.min(payload.len() - at);
        let last = at + chunk == payload.len();
        let (hdr, data) = out.split_at_mut(hl);
        if first {
            hdr.copy_from_slice(&ip[..ihl]);
        } else {
            hdr.copy_from_slice(&later_header[..lh]);
            hdr[0] = 0x40 | (lh / 4) as u8;
        }
        data[..chunk].copy_from_slice(&payload[at..at + chunk]);
        let len = hl + chunk;
        hdr[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        let mf = if !last || orig_mf { 0x2000 } else { 0 };
        let off = ((orig_off + at) / 8) as u16;
        let fo = (flags_off & 0x4000) | mf | off;
        hdr[6..8].copy_from_slice(&fo.to_be_bytes());
        fill_ipv4_checksum(hdr);
        emit(&out[..len]);
        at += chunk;
        first = false;
    }
}

pub use d11_wire::ip::udp_checksum;
use d11_wire::ip::write_header as write_ipv4_header;

fn write_arp(buf: &mut [u8], src: EthernetAddress, dst: EthernetAddress, arp: &ArpRepr) -> usize {
    d11_wire::arp::write_frame(buf, src.0, dst.0, arp)
}

impl Element for Router {
    fn role(&self) -> &'static str {
        "router"
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
    ) {
        self.handle_frame_with(now, port, frame, tx, &mut NoHook);
    }

    fn takes_gso(&self) -> bool {
        true
    }

    fn handle_frame_gso(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        tx: &mut dyn Transmit,
    ) {
        self.handle_frame_gso_with(now, port, frame, gso, tx, &mut NoHook);
    }

    fn poll_at(&self) -> Option<Instant> {
        self.neigh.poll_at()
    }

    fn poll(&mut self, now: Instant, tx: &mut dyn Transmit) {
        let expired = self.neigh.poll(now);
        for (port, addr) in expired.retry {
            self.send_arp_request(port, addr, tx);
        }
        for (port, f) in expired.failed {
            self.c.host_unreachable += 1;
            if f.len() > ETH + 20 {
                self.icmp_error(now, port, &f[ETH..], IcmpError::HostUnreachable, tx);
            }
        }
    }

    fn tables(&self) -> Vec<String> {
        ["interfaces", "routes", "rib", "arp"]
            .map(String::from)
            .to_vec()
    }

    fn show(&self, table: &str, now: Instant) -> Option<serde_json::Value> {
        let port_name = |i: PortId| self.ports.get(i).map_or("?", |p| p.name.as_str());
        match table {
            "interfaces" => Some(json!(self
                .ports
                .iter()
                .map(|p| json!({
                    "name": p.name,
                    "mac": d11_element::mac_string(&p.mac.0),
                    "addresses": p.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "mtu": p.mtu,
                    "default_ttl": d11_wire::ip::DEFAULT_TTL,
                }))
                .collect::<Vec<_>>())),
            "routes" => Some(json!(self
                .rib
                .installed()
                .iter()
                .map(|e| json!({
                    "prefix": e.prefix.to_string(),
                    "port": port_name(e.port),
                    "next_hop": e.next_hop.map(|n| n.to_string()),
                    "source": e.source,
                }))
                .collect::<Vec<_>>())),
            "rib" => Some(json!({
                let mut c: Vec<&Route> = self.rib.candidates().collect();
                c.sort_by_key(|r| (r.prefix.prefix_len(), u32::from(r.prefix.addr()), r.source));
                c
            }
            .iter()
            .map(|r| json!({
                "prefix": r.prefix.to_string(),
                "next_hop": r.next_hop.map(|n| n.to_string()),
                "port": r.port.map(port_name),
                "source": r.source,
                "installed": self.rib.installed_for(r.prefix).is_some_and(|e| e.source == r.source),
            }))
            .collect::<Vec<_>>())),
            "arp" => Some(json!(self
                .neigh
                .view(now)
                .into_iter()
                .map(|n| json!({
                    "port": port_name(n.port),
                    "address": n.address.to_string(),
                    "state": n.state,
                    "mac": n.mac,
                    "age_s": n.age_s,
                    "queued": n.queued,
                }))
                .collect::<Vec<_>>())),
            _ => None,
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.c.for_each(out);
        self.drops.for_each(out);
        // Gauges: the size of the forwarding table and of the RIB behind it.
        out("fib_routes", self.rib.len() as u64);
        out("rib_candidates", self.rib.candidates().count() as u64);
        // The ARP table's size, and the entries refused or evicted because it was full.
        out("neighbours", self.neigh.len() as u64);
        out("neighbour_table_full", self.neigh.full());
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("name", &self.name).finish()
    }
}

#[cfg(test)]
mod tests;
