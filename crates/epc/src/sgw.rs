//! d11-sgw: the serving gateway. Port `epc` (S11 from the MME, S1-U from the eNodeB) and port
//! `s5` (S5-C and S5-U to the PGW).
//!
//! Control plane (GTPv2-C, UDP 2123): a Create Session Request from the MME is forwarded to the
//! PGW with our own S5 F-TEIDs; the answer goes back to the MME with our S11 and S1-U F-TEIDs.
//! Modify Bearer Request sets the eNodeB's end of S1-U (and sends an End Marker down the old
//! path if it moved). Delete Session Request goes through to the PGW and removes the session.
//! Requests we send are retransmitted (T3 1 s, N3 3) until answered.
//!
//! PGW restart (TS 23.007 §16.1.1, §17): each PGW the SGW has sessions with is supervised by
//! GTPv2-C Echo on S5-C (every `echo_interval_s`); a Recovery that changed means the PGW
//! restarted and lost its sessions. The SGW then deletes every session it has with that PGW
//! and sends the MME a PGW Restart Notification (TS 29.274 §7.9.5), which the MME answers and
//! acts on (its UEs are detached with "re-attach required", and attach again).
//!
//! User plane (GTP-U, UDP 2152): two tunnel endpoints, S1-U and S5-U, and a TEID map each way.

use crate::gw::{self, Datagram, Gtpu, PathCounters, Paths};
use crate::transactions::Transactions;
use crate::tunnel::Endpoint;
use d11_element::{counters, PortId};
use d11_router::program::{Direct, Outbox, RouterElement, RouterProgram};
use d11_router::{Hook, HookVerdict, RouteConfig, Router, RouterConfig};
use d11_wire::gso::Gso;
use d11_wire::gtpu::{emit_signalling, MessageType, UDP_PORT as GTPU};
use d11_wire::gtpv2::message::{
    self as gtpc, CreateSessionRequest, CreateSessionResponse, DeleteSessionRequest,
    DeleteSessionResponse, EchoRequest, EchoResponse, Message, ModifyBearerRequest,
    ModifyBearerResponse, PdnType, PgwRestartNotification,
};
use d11_wire::gtpv2::{cause, iface, msg};
use d11_wire::gtpv2::{value::Fteid, Packet};
use serde::Deserialize;
use serde_json::{json, Value};
// (Keys are ours: TEIDs and UE addresses we gave out.)
use foldhash::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const GTPC: u16 = d11_wire::gtpv2::UDP_PORT;

#[derive(Debug, Clone, Deserialize)]
pub struct SgwConfig {
    pub name: String,
    pub ports: Vec<d11_element::PortConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The port facing the MME and eNodeBs (S11, S1-U); the other faces the PGW.
    #[serde(default = "default_epc")]
    pub s11_port: String,
    #[serde(default = "default_s5")]
    pub s5_port: String,
    #[serde(default = "crate::enb::default_echo")]
    pub echo_interval_s: u64,
    /// Sessions set up by configuration instead of GTPv2-C (benchmarks, tests of a single
    /// element).
    #[serde(default)]
    pub static_sessions: Vec<StaticSession>,
}

/// A session from the configuration: both tunnels, each end's TEID.
#[derive(Debug, Clone, Deserialize)]
pub struct StaticSession {
    pub imsi: String,
    pub enb: Ipv4Addr,
    pub enb_teid: u32,
    pub s1u_teid: u32,
    pub pgw: Ipv4Addr,
    pub pgw_teid: u32,
    pub s5u_teid: u32,
}

fn default_epc() -> String {
    "epc".into()
}
fn default_s5() -> String {
    "s5".into()
}

counters! {
    pub struct SgwCounters {
        gtpc_received,
        gtpc_malformed,
        gtpc_unexpected,
        gtpc_unknown_teid,
        sessions_created,
        sessions_refused,
        sessions_deleted,
        sessions_deleted_peer_restart,
        pgw_restarts,
        pgw_restart_notifications_sent,
        pgw_restart_notifications_acked,
        bearers_modified,
        end_markers_sent,
        uplink_packets,
        downlink_packets,
        switched_in_place,
        super_frames_switched,
        udp_errors,
    }
}

#[derive(Debug, Clone)]
struct Session {
    imsi: String,
    pdn_type: PdnType,
    ue_ip: Option<Ipv4Addr>,
    ebi: u8,
    /// Our S11 TEID (the MME addresses us with it).
    s11_teid: u32,
    mme_c: Fteid,
    s5c_teid: u32,
    pgw_c: Option<Fteid>,
    s1u_teid: u32,
    enb_u: Option<Fteid>,
    s5u_teid: u32,
    pgw_u: Option<Fteid>,
    state: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum Waiting {
    Create,
    Delete,
    /// A PGW Restart Notification to the MME.
    RestartNotification,
}

/// What the SGW keeps about a request of its own in flight.
#[derive(Debug, Clone)]
struct Pending {
    s11_teid: u32,
    mme_seq: u32,
    kind: Waiting,
}

pub struct SgwLogic {
    s11_addr: Ipv4Addr,
    s5_addr: Ipv4Addr,
    recovery: u8,
    sessions: HashMap<u32, Session>,
    by_s5c: HashMap<u32, u32>,
    by_s1u: HashMap<u32, u32>,
    by_s5u: HashMap<u32, u32>,
    next_teid: u32,
    seq: u32,
    pending: Transactions<Pending>,
    pub s1u: Endpoint,
    pub s5u: Endpoint,
    paths: Paths,
    /// GTPv2-C paths to the PGWs (S5-C), supervised for restarts.
    cpaths: Paths,
    out: Outbox,
    reply: Vec<u8>,
    pub c: SgwCounters,
    pub pc: PathCounters,
}

/// The SGW: a router whose local UDP ports are GTPv2-C and GTP-U.
pub type Sgw = RouterElement<SgwLogic>;

fn port_addr(cfg: &SgwConfig, name: &str) -> anyhow::Result<Ipv4Addr> {
    cfg.ports
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.addresses.first())
        .map(|a| a.addr())
        .ok_or_else(|| anyhow::anyhow!("the SGW needs a port {name:?} with an address"))
}

impl SgwLogic {
    pub fn new(cfg: &SgwConfig, recovery: u8) -> anyhow::Result<Sgw> {
        let s11_addr = port_addr(cfg, &cfg.s11_port)?;
        let s5_addr = port_addr(cfg, &cfg.s5_port)?;
        let router = Router::new(&RouterConfig {
            name: cfg.name.clone(),
            ports: cfg.ports.clone(),
            routes: cfg.routes.clone(),
            icmp_limit: Default::default(),
            bgp: None,
        })?;
        let mut sgw = RouterElement::new(
            router,
            SgwLogic {
                s11_addr,
                s5_addr,
                recovery,
                sessions: HashMap::default(),
                by_s5c: HashMap::default(),
                by_s1u: HashMap::default(),
                by_s5u: HashMap::default(),
                next_teid: 0x5100_0001,
                seq: 0,
                pending: Transactions::default(),
                s1u: Endpoint::new(s11_addr, recovery, 0x1100_0001),
                s5u: Endpoint::new(s5_addr, recovery, 0x5500_0001),
                paths: Paths::new(Duration::from_secs(cfg.echo_interval_s)),
                cpaths: Paths::on_port(Duration::from_secs(cfg.echo_interval_s), GTPC),
                out: Outbox::default(),
                reply: Vec::new(),
                c: SgwCounters::default(),
                pc: PathCounters::default(),
            },
        );
        for st in &cfg.static_sessions {
            let l = &mut sgw.logic;
            let s11 = l.teid();
            let s5c = l.teid();
            l.s1u.add(st.s1u_teid, st.enb_teid, st.enb);
            l.s5u.add(st.s5u_teid, st.pgw_teid, st.pgw);
            l.by_s1u.insert(st.s1u_teid, s11);
            l.by_s5u.insert(st.s5u_teid, s11);
            l.sessions.insert(
                s11,
                Session {
                    imsi: st.imsi.clone(),
                    pdn_type: PdnType::Ipv4,
                    ue_ip: None,
                    ebi: gtpc::DEFAULT_EBI,
                    s11_teid: s11,
                    mme_c: Fteid {
                        interface: iface::S11_MME,
                        teid: 0,
                        ipv4: Ipv4Addr::UNSPECIFIED,
                    },
                    s5c_teid: s5c,
                    pgw_c: None,
                    s1u_teid: st.s1u_teid,
                    enb_u: Some(Fteid {
                        interface: iface::S1U_ENODEB,
                        teid: st.enb_teid,
                        ipv4: st.enb,
                    }),
                    s5u_teid: st.s5u_teid,
                    pgw_u: Some(Fteid {
                        interface: iface::S5S8U_PGW,
                        teid: st.pgw_teid,
                        ipv4: st.pgw,
                    }),
                    state: "static",
                },
            );
        }
        Ok(sgw)
    }
}

impl SgwLogic {
    fn teid(&mut self) -> u32 {
        loop {
            let t = self.next_teid;
            self.next_teid = self.next_teid.wrapping_add(1).max(1);
            if !self.sessions.contains_key(&t) && !self.by_s5c.contains_key(&t) {
                return t;
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & 0x00ff_ffff;
        self.seq
    }

    fn send_c(&mut self, src: Ipv4Addr, dst: Ipv4Addr, payload: Vec<u8>) {
        self.out.datagrams.push(Datagram {
            src,
            dst,
            sport: GTPC,
            dport: GTPC,
            payload,
        });
    }

    fn request_s5(&mut self, now: Instant, s11_teid: u32, mme_seq: u32, kind: Waiting, seq: u32) {
        let Some(s) = self.sessions.get(&s11_teid) else {
            return;
        };
        let Some(pgw) = s.pgw_c else { return };
        let bytes = match kind {
            Waiting::Create => CreateSessionRequest {
                imsi: s.imsi.clone(),
                apn: "internet".into(),
                pdn_type: s.pdn_type,
                sender: Fteid {
                    interface: iface::S5S8C_SGW,
                    teid: s.s5c_teid,
                    ipv4: self.s5_addr,
                },
                pgw_c: None,
                paa: s.ue_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                ebi: s.ebi,
                s5u_sgw: Some(Fteid {
                    interface: iface::S5S8U_SGW,
                    teid: s.s5u_teid,
                    ipv4: self.s5_addr,
                }),
            }
            .emit(0, seq),
            Waiting::Delete => DeleteSessionRequest { ebi: s.ebi }.emit(pgw.teid, seq),
            Waiting::RestartNotification => return,
        };
        let pending = Pending {
            s11_teid,
            mme_seq,
            kind,
        };
        self.pending
            .begin(now, seq, self.s5_addr, pgw.ipv4, bytes.clone(), pending);
        self.send_c(self.s5_addr, pgw.ipv4, bytes);
    }

    /// The PGW at `pgw` (its S5-C address) restarted: its sessions are gone there, so they go
    /// here too, and each MME that had one is told (PGW Restart Notification).
    fn pgw_restarted(&mut self, now: Instant, pgw: Ipv4Addr) {
        self.c.pgw_restarts += 1;
        let lost: Vec<u32> = self
            .sessions
            .values()
            .filter(|s| s.state != "creating" && s.pgw_c.is_some_and(|f| f.ipv4 == pgw))
            .map(|s| s.s11_teid)
            .collect();
        let mut mmes = std::collections::BTreeSet::new();
        for t in lost {
            if let Some(s) = self.remove_session(t) {
                self.c.sessions_deleted_peer_restart += 1;
                mmes.insert(s.mme_c.ipv4);
            }
        }
        // Requests still waiting for that PGW will not be answered as asked: they time out.
        tracing::warn!(%pgw, mmes = mmes.len(), "PGW restarted: its sessions are deleted");
        for mme in mmes {
            if mme.is_unspecified() {
                continue;
            }
            let seq = self.next_seq();
            let bytes = PgwRestartNotification {
                pgw,
                sgw: self.s11_addr,
            }
            .emit(0, seq);
            let pending = Pending {
                s11_teid: 0,
                mme_seq: 0,
                kind: Waiting::RestartNotification,
            };
            self.pending
                .begin(now, seq, self.s11_addr, mme, bytes.clone(), pending);
            self.c.pgw_restart_notifications_sent += 1;
            self.send_c(self.s11_addr, mme, bytes);
        }
    }

    fn remove_session(&mut self, s11_teid: u32) -> Option<Session> {
        let s = self.sessions.remove(&s11_teid)?;
        self.by_s5c.remove(&s.s5c_teid);
        self.by_s1u.remove(&s.s1u_teid);
        self.by_s5u.remove(&s.s5u_teid);
        self.s1u.remove(s.s1u_teid);
        self.s5u.remove(s.s5u_teid);
        Some(s)
    }

    fn gtpc(&mut self, now: Instant, local: Ipv4Addr, from: Ipv4Addr, payload: &[u8]) {
        self.c.gtpc_received += 1;
        let Ok(p) = Packet::new_checked(payload) else {
            self.c.gtpc_malformed += 1;
            return;
        };
        let h = p.header();
        let teid = h.teid.unwrap_or(0);
        match h.message_type {
            msg::ECHO_REQUEST => {
                let r = EchoResponse {
                    recovery: Some(self.recovery),
                }
                .emit(0, h.sequence);
                self.send_c(local, from, r);
            }
            msg::ECHO_RESPONSE => {
                // Only a PGW we have sessions with can tell us it restarted.
                if local == self.s5_addr
                    && self
                        .sessions
                        .values()
                        .any(|s| s.pgw_c.is_some_and(|f| f.ipv4 == from))
                    && self.cpaths.answered(now, local, from, p.recovery())
                {
                    self.pgw_restarted(now, from);
                }
            }
            msg::PGW_RESTART_NOTIFICATION_ACK if local == self.s11_addr => {
                match self.pending.get(h.sequence) {
                    Some(q) if matches!(q.key.kind, Waiting::RestartNotification) => {
                        self.pending.answered(h.sequence);
                        self.c.pgw_restart_notifications_acked += 1;
                    }
                    _ => self.c.gtpc_unexpected += 1,
                }
            }
            msg::CREATE_SESSION_REQUEST if local == self.s11_addr => {
                let req = match CreateSessionRequest::parse(&p) {
                    Ok(r) => r,
                    Err(gtpc::Refused(c)) => {
                        self.c.sessions_refused += 1;
                        let sender = gtpc_sender(&p);
                        let r = CreateSessionResponse::refused(c, gtpc::DEFAULT_EBI)
                            .emit(sender, h.sequence);
                        self.send_c(local, from, r);
                        return;
                    }
                };
                let Some(pgw_c) = req.pgw_c else {
                    self.c.sessions_refused += 1;
                    let r = CreateSessionResponse::refused(cause::MANDATORY_IE_MISSING, req.ebi)
                        .emit(req.sender.teid, h.sequence);
                    self.send_c(local, from, r);
                    return;
                };
                // A retransmitted request while we wait for the PGW: already in hand.
                if self.pending.keys().any(|q| {
                    q.mme_seq == h.sequence
                        && self
                            .sessions
                            .get(&q.s11_teid)
                            .is_some_and(|s| s.imsi == req.imsi)
                }) {
                    return;
                }
                // A new attach of a UE we have a session for replaces it.
                let old: Vec<u32> = self
                    .sessions
                    .values()
                    .filter(|s| s.imsi == req.imsi)
                    .map(|s| s.s11_teid)
                    .collect();
                for t in old {
                    self.remove_session(t);
                }
                let s11_teid = self.teid();
                let s5c_teid = self.teid();
                let s1u_teid = self.s1u.allocate_teid();
                let s5u_teid = self.s5u.allocate_teid();
                self.sessions.insert(
                    s11_teid,
                    Session {
                        imsi: req.imsi,
                        pdn_type: req.pdn_type,
                        ue_ip: (!req.paa.is_unspecified()).then_some(req.paa),
                        ebi: req.ebi,
                        s11_teid,
                        mme_c: req.sender,
                        s5c_teid,
                        pgw_c: Some(pgw_c),
                        s1u_teid,
                        enb_u: None,
                        s5u_teid,
                        pgw_u: None,
                        state: "creating",
                    },
                );
                self.by_s5c.insert(s5c_teid, s11_teid);
                let seq = self.next_seq();
                self.request_s5(now, s11_teid, h.sequence, Waiting::Create, seq);
            }
            msg::CREATE_SESSION_RESPONSE | msg::DELETE_SESSION_RESPONSE
                if local == self.s5_addr =>
            {
                if self
                    .pending
                    .get(h.sequence)
                    .is_none_or(|q| matches!(q.key.kind, Waiting::RestartNotification))
                {
                    self.c.gtpc_unexpected += 1;
                    return;
                }
                let Some(q) = self.pending.answered(h.sequence).map(|t| t.key) else {
                    return;
                };
                match q.kind {
                    Waiting::RestartNotification => {}
                    Waiting::Create => self.created(now, q, &p),
                    Waiting::Delete => {
                        let mme = self.remove_session(q.s11_teid).map(|s| s.mme_c);
                        if let Some(mme) = mme {
                            self.c.sessions_deleted += 1;
                            let c = p.cause().unwrap_or(cause::REQUEST_ACCEPTED);
                            let r = DeleteSessionResponse { cause: c }.emit(mme.teid, q.mme_seq);
                            self.send_c(self.s11_addr, mme.ipv4, r);
                        }
                    }
                }
            }
            msg::MODIFY_BEARER_REQUEST if local == self.s11_addr => {
                let Some(s) = self.sessions.get(&teid).cloned() else {
                    self.c.gtpc_unknown_teid += 1;
                    let r = ModifyBearerResponse {
                        cause: cause::CONTEXT_NOT_FOUND,
                        ebi: gtpc::DEFAULT_EBI,
                        s1u_sgw: None,
                    }
                    .emit(0, h.sequence);
                    self.send_c(local, from, r);
                    return;
                };
                let ModifyBearerRequest { ebi, enb } = match ModifyBearerRequest::parse(&p) {
                    Ok(x) => x,
                    Err(gtpc::Refused(c)) => {
                        let r = ModifyBearerResponse {
                            cause: c,
                            ebi: s.ebi,
                            s1u_sgw: None,
                        }
                        .emit(s.mme_c.teid, h.sequence);
                        self.send_c(local, from, r);
                        return;
                    }
                };
                // Path switch: the old eNodeB gets an End Marker (TS 29.281 §5.1, 23.401 §5.5.1).
                if let Some(old) = s.enb_u {
                    if old.ipv4 != enb.ipv4 || old.teid != enb.teid {
                        self.end_marker(old);
                    }
                }
                if self.s1u.get(s.s1u_teid).is_some() {
                    self.s1u.update(s.s1u_teid, enb.teid, enb.ipv4);
                } else {
                    self.s1u.add(s.s1u_teid, enb.teid, enb.ipv4);
                }
                self.paths.watch(now, self.s11_addr, enb.ipv4);
                if let Some(st) = self.sessions.get_mut(&teid) {
                    st.enb_u = Some(enb);
                    st.state = "active";
                }
                self.c.bearers_modified += 1;
                let r = ModifyBearerResponse {
                    cause: cause::REQUEST_ACCEPTED,
                    ebi,
                    s1u_sgw: Some(Fteid {
                        interface: iface::S1U_SGW,
                        teid: s.s1u_teid,
                        ipv4: self.s11_addr,
                    }),
                }
                .emit(s.mme_c.teid, h.sequence);
                self.send_c(local, from, r);
            }
            msg::DELETE_SESSION_REQUEST if local == self.s11_addr => {
                if !self.sessions.contains_key(&teid) {
                    self.c.gtpc_unknown_teid += 1;
                    let r = DeleteSessionResponse {
                        cause: cause::CONTEXT_NOT_FOUND,
                    }
                    .emit(0, h.sequence);
                    self.send_c(local, from, r);
                    return;
                }
                if let Some(s) = self.sessions.get_mut(&teid) {
                    s.state = "deleting";
                }
                let seq = self.next_seq();
                self.request_s5(now, teid, h.sequence, Waiting::Delete, seq);
            }
            _ => self.c.gtpc_unexpected += 1,
        }
    }

    fn created(&mut self, now: Instant, q: Pending, p: &Packet<&[u8]>) {
        let Some(s) = self.sessions.get(&q.s11_teid).cloned() else {
            return;
        };
        let resp = CreateSessionResponse::parse(p);
        let ok = matches!(&resp, Ok(r) if r.cause == cause::REQUEST_ACCEPTED && r.s5u_pgw.is_some() && r.sender.is_some());
        let Ok(resp) = resp else { return };
        if !ok {
            self.c.sessions_refused += 1;
            self.remove_session(q.s11_teid);
            let c = if resp.cause == cause::REQUEST_ACCEPTED {
                cause::MANDATORY_IE_MISSING
            } else {
                resp.cause
            };
            let r = CreateSessionResponse::refused(c, s.ebi).emit(s.mme_c.teid, q.mme_seq);
            self.send_c(self.s11_addr, s.mme_c.ipv4, r);
            return;
        }
        let (Some(pgw_c), Some(pgw_u)) = (resp.sender, resp.s5u_pgw) else {
            return;
        };
        // The PGW's restart counter: grown since we last heard it, the PGW restarted and
        // lost the sessions we had with it (this one, being created, is new there).
        if self
            .cpaths
            .peer_recovery(self.s5_addr, pgw_c.ipv4, resp.recovery)
        {
            self.pgw_restarted(now, pgw_c.ipv4);
        }
        self.s5u.add(s.s5u_teid, pgw_u.teid, pgw_u.ipv4);
        self.by_s5u.insert(s.s5u_teid, q.s11_teid);
        self.by_s1u.insert(s.s1u_teid, q.s11_teid);
        self.paths.watch(now, self.s5_addr, pgw_u.ipv4);
        self.cpaths.watch(now, self.s5_addr, pgw_c.ipv4);
        if let Some(st) = self.sessions.get_mut(&q.s11_teid) {
            st.pgw_c = Some(pgw_c);
            st.pgw_u = Some(pgw_u);
            st.ue_ip = resp.paa;
            st.state = "created";
        }
        self.c.sessions_created += 1;
        let r = CreateSessionResponse {
            cause: cause::REQUEST_ACCEPTED,
            sender: Some(Fteid {
                interface: iface::S11S4_SGW,
                teid: s.s11_teid,
                ipv4: self.s11_addr,
            }),
            pgw_c: Some(pgw_c),
            paa: resp.paa,
            ebi: s.ebi,
            s1u_sgw: Some(Fteid {
                interface: iface::S1U_SGW,
                teid: s.s1u_teid,
                ipv4: self.s11_addr,
            }),
            s5u_pgw: Some(pgw_u),
            recovery: Some(self.recovery),
        }
        .emit(s.mme_c.teid, q.mme_seq);
        self.send_c(self.s11_addr, s.mme_c.ipv4, r);
    }

    /// An End Marker down the path to `to` (its TEID), from our S1-U address.
    fn end_marker(&mut self, to: Fteid) {
        let mut b = vec![0u8; 16];
        if let Ok(n) = emit_signalling(MessageType::EndMarker, to.teid, None, &[], &mut b) {
            b.truncate(n);
            self.c.end_markers_sent += 1;
            self.out.datagrams.push(Datagram {
                src: self.s11_addr,
                dst: to.ipv4,
                sport: GTPU,
                dport: GTPU,
                payload: b,
            });
        }
    }

    fn gtpu(&mut self, now: Instant, local: Ipv4Addr, from: Ipv4Addr, payload: &[u8]) {
        let s1 = local == self.s11_addr;
        let io = gw::GtpuIo {
            paths: &mut self.paths,
            out: &mut self.out.datagrams,
            c: &mut self.pc,
            reply: &mut self.reply,
        };
        let ep = if s1 { &mut self.s1u } else { &mut self.s5u };
        match gw::receive_gtpu(ep, payload, now, local, from, io) {
            Gtpu::Deliver { local_teid, tpdu } => {
                let (map, other) = if s1 {
                    (&self.by_s1u, &mut self.s5u)
                } else {
                    (&self.by_s5u, &mut self.s1u)
                };
                let Some(s) = map.get(&local_teid).and_then(|t| self.sessions.get(t)) else {
                    return;
                };
                let (out_teid, src) = if s1 {
                    (s.s5u_teid, self.s5_addr)
                } else {
                    (s.s1u_teid, self.s11_addr)
                };
                let mut buf = self.out.buffer();
                if let Some(to) = other.encapsulate(out_teid, tpdu, &mut buf) {
                    if s1 {
                        self.c.uplink_packets += 1;
                    } else {
                        self.c.downlink_packets += 1;
                    }
                    self.out.datagrams.push(Datagram {
                        src,
                        dst: to,
                        sport: GTPU,
                        dport: GTPU,
                        payload: buf,
                    });
                }
            }
            // From the PGW: pass it on towards the eNodeB, as TS 23.401 asks of an SGW on a
            // path switch.
            Gtpu::EndMarker { local_teid } if !s1 => {
                let enb = self
                    .by_s5u
                    .get(&local_teid)
                    .and_then(|t| self.sessions.get(t))
                    .and_then(|s| s.enb_u);
                if let Some(enb) = enb {
                    self.end_marker(enb);
                }
            }
            Gtpu::EndMarker { .. } | Gtpu::Done => {}
        }
    }

    fn retransmit(&mut self, now: Instant) {
        let out = &mut self.out.datagrams;
        let gone = self.pending.poll(now, |from, to, bytes| {
            out.push(Datagram {
                src: from,
                dst: to,
                sport: GTPC,
                dport: GTPC,
                payload: bytes.to_vec(),
            })
        });
        for q in gone {
            let q = q.key;
            if matches!(q.kind, Waiting::RestartNotification) {
                continue;
            }
            if let Some(s) = self.remove_session(q.s11_teid) {
                // Cause 100: remote peer not responding.
                let r = match q.kind {
                    Waiting::Create => {
                        CreateSessionResponse::refused(100, s.ebi).emit(s.mme_c.teid, q.mme_seq)
                    }
                    Waiting::Delete | Waiting::RestartNotification => DeleteSessionResponse {
                        cause: cause::REQUEST_ACCEPTED,
                    }
                    .emit(s.mme_c.teid, q.mme_seq),
                };
                self.send_c(self.s11_addr, s.mme_c.ipv4, r);
            }
        }
    }
}

/// The sender's control TEID of a request we could not read whole (0 if absent).
fn gtpc_sender(p: &Packet<&[u8]>) -> u32 {
    p.find(d11_wire::gtpv2::ie::F_TEID, 0)
        .and_then(|i| Fteid::decode(i.value))
        .map_or(0, |f| f.teid)
}

impl SgwLogic {
    /// A G-PDU from one tunnel to the next, switched where it lies rather than copied into a
    /// datagram of ours: the same octets [`gtpu`](Self::gtpu) and the router would send
    /// (IPv4 header, GTP-U ports, the next tunnel's TEID; the UDP checksum updated as RFC 1624
    /// does, or computed if the sender sent none), counted the same. Only a plain G-PDU (see
    /// [`Endpoint::plain_g_pdu`]) in an unfragmented IPv4 packet without options whose
    /// checksum is right and whose session has both tunnels; false for anything else, which
    /// the slow path takes (and counts).
    fn switch_in_place(&mut self, ip: &mut [u8]) -> bool {
        let Some(gw::InPlace {
            src,
            dst,
            header,
            udp,
        }) = gw::gtpu_in_place(ip)
        else {
            return false;
        };
        let s1 = dst == self.s11_addr;
        if !s1 && dst != self.s5_addr {
            return false;
        }
        let sum = u16::from_be_bytes([udp[6], udp[7]]);
        let (ep, next, map) = if s1 {
            (&mut self.s1u, &mut self.s5u, &self.by_s1u)
        } else {
            (&mut self.s5u, &mut self.s1u, &self.by_s5u)
        };
        let Some(teid) = ep.plain_g_pdu(src, &udp[8..]) else {
            return false;
        };
        let Some(s) = map.get(&teid).and_then(|t| self.sessions.get(t)) else {
            return false;
        };
        let (out_teid, out_src) = if s1 {
            (s.s5u_teid, self.s5_addr)
        } else {
            (s.s1u_teid, self.s11_addr)
        };
        // What the checksum covers and changes: the pseudo-header's addresses, the source
        // port, the TEID.
        let mut old = [0u8; 14];
        old[..4].copy_from_slice(&src.octets());
        old[4..8].copy_from_slice(&dst.octets());
        old[8..10].copy_from_slice(&udp[0..2]);
        old[10..14].copy_from_slice(&udp[12..16]);
        let Some(to) = ep.switch_in_place(teid, next, out_teid, &mut udp[8..]) else {
            return false;
        };
        if s1 {
            self.c.uplink_packets += 1;
        } else {
            self.c.downlink_packets += 1;
        }
        self.c.switched_in_place += 1;
        udp[0..2].copy_from_slice(&GTPU.to_be_bytes());
        let sum = if sum == 0 {
            udp[6..8].fill(0);
            d11_wire::ip::udp_checksum(out_src, to, udp)
        } else {
            let mut new = [0u8; 14];
            new[..4].copy_from_slice(&out_src.octets());
            new[4..8].copy_from_slice(&to.octets());
            new[8..10].copy_from_slice(&udp[0..2]);
            new[10..14].copy_from_slice(&udp[12..16]);
            match d11_wire::checksum_adjust(sum, &old, &new) {
                0 => 0xffff,
                c => c,
            }
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        let total = header.len() + udp.len();
        d11_wire::ip::write_header(header, total, d11_wire::ip::DEFAULT_TTL, 17, out_src, to);
        true
    }
}

impl SgwLogic {
    /// A UDP super-frame of G-PDUs (see [`crate::superframe`]) switched as
    /// [`switch_in_place`](Self::switch_in_place) switches one, every G-PDU of it in place,
    /// and sent on as one super-frame. Only if every G-PDU is plain and of one tunnel whose
    /// session has both; false for anything else, which is cut and taken G-PDU by G-PDU.
    fn switch_super_frame(
        &mut self,
        now: Instant,
        frame: &mut [u8],
        g: &Gso,
        out: &mut Direct<'_>,
    ) -> bool {
        let Some(mut pdus) = crate::superframe::g_pdus(frame, g) else {
            return false;
        };
        let s1 = pdus.dst == self.s11_addr;
        if !s1 && pdus.dst != self.s5_addr {
            return false;
        }
        let (ep, next, map) = if s1 {
            (&mut self.s1u, &mut self.s5u, &self.by_s1u)
        } else {
            (&mut self.s5u, &mut self.s1u, &self.by_s5u)
        };
        let Some(teid) = pdus.one_tunnel(ep) else {
            return false;
        };
        let Some(s) = map.get(&teid).and_then(|t| self.sessions.get(t)) else {
            return false;
        };
        let out_src = if s1 { self.s5_addr } else { self.s11_addr };
        let out_teid = if s1 { s.s5u_teid } else { s.s1u_teid };
        let mut to = None;
        let mut n = 0;
        for pdu in pdus.iter_mut() {
            // Both tunnels exist (checked above): every G-PDU switches, or none.
            match ep.switch_in_place(teid, next, out_teid, pdu) {
                Some(t) => to = Some(t),
                None => break,
            }
            n += 1;
        }
        let Some(to) = to else {
            return false;
        };
        if s1 {
            self.c.uplink_packets += n;
        } else {
            self.c.downlink_packets += n;
        }
        self.c.switched_in_place += n;
        self.c.super_frames_switched += 1;
        let size = pdus.size as u16;
        out.udp_segments(now, (out_src, to), (GTPU, GTPU), pdus.payload, size);
        true
    }
}

impl Hook for SgwLogic {
    fn prerouting(&mut self, _now: Instant, _in_port: PortId, ip: &mut [u8]) -> HookVerdict {
        if self.switch_in_place(ip) {
            HookVerdict::Send
        } else {
            HookVerdict::Continue
        }
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
        match u.dport {
            GTPU => self.gtpu(now, u.dst, u.src, u.payload),
            GTPC => self.gtpc(now, u.dst, u.src, u.payload),
            _ => return HookVerdict::Continue,
        }
        HookVerdict::Drop
    }
}

impl RouterProgram for SgwLogic {
    fn role(&self) -> &'static str {
        "sgw"
    }

    /// UDP super-frames of G-PDUs are switched whole; every other offloaded frame is cut
    /// into plain ones for the router.
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
        _port: PortId,
        frame: &mut [u8],
        gso: &Gso,
        out: &mut Direct<'_>,
    ) -> bool {
        self.switch_super_frame(now, frame, gso, out)
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    fn poll_at(&self) -> Option<Instant> {
        let retransmit = self.pending.poll_at();
        [self.paths.poll_at(), self.cpaths.poll_at(), retransmit]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll(&mut self, now: Instant) {
        self.retransmit(now);
        let (s11, s1u, s5u) = (self.s11_addr, &mut self.s1u, &mut self.s5u);
        self.paths.poll(
            now,
            |local| {
                let mut b = Vec::new();
                if local == s11 {
                    s1u.echo_request(&mut b);
                } else {
                    s5u.echo_request(&mut b);
                }
                Some(b)
            },
            &mut self.out.datagrams,
        );
        // GTPv2-C Echo to the PGWs, each with a sequence number of ours.
        let (seq, recovery) = (&mut self.seq, self.recovery);
        self.cpaths.poll(
            now,
            |_| {
                *seq = (*seq + 1) & 0x00ff_ffff;
                Some(
                    EchoRequest {
                        recovery: Some(recovery),
                    }
                    .emit(0, *seq),
                )
            },
            &mut self.out.datagrams,
        );
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sessions", "paths", "control_paths"]
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        match table {
            "sessions" => {
                let l = self;
                let mut v: Vec<&Session> = l.sessions.values().collect();
                v.sort_by(|a, b| a.imsi.cmp(&b.imsi));
                Some(json!(v
                    .iter()
                    .map(|s| {
                        let up = l.s5u.get(s.s5u_teid);
                        let down = l.s1u.get(s.s1u_teid);
                        json!({
                            "imsi": s.imsi,
                            "state": s.state,
                            "ue_ip": s.ue_ip.map(|a| a.to_string()),
                            "pdn_type": s.pdn_type,
                            "ebi": s.ebi,
                            "s11_sgw_teid": s.s11_teid,
                            "s11_mme_teid": s.mme_c.teid,
                            "s5c_sgw_teid": s.s5c_teid,
                            "s5c_pgw_teid": s.pgw_c.map(|f| f.teid),
                            "s1u_sgw_teid": s.s1u_teid,
                            "s1u_enb_teid": s.enb_u.map(|f| f.teid),
                            "enb": s.enb_u.map(|f| f.ipv4.to_string()),
                            "s5u_sgw_teid": s.s5u_teid,
                            "s5u_pgw_teid": s.pgw_u.map(|f| f.teid),
                            "pgw": s.pgw_u.map(|f| f.ipv4.to_string()),
                            "uplink_packets": up.map(|t| t.tx_packets),
                            "uplink_bytes": up.map(|t| t.tx_bytes),
                            "downlink_packets": down.map(|t| t.tx_packets),
                            "downlink_bytes": down.map(|t| t.tx_bytes),
                        })
                    })
                    .collect::<Vec<_>>()))
            }
            "paths" => Some(self.paths.view(now)),
            "control_paths" => Some(self.cpaths.view(now)),
            _ => None,
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.c.for_each(out);
        out("gtpc_retransmissions", self.pending.retransmissions);
        out("gtpc_timeouts", self.pending.timeouts);
        self.pc.for_each(out);
        gw::endpoint_counters(&self.s1u, "s1u_", out);
        gw::endpoint_counters(&self.s5u, "s5u_", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        drive as drive_with, drive_frames, gpdu, gpdu_with_seq, udp_frame, with_udp_checksum,
    };
    use d11_wire::gtpu::Packet as GtpU;
    use d11_wire::gtpv2::message::PgwRestartNotificationAck;

    fn drive(s: &mut Sgw, port: PortId, f: Vec<u8>) -> Vec<(PortId, Ipv4Addr, u16, Vec<u8>)> {
        drive_with(s, port, f, &[MME, ENB1, ENB2, PGW])
    }

    const MME: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 5], Ipv4Addr::new(172, 16, 1, 5));
    const ENB1: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 2], Ipv4Addr::new(172, 16, 1, 2));
    const ENB2: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 7], Ipv4Addr::new(172, 16, 1, 7));
    const PGW: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 4], Ipv4Addr::new(172, 16, 5, 4));

    fn sgw() -> Sgw {
        sgw_with(json!({}))
    }

    /// An SGW on 172.16.1.3 (epc) and 172.16.5.3 (s5), without path echoes, with `extra`
    /// config keys.
    fn sgw_with(extra: Value) -> Sgw {
        let mut v = json!({
            "name": "sgw",
            "ports": [
                {"name": "epc", "addresses": ["172.16.1.3/24"]},
                {"name": "s5", "addresses": ["172.16.5.3/24"]},
            ],
            "echo_interval_s": 0,
        });
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        let cfg: SgwConfig = serde_json::from_value(v).unwrap();
        SgwLogic::new(&cfg, 3).unwrap()
    }

    fn mac(s: &Sgw, port: PortId) -> [u8; 6] {
        s.router.port_mac(port).unwrap().0
    }

    /// The MME's Create Session Request for the phone, naming the PGW to use.
    fn mme_csr(pdn_type: PdnType) -> CreateSessionRequest {
        CreateSessionRequest {
            imsi: "001010000000001".into(),
            apn: "internet".into(),
            pdn_type,
            sender: Fteid {
                interface: iface::S11_MME,
                teid: 0x3e,
                ipv4: MME.1,
            },
            pgw_c: Some(Fteid {
                interface: iface::S5S8C_PGW,
                teid: 0,
                ipv4: PGW.1,
            }),
            paa: Ipv4Addr::UNSPECIFIED,
            ebi: 5,
            s5u_sgw: None,
        }
    }

    /// The PGW's acceptance, with its restart counter `recovery`.
    fn pgw_created(recovery: u8) -> CreateSessionResponse {
        CreateSessionResponse {
            cause: cause::REQUEST_ACCEPTED,
            sender: Some(Fteid {
                interface: iface::S5S8C_PGW,
                teid: 0x77,
                ipv4: PGW.1,
            }),
            pgw_c: None,
            paa: Some(Ipv4Addr::new(10, 45, 0, 2)),
            ebi: 5,
            s1u_sgw: None,
            s5u_pgw: Some(Fteid {
                interface: iface::S5S8U_PGW,
                teid: 0x88,
                ipv4: PGW.1,
            }),
            recovery: Some(recovery),
        }
    }

    #[test]
    fn sessions_switch_tunnels_and_a_path_switch_ends_with_an_end_marker() {
        let mut s = sgw();
        let (epc, s5) = (mac(&s, 0), mac(&s, 1));
        let sgw_c = Ipv4Addr::new(172, 16, 1, 3);
        let csr = mme_csr(PdnType::Ethernet);
        // MME -> SGW -> PGW.
        let out = drive(
            &mut s,
            0,
            udp_frame(epc, MME, sgw_c, GTPC, &csr.emit(0, 100)),
        );
        let [(1, to, GTPC, fwd)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(*to, PGW.1);
        let p = Packet::new_checked(fwd).unwrap();
        let fwd_req = CreateSessionRequest::parse(&p).unwrap();
        let s5u_sgw = fwd_req.s5u_sgw.unwrap();
        // PGW -> SGW -> MME.
        let resp = pgw_created(1);
        let s5_addr = Ipv4Addr::new(172, 16, 5, 3);
        let out = drive(
            &mut s,
            1,
            udp_frame(
                s5,
                PGW,
                s5_addr,
                GTPC,
                &resp.emit(fwd_req.sender.teid, p.header().sequence),
            ),
        );
        let [(0, _, GTPC, ans)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let ans_p = Packet::new_checked(ans).unwrap();
        assert_eq!(
            (ans_p.header().teid, ans_p.header().sequence),
            (Some(0x3e), 100)
        );
        let ans = CreateSessionResponse::parse(&ans_p).unwrap();
        assert_eq!(ans.paa, Some(Ipv4Addr::new(10, 45, 0, 2)));
        let (s11, s1u) = (ans.sender.unwrap().teid, ans.s1u_sgw.unwrap().teid);
        // Modify Bearer: the eNodeB's end.
        let enb1 = Fteid {
            interface: iface::S1U_ENODEB,
            teid: 0xe1,
            ipv4: ENB1.1,
        };
        let out = drive(
            &mut s,
            0,
            udp_frame(
                epc,
                MME,
                sgw_c,
                GTPC,
                &ModifyBearerRequest { ebi: 5, enb: enb1 }.emit(s11, 101),
            ),
        );
        let [(0, _, GTPC, m)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            Packet::new_checked(m).unwrap().cause(),
            Some(cause::REQUEST_ACCEPTED)
        );
        // Uplink: S1-U TEID in, S5 TEID 0x88 out, the T-PDU unchanged; downlink the other way.
        let out = drive(
            &mut s,
            0,
            udp_frame(epc, ENB1, sgw_c, GTPU, &gpdu(s1u, b"uplink frame")),
        );
        let [(1, to, GTPU, g)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let g = GtpU::new_checked(&g[..]).unwrap();
        assert_eq!(
            (*to, g.teid(), g.payload()),
            (PGW.1, 0x88, &b"uplink frame"[..])
        );
        let out = drive(
            &mut s,
            1,
            udp_frame(s5, PGW, s5_addr, GTPU, &gpdu(s5u_sgw.teid, b"downlink")),
        );
        let [(0, to, GTPU, g)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let g = GtpU::new_checked(&g[..]).unwrap();
        assert_eq!(
            (*to, g.teid(), g.payload()),
            (ENB1.1, 0xe1, &b"downlink"[..])
        );
        // Path switch to another eNodeB: the old one gets an End Marker with its TEID.
        let enb2 = Fteid {
            interface: iface::S1U_ENODEB,
            teid: 0xe2,
            ipv4: ENB2.1,
        };
        let out = drive(
            &mut s,
            0,
            udp_frame(
                epc,
                MME,
                sgw_c,
                GTPC,
                &ModifyBearerRequest { ebi: 5, enb: enb2 }.emit(s11, 102),
            ),
        );
        let em = out.iter().find(|o| o.2 == GTPU).expect("End Marker");
        let g = GtpU::new_checked(&em.3[..]).unwrap();
        assert_eq!(
            (em.1, g.message_type(), g.teid()),
            (ENB1.1, MessageType::EndMarker, 0xe1)
        );
        assert_eq!(s.logic.c.end_markers_sent, 1);
        let out = drive(
            &mut s,
            1,
            udp_frame(s5, PGW, s5_addr, GTPU, &gpdu(s5u_sgw.teid, b"x")),
        );
        assert_eq!(out[0].1, ENB2.1);
        // Delete: through to the PGW and back; the session is gone.
        let out = drive(
            &mut s,
            0,
            udp_frame(
                epc,
                MME,
                sgw_c,
                GTPC,
                &DeleteSessionRequest { ebi: 5 }.emit(s11, 103),
            ),
        );
        let [(1, _, GTPC, d)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let d = Packet::new_checked(d).unwrap();
        assert_eq!(d.header().teid, Some(0x77));
        let r = DeleteSessionResponse {
            cause: cause::REQUEST_ACCEPTED,
        }
        .emit(fwd_req.sender.teid, d.header().sequence);
        let out = drive(&mut s, 1, udp_frame(s5, PGW, s5_addr, GTPC, &r));
        let [(0, _, GTPC, d)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(Packet::new_checked(d).unwrap().header().sequence, 103);
        assert!(s.logic.sessions.is_empty());
        let out = drive(
            &mut s,
            0,
            udp_frame(epc, ENB1, sgw_c, GTPU, &gpdu(s1u, b"late")),
        );
        // Its TEID is gone: an Error Indication.
        let g = GtpU::new_checked(&out[0].3[..]).unwrap();
        assert_eq!(g.message_type(), MessageType::ErrorIndication);
    }

    #[test]
    fn a_pgw_restart_deletes_its_sessions_and_notifies_the_mme() {
        let mut s = sgw();
        let (epc, s5) = (mac(&s, 0), mac(&s, 1));
        let (sgw_c, s5_addr) = (Ipv4Addr::new(172, 16, 1, 3), Ipv4Addr::new(172, 16, 5, 3));
        let csr = mme_csr(PdnType::Ipv4);
        let out = drive(&mut s, 0, udp_frame(epc, MME, sgw_c, GTPC, &csr.emit(0, 7)));
        let [(1, _, GTPC, fwd)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let p = Packet::new_checked(fwd).unwrap();
        let sender = CreateSessionRequest::parse(&p).unwrap().sender.teid;
        let seq = p.header().sequence;
        drive(
            &mut s,
            1,
            udp_frame(s5, PGW, s5_addr, GTPC, &pgw_created(4).emit(sender, seq)),
        );
        assert_eq!(s.logic.sessions.len(), 1);
        // An Echo Response from the PGW with the same Recovery: nothing happens.
        let echo = |r| EchoResponse { recovery: Some(r) }.emit(0, 1);
        let out = drive(&mut s, 1, udp_frame(s5, PGW, s5_addr, GTPC, &echo(4)));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(s.logic.sessions.len(), 1);
        // Recovery 5: the PGW restarted. The session goes, the MME is told.
        let out = drive(&mut s, 1, udp_frame(s5, PGW, s5_addr, GTPC, &echo(5)));
        assert!(s.logic.sessions.is_empty());
        assert!(s.logic.s1u.get(0x1100_0001).is_none());
        let [(0, to, GTPC, prn)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(*to, MME.1);
        let p = Packet::new_checked(prn).unwrap();
        assert_eq!(p.header().message_type, msg::PGW_RESTART_NOTIFICATION);
        assert_eq!(
            PgwRestartNotification::parse(&p),
            Ok(PgwRestartNotification {
                pgw: PGW.1,
                sgw: sgw_c
            })
        );
        // Unanswered, it is sent again after T3; the MME's acknowledgment ends it.
        let later = Instant::now() + crate::transactions::T3 + Duration::from_millis(10);
        s.logic.retransmit(later);
        assert_eq!(s.logic.pending.retransmissions, 1);
        let ack = PgwRestartNotificationAck {
            cause: cause::REQUEST_ACCEPTED,
        }
        .emit(0, p.header().sequence);
        drive(&mut s, 0, udp_frame(epc, MME, sgw_c, GTPC, &ack));
        assert!(s.logic.pending.is_empty());
        assert_eq!(
            (
                s.logic.c.pgw_restarts,
                s.logic.c.sessions_deleted_peer_restart,
                s.logic.c.pgw_restart_notifications_acked
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_plain_g_pdu_is_switched_in_place_into_the_octets_the_slow_path_sends() {
        let mut s = sgw_with(json!({
            "static_sessions": [{"imsi": "001010000000001", "enb": "172.16.1.2",
                "enb_teid": 225, "s1u_teid": 4096, "pgw": "172.16.5.4", "pgw_teid": 119,
                "s5u_teid": 8192}],
        }));
        let epc = mac(&s, 0);
        let sgw_u = Ipv4Addr::new(172, 16, 1, 3);
        let body: Vec<u8> = (0..1201u32).map(|i| (i * 7 % 251) as u8).collect();
        // The same T-PDU with a sequence number (the slow path: parsed, copied, re-headed).
        let seq = gpdu_with_seq(4096, &body);
        let frames = |s: &mut Sgw, f: Vec<u8>| drive_frames(s, 0, f, &[MME, ENB1, ENB2, PGW]);
        let slow = frames(&mut s, udp_frame(epc, ENB1, sgw_u, GTPU, &seq));
        let (sent, delivered) = (
            s.router.counters_ref().local_sent,
            s.router.counters_ref().local_delivered,
        );
        // Plain, without a UDP checksum (computed) and with one (updated).
        let plain = udp_frame(epc, ENB1, sgw_u, GTPU, &gpdu(4096, &body));
        let fast = frames(&mut s, plain.clone());
        let fast_sum = frames(&mut s, with_udp_checksum(plain.clone()));
        let [(1, slow)] = slow.as_slice() else {
            panic!("{slow:?}")
        };
        assert_eq!(fast, [(1, slow.clone())]);
        assert_eq!(fast_sum, [(1, slow.clone())]);
        let out = gw::parse_udp(&slow[14..]).unwrap();
        assert_eq!((out.src, out.dst), (Ipv4Addr::new(172, 16, 5, 3), PGW.1));
        assert_eq!(GtpU::new_checked(out.payload).unwrap().teid(), 119);
        assert_eq!(s.router.counters_ref().local_sent, sent + 2);
        assert_eq!(s.router.counters_ref().local_delivered, delivered + 2);
        assert_eq!(s.logic.c.uplink_packets, 3);
        assert_eq!(s.logic.c.switched_in_place, 2);
        assert_eq!(s.logic.s1u.c.rx_g_pdu, 3);
        assert_eq!(s.logic.s5u.get(8192).unwrap().tx_packets, 3);
        // A wrong checksum: not switched, counted by the slow path, nothing sent.
        let mut bad = with_udp_checksum(plain);
        bad[41] ^= 1;
        assert!(frames(&mut s, bad).is_empty());
        assert_eq!((s.logic.c.udp_errors, s.logic.c.uplink_packets), (1, 3));
        assert_eq!(s.logic.c.switched_in_place, 2);
    }

    #[test]
    fn forwarding_g_pdus_allocates_nothing_once_warm() {
        let mut s = sgw_with(json!({
            "static_sessions": [{"imsi": "001010000000001", "enb": "172.16.1.2",
                "enb_teid": 225, "s1u_teid": 4096, "pgw": "172.16.5.4", "pgw_teid": 119,
                "s5u_teid": 8192}],
        }));
        let (epc, s5) = (mac(&s, 0), mac(&s, 1));
        let sgw_c = Ipv4Addr::new(172, 16, 1, 3);
        let s5_addr = Ipv4Addr::new(172, 16, 5, 3);
        let up = udp_frame(epc, ENB1, sgw_c, GTPU, &gpdu(4096, &[0x45; 1200]));
        let down = udp_frame(s5, PGW, s5_addr, GTPU, &gpdu(8192, &[0x45; 1200]));
        // Warm: the next hops resolved, the buffers made.
        for _ in 0..4 {
            assert_eq!(drive(&mut s, 0, up.clone()).len(), 1);
            assert_eq!(drive(&mut s, 1, down.clone()).len(), 1);
        }
        let (allocs, sent) = d11_element::alloc_count::allocations_forwarding(
            &mut s,
            Instant::now(),
            &[(0, up), (1, down)],
            1000,
        );
        assert_eq!(sent, 2000);
        assert_eq!(allocs, 0, "heap allocations for 2000 G-PDUs");
        assert_eq!(
            (s.logic.c.uplink_packets, s.logic.c.downlink_packets),
            (1008, 1008)
        );
    }
}
