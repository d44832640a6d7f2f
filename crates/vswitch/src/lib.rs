//! d11-vswitch: the virtual switch of a physical host (Open vSwitch's role in the seed).
//!
//! - **VM ports**: one per VM, each in one VNI (`vnis = { vm-lb1 = 1001, ... }`). Frames
//!   between VMs of the same VNI on this host are switched locally.
//! - **Underlay port**: the host's address on the underlay network. The switch is a VTEP
//!   (RFC 7348): a frame for a VM on another host leaves wrapped in VXLAN (UDP 4789, the VNI in
//!   the header) towards that host's VTEP; VXLAN arriving here is unwrapped into the VNI.
//! - **Trusted VTEPs only**: the VTEPs of each VNI are configured (`vteps = { "1001" =
//!   ["10.1.0.12"] }`; in a lab, the topology file is the control plane that says which hosts
//!   carry a VNI). VXLAN for a VNI from any other underlay address is counted
//!   (`vxlan_unknown_vtep`) and dropped before anything is learned from it: a machine on the
//!   underlay can neither inject frames into a tenant nor attract a tenant's frames.
//! - **Learning, per VNI**: source MACs of frames from VM ports are learned on the port, inner
//!   source MACs of VXLAN on the sending VTEP; entries age out (`fdb_ageing_s`, 300 s). Each
//!   VNI learns at most `fdb_max_per_vni` MACs (beyond, `fdb_full` counts and nothing is
//!   learned, so one tenant cannot fill the table for the others); a MAC seen at another port
//!   or VTEP than before counts in `mac_moves`.
//! - **Flooding**: broadcast, multicast and unknown unicast go to the VNI's other local ports
//!   and, by head-end replication, to each configured VTEP of the VNI. What arrives by VXLAN is
//!   never sent on to another VTEP.
//! - **Isolation**: a VNI's frames go only to that VNI's ports and VTEPs; the same MAC or IP in
//!   two VNIs are two different hosts.
//! - The underlay side is a [`Router`]: ARP, ping, ICMP errors; VXLAN is taken in
//!   [`Hook::local`] and sent with [`Router::send_udp`].
//! - **Offloads** (`offload = true` on the ports): TCP super-frames from a VM leave whole in
//!   one VXLAN super-frame (`Gso::wrapped`: the kernel, or the port, cuts it into VXLAN
//!   segments, each with its outer lengths and a zero UDP checksum), and VXLAN super-frames
//!   from the underlay go to the VM whole; a super-frame whose outer IP packet would pass
//!   65,535 octets is cut into segments first (`encap_gso_cut`).
//! - Bad input (malformed VXLAN, an unknown VNI, runt frames) is counted and dropped.

use d11_element::{counters, mac_string, PortConfig, PortId};
use d11_router::program::{Direct, Outbox, RouterElement, RouterProgram};
use d11_router::udp::{self, Datagram};
use d11_router::{Hook, HookVerdict, RouteConfig, Router, RouterConfig};
use d11_wire::gso::Gso;
use d11_wire::vxlan;
use foldhash::HashMap;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Deserialize)]
pub struct VswitchConfig {
    pub name: String,
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The port on the underlay (it needs an address).
    #[serde(default = "default_underlay")]
    pub underlay: String,
    /// VM ports and their VNIs.
    pub vnis: BTreeMap<String, u32>,
    /// Remote VTEPs per VNI (keys are the VNI in decimal): where the VNI's flooded frames go,
    /// and the only addresses whose VXLAN for that VNI is accepted.
    #[serde(default)]
    pub vteps: BTreeMap<String, Vec<Ipv4Addr>>,
    #[serde(default = "default_ageing")]
    pub fdb_ageing_s: u64,
    /// MACs learned per VNI at most.
    #[serde(default = "default_fdb_max")]
    pub fdb_max_per_vni: usize,
}

fn default_underlay() -> String {
    "underlay".into()
}
fn default_ageing() -> u64 {
    300
}
fn default_fdb_max() -> usize {
    4096
}

counters! {
    pub struct VswitchCounters {
        vm_rx_frames,
        vm_runt,
        vm_bad_source,
        switched_local,
        flooded,
        encapsulated,
        encap_gso,
        encap_gso_cut,
        encap_too_big,
        hairpin_dropped,
        vxlan_rx,
        vxlan_malformed,
        vxlan_bad_flags,
        vxlan_reserved_bits,
        vxlan_unknown_vni,
        vxlan_unknown_vtep,
        vxlan_runt,
        vxlan_to_remote_dropped,
        decapsulated,
        decap_gso,
        gso_not_vxlan,
        mac_moves,
        fdb_full,
        fdb_aged,
        udp_errors,
    }
}

/// Where a MAC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Local(PortId),
    Remote(Ipv4Addr),
}

#[derive(Debug, Clone, Copy)]
struct FdbEntry {
    dest: Dest,
    seen: Instant,
}

/// The switch's logic; the router's hook for VXLAN.
pub struct Logic {
    underlay: PortId,
    addr: Ipv4Addr,
    mtu: usize,
    vni_of: Vec<Option<u32>>,
    port_names: Vec<String>,
    vteps: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
    // foldhash, not std's SipHash: a learn and a lookup on every frame. Its seed is random in
    // each process (hashbrown's default hasher), and a VNI learns `fdb_max_per_vni` MACs at
    // most whatever the VMs send.
    fdb: HashMap<(u32, [u8; 6]), FdbEntry>,
    /// Entries in `fdb` per VNI.
    fdb_len: HashMap<u32, usize>,
    ageing: Duration,
    fdb_max_per_vni: usize,
    next_sweep: Option<Instant>,
    /// VXLAN to send (datagrams) and frames to VM ports (frames).
    out: Outbox,
    /// Where a super-frame too big for one VXLAN packet is cut.
    cut: Vec<u8>,
    pub c: VswitchCounters,
}

/// The virtual switch: its underlay side is a router.
pub type Vswitch = RouterElement<Logic>;

impl Logic {
    pub fn new(cfg: &VswitchConfig) -> anyhow::Result<Vswitch> {
        let underlay = cfg
            .ports
            .iter()
            .position(|p| p.name == cfg.underlay)
            .ok_or_else(|| anyhow::anyhow!("no port {:?} (the underlay)", cfg.underlay))?;
        let u = &cfg.ports[underlay];
        let addr = u
            .addresses
            .first()
            .map(|a| a.addr())
            .ok_or_else(|| anyhow::anyhow!("the underlay port {} needs an address", u.name))?;
        let mut vni_of = vec![None; cfg.ports.len()];
        for (name, vni) in &cfg.vnis {
            let i = cfg
                .ports
                .iter()
                .position(|p| &p.name == name)
                .ok_or_else(|| anyhow::anyhow!("vnis names port {name:?}, which is not a port"))?;
            if i == underlay {
                anyhow::bail!("the underlay port {name} cannot be a VM port");
            }
            if *vni > vxlan::Repr::MAX_VNI {
                anyhow::bail!("port {name}: VNI {vni} is more than 24 bits");
            }
            vni_of[i] = Some(*vni);
        }
        for (i, p) in cfg.ports.iter().enumerate() {
            if i != underlay && vni_of[i].is_none() {
                anyhow::bail!("port {} has no VNI (give it one in `vnis`)", p.name);
            }
        }
        let mut vteps: BTreeMap<u32, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for (k, list) in &cfg.vteps {
            let vni: u32 = k
                .parse()
                .map_err(|_| anyhow::anyhow!("vteps: {k:?} is not a VNI"))?;
            if !vni_of.contains(&Some(vni)) {
                anyhow::bail!("vteps: VNI {vni} has no VM port here (give one a VNI in `vnis`)");
            }
            vteps
                .entry(vni)
                .or_default()
                .extend(list.iter().filter(|a| **a != addr));
        }
        let router = Router::new(&RouterConfig {
            name: cfg.name.clone(),
            ports: cfg.ports.clone(),
            routes: cfg.routes.clone(),
            icmp_limit: Default::default(),
            bgp: None,
        })?;
        Ok(RouterElement::new(
            router,
            Logic {
                underlay,
                addr,
                mtu: u.ip_mtu(),
                vni_of,
                port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
                vteps,
                fdb: HashMap::default(),
                fdb_len: HashMap::default(),
                ageing: Duration::from_secs(cfg.fdb_ageing_s.max(1)),
                fdb_max_per_vni: cfg.fdb_max_per_vni,
                next_sweep: None,
                out: Outbox::default(),
                cut: Vec::new(),
                c: VswitchCounters::default(),
            },
        ))
    }
}

fn mac_at(f: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&f[at..at + 6]);
    m
}

/// The outer UDP source port: a hash of the inner Ethernet and IP headers, in the dynamic
/// range, so the underlay can spread flows (RFC 7348 §5).
fn entropy_port(frame: &[u8]) -> u16 {
    let n = frame.len().min(14 + 20 + 4);
    let h = d11_wire::fnv::fnv1a64(&frame[..n]);
    49152 + (h % 16384) as u16
}

/// Where what the switch makes of a frame goes: the outbox (a plain frame, from the
/// router's paths, sent once the frame is handled), or at once through a [`Direct`] with the
/// frame's offload metadata (an offloaded frame, still borrowed: not copied).
enum Via<'x, 'a> {
    Outbox,
    Direct(&'x mut Direct<'a>, Gso),
}

impl<'a> Via<'_, 'a> {
    /// The same way out, again (for each port and VTEP of a flood).
    fn again(&mut self) -> Via<'_, 'a> {
        match self {
            Via::Outbox => Via::Outbox,
            Via::Direct(d, g) => Via::Direct(d, *g),
        }
    }

    fn gso(&self) -> Gso {
        match self {
            Via::Outbox => Gso::NONE,
            Via::Direct(_, g) => *g,
        }
    }
}

impl Logic {
    fn learn(&mut self, now: Instant, vni: u32, mac: [u8; 6], dest: Dest) {
        if mac[0] & 1 != 0 {
            return;
        }
        match self.fdb.get_mut(&(vni, mac)) {
            Some(e) => {
                if e.dest != dest {
                    self.c.mac_moves += 1;
                    e.dest = dest;
                }
                e.seen = now;
            }
            None => {
                let len = self.fdb_len.entry(vni).or_default();
                if *len >= self.fdb_max_per_vni {
                    self.c.fdb_full += 1;
                    return;
                }
                *len += 1;
                self.fdb.insert((vni, mac), FdbEntry { dest, seen: now });
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now + self.ageing);
                }
            }
        }
    }

    fn lookup(&self, now: Instant, vni: u32, mac: [u8; 6]) -> Option<Dest> {
        self.fdb
            .get(&(vni, mac))
            .filter(|e| now.saturating_duration_since(e.seen) < self.ageing)
            .map(|e| e.dest)
    }

    /// A frame for local port `q`: left in the outbox, or sent at once (a super-frame, not
    /// copied) with its metadata.
    fn out_port(&mut self, q: PortId, f: &[u8], via: Via<'_, '_>) {
        match via {
            Via::Direct(d, gso) => d.frame(q, f, &gso),
            Via::Outbox => {
                let c = self.out.copy(f);
                self.out.frames.push((q, c));
            }
        }
    }

    fn encapsulate(&mut self, now: Instant, vni: u32, frame: &[u8], to: Ipv4Addr, mut via: Via) {
        let gso = via.gso();
        // The largest segment the frame stands for: each must fit the underlay.
        let seg = d11_wire::gso::largest_segment(frame, &gso);
        if 20 + 8 + vxlan::HEADER_LEN + seg > self.mtu {
            self.c.encap_too_big += 1;
            return;
        }
        if !gso.is_plain() && 20 + 8 + vxlan::HEADER_LEN + frame.len() > usize::from(u16::MAX) {
            // One IP packet cannot hold it: cut here, and send each segment.
            self.c.encap_gso_cut += 1;
            let mut cut = std::mem::take(&mut self.cut);
            cut.resize(d11_netdev::MAX_FRAME, 0);
            let _ = d11_wire::gso::segment(frame, &gso, &mut cut, |s| {
                let plain = match &mut via {
                    Via::Direct(d, _) => Via::Direct(d, Gso::NONE),
                    Via::Outbox => Via::Outbox,
                };
                self.encapsulate(now, vni, s, to, plain)
            });
            self.cut = cut;
            return;
        }
        let mut header = [0u8; vxlan::HEADER_LEN];
        if vxlan::Repr::new(vni)
            .and_then(|r| r.emit(&mut header))
            .is_err()
        {
            return;
        }
        self.c.encapsulated += 1;
        if !gso.is_plain() {
            self.c.encap_gso += 1;
        }
        let sport = entropy_port(frame);
        match via {
            // Header and frame are copied once, into the frame sent.
            Via::Direct(d, gso) => {
                d.udp(
                    now,
                    (self.addr, to),
                    (sport, vxlan::UDP_PORT),
                    &[&header, frame],
                    (vxlan::HEADER_LEN, &gso),
                );
            }
            Via::Outbox => {
                let mut payload = self.out.buffer();
                payload.extend_from_slice(&header);
                payload.extend_from_slice(frame);
                self.out.datagrams.push(Datagram {
                    src: self.addr,
                    dst: to,
                    sport,
                    dport: vxlan::UDP_PORT,
                    payload,
                });
            }
        }
    }

    /// A frame from VM port `port`.
    fn frame_from_vm(&mut self, now: Instant, port: PortId, f: &[u8], mut via: Via) {
        self.c.vm_rx_frames += 1;
        let Some(vni) = self.vni_of.get(port).copied().flatten() else {
            return;
        };
        if f.len() < 14 {
            self.c.vm_runt += 1;
            return;
        }
        let (dst, src) = (mac_at(f, 0), mac_at(f, 6));
        if src[0] & 1 != 0 || src == [0; 6] {
            self.c.vm_bad_source += 1;
            return;
        }
        self.learn(now, vni, src, Dest::Local(port));
        let known = if dst[0] & 1 == 0 {
            self.lookup(now, vni, dst)
        } else {
            None
        };
        match known {
            Some(Dest::Local(q)) if q == port => self.c.hairpin_dropped += 1,
            Some(Dest::Local(q)) => {
                self.c.switched_local += 1;
                self.out_port(q, f, via);
            }
            Some(Dest::Remote(ip)) => self.encapsulate(now, vni, f, ip, via),
            None => {
                self.c.flooded += 1;
                for q in 0..self.vni_of.len() {
                    if q != port && self.vni_of[q] == Some(vni) {
                        self.out_port(q, f, via.again());
                    }
                }
                let vteps = self.vteps.get(&vni).cloned().unwrap_or_default();
                for v in vteps {
                    self.encapsulate(now, vni, f, v, via.again());
                }
            }
        }
    }

    /// VXLAN from VTEP `from`; `gso` describes the inner frame (offsets from its start).
    fn vxlan_from_vtep(&mut self, now: Instant, from: Ipv4Addr, payload: &[u8], mut via: Via) {
        self.c.vxlan_rx += 1;
        let Ok(p) = vxlan::Packet::new_checked(payload) else {
            self.c.vxlan_malformed += 1;
            return;
        };
        let Ok(r) = vxlan::Repr::parse(&p) else {
            self.c.vxlan_bad_flags += 1;
            return;
        };
        if p.reserved_bits_set() {
            // RFC 7348 §5: reserved fields are ignored on receipt; counted all the same.
            self.c.vxlan_reserved_bits += 1;
        }
        let vni = r.vni;
        if !self.vni_of.contains(&Some(vni)) {
            self.c.vxlan_unknown_vni += 1;
            return;
        }
        if !self.vteps.get(&vni).is_some_and(|s| s.contains(&from)) {
            self.c.vxlan_unknown_vtep += 1;
            return;
        }
        let f = p.payload();
        if f.len() < 14 {
            self.c.vxlan_runt += 1;
            return;
        }
        let (dst, src) = (mac_at(f, 0), mac_at(f, 6));
        if src[0] & 1 == 0 && src != [0; 6] {
            self.learn(now, vni, src, Dest::Remote(from));
        }
        self.c.decapsulated += 1;
        if !via.gso().is_plain() {
            self.c.decap_gso += 1;
        }
        let known = if dst[0] & 1 == 0 {
            self.lookup(now, vni, dst)
        } else {
            None
        };
        match known {
            Some(Dest::Local(q)) => self.out_port(q, f, via),
            // Split horizon: what came from the underlay never goes back to it.
            Some(Dest::Remote(_)) => self.c.vxlan_to_remote_dropped += 1,
            None => {
                for q in 0..self.vni_of.len() {
                    if self.vni_of[q] == Some(vni) {
                        self.out_port(q, f, via.again());
                    }
                }
            }
        }
    }

    /// An offloaded frame from the underlay: VXLAN to this VTEP is taken here, its metadata
    /// moved to the inner frame; anything else is the router's (false). A super-frame in a
    /// UDP tunnel that is not VXLAN to us is counted and dropped (this VTEP forwards none).
    fn offloaded_from_underlay(
        &mut self,
        now: Instant,
        frame: &[u8],
        gso: &Gso,
        direct: &mut Direct<'_>,
    ) -> bool {
        match vxlan::offloaded_for(frame, gso, self.addr) {
            vxlan::Offloaded::Vxlan { from, at, inner } => {
                self.vxlan_from_vtep(now, from, &frame[at..], Via::Direct(direct, inner))
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
        let ageing = self.ageing;
        let before = self.fdb.len();
        let fdb_len = &mut self.fdb_len;
        self.fdb.retain(|(vni, _), e| {
            let keep = now.saturating_duration_since(e.seen) < ageing;
            if !keep {
                if let Some(n) = fdb_len.get_mut(vni) {
                    *n = n.saturating_sub(1);
                }
            }
            keep
        });
        self.c.fdb_aged += (before - self.fdb.len()) as u64;
        self.next_sweep = (!self.fdb.is_empty()).then(|| now + ageing / 2);
    }
}

impl Hook for Logic {
    fn local(&mut self, now: Instant, in_port: PortId, ip: &[u8]) -> HookVerdict {
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
        self.vxlan_from_vtep(now, u.src, u.payload, Via::Outbox);
        HookVerdict::Drop
    }
}

impl RouterProgram for Logic {
    fn role(&self) -> &'static str {
        "vswitch"
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The VM ports are the switch's; the underlay port is the router's.
    fn own_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        out: &mut Direct<'_>,
    ) -> bool {
        if port == self.underlay {
            return false;
        }
        self.frame_from_vm(now, port, frame, Via::Direct(out, Gso::NONE));
        true
    }

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
        out: &mut Direct<'_>,
    ) -> bool {
        if port == self.underlay {
            return self.offloaded_from_underlay(now, frame, gso, out);
        }
        self.frame_from_vm(now, port, frame, Via::Direct(out, *gso));
        true
    }

    fn poll_at(&self) -> Option<Instant> {
        self.next_sweep
    }

    fn poll(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["fdb", "vteps", "vms"]
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        let l = self;
        match table {
            "fdb" => {
                let mut v: Vec<_> = l.fdb.iter().collect();
                v.sort_by_key(|((vni, mac), _)| (*vni, *mac));
                Some(json!(v
                    .iter()
                    .map(|((vni, mac), e)| {
                        let (kind, at) = match e.dest {
                            Dest::Local(p) => ("port", l.port_names[p].clone()),
                            Dest::Remote(ip) => ("vtep", ip.to_string()),
                        };
                        json!({
                            "vni": vni,
                            "mac": mac_string(mac),
                            "where": kind,
                            "at": at,
                            "age_s": now.saturating_duration_since(e.seen).as_secs(),
                        })
                    })
                    .collect::<Vec<_>>()))
            }
            "vteps" => {
                let mut rows = Vec::new();
                for (vni, set) in &l.vteps {
                    for a in set {
                        rows.push(json!({"vni": vni, "vtep": a.to_string(), "source": "config"}));
                    }
                }
                Some(json!(rows))
            }
            "vms" => Some(json!(l
                .vni_of
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|vni| json!({"port": l.port_names[i], "vni": vni})))
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
