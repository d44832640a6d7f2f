//! d11-mme: the mobility management entity, on the userspace stack (one `epc` port).
//!
//! An attach, as the MME runs it (docs/mobile.md has the message tables):
//!
//! 1. `UplinkNas AttachRequest` (IMSI, PDN type) from the eNodeB, UDP 36412.
//! 2. `AuthInfoRequest` to the HSS (UDP 3868): RAND, XRES, AUTN.
//! 3. `AuthenticationRequest` (RAND, AUTN) to the UE; the UE checks AUTN with its key (the
//!    network proves itself) and answers RES, which must equal XRES (the UE proves itself).
//!    `AuthenticationFailure` "sync-failure" carries AUTS: the HSS resynchronises and the MME
//!    asks again with a fresh vector. A MAC failure or a wrong RES ends in `AttachReject`.
//! 4. GTPv2-C `Create Session Request` to the SGW (S11, UDP 2123), which goes on to the PGW;
//!    the answer carries the UE's address and the SGW's S1-U F-TEID.
//! 5. `InitialContextSetupRequest` to the eNodeB: it sets up the bearer and answers with its
//!    own S1-U TEID, which goes to the SGW in `Modify Bearer Request`.
//! 6. `AttachAccept` to the UE: address, gateway, DNS server, MTU.
//!
//! `DetachRequest` runs `Delete Session Request` and releases the eNodeB's context.
//! GTPv2-C requests are retransmitted (T3 1 s, N3 3); Echo Requests are answered with our
//! Recovery.

use d11_element::{counters, App};
use d11_epc::s1::{self, unhex, Nas, S1};
use d11_wire::gtpv2::message::{
    self as gtpc, CreateSessionRequest, CreateSessionResponse, DeleteSessionRequest, EchoRequest,
    EchoResponse, Message, ModifyBearerRequest, PdnType, PgwRestartNotification,
    PgwRestartNotificationAck,
};
use d11_wire::gtpv2::{cause, iface, msg};
// (The HSS requests use GTPv2-C's T3 and N3 too.)
use d11_epc::transactions::{Transactions, N3, T3};
use d11_stack::{Stack, StackConfig, StackElement, UdpSocket};
use d11_wire::gtpv2::{value::Fteid, Packet};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the MME waits for the UE or the eNodeB at each step.
const UE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
pub struct MmeConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    pub hss: Ipv4Addr,
    pub sgw: Ipv4Addr,
    /// The PGW the SGW is to use (the MME's APN resolution, fixed here).
    pub pgw: Ipv4Addr,
    #[serde(default = "default_apn")]
    pub apn: String,
    /// The DNS server UEs are given.
    #[serde(default = "default_dns")]
    pub dns: Ipv4Addr,
    /// The UEs' gateway and prefix (the PGW's pool).
    #[serde(default = "default_gateway")]
    pub ue_gateway: Ipv4Addr,
    #[serde(default = "default_prefix")]
    pub ue_prefix_len: u8,
}

fn default_apn() -> String {
    "internet".into()
}
fn default_dns() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 53)
}
fn default_gateway() -> Ipv4Addr {
    Ipv4Addr::new(10, 45, 0, 1)
}
fn default_prefix() -> u8 {
    16
}

counters! {
    pub struct MmeCounters {
        s1_received,
        s1_bad,
        s1_unexpected,
        attach_requests,
        attach_retransmissions,
        attach_accepted,
        attach_rejected,
        reject_unknown_imsi,
        reject_mac_failure,
        reject_wrong_res,
        reject_session,
        reject_timeout,
        resyncs,
        detaches,
        gtpc_received,
        gtpc_malformed,
        gtpc_unexpected,
        hss_timeouts,
        echo_answered,
        echo_unanswered,
        sgw_restarts,
        pgw_restart_notifications,
        network_detaches,
        gtpc_untrusted,
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Ctx {
    imsi: String,
    state: String,
    enb: String,
    enb_ue_id: u32,
    mme_ue_id: u32,
    pdn_type: PdnType,
    ue_ip: Option<Ipv4Addr>,
    s11_mme_teid: u32,
    s11_sgw_teid: Option<u32>,
    s1u_sgw_teid: Option<u32>,
    s1u_enb_teid: Option<u32>,
    s5u_pgw_teid: Option<u32>,
    reject_cause: Option<String>,
    #[serde(skip)]
    sgw_c: Option<Fteid>,
}

struct Shared {
    c: MmeCounters,
    contexts: BTreeMap<String, Ctx>,
    mail: HashMap<(SocketAddrV4, u32), mpsc::UnboundedSender<S1>>,
    /// Attaches in progress, by the eNodeB's name for the UE.
    running: HashMap<(SocketAddrV4, u32), (String, PdnType, tokio::task::AbortHandle)>,
    /// Our GTPv2-C requests in flight, each with who waits for its answer.
    gtp: Transactions<oneshot::Sender<Vec<u8>>>,
    hss_wait: HashMap<u64, oneshot::Sender<Value>>,
    seq: u32,
    hss_id: u64,
    next_id: u32,
    sgw_recovery: Option<u8>,
}

#[derive(Clone)]
struct Env {
    cfg: Rc<MmeConfig>,
    addr: Ipv4Addr,
    sh: Rc<RefCell<Shared>>,
    s1: Rc<UdpSocket>,
    gtp: Rc<UdpSocket>,
    hss: Rc<UdpSocket>,
    recovery: u8,
    /// Signalled when a GTPv2-C request starts (the retransmitter's next deadline moved).
    gtp_due: Rc<tokio::sync::Notify>,
}

/// The tasks' clock (tokio's, so that tests can pause and advance it).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[derive(Debug)]
struct Reject(&'static str);

impl Env {
    fn count(&self, f: impl FnOnce(&mut MmeCounters)) {
        f(&mut self.sh.borrow_mut().c);
    }

    fn set(&self, imsi: &str, f: impl FnOnce(&mut Ctx)) {
        if let Some(c) = self.sh.borrow_mut().contexts.get_mut(imsi) {
            f(c);
        }
    }

    async fn to_enb(&self, enb: SocketAddrV4, m: &S1) {
        let b = serde_json::to_vec(m).unwrap_or_default();
        if let Err(e) = self.s1.send_to(&b, enb).await {
            tracing::warn!(error = %e, "cannot send to the eNodeB");
        }
    }

    /// A GTPv2-C request to the SGW, retransmitted until answered (T3, N3: see
    /// [`retransmit_gtp`](Self::retransmit_gtp)); the answer's bytes, `None` if it never came.
    async fn gtp_request(&self, build: impl Fn(u32) -> Vec<u8>) -> Option<Vec<u8>> {
        let seq = {
            let mut s = self.sh.borrow_mut();
            s.seq = (s.seq + 1) & 0x00ff_ffff;
            s.seq
        };
        let bytes = build(seq);
        let to = SocketAddrV4::new(self.cfg.sgw, d11_wire::gtpv2::UDP_PORT);
        let (tx, rx) = oneshot::channel();
        self.sh
            .borrow_mut()
            .gtp
            .begin(now(), seq, self.addr, self.cfg.sgw, bytes.clone(), tx);
        self.gtp_due.notify_one();
        if self.gtp.send_to(&bytes, to).await.is_err() {
            self.sh.borrow_mut().gtp.answered(seq);
            return None;
        }
        // Given up, the transaction drops its sender: the wait ends with an error.
        rx.await.ok()
    }

    /// Sends again what is due of our GTPv2-C requests, and gives up those out of tries.
    async fn retransmit_gtp(self) -> anyhow::Result<()> {
        loop {
            let next = self.sh.borrow().gtp.poll_at();
            match next {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.gtp_due.notified() => continue,
                    }
                }
                None => {
                    self.gtp_due.notified().await;
                    continue;
                }
            }
            let mut resend = Vec::new();
            let gone = self
                .sh
                .borrow_mut()
                .gtp
                .poll(now(), |_, to, b| resend.push((to, b.to_vec())));
            for (to, b) in resend {
                let _ = self
                    .gtp
                    .send_to(&b, SocketAddrV4::new(to, d11_wire::gtpv2::UDP_PORT))
                    .await;
            }
            drop(gone);
        }
    }

    /// A request to the HSS (JSON); its answer.
    async fn hss_request(&self, mut req: Value) -> Option<Value> {
        let id = {
            let mut s = self.sh.borrow_mut();
            s.hss_id += 1;
            s.hss_id
        };
        req["id"] = json!(id);
        let bytes = req.to_string().into_bytes();
        let to = SocketAddrV4::new(self.cfg.hss, 3868);
        for _ in 0..=N3 {
            let (tx, rx) = oneshot::channel();
            self.sh.borrow_mut().hss_wait.insert(id, tx);
            if self.hss.send_to(&bytes, to).await.is_err() {
                break;
            }
            if let Ok(Ok(answer)) = tokio::time::timeout(T3, rx).await {
                return Some(answer);
            }
        }
        self.sh.borrow_mut().hss_wait.remove(&id);
        self.count(|c| c.hss_timeouts += 1);
        None
    }

    async fn attach(
        &self,
        enb: SocketAddrV4,
        enb_ue_id: u32,
        imsi: String,
        pdn_type: PdnType,
        mut rx: mpsc::UnboundedReceiver<S1>,
    ) {
        let mme_ue_id = {
            let mut s = self.sh.borrow_mut();
            s.next_id += 1;
            let id = s.next_id;
            s.contexts.insert(
                imsi.clone(),
                Ctx {
                    imsi: imsi.clone(),
                    state: "authenticating".into(),
                    enb: enb.ip().to_string(),
                    enb_ue_id,
                    mme_ue_id: id,
                    pdn_type,
                    s11_mme_teid: 0x3e00_0000 | id,
                    ..Default::default()
                },
            );
            id
        };
        match self
            .run_attach(enb, enb_ue_id, mme_ue_id, &imsi, pdn_type, &mut rx)
            .await
        {
            Ok(()) => {
                self.count(|c| c.attach_accepted += 1);
                self.set(&imsi, |c| c.state = "attached".into());
                tracing::info!(%imsi, "attached");
            }
            Err(Reject(cause)) => {
                self.count(|c| c.attach_rejected += 1);
                tracing::info!(%imsi, cause, "attach rejected");
                self.set(&imsi, |c| {
                    c.state = "rejected".into();
                    c.reject_cause = Some(cause.into());
                });
                self.to_enb(
                    enb,
                    &S1::DownlinkNas {
                        enb_ue_id,
                        nas: Nas::AttachReject {
                            cause: cause.into(),
                        },
                    },
                )
                .await;
            }
        }
    }

    async fn next_from_ue(&self, rx: &mut mpsc::UnboundedReceiver<S1>) -> Result<S1, Reject> {
        match tokio::time::timeout(UE_WAIT, rx.recv()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(Reject("superseded")),
            Err(_) => {
                self.count(|c| c.reject_timeout += 1);
                Err(Reject("timeout"))
            }
        }
    }

    async fn run_attach(
        &self,
        enb: SocketAddrV4,
        enb_ue_id: u32,
        mme_ue_id: u32,
        imsi: &str,
        pdn_type: PdnType,
        rx: &mut mpsc::UnboundedReceiver<S1>,
    ) -> Result<(), Reject> {
        // Authentication, with at most one resynchronisation.
        let mut resynced = false;
        let mut static_ip: Option<Ipv4Addr>;
        loop {
            let v = self
                .hss_request(json!({"type": "AuthInfoRequest", "imsi": imsi}))
                .await
                .ok_or_else(|| {
                    self.count(|c| c.reject_timeout += 1);
                    Reject("hss-unreachable")
                })?;
            if v["result"] != "ok" {
                self.count(|c| c.reject_unknown_imsi += 1);
                return Err(Reject("unknown-imsi"));
            }
            let (Some(rand), Some(autn), Some(xres)) =
                (v["rand"].as_str(), v["autn"].as_str(), v["xres"].as_str())
            else {
                return Err(Reject("hss-bad-answer"));
            };
            let (rand, xres) = (rand.to_string(), xres.to_string());
            static_ip = v["static_ip"]
                .as_str()
                .and_then(|a| a.parse::<Ipv4Addr>().ok());
            self.to_enb(
                enb,
                &S1::DownlinkNas {
                    enb_ue_id,
                    nas: Nas::AuthenticationRequest {
                        rand: rand.clone(),
                        autn: autn.to_string(),
                    },
                },
            )
            .await;
            match self.next_from_ue(rx).await? {
                S1::UplinkNas {
                    nas: Nas::AuthenticationResponse { res },
                    ..
                } => {
                    if res.eq_ignore_ascii_case(&xres) {
                        break;
                    }
                    self.count(|c| c.reject_wrong_res += 1);
                    return Err(Reject("authentication-failed"));
                }
                S1::UplinkNas {
                    nas: Nas::AuthenticationFailure { cause, auts },
                    ..
                } if cause == "sync-failure" && !resynced => {
                    let auts = auts.unwrap_or_default();
                    if unhex::<14>(&auts).is_none() {
                        return Err(Reject("bad-auts"));
                    }
                    self.count(|c| c.resyncs += 1);
                    resynced = true;
                    let a = self
                        .hss_request(json!({"type": "ResyncRequest", "imsi": imsi, "rand": rand, "auts": auts}))
                        .await;
                    if a.as_ref().map(|a| &a["result"]) != Some(&json!("ok")) {
                        self.count(|c| c.reject_mac_failure += 1);
                        return Err(Reject("resync-failed"));
                    }
                }
                S1::UplinkNas {
                    nas: Nas::AuthenticationFailure { .. },
                    ..
                } => {
                    self.count(|c| c.reject_mac_failure += 1);
                    return Err(Reject("mac-failure"));
                }
                _ => {
                    self.count(|c| c.s1_unexpected += 1);
                    return Err(Reject("protocol-error"));
                }
            }
        }
        // Session: Create Session Request on S11.
        self.set(imsi, |c| c.state = "creating-session".into());
        let mme_teid = 0x3e00_0000 | mme_ue_id;
        let req = CreateSessionRequest {
            imsi: imsi.to_string(),
            apn: self.cfg.apn.clone(),
            pdn_type,
            sender: Fteid {
                interface: iface::S11_MME,
                teid: mme_teid,
                ipv4: self.addr,
            },
            pgw_c: Some(Fteid {
                interface: iface::S5S8C_PGW,
                teid: 0,
                ipv4: self.cfg.pgw,
            }),
            // The subscription's static address, if any; else the PGW chooses.
            paa: static_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            ebi: gtpc::DEFAULT_EBI,
            s5u_sgw: None,
        };
        let answer = self
            .gtp_request(|seq| req.emit(0, seq))
            .await
            .ok_or_else(|| {
                self.count(|c| c.reject_session += 1);
                Reject("sgw-unreachable")
            })?;
        let resp = Packet::new_checked(&answer)
            .ok()
            .and_then(|p| CreateSessionResponse::parse(&p).ok())
            .filter(|r| r.cause == cause::REQUEST_ACCEPTED);
        let Some(CreateSessionResponse {
            sender: Some(sgw_c),
            paa: Some(ue_ip),
            s1u_sgw: Some(sgw_u),
            s5u_pgw,
            ..
        }) = resp
        else {
            self.count(|c| c.reject_session += 1);
            return Err(Reject("session-refused"));
        };
        self.set(imsi, |c| {
            c.state = "setting-up-bearer".into();
            c.ue_ip = Some(ue_ip);
            c.s11_sgw_teid = Some(sgw_c.teid);
            c.sgw_c = Some(sgw_c);
            c.s1u_sgw_teid = Some(sgw_u.teid);
            c.s5u_pgw_teid = s5u_pgw.map(|f| f.teid);
        });
        // Bearer at the eNodeB.
        self.to_enb(
            enb,
            &S1::InitialContextSetupRequest {
                enb_ue_id,
                mme_ue_id,
                sgw_teid: sgw_u.teid,
                sgw_addr: sgw_u.ipv4,
                pdn_type,
                ue_ip,
            },
        )
        .await;
        let (enb_teid, enb_addr) = match self.next_from_ue(rx).await? {
            S1::InitialContextSetupResponse {
                enb_teid, enb_addr, ..
            } => (enb_teid, enb_addr),
            _ => {
                self.count(|c| c.s1_unexpected += 1);
                return Err(Reject("protocol-error"));
            }
        };
        self.set(imsi, |c| {
            c.state = "modifying-bearer".into();
            c.s1u_enb_teid = Some(enb_teid);
        });
        let enb_f = Fteid {
            interface: iface::S1U_ENODEB,
            teid: enb_teid,
            ipv4: enb_addr,
        };
        let ok = self
            .gtp_request(|seq| {
                ModifyBearerRequest {
                    ebi: gtpc::DEFAULT_EBI,
                    enb: enb_f,
                }
                .emit(sgw_c.teid, seq)
            })
            .await
            .and_then(|a| Packet::new_checked(&a).ok().and_then(|p| p.cause()))
            == Some(cause::REQUEST_ACCEPTED);
        if !ok {
            self.count(|c| c.reject_session += 1);
            return Err(Reject("modify-bearer-failed"));
        }
        self.to_enb(
            enb,
            &S1::DownlinkNas {
                enb_ue_id,
                nas: Nas::AttachAccept {
                    ue_ip,
                    prefix_len: self.cfg.ue_prefix_len,
                    gateway: self.cfg.ue_gateway,
                    dns: self.cfg.dns,
                    mtu: pdn_type.ue_mtu(),
                    pdn_type,
                },
            },
        )
        .await;
        Ok(())
    }

    async fn detach(&self, enb: SocketAddrV4, enb_ue_id: u32, imsi: String) {
        self.count(|c| c.detaches += 1);
        let sgw = self.sh.borrow().contexts.get(&imsi).and_then(|c| c.sgw_c);
        if let Some(sgw) = sgw {
            self.set(&imsi, |c| c.state = "detaching".into());
            let _ = self
                .gtp_request(|seq| {
                    DeleteSessionRequest {
                        ebi: gtpc::DEFAULT_EBI,
                    }
                    .emit(sgw.teid, seq)
                })
                .await;
        }
        self.sh.borrow_mut().contexts.remove(&imsi);
        self.to_enb(
            enb,
            &S1::DownlinkNas {
                enb_ue_id,
                nas: Nas::DetachAccept,
            },
        )
        .await;
        self.to_enb(enb, &S1::UeContextReleaseCommand { enb_ue_id })
            .await;
    }

    /// The PGW at `pgw` restarted: the PDN connections through it are gone (the SGW deleted
    /// them), and each UE has only that one, so each is detached with "re-attach required"
    /// (TS 23.007 §17) and its eNodeB context released; the UE attaches again.
    fn pgw_restarted(&self, pgw: Ipv4Addr) {
        if pgw != self.cfg.pgw {
            tracing::warn!(%pgw, "a restart of a PGW we do not use");
            return;
        }
        let lost: Vec<Ctx> = {
            let mut sh = self.sh.borrow_mut();
            let imsis: Vec<String> = sh
                .contexts
                .values()
                .filter(|c| c.state == "attached")
                .map(|c| c.imsi.clone())
                .collect();
            imsis.iter().filter_map(|i| sh.contexts.remove(i)).collect()
        };
        for c in lost {
            let Ok(ip) = c.enb.parse::<Ipv4Addr>() else {
                continue;
            };
            let enb = SocketAddrV4::new(ip, s1::PORT);
            self.sh.borrow_mut().mail.remove(&(enb, c.enb_ue_id));
            self.count(|k| k.network_detaches += 1);
            let env = self.clone();
            tokio::task::spawn_local(async move {
                env.to_enb(
                    enb,
                    &S1::DownlinkNas {
                        enb_ue_id: c.enb_ue_id,
                        nas: Nas::NetworkDetachRequest {
                            detach_type: s1::REATTACH_REQUIRED.into(),
                            cause: Some("PGW restarted".into()),
                        },
                    },
                )
                .await;
                env.to_enb(
                    enb,
                    &S1::UeContextReleaseCommand {
                        enb_ue_id: c.enb_ue_id,
                    },
                )
                .await;
            });
        }
    }

    async fn serve_s1(self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = self.s1.recv_from(&mut buf).await?;
            self.count(|c| c.s1_received += 1);
            let Ok(m) = serde_json::from_slice::<S1>(&buf[..n]) else {
                self.count(|c| c.s1_bad += 1);
                continue;
            };
            match m {
                S1::UplinkNas {
                    enb_ue_id,
                    nas: Nas::AttachRequest { imsi, pdn_type },
                } => {
                    self.count(|c| c.attach_requests += 1);
                    // TS 24.301 §5.5.1.2.7 c: the same Attach Request again while its attach
                    // runs is a retransmission: the attach goes on, the copy is ignored.
                    // Anything else from the UE starts over (the old attach is aborted).
                    let key = (from, enb_ue_id);
                    let running = self.sh.borrow_mut().running.remove(&key);
                    if let Some((old_imsi, old_pdn, handle)) = running {
                        if old_imsi == imsi && old_pdn == pdn_type && !handle.is_finished() {
                            self.count(|c| c.attach_retransmissions += 1);
                            self.sh
                                .borrow_mut()
                                .running
                                .insert(key, (old_imsi, old_pdn, handle));
                            continue;
                        }
                        handle.abort();
                    }
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.sh.borrow_mut().mail.insert(key, tx);
                    let env = self.clone();
                    let i2 = imsi.clone();
                    let handle = tokio::task::spawn_local(async move {
                        env.attach(from, enb_ue_id, i2, pdn_type, rx).await;
                    });
                    self.sh
                        .borrow_mut()
                        .running
                        .insert(key, (imsi, pdn_type, handle.abort_handle()));
                }
                S1::UplinkNas {
                    enb_ue_id,
                    nas: Nas::DetachRequest { imsi },
                } => {
                    {
                        let mut sh = self.sh.borrow_mut();
                        sh.mail.remove(&(from, enb_ue_id));
                        if let Some((_, _, h)) = sh.running.remove(&(from, enb_ue_id)) {
                            h.abort();
                        }
                    }
                    let env = self.clone();
                    tokio::task::spawn_local(async move {
                        env.detach(from, enb_ue_id, imsi).await;
                    });
                }
                S1::UeContextReleaseComplete { .. }
                | S1::UplinkNas {
                    nas: Nas::DetachAccept,
                    ..
                } => {}
                S1::UplinkNas { enb_ue_id, .. }
                | S1::InitialContextSetupResponse { enb_ue_id, .. } => {
                    let sent = self
                        .sh
                        .borrow()
                        .mail
                        .get(&(from, enb_ue_id))
                        .is_some_and(|tx| tx.send(m).is_ok());
                    if !sent {
                        self.count(|c| c.s1_unexpected += 1);
                    }
                }
                _ => self.count(|c| c.s1_unexpected += 1),
            }
        }
    }

    async fn serve_gtp(self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = self.gtp.recv_from(&mut buf).await?;
            self.count(|c| c.gtpc_received += 1);
            let Ok(p) = Packet::new_checked(&buf[..n]) else {
                self.count(|c| c.gtpc_malformed += 1);
                continue;
            };
            let h = p.header();
            if h.message_type == msg::ECHO_REQUEST {
                let r = EchoResponse {
                    recovery: Some(self.recovery),
                }
                .emit(0, h.sequence);
                self.gtp.send_to(&r, from).await?;
                continue;
            }
            // Only our SGW may tell us its PGWs restarted (it would detach every phone).
            if h.message_type == msg::PGW_RESTART_NOTIFICATION && *from.ip() != self.cfg.sgw {
                self.count(|c| c.gtpc_untrusted += 1);
                continue;
            }
            if h.message_type == msg::PGW_RESTART_NOTIFICATION {
                // TS 23.007 §17: the SGW lost the sessions of a restarted PGW.
                let cause = match PgwRestartNotification::parse(&p) {
                    Ok(PgwRestartNotification { pgw, sgw }) => {
                        self.count(|c| c.pgw_restart_notifications += 1);
                        tracing::warn!(%pgw, %sgw, "PGW Restart Notification");
                        self.pgw_restarted(pgw);
                        cause::REQUEST_ACCEPTED
                    }
                    Err(gtpc::Refused(c)) => c,
                };
                let r = PgwRestartNotificationAck { cause }.emit(0, h.sequence);
                self.gtp.send_to(&r, from).await?;
                continue;
            }
            if h.message_type.is_request() {
                self.count(|c| c.gtpc_unexpected += 1);
                continue;
            }
            let waiter = self.sh.borrow_mut().gtp.answered(h.sequence);
            match waiter {
                Some(t) => {
                    let _ = t.key.send(buf[..n].to_vec());
                }
                None => self.count(|c| c.gtpc_unexpected += 1),
            }
        }
    }

    /// GTPv2-C path supervision towards the SGW (TS 29.274 §7.1): an Echo Request at start
    /// and every 60 s; a changed Recovery in the answer means the SGW restarted.
    async fn supervise_sgw(self) -> anyhow::Result<()> {
        loop {
            let recovery = self.recovery;
            let answer = self
                .gtp_request(|seq| {
                    EchoRequest {
                        recovery: Some(recovery),
                    }
                    .emit(0, seq)
                })
                .await;
            let peer = answer
                .as_deref()
                .and_then(|a| Packet::new_checked(a).ok())
                .and_then(|p| p.recovery());
            {
                let mut s = self.sh.borrow_mut();
                match peer {
                    Some(r) => {
                        if s.sgw_recovery.is_some_and(|old| old != r) {
                            s.c.sgw_restarts += 1;
                            tracing::warn!("the SGW restarted (Recovery {r})");
                        }
                        s.sgw_recovery = Some(r);
                        s.c.echo_answered += 1;
                    }
                    None => s.c.echo_unanswered += 1,
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }

    async fn serve_hss(self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) = self.hss.recv_from(&mut buf).await?;
            let Ok(v) = serde_json::from_slice::<Value>(&buf[..n]) else {
                continue;
            };
            let Some(id) = v["id"].as_u64() else { continue };
            let waiter = self.sh.borrow_mut().hss_wait.remove(&id);
            if let Some(tx) = waiter {
                let _ = tx.send(v);
            }
        }
    }
}

/// Builds the MME: binds S1 (36412), S11 (2123) and its HSS client port (3868), serves.
pub fn build(cfg: &MmeConfig, recovery: u8) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.stack, "mme")?;
    let sh = Rc::new(RefCell::new(Shared {
        c: MmeCounters::default(),
        contexts: BTreeMap::new(),
        mail: HashMap::new(),
        running: HashMap::new(),
        gtp: Transactions::default(),
        hss_wait: HashMap::new(),
        seq: 0,
        hss_id: 0,
        next_id: 0,
        sgw_recovery: None,
    }));
    let env = Env {
        cfg: Rc::new(cfg.clone()),
        addr: stack.address(),
        sh: sh.clone(),
        s1: Rc::new(stack.udp_bind(s1::PORT)?),
        gtp: Rc::new(stack.udp_bind(d11_wire::gtpv2::UDP_PORT)?),
        hss: Rc::new(stack.udp_bind(3868)?),
        recovery,
        gtp_due: Rc::new(tokio::sync::Notify::new()),
    };
    let s2 = sh.clone();
    stack.add_table("contexts", move || {
        json!(s2.borrow().contexts.values().collect::<Vec<_>>())
    });
    let s4 = sh.clone();
    stack.add_counters(move |out| {
        let s = s4.borrow();
        s.c.for_each(out);
        out("gtpc_retransmissions", s.gtp.retransmissions);
        out("gtpc_timeouts", s.gtp.timeouts);
    });
    let s3 = sh.clone();
    stack.add_table("mme", move || {
        let mut m = serde_json::Map::new();
        s3.borrow().c.for_each(&mut |k, v| {
            m.insert(k.to_string(), json!(v));
        });
        Value::Object(m)
    });
    let app: App = Box::pin(async move {
        tokio::select! {
            r = env.clone().serve_s1() => r,
            r = env.clone().serve_gtp() => r,
            r = env.clone().serve_hss() => r,
            r = env.clone().supervise_sgw() => r,
            r = env.clone().retransmit_gtp() => r,
        }
    });
    Ok((element, Some(app)))
}
