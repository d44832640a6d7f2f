//! d11-ue: the phone. One `radio` port towards the eNodeB.
//!
//! It attaches with the IMSI and key of its USIM (`imsi`, `key`, `opc`): it sends
//! `AttachRequest`, checks the network's AUTN with Milenage (a wrong network key is a MAC
//! failure; a stale sequence number draws AUTS so the HSS resynchronises), answers RES, and
//! on `AttachAccept` takes its address, gateway, DNS server and MTU. Until accepted it asks
//! again after 1 s, 2 s, 4 s, ... up to `attach_retry_s` (5 s). A reject for its keys or
//! subscription is final; one for the network's own trouble (a timeout) is tried again.
//!
//! Then, by `mode`:
//! - `app`: a userspace stack on the radio port with the assigned address, and the built-in
//!   client (`app`: HTTPS requests, as d11-fetch makes them, `count` of them one after another)
//!   once attached; `d11 show NODE app` (each request), `app_summary` (requests/s, p50, p99).
//! - `modem`: a device in the UE's namespace (`tun_name`, "uesim0"): a TAP for an Ethernet PDU
//!   session (the kernel ARPs for its gateway through the tunnels), a TUN for an IPv4 one; with
//!   the address, MTU and a default route set once attached, so curl, ping and traceroute run
//!   on the phone unchanged.

use anyhow::Context;
use d11_auth::{parse_key, usim_check, Milenage, UsimError};
use d11_ctl::fetch::{fetch, Request};
use d11_element::{counters, App, Element, PortConfig, PortId, Transmit};
use d11_epc::gw::ethernet_frame as frame;
use d11_epc::s1::{self, hex, unhex, Nas};
use d11_stack::{Stack, StackConfig, StackElement, TcpTuning};
use d11_wire::gtpv2::message::PdnType;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    App,
    Modem,
}

/// What the app does once attached: HTTP(S) requests, as d11-fetch makes them.
#[derive(Debug, Clone, Deserialize)]
pub struct AppConfig {
    pub url: String,
    #[serde(default)]
    pub data: Option<String>,
    /// Extra headers; `{n}` in one becomes the request's number (a fresh Idempotency-Key per
    /// order).
    #[serde(default)]
    pub headers: Vec<String>,
    /// HOST:PORT:ADDRESS, as curl's --resolve (no DNS for that host then).
    #[serde(default)]
    pub resolve: Vec<String>,
    /// How the app finds the URL's host: `dns` (the DNS server of its PDN session) or
    /// `httpdns` (the `httpdns` service, falling back to DNS when it does not answer).
    #[serde(default)]
    pub resolver: AppResolver,
    /// The HTTPDNS service's base URL (`http://203.0.113.55`), for `resolver = "httpdns"`.
    #[serde(default)]
    pub httpdns: Option<String>,
    /// CA to trust (the lab fills in its root when the node has `app` and no `cacert`).
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// Requests, one after another, each on a new connection.
    #[serde(default = "one")]
    pub count: usize,
    /// Tries more of a request that failed (the same request, the same Idempotency-Key),
    /// each once the phone is attached: an order cut by a lost session is placed again.
    #[serde(default)]
    pub retries: usize,
    #[serde(default = "ten")]
    pub timeout_s: f64,
    /// The product page: pictures (URLs) fetched before each order, once its host is
    /// resolved, each resolved as that host is; `d11 show NODE pictures`.
    #[serde(default)]
    pub pictures: Vec<String>,
}

/// How the app resolves its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppResolver {
    #[default]
    Dns,
    Httpdns,
}

fn one() -> usize {
    1
}
fn ten() -> f64 {
    10.0
}
fn default_tun() -> String {
    "uesim0".into()
}
fn default_retry() -> u64 {
    5
}

#[derive(Debug, Clone, Deserialize)]
pub struct UeConfig {
    pub name: String,
    pub ports: Vec<PortConfig>,
    pub imsi: String,
    /// The USIM's K (32 hex digits).
    pub key: String,
    /// OPc (32 hex digits).
    pub opc: String,
    /// The highest SQN the USIM has accepted.
    #[serde(default)]
    pub sqn: u64,
    #[serde(default)]
    pub pdn_type: PdnType,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub app: Option<AppConfig>,
    #[serde(default = "default_tun")]
    pub tun_name: String,
    #[serde(default)]
    pub tcp: TcpTuning,
    #[serde(default = "default_retry")]
    pub attach_retry_s: u64,
    /// Modem mode: where to write the kernel's resolver configuration (`nameserver` the PDN
    /// session's DNS server), so the namespace's programs resolve through it. The lab fills
    /// it in: `/etc/netns/NETNS/resolv.conf`, which `ip netns exec` mounts.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
}

counters! {
    pub struct UeCounters {
        attach_requests_sent,
        auth_requests,
        auth_responses_sent,
        auth_mac_failures,
        auth_sync_failures,
        attach_accepts,
        attach_rejects,
        signalling_bad,
        radio_dropped,
        modem_dropped,
        arp_answered,
        detaches_sent,
        network_detaches,
    }
}

/// What the app and `d11 show` see.
#[derive(Default)]
pub struct Shared {
    state: &'static str,
    ip: Option<Ipv4Addr>,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    dns: Option<Ipv4Addr>,
    mtu: Option<u16>,
    enb_mac: Option<[u8; 6]>,
    reject_cause: Option<String>,
    stack: Option<Stack>,
    app: Vec<Value>,
    /// Each picture fetch of the product page.
    pictures: Vec<Value>,
    /// Each successful request's time, connection to last byte.
    latencies_ms: Vec<f64>,
    app_elapsed_s: f64,
    /// From the first Attach Request to the Attach Accept.
    attach_ms: Option<f64>,
}

pub struct Ue {
    name: String,
    mac: [u8; 6],
    radio: PortId,
    modem: Option<PortId>,
    cfg: UeConfig,
    usim: Milenage,
    sqn_ms: u64,
    sh: Rc<RefCell<Shared>>,
    stack: Option<StackElement>,
    wakeup: Rc<Notify>,
    attached: Rc<Notify>,
    next_attach: Option<Instant>,
    attach_started: Option<Instant>,
    arp_back: Vec<Vec<u8>>,
    c: UeCounters,
}

/// Runs `ip ARGS` in the current namespace; an error names the command.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The stack's frames on their way out: an IPv4 PDU session has no Ethernet beyond the radio,
/// so the UE answers its own stack's ARP with the eNodeB's MAC, as a modem's driver would.
struct StackTx<'a> {
    inner: &'a mut dyn Transmit,
    arp: bool,
    enb_mac: [u8; 6],
    back: &'a mut Vec<Vec<u8>>,
}

impl Transmit for StackTx<'_> {
    fn send(&mut self, port: PortId, f: &[u8]) {
        if self.arp && f.len() >= 42 && f[12..14] == [8, 6] {
            if f[20..22] == [0, 1] {
                // Whoever is asked for is at the eNodeB's MAC.
                let ip4 = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
                let tha: [u8; 6] = f[22..28].try_into().unwrap_or([0; 6]);
                let a = d11_wire::arp::reply(self.enb_mac, ip4(38), tha, ip4(28));
                self.back.push(a.to_vec());
            }
            return;
        }
        self.inner.send(port, f);
    }
}

impl Ue {
    pub fn new(
        cfg: &UeConfig,
        modem: Option<PortId>,
    ) -> anyhow::Result<(Self, Rc<RefCell<Shared>>, Rc<Notify>)> {
        let [port] = cfg.ports.as_slice() else {
            anyhow::bail!("a UE has one port (radio); config has {}", cfg.ports.len());
        };
        let mac = port.mac_for(&cfg.name)?;
        let k = parse_key(&cfg.key).ok_or_else(|| anyhow::anyhow!("key: 32 hex digits"))?;
        let opc = parse_key(&cfg.opc).ok_or_else(|| anyhow::anyhow!("opc: 32 hex digits"))?;
        if cfg.imsi.len() < 6
            || cfg.imsi.len() > 15
            || !cfg.imsi.bytes().all(|b| b.is_ascii_digit())
        {
            anyhow::bail!("imsi {:?}: 6 to 15 digits", cfg.imsi);
        }
        if cfg.mode == Mode::App && cfg.app.is_none() {
            tracing::info!("app mode without `app`: the UE attaches and waits");
        }
        let sh = Rc::new(RefCell::new(Shared {
            state: "detached",
            ..Default::default()
        }));
        let attached = Rc::new(Notify::new());
        Ok((
            Self {
                name: cfg.name.clone(),
                mac,
                radio: 0,
                modem,
                cfg: cfg.clone(),
                usim: Milenage::with_opc(&k, &opc),
                sqn_ms: cfg.sqn,
                sh: sh.clone(),
                stack: None,
                wakeup: Rc::new(Notify::new()),
                attached: attached.clone(),
                next_attach: Some(Instant::now()),
                attach_started: None,
                arp_back: Vec::new(),
                c: UeCounters::default(),
            },
            sh,
            attached,
        ))
    }

    fn send_nas(&mut self, nas: &Nas, tx: &mut dyn Transmit) {
        let dst = self.sh.borrow().enb_mac.unwrap_or([0xff; 6]);
        let body = serde_json::to_vec(nas).unwrap_or_default();
        tx.send(self.radio, &frame(dst, self.mac, s1::ETHERTYPE, &body));
    }

    fn signalling(&mut self, now: Instant, f: &[u8], tx: &mut dyn Transmit) {
        let body = &f[14..];
        let end = body.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let Ok(nas) = serde_json::from_slice::<Nas>(&body[..end]) else {
            self.c.signalling_bad += 1;
            return;
        };
        let enb: [u8; 6] = f[6..12].try_into().unwrap_or([0; 6]);
        self.sh.borrow_mut().enb_mac = Some(enb);
        // Progress: the next AttachRequest waits a full interval from here.
        if self.next_attach.is_some() {
            self.next_attach = Some(now + Duration::from_secs(self.cfg.attach_retry_s));
        }
        match nas {
            Nas::AuthenticationRequest { rand, autn } => {
                self.c.auth_requests += 1;
                let (Some(rand), Some(autn)) = (unhex::<16>(&rand), unhex::<16>(&autn)) else {
                    self.c.signalling_bad += 1;
                    return;
                };
                let answer = match usim_check(&self.usim, &rand, &autn, self.sqn_ms) {
                    Ok((o, sqn)) => {
                        self.sqn_ms = sqn;
                        self.c.auth_responses_sent += 1;
                        Nas::AuthenticationResponse { res: hex(&o.res) }
                    }
                    Err(UsimError::MacFailure) => {
                        self.c.auth_mac_failures += 1;
                        Nas::AuthenticationFailure {
                            cause: "mac-failure".into(),
                            auts: None,
                        }
                    }
                    Err(UsimError::SyncFailure { auts }) => {
                        self.c.auth_sync_failures += 1;
                        Nas::AuthenticationFailure {
                            cause: "sync-failure".into(),
                            auts: Some(hex(&auts)),
                        }
                    }
                };
                self.send_nas(&answer, tx);
            }
            Nas::AttachAccept {
                ue_ip,
                prefix_len,
                gateway,
                dns,
                mtu,
                pdn_type,
            } => {
                self.c.attach_accepts += 1;
                self.next_attach = None;
                if let Err(e) = self.configure(ue_ip, prefix_len, gateway, mtu, pdn_type) {
                    tracing::error!(error = %format!("{e:#}"), "cannot bring the data path up");
                    self.sh.borrow_mut().state = "error";
                    return;
                }
                let mut s = self.sh.borrow_mut();
                s.attach_ms = self
                    .attach_started
                    .take()
                    .map(|t| now.saturating_duration_since(t).as_secs_f64() * 1e3);
                s.state = "attached";
                s.ip = Some(ue_ip);
                s.prefix_len = prefix_len;
                s.gateway = Some(gateway);
                s.dns = Some(dns);
                s.mtu = Some(mtu);
                tracing::info!(ip = %ue_ip, "attached");
                drop(s);
                if self.cfg.mode == Mode::Modem {
                    if let Some(path) = &self.cfg.resolv_conf {
                        let text = format!(
                            "# The DNS server of {}'s PDN session, written by d11-ue at attach\nnameserver {dns}\n",
                            self.name
                        );
                        if let Err(e) = std::fs::write(path, text) {
                            tracing::warn!(path = %path.display(), error = %e, "cannot write the resolver configuration");
                        }
                    }
                }
                self.attached.notify_one();
            }
            Nas::AttachReject { cause } => {
                self.c.attach_rejects += 1;
                // The subscription or the keys are wrong: final (as NAS causes #3 and #8 are).
                // The network failed on its side (a timeout, a refused session): try again.
                let fin = matches!(
                    cause.as_str(),
                    "mac-failure" | "authentication-failed" | "unknown-imsi" | "resync-failed"
                );
                self.next_attach =
                    (!fin).then(|| now + Duration::from_secs(self.cfg.attach_retry_s.max(1)));
                tracing::warn!(%cause, retry = !fin, "attach rejected");
                let mut s = self.sh.borrow_mut();
                s.state = "rejected";
                s.reject_cause = Some(cause);
            }
            Nas::DetachAccept => self.sh.borrow_mut().state = "detached",
            Nas::NetworkDetachRequest { detach_type, cause } => {
                // TS 24.301 §5.5.2.3.2: accept, drop the bearer, and with "re-attach
                // required" attach again at once.
                self.c.network_detaches += 1;
                self.send_nas(&Nas::DetachAccept, tx);
                self.stack = None;
                let mut s = self.sh.borrow_mut();
                s.stack = None;
                s.ip = None;
                s.state = "detached";
                drop(s);
                let again = detach_type == s1::REATTACH_REQUIRED;
                tracing::warn!(%detach_type, ?cause, "detached by the network");
                if again {
                    self.next_attach = Some(now);
                    self.attach_started = None;
                }
            }
            _ => self.c.signalling_bad += 1,
        }
    }

    fn configure(
        &mut self,
        ue_ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        mtu: u16,
        pdn_type: PdnType,
    ) -> anyhow::Result<()> {
        let net = ipnet::Ipv4Net::new(ue_ip, prefix_len)?;
        match self.cfg.mode {
            Mode::App => {
                let cfg = StackConfig {
                    name: self.name.clone(),
                    ports: vec![PortConfig {
                        name: self.cfg.ports[0].name.clone(),
                        mac: Some(d11_element::mac_string(&self.mac)),
                        addresses: vec![net],
                        mtu: Some(mtu),
                        offload: false,
                    }],
                    gateway: Some(gateway),
                    tcp: self.cfg.tcp.clone(),
                };
                let (stack, element) = Stack::with_wakeup(&cfg, "ue", self.wakeup.clone())?;
                self.stack = Some(element);
                self.sh.borrow_mut().stack = Some(stack);
            }
            Mode::Modem => {
                let dev = self.cfg.tun_name.as_str();
                ip(&["addr", "flush", "dev", dev])?;
                ip(&["addr", "add", &net.to_string(), "dev", dev])?;
                ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string(), "up"])?;
                let gw = gateway.to_string();
                match pdn_type {
                    PdnType::Ethernet => {
                        ip(&["route", "replace", "default", "via", &gw, "dev", dev])?
                    }
                    PdnType::Ipv4 => ip(&["route", "replace", "default", "dev", dev])?,
                }
            }
        }
        Ok(())
    }

    /// Runs `f` on the app's stack (if it is up) with the stack's transmitter; for an IPv4
    /// PDU session the ARP answers it wrote go back into the stack.
    fn with_stack(
        &mut self,
        now: Instant,
        tx: &mut dyn Transmit,
        f: impl FnOnce(&mut StackElement, &mut dyn Transmit),
    ) {
        let Some(st) = self.stack.as_mut() else {
            return;
        };
        let enb_mac = self.sh.borrow().enb_mac.unwrap_or([0xff; 6]);
        let arp = self.cfg.pdn_type == PdnType::Ipv4;
        let mut back = std::mem::take(&mut self.arp_back);
        f(
            st,
            &mut StackTx {
                inner: tx,
                arp,
                enb_mac,
                back: &mut back,
            },
        );
        for mut a in back.drain(..) {
            self.c.arp_answered += 1;
            let mut t = StackTx {
                inner: tx,
                arp,
                enb_mac,
                back: &mut Vec::new(),
            };
            st.handle_frame(now, 0, &mut a, &mut t);
        }
        self.arp_back = back;
    }

    fn attached(&self) -> bool {
        self.sh.borrow().state == "attached"
    }
}

impl Element for Ue {
    fn role(&self) -> &'static str {
        "ue"
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
    ) {
        if Some(port) == self.modem {
            if !self.attached() {
                self.c.modem_dropped += 1;
                return;
            }
            match self.cfg.pdn_type {
                PdnType::Ethernet => tx.send(self.radio, frame),
                PdnType::Ipv4 => {
                    if frame.first().is_some_and(|b| b >> 4 == 4) {
                        let enb = self.sh.borrow().enb_mac.unwrap_or([0xff; 6]);
                        tx.send(self.radio, &self::frame(enb, self.mac, 0x0800, frame));
                    } else {
                        self.c.modem_dropped += 1;
                    }
                }
            }
            return;
        }
        if frame.len() < 14 {
            self.c.radio_dropped += 1;
            return;
        }
        let dst: [u8; 6] = frame[0..6].try_into().unwrap_or([0; 6]);
        if dst != self.mac && dst[0] & 1 == 0 {
            return; // another phone's
        }
        if frame[12..14] == s1::ETHERTYPE.to_be_bytes() {
            if dst == self.mac {
                self.signalling(now, frame, tx);
            }
            return;
        }
        if !self.attached() {
            self.c.radio_dropped += 1;
            return;
        }
        match (self.cfg.mode, self.modem) {
            (Mode::Modem, Some(m)) => match self.cfg.pdn_type {
                PdnType::Ethernet => tx.send(m, frame),
                PdnType::Ipv4 if frame[12..14] == [8, 0] && frame.len() >= 34 => {
                    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
                    tx.send(m, &frame[14..(14 + total).min(frame.len())]);
                }
                PdnType::Ipv4 => self.c.radio_dropped += 1,
            },
            _ => self.with_stack(now, tx, |st, t| st.handle_frame(now, 0, frame, t)),
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        [
            self.next_attach,
            self.stack.as_ref().and_then(|s| s.poll_at()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll(&mut self, now: Instant, tx: &mut dyn Transmit) {
        if self.next_attach.is_some_and(|t| t <= now) {
            // 1 s, 2 s, 4 s, ... up to attach_retry_s between attempts.
            let wait = Duration::from_secs(
                (1u64 << self.c.attach_requests_sent.min(16)).min(self.cfg.attach_retry_s.max(1)),
            );
            self.next_attach = Some(now + wait);
            if self.attach_started.is_none() {
                self.attach_started = Some(now);
            }
            self.c.attach_requests_sent += 1;
            self.sh.borrow_mut().state = "attaching";
            let nas = Nas::AttachRequest {
                imsi: self.cfg.imsi.clone(),
                pdn_type: self.cfg.pdn_type,
            };
            self.send_nas(&nas, tx);
        }
        self.with_stack(now, tx, |st, t| st.poll(now, t));
    }

    /// Switching off: a phone that is attached detaches (the network deletes its session).
    fn shutdown(&mut self, _now: Instant, tx: &mut dyn Transmit) {
        if self.attached() {
            let nas = Nas::DetachRequest {
                imsi: self.cfg.imsi.clone(),
            };
            self.send_nas(&nas, tx);
            self.c.detaches_sent += 1;
            tracing::info!("detach sent");
        }
    }

    fn tables(&self) -> Vec<String> {
        let mut t = vec![
            "ue".to_string(),
            "app".to_string(),
            "app_summary".to_string(),
            "pictures".to_string(),
            "interfaces".to_string(),
        ];
        if let Some(s) = &self.stack {
            t.extend(s.tables().into_iter().filter(|x| x != "interfaces"));
        }
        t
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        let s = self.sh.borrow();
        match table {
            "ue" => Some(json!({
                "imsi": self.cfg.imsi,
                "state": s.state,
                "mode": self.cfg.mode,
                "pdn_type": self.cfg.pdn_type,
                "mac": d11_element::mac_string(&self.mac),
                "ip": s.ip.map(|a| a.to_string()),
                "prefix_len": s.prefix_len,
                "gateway": s.gateway.map(|a| a.to_string()),
                "dns": s.dns.map(|a| a.to_string()),
                "mtu": s.mtu,
                "device": (self.cfg.mode == Mode::Modem).then_some(&self.cfg.tun_name),
                "enb_mac": s.enb_mac.map(|m| d11_element::mac_string(&m)),
                "reject_cause": s.reject_cause,
                "attach_ms": s.attach_ms,
                "bearers": if s.state == "attached" { json!([{"ebi": 5, "default": true}]) } else { json!([]) },
            })),
            "app" => Some(json!(s.app)),
            "pictures" => Some(json!(s.pictures)),
            "app_summary" => {
                let mut l = s.latencies_ms.clone();
                l.sort_by(f64::total_cmp);
                let q = |p: f64| {
                    (!l.is_empty()).then(|| l[((l.len() - 1) as f64 * p).round() as usize])
                };
                Some(json!({
                    "planned": self.cfg.app.as_ref().map(|a| a.count),
                    "requests": s.app.len(),
                    "ok": l.len(),
                    "failed": s.app.len() - l.len(),
                    "elapsed_s": s.app_elapsed_s,
                    "per_second": if s.app_elapsed_s > 0.0 { l.len() as f64 / s.app_elapsed_s } else { 0.0 },
                    "p50_ms": q(0.5),
                    "p99_ms": q(0.99),
                }))
            }
            "interfaces" => {
                let addr = s.ip.map(|a| format!("{a}/{}", s.prefix_len));
                let mut v = vec![json!({
                    "name": self.cfg.ports[0].name,
                    "mac": d11_element::mac_string(&self.mac),
                    "addresses": addr.iter().collect::<Vec<_>>(),
                    "mtu": s.mtu,
                    // The app's stack (smoltcp's default hop limit).
                    "default_ttl": (self.cfg.mode == Mode::App).then_some(64),
                })];
                if self.modem.is_some() {
                    v.push(json!({
                        "name": self.cfg.tun_name,
                        "kind": if self.cfg.pdn_type == PdnType::Ipv4 { "tun" } else { "tap" },
                        "mac": (self.cfg.pdn_type == PdnType::Ethernet).then(|| d11_element::mac_string(&self.mac)),
                        "addresses": addr.iter().collect::<Vec<_>>(),
                        "mtu": s.mtu,
                    }));
                }
                Some(json!(v))
            }
            _ => self.stack.as_ref().and_then(|st| st.show(table, now)),
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.c.for_each(out);
        if let Some(s) = &self.stack {
            s.counters(out);
        }
    }

    fn wakeup(&self) -> Option<Rc<Notify>> {
        Some(self.wakeup.clone())
    }
}

/// The app: waits for the attach, then makes its requests; results in `d11 show NODE app`.
pub fn app(cfg: &UeConfig, sh: Rc<RefCell<Shared>>, attached: Rc<Notify>) -> Option<App> {
    let a = cfg.app.clone()?;
    if cfg.mode != Mode::App {
        return None;
    }
    let (host, port) = url_host(&a.url)?;
    let pinned = a
        .resolve
        .iter()
        .any(|r| r.starts_with(&format!("{host}:{port}:")));
    let req = Request {
        url: a.url.clone(),
        resolve: a.resolve.clone(),
        cacert: a.cacert.clone(),
        data: a.data.clone(),
        headers: a.headers.clone(),
        count: 1,
        timeout: Duration::from_secs_f64(a.timeout_s),
    };
    Some(Box::pin(async move {
        // The data path of the moment: a re-attach brings a new stack.
        let stack = || async {
            loop {
                let s = sh.borrow().stack.clone();
                match s {
                    Some(s) => break s,
                    None => attached.notified().await,
                }
            }
        };
        stack().await;
        let t0 = std::time::Instant::now();
        for i in 0..a.count {
            // `{n}` in a header is the request's number (a fresh Idempotency-Key per order).
            let mut req = req.clone();
            req.headers = a
                .headers
                .iter()
                .map(|h| h.replace("{n}", &(i + 1).to_string()))
                .collect();
            let t = std::time::Instant::now();
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let mut tries = 0;
            let mut r = loop {
                tries += 1;
                // The host's address first (unless pinned), from DNS or HTTPDNS.
                let st = stack().await;
                let mut dns = Value::Null;
                if !pinned {
                    let server = sh.borrow().dns;
                    match resolve_host(&st, &a, server, &host).await {
                        Ok(r) => {
                            req.resolve = vec![format!("{host}:{port}:{}", r.addrs[0])];
                            dns = json!(r);
                        }
                        Err(e) if tries > a.retries => {
                            break json!({"request": i + 1, "ok": false, "tries": tries, "error": format!("resolving {host}: {e:#}")})
                        }
                        Err(e) => {
                            tracing::warn!(request = i + 1, error = %format!("{e:#}"), "resolving again");
                            continue;
                        }
                    }
                }
                // The product page, once the shop is found: its pictures, then the order.
                if tries == 1 {
                    for url in &a.pictures {
                        let server = sh.borrow().dns;
                        let r = picture(&st, &a, server, url).await;
                        sh.borrow_mut()
                            .pictures
                            .push(json!({"order": i + 1, "url": url, "result": r}));
                    }
                }
                match fetch(&st, &req).await {
                    Ok(o) => {
                        break json!({"request": i + 1, "ok": true, "tries": tries, "dns": dns, "outcome": o})
                    }
                    Err(e) if tries > a.retries => {
                        break json!({"request": i + 1, "ok": false, "tries": tries, "error": format!("{e:#}")})
                    }
                    Err(e) => {
                        tracing::warn!(request = i + 1, error = %format!("{e:#}"), "trying again")
                    }
                }
            };
            let ms = t.elapsed().as_secs_f64() * 1e3;
            // When it started (the host's clock, to set beside captures and other programs'
            // events) and how long it took, retries included.
            r["started_unix_ms"] = json!(started);
            r["ms"] = json!(ms);
            tracing::debug!(result = %r, "app request");
            let mut s = sh.borrow_mut();
            if r["ok"] == true {
                s.latencies_ms.push(ms);
            }
            s.app.push(r);
            s.app_elapsed_s = t0.elapsed().as_secs_f64();
        }
        std::future::pending::<()>().await;
        Ok(())
    }))
}

/// One picture of the product page: its host resolved (the CNAME chain into the CDN), then
/// GET over HTTP(S); what the caches said (`Cache-Status`, `Via`, `Age`), the size and the
/// times. The body is counted, not kept.
async fn picture(stack: &Stack, a: &AppConfig, server: Option<Ipv4Addr>, url: &str) -> Value {
    let Some((host, port)) = url_host(url) else {
        return json!({"ok": false, "error": format!("bad URL {url:?}")});
    };
    let dns = match resolve_host(stack, a, server, &host).await {
        Ok(r) => r,
        Err(e) => return json!({"ok": false, "error": format!("resolving {host}: {e:#}")}),
    };
    let req = Request {
        url: url.to_string(),
        resolve: vec![format!("{host}:{port}:{}", dns.addrs[0])],
        cacert: a.cacert.clone(),
        data: None,
        headers: Vec::new(),
        count: 1,
        timeout: Duration::from_secs_f64(a.timeout_s),
    };
    match fetch(stack, &req).await {
        Ok(o) => {
            let h = |name: &str| {
                o.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            json!({
                "ok": o.status == 200,
                "status": o.status,
                "size": o.body_len,
                "cache_status": h("cache-status"),
                "via": h("via"),
                "age": h("age"),
                "etag": h("etag"),
                "remote": o.remote,
                "local": o.local,
                "tcp_ms": o.tcp_ms,
                "tls_ms": o.tls_ms,
                "response_ms": o.response_ms.first(),
                "dns": dns,
            })
        }
        Err(e) => json!({"ok": false, "error": format!("{e:#}"), "dns": dns}),
    }
}

/// The URL's host and port.
fn url_host(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?;
    let port = if rest.0 == "https" { 443 } else { 80 };
    let authority = rest.1.split('/').next()?;
    Some(match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (authority.to_string(), port),
    })
}

/// The host's addresses: HTTPDNS first if the app uses it (its `ips`, as Alibaba's answers),
/// else or when that fails, the PDN session's DNS server.
async fn resolve_host(
    stack: &Stack,
    a: &AppConfig,
    server: Option<Ipv4Addr>,
    host: &str,
) -> anyhow::Result<d11_dns::stub::Resolved> {
    let timeout = Duration::from_secs(2);
    let mut failed = None;
    if a.resolver == AppResolver::Httpdns {
        match httpdns(stack, a, host).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "HTTPDNS failed: DNS instead");
                failed = Some(format!("{e:#}"));
            }
        }
    }
    let server = server.context("the PDN session gave no DNS server")?;
    let mut r = d11_dns::stub::lookup(stack, server, host, timeout, 3).await?;
    r.fallback_from = failed;
    Ok(r)
}

/// `GET BASE/d?host=HOST` of the HTTPDNS service.
async fn httpdns(
    stack: &Stack,
    a: &AppConfig,
    host: &str,
) -> anyhow::Result<d11_dns::stub::Resolved> {
    let base = a
        .httpdns
        .as_deref()
        .context("resolver = \"httpdns\" needs httpdns (the service's base URL)")?;
    let t0 = std::time::Instant::now();
    let req = Request {
        url: format!("{}/d?host={host}", base.trim_end_matches('/')),
        resolve: Vec::new(),
        cacert: a.cacert.clone(),
        data: None,
        headers: Vec::new(),
        count: 1,
        timeout: Duration::from_secs(2),
    };
    let o = fetch(stack, &req).await?;
    if o.status != 200 {
        anyhow::bail!("HTTPDNS answered {}", o.status);
    }
    let v: Value = serde_json::from_str(&o.body).context("HTTPDNS answer is not JSON")?;
    let addrs: Vec<Ipv4Addr> = v["ips"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if addrs.is_empty() {
        anyhow::bail!("HTTPDNS has no address for {host}");
    }
    Ok(d11_dns::stub::Resolved {
        via: "httpdns".into(),
        server: o.remote.clone(),
        name: host.to_string(),
        cnames: Vec::new(),
        addrs,
        ttl: v["ttl"].as_u64().unwrap_or(0) as u32,
        tries: 1,
        ms: t0.elapsed().as_secs_f64() * 1e3,
        port: o.local.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
        fallback_from: None,
    })
}

#[cfg(test)]
mod sim_tests;
