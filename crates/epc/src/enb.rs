//! d11-enb: the eNodeB. Its `radio` port faces the UEs (one layer-2 segment, UEs told apart by
//! MAC); its `epc` port has an address on the EPC network.
//!
//! - Signalling: a UE's [`Nas`] frame (EtherType [`s1::ETHERTYPE`]) goes to the MME as
//!   `UplinkNas` over UDP [`s1::PORT`], with the eNodeB's id for the UE; `DownlinkNas` comes back
//!   to the UE's MAC. `InitialContextSetupRequest` sets up the UE's bearer: the eNodeB takes a
//!   TEID of its own and answers with it.
//! - User plane: a UE's frame is wrapped in GTP-U with the SGW's TEID (the whole frame for an
//!   Ethernet PDU session, the IP packet for an IPv4 one) and sent to the SGW; a G-PDU for one
//!   of our TEIDs is unwrapped and sent to its UE on the radio.

use crate::gw::{self, ethernet_frame as frame, Datagram, Gtpu, PathCounters, Paths};
use crate::s1::{self, Nas, S1};
use crate::tunnel::Endpoint;
use d11_element::{counters, PortId};
use d11_router::program::{Direct, Outbox, RouterElement, RouterProgram};
use d11_router::{Hook, HookVerdict, RouteConfig, Router, RouterConfig};
use d11_wire::gso::Gso;
use d11_wire::gtpu::UDP_PORT as GTPU;
use d11_wire::gtpv2::message::PdnType;
use foldhash::HashMap;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Deserialize)]
pub struct EnbConfig {
    pub name: String,
    pub ports: Vec<d11_element::PortConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The MME's address.
    pub mme: Ipv4Addr,
    /// Seconds between GTP-U Echo Requests to each peer (0: none).
    #[serde(default = "default_echo")]
    pub echo_interval_s: u64,
    /// Bearers set up by configuration instead of signalling (benchmarks, tests of a single
    /// element).
    #[serde(default)]
    pub static_bearers: Vec<StaticBearer>,
}

/// A bearer from the configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct StaticBearer {
    pub ue_mac: String,
    #[serde(default)]
    pub pdn_type: PdnType,
    pub ue_ip: Ipv4Addr,
    pub enb_teid: u32,
    pub sgw: Ipv4Addr,
    pub sgw_teid: u32,
}

pub(crate) fn default_echo() -> u64 {
    60
}

counters! {
    pub struct EnbCounters {
        radio_frames,
        radio_signalling,
        radio_bad_signalling,
        radio_no_bearer,
        radio_not_ip,
        radio_bad_offload,
        uplink_packets,
        downlink_packets,
        downlink_no_bearer,
        uplink_super_frames,
        downlink_super_frames,
        s1_received,
        s1_bad,
        s1_unknown_ue,
        bearers_set_up,
        bearers_released,
        udp_errors,
    }
}

#[derive(Debug, Clone)]
struct Bearer {
    teid: u32,
    sgw_teid: u32,
    sgw: Ipv4Addr,
    pdn_type: PdnType,
    ue_ip: Ipv4Addr,
}

#[derive(Debug, Clone)]
struct UeCtx {
    id: u32,
    mac: [u8; 6],
    imsi: Option<String>,
    bearer: Option<Bearer>,
}

/// The eNodeB's protocol logic, as the router's hook.
pub struct EnbLogic {
    radio: PortId,
    radio_mac: [u8; 6],
    addr: Ipv4Addr,
    mme: Ipv4Addr,
    ues: HashMap<[u8; 6], UeCtx>,
    // (Keys we gave out; `ues`, keyed by what the radio sends, keeps std's SipHash.)
    by_id: HashMap<u32, [u8; 6]>,
    by_teid: HashMap<u32, [u8; 6]>,
    next_id: u32,
    pub gtpu: Endpoint,
    paths: Paths,
    /// S1 and GTP-U datagrams, and frames to the UEs on the radio port.
    out: Outbox,
    reply: Vec<u8>,
    /// Where super-frames are cut, packed and merged (see [`crate::superframe`]).
    cut: Vec<u8>,
    packed: Vec<u8>,
    pub c: EnbCounters,
    pub pc: PathCounters,
}

/// The eNodeB: the radio port is its own; the epc port is a router's.
pub type Enb = RouterElement<EnbLogic>;

impl EnbLogic {
    pub fn new(cfg: &EnbConfig, recovery: u8) -> anyhow::Result<Enb> {
        let radio = cfg
            .ports
            .iter()
            .position(|p| p.name == "radio")
            .ok_or_else(|| anyhow::anyhow!("an eNodeB needs a port named radio"))?;
        let epc = cfg
            .ports
            .iter()
            .find(|p| p.name != "radio" && !p.addresses.is_empty())
            .ok_or_else(|| anyhow::anyhow!("an eNodeB needs a port with an address (epc)"))?;
        let addr = epc.addresses[0].addr();
        let radio_mac = cfg.ports[radio].mac_for(&cfg.name)?;
        let router = Router::new(&RouterConfig {
            name: cfg.name.clone(),
            ports: cfg.ports.clone(),
            routes: cfg.routes.clone(),
            icmp_limit: Default::default(),
            bgp: None,
        })?;
        let mut enb = RouterElement::new(
            router,
            EnbLogic {
                radio,
                radio_mac,
                addr,
                mme: cfg.mme,
                ues: HashMap::default(),
                by_id: Default::default(),
                by_teid: Default::default(),
                next_id: 1,
                gtpu: Endpoint::new(addr, recovery, 0x0e00_0001),
                paths: Paths::new(Duration::from_secs(cfg.echo_interval_s)),
                out: Outbox::default(),
                reply: Vec::new(),
                cut: Vec::new(),
                packed: Vec::new(),
                c: EnbCounters::default(),
                pc: PathCounters::default(),
            },
        );
        for b in &cfg.static_bearers {
            let mac = d11_element::parse_mac(&b.ue_mac)?;
            let l = &mut enb.logic;
            let id = l.next_id;
            l.next_id += 1;
            l.gtpu.add(b.enb_teid, b.sgw_teid, b.sgw);
            l.by_teid.insert(b.enb_teid, mac);
            l.by_id.insert(id, mac);
            l.ues.insert(
                mac,
                UeCtx {
                    id,
                    mac,
                    imsi: None,
                    bearer: Some(Bearer {
                        teid: b.enb_teid,
                        sgw_teid: b.sgw_teid,
                        sgw: b.sgw,
                        pdn_type: b.pdn_type,
                        ue_ip: b.ue_ip,
                    }),
                },
            );
        }
        Ok(enb)
    }
}

impl EnbLogic {
    fn send_to_mme(&mut self, m: &S1) {
        self.out.datagrams.push(Datagram {
            src: self.addr,
            dst: self.mme,
            sport: s1::PORT,
            dport: s1::PORT,
            payload: serde_json::to_vec(m).unwrap_or_default(),
        });
    }

    fn radio_frame(&mut self, now: Instant, f: &[u8], out: &mut Direct<'_>) {
        self.c.radio_frames += 1;
        if f.len() < 14 || f[6] & 1 != 0 {
            self.c.radio_bad_signalling += 1;
            return;
        }
        let dst: [u8; 6] = f[0..6].try_into().unwrap_or_default();
        let src: [u8; 6] = f[6..12].try_into().unwrap_or_default();
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        if ethertype == s1::ETHERTYPE {
            if dst != self.radio_mac && dst != [0xff; 6] {
                return;
            }
            self.c.radio_signalling += 1;
            // Signalling JSON ends where the padding (zeros) starts.
            let body = &f[14..];
            let end = body.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            let Ok(nas) = serde_json::from_slice::<Nas>(&body[..end]) else {
                self.c.radio_bad_signalling += 1;
                return;
            };
            let next = &mut self.next_id;
            let ctx = self.ues.entry(src).or_insert_with(|| {
                let id = *next;
                *next = next.wrapping_add(1).max(1);
                UeCtx {
                    id,
                    mac: src,
                    imsi: None,
                    bearer: None,
                }
            });
            if let Nas::AttachRequest { imsi, .. } = &nas {
                ctx.imsi = Some(imsi.clone());
            }
            let id = ctx.id;
            self.by_id.insert(id, src);
            self.send_to_mme(&S1::UplinkNas { enb_ue_id: id, nas });
            return;
        }
        let Some(b) = self.ues.get(&src).and_then(|u| u.bearer.clone()) else {
            self.c.radio_no_bearer += 1;
            return;
        };
        let tpdu = match b.pdn_type {
            PdnType::Ethernet => f,
            PdnType::Ipv4 => {
                if ethertype != 0x0800 || dst != self.radio_mac {
                    self.c.radio_not_ip += 1;
                    return;
                }
                &f[14..]
            }
        };
        // Header and T-PDU go out from where they lie, copied once into the frame sent.
        if let Some((header, to)) = self.gtpu.g_pdu_header(b.teid, tpdu.len()) {
            self.c.uplink_packets += 1;
            out.udp(
                now,
                (self.addr, to),
                (GTPU, GTPU),
                &[&header, tpdu],
                (0, &Gso::NONE),
            );
        }
    }

    /// An offloaded frame from the radio: a UE's TCP super-frame goes up its tunnel as one
    /// UDP super-frame of G-PDUs (see [`crate::superframe`]), each G-PDU the one
    /// [`radio_frame`](Self::radio_frame) would send for that segment. Anything else is cut
    /// and taken frame by frame.
    fn radio_frame_gso(&mut self, now: Instant, f: &mut [u8], g: &Gso, out: &mut Direct<'_>) {
        self.cut.resize(crate::superframe::CUT_LEN, 0);
        if g.gso_type & !d11_wire::gso::GSO_ECN == d11_wire::gso::GSO_TCPV4
            && self.pack_uplink(now, f, g, out)
        {
            return;
        }
        let mut cut = std::mem::take(&mut self.cut);
        if d11_wire::gso::segment(f, g, &mut cut, |s| self.radio_frame(now, s, out)).is_err() {
            self.c.radio_frames += 1;
            self.c.radio_bad_offload += 1;
        }
        self.cut = cut;
    }

    /// [`radio_frame_gso`](Self::radio_frame_gso) for a TCP super-frame from a UE with a
    /// bearer: false (nothing sent or counted) if it cannot go as one.
    fn pack_uplink(&mut self, now: Instant, f: &[u8], g: &Gso, out: &mut Direct<'_>) -> bool {
        if f.len() < 14 || f[6] & 1 != 0 {
            return false;
        }
        let src: [u8; 6] = f[6..12].try_into().unwrap_or_default();
        let Some(b) = self.ues.get(&src).and_then(|u| u.bearer.as_ref()) else {
            return false;
        };
        let strip = match b.pdn_type {
            PdnType::Ethernet => false,
            PdnType::Ipv4 => {
                if f[12..14] != [8, 0] || f[0..6] != self.radio_mac {
                    return false;
                }
                true
            }
        };
        let Some((size, n, to)) = crate::superframe::pack_for(
            &mut self.gtpu,
            b.teid,
            (f, g),
            &mut self.cut,
            strip,
            &mut self.packed,
        ) else {
            return false;
        };
        self.c.radio_frames += n;
        self.c.uplink_packets += n;
        self.c.uplink_super_frames += 1;
        out.udp_segments(now, (self.addr, to), (GTPU, GTPU), &self.packed, size);
        true
    }

    /// A UDP super-frame of G-PDUs for one of our tunnels (see [`crate::superframe`]): its
    /// T-PDUs go to the UE merged back into a TCP super-frame where they were cut from one,
    /// else one by one, as [`gtpu_message`](Self::gtpu_message) sends each. False for
    /// anything else (which is cut and taken G-PDU by G-PDU).
    fn unpack_downlink(&mut self, frame: &mut [u8], g: &Gso, out: &mut Direct<'_>) -> bool {
        let Some(pdus) = crate::superframe::g_pdus(frame, g) else {
            return false;
        };
        if pdus.dst != self.addr {
            return false;
        }
        let Some(teid) = pdus.one_tunnel(&self.gtpu) else {
            return false;
        };
        let Some(ctx) = self.by_teid.get(&teid).and_then(|m| self.ues.get(m)) else {
            return false;
        };
        let ethernet = matches!(
            ctx.bearer.as_ref().map(|b| b.pdn_type),
            Some(PdnType::Ethernet)
        );
        self.c.downlink_packets += pdus.deliver(&mut self.gtpu, teid);
        const H: usize = d11_wire::gtpu::HEADER_LEN;
        let mut eth = [0u8; 14];
        gw::ethernet_header(&mut eth, ctx.mac, self.radio_mac, 0x0800);
        let merged = pdus.merge((!ethernet).then_some(eth), &mut self.packed);
        match merged {
            Some(m) => {
                self.c.downlink_super_frames += 1;
                out.frame(self.radio, &self.packed, &m);
            }
            None => {
                let mac = ctx.mac;
                for pdu in pdus.iter() {
                    let tpdu = &pdu[H..];
                    if ethernet {
                        out.frame(self.radio, tpdu, &Gso::NONE);
                    } else {
                        self.packed.clear();
                        gw::ethernet_frame_into(
                            &mut self.packed,
                            mac,
                            self.radio_mac,
                            0x0800,
                            tpdu,
                        );
                        out.frame(self.radio, &self.packed, &Gso::NONE);
                    }
                }
            }
        }
        true
    }

    fn s1_message(&mut self, now: Instant, payload: &[u8]) {
        self.c.s1_received += 1;
        let Ok(m) = serde_json::from_slice::<S1>(payload) else {
            self.c.s1_bad += 1;
            return;
        };
        match m {
            S1::DownlinkNas { enb_ue_id, nas } => {
                let Some(mac) = self.by_id.get(&enb_ue_id).copied() else {
                    self.c.s1_unknown_ue += 1;
                    return;
                };
                let body = serde_json::to_vec(&nas).unwrap_or_default();
                let f = frame(mac, self.radio_mac, s1::ETHERTYPE, &body);
                self.out.frames.push((self.radio, f));
            }
            S1::InitialContextSetupRequest {
                enb_ue_id,
                mme_ue_id,
                sgw_teid,
                sgw_addr,
                pdn_type,
                ue_ip,
            } => {
                let Some(mac) = self.by_id.get(&enb_ue_id).copied() else {
                    self.c.s1_unknown_ue += 1;
                    return;
                };
                let Some(ctx) = self.ues.get_mut(&mac) else {
                    return;
                };
                if let Some(old) = ctx.bearer.take() {
                    self.gtpu.remove(old.teid);
                    self.by_teid.remove(&old.teid);
                }
                let teid = self.gtpu.allocate_teid();
                self.gtpu.add(teid, sgw_teid, sgw_addr);
                self.by_teid.insert(teid, mac);
                ctx.bearer = Some(Bearer {
                    teid,
                    sgw_teid,
                    sgw: sgw_addr,
                    pdn_type,
                    ue_ip,
                });
                self.paths.watch(now, self.addr, sgw_addr);
                self.c.bearers_set_up += 1;
                let addr = self.addr;
                self.send_to_mme(&S1::InitialContextSetupResponse {
                    enb_ue_id,
                    mme_ue_id,
                    enb_teid: teid,
                    enb_addr: addr,
                });
            }
            S1::UeContextReleaseCommand { enb_ue_id } => {
                if let Some(mac) = self.by_id.remove(&enb_ue_id) {
                    if let Some(ctx) = self.ues.remove(&mac) {
                        if let Some(b) = ctx.bearer {
                            self.gtpu.remove(b.teid);
                            self.by_teid.remove(&b.teid);
                            self.c.bearers_released += 1;
                        }
                    }
                }
                self.send_to_mme(&S1::UeContextReleaseComplete { enb_ue_id });
            }
            _ => self.c.s1_bad += 1,
        }
    }

    fn gtpu_message(&mut self, now: Instant, from: Ipv4Addr, payload: &[u8]) {
        let io = gw::GtpuIo {
            paths: &mut self.paths,
            out: &mut self.out.datagrams,
            c: &mut self.pc,
            reply: &mut self.reply,
        };
        let Gtpu::Deliver { local_teid, tpdu } =
            gw::receive_gtpu(&mut self.gtpu, payload, now, self.addr, from, io)
        else {
            return;
        };
        let Some(ctx) = self.by_teid.get(&local_teid).and_then(|m| self.ues.get(m)) else {
            self.c.downlink_no_bearer += 1;
            return;
        };
        let mut f = self.out.buffer();
        match ctx.bearer.as_ref().map(|b| b.pdn_type) {
            Some(PdnType::Ethernet) => f.extend_from_slice(tpdu),
            _ => gw::ethernet_frame_into(&mut f, ctx.mac, self.radio_mac, 0x0800, tpdu),
        }
        self.c.downlink_packets += 1;
        self.out.frames.push((self.radio, f));
    }
}

impl Hook for EnbLogic {
    fn local(&mut self, now: Instant, _in_port: PortId, ip: &[u8]) -> HookVerdict {
        if ip[9] != 17 {
            return HookVerdict::Continue;
        }
        let u = match gw::parse_udp(ip) {
            Ok(u) => u,
            Err(_) => {
                self.c.udp_errors += 1;
                return HookVerdict::Drop;
            }
        };
        match u.dport {
            GTPU => self.gtpu_message(now, u.src, u.payload),
            s1::PORT if u.src == self.mme => self.s1_message(now, u.payload),
            _ => return HookVerdict::Continue,
        }
        HookVerdict::Drop
    }
}

impl RouterProgram for EnbLogic {
    fn role(&self) -> &'static str {
        "enb"
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The radio port is the eNodeB's own (the UEs' frames and signalling).
    fn own_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        out: &mut Direct<'_>,
    ) -> bool {
        if port != self.radio {
            return false;
        }
        self.radio_frame(now, frame, out);
        true
    }

    /// The radio's super-frames go up as UDP super-frames of G-PDUs; those from the SGW come
    /// down merged. Every other offloaded frame is cut into plain ones.
    fn takes_gso(&self) -> bool {
        true
    }

    fn takes_udp_segments(&self) -> bool {
        true
    }

    fn routes_gso(&self, _port: PortId, _gso: &Gso) -> bool {
        false
    }

    fn own_frame_gso(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        out: &mut Direct<'_>,
    ) -> bool {
        if port == self.radio {
            self.radio_frame_gso(now, frame, gso, out);
            return true;
        }
        self.unpack_downlink(frame, gso, out)
    }

    fn poll_at(&self) -> Option<Instant> {
        self.paths.poll_at()
    }

    fn poll(&mut self, now: Instant) {
        self.paths
            .poll_echo(now, &mut self.gtpu, &mut self.out.datagrams);
    }

    fn tables(&self) -> &'static [&'static str] {
        &["bearers", "paths"]
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        match table {
            "bearers" => {
                let mut v: Vec<&UeCtx> = self.ues.values().collect();
                v.sort_by_key(|u| u.id);
                Some(json!(v
                    .iter()
                    .map(|u| {
                        let t = u.bearer.as_ref().and_then(|b| self.gtpu.get(b.teid));
                        json!({
                            "enb_ue_id": u.id,
                            "ue_mac": d11_element::mac_string(&u.mac),
                            "imsi": u.imsi,
                            "ue_ip": u.bearer.as_ref().map(|b| b.ue_ip.to_string()),
                            "pdn_type": u.bearer.as_ref().map(|b| b.pdn_type),
                            "enb_teid": u.bearer.as_ref().map(|b| b.teid),
                            "sgw_teid": u.bearer.as_ref().map(|b| b.sgw_teid),
                            "sgw": u.bearer.as_ref().map(|b| b.sgw.to_string()),
                            "uplink_packets": t.map(|t| t.tx_packets),
                            "uplink_bytes": t.map(|t| t.tx_bytes),
                            "downlink_packets": t.map(|t| t.rx_packets),
                            "downlink_bytes": t.map(|t| t.rx_bytes),
                        })
                    })
                    .collect::<Vec<_>>()))
            }
            "paths" => Some(self.paths.view(now)),
            _ => None,
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.c.for_each(out);
        self.pc.for_each(out);
        gw::endpoint_counters(&self.gtpu, "gtpu_", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{drive_frames, gpdu, udp_frame};

    const UE: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
    const SGW: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 3], Ipv4Addr::new(172, 16, 1, 3));

    /// An eNodeB on 172.16.1.2 with one bearer (Ethernet PDU) for UE: ours 100, the SGW's 200.
    fn enb() -> Enb {
        let cfg: EnbConfig = serde_json::from_value(json!({
            "name": "enb",
            "mme": "172.16.1.5",
            "echo_interval_s": 0,
            "ports": [
                {"name": "radio"},
                {"name": "epc", "addresses": ["172.16.1.2/24"]},
            ],
            "static_bearers": [{"ue_mac": "02:00:00:00:00:10", "pdn_type": "ethernet",
                "ue_ip": "10.45.0.2", "enb_teid": 100, "sgw": "172.16.1.3", "sgw_teid": 200}],
        }))
        .unwrap();
        EnbLogic::new(&cfg, 1).unwrap()
    }

    /// A frame from UE on the radio: IPv4 to 203.0.113.10, `n` octets of it.
    fn from_ue(e: &Enb, n: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&e.router.port_mac(0).unwrap().0);
        f.extend_from_slice(&UE);
        f.extend_from_slice(&[8, 0]);
        let mut ip = vec![0u8; n];
        d11_wire::ip::write_header(
            &mut ip,
            n,
            64,
            17,
            Ipv4Addr::new(10, 45, 0, 2),
            Ipv4Addr::new(203, 0, 113, 10),
        );
        for (i, b) in ip[20..].iter_mut().enumerate() {
            *b = (i * 13 % 251) as u8;
        }
        f.extend_from_slice(&ip);
        f
    }

    /// The SGW's G-PDU for our TEID 100 carrying `frame`, to our epc port's `mac`.
    fn from_sgw(mac: [u8; 6], frame: &[u8]) -> Vec<u8> {
        udp_frame(
            mac,
            SGW,
            Ipv4Addr::new(172, 16, 1, 2),
            GTPU,
            &gpdu(100, frame),
        )
    }

    #[test]
    fn uplink_frames_leave_in_g_pdus_and_downlink_g_pdus_reach_the_radio() {
        let mut e = enb();
        let up = from_ue(&e, 1400);
        let out = drive_frames(&mut e, 0, up.clone(), &[SGW]);
        let [(1, f)] = out.as_slice() else {
            panic!("{out:?}")
        };
        // A checked datagram from our address to the SGW's GTP-U port, the whole frame
        // (Ethernet PDU) behind the SGW's TEID.
        let u = gw::parse_udp(&f[14..]).unwrap();
        assert_eq!((u.src, u.dst), (Ipv4Addr::new(172, 16, 1, 2), SGW.1));
        assert_eq!((u.sport, u.dport), (GTPU, GTPU));
        assert_ne!(u16::from_be_bytes([f[40], f[41]]), 0, "a UDP checksum");
        assert_eq!(u.payload, gpdu(200, &up).as_slice());
        assert_eq!(e.logic.c.uplink_packets, 1);
        assert_eq!(e.logic.gtpu.get(100).unwrap().tx_packets, 1);
        // Back: the SGW's G-PDU for our TEID becomes the frame on the radio.
        let epc = e.router.port_mac(1).unwrap().0;
        let down = from_sgw(epc, &up);
        let out = drive_frames(&mut e, 1, down, &[SGW]);
        assert_eq!(out, [(0, up)]);
        assert_eq!(e.logic.c.downlink_packets, 1);
    }

    #[test]
    fn forwarding_allocates_nothing_once_warm() {
        let mut e = enb();
        let up = from_ue(&e, 1400);
        let epc = e.router.port_mac(1).unwrap().0;
        let down = from_sgw(epc, &up);
        assert_eq!(drive_frames(&mut e, 0, up.clone(), &[SGW]).len(), 1);
        let (allocs, sent) = d11_element::alloc_count::allocations_forwarding(
            &mut e,
            Instant::now(),
            &[(0, up), (1, down)],
            1000,
        );
        assert_eq!(sent, 2000);
        assert_eq!(allocs, 0, "heap allocations for 2000 frames");
    }
}
