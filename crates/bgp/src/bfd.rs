//! BFD, Bidirectional Forwarding Detection (RFC 5880), single hop over IPv4 (RFC 5881), in
//! asynchronous mode, sans-IO: a session is given the control packets that arrive and the
//! time, and says what to send and when the path went up or down.
//!
//! The control packet is 24 octets (no authentication section); it is encoded here by hand:
//! the one Rust crate found for BFD (`rust-bfd`) is a daemon that owns its UDP sockets, which
//! cannot run over the router's own stack, and the format is six fixed fields.
//!
//! What a session does, by section of RFC 5880:
//! - §6.8.6, reception: the checks (version 1, length, a nonzero Detect Mult and My
//!   Discriminator, no Multipoint bit, no authentication), then the three-way handshake
//!   Down -> Init -> Up, and Down when the peer says Down or AdminDown (diagnostic 3).
//! - §6.8.3, timers: while not Up, Desired Min TX is at least one second; once Up it is the
//!   configured interval, announced with a Poll Sequence (P until the peer's F). A received
//!   P is answered at once with F.
//! - §6.8.4, detection: no valid packet for the peer's Detect Mult times the agreed interval
//!   (the greater of our Required Min RX and its last Desired Min TX) takes an Init or Up
//!   session Down with diagnostic 1 and forgets the peer's discriminator.
//! - §6.8.7, transmission: every max(Desired Min TX, the peer's Required Min RX), less a
//!   random 0-25 % (10-25 % with a Detect Mult of 1); none while the peer is in Demand mode
//!   with both Up.

use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The UDP port of single-hop BFD control packets (RFC 5881 §4).
pub const PORT: u16 = 3784;
/// The TTL every single-hop packet is sent with and must arrive with (RFC 5881 §5).
pub const TTL: u8 = 255;
/// The length of a control packet without authentication.
pub const LEN: usize = 24;
/// Desired Min TX while the session is not Up (§6.8.3: not less than one second).
const SLOW_TX_US: u32 = 1_000_000;

fn default_interval() -> u32 {
    100
}
fn default_multiplier() -> u8 {
    3
}

/// BFD for a neighbour (`bfd = { interval_ms = 100, multiplier = 3 }`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BfdConfig {
    /// Desired Min TX and Required Min RX once Up, milliseconds.
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    /// Detect Mult: how many intervals without a packet take the session down.
    #[serde(default = "default_multiplier")]
    pub multiplier: u8,
}

impl Default for BfdConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_interval(),
            multiplier: default_multiplier(),
        }
    }
}

impl BfdConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.multiplier == 0 {
            return Err("bfd multiplier must be at least 1".into());
        }
        if !(10..=10_000).contains(&self.interval_ms) {
            return Err(format!(
                "bfd interval_ms {} is outside 10..=10000",
                self.interval_ms
            ));
        }
        Ok(())
    }
}

/// The session states of §4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

/// Diagnostic codes (§4.1) that we send.
pub mod diag {
    pub const NONE: u8 = 0;
    pub const DETECTION_TIME_EXPIRED: u8 = 1;
    pub const NEIGHBOR_SIGNALED_DOWN: u8 = 3;

    pub fn name(d: u8) -> &'static str {
        match d {
            0 => "No Diagnostic",
            1 => "Control Detection Time Expired",
            2 => "Echo Function Failed",
            3 => "Neighbor Signaled Session Down",
            4 => "Forwarding Plane Reset",
            5 => "Path Down",
            6 => "Concatenated Path Down",
            7 => "Administratively Down",
            8 => "Reverse Concatenated Path Down",
            _ => "reserved",
        }
    }
}

/// A BFD control packet (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: u8,
    pub state: State,
    pub poll: bool,
    pub fin: bool,
    pub control_independent: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a received control packet was discarded (§6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    Short,
    Version,
    Length,
    DetectMult,
    Multipoint,
    MyDiscriminator,
    /// Authentication present (none is configured).
    Auth,
    /// Your Discriminator zero while the sender is neither Down nor AdminDown.
    YourDiscriminator,
}

impl Discard {
    pub fn name(self) -> &'static str {
        match self {
            Discard::Short => "short",
            Discard::Version => "version",
            Discard::Length => "length",
            Discard::DetectMult => "detect_mult",
            Discard::Multipoint => "multipoint",
            Discard::MyDiscriminator => "my_discriminator",
            Discard::Auth => "auth",
            Discard::YourDiscriminator => "your_discriminator",
        }
    }
}

impl Packet {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.fin) << 4)
            | (u8::from(self.control_independent) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }

    /// Reads and checks a control packet as §6.8.6 says, up to the point where a session is
    /// chosen.
    pub fn decode(b: &[u8]) -> Result<Self, Discard> {
        if b.len() < LEN {
            return Err(Discard::Short);
        }
        if b[0] >> 5 != 1 {
            return Err(Discard::Version);
        }
        let len = usize::from(b[3]);
        let auth = b[1] & 0x04 != 0;
        if auth {
            return Err(Discard::Auth);
        }
        if len < LEN || len > b.len() {
            return Err(Discard::Length);
        }
        if b[2] == 0 {
            return Err(Discard::DetectMult);
        }
        if b[1] & 0x01 != 0 {
            return Err(Discard::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: b[0] & 0x1f,
            state: State::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            fin: b[1] & 0x10 != 0,
            control_independent: b[1] & 0x08 != 0,
            demand: b[1] & 0x02 != 0,
            detect_mult: b[2],
            my_disc: word(4),
            your_disc: word(8),
            desired_min_tx_us: word(12),
            required_min_rx_us: word(16),
            required_min_echo_rx_us: word(20),
        };
        if p.my_disc == 0 {
            return Err(Discard::MyDiscriminator);
        }
        if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Discard::YourDiscriminator);
        }
        Ok(p)
    }
}

/// A change of a session's state that its client (BGP) acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Up,
    /// Left Up, with the diagnostic.
    Down(u8),
}

/// One BFD session with one neighbour.
#[derive(Debug)]
pub struct Session {
    cfg: BfdConfig,
    local_disc: u32,
    remote_disc: u32,
    state: State,
    remote_state: State,
    diag: u8,
    remote_min_rx_us: u32,
    remote_desired_tx_us: u32,
    remote_detect_mult: u8,
    remote_demand: bool,
    /// A Poll Sequence we started is not yet answered with F.
    polling: bool,
    /// The peer's P, to be answered with F at once.
    owe_final: bool,
    tx_at: Option<Instant>,
    detect_at: Option<Instant>,
    rng: u64,
    up_since: Option<Instant>,
    pub packets_in: u64,
    pub packets_out: u64,
    pub ups: u64,
    pub downs: u64,
    /// The diagnostic and time of the last Down from Up.
    last_down: Option<(u8, Instant)>,
}

impl Session {
    /// A session that starts Down and sends at once; `local_disc` must be nonzero and unique
    /// on this system, `seed` varies the jitter.
    pub fn new(cfg: BfdConfig, local_disc: u32, seed: u64, now: Instant) -> Self {
        Self {
            cfg,
            local_disc: local_disc.max(1),
            remote_disc: 0,
            state: State::Down,
            remote_state: State::Down,
            diag: diag::NONE,
            remote_min_rx_us: 1,
            remote_desired_tx_us: SLOW_TX_US,
            remote_detect_mult: 0,
            remote_demand: false,
            polling: false,
            owe_final: false,
            tx_at: Some(now),
            detect_at: None,
            rng: seed | 1,
            up_since: None,
            packets_in: 0,
            packets_out: 0,
            ups: 0,
            downs: 0,
            last_down: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_disc(&self) -> u32 {
        self.local_disc
    }

    fn desired_tx_us(&self) -> u32 {
        let fast = self.cfg.interval_ms.saturating_mul(1000);
        if self.state == State::Up {
            fast
        } else {
            fast.max(SLOW_TX_US)
        }
    }

    fn required_rx_us(&self) -> u32 {
        self.cfg.interval_ms.saturating_mul(1000)
    }

    /// The detection time of §6.8.4, for an Init or Up session.
    pub fn detection_time(&self) -> Duration {
        let agreed = self.required_rx_us().max(self.remote_desired_tx_us);
        Duration::from_micros(u64::from(agreed) * u64::from(self.remote_detect_mult.max(1)))
    }

    fn jittered(&mut self, us: u32) -> Duration {
        // xorshift64: the jitter needs no more.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (lo, hi) = if self.cfg.multiplier == 1 {
            (75, 90)
        } else {
            (75, 100)
        };
        let pct = lo + self.rng % (hi - lo + 1);
        Duration::from_micros(u64::from(us) * pct / 100)
    }

    fn packet(&self, fin: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !fin,
            fin,
            control_independent: false,
            demand: false,
            detect_mult: self.cfg.multiplier,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx_us: self.desired_tx_us(),
            required_min_rx_us: self.required_rx_us(),
            required_min_echo_rx_us: 0,
        }
    }

    fn schedule_tx(&mut self, now: Instant) {
        let periodic =
            !(self.remote_demand && self.state == State::Up && self.remote_state == State::Up)
                && self.remote_min_rx_us != 0;
        self.tx_at = if periodic {
            let us = self.desired_tx_us().max(self.remote_min_rx_us);
            Some(now + self.jittered(us))
        } else {
            None
        };
    }

    fn set_state(&mut self, now: Instant, to: State, d: u8) -> Option<Event> {
        let from = self.state;
        self.state = to;
        self.diag = d;
        let ev = match (from, to) {
            (State::Up, State::Up) => None,
            (_, State::Up) => {
                self.ups += 1;
                self.up_since = Some(now);
                // Desired Min TX drops from one second to the configured interval.
                self.polling = true;
                Some(Event::Up)
            }
            (State::Up, _) => {
                self.downs += 1;
                self.up_since = None;
                self.polling = false;
                self.last_down = Some((d, now));
                Some(Event::Down(d))
            }
            _ => None,
        };
        if to == State::Down {
            self.detect_at = None;
        }
        ev
    }

    /// A control packet from the neighbour, already decoded and checked (and, by the caller,
    /// arrived with TTL 255 from the neighbour's address). What to send now is left for
    /// [`Session::poll`].
    pub fn on_packet(&mut self, now: Instant, p: &Packet) -> Option<Event> {
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            return None;
        }
        self.packets_in += 1;
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_tx_us = p.desired_min_tx_us;
        self.remote_detect_mult = p.detect_mult;
        if p.fin {
            self.polling = false;
        }
        if p.poll {
            self.owe_final = true;
            self.tx_at = Some(now);
        }
        let ev = match (self.state, p.state) {
            (State::AdminDown, _) => return None,
            (State::Down, _) | (State::Init, _) | (State::Up, _) if p.state == State::AdminDown => {
                if self.state != State::Down {
                    self.set_state(now, State::Down, diag::NEIGHBOR_SIGNALED_DOWN)
                } else {
                    None
                }
            }
            (State::Down, State::Down) => {
                let e = self.set_state(now, State::Init, diag::NONE);
                self.tx_at = Some(now);
                e
            }
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                let e = self.set_state(now, State::Up, diag::NONE);
                self.tx_at = Some(now);
                e
            }
            (State::Up, State::Down) => {
                let e = self.set_state(now, State::Down, diag::NEIGHBOR_SIGNALED_DOWN);
                self.tx_at = Some(now);
                e
            }
            _ => None,
        };
        if matches!(self.state, State::Init | State::Up) {
            self.detect_at = Some(now + self.detection_time());
        }
        if self.tx_at.is_none() {
            self.schedule_tx(now);
        }
        ev
    }

    /// The timers that are due: the packet to send, if one is, and a change of state.
    pub fn poll(&mut self, now: Instant) -> (Option<Packet>, Option<Event>) {
        let mut ev = None;
        if self.detect_at.is_some_and(|t| t <= now) {
            self.detect_at = None;
            self.remote_disc = 0;
            self.remote_state = State::Down;
            self.remote_demand = false;
            ev = self.set_state(now, State::Down, diag::DETECTION_TIME_EXPIRED);
            self.tx_at = Some(now);
        }
        let mut out = None;
        if self.tx_at.is_some_and(|t| t <= now) {
            let fin = std::mem::take(&mut self.owe_final);
            out = Some(self.packet(fin));
            self.packets_out += 1;
            self.schedule_tx(now);
        }
        (out, ev)
    }

    pub fn poll_at(&self) -> Option<Instant> {
        [self.tx_at, self.detect_at].into_iter().flatten().min()
    }

    /// `d11 show NODE bfd`.
    pub fn show(&self, now: Instant) -> Value {
        json!({
            "state": self.state.name(),
            "remote_state": self.remote_state.name(),
            "local_discriminator": self.local_disc,
            "remote_discriminator": self.remote_disc,
            "diagnostic": diag::name(self.diag),
            "tx_interval_ms": f64::from(self.desired_tx_us().max(self.remote_min_rx_us)) / 1000.0,
            "detection_time_ms": self.detection_time().as_secs_f64() * 1000.0,
            "uptime_ms": self.up_since.map(|t| now.saturating_duration_since(t).as_millis() as u64),
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "ups": self.ups,
            "downs": self.downs,
            "last_down": self.last_down.map(|(d, t)| json!({
                "diagnostic": diag::name(d),
                "ago_ms": now.saturating_duration_since(t).as_millis() as u64,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sessions joined by a link that can be cut, run under virtual time in 1 ms steps.
    struct Pair {
        s: [Session; 2],
        now: Instant,
        link: bool,
        events: Vec<(usize, Event, Duration)>,
        start: Instant,
        sent: Vec<(usize, Packet)>,
    }

    impl Pair {
        fn new(cfg: BfdConfig) -> Self {
            let now = Instant::now();
            Self {
                s: [
                    Session::new(cfg.clone(), 11, 1, now),
                    Session::new(cfg, 22, 2, now),
                ],
                now,
                link: true,
                events: Vec::new(),
                start: now,
                sent: Vec::new(),
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                for i in 0..2 {
                    let (p, e) = self.s[i].poll(self.now);
                    if let Some(e) = e {
                        self.events.push((i, e, self.now - self.start));
                    }
                    if let Some(p) = p {
                        self.sent.push((i, p));
                        let bytes = p.encode();
                        if self.link {
                            let p = Packet::decode(&bytes).unwrap();
                            if let Some(e) = self.s[1 - i].on_packet(self.now, &p) {
                                self.events.push((1 - i, e, self.now - self.start));
                            }
                        }
                    }
                }
                self.now += Duration::from_millis(1);
            }
        }
    }

    #[test]
    fn comes_up_with_three_packets_and_polls_to_the_fast_interval() {
        let mut p = Pair::new(BfdConfig::default());
        p.run(Duration::from_millis(10));
        assert_eq!(p.s[0].state(), State::Up);
        assert_eq!(p.s[1].state(), State::Up);
        // Down, Init, Up: the handshake of §6.2.
        let states: Vec<State> = p.sent.iter().take(3).map(|(_, x)| x.state).collect();
        assert_eq!(states, [State::Down, State::Init, State::Up]);
        p.run(Duration::from_secs(2));
        // Each side polled and was answered: packets every 75-100 ms now.
        assert!(p.sent.iter().any(|(_, x)| x.poll));
        assert!(p.sent.iter().any(|(_, x)| x.fin));
        assert!(!p.s[0].polling && !p.s[1].polling);
        assert!(p.sent.iter().all(|(_, x)| !(x.poll && x.fin)));
        let before = p.sent.len();
        p.run(Duration::from_secs(1));
        let n = p.sent.len() - before;
        assert!(
            (20..=27).contains(&n),
            "{n} packets in a second from two sides"
        );
        assert_eq!(p.s[0].detection_time(), Duration::from_millis(300));
    }

    #[test]
    fn a_cut_is_detected_within_the_detection_time_and_it_comes_back() {
        let mut p = Pair::new(BfdConfig::default());
        p.run(Duration::from_secs(3));
        p.events.clear();
        p.link = false;
        let cut = p.now - p.start;
        p.run(Duration::from_secs(1));
        assert_eq!(p.events.len(), 2, "{:?}", p.events);
        for (_, e, at) in &p.events {
            assert_eq!(*e, Event::Down(diag::DETECTION_TIME_EXPIRED));
            let took = *at - cut;
            assert!(took <= Duration::from_millis(300), "{took:?}");
            assert!(took >= Duration::from_millis(200), "{took:?}");
        }
        // Down, each sends slowly (one a second) until the link is back.
        p.events.clear();
        p.link = true;
        p.run(Duration::from_millis(2100));
        assert_eq!(p.s[0].state(), State::Up);
        assert_eq!(p.s[1].state(), State::Up);
        assert_eq!(p.events.iter().filter(|e| e.1 == Event::Up).count(), 2);
    }

    #[test]
    fn a_neighbour_that_says_down_takes_the_session_down() {
        let mut p = Pair::new(BfdConfig::default());
        p.run(Duration::from_secs(1));
        let mut admin = p.s[1].packet(false);
        admin.state = State::AdminDown;
        admin.diag = 7;
        assert_eq!(
            p.s[0].on_packet(p.now, &admin),
            Some(Event::Down(diag::NEIGHBOR_SIGNALED_DOWN))
        );
        // A packet for another session's discriminator is not ours.
        let mut other = p.s[1].packet(false);
        other.your_disc = 999;
        assert_eq!(p.s[0].on_packet(p.now, &other), None);
        assert_eq!(p.s[0].state(), State::Down);
    }

    #[test]
    fn bad_packets_are_discarded_with_their_reason() {
        let good = Session::new(BfdConfig::default(), 5, 1, Instant::now())
            .packet(false)
            .encode();
        assert!(Packet::decode(&good).is_ok());
        let bad = |f: &dyn Fn(&mut [u8; LEN])| {
            let mut b = good;
            f(&mut b);
            Packet::decode(&b).unwrap_err()
        };
        assert_eq!(Packet::decode(&good[..20]).unwrap_err(), Discard::Short);
        assert_eq!(bad(&|b| b[0] = 2 << 5), Discard::Version);
        assert_eq!(bad(&|b| b[3] = 30), Discard::Length);
        assert_eq!(bad(&|b| b[3] = 20), Discard::Length);
        assert_eq!(bad(&|b| b[2] = 0), Discard::DetectMult);
        assert_eq!(bad(&|b| b[1] |= 1), Discard::Multipoint);
        assert_eq!(bad(&|b| b[1] |= 4), Discard::Auth);
        assert_eq!(bad(&|b| b[4..8].fill(0)), Discard::MyDiscriminator);
        // Up with Your Discriminator zero.
        assert_eq!(
            bad(&|b| {
                b[1] = 3 << 6;
                b[8..12].fill(0)
            }),
            Discard::YourDiscriminator
        );
        // Wireshark's layout: version 1, state Down, 24 octets.
        assert_eq!(good[0], 0x20);
        assert_eq!(good[1], 0x40);
        assert_eq!(good[3], 24);
    }

    #[test]
    fn config_is_checked() {
        assert!(BfdConfig::default().check().is_ok());
        let c = BfdConfig {
            interval_ms: 1,
            multiplier: 3,
        };
        assert!(c.check().is_err());
        let c = BfdConfig {
            interval_ms: 100,
            multiplier: 0,
        };
        assert!(c.check().is_err());
    }
}
