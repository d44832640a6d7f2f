//! d11-vgw: the cloud's gateway node.
//!
//! - **SLB public addresses.** Its `external` port answers ARP for the VIPs (proxy ARP). A TCP
//!   or UDP packet to a VIP's open port is translated to the private address of one of the
//!   VIP's load-balancer VMs, chosen by a hash of the client's address and port (so a
//!   connection stays on one LB), and the reply is translated back (the source becomes the VIP
//!   again). A connection keeps its LB for its life (the conntrack table); other packets to a
//!   VIP are dropped and counted.
//! - **The VPC router.** A third, virtual port holds the VPC router's address (192.168.1.1): its
//!   wire is VXLAN. What the router sends there is wrapped in VXLAN (the VPC's VNI) towards the
//!   host of the destination MAC (learned from VXLAN received; broadcast and unknown go to
//!   every host of the VPC); VXLAN from the hosts is unwrapped and handed to the router as
//!   received on that port.
//! - Everything else (ARP, ping, TTL, ICMP errors, fragmentation needed) is `d11-router`'s.

use d11_element::{counters, PortConfig, PortId};
use d11_router::program::{Direct, Outbox, RouterElement, RouterProgram};
use d11_router::udp::{self, Datagram};
use d11_router::{Hook, HookVerdict, RouteConfig, Router, RouterConfig};
use d11_wire::gso::Gso;
use d11_wire::{checksum_adjust, fill_ipv4_checksum, vxlan};
use foldhash::HashMap;
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Deserialize)]
pub struct VipConfig {
    pub vip: Ipv4Addr,
    /// Open ports (TCP and UDP).
    #[serde(default = "https")]
    pub ports: Vec<u16>,
    /// The load-balancer VMs behind it.
    pub lbs: Vec<Ipv4Addr>,
}

fn https() -> Vec<u16> {
    vec![443]
}

#[derive(Debug, Clone, Deserialize)]
pub struct VpcConfig {
    pub vni: u32,
    /// The VPC router's address and the subnet (192.168.1.1/24).
    pub router: Ipv4Net,
    /// The VTEPs of the VPC's physical hosts: where the VPC's frames go, and the only
    /// addresses whose VXLAN is accepted.
    pub hosts: Vec<Ipv4Addr>,
    /// MACs learned at most.
    #[serde(default = "default_fdb_max")]
    pub fdb_max: usize,
}

fn default_fdb_max() -> usize {
    4096
}

#[derive(Debug, Clone, Deserialize)]
pub struct VgwConfig {
    pub name: String,
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default = "default_external")]
    pub external: String,
    #[serde(default = "default_underlay")]
    pub underlay: String,
    pub vpc: VpcConfig,
    #[serde(default)]
    pub vips: Vec<VipConfig>,
    #[serde(default = "default_ct_max")]
    pub conntrack_max: usize,
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    #[serde(default)]
    pub lb_check: LbCheck,
}

/// Health checks of the LB VMs: a TCP SYN from the VPC router to each LB's first VIP port; a
/// SYN-ACK is a pass (answered with RST), a RST or no answer within `timeout_ms` a failure.
pub use d11_element::health::CheckConfig as LbCheck;
use d11_element::health::Health;

fn default_external() -> String {
    "external".into()
}
fn default_underlay() -> String {
    "underlay".into()
}
fn default_ct_max() -> usize {
    65536
}
fn default_idle() -> u64 {
    300
}

/// The name of the virtual port on the VPC side.
pub const VPC_PORT: &str = "vpc";

counters! {
    pub struct VgwCounters {
        vip_translated,
        vip_replies_translated,
        vip_closed_port,
        vip_not_tcp_udp,
        vip_no_lb,
        lb_checks_ok,
        lb_checks_failed,
        lbs_down,
        lbs_up,
        conntrack_full,
        conntrack_expired,
        vxlan_rx,
        vxlan_malformed,
        vxlan_bad_flags,
        vxlan_unknown_vni,
        vxlan_unknown_vtep,
        vxlan_runt,
        mac_moves,
        fdb_full,
        vxlan_tx,
        vxlan_flooded,
        encap_too_big,
        encap_gso,
        encap_gso_cut,
        decap_gso,
        gso_not_vxlan,
        udp_errors,
    }
}

/// One LB VM as the gateway's checks see it.
#[derive(Debug, Clone)]
struct LbState {
    addr: Ipv4Addr,
    port: u16,
    health: Health,
    /// The probe in flight: (our source port, our sequence number, sent at).
    probe: Option<(u16, u32, Instant)>,
    last: &'static str,
}

/// A client's flow to a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    client: Ipv4Addr,
    cport: u16,
    vip: Ipv4Addr,
    vport: u16,
}

#[derive(Debug, Clone, Copy)]
struct Ct {
    lb: Ipv4Addr,
    seen: Instant,
}

pub struct Logic {
    external: PortId,
    underlay: PortId,
    vpc_port: PortId,
    addr: Ipv4Addr,
    mtu: usize,
    vni: u32,
    hosts: Vec<Ipv4Addr>,
    vips: Vec<VipConfig>,
    /// Forward (client -> VIP) and reverse (LB -> client) views of each flow. (foldhash, not
    /// std's SipHash: a lookup on every frame. Its seed is random in each process, and the
    /// table holds `ct_max` flows at most whatever the clients send.)
    ct: HashMap<Key, Ct>,
    rev: HashMap<(u8, Ipv4Addr, u16, Ipv4Addr, u16), Key>,
    ct_max: usize,
    idle: Duration,
    next_sweep: Option<Instant>,
    fdb: HashMap<[u8; 6], (Ipv4Addr, Instant)>,
    fdb_max: usize,
    lbs: Vec<LbState>,
    check: LbCheck,
    next_check: Option<Instant>,
    router_addr: Ipv4Addr,
    probe_port: u16,
    /// VXLAN to the hosts (datagrams), probes and resets (packets), frames from the hosts
    /// for the VPC router (inject).
    out: Outbox,
    /// The packet the router hands the hooks now has a partial transport checksum (an
    /// offloaded super-frame): addresses are folded into it as such.
    partial: bool,
    /// Where a super-frame too big for one VXLAN packet is cut.
    cut: Vec<u8>,
    pub c: VgwCounters,
}

/// The gateway node: a router whose VPC port's wire is VXLAN.
pub type Vgw = RouterElement<Logic>;

fn port_of(cfg: &VgwConfig, name: &str) -> anyhow::Result<(PortId, Option<Ipv4Addr>)> {
    let i = cfg
        .ports
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| anyhow::anyhow!("no port named {name:?}"))?;
    Ok((i, cfg.ports[i].addresses.first().map(|a| a.addr())))
}

impl Logic {
    pub fn new(cfg: &VgwConfig) -> anyhow::Result<Vgw> {
        let (external, _) = port_of(cfg, &cfg.external)?;
        let (underlay, addr) = port_of(cfg, &cfg.underlay)?;
        let addr = addr.ok_or_else(|| anyhow::anyhow!("the underlay port needs an address"))?;
        if cfg.vpc.vni > vxlan::Repr::MAX_VNI {
            anyhow::bail!("vpc.vni {} is more than 24 bits", cfg.vpc.vni);
        }
        for v in &cfg.vips {
            if v.lbs.is_empty() {
                anyhow::bail!("VIP {} has no lbs", v.vip);
            }
        }
        let mut ports = cfg.ports.clone();
        ports.push(PortConfig {
            name: VPC_PORT.into(),
            mac: None,
            addresses: vec![cfg.vpc.router],
            mtu: Some((cfg.ports[underlay].ip_mtu() - vxlan::IPV4_OVERHEAD) as u16),
            offload: false,
        });
        let mut router = Router::new(&RouterConfig {
            name: cfg.name.clone(),
            ports,
            routes: cfg.routes.clone(),
            icmp_limit: Default::default(),
            bgp: None,
        })?;
        let vpc_port = router
            .port_index(VPC_PORT)
            .ok_or_else(|| anyhow::anyhow!("no VPC port"))?;
        for v in &cfg.vips {
            router.add_proxy_arp(external, v.vip);
        }
        let mut lbs: Vec<LbState> = Vec::new();
        for v in &cfg.vips {
            for a in &v.lbs {
                if !lbs.iter().any(|l| l.addr == *a) {
                    lbs.push(LbState {
                        addr: *a,
                        port: v.ports.first().copied().unwrap_or(443),
                        health: Health::new(true),
                        probe: None,
                        last: "none",
                    });
                }
            }
        }
        Ok(RouterElement::new(
            router,
            Logic {
                external,
                underlay,
                vpc_port,
                addr,
                mtu: cfg.ports[underlay].ip_mtu(),
                vni: cfg.vpc.vni,
                hosts: cfg.vpc.hosts.clone(),
                vips: cfg.vips.clone(),
                ct: HashMap::default(),
                rev: HashMap::default(),
                ct_max: cfg.conntrack_max,
                idle: Duration::from_secs(cfg.idle_timeout_s.max(1)),
                next_sweep: None,
                fdb: HashMap::default(),
                fdb_max: cfg.vpc.fdb_max,
                lbs,
                check: cfg.lb_check.clone(),
                next_check: Some(Instant::now()),
                router_addr: cfg.vpc.router.addr(),
                probe_port: 40000,
                out: Outbox::default(),
                partial: false,
                cut: Vec::new(),
                c: VgwCounters::default(),
            },
        ))
    }
}

fn addr_at(ip: &[u8], at: usize) -> Ipv4Addr {
    if at == 12 {
        d11_wire::ip::src(ip)
    } else {
        d11_wire::ip::dst(ip)
    }
}

/// Rewrites the IPv4 address at `at` (12: source, 16: destination) to `new`, fixing the IP
/// header checksum and the TCP or UDP checksum (which covers the address in its
/// pseudo-header). With `partial` (an offloaded packet: the field holds the pseudo-header's
/// sum, not complemented; the rest is summed later), the address is folded in as such.
fn rewrite_addr(ip: &mut [u8], at: usize, new: Ipv4Addr, partial: bool) {
    let ihl = d11_wire::ip::header_len(ip);
    let old = [ip[at], ip[at + 1], ip[at + 2], ip[at + 3]];
    let na = new.octets();
    let csum_at = match ip[9] {
        6 if ip.len() >= ihl + 18 => Some(ihl + 16),
        17 if ip.len() >= ihl + 8 && (partial || (ip[ihl + 6] | ip[ihl + 7]) != 0) => Some(ihl + 6),
        _ => None,
    };
    if let (Some(c), true) = (csum_at, partial) {
        let sum = !checksum_adjust(!u16::from_be_bytes([ip[c], ip[c + 1]]), &old, &na);
        ip[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    } else if let Some(c) = csum_at {
        let mut sum = checksum_adjust(u16::from_be_bytes([ip[c], ip[c + 1]]), &old, &na);
        if ip[9] == 17 && sum == 0 {
            sum = 0xffff;
        }
        ip[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    }
    ip[at..at + 4].copy_from_slice(&na);
    fill_ipv4_checksum(&mut ip[..ihl]);
}

/// Source and destination ports of a TCP or UDP packet that is not a later fragment.
fn ports(ip: &[u8]) -> Option<(u16, u16)> {
    let ihl = d11_wire::ip::header_len(ip);
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if !matches!(ip[9], 6 | 17) || frag != 0 || ip.len() < ihl + 4 {
        return None;
    }
    Some((
        u16::from_be_bytes([ip[ihl], ip[ihl + 1]]),
        u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]),
    ))
}

impl Logic {
    /// An LB for a new flow: a hash of the client's address and port over the VIP's LBs that
    /// pass their checks.
    fn pick_lb(&self, v: &VipConfig, client: Ipv4Addr, cport: u16) -> Option<Ipv4Addr> {
        let up: Vec<Ipv4Addr> = v
            .lbs
            .iter()
            .copied()
            .filter(|a| self.lbs.iter().any(|l| l.addr == *a && l.health.up))
            .collect();
        if up.is_empty() {
            return None;
        }
        let h = d11_wire::fnv::fnv1a32(client.octets().into_iter().chain(cport.to_be_bytes()));
        Some(up[h as usize % up.len()])
    }

    /// A TCP segment from the VPC router's address (a probe or a reset).
    fn tcp_packet(&self, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
        let mut ip = vec![0u8; 40];
        d11_wire::ip::write_header(
            &mut ip,
            40,
            d11_wire::ip::DEFAULT_TTL,
            6,
            self.router_addr,
            dst,
        );
        let t = &mut ip[20..];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&1024u16.to_be_bytes());
        let c = d11_wire::ip::pseudo_checksum(self.router_addr, dst, 6, &ip[20..]);
        ip[36..38].copy_from_slice(&c.to_be_bytes());
        ip
    }

    fn check_result(&mut self, i: usize, ok: bool, why: &'static str) {
        let l = &mut self.lbs[i];
        l.probe = None;
        l.last = why;
        if let Some(up) = l.health.record(ok, &self.check) {
            tracing::warn!(lb = %l.addr, up, "LB VM state changed");
            if up {
                self.c.lbs_up += 1;
            } else {
                self.c.lbs_down += 1;
            }
        }
    }

    /// Timed-out probes fail; a new probe to each LB.
    fn run_checks(&mut self, now: Instant) {
        let timeout = self.check.timeout();
        for i in 0..self.lbs.len() {
            if let Some((_, _, at)) = self.lbs[i].probe {
                if now.saturating_duration_since(at) >= timeout {
                    self.c.lb_checks_failed += 1;
                    self.check_result(i, false, "timeout");
                } else {
                    continue;
                }
            }
            self.probe_port = if self.probe_port >= 60999 {
                40000
            } else {
                self.probe_port + 1
            };
            let seq = u32::from(self.probe_port).wrapping_mul(2_654_435_761);
            let (addr, port) = (self.lbs[i].addr, self.lbs[i].port);
            let p = self.tcp_packet(addr, self.probe_port, port, seq, 0x02);
            self.out.packets.push(p);
            self.lbs[i].probe = Some((self.probe_port, seq, now));
        }
        self.next_check = Some(now + self.check.interval());
    }

    /// A TCP segment to the VPC router's address: the answer to a probe?
    fn probe_answer(&mut self, ip: &[u8]) {
        let ihl = d11_wire::ip::header_len(ip);
        if ip.len() < ihl + 20 {
            return;
        }
        let t = &ip[ihl..];
        let src = addr_at(ip, 12);
        let (sport, dport) = (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        );
        let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
        let flags = t[13];
        let Some(i) = self.lbs.iter().position(|l| {
            l.addr == src && l.port == sport && l.probe.is_some_and(|(p, _, _)| p == dport)
        }) else {
            return;
        };
        let seq = self.lbs[i].probe.map_or(0, |(_, s, _)| s);
        if flags & 0x12 == 0x12 && ack == seq.wrapping_add(1) {
            self.c.lb_checks_ok += 1;
            // Close the half-open connection: RST with the sequence number it acknowledged.
            let rst = self.tcp_packet(src, dport, sport, ack, 0x04);
            self.out.packets.push(rst);
            self.check_result(i, true, "L4OK");
        } else if flags & 0x04 != 0 {
            self.c.lb_checks_failed += 1;
            self.check_result(i, false, "refused");
        }
    }

    /// A packet from outside to a VIP: translated to an LB, or dropped.
    fn translate_to_lb(&mut self, now: Instant, ip: &mut [u8]) -> HookVerdict {
        let dst = addr_at(ip, 16);
        let Some(vi) = self.vips.iter().position(|v| v.vip == dst) else {
            return HookVerdict::Continue;
        };
        let Some((cport, vport)) = ports(ip) else {
            self.c.vip_not_tcp_udp += 1;
            return HookVerdict::Drop;
        };
        if !self.vips[vi].ports.contains(&vport) {
            self.c.vip_closed_port += 1;
            return HookVerdict::Drop;
        }
        let key = Key {
            proto: ip[9],
            client: addr_at(ip, 12),
            cport,
            vip: dst,
            vport,
        };
        let lb = match self.ct.get_mut(&key) {
            Some(ct) => {
                ct.seen = now;
                ct.lb
            }
            None => {
                if self.ct.len() >= self.ct_max {
                    self.c.conntrack_full += 1;
                    return HookVerdict::Drop;
                }
                let Some(lb) = self.pick_lb(&self.vips[vi], key.client, cport) else {
                    self.c.vip_no_lb += 1;
                    return HookVerdict::Drop;
                };
                self.ct.insert(key, Ct { lb, seen: now });
                self.rev
                    .insert((key.proto, lb, vport, key.client, cport), key);
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now + self.idle);
                }
                lb
            }
        };
        rewrite_addr(ip, 16, lb, self.partial);
        self.c.vip_translated += 1;
        HookVerdict::Continue
    }

    /// A reply from an LB leaving by the external port: its source becomes the VIP again.
    fn translate_reply(&mut self, now: Instant, ip: &mut [u8]) {
        let Some((sport, dport)) = ports(ip) else {
            return;
        };
        let r = (ip[9], addr_at(ip, 12), sport, addr_at(ip, 16), dport);
        let Some(key) = self.rev.get(&r).copied() else {
            return;
        };
        if let Some(ct) = self.ct.get_mut(&key) {
            ct.seen = now;
        }
        rewrite_addr(ip, 12, key.vip, self.partial);
        self.c.vip_replies_translated += 1;
    }

    /// A frame the router sent towards the VPC: into VXLAN. `gso` says what it stands for (a
    /// super-frame goes whole, for the host's port or the kernel to cut).
    fn wrap_for_vpc(&mut self, now: Instant, f: &[u8], gso: &Gso) {
        if f.len() < 14 {
            return;
        }
        let seg = d11_wire::gso::largest_segment(f, gso);
        if 20 + 8 + vxlan::HEADER_LEN + seg > self.mtu {
            self.c.encap_too_big += 1;
            return;
        }
        if !gso.is_plain() && 20 + 8 + vxlan::HEADER_LEN + f.len() > usize::from(u16::MAX) {
            // One IP packet cannot hold it: cut here, and wrap each segment.
            self.c.encap_gso_cut += 1;
            let mut cut = std::mem::take(&mut self.cut);
            cut.resize(d11_netdev::MAX_FRAME, 0);
            let _ =
                d11_wire::gso::segment(f, gso, &mut cut, |s| self.wrap_for_vpc(now, s, &Gso::NONE));
            self.cut = cut;
            return;
        }
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&f[0..6]);
        let known = (dst[0] & 1 == 0)
            .then(|| self.fdb.get(&dst))
            .flatten()
            .filter(|(_, t)| now.saturating_duration_since(*t) < Duration::from_secs(300))
            .map(|(ip, _)| *ip);
        // The host the MAC was learned from, else every host of the VPC.
        let n = match known {
            Some(_) => 1,
            None => {
                self.c.vxlan_flooded += 1;
                self.hosts.len()
            }
        };
        if n == 0 {
            return;
        }
        let mut payload = self.out.buffer();
        payload.resize(vxlan::HEADER_LEN, 0);
        if vxlan::Repr::new(self.vni)
            .and_then(|r| r.emit(&mut payload))
            .is_err()
        {
            return;
        }
        payload.extend_from_slice(f);
        let sport =
            49152 + (d11_wire::fnv::fnv1a32(f[..f.len().min(38)].iter().copied()) % 16384) as u16;
        if !gso.is_plain() {
            self.c.encap_gso += 1;
        }
        for i in 0..n {
            let dst = known.unwrap_or_else(|| self.hosts[i]);
            // The last one takes the buffer itself; the others a copy.
            let p = if i + 1 == n {
                std::mem::take(&mut payload)
            } else {
                self.out.copy(&payload)
            };
            self.c.vxlan_tx += 1;
            let d = Datagram {
                src: self.addr,
                dst,
                sport,
                dport: vxlan::UDP_PORT,
                payload: p,
            };
            if gso.is_plain() {
                self.out.datagrams.push(d);
            } else {
                self.out.gso_datagrams.push((d, vxlan::HEADER_LEN, *gso));
            }
        }
    }

    /// VXLAN from a host; `gso` describes the inner frame (offsets from its start).
    fn unwrap_from_host(&mut self, now: Instant, from: Ipv4Addr, payload: &[u8], gso: &Gso) {
        self.c.vxlan_rx += 1;
        let Ok(p) = vxlan::Packet::new_checked(payload) else {
            self.c.vxlan_malformed += 1;
            return;
        };
        let Ok(r) = vxlan::Repr::parse(&p) else {
            self.c.vxlan_bad_flags += 1;
            return;
        };
        if r.vni != self.vni {
            self.c.vxlan_unknown_vni += 1;
            return;
        }
        if !self.hosts.contains(&from) {
            self.c.vxlan_unknown_vtep += 1;
            return;
        }
        let f = p.payload();
        if f.len() < 14 {
            self.c.vxlan_runt += 1;
            return;
        }
        let mut src = [0u8; 6];
        src.copy_from_slice(&f[6..12]);
        if src[0] & 1 == 0 {
            let full = self.fdb.len() >= self.fdb_max;
            match self.fdb.get_mut(&src) {
                Some(e) => {
                    if e.0 != from {
                        self.c.mac_moves += 1;
                    }
                    *e = (from, now);
                }
                None if full => self.c.fdb_full += 1,
                None => {
                    self.fdb.insert(src, (from, now));
                }
            }
        }
        let c = self.out.copy(f);
        if gso.is_plain() {
            self.out.inject.push(c);
        } else {
            self.c.decap_gso += 1;
            self.out.inject_gso.push((c, *gso));
        }
    }

    /// An offloaded frame from the underlay: VXLAN to this gateway is unwrapped, its metadata
    /// moved to the inner frame; anything else is the router's (false). A super-frame in a
    /// UDP tunnel that is not VXLAN to us is counted and dropped.
    fn offloaded_from_underlay(&mut self, now: Instant, frame: &[u8], gso: &Gso) -> bool {
        match vxlan::offloaded_for(frame, gso, self.addr) {
            vxlan::Offloaded::Vxlan { from, at, inner } => {
                self.unwrap_from_host(now, from, &frame[at..], &inner)
            }
            vxlan::Offloaded::Malformed => {
                self.c.vxlan_rx += 1;
                self.c.vxlan_malformed += 1;
            }
            vxlan::Offloaded::OtherTunnel => self.c.gso_not_vxlan += 1,
            vxlan::Offloaded::NotVxlan => return false,
        }
        true
    }

    fn sweep(&mut self, now: Instant) {
        let idle = self.idle;
        let before = self.ct.len();
        self.ct
            .retain(|_, c| now.saturating_duration_since(c.seen) < idle);
        let ct = &self.ct;
        self.rev.retain(|_, k| ct.contains_key(k));
        self.c.conntrack_expired += (before - self.ct.len()) as u64;
        self.fdb
            .retain(|_, (_, t)| now.saturating_duration_since(*t) < Duration::from_secs(300));
        self.next_sweep = (!self.ct.is_empty()).then(|| now + idle / 2);
    }
}

impl Hook for Logic {
    fn offload(&mut self, gso: &Gso) {
        self.partial = gso.flags & d11_wire::gso::NEEDS_CSUM != 0;
    }

    fn prerouting(&mut self, now: Instant, in_port: PortId, ip: &mut [u8]) -> HookVerdict {
        if in_port == self.external {
            return self.translate_to_lb(now, ip);
        }
        HookVerdict::Continue
    }

    fn postrouting(
        &mut self,
        now: Instant,
        in_port: PortId,
        out_port: PortId,
        ip: &mut [u8],
    ) -> HookVerdict {
        if in_port == self.vpc_port && out_port != self.vpc_port {
            self.translate_reply(now, ip);
        }
        HookVerdict::Continue
    }

    fn local(&mut self, now: Instant, in_port: PortId, ip: &[u8]) -> HookVerdict {
        if ip[9] == 6 && in_port == self.vpc_port && addr_at(ip, 16) == self.router_addr {
            self.probe_answer(ip);
            return HookVerdict::Drop;
        }
        if ip[9] != 17 || in_port != self.underlay {
            return HookVerdict::Continue;
        }
        let u = match udp::parse_udp(ip) {
            Ok(u) => u,
            Err(_) => {
                self.c.udp_errors += 1;
                return HookVerdict::Drop;
            }
        };
        if u.dport != vxlan::UDP_PORT {
            return HookVerdict::Continue;
        }
        self.unwrap_from_host(now, u.src, u.payload, &Gso::NONE);
        HookVerdict::Drop
    }
}

impl RouterProgram for Logic {
    fn role(&self) -> &'static str {
        "vgw"
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    fn tunnel_port(&self) -> Option<PortId> {
        Some(self.vpc_port)
    }

    fn tunnel_frame(&mut self, now: Instant, frame: &[u8]) {
        self.wrap_for_vpc(now, frame, &Gso::NONE);
    }

    fn tunnel_frame_gso(&mut self, now: Instant, frame: &[u8], gso: &Gso) -> bool {
        self.wrap_for_vpc(now, frame, gso);
        true
    }

    /// Super-frames cross whole: the translation folds addresses into a partial checksum
    /// as such, and VXLAN carries them with the tunnel's offload metadata.
    fn takes_gso(&self) -> bool {
        true
    }

    fn takes_tunnel_gso(&self) -> bool {
        true
    }

    fn own_frame_gso(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        _out: &mut Direct<'_>,
    ) -> bool {
        port == self.underlay && self.offloaded_from_underlay(now, frame, gso)
    }

    fn poll_at(&self) -> Option<Instant> {
        let check = (!self.lbs.is_empty()).then_some(self.next_check).flatten();
        [self.next_sweep, check].into_iter().flatten().min()
    }

    fn poll(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
        if !self.lbs.is_empty() && self.next_check.is_some_and(|t| t <= now) {
            self.run_checks(now);
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["vips", "conntrack", "fdb"]
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        let l = self;
        match table {
            "vips" => Some(json!(l
                .vips
                .iter()
                .map(|v| json!({
                    "vip": v.vip.to_string(),
                    "ports": v.ports,
                    "lbs": v.lbs.iter().map(|a| {
                        let st = l.lbs.iter().find(|x| x.addr == *a);
                        json!({
                            "address": a.to_string(),
                            "state": if st.is_some_and(|x| x.health.up) { "up" } else { "down" },
                            "last_check": st.map(|x| x.last),
                        })
                    }).collect::<Vec<_>>(),
                    "flows": l.ct.keys().filter(|k| k.vip == v.vip).count(),
                }))
                .collect::<Vec<_>>())),
            "conntrack" => {
                let mut v: Vec<_> = l.ct.iter().collect();
                v.sort_by_key(|(k, _)| (k.client, k.cport));
                Some(json!(v
                    .iter()
                    .map(|(k, c)| json!({
                        "proto": if k.proto == 6 { "tcp" } else { "udp" },
                        "client": format!("{}:{}", k.client, k.cport),
                        "vip": format!("{}:{}", k.vip, k.vport),
                        "lb": format!("{}:{}", c.lb, k.vport),
                        "idle_s": now.saturating_duration_since(c.seen).as_secs(),
                    }))
                    .collect::<Vec<_>>()))
            }
            "fdb" => Some(json!(l
                .fdb
                .iter()
                .map(|(m, (ip, t))| json!({
                    "mac": d11_element::mac_string(m),
                    "vtep": ip.to_string(),
                    "age_s": now.saturating_duration_since(*t).as_secs(),
                }))
                .collect::<Vec<_>>())),
            _ => None,
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.c.for_each(out);
    }
}

#[cfg(test)]
mod tests;
