//! Two sessions joined by an in-memory "TCP connection", under a clock the test moves.

use crate::session::{Action, Config, Session, State};
use crate::wire;
use netgauze_bgp_pkt::BgpMessage;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Two speakers and the octets in flight between them; `cut` drops what b sends.
struct Pair {
    a: Session,
    b: Session,
    now: Instant,
    a_events: Vec<Action>,
    b_events: Vec<Action>,
    cut: bool,
}

impl Pair {
    /// `b` waits for `a` to connect (passive, started).
    fn new(a: Config, mut b: Config) -> Self {
        b.passive = true;
        let now = Instant::now();
        let mut b = Session::new(b);
        b.start(now);
        Self {
            a: Session::new(a),
            b,
            now,
            a_events: Vec::new(),
            b_events: Vec::new(),
            cut: false,
        }
    }

    /// Carries out actions until nothing is left to do at this instant.
    fn settle(&mut self, mut from_a: Vec<Action>, mut from_b: Vec<Action>) {
        for _ in 0..1000 {
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            let (mut next_a, mut next_b) = (Vec::new(), Vec::new());
            for act in from_a.drain(..) {
                match act {
                    Action::Connect => {
                        // The peer listens: both ends see the connection.
                        next_a.extend(self.a.on_connected(self.now));
                        next_b.extend(self.b.on_connected(self.now));
                    }
                    Action::Send(bytes) => next_b.extend(self.b.on_bytes(self.now, &bytes)),
                    Action::Close => next_b.extend(self.b.on_closed(self.now)),
                    other => self.a_events.push(other),
                }
            }
            for act in from_b.drain(..) {
                match act {
                    Action::Connect => {
                        next_b.extend(self.b.on_connected(self.now));
                        next_a.extend(self.a.on_connected(self.now));
                    }
                    Action::Send(bytes) if !self.cut => {
                        next_a.extend(self.a.on_bytes(self.now, &bytes))
                    }
                    Action::Send(_) => {}
                    Action::Close if !self.cut => next_a.extend(self.a.on_closed(self.now)),
                    Action::Close => {}
                    other => self.b_events.push(other),
                }
            }
            from_a = next_a;
            from_b = next_b;
        }
        panic!("the sessions never settled");
    }

    /// Moves the clock on, firing timers as they fall due.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = [self.a.poll_at(), self.b.poll_at()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            let (pa, pb) = (self.a.poll(self.now), self.b.poll(self.now));
            self.settle(pa, pb);
        }
        self.now = end;
    }
}

fn cfg(local: u32, remote: u32, id: [u8; 4], hold: u16) -> Config {
    let mut c = Config::new(local, remote, Ipv4Addr::from(id));
    c.hold_time = hold;
    c
}

/// a (AS 64500, hold 90) connects to b (AS 4200000001, a 4-octet AS, hold 30, passive):
/// OPENs, KEEPALIVEs, Established on both sides with the smaller hold time; keepalives every
/// 10 s keep it up for ten minutes.
#[test]
fn two_speakers_establish_with_the_smaller_hold_time_and_stay_up() {
    let b = cfg(4_200_000_001, 64500, [10, 0, 0, 2], 30);
    let mut p = Pair::new(cfg(64500, 4_200_000_001, [10, 0, 0, 1], 90), b);
    assert_eq!(p.b.state(), State::Active);
    let sa = p.a.start(p.now);
    p.settle(sa, Vec::new());
    assert_eq!(
        (p.a.state(), p.b.state()),
        (State::Established, State::Established)
    );
    assert_eq!((p.a.hold_time(), p.b.hold_time()), (30, 30));
    assert!(p.a.asn4() && p.b.asn4());
    assert_eq!(p.a.peer_id(), Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(p.a_events, [Action::Up]);
    p.run_for(Duration::from_secs(600));
    assert_eq!(p.a.state(), State::Established);
    // 600 s / 10 s, and the one of OpenSent.
    assert!(
        (60..=62).contains(&p.a.stats.keepalives_out),
        "{:?}",
        p.a.stats
    );
    assert_eq!(p.a.stats.established, 1);
}

/// The peer goes silent: after the hold time, a HOLD TIMER EXPIRED NOTIFICATION (4/0), the
/// session is down, and after the idle hold it starts again.
#[test]
fn the_hold_timer_expires_when_the_peer_goes_silent() {
    let mut p = Pair::new(
        cfg(64500, 64501, [10, 0, 0, 1], 9),
        cfg(64501, 64500, [10, 0, 0, 2], 9),
    );
    let sa = p.a.start(p.now);
    p.settle(sa, Vec::new());
    assert_eq!(p.a.state(), State::Established);
    p.cut = true;
    p.run_for(Duration::from_millis(8900));
    assert_eq!(p.a.state(), State::Established, "not before the hold time");
    let before = p.a.stats.notifications_out;
    p.run_for(Duration::from_millis(200));
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(p.a.stats.notifications_out, before + 1);
    assert!(
        matches!(p.a_events.last(), Some(Action::Down(why)) if why.contains("4/0")),
        "{:?}",
        p.a_events
    );
    // The link back: the session comes up again by itself.
    p.cut = false;
    p.run_for(Duration::from_secs(15));
    assert_eq!(p.a.state(), State::Established);
    assert_eq!(p.a.stats.established, 2);
}

/// Hold time 0 on one side: no keepalives, no hold timer; the session stays up.
#[test]
fn hold_time_zero_means_no_keepalives() {
    let mut p = Pair::new(
        cfg(64500, 64501, [10, 0, 0, 1], 0),
        cfg(64501, 64500, [10, 0, 0, 2], 90),
    );
    let sa = p.a.start(p.now);
    p.settle(sa, Vec::new());
    assert_eq!((p.a.hold_time(), p.b.hold_time()), (0, 0));
    let k = p.a.stats.keepalives_out;
    p.cut = true;
    p.run_for(Duration::from_secs(3600));
    assert_eq!(p.a.state(), State::Established);
    assert_eq!(p.a.stats.keepalives_out, k);
}

/// The checks of §6.2 on OPEN, each with its NOTIFICATION: a peer in another AS than
/// configured (2/2), an identifier of 0 (2/3) or our own (2/3), a hold time of 2 (2/6); and
/// a version 3 OPEN (2/1) and bad headers (1/1, 1/2, 1/3) as octets.
#[test]
fn bad_opens_and_headers_get_their_notifications() {
    let try_open = |b: Config| -> (u8, u8) {
        let mut p = Pair::new(cfg(64500, 64501, [10, 0, 0, 1], 90), b);
        let sa = p.a.start(p.now);
        // Capture what a sends back: the NOTIFICATION.
        let mut acts = Vec::new();
        for act in sa {
            if act == Action::Connect {
                let open_a = p.a.on_connected(p.now);
                let open_b = p.b.on_connected(p.now);
                let Action::Send(ob) = &open_b[0] else {
                    panic!()
                };
                acts = p.a.on_bytes(p.now, ob);
                let _ = open_a;
            }
        }
        assert_eq!(p.a.state(), State::Idle);
        let Some(Action::Send(n)) = acts.first() else {
            panic!("{acts:?}")
        };
        (n[wire::HEADER_LEN], n[wire::HEADER_LEN + 1])
    };
    assert_eq!(try_open(cfg(64599, 64500, [10, 0, 0, 2], 90)), (2, 2));
    assert_eq!(try_open(cfg(64501, 64500, [0, 0, 0, 0], 90)), (2, 3));
    assert_eq!(try_open(cfg(64501, 64500, [10, 0, 0, 1], 90)), (2, 3));
    assert_eq!(try_open(cfg(64501, 64500, [10, 0, 0, 2], 2)), (2, 6));

    // Octets: a session in OpenSent, then a crafted message.
    let crafted = |bytes: &[u8]| -> (u8, u8) {
        let mut s = Session::new(cfg(64500, 64501, [10, 0, 0, 1], 90));
        let now = Instant::now();
        s.start(now);
        s.on_connected(now);
        let acts = s.on_bytes(now, bytes);
        assert_eq!(s.state(), State::Idle, "{acts:?}");
        let Some(Action::Send(n)) = acts.first() else {
            panic!("{acts:?}")
        };
        (n[wire::HEADER_LEN], n[wire::HEADER_LEN + 1])
    };
    let good = wire::encode(&BgpMessage::KeepAlive);
    let mut marker = good.clone();
    marker[3] = 0;
    assert_eq!(crafted(&marker), (1, 1));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert_eq!(crafted(&long), (1, 2));
    let mut short = good.clone();
    short[16..18].copy_from_slice(&18u16.to_be_bytes());
    assert_eq!(crafted(&short), (1, 2));
    let mut kind = good.clone();
    kind[18] = 9;
    assert_eq!(crafted(&kind), (1, 3));
    // An OPEN of version 3.
    let mut b = Session::new(cfg(64501, 64500, [10, 0, 0, 2], 90));
    b.start(Instant::now());
    let Action::Send(mut v3) = b.on_connected(Instant::now()).remove(0) else {
        panic!()
    };
    v3[wire::HEADER_LEN] = 3;
    assert_eq!(crafted(&v3), (2, 1));
    // A KEEPALIVE in OpenSent (before the peer's OPEN): an FSM error (5/1).
    assert_eq!(crafted(&good), (5, 1));
}

/// A session stopped by us: Cease (6/2), down, and no restart.
#[test]
fn an_administrative_stop_sends_cease() {
    let mut p = Pair::new(
        cfg(64500, 64501, [10, 0, 0, 1], 90),
        cfg(64501, 64500, [10, 0, 0, 2], 90),
    );
    let sa = p.a.start(p.now);
    p.settle(sa, Vec::new());
    let acts = p.a.stop(p.now);
    let Some(Action::Send(n)) = acts.first() else {
        panic!("{acts:?}")
    };
    assert_eq!((n[wire::HEADER_LEN], n[wire::HEADER_LEN + 1]), (6, 2));
    p.settle(acts, Vec::new());
    assert_eq!(p.b.state(), State::Idle);
    p.run_for(Duration::from_secs(60));
    assert_eq!(p.a.state(), State::Idle, "stopped stays stopped");
}

mod updates {
    use crate::rib::{Attrs, Segment};
    use crate::update::{build, parse};
    use crate::wire;
    use netgauze_bgp_pkt::BgpMessage;
    use std::net::Ipv4Addr;

    fn attrs() -> Attrs {
        Attrs {
            origin: 0,
            as_path: vec![Segment {
                set: false,
                asns: vec![64510, 4_200_000_001],
            }],
            next_hop: Ipv4Addr::new(198, 18, 0, 5),
            med: Some(20),
            local_pref: Some(200),
            communities: vec![crate::rib::NO_EXPORT],
        }
    }

    /// Built, encoded, decoded and read back: the same prefixes and attributes, on a
    /// 4-octet session, and on a 2-octet one (AS_TRANS in AS_PATH, the real ASes in AS4_PATH).
    #[test]
    fn an_update_survives_the_wire_both_ways() {
        let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
        let ann = [net("203.0.113.0/24"), net("192.0.2.0/25")];
        let wd = [net("198.51.100.0/24")];
        for asn4 in [true, false] {
            let u = build(&wd, Some((&attrs(), &ann)), asn4, true);
            let bytes = wire::encode(&BgpMessage::Update(u));
            let (BgpMessage::Update(back), 0) = wire::decode(&bytes, asn4).unwrap() else {
                panic!("not an UPDATE")
            };
            let p = parse(&back, 0);
            assert_eq!(p.withdrawn, wd);
            assert_eq!(p.announced, ann);
            assert_eq!(p.attrs, Some(attrs()), "asn4 {asn4}");
        }
        // eBGP: no LOCAL_PREF on the wire.
        let u = build(&[], Some((&attrs(), &ann)), true, false);
        let bytes = wire::encode(&BgpMessage::Update(u));
        let (BgpMessage::Update(back), _) = wire::decode(&bytes, true).unwrap() else {
            panic!()
        };
        assert_eq!(parse(&back, 0).attrs.unwrap().local_pref, None);
    }

    /// RFC 7606: an UPDATE announcing prefixes without NEXT_HOP, or with an ORIGIN of 7, is
    /// a withdrawal of those prefixes, not a session reset.
    #[test]
    fn malformed_attributes_are_treated_as_withdraw() {
        let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
        let ann = [net("203.0.113.0/24")];
        let u = build(&[], Some((&attrs(), &ann)), true, true);
        let mut bytes = wire::encode(&BgpMessage::Update(u));
        // ORIGIN is the first attribute: flags, type 1, length 1, value.
        let at = wire::HEADER_LEN + 2 + 2;
        assert_eq!(&bytes[at..at + 3], &[0x40, 1, 1]);
        bytes[at + 3] = 7;
        let (BgpMessage::Update(back), errors) = wire::decode(&bytes, true).unwrap() else {
            panic!()
        };
        assert_eq!(errors, 1);
        let p = parse(&back, errors);
        assert_eq!((p.announced.len(), p.attrs.is_none()), (1, true));
        assert!(p.error.unwrap().contains("treat-as-withdraw"));
        // No NEXT_HOP.
        let mut a = attrs();
        a.next_hop = Ipv4Addr::UNSPECIFIED;
        let u = build(&[], Some((&a, &ann)), true, true);
        let kept: Vec<_> = u
            .path_attributes()
            .iter()
            .filter(|x| {
                !matches!(
                    x.value(),
                    netgauze_bgp_pkt::path_attribute::PathAttributeValue::NextHop(_)
                )
            })
            .cloned()
            .collect();
        let u =
            netgauze_bgp_pkt::update::BgpUpdateMessage::new(Vec::new(), kept, u.nlri().to_vec());
        let p = parse(&u, 0);
        assert!(p.attrs.is_none() && p.error.unwrap().contains("missing"));
    }
}
