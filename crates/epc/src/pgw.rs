//! d11-pgw: the PDN gateway. Port `s5` (GTPv2-C and GTP-U from the SGW) and port `sgi` (towards
//! the carrier NAT), and a third, virtual port: the UEs' side, 10.45.0.1/16, whose "wire" is the
//! set of S5 tunnels.
//!
//! The router sees the UEs' side as an ordinary port, so everything a router does holds there:
//! it answers the UEs' ARP for their gateway 10.45.0.1 (Ethernet PDU sessions: the ARP rides
//! the tunnel), forwards with TTL and checksum, sends ICMP errors (fragmentation needed when a
//! packet exceeds the tunnel MTU), and resolves UEs by ARP. What the router sends to that port is
//! put in the right UE's tunnel (by destination address, or ARP target); what a tunnel delivers
//! is handed to the router as received on that port.
//!
//! - Ethernet PDU sessions carry the UE's whole frame; IPv4 PDU sessions the IP packet, for
//!   which the PGW answers the router's ARP itself with a MAC made from the UE's address.
//! - A UE may send only from its own address (anything else is counted and dropped).
//! - TCP SYNs to and from UEs get their MSS clamped to the tunnel MTU (RFC 6691 arithmetic).

use crate::gw::{self, Datagram, Gtpu, PathCounters, Paths};
use crate::mss::clamp_mss;
use crate::pool::Pool;
use crate::tunnel::Endpoint;
use d11_element::{counters, derive_mac, PortConfig, PortId};
use d11_router::program::{Direct, Outbox, RouterElement, RouterProgram};
use d11_router::{Encap, Hook, HookVerdict, RouteConfig, Router, RouterConfig};
use d11_wire::gso::{Gso, GSO_ECN, GSO_TCPV4};
use d11_wire::gtpu::UDP_PORT as GTPU;
use d11_wire::gtpv2::message::{
    self as gtpc, CreateSessionRequest, CreateSessionResponse, DeleteSessionResponse, EchoResponse,
    Message, PdnType,
};
use d11_wire::gtpv2::{cause, iface, msg};
use d11_wire::gtpv2::{value::Fteid, Packet};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
// (Keys are ours: TEIDs and UE addresses we gave out.)
use foldhash::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const GTPC: u16 = d11_wire::gtpv2::UDP_PORT;

#[derive(Debug, Clone, Deserialize)]
pub struct PgwConfig {
    pub name: String,
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The UE pool; its first address is the UEs' gateway (the PGW itself).
    #[serde(default = "default_pool")]
    pub ue_pool: Ipv4Net,
    #[serde(default = "default_s5")]
    pub s5_port: String,
    #[serde(default = "crate::enb::default_echo")]
    pub echo_interval_s: u64,
    /// Sessions set up by configuration instead of GTPv2-C (benchmarks, tests of a single
    /// element).
    #[serde(default)]
    pub static_sessions: Vec<StaticSession>,
}

/// A session from the configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct StaticSession {
    pub imsi: String,
    pub ue_ip: Ipv4Addr,
    #[serde(default)]
    pub pdn_type: PdnType,
    pub s5u_teid: u32,
    pub sgw: Ipv4Addr,
    pub sgw_teid: u32,
}

fn default_pool() -> Ipv4Net {
    "10.45.0.0/16".parse().expect("constant")
}
fn default_s5() -> String {
    "s5".into()
}

/// The name of the virtual port on the UEs' side.
pub const UE_PORT: &str = "ues";

counters! {
    pub struct PgwCounters {
        gtpc_received,
        gtpc_malformed,
        gtpc_unexpected,
        gtpc_unknown_teid,
        sessions_created,
        sessions_refused,
        sessions_deleted,
        pool_exhausted,
        uplink_packets,
        uplink_spoofed,
        uplink_not_ip,
        downlink_packets,
        downlink_no_session,
        mss_clamped,
        decapsulated_in_place,
        encapsulated_at_once,
        uplink_super_frames,
        downlink_super_frames,
        udp_errors,
    }
}

#[derive(Debug, Clone)]
struct Session {
    imsi: String,
    ue_ip: Ipv4Addr,
    pdn_type: PdnType,
    ebi: u8,
    s5c_teid: u32,
    sgw_c: Fteid,
    s5u_teid: u32,
    sgw_u: Fteid,
}

pub struct PgwLogic {
    s5_addr: Ipv4Addr,
    recovery: u8,
    ue_port: PortId,
    ue_mac: [u8; 6],
    mss: u16,
    pool: Pool,
    sessions: HashMap<u32, Session>,
    by_ip: HashMap<Ipv4Addr, u32>,
    by_s5u: HashMap<u32, u32>,
    next_teid: u32,
    pub s5u: Endpoint,
    paths: Paths,
    /// GTP datagrams; frames from the tunnels for the router, as received on the UEs' port
    /// (inject).
    out: Outbox,
    reply: Vec<u8>,
    /// Where super-frames are cut (see [`crate::superframe`]).
    cut: Vec<u8>,
    pub c: PgwCounters,
    pub pc: PathCounters,
}

/// The PGW: a router whose UE port's wire is the GTP-U tunnels.
pub type Pgw = RouterElement<PgwLogic>;

/// The MAC the PGW answers ARP with for an IPv4 PDU session's UE (which has none).
/// Why a T-PDU from a UE does not go on.
enum Refused {
    NotIp,
    Spoofed,
}

/// Whether a T-PDU that session `s`'s tunnel brought may go on: an IPv4 packet (or ARP, in an
/// Ethernet PDU) from the UE's own address.
fn uplink_check(s: &Session, tpdu: &[u8]) -> Result<(), Refused> {
    let ue = s.ue_ip.octets();
    match s.pdn_type {
        PdnType::Ethernet => {
            if tpdu.len() < 14 {
                return Err(Refused::NotIp);
            }
            let src_ok = match u16::from_be_bytes([tpdu[12], tpdu[13]]) {
                0x0800 => tpdu.len() >= 34 && tpdu[26..30] == ue,
                0x0806 => tpdu.len() >= 42 && tpdu[28..32] == ue,
                _ => return Err(Refused::NotIp),
            };
            if src_ok {
                Ok(())
            } else {
                Err(Refused::Spoofed)
            }
        }
        PdnType::Ipv4 => {
            if tpdu.len() < 20 || tpdu[0] >> 4 != 4 {
                Err(Refused::NotIp)
            } else if tpdu[12..16] != ue {
                Err(Refused::Spoofed)
            } else {
                Ok(())
            }
        }
    }
}

fn ipv4_session_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0xd2, o[0], o[1], o[2], o[3]]
}

impl PgwLogic {
    pub fn new(cfg: &PgwConfig, recovery: u8) -> anyhow::Result<Pgw> {
        let s5_addr = cfg
            .ports
            .iter()
            .find(|p| p.name == cfg.s5_port)
            .and_then(|p| p.addresses.first())
            .map(|a| a.addr())
            .ok_or_else(|| {
                anyhow::anyhow!("the PGW needs a port {:?} with an address", cfg.s5_port)
            })?;
        let net = cfg.ue_pool.trunc();
        let gateway = Ipv4Addr::from(u32::from(net.addr()) + 1);
        let pool = Pool::new(net.addr(), net.prefix_len(), gateway)
            .ok_or_else(|| anyhow::anyhow!("ue_pool {}: a prefix of /8 to /30", cfg.ue_pool))?;
        let mtu = PdnType::Ethernet.ue_mtu();
        let mut ports = cfg.ports.clone();
        ports.push(PortConfig {
            name: UE_PORT.into(),
            mac: None,
            addresses: vec![Ipv4Net::new(gateway, net.prefix_len())?],
            mtu: Some(mtu),
            offload: false,
        });
        let router = Router::new(&RouterConfig {
            name: cfg.name.clone(),
            ports,
            routes: cfg.routes.clone(),
            icmp_limit: Default::default(),
            bgp: None,
        })?;
        let ue_port = router
            .port_index(UE_PORT)
            .ok_or_else(|| anyhow::anyhow!("no UE port"))?;
        let mut pgw = RouterElement::new(
            router,
            PgwLogic {
                s5_addr,
                recovery,
                ue_port,
                ue_mac: derive_mac(&cfg.name, UE_PORT),
                mss: mtu - 40,
                pool,
                sessions: HashMap::default(),
                by_ip: HashMap::default(),
                by_s5u: HashMap::default(),
                next_teid: 0x7c00_0001,
                s5u: Endpoint::new(s5_addr, recovery, 0x7700_0001),
                paths: Paths::new(Duration::from_secs(cfg.echo_interval_s)),
                out: Outbox::default(),
                reply: Vec::new(),
                cut: Vec::new(),
                c: PgwCounters::default(),
                pc: PathCounters::default(),
            },
        );
        for st in &cfg.static_sessions {
            let l = &mut pgw.logic;
            if l.pool.allocate(&st.imsi, Some(st.ue_ip)) != Some(st.ue_ip) {
                anyhow::bail!(
                    "static session {}: {} is not a free address of the pool",
                    st.imsi,
                    st.ue_ip
                );
            }
            let s5c = l.teid();
            l.s5u.add(st.s5u_teid, st.sgw_teid, st.sgw);
            let sgw_u = Fteid {
                interface: iface::S5S8U_SGW,
                teid: st.sgw_teid,
                ipv4: st.sgw,
            };
            l.sessions.insert(
                s5c,
                Session {
                    imsi: st.imsi.clone(),
                    ue_ip: st.ue_ip,
                    pdn_type: st.pdn_type,
                    ebi: gtpc::DEFAULT_EBI,
                    s5c_teid: s5c,
                    sgw_c: Fteid {
                        interface: iface::S5S8C_SGW,
                        teid: 0,
                        ipv4: st.sgw,
                    },
                    s5u_teid: st.s5u_teid,
                    sgw_u,
                },
            );
            l.by_ip.insert(st.ue_ip, s5c);
            l.by_s5u.insert(st.s5u_teid, s5c);
        }
        Ok(pgw)
    }
}

impl PgwLogic {
    fn teid(&mut self) -> u32 {
        loop {
            let t = self.next_teid;
            self.next_teid = self.next_teid.wrapping_add(1).max(1);
            if !self.sessions.contains_key(&t) {
                return t;
            }
        }
    }

    fn send_c(&mut self, dst: Ipv4Addr, payload: Vec<u8>) {
        self.out.datagrams.push(Datagram {
            src: self.s5_addr,
            dst,
            sport: GTPC,
            dport: GTPC,
            payload,
        });
    }

    fn remove(&mut self, s5c: u32) -> Option<Session> {
        let s = self.sessions.remove(&s5c)?;
        self.by_ip.remove(&s.ue_ip);
        self.by_s5u.remove(&s.s5u_teid);
        self.s5u.remove(s.s5u_teid);
        self.pool.release(&s.imsi);
        Some(s)
    }

    fn gtpc(&mut self, now: Instant, from: Ipv4Addr, payload: &[u8]) {
        self.c.gtpc_received += 1;
        let Ok(p) = Packet::new_checked(payload) else {
            self.c.gtpc_malformed += 1;
            return;
        };
        let h = p.header();
        match h.message_type {
            msg::ECHO_REQUEST => {
                let r = EchoResponse {
                    recovery: Some(self.recovery),
                }
                .emit(0, h.sequence);
                self.send_c(from, r);
            }
            msg::ECHO_RESPONSE => {}
            msg::CREATE_SESSION_REQUEST => {
                let req = match CreateSessionRequest::parse(&p) {
                    Ok(r) => r,
                    Err(gtpc::Refused(c)) => {
                        self.c.sessions_refused += 1;
                        let r = CreateSessionResponse::refused(c, gtpc::DEFAULT_EBI)
                            .emit(0, h.sequence);
                        self.send_c(from, r);
                        return;
                    }
                };
                let Some(sgw_u) = req.s5u_sgw else {
                    self.c.sessions_refused += 1;
                    let r = CreateSessionResponse::refused(cause::MANDATORY_IE_MISSING, req.ebi)
                        .emit(req.sender.teid, h.sequence);
                    self.send_c(from, r);
                    return;
                };
                // A retransmission of a request we answered: answer the same again.
                let existing = self
                    .sessions
                    .values()
                    .find(|s| s.imsi == req.imsi && s.sgw_c == req.sender)
                    .map(|s| s.s5c_teid);
                let s5c = match existing {
                    Some(t) => t,
                    None => {
                        // A new session of the same subscriber replaces the old one.
                        let old: Vec<u32> = self
                            .sessions
                            .values()
                            .filter(|s| s.imsi == req.imsi)
                            .map(|s| s.s5c_teid)
                            .collect();
                        for t in old {
                            self.remove(t);
                        }
                        let fixed = (!req.paa.is_unspecified()).then_some(req.paa);
                        let Some(ip) = self.pool.allocate(&req.imsi, fixed) else {
                            self.c.pool_exhausted += 1;
                            self.c.sessions_refused += 1;
                            let r = CreateSessionResponse::refused(
                                cause::ALL_DYNAMIC_ADDRESSES_OCCUPIED,
                                req.ebi,
                            )
                            .emit(req.sender.teid, h.sequence);
                            self.send_c(from, r);
                            return;
                        };
                        let s5c = self.teid();
                        let s5u = self.s5u.allocate_teid();
                        self.s5u.add(s5u, sgw_u.teid, sgw_u.ipv4);
                        self.paths.watch(now, self.s5_addr, sgw_u.ipv4);
                        self.sessions.insert(
                            s5c,
                            Session {
                                imsi: req.imsi.clone(),
                                ue_ip: ip,
                                pdn_type: req.pdn_type,
                                ebi: req.ebi,
                                s5c_teid: s5c,
                                sgw_c: req.sender,
                                s5u_teid: s5u,
                                sgw_u,
                            },
                        );
                        self.by_ip.insert(ip, s5c);
                        self.by_s5u.insert(s5u, s5c);
                        self.c.sessions_created += 1;
                        s5c
                    }
                };
                let s = &self.sessions[&s5c];
                let r = CreateSessionResponse {
                    cause: cause::REQUEST_ACCEPTED,
                    sender: Some(Fteid {
                        interface: iface::S5S8C_PGW,
                        teid: s.s5c_teid,
                        ipv4: self.s5_addr,
                    }),
                    pgw_c: None,
                    paa: Some(s.ue_ip),
                    ebi: s.ebi,
                    s1u_sgw: None,
                    s5u_pgw: Some(Fteid {
                        interface: iface::S5S8U_PGW,
                        teid: s.s5u_teid,
                        ipv4: self.s5_addr,
                    }),
                    recovery: Some(self.recovery),
                }
                .emit(s.sgw_c.teid, h.sequence);
                self.send_c(from, r);
            }
            msg::DELETE_SESSION_REQUEST => {
                let teid = h.teid.unwrap_or(0);
                match self.remove(teid) {
                    Some(s) => {
                        self.c.sessions_deleted += 1;
                        let r = DeleteSessionResponse {
                            cause: cause::REQUEST_ACCEPTED,
                        }
                        .emit(s.sgw_c.teid, h.sequence);
                        self.send_c(from, r);
                    }
                    None => {
                        self.c.gtpc_unknown_teid += 1;
                        let r = DeleteSessionResponse {
                            cause: cause::CONTEXT_NOT_FOUND,
                        }
                        .emit(0, h.sequence);
                        self.send_c(from, r);
                    }
                }
            }
            _ => self.c.gtpc_unexpected += 1,
        }
    }

    fn gtpu(&mut self, now: Instant, from: Ipv4Addr, payload: &[u8]) {
        let io = gw::GtpuIo {
            paths: &mut self.paths,
            out: &mut self.out.datagrams,
            c: &mut self.pc,
            reply: &mut self.reply,
        };
        let Gtpu::Deliver { local_teid, tpdu } =
            gw::receive_gtpu(&mut self.s5u, payload, now, self.s5_addr, from, io)
        else {
            return;
        };
        let Some(s) = self
            .by_s5u
            .get(&local_teid)
            .and_then(|t| self.sessions.get(t))
        else {
            return;
        };
        match uplink_check(s, tpdu) {
            Err(Refused::NotIp) => self.c.uplink_not_ip += 1,
            Err(Refused::Spoofed) => self.c.uplink_spoofed += 1,
            Ok(()) => {
                self.c.uplink_packets += 1;
                let mut f = self.out.buffer();
                match s.pdn_type {
                    PdnType::Ethernet => f.extend_from_slice(tpdu),
                    PdnType::Ipv4 => {
                        let from = ipv4_session_mac(s.ue_ip);
                        gw::ethernet_frame_into(&mut f, self.ue_mac, from, 0x0800, tpdu);
                    }
                }
                self.out.inject.push(f);
            }
        }
    }

    /// A G-PDU from the SGW taken out of its tunnel where it lies, rather than copied into a
    /// frame for the router: for an IPv4 session the Ethernet header [`gtpu`](Self::gtpu)
    /// would give the packet is written over the tunnel's headers in front of it. Only a
    /// plain G-PDU ([`gw::gtpu_in_place`], [`Endpoint::plain_g_pdu`]) of a session whose
    /// checks pass; counted as the slow path counts it. Returns where the frame starts in
    /// `ip`, for [`HookVerdict::Decapsulated`].
    fn decapsulate_in_place(&mut self, ip: &mut [u8]) -> Option<usize> {
        let gw::InPlace { src, dst, udp, .. } = gw::gtpu_in_place(ip)?;
        if dst != self.s5_addr {
            return None;
        }
        let teid = self.s5u.plain_g_pdu(src, &udp[8..])?;
        let s = self.by_s5u.get(&teid).and_then(|t| self.sessions.get(t))?;
        const TPDU: usize = 8 + d11_wire::gtpu::HEADER_LEN;
        uplink_check(s, &udp[TPDU..]).ok()?;
        let (pdn_type, ue_ip) = (s.pdn_type, s.ue_ip);
        if !self.s5u.delivered(teid, udp.len() - 8) {
            return None;
        }
        self.c.uplink_packets += 1;
        self.c.decapsulated_in_place += 1;
        let at = match pdn_type {
            PdnType::Ethernet => 20 + TPDU,
            PdnType::Ipv4 => {
                let eth = &mut udp[TPDU - 14..TPDU];
                gw::ethernet_header(eth, self.ue_mac, ipv4_session_mac(ue_ip), 0x0800);
                20 + TPDU - 14
            }
        };
        Some(at)
    }

    /// A UDP super-frame of G-PDUs from the SGW for one of our sessions (see
    /// [`crate::superframe`]): each T-PDU checked and counted as [`gtpu`](Self::gtpu) does,
    /// then all of them to the router as one TCP super-frame where they were cut from one,
    /// else one by one. False for anything else (cut, and taken G-PDU by G-PDU).
    fn unpack_uplink(&mut self, frame: &mut [u8], g: &Gso) -> bool {
        let Some(pdus) = crate::superframe::g_pdus(frame, g) else {
            return false;
        };
        if pdus.dst != self.s5_addr {
            return false;
        }
        const H: usize = d11_wire::gtpu::HEADER_LEN;
        let Some(teid) = pdus.one_tunnel(&self.s5u) else {
            return false;
        };
        let Some(s) = self.by_s5u.get(&teid).and_then(|t| self.sessions.get(t)) else {
            return false;
        };
        if pdus.iter().any(|p| uplink_check(s, &p[H..]).is_err()) {
            return false;
        }
        self.c.uplink_packets += pdus.deliver(&mut self.s5u, teid);
        let eth = match s.pdn_type {
            PdnType::Ethernet => None,
            PdnType::Ipv4 => {
                let mut e = [0u8; 14];
                gw::ethernet_header(&mut e, self.ue_mac, ipv4_session_mac(s.ue_ip), 0x0800);
                Some(e)
            }
        };
        let mut f = self.out.buffer();
        let merged = pdus.merge(eth, &mut f);
        match merged {
            Some(m) => {
                self.c.uplink_super_frames += 1;
                self.out.inject_gso.push((f, m));
            }
            None => {
                self.out.recycle(f);
                for pdu in pdus.iter() {
                    let mut f = self.out.buffer();
                    if let Some(e) = eth {
                        f.extend_from_slice(&e);
                    }
                    f.extend_from_slice(&pdu[H..]);
                    self.out.inject.push(f);
                }
            }
        }
        true
    }

    /// A TCP super-frame the router sent towards a UE: down its tunnel as one UDP
    /// super-frame of G-PDUs, each the one [`downlink`](Self::downlink) would send for that
    /// segment. False (nothing sent or counted) if it cannot go as one.
    fn pack_downlink(&mut self, f: &[u8], g: &Gso) -> bool {
        if g.gso_type & !GSO_ECN != GSO_TCPV4 || f.len() < 34 || f[12..14] != [8, 0] {
            return false;
        }
        let Some(s) = self
            .by_ip
            .get(&d11_wire::ip::dst(&f[14..]))
            .and_then(|t| self.sessions.get(t))
        else {
            return false;
        };
        let (teid, strip) = (s.s5u_teid, s.pdn_type == PdnType::Ipv4);
        let mut payload = self.out.buffer();
        let packed = crate::superframe::pack_for(
            &mut self.s5u,
            teid,
            (f, g),
            &mut self.cut,
            strip,
            &mut payload,
        );
        let Some((size, n, to)) = packed else {
            self.out.recycle(payload);
            return false;
        };
        self.c.downlink_packets += n;
        self.c.downlink_super_frames += 1;
        self.out.segmented.push((
            Datagram {
                src: self.s5_addr,
                dst: to,
                sport: GTPU,
                dport: GTPU,
                payload,
            },
            size,
        ));
        true
    }

    /// A frame the router sent towards the UEs: into the tunnel of the UE it is for.
    fn downlink(&mut self, f: &[u8]) {
        if f.len() < 14 {
            return;
        }
        let et = u16::from_be_bytes([f[12], f[13]]);
        let target = match et {
            0x0800 if f.len() >= 34 => Ipv4Addr::new(f[30], f[31], f[32], f[33]),
            0x0806 if f.len() >= 42 => Ipv4Addr::new(f[38], f[39], f[40], f[41]),
            _ => return,
        };
        let Some(s) = self.by_ip.get(&target).and_then(|t| self.sessions.get(t)) else {
            self.c.downlink_no_session += 1;
            return;
        };
        let tpdu: &[u8] = match (s.pdn_type, et) {
            (PdnType::Ethernet, _) => f,
            (PdnType::Ipv4, 0x0800) => {
                let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                &f[14..(14 + total).min(f.len())]
            }
            (PdnType::Ipv4, _) => {
                // ARP for a UE without Ethernet: answer for it.
                if f[20..22] == [0, 1] {
                    let mac = ipv4_session_mac(s.ue_ip);
                    let mut a = Vec::with_capacity(60);
                    a.extend_from_slice(&f[6..12]);
                    a.extend_from_slice(&mac);
                    a.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
                    a.extend_from_slice(&mac);
                    a.extend_from_slice(&s.ue_ip.octets());
                    a.extend_from_slice(&f[22..28]);
                    a.extend_from_slice(&f[28..32]);
                    a.resize(60, 0);
                    self.out.inject.push(a);
                }
                return;
            }
        };
        let s5u = s.s5u_teid;
        let mut buf = self.out.buffer();
        if let Some(to) = self.s5u.encapsulate(s5u, tpdu, &mut buf) {
            self.c.downlink_packets += 1;
            self.out.datagrams.push(Datagram {
                src: self.s5_addr,
                dst: to,
                sport: GTPU,
                dport: GTPU,
                payload: buf,
            });
        }
    }
}

impl Hook for PgwLogic {
    fn prerouting(&mut self, _now: Instant, in_port: PortId, ip: &mut [u8]) -> HookVerdict {
        if in_port == self.ue_port {
            if clamp_mss(ip, self.mss) {
                self.c.mss_clamped += 1;
            }
        } else if let Some(at) = self.decapsulate_in_place(ip) {
            return HookVerdict::Decapsulated {
                at,
                port: self.ue_port,
            };
        }
        HookVerdict::Continue
    }

    fn postrouting(
        &mut self,
        _now: Instant,
        _in_port: PortId,
        out_port: PortId,
        ip: &mut [u8],
    ) -> HookVerdict {
        if out_port == self.ue_port && clamp_mss(ip, self.mss) {
            self.c.mss_clamped += 1;
        }
        HookVerdict::Continue
    }

    /// A packet for a UE goes into its tunnel at once, as [`downlink`](Self::downlink)
    /// would put it there, with no frame in between: an IPv4 session's T-PDU is the packet
    /// (no ARP on the UEs' side), an Ethernet session's the packet in a frame to the UE's MAC
    /// once the router's ARP through the tunnel has it (until then, the slow way).
    fn encapsulate(
        &mut self,
        _now: Instant,
        out_port: PortId,
        ip: &[u8],
        next_hop_mac: &mut dyn FnMut() -> Option<[u8; 6]>,
    ) -> Option<Encap> {
        if out_port != self.ue_port || ip.len() < 20 {
            return None;
        }
        let s = self
            .by_ip
            .get(&d11_wire::ip::dst(ip))
            .and_then(|t| self.sessions.get(t))?;
        let mut eth = [0u8; 14];
        let (eth, tpdu_len): (&[u8], usize) = match s.pdn_type {
            PdnType::Ipv4 => (&[], ip.len()),
            PdnType::Ethernet => {
                gw::ethernet_header(&mut eth, next_hop_mac()?, self.ue_mac, 0x0800);
                (&eth, 14 + ip.len())
            }
        };
        let (header, to) = self.s5u.g_pdu_header(s.s5u_teid, tpdu_len)?;
        self.c.downlink_packets += 1;
        self.c.encapsulated_at_once += 1;
        // Counted as sent already: the headers must fit (checked when this is compiled).
        const _: () = assert!(d11_wire::gtpu::HEADER_LEN + 14 <= Encap::MAX_HEADER);
        Encap::new(self.s5_addr, to, (GTPU, GTPU), &[&header, eth])
    }

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
        if u.dst != self.s5_addr {
            return HookVerdict::Continue;
        }
        match u.dport {
            GTPU => self.gtpu(now, u.src, u.payload),
            GTPC => self.gtpc(now, u.src, u.payload),
            _ => return HookVerdict::Continue,
        }
        HookVerdict::Drop
    }
}

impl RouterProgram for PgwLogic {
    fn role(&self) -> &'static str {
        "pgw"
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    fn tunnel_port(&self) -> Option<PortId> {
        Some(self.ue_port)
    }

    /// What the router sent to a UE goes down its tunnel.
    fn tunnel_frame(&mut self, _now: Instant, frame: &[u8]) {
        self.downlink(frame);
    }

    /// A TCP super-frame to a UE goes down its tunnel as one UDP super-frame of G-PDUs.
    fn tunnel_frame_gso(&mut self, _now: Instant, frame: &[u8], gso: &Gso) -> bool {
        self.pack_downlink(frame, gso)
    }

    /// TCP super-frames are routed whole (to the UEs: into [`tunnel_frame_gso`]); UDP
    /// super-frames of G-PDUs from the SGW are taken out of their tunnel whole. Every other
    /// offloaded frame is cut into plain ones for the router.
    fn takes_gso(&self) -> bool {
        true
    }

    fn takes_udp_segments(&self) -> bool {
        true
    }

    fn routes_gso(&self, _port: PortId, gso: &Gso) -> bool {
        gso.gso_type & !GSO_ECN == GSO_TCPV4
    }

    fn own_frame_gso(
        &mut self,
        _now: Instant,
        _port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        _out: &mut Direct<'_>,
    ) -> bool {
        self.unpack_uplink(frame, gso)
    }

    fn poll_at(&self) -> Option<Instant> {
        self.paths.poll_at()
    }

    fn poll(&mut self, now: Instant) {
        self.paths
            .poll_echo(now, &mut self.s5u, &mut self.out.datagrams);
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sessions", "paths"]
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        match table {
            "sessions" => {
                let l = self;
                let mut v: Vec<&Session> = l.sessions.values().collect();
                v.sort_by_key(|s| s.ue_ip);
                Some(json!(v
                    .iter()
                    .map(|s| {
                        let t = l.s5u.get(s.s5u_teid);
                        json!({
                            "imsi": s.imsi,
                            "ue_ip": s.ue_ip.to_string(),
                            "pdn_type": s.pdn_type,
                            "ebi": s.ebi,
                            "s5c_pgw_teid": s.s5c_teid,
                            "s5c_sgw_teid": s.sgw_c.teid,
                            "s5u_pgw_teid": s.s5u_teid,
                            "s5u_sgw_teid": s.sgw_u.teid,
                            "sgw": s.sgw_u.ipv4.to_string(),
                            "uplink_packets": t.map(|t| t.rx_packets),
                            "uplink_bytes": t.map(|t| t.rx_bytes),
                            "downlink_packets": t.map(|t| t.tx_packets),
                            "downlink_bytes": t.map(|t| t.tx_bytes),
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
        gw::endpoint_counters(&self.s5u, "s5u_", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{drive, drive_frames, gpdu, gpdu_with_seq, udp_frame, with_udp_checksum};
    use d11_wire::gtpu::Packet as GtpU;

    const SGW: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 3], Ipv4Addr::new(172, 16, 5, 3));
    const NAT: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 1], Ipv4Addr::new(172, 16, 9, 1));
    const UE: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 2);

    /// A PGW with one IPv4 session: UE 10.45.0.2, TEIDs 300 (ours) and 400 (the SGW's).
    fn pgw() -> Pgw {
        pgw_with(
            json!({"imsi": "1", "ue_ip": "10.45.0.2", "pdn_type": "ipv4",
            "s5u_teid": 300, "sgw": "172.16.5.3", "sgw_teid": 400}),
        )
    }

    /// A PGW with the one static session `session`.
    fn pgw_with(session: Value) -> Pgw {
        let cfg: PgwConfig = serde_json::from_value(json!({
            "name": "pgw",
            "ports": [
                {"name": "s5", "addresses": ["172.16.5.4/24"]},
                {"name": "sgi", "addresses": ["172.16.9.4/24"]},
            ],
            "routes": [{"prefix": "0.0.0.0/0", "via": "172.16.9.1"}],
            "echo_interval_s": 0,
            "static_sessions": [session],
        }))
        .unwrap();
        PgwLogic::new(&cfg, 1).unwrap()
    }

    /// An IPv4 TCP SYN with an MSS option, `len` octets in all, DF set.
    fn syn(src: Ipv4Addr, dst: Ipv4Addr, mss: u16, len: usize) -> Vec<u8> {
        let mut ip = vec![0u8; len];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        d11_wire::fill_ipv4_checksum(&mut ip[..20]);
        let t = &mut ip[20..];
        t[12] = 6 << 4;
        t[13] = 0x02;
        t[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        ip
    }

    #[test]
    fn decapsulates_clamps_encapsulates_and_refuses_what_does_not_fit() {
        let mut p = pgw();
        let s5_mac = p.router.port_mac(0).unwrap().0;
        let sgi_mac = p.router.port_mac(1).unwrap().0;
        let peers = [SGW, NAT];
        let s5 = Ipv4Addr::new(172, 16, 5, 4);
        // Uplink: the UE's SYN (MSS 1460) leaves on SGi, TTL one less, MSS clamped to 1410.
        let up = gpdu(300, &syn(UE, Ipv4Addr::new(203, 0, 113, 10), 1460, 44));
        let out = drive_frames(&mut p, 0, udp_frame(s5_mac, SGW, s5, 2152, &up), &peers);
        let [(1, f)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(&f[0..6], &NAT.0);
        let ip = &f[14..];
        assert_eq!((ip[8], &ip[12..16]), (63, &UE.octets()[..]));
        assert_eq!(u16::from_be_bytes([ip[42], ip[43]]), 1410);
        assert_eq!(p.logic.c.mss_clamped, 1);
        // A UE sending from another address is dropped and counted.
        let spoof = gpdu(300, &syn(Ipv4Addr::new(10, 45, 0, 9), NAT.1, 1400, 44));
        assert!(
            drive_frames(&mut p, 0, udp_frame(s5_mac, SGW, s5, 2152, &spoof), &peers).is_empty()
        );
        assert_eq!(p.logic.c.uplink_spoofed, 1);
        // Downlink: a SYN-ACK from beyond goes into the tunnel with the SGW's TEID, MSS clamped.
        let mut down = syn(Ipv4Addr::new(203, 0, 113, 10), UE, 1460, 44);
        down[33] = 0x12;
        let mut f = Vec::new();
        f.extend_from_slice(&sgi_mac);
        f.extend_from_slice(&NAT.0);
        f.extend_from_slice(&[8, 0]);
        f.extend_from_slice(&down);
        let out = drive(&mut p, 1, f, &peers);
        let (port, to, dport, g) = out.last().expect("a G-PDU").clone();
        assert_eq!((port, to, dport), (0, SGW.1, 2152));
        let g = GtpU::new_checked(&g[..]).unwrap();
        assert_eq!(g.teid(), 400);
        let inner = g.payload();
        assert_eq!(&inner[16..20], &UE.octets());
        assert_eq!(u16::from_be_bytes([inner[42], inner[43]]), 1410);
        // Too big for the tunnel with DF: fragmentation needed (MTU 1450) back to the sender.
        let mut f = Vec::new();
        f.extend_from_slice(&sgi_mac);
        f.extend_from_slice(&NAT.0);
        f.extend_from_slice(&[8, 0]);
        f.extend_from_slice(&syn(Ipv4Addr::new(203, 0, 113, 10), UE, 1460, 1500));
        let out = drive_frames(&mut p, 1, f, &peers);
        let (_, icmp) = out.iter().find(|(_, f)| f[14 + 9] == 1).expect("ICMP");
        let i = &icmp[14 + 20..];
        assert_eq!((i[0], i[1], u16::from_be_bytes([i[6], i[7]])), (3, 4, 1450));
        // A G-PDU for a TEID the PGW does not have draws an Error Indication.
        let out = drive(
            &mut p,
            0,
            udp_frame(s5_mac, SGW, s5, 2152, &gpdu(999, b"x")),
            &peers,
        );
        let g = GtpU::new_checked(&out[0].3[..]).unwrap();
        assert_eq!(
            g.message_type(),
            d11_wire::gtpu::MessageType::ErrorIndication
        );
    }

    /// Decapsulating the phone's packets to SGi and tunnelling the answers, once the next
    /// hops are known, allocates nothing per packet.
    #[test]
    fn a_plain_g_pdu_is_taken_out_where_it_lies_into_the_frame_the_slow_path_sends() {
        let mut p = pgw();
        let s5_mac = p.router.port_mac(0).unwrap().0;
        let s5 = Ipv4Addr::new(172, 16, 5, 4);
        let srv = Ipv4Addr::new(203, 0, 113, 10);
        let packet = syn(UE, srv, 1460, 1200);
        let frames = |p: &mut Pgw, f| drive_frames(p, 0, f, &[SGW, NAT]);
        // The slow path: a G-PDU with a sequence number, copied into a frame for the router.
        let slow = frames(
            &mut p,
            udp_frame(s5_mac, SGW, s5, 2152, &gpdu_with_seq(300, &packet)),
        );
        let plain = udp_frame(s5_mac, SGW, s5, 2152, &gpdu(300, &packet));
        let fast = frames(&mut p, plain.clone());
        let fast_sum = frames(&mut p, with_udp_checksum(plain.clone()));
        let [(1, slow)] = slow.as_slice() else {
            panic!("{slow:?}")
        };
        assert_eq!(fast, [(1, slow.clone())]);
        assert_eq!(fast_sum, [(1, slow.clone())]);
        // TTL one less, the MSS clamped, from the UE to the server.
        assert_eq!((slow[14 + 8], d11_wire::ip::src(&slow[14..])), (63, UE));
        assert_eq!(p.logic.c.mss_clamped, 3);
        assert_eq!(
            (p.logic.c.uplink_packets, p.logic.c.decapsulated_in_place),
            (3, 2)
        );
        assert_eq!(p.logic.s5u.c.rx_g_pdu, 3);
        // A spoofed source and a wrong checksum: the slow path's, counted there.
        let spoofed = syn(Ipv4Addr::new(10, 45, 0, 9), srv, 1460, 1200);
        let f = udp_frame(s5_mac, SGW, s5, 2152, &gpdu(300, &spoofed));
        assert!(frames(&mut p, f).is_empty());
        let mut bad = with_udp_checksum(plain);
        bad[41] ^= 1;
        assert!(frames(&mut p, bad).is_empty());
        assert_eq!((p.logic.c.uplink_spoofed, p.logic.c.udp_errors), (1, 1));
        assert_eq!(
            (p.logic.c.uplink_packets, p.logic.c.decapsulated_in_place),
            (3, 2)
        );
    }

    /// `ip` in a frame from the NAT to the PGW's SGi port (MAC `sgi_mac`).
    fn from_nat(sgi_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&sgi_mac);
        f.extend_from_slice(&NAT.0);
        f.extend_from_slice(&[8, 0]);
        f.extend_from_slice(ip);
        f
    }

    /// A TCP data segment (ACK) of 1,040 octets from `src` to `dst`.
    fn segment(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut ip = syn(src, dst, 1400, 1040);
        ip[33] = 0x10;
        ip
    }

    /// A packet for an Ethernet session's UE goes into its tunnel at once when the router's
    /// ARP through the tunnel has the UE's MAC: the same octets as the slow way, which
    /// resolved it, sent.
    #[test]
    fn a_packet_for_an_ethernet_session_goes_into_its_tunnel_at_once_once_the_ue_is_resolved() {
        let mut p = pgw_with(
            json!({"imsi": "2", "ue_ip": "10.45.0.3", "pdn_type": "ethernet",
            "s5u_teid": 301, "sgw": "172.16.5.3", "sgw_teid": 401}),
        );
        let s5_mac = p.router.port_mac(0).unwrap().0;
        let sgi_mac = p.router.port_mac(1).unwrap().0;
        let s5 = Ipv4Addr::new(172, 16, 5, 4);
        let (ue, ue_mac) = (Ipv4Addr::new(10, 45, 0, 3), [2, 0, 0, 0, 0, 0x45]);
        let packet = segment(Ipv4Addr::new(203, 0, 113, 10), ue);
        let peers = [SGW, NAT];
        // The first packet waits while the router asks for the UE through the tunnel.
        let out = drive(&mut p, 1, from_nat(sgi_mac, &packet), &peers);
        let [(0, to, 2152, g)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(*to, SGW.1);
        let g = GtpU::new_checked(&g[..]).unwrap();
        let request = g.payload();
        assert_eq!(
            (&request[12..14], &request[38..42]),
            (&[8, 6][..], &ue.octets()[..])
        );
        let pgw_mac: [u8; 6] = request[6..12].try_into().unwrap();
        // The UE answers through the tunnel: the packet leaves the slow way.
        let answer = d11_wire::arp::reply(ue_mac, ue, pgw_mac, Ipv4Addr::new(10, 45, 0, 1));
        let up = udp_frame(s5_mac, SGW, s5, 2152, &gpdu(301, &answer));
        let slow = drive_frames(&mut p, 0, up, &peers);
        let [(0, slow)] = slow.as_slice() else {
            panic!("{slow:?}")
        };
        assert_eq!(p.logic.c.encapsulated_at_once, 0);
        // The same packet again: at once, the same octets.
        let fast = drive_frames(&mut p, 1, from_nat(sgi_mac, &packet), &peers);
        assert_eq!(fast, [(0, slow.clone())]);
        let inner = &slow[14 + 20 + 8 + 8..];
        assert_eq!((&inner[..6], &inner[6..12]), (&ue_mac[..], &pgw_mac[..]));
        assert_eq!(
            (p.logic.c.downlink_packets, p.logic.c.encapsulated_at_once),
            (3, 1)
        );
        assert_eq!(p.logic.s5u.get(301).unwrap().tx_packets, 3);
    }

    /// A packet for an IPv4 session's UE goes into its tunnel at once: the frame is the one
    /// the slow path sends (built here by hand), and the UE is never ARPed for. A packet the
    /// router must fragment for the tunnel still goes the slow way.
    #[test]
    fn a_packet_for_an_ipv4_session_goes_into_its_tunnel_at_once() {
        let mut p = pgw();
        let s5_mac = p.router.port_mac(0).unwrap().0;
        let sgi_mac = p.router.port_mac(1).unwrap().0;
        let s5 = Ipv4Addr::new(172, 16, 5, 4);
        let srv = Ipv4Addr::new(203, 0, 113, 10);
        let from_sgi = |ip: &[u8]| from_nat(sgi_mac, ip);
        let data = segment(srv, UE);
        let out = drive_frames(&mut p, 1, from_sgi(&data), &[SGW, NAT]);
        let mut inner = data.clone();
        inner[8] -= 1;
        d11_wire::fill_ipv4_checksum(&mut inner[..20]);
        let want = with_udp_checksum(udp_frame(
            SGW.0,
            (s5_mac, s5),
            SGW.1,
            2152,
            &gpdu(400, &inner),
        ));
        assert_eq!(out, [(0, want)]);
        assert_eq!(
            (p.logic.c.downlink_packets, p.logic.c.encapsulated_at_once),
            (1, 1)
        );
        assert_eq!(p.logic.s5u.get(300).unwrap().tx_packets, 1);
        // The SGW's entry only: nobody asked for the UE's MAC.
        let arp = d11_element::Element::show(&p.router, "arp", Instant::now()).unwrap();
        assert_eq!(arp.as_array().unwrap().len(), 1, "{arp}");
        // 1,480 octets without DF over the tunnel's 1,450: two fragments, each its G-PDU.
        let mut big = syn(srv, UE, 1400, 1480);
        big[6] = 0;
        big[33] = 0x10;
        d11_wire::fill_ipv4_checksum(&mut big[..20]);
        let out = drive(&mut p, 1, from_sgi(&big), &[SGW, NAT]);
        assert_eq!(out.len(), 2, "{out:?}");
        for (port, to, dport, g) in &out {
            assert_eq!((*port, *to, *dport), (0, SGW.1, 2152));
            assert_eq!(GtpU::new_checked(&g[..]).unwrap().teid(), 400);
        }
        assert_eq!(
            (p.logic.c.downlink_packets, p.logic.c.encapsulated_at_once),
            (3, 1)
        );
    }

    #[test]
    fn forwarding_allocates_nothing_once_warm() {
        let mut p = pgw();
        let s5_mac = p.router.port_mac(0).unwrap().0;
        let sgi_mac = p.router.port_mac(1).unwrap().0;
        let peers = [SGW, NAT];
        let s5 = Ipv4Addr::new(172, 16, 5, 4);
        let srv = Ipv4Addr::new(203, 0, 113, 10);
        // Not SYNs: data segments (ACK) of 1000 octets each way.
        let data = |src, dst| {
            let mut ip = syn(src, dst, 1400, 1040);
            ip[33] = 0x10;
            ip
        };
        let up = udp_frame(s5_mac, SGW, s5, 2152, &gpdu(300, &data(UE, srv)));
        let mut down = Vec::new();
        down.extend_from_slice(&sgi_mac);
        down.extend_from_slice(&NAT.0);
        down.extend_from_slice(&[8, 0]);
        down.extend_from_slice(&data(srv, UE));
        assert_eq!(drive_frames(&mut p, 0, up.clone(), &peers).len(), 1);
        assert_eq!(drive_frames(&mut p, 1, down.clone(), &peers).len(), 1);
        let (allocs, sent) = d11_element::alloc_count::allocations_forwarding(
            &mut p,
            Instant::now(),
            &[(0, up), (1, down)],
            1000,
        );
        assert_eq!(sent, 2000);
        assert_eq!(allocs, 0, "heap allocations for 2000 packets");
    }
}
