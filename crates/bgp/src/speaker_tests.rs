//! Section 5's ASes as five speakers joined by in-memory links, under a clock the test moves:
//! every session comes up, a2 prefers c1's path to the cloud (LOCAL_PREF 200), the border
//! gives no transit; c1-c2 cut: a2 goes through c3 when the hold timers say so; back.

use crate::rib::{Change, PeerId};
use crate::speaker::{Dir, Out, Speaker, SpeakerConfig};
use ipnet::Ipv4Net;
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

struct Link {
    a: (usize, PeerId),
    b: (usize, PeerId),
    up: bool,
}

struct Net {
    names: Vec<&'static str>,
    sp: Vec<Speaker>,
    links: Vec<Link>,
    now: Instant,
    /// What each speaker would forward: prefix -> next hop (None: its own).
    fib: Vec<HashMap<Ipv4Net, Option<Ipv4Addr>>>,
    sent: usize,
}

impl Net {
    fn other(&self, s: usize, p: PeerId) -> Option<(usize, PeerId, bool)> {
        self.links.iter().find_map(|l| {
            if l.a == (s, p) {
                Some((l.b.0, l.b.1, l.up))
            } else if l.b == (s, p) {
                Some((l.a.0, l.a.1, l.up))
            } else {
                None
            }
        })
    }

    fn run(&mut self, first: Vec<(usize, Out)>) {
        let mut q: VecDeque<(usize, Out)> = first.into();
        let mut steps = 0;
        while let Some((s, o)) = q.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "no end to the messages");
            let now = self.now;
            let flip = |d: Dir| if d == Dir::Out { Dir::In } else { Dir::Out };
            if std::env::var("BGP_TRACE").is_ok() {
                eprintln!(
                    "{} {:?}",
                    self.names[s],
                    match &o {
                        Out::Send(c, b) => format!("Send {c:?} type {}", b[18]),
                        o => format!("{o:?}"),
                    }
                );
            }
            match o {
                Out::Connect(p) => match self.other(s, p) {
                    Some((t, tp, true)) => {
                        let a = self.sp[s].on_connected(now, p);
                        q.extend(a.into_iter().map(|o| (s, o)));
                        let b = self.sp[t].on_accepted(now, tp);
                        q.extend(b.into_iter().map(|o| (t, o)));
                    }
                    _ => {
                        let a = self.sp[s].on_closed(now, (p, Dir::Out));
                        q.extend(a.into_iter().map(|o| (s, o)));
                    }
                },
                Out::Send((p, d), bytes) => {
                    self.sent += 1;
                    if let Some((t, tp, true)) = self.other(s, p) {
                        let b = self.sp[t].on_bytes(now, (tp, flip(d)), &bytes);
                        q.extend(b.into_iter().map(|o| (t, o)));
                    }
                }
                Out::Close((p, d)) => {
                    if let Some((t, tp, true)) = self.other(s, p) {
                        let b = self.sp[t].on_closed(now, (tp, flip(d)));
                        q.extend(b.into_iter().map(|o| (t, o)));
                    }
                }
                Out::Route(Change::Best {
                    prefix, next_hop, ..
                }) => {
                    self.fib[s].insert(prefix, next_hop);
                }
                Out::Route(Change::Gone { prefix }) => {
                    self.fib[s].remove(&prefix);
                }
                Out::Up(_) | Out::Down(..) => {}
            }
        }
    }

    /// Starts every speaker and runs what follows at once.
    fn start(&mut self) {
        let now = self.now;
        let mut first = Vec::new();
        for (i, s) in self.sp.iter_mut().enumerate() {
            first.extend(s.start(now).into_iter().map(|o| (i, o)));
        }
        self.run(first);
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.sp.iter().filter_map(Speaker::poll_at).min() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            let now = self.now;
            let mut outs = Vec::new();
            for (i, s) in self.sp.iter_mut().enumerate() {
                outs.extend(s.poll(now).into_iter().map(|o| (i, o)));
            }
            self.run(outs);
        }
        self.now = end;
    }

    fn via(&self, name: &str, prefix: &str) -> Option<Option<Ipv4Addr>> {
        let i = self.names.iter().position(|n| *n == name).unwrap();
        self.fib[i].get(&prefix.parse().unwrap()).copied()
    }

    fn as_path(&self, name: &str, prefix: &str) -> String {
        let i = self.names.iter().position(|n| *n == name).unwrap();
        let r = &self.sp[i].rib;
        r.best(&prefix.parse().unwrap())
            .map(|(_, a, _)| a.as_path_string())
            .unwrap_or_default()
    }
}

/// Section 5 of journey.md, as configs (hold time 9 s for a test that waits out a cut).
fn section5() -> Net {
    let all = r#"{"default_accept": true}"#;
    let only = |p: &str| format!(r#"{{"rules": [{{"prefixes": [{{"net": "{p}"}}]}}]}}"#);
    let n = |addr: &str, asn: u32, local: &str, imp: &str, exp: &str, passive: bool| {
        format!(
            r#"{{"address": "{addr}", "remote_as": {asn}, "local_address": "{local}", "hold_time": 9, "passive": {passive}, "import": {imp}, "export": {exp}, "next_hop_self": true}}"#
        )
    };
    let prefer_c1 = r#"{"rules": [{"local_pref": 200}]}"#;
    let cfgs = [
        (
            "a2",
            64500,
            "10.0.0.1",
            "198.51.100.0/24",
            vec![
                n(
                    "198.18.0.1",
                    64501,
                    "198.18.0.0",
                    prefer_c1,
                    &only("198.51.100.0/24"),
                    false,
                ),
                n(
                    "198.18.0.7",
                    64502,
                    "198.18.0.6",
                    all,
                    &only("198.51.100.0/24"),
                    false,
                ),
            ],
        ),
        (
            "c1",
            64501,
            "10.0.0.2",
            "192.0.2.0/24",
            vec![
                n("198.18.0.0", 64500, "198.18.0.1", all, all, true),
                n("198.18.0.3", 64501, "198.18.0.2", all, all, false),
            ],
        ),
        (
            "c2",
            64501,
            "10.0.0.3",
            "",
            vec![
                n("198.18.0.2", 64501, "198.18.0.3", all, all, true),
                n("198.18.0.5", 64510, "198.18.0.4", all, all, false),
            ],
        ),
        (
            "c3",
            64502,
            "10.0.0.4",
            "",
            vec![
                n("198.18.0.6", 64500, "198.18.0.7", all, all, true),
                n("198.18.0.9", 64510, "198.18.0.8", all, all, false),
            ],
        ),
        (
            "border",
            64510,
            "10.0.0.5",
            "203.0.113.0/24",
            vec![
                n(
                    "198.18.0.4",
                    64501,
                    "198.18.0.5",
                    all,
                    &only("203.0.113.0/24"),
                    true,
                ),
                n(
                    "198.18.0.8",
                    64502,
                    "198.18.0.9",
                    all,
                    &only("203.0.113.0/24"),
                    true,
                ),
            ],
        ),
    ];
    let mut names = Vec::new();
    let mut sp = Vec::new();
    for (name, asn, id, net, neigh) in cfgs {
        let nets = if net.is_empty() {
            "[]".to_string()
        } else {
            format!(r#"["{net}"]"#)
        };
        let text = format!(
            r#"{{"asn": {asn}, "router_id": "{id}", "networks": {nets}, "neighbours": [{}]}}"#,
            neigh.join(",")
        );
        let cfg: SpeakerConfig = serde_json::from_str(&text).unwrap();
        names.push(name);
        sp.push(Speaker::new(&cfg).unwrap());
    }
    let link = |a: (usize, PeerId), b: (usize, PeerId)| Link { a, b, up: true };
    let links = vec![
        link((0, 0), (1, 0)), // a2 - c1
        link((1, 1), (2, 0)), // c1 - c2
        link((2, 1), (4, 0)), // c2 - border
        link((0, 1), (3, 0)), // a2 - c3
        link((3, 1), (4, 1)), // c3 - border
    ];
    let fib = vec![HashMap::new(); sp.len()];
    Net {
        names,
        sp,
        links,
        now: Instant::now(),
        fib,
        sent: 0,
    }
}

#[test]
fn section_5_converges_fails_over_and_returns() {
    let mut net = section5();
    net.start();
    net.run_for(Duration::from_secs(2));
    for (i, s) in net.sp.iter().enumerate() {
        for p in 0..s.peers() {
            assert_eq!(
                s.session(p).state(),
                crate::session::State::Established,
                "{} peer {p}",
                net.names[i]
            );
        }
    }
    // a2 goes to the cloud through c1 (LOCAL_PREF 200 over the shorter path through c3).
    assert_eq!(
        net.via("a2", "203.0.113.0/24"),
        Some(Some("198.18.0.1".parse().unwrap()))
    );
    assert_eq!(net.as_path("a2", "203.0.113.0/24"), "64501 64510");
    // The cloud reaches the carrier, the routers inside AS 64501 each other's prefixes.
    assert!(net.via("border", "198.51.100.0/24").is_some());
    assert!(net.via("c2", "192.0.2.0/24").is_some());
    // a2 exports only its own prefix, and the border only the cloud's: c3 never learns the
    // ix (AS 64501's) through either, so it is no transit between them.
    assert_eq!(net.via("c3", "192.0.2.0/24"), None);
    assert!(net.via("c3", "198.51.100.0/24").is_some());
    // Cut c1-c2: after the hold time (9 s), c1 withdraws and a2 goes through c3.
    net.links[1].up = false;
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        net.as_path("a2", "203.0.113.0/24"),
        "64501 64510",
        "not yet"
    );
    net.run_for(Duration::from_secs(6));
    assert_eq!(
        net.via("a2", "203.0.113.0/24"),
        Some(Some("198.18.0.7".parse().unwrap()))
    );
    assert_eq!(net.as_path("a2", "203.0.113.0/24"), "64502 64510");
    // The link back: the session comes up again, and a2 returns to c1.
    net.links[1].up = true;
    net.run_for(Duration::from_secs(15));
    assert_eq!(net.as_path("a2", "203.0.113.0/24"), "64501 64510");
    let show = net.sp[0].show(net.now);
    assert_eq!(show[0]["state"], "Established");
    assert!(show[0]["prefixes_accepted"].as_u64() >= Some(1), "{show}");
}

/// Both speakers connect at the same instant (neither passive): two connections, both send
/// OPEN; once the OPENs are in, the connection opened by the higher BGP Identifier (b's,
/// 10.0.0.9) stays and the other gets Cease 6/7. One session, Established, routes across.
#[test]
fn a_connection_collision_keeps_one_connection() {
    let cfg = |asn: u32, id: &str, peer: &str, peer_as: u32, local: &str, net: &str| {
        let text = format!(
            r#"{{"asn": {asn}, "router_id": "{id}", "networks": ["{net}"], "neighbours": [{{"address": "{peer}", "remote_as": {peer_as}, "local_address": "{local}", "import": {{"default_accept": true}}, "export": {{"default_accept": true}}}}]}}"#
        );
        Speaker::new(&serde_json::from_str::<SpeakerConfig>(&text).unwrap()).unwrap()
    };
    let a = cfg(
        64500,
        "10.0.0.1",
        "198.18.0.1",
        64501,
        "198.18.0.0",
        "198.51.100.0/24",
    );
    let b = cfg(
        64501,
        "10.0.0.9",
        "198.18.0.0",
        64500,
        "198.18.0.1",
        "192.0.2.0/24",
    );
    let mut net = Net {
        names: vec!["a", "b"],
        sp: vec![a, b],
        links: vec![Link {
            a: (0, 0),
            b: (1, 0),
            up: true,
        }],
        now: Instant::now(),
        fib: vec![HashMap::new(); 2],
        sent: 0,
    };
    let now = net.now;
    // Both ask to connect before either connection is seen.
    let sa = net.sp[0].start(now);
    let sb = net.sp[1].start(now);
    assert_eq!((sa.len(), sb.len()), (1, 1));
    let mut first: Vec<(usize, Out)> = sa.into_iter().map(|o| (0, o)).collect();
    first.extend(sb.into_iter().map(|o| (1, o)));
    net.run(first);
    net.run_for(Duration::from_secs(5));
    for i in 0..2 {
        assert_eq!(
            net.sp[i].session(0).state(),
            crate::session::State::Established,
            "{}",
            net.names[i]
        );
    }
    assert!(net.via("a", "192.0.2.0/24").is_some());
    assert!(net.via("b", "198.51.100.0/24").is_some());
    // The session that stayed on a is on the connection b opened (b's identifier is higher).
    let show = net.sp[0].show(net.now);
    assert_eq!(show[0]["established"], 1, "{show}");
}

/// BFD's verdict (`Speaker::link_down`) on both ends of c1-c2 moves a2 to c3 at once, not
/// after a hold time; the session comes back once the link does.
#[test]
fn a_link_down_from_bfd_fails_over_at_once() {
    let mut net = section5();
    net.start();
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.as_path("a2", "203.0.113.0/24"), "64501 64510");
    net.links[1].up = false;
    let (a, b) = (net.links[1].a, net.links[1].b);
    let now = net.now;
    let mut outs: Vec<(usize, Out)> = Vec::new();
    for (s, p) in [a, b] {
        outs.extend(net.sp[s].link_down(now, p).into_iter().map(|o| (s, o)));
    }
    assert!(outs.iter().any(|(_, o)| matches!(o, Out::Down(..))));
    net.run(outs);
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.as_path("a2", "203.0.113.0/24"), "64502 64510");
    let show = net.sp[a.0].show(net.now);
    assert!(
        show[a.1]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("BFD"),
        "{show}"
    );
    net.links[1].up = true;
    net.run_for(Duration::from_secs(15));
    assert_eq!(net.as_path("a2", "203.0.113.0/24"), "64501 64510");
}

/// MRAI (5 s from b to c) on a chain a - b - c: after the first announcements, a prefix a
/// withdraws leaves c at once (withdrawals are not held), but announced again it waits in b
/// until 5 s after b's last announcement to c; then it goes, and b counts what it held.
#[test]
fn mrai_holds_announcements_but_not_withdrawals() {
    let n = |addr: &str, asn: u32, local: &str, passive: bool, mrai: u64| {
        format!(
            r#"{{"address": "{addr}", "remote_as": {asn}, "local_address": "{local}", "hold_time": 90, "passive": {passive}, "mrai_ms": {mrai}, "import": {{"default_accept": true}}, "export": {{"default_accept": true}}}}"#
        )
    };
    let cfgs = [
        (
            64601,
            "10.0.0.1",
            vec![n("10.0.1.2", 64602, "10.0.1.1", false, 0)],
        ),
        (
            64602,
            "10.0.0.2",
            vec![
                n("10.0.1.1", 64601, "10.0.1.2", true, 0),
                n("10.0.2.3", 64603, "10.0.2.2", false, 5000),
            ],
        ),
        (
            64603,
            "10.0.0.3",
            vec![n("10.0.2.2", 64602, "10.0.2.3", true, 0)],
        ),
    ];
    let sp: Vec<Speaker> = cfgs
        .iter()
        .map(|(asn, id, neigh)| {
            let text = format!(
                r#"{{"asn": {asn}, "router_id": "{id}", "neighbours": [{}]}}"#,
                neigh.join(",")
            );
            Speaker::new(&serde_json::from_str::<SpeakerConfig>(&text).unwrap()).unwrap()
        })
        .collect();
    let mut net = Net {
        names: vec!["a", "b", "c"],
        fib: vec![HashMap::new(); 3],
        sp,
        links: vec![
            Link {
                a: (0, 0),
                b: (1, 0),
                up: true,
            },
            Link {
                a: (1, 1),
                b: (2, 0),
                up: true,
            },
        ],
        now: Instant::now(),
        sent: 0,
    };
    net.start();
    let p: Ipv4Net = "192.0.2.0/24".parse().unwrap();
    let q: Ipv4Net = "198.51.100.0/24".parse().unwrap();
    let now = net.now;
    let outs = net.sp[0].originate(now, p);
    net.run(outs.into_iter().map(|o| (0, o)).collect());
    // The first announcement to c goes at once.
    assert!(net.fib[2].contains_key(&p));
    net.run_for(Duration::from_secs(1));
    // A withdrawal is not held back.
    let now = net.now;
    let outs = net.sp[0].unoriginate(now, p);
    net.run(outs.into_iter().map(|o| (0, o)).collect());
    assert!(
        !net.fib[2].contains_key(&p),
        "the withdrawal reached c at once"
    );
    // Announced again (and a second prefix with it): held in b until 5 s after its last
    // announcement to c, then both go.
    let now = net.now;
    let mut outs = net.sp[0].originate(now, p);
    outs.extend(net.sp[0].originate(now, q));
    net.run(outs.into_iter().map(|o| (0, o)).collect());
    assert!(net.fib[1].contains_key(&p) && net.fib[1].contains_key(&q));
    net.run_for(Duration::from_millis(3900));
    assert!(!net.fib[2].contains_key(&p), "held by MRAI");
    net.run_for(Duration::from_millis(200));
    assert!(net.fib[2].contains_key(&p) && net.fib[2].contains_key(&q));
    let show = net.sp[1].show(net.now);
    assert_eq!(show[1]["mrai_ms"], 5000);
    assert_eq!(show[1]["announcements_held_by_mrai"], 2, "{show}");
}
