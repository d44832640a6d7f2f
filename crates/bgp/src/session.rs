//! One BGP session, sans-IO: the finite state machine of RFC 4271 §8 (Idle, Connect, Active,
//! OpenSent, OpenConfirm, Established) with its timers (ConnectRetry, Hold, Keepalive, and an
//! IdleHold before an automatic restart). Time is passed in; the I/O layer makes the TCP
//! connection the session asks for, hands it the bytes that arrive, and sends what it says.
//!
//! OPEN: version 4, the local AS (AS_TRANS with the 4-octet AS capability above 65535, RFC
//! 6793), the hold time, the BGP Identifier, and capabilities: multiprotocol IPv4 unicast (RFC
//! 4760), route refresh (RFC 2918), 4-octet AS. A received OPEN is checked as §6.2 says (peer
//! AS, hold time 1 or 2, the identifier), each failure answered with its NOTIFICATION. The
//! hold time is the smaller of the two, 0 for none; keepalives every third of it.

use crate::wire::{self, Framer};
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError,
    OpenMessageError,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// AS_TRANS (RFC 6793): the 2-octet AS an OPEN carries for a 4-octet one.
pub const AS_TRANS: u16 = 23456;

/// The states of §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// A session's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// The hold time we offer, seconds (0: none; else at least 3).
    pub hold_time: u16,
    /// Wait for the peer to connect rather than connect ourselves.
    pub passive: bool,
    pub connect_retry: Duration,
    /// After an error, how long to stay Idle before starting again.
    pub idle_hold: Duration,
}

impl Config {
    pub fn new(local_as: u32, remote_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            remote_as,
            router_id,
            hold_time: 90,
            passive: false,
            connect_retry: Duration::from_secs(5),
            idle_hold: Duration::from_secs(1),
        }
    }

    pub fn ibgp(&self) -> bool {
        self.local_as == self.remote_as
    }
}

/// What the session wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a TCP connection to the peer (port 179).
    Connect,
    /// Send these octets on the connection.
    Send(Vec<u8>),
    /// Close the connection.
    Close,
    /// The session is Established.
    Up,
    /// The session left Established: the peer's routes are gone.
    Down(String),
    /// An UPDATE from the peer, read (malformed attributes already treated as withdrawals).
    Update(Box<crate::update::Parsed>),
    /// The peer asks for our routes again (RFC 2918).
    RouteRefresh,
}

/// Counters of a session (`d11 show NODE bgp`).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub opens_in: u64,
    pub opens_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    pub keepalives_in: u64,
    pub keepalives_out: u64,
    pub notifications_in: u64,
    pub notifications_out: u64,
    pub refreshes_in: u64,
    pub established: u64,
    /// UPDATEs whose announcements were treated as withdrawals (RFC 7606).
    pub treated_as_withdraw: u64,
}

/// One session with one peer.
#[derive(Debug)]
pub struct Session {
    pub cfg: Config,
    state: State,
    framer: Framer,
    /// The negotiated hold time (0: none) and the keepalive interval, once OPENs are exchanged.
    hold: u16,
    asn4: bool,
    peer_id: Option<Ipv4Addr>,
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    restart_at: Option<Instant>,
    up_since: Option<Instant>,
    last_error: Option<String>,
    /// Malformed path attributes skipped in the message being handled.
    attr_errors: usize,
    pub stats: Stats,
}

/// A NOTIFICATION's readable form for `last_error`.
fn describe(n: &BgpNotificationMessage) -> String {
    let (code, sub) = wire::codes(n);
    format!("{code}/{sub} {n:?}")
}

impl Session {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            state: State::Idle,
            framer: Framer::default(),
            hold: 0,
            asn4: false,
            peer_id: None,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            restart_at: None,
            up_since: None,
            last_error: None,
            attr_errors: 0,
            stats: Stats::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The negotiated hold time, seconds (0: none).
    pub fn hold_time(&self) -> u16 {
        self.hold
    }

    /// Whether both sides use 4-octet AS numbers (how AS_PATH is encoded).
    pub fn asn4(&self) -> bool {
        self.asn4
    }

    pub fn peer_id(&self) -> Option<Ipv4Addr> {
        self.peer_id
    }

    /// ManualStart (§8.1.2): connect, or wait for the peer (passive).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Idle {
            return Vec::new();
        }
        self.restart_at = None;
        self.connect_retry_at = Some(now + self.cfg.connect_retry);
        if self.cfg.passive {
            self.state = State::Active;
            Vec::new()
        } else {
            self.state = State::Connect;
            vec![Action::Connect]
        }
    }

    /// The TCP connection is up (ours connected, or the peer's accepted): our OPEN.
    pub fn on_connected(&mut self, now: Instant) -> Vec<Action> {
        if !matches!(self.state, State::Connect | State::Active) {
            return vec![Action::Close];
        }
        self.framer = Framer::default();
        self.connect_retry_at = None;
        // Until the peer's OPEN: a large hold timer (§8: 4 minutes suggested).
        self.hold_at = Some(now + Duration::from_secs(240));
        self.state = State::OpenSent;
        self.stats.opens_out += 1;
        vec![Action::Send(wire::encode(&BgpMessage::Open(self.open())))]
    }

    /// The TCP connection failed or closed.
    pub fn on_closed(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Idle => Vec::new(),
            State::Connect | State::Active => {
                self.state = State::Active;
                self.connect_retry_at = Some(now + self.cfg.connect_retry);
                Vec::new()
            }
            _ => self.go_idle(now, "connection closed".into(), Vec::new()),
        }
    }

    /// Octets from the peer.
    pub fn on_bytes(&mut self, now: Instant, bytes: &[u8]) -> Vec<Action> {
        self.framer.push(bytes);
        let mut out = Vec::new();
        while let Some(m) = self.framer.next_message() {
            let acts = match m {
                Ok(raw) => match wire::decode(&raw, self.asn4) {
                    Ok((msg, attr_errors)) => {
                        self.attr_errors = attr_errors;
                        self.on_message(now, msg)
                    }
                    Err(n) => self.fail(now, n),
                },
                Err(n) => self.fail(now, n),
            };
            let idle = self.state == State::Idle;
            out.extend(acts);
            if idle {
                break;
            }
        }
        out
    }

    /// The timers that are due.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.restart_at) {
            self.restart_at = None;
            return self.start(now);
        }
        if due(self.hold_at) {
            let n =
                BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
                    sub_code: 0,
                    value: Box::new([]),
                });
            return self.fail(now, n);
        }
        let mut out = Vec::new();
        if due(self.connect_retry_at) {
            self.connect_retry_at = Some(now + self.cfg.connect_retry);
            match self.state {
                State::Connect => out.extend([Action::Close, Action::Connect]),
                State::Active if !self.cfg.passive => {
                    self.state = State::Connect;
                    out.push(Action::Connect);
                }
                _ => {}
            }
        }
        if due(self.keepalive_at) {
            out.extend(self.keepalive(now));
        }
        out
    }

    /// When [`Session::poll`] wants to run next.
    pub fn poll_at(&self) -> Option<Instant> {
        [
            self.connect_retry_at,
            self.hold_at,
            self.keepalive_at,
            self.restart_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// An UPDATE to the peer (only when Established).
    pub fn send_update(&mut self, now: Instant, u: BgpUpdateMessage) -> Vec<Action> {
        if self.state != State::Established {
            return Vec::new();
        }
        self.stats.updates_out += 1;
        self.restart_keepalive(now);
        vec![Action::Send(wire::encode(&BgpMessage::Update(u)))]
    }

    /// Loses a connection collision (RFC 4271 §6.8): Cease, Connection Collision
    /// Resolution, and this connection closes; nothing restarts (the other one goes on).
    pub fn lose_collision(&mut self, now: Instant) -> Vec<Action> {
        let n = BgpNotificationMessage::CeaseError(CeaseError::ConnectionCollisionResolution {
            value: Box::new([]),
        });
        let out = self.fail(now, n);
        self.restart_at = None;
        out
    }

    /// Stops the session with a Cease NOTIFICATION (an administrative shutdown).
    pub fn stop(&mut self, now: Instant) -> Vec<Action> {
        if self.state == State::Idle {
            return Vec::new();
        }
        let n = BgpNotificationMessage::CeaseError(CeaseError::AdministrativeShutdown {
            value: Box::new([]),
        });
        let out = self.fail(now, n);
        self.restart_at = None;
        out
    }

    /// The path to the peer is dead (BFD said so, RFC 5882 §4.3): the connection is closed
    /// without a NOTIFICATION, which could not arrive, and the session goes Idle.
    pub fn link_down(&mut self, now: Instant, why: &str) -> Vec<Action> {
        match self.state {
            State::Idle => Vec::new(),
            State::Connect | State::Active => Vec::new(),
            _ => self.go_idle(now, why.into(), vec![Action::Close]),
        }
    }

    fn open(&self) -> BgpOpenMessage {
        let my_as = u16::try_from(self.cfg.local_as).unwrap_or(AS_TRANS);
        let caps = vec![
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv4Unicast,
            )),
            BgpCapability::RouteRefresh,
            BgpCapability::FourOctetAs(FourOctetAsCapability::new(self.cfg.local_as)),
        ];
        BgpOpenMessage::new(
            my_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            vec![BgpOpenMessageParameter::new_capabilities(caps)],
        )
    }

    fn keepalive(&mut self, now: Instant) -> Vec<Action> {
        self.restart_keepalive(now);
        self.stats.keepalives_out += 1;
        vec![Action::Send(wire::encode(&BgpMessage::KeepAlive))]
    }

    fn restart_keepalive(&mut self, now: Instant) {
        self.keepalive_at =
            (self.hold > 0).then(|| now + Duration::from_secs(u64::from((self.hold / 3).max(1))));
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold_at = (self.hold > 0).then(|| now + Duration::from_secs(u64::from(self.hold)));
    }

    /// The checks of §6.2 on the peer's OPEN; the NOTIFICATION for the first that fails.
    fn check_open(&self, o: &BgpOpenMessage) -> Result<(), BgpNotificationMessage> {
        let err = |e: OpenMessageError| Err(BgpNotificationMessage::OpenMessageError(e));
        if o.my_asn4() != self.cfg.remote_as {
            return err(OpenMessageError::BadPeerAs {
                value: o.my_as().to_be_bytes().into(),
            });
        }
        if matches!(o.hold_time(), 1 | 2) {
            return err(OpenMessageError::UnacceptableHoldTime {
                value: Box::new([]),
            });
        }
        let id = o.bgp_id();
        if id.is_unspecified() || id.is_broadcast() || id == self.cfg.router_id {
            return err(OpenMessageError::BadBgpIdentifier {
                value: Box::new([]),
            });
        }
        Ok(())
    }

    fn on_message(&mut self, now: Instant, msg: BgpMessage) -> Vec<Action> {
        match (self.state, msg) {
            (_, BgpMessage::Notification(n)) => {
                self.stats.notifications_in += 1;
                let why = format!("NOTIFICATION from the peer: {}", describe(&n));
                self.go_idle(now, why, vec![Action::Close])
            }
            (State::OpenSent, BgpMessage::Open(o)) => {
                self.stats.opens_in += 1;
                if let Err(n) = self.check_open(&o) {
                    return self.fail(now, n);
                }
                self.peer_id = Some(o.bgp_id());
                self.asn4 = o
                    .capabilities()
                    .iter()
                    .any(|c| matches!(c, BgpCapability::FourOctetAs(_)));
                self.hold = self.cfg.hold_time.min(o.hold_time());
                self.restart_hold(now);
                self.state = State::OpenConfirm;
                self.keepalive(now)
            }
            (State::OpenConfirm, BgpMessage::KeepAlive) => {
                self.stats.keepalives_in += 1;
                self.restart_hold(now);
                self.state = State::Established;
                self.stats.established += 1;
                self.up_since = Some(now);
                self.last_error = None;
                vec![Action::Up]
            }
            (State::Established, BgpMessage::KeepAlive) => {
                self.stats.keepalives_in += 1;
                self.restart_hold(now);
                Vec::new()
            }
            (State::Established, BgpMessage::Update(u)) => {
                self.stats.updates_in += 1;
                self.restart_hold(now);
                let p = crate::update::parse(&u, self.attr_errors);
                if p.error.is_some() {
                    self.stats.treated_as_withdraw += 1;
                }
                vec![Action::Update(Box::new(p))]
            }
            (State::Established, BgpMessage::RouteRefresh(_)) => {
                self.stats.refreshes_in += 1;
                self.restart_hold(now);
                vec![Action::RouteRefresh]
            }
            (state, _) => {
                // A message the state does not expect (§8.2.2: an FSM error).
                let n = BgpNotificationMessage::FiniteStateMachineError(match state {
                    State::OpenSent => {
                        FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState {
                            value: Box::new([]),
                        }
                    }
                    State::OpenConfirm => {
                        FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState {
                            value: Box::new([]),
                        }
                    }
                    State::Established => {
                        FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState {
                            value: Box::new([]),
                        }
                    }
                    _ => FiniteStateMachineError::Unspecific {
                        value: Box::new([]),
                    },
                });
                self.fail(now, n)
            }
        }
    }

    /// Sends `n`, closes, and goes Idle (to start again after `idle_hold`).
    fn fail(&mut self, now: Instant, n: BgpNotificationMessage) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.state, State::Idle | State::Connect | State::Active) {
            self.stats.notifications_out += 1;
            out.push(Action::Send(wire::encode(&BgpMessage::Notification(
                n.clone(),
            ))));
        }
        out.push(Action::Close);
        self.go_idle(now, format!("sent NOTIFICATION {}", describe(&n)), out)
    }

    fn go_idle(&mut self, now: Instant, why: String, mut out: Vec<Action>) -> Vec<Action> {
        if self.state == State::Established {
            out.push(Action::Down(why.clone()));
        }
        self.state = State::Idle;
        self.last_error = Some(why);
        self.hold = 0;
        self.hold_at = None;
        self.keepalive_at = None;
        self.connect_retry_at = None;
        self.up_since = None;
        self.peer_id = None;
        self.restart_at = Some(now + self.cfg.idle_hold);
        out
    }

    /// `d11 show NODE bgp`: the session's state, timers and counters.
    pub fn show(&self, now: Instant) -> Value {
        let s = &self.stats;
        json!({
            "state": self.state.name(),
            "remote_as": self.cfg.remote_as,
            "kind": if self.cfg.ibgp() { "iBGP" } else { "eBGP" },
            "peer_id": self.peer_id.map(|i| i.to_string()),
            "hold_time": self.hold,
            "uptime_s": self.up_since.map(|t| now.saturating_duration_since(t).as_secs()),
            "messages_in": s.opens_in + s.updates_in + s.keepalives_in + s.notifications_in + s.refreshes_in,
            "messages_out": s.opens_out + s.updates_out + s.keepalives_out + s.notifications_out,
            "updates_in": s.updates_in,
            "updates_out": s.updates_out,
            "treated_as_withdraw": s.treated_as_withdraw,
            "established": s.established,
            "last_error": self.last_error,
        })
    }
}
