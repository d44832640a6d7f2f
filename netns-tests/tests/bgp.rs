//! The BGP session (`d11-bgp`, sans-IO) against BIRD 2 (Debian's), over the kernel's TCP in
//! a lab namespace: OPENs with capabilities, the hold time negotiated, KEEPALIVEs, an UPDATE
//! from BIRD decoded, and a Cease that BIRD reports as an administrative shutdown.

use d11_bgp::session::{Action, Config, Session, State};
use d11_netns_tests::{malformed, require_root, scratch, tshark_fields, Lab};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside namespace `netns` (its sockets stay there).
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
    .join()
    .unwrap()
}

/// What the session saw, and BIRD's view while it was up.
struct Seen {
    states: Vec<State>,
    hold: u16,
    updates: Vec<String>,
}

/// Drives a session over a kernel TCP connection to 10.0.0.2:179 until `done` says so or
/// 20 s pass; `probe` runs once the session is Established (BIRD's view, then a stop).
/// Closes as a speaker should after its NOTIFICATION: our FIN follows it, and what the peer
/// still sends is read away until its own FIN (2 s at most). Dropping the socket with a
/// KEEPALIVE or UPDATE unread makes the kernel answer with a reset, which can reach BIRD
/// before it has read the NOTIFICATION: BIRD then reports "Connection reset by peer".
fn close_after_notification(mut c: TcpStream, buf: &mut [u8]) {
    let _ = c.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + Duration::from_secs(2);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let _ = c.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match c.read(buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn drive(
    cfg: Config,
    probe: impl Fn(&mut Session, Instant) -> Vec<Action> + Send + 'static,
) -> (Seen, Vec<Action>) {
    let mut s = Session::new(cfg);
    let mut seen = Seen {
        states: Vec::new(),
        hold: 0,
        updates: Vec::new(),
    };
    let mut log = Vec::new();
    let mut conn: Option<TcpStream> = None;
    let mut acts = s.start(Instant::now());
    let end = Instant::now() + Duration::from_secs(20);
    let mut probed = false;
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        for a in std::mem::take(&mut acts) {
            match a {
                Action::Connect => {
                    let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 179);
                    match TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) {
                        Ok(c) => {
                            conn = Some(c);
                            acts.extend(s.on_connected(Instant::now()));
                        }
                        Err(_) => acts.extend(s.on_closed(Instant::now())),
                    }
                }
                Action::Send(b) => {
                    if let Some(c) = conn.as_mut() {
                        let _ = c.write_all(&b);
                    }
                }
                Action::Close => {
                    if let Some(c) = conn.take() {
                        close_after_notification(c, &mut buf);
                    }
                }
                Action::Update(u) => seen.updates.push(format!("{u:?}")),
                other => log.push(other),
            }
        }
        if seen.states.last() != Some(&s.state()) {
            seen.states.push(s.state());
        }
        if s.state() == State::Established && !probed {
            probed = true;
            seen.hold = s.hold_time();
        }
        let now = Instant::now();
        if probed && seen.updates.is_empty() && s.state() == State::Established {
            // keep reading
        } else if probed && s.state() == State::Established {
            acts.extend(probe(&mut s, now));
            continue;
        } else if probed {
            break;
        }
        let wait = s
            .poll_at()
            .map_or(Duration::from_millis(200), |t| {
                t.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(200));
        match conn.as_mut() {
            Some(c) => {
                c.set_read_timeout(Some(wait)).unwrap();
                match c.read(&mut buf) {
                    Ok(0) => {
                        conn = None;
                        acts.extend(s.on_closed(Instant::now()));
                    }
                    Ok(n) => acts.extend(s.on_bytes(Instant::now(), &buf[..n])),
                    Err(_) => {}
                }
            }
            None => std::thread::sleep(wait),
        }
        acts.extend(s.poll(Instant::now()));
    }
    (seen, log)
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_session_with_bird_establishes_exchanges_and_ceases() {
    require_root();
    let lab = Lab::up(
        r#"name = "bgp-bird"
[[segments]]
name = "link"
[[nodes]]
name = "us"
role = "kernel"
ports = [{ name = "eth0", segment = "link", addresses = ["10.0.0.1/24"] }]
[[nodes]]
name = "bird"
role = "kernel"
ports = [{ name = "eth0", segment = "link", addresses = ["10.0.0.2/24"] }]
"#,
    );
    let dir = scratch("bgp-bird");
    let (mut bird, birdc) = start_bird(
        &lab,
        "bird",
        &dir.0,
        "router id 10.0.0.2;\nprotocol device {}\nprotocol static { ipv4; route 10.99.0.0/24 blackhole; }\nprotocol bgp d11 {\n  local 10.0.0.2 as 64501;\n  neighbor 10.0.0.1 as 64500;\n  hold time 9;\n  passive on;\n  ipv4 { import all; export all; };\n}\n",
    );
    let mut cfg = Config::new(64500, 64501, Ipv4Addr::new(10, 0, 0, 1));
    cfg.hold_time = 90;
    let b2 = birdc.clone();
    let netns = format!("{}-us", lab.prefix);
    let (seen, log, bird_view) = in_netns(&netns, move || {
        let view = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let v = view.clone();
        let (seen, log) = drive(cfg, move |s, now| {
            *v.lock().unwrap() = b2(&["show", "protocols", "all", "d11"]);
            s.stop(now)
        });
        let view = view.lock().unwrap().clone();
        (seen, log, view)
    });
    let after = birdc(&["show", "protocols", "all", "d11"]);
    let _ = bird.kill();
    let _ = bird.wait();
    assert!(
        seen.states.contains(&State::Established),
        "{:?} {log:?}\n{after}",
        seen.states
    );
    assert_eq!(seen.hold, 9, "the smaller hold time");
    assert!(bird_view.contains("Established"), "{bird_view}");
    assert!(bird_view.contains("Hold timer"), "{bird_view}");
    assert!(
        seen.updates.iter().any(|u| u.contains("10.99.0.0")),
        "BIRD's route: {:?}",
        seen.updates
    );
    assert!(log.contains(&Action::Up), "{log:?}");
    assert!(
        after.contains("Administrative shutdown"),
        "BIRD saw our Cease: {after}"
    );
    // Wireshark reads every message as BGP, nothing malformed; our OPEN as sent.
    let files = lab.stop();
    let pcap = files.0.join("pcap/link.pcapng");
    assert!(malformed(&pcap, &[]).is_empty());
    let o = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "bgp.type == 1 && ip.src == 10.0.0.1", "-T", "fields"])
        .args([
            "-e",
            "bgp.open.version",
            "-e",
            "bgp.open.myas",
            "-e",
            "bgp.open.holdtime",
        ])
        .args(["-e", "bgp.open.identifier", "-e", "bgp.cap.type"])
        .output()
        .unwrap();
    let open = String::from_utf8_lossy(&o.stdout);
    assert_eq!(open.trim(), "4\t64500\t90\t10.0.0.1\t1,2,65", "{open}");
    let o = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "bgp", "-T", "fields", "-e", "bgp.type"])
        .output()
        .unwrap();
    let types: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    // OPEN, UPDATE, NOTIFICATION, KEEPALIVE all seen.
    for t in ["1", "2", "3", "4"] {
        assert!(types.iter().any(|x| x == t), "type {t}: {types:?}");
    }
}

/// BIRD (Debian's) in a kernel namespace, started with `conf`; returns its process and a
/// `birdc` on its control socket.
fn start_bird(
    lab: &Lab,
    node: &str,
    dir: &std::path::Path,
    conf: &str,
) -> (
    std::process::Child,
    impl Fn(&[&str]) -> String + Clone + Send + 'static,
) {
    let file = dir.join(format!("{node}.conf"));
    let ctl = dir.join(format!("{node}.ctl"));
    std::fs::write(&file, conf).unwrap();
    let child = lab
        .client()
        .command(
            node,
            &[
                "bird",
                "-f",
                "-c",
                file.to_str().unwrap(),
                "-s",
                ctl.to_str().unwrap(),
            ],
        )
        .unwrap()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("bird (apt-get install bird2)");
    let birdc = move |args: &[&str]| -> String {
        let o = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&ctl)
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let b = birdc.clone();
    d11_lab::client::wait_until(Duration::from_secs(10), || {
        Ok(b(&["show", "status"])
            .contains("Daemon is up")
            .then_some(()))
    })
    .expect("bird is up");
    (child, birdc)
}

/// d11-router (AS 64500) with two BIRDs on one link: eBGP with AS 64501 and iBGP with
/// another speaker of AS 64500. Both sessions establish with the smaller hold time; each
/// BIRD's prefix lands in the router's forwarding table (ebgp, ibgp) and a kernel host behind
/// the router pings an address in it; the router's own prefix and the iBGP prefix reach the
/// eBGP BIRD (with 64500 in front), nothing iBGP-learned goes back to iBGP; a withdrawal
/// crosses each way; tshark finds nothing malformed.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_d11_router_peers_with_bird_over_ebgp_and_ibgp() {
    require_root();
    let lab = Lab::up(
        r#"name = "bgp-router"
[[segments]]
name = "link"
[[segments]]
name = "lan"
[[nodes]]
name = "r1"
role = "router"
ports = [
  { name = "link", segment = "link", addresses = ["10.0.0.1/24"] },
  { name = "lan", segment = "lan", addresses = ["198.51.100.1/24"] },
]
bgp = { asn = 64500, router_id = "10.0.0.1", networks = ["198.51.100.0/24"], neighbours = [
  { address = "10.0.0.2", remote_as = 64501, hold_time = 9, import = { default_accept = true }, export = { default_accept = true } },
  { address = "10.0.0.3", remote_as = 64500, hold_time = 60 },
] }
[[nodes]]
name = "ebgp"
role = "kernel"
ports = [{ name = "eth0", segment = "link", addresses = ["10.0.0.2/24"] }]
[[nodes]]
name = "ibgp"
role = "kernel"
ports = [{ name = "eth0", segment = "link", addresses = ["10.0.0.3/24"] }]
[[nodes]]
name = "k1"
role = "kernel"
gateway = "198.51.100.1"
ports = [{ name = "eth0", segment = "lan", addresses = ["198.51.100.10/24"] }]
"#,
    );
    let dir = scratch("bgp-router");
    // Each BIRD's prefix has an address on its host (for the ping), and BIRD puts what it
    // learns in its host's kernel table (the way back).
    for (node, addr) in [("ebgp", "10.99.0.1/32"), ("ibgp", "10.98.0.1/32")] {
        lab.exec_ok(node, &["ip", "addr", "add", addr, "dev", "lo"]);
        lab.exec_ok(node, &["ip", "link", "set", "lo", "up"]);
    }
    let (mut e, ebirdc) = start_bird(
        &lab,
        "ebgp",
        &dir.0,
        "router id 10.0.0.2;\nprotocol device {}\nprotocol kernel { ipv4 { export all; }; }\nprotocol static { ipv4; route 10.99.0.0/24 blackhole; }\nprotocol bgp r1 {\n  local 10.0.0.2 as 64501;\n  neighbor 10.0.0.1 as 64500;\n  hold time 30;\n  ipv4 { import all; export where proto = \"static1\"; };\n}\n",
    );
    let (mut i, ibirdc) = start_bird(
        &lab,
        "ibgp",
        &dir.0,
        "router id 10.0.0.3;\nprotocol device {}\nprotocol kernel { ipv4 { export all; }; }\nprotocol static { ipv4; route 10.98.0.0/24 blackhole; }\nprotocol bgp r1 {\n  local 10.0.0.3 as 64500;\n  neighbor 10.0.0.1 as 64500;\n  direct;\n  hold time 30;\n  ipv4 { import all; export where proto = \"static1\"; next hop self; };\n}\n",
    );
    let routes = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {} {}", r["prefix"], r["next_hop"], r["source"]).replace('"', ""))
            .collect()
    };
    let r = lab.wait_show("r1", "routes", 30, |v| {
        let r = routes(v);
        r.contains(&"10.99.0.0/24 10.0.0.2 ebgp".to_string())
            && r.contains(&"10.98.0.0/24 10.0.0.3 ibgp".to_string())
    });
    let bgp = lab.show("r1", "bgp");
    assert_eq!(bgp[0]["state"], "Established", "{bgp}");
    assert_eq!(
        (bgp[0]["hold_time"].as_u64(), bgp[1]["hold_time"].as_u64()),
        (Some(9), Some(30)),
        "{bgp}"
    );
    assert_eq!(
        (bgp[0]["kind"].as_str(), bgp[1]["kind"].as_str()),
        (Some("eBGP"), Some("iBGP"))
    );
    // Forwarding follows: a host behind the router reaches both prefixes.
    for dst in ["10.99.0.1", "10.98.0.1"] {
        lab.exec_ok("k1", &["ping", "-c", "1", "-W", "3", dst]);
    }
    // The eBGP BIRD has our prefix and the iBGP one, with our AS in front.
    let ebird = ebirdc(&["show", "route", "all"]);
    assert!(
        ebird.contains("198.51.100.0/24") && ebird.contains("10.98.0.0/24"),
        "{ebird}"
    );
    assert!(ebird.contains("BGP.as_path: 64500\n"), "{ebird}");
    // The iBGP BIRD has our prefix and the eBGP one, never its own back.
    let ibird = ibirdc(&["show", "route", "protocol", "r1"]);
    assert!(
        ibird.contains("198.51.100.0/24") && ibird.contains("10.99.0.0/24"),
        "{ibird}"
    );
    assert!(!ibird.contains("10.98.0.0/24"), "{ibird}");
    // A withdrawal from BIRD reaches the router's table; one from the router reaches BIRD.
    ebirdc(&["disable", "static1"]);
    lab.wait_show("r1", "routes", 10, |v| {
        !routes(v).iter().any(|x| x.starts_with("10.99.0.0/24"))
    });
    ibirdc(&["disable", "static1"]);
    lab.wait_show("r1", "routes", 10, |v| {
        !routes(v).iter().any(|x| x.starts_with("10.98.0.0/24"))
    });
    d11_lab::client::wait_until(Duration::from_secs(10), || {
        Ok((!ebirdc(&["show", "route"]).contains("10.98.0.0/24")).then_some(()))
    })
    .expect("the router withdrew the iBGP prefix from the eBGP peer");
    let _ = r;
    for c in [&mut e, &mut i] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let files = lab.stop();
    let pcap = files.0.join("pcap/link.pcapng");
    assert!(malformed(&pcap, &[]).is_empty());
}

/// A d11-router `r1` (10.0.0.1 on `link`, 198.51.100.1 on `lan`) with the `bgp` table given;
/// on its link BIRD's host `bird` (10.0.0.2, with 10.99.0.1 on its loopback: the prefix it
/// announces) and a stranger `evil` (10.0.0.9); behind it a kernel host `k1`.
fn router_bird_lab(name: &str, bgp: &str) -> Lab {
    let lab = Lab::up(&format!(
        r#"name = "{name}"
[[segments]]
name = "link"
[[segments]]
name = "lan"
[[nodes]]
name = "r1"
role = "router"
ports = [
  {{ name = "link", segment = "link", addresses = ["10.0.0.1/24"] }},
  {{ name = "lan", segment = "lan", addresses = ["198.51.100.1/24"] }},
]
{bgp}
[[nodes]]
name = "bird"
role = "kernel"
ports = [{{ name = "eth0", segment = "link", addresses = ["10.0.0.2/24"] }}]
[[nodes]]
name = "evil"
role = "kernel"
ports = [{{ name = "eth0", segment = "link", addresses = ["10.0.0.9/24"] }}]
[[nodes]]
name = "k1"
role = "kernel"
gateway = "198.51.100.1"
ports = [{{ name = "eth0", segment = "lan", addresses = ["198.51.100.10/24"] }}]
"#
    ));
    lab.exec_ok("bird", &["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"]);
    lab.exec_ok("bird", &["ip", "link", "set", "lo", "up"]);
    lab
}

/// Crafted BGP from a kernel host, one connection each: what the router answers (the
/// NOTIFICATION's code and subcode, or `none` when it keeps the session), as lines
/// `name code/sub`.
const CRAFTED: &str = r#"
import socket, struct, sys, time
R, ME, MY_AS, R_AS = "10.0.0.1", "10.0.0.9", 64999, 64500
def msg(t, body, marker=b"\xff" * 16, length=None):
    return marker + struct.pack("!HB", length or 19 + len(body), t) + body
def open_(version=4, asn=MY_AS, hold=90, ident=ME):
    caps = bytes([2, 6, 65, 4]) + struct.pack("!I", asn)
    return msg(1, struct.pack("!BHH", version, asn if asn < 65536 else 23456, hold)
               + socket.inet_aton(ident) + bytes([len(caps)]) + caps)
KEEPALIVE = msg(4, b"")
def attr(flags, code, value):
    return bytes([flags, code, len(value)]) + value
def update(attrs, nlri):
    a = b"".join(attrs)
    return msg(2, struct.pack("!H", 0) + struct.pack("!H", len(a)) + a + nlri)
def path(*asns):
    return attr(0x40, 2, bytes([2, len(asns)]) + b"".join(struct.pack("!I", x) for x in asns))
ORIGIN = attr(0x40, 1, b"\x00")
NH = attr(0x40, 3, socket.inet_aton(ME))
def read_notification(s):
    s.settimeout(5)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
            while len(data) >= 19:
                n = struct.unpack("!H", data[16:18])[0]
                if len(data) < n:
                    break
                m, data = data[:n], data[n:]
                if m[18] == 3:
                    return "%d/%d" % (m[19], m[20])
    except socket.timeout:
        return "none"
    return "closed"
def conn():
    s = socket.create_connection((R, 179), timeout=5)
    return s
def established():
    # Our OPEN and KEEPALIVE; up once the router's KEEPALIVE has come.
    s = conn()
    s.sendall(open_())
    s.sendall(KEEPALIVE)
    s.settimeout(5)
    data = b""
    while True:
        data += s.recv(4096)
        while len(data) >= 19:
            n = struct.unpack("!H", data[16:18])[0]
            if len(data) < n:
                break
            m, data = data[:n], data[n:]
            if m[18] == 4:
                return s
cases = [
    ("marker", msg(4, b"", marker=b"\xff" * 15 + b"\x00")),
    ("length", msg(4, b"", length=5000)),
    ("type", msg(9, b"")),
    ("version", open_(version=3)),
    ("peer_as", open_(asn=65000)),
    ("hold", open_(hold=1)),
    ("identifier", open_(ident="0.0.0.0")),
]
for name, m in cases:
    s = conn()
    s.sendall(m)
    print(name, read_notification(s), flush=True)
    s.close()
# In an established session: a loop, a missing NEXT_HOP (treat-as-withdraw), an NLRI of /33
# and a message over 4,096 octets.
for name, m in [
    ("loop", update([ORIGIN, path(MY_AS, R_AS), NH], bytes([24, 10, 77, 1]))),
    ("no_next_hop", update([ORIGIN, path(MY_AS)], bytes([24, 10, 77, 2]))),
    ("nlri_33", update([ORIGIN, path(MY_AS), NH], bytes([33, 10, 77, 3, 0, 0]))),
    ("too_long", update([ORIGIN, path(MY_AS), NH], bytes([24, 10, 77, 4]) * 1100)),
]:
    s = established()
    s.sendall(m)
    print(name, read_notification(s), flush=True)
    s.close()
"#;

/// Bad input from a kernel host speaking crafted BGP to a d11-router: bad marker, length and
/// type; OPENs with a bad version, peer AS, hold time or identifier; in a session, an AS_PATH
/// loop, a missing NEXT_HOP, an NLRI longer than 32 bits and a message over 4,096 octets. Each
/// gets the NOTIFICATION RFC 4271 section 6 requires, or is treated as a withdrawal (RFC 7606)
/// or refused, with the session kept; BIRD's session beside it stays up throughout and its
/// route keeps forwarding.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn crafted_bgp_gets_its_notifications_and_other_sessions_go_on() {
    require_root();
    let lab = router_bird_lab(
        "bgp-crafted",
        r#"bgp = { asn = 64500, router_id = "10.0.0.1", networks = ["198.51.100.0/24"], connect_retry_s = 30, neighbours = [
  { address = "10.0.0.2", remote_as = 64501, hold_time = 9, import = { default_accept = true }, export = { default_accept = true } },
  { address = "10.0.0.9", remote_as = 64999, hold_time = 90, passive = true, import = { default_accept = true }, export = { default_accept = true } },
] }"#,
    );
    let dir = scratch("bgp-crafted");
    let (mut bird, _birdc) = start_bird(
        &lab,
        "bird",
        &dir.0,
        "router id 10.0.0.2;\nprotocol device {}\nprotocol kernel { ipv4 { export all; }; }\nprotocol static { ipv4; route 10.99.0.0/24 blackhole; }\nprotocol bgp r1 {\n  local 10.0.0.2 as 64501;\n  neighbor 10.0.0.1 as 64500;\n  hold time 9;\n  ipv4 { import all; export where proto = \"static1\"; };\n}\n",
    );
    lab.wait_show("r1", "bgp", 30, |v| v[0]["state"] == "Established");
    let before = lab.show("r1", "bgp")[0]["established"].clone();
    let out = lab.exec_ok("evil", &["python3", "-c", CRAFTED]);
    eprintln!("{out}");
    let got: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once(' ')).collect();
    let want = [
        ("marker", "1/1"),
        ("length", "1/2"),
        ("type", "1/3"),
        ("version", "2/1"),
        ("peer_as", "2/2"),
        ("hold", "2/6"),
        ("identifier", "2/3"),
        ("loop", "none"),
        ("no_next_hop", "none"),
        ("too_long", "1/2"),
    ];
    for (k, v) in want {
        assert_eq!(got.get(k).copied(), Some(v), "{k}: {out}");
    }
    // An NLRI longer than 32 bits cannot be read on: a NOTIFICATION (UPDATE error).
    assert!(
        got.get("nlri_33").is_some_and(|v| v.starts_with("3/")),
        "{out}"
    );
    // Neither the looped nor the treated-as-withdrawn prefix is in the table.
    let routes = lab.show("r1", "routes").to_string();
    assert!(!routes.contains("10.77."), "{routes}");
    let bgp = lab.show("r1", "bgp");
    assert!(bgp[1]["treated_as_withdraw"].as_u64() >= Some(1), "{bgp}");
    assert!(bgp[1]["prefixes_refused"].as_u64() >= Some(1), "{bgp}");
    // BIRD's session never went down, and its route still forwards.
    assert_eq!(bgp[0]["state"], "Established", "{bgp}");
    assert_eq!(bgp[0]["established"], before, "{bgp}");
    lab.exec_ok("k1", &["ping", "-c", "1", "-W", "3", "10.99.0.1"]);
    let _ = bird.kill();
    let _ = bird.wait();
}

/// Crafted BFD from kernel hosts: from an address that is no BFD neighbour, with a TTL other
/// than 255, and malformed (version 2). Prints nothing; the router's counters tell.
const CRAFTED_BFD: &str = r#"
import socket, struct, sys
ttl, version = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
s.bind(("", 49999))
# Down, Detect Mult 3, 24 octets, My Discriminator 7, intervals of one second.
p = struct.pack("!BBBBIIIII", version << 5, 1 << 6, 3, 24, 7, 0, 1000000, 1000000, 0)
for _ in range(5):
    s.sendto(p, ("10.0.0.1", 3784))
"#;

/// BFD (RFC 5880/5881) between a d11-router and BIRD (Debian's, `bfd on` in its BGP): the
/// BFD session comes Up both ways and the BGP session over it establishes with a hold time of
/// 30 s. Crafted BFD (a stranger, TTL 64, version 2) is counted and dropped, the session
/// untouched. Then the link is cut (`d11 lab link`): both sides take BGP down because BFD
/// said so, not the hold timer, and the route is withdrawn; restored, BFD and BGP come back
/// and the route forwards again. tshark decodes every BFD packet, nothing malformed.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn bfd_with_bird_takes_bgp_down_when_the_link_dies_and_back_up() {
    require_root();
    let lab = router_bird_lab(
        "bgp-bfd",
        r#"bgp = { asn = 64500, router_id = "10.0.0.1", networks = ["198.51.100.0/24"], neighbours = [
  { address = "10.0.0.2", remote_as = 64501, hold_time = 30, bfd = { interval_ms = 100, multiplier = 3 }, import = { default_accept = true }, export = { default_accept = true } },
] }"#,
    );
    let dir = scratch("bgp-bfd");
    let (mut bird, birdc) = start_bird(
        &lab,
        "bird",
        &dir.0,
        "router id 10.0.0.2;\nprotocol device {}\nprotocol kernel { ipv4 { export all; }; }\nprotocol static { ipv4; route 10.99.0.0/24 blackhole; }\nprotocol bfd { interface \"*\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }\nprotocol bgp r1 {\n  local 10.0.0.2 as 64501;\n  neighbor 10.0.0.1 as 64500;\n  hold time 30;\n  bfd on;\n  error wait time 1, 5;\n  ipv4 { import all; export where proto = \"static1\"; };\n}\n",
    );
    let has_route = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|r| r["prefix"] == "10.99.0.0/24")
    };
    lab.wait_show("r1", "bfd", 30, |v| v[0]["state"] == "Up");
    lab.wait_show("r1", "routes", 30, has_route);
    let bgp = lab.show("r1", "bgp");
    assert_eq!(
        (bgp[0]["state"].as_str(), bgp[0]["hold_time"].as_u64()),
        (Some("Established"), Some(30)),
        "{bgp}"
    );
    d11_lab::client::wait_until(Duration::from_secs(10), || {
        let s = birdc(&["show", "bfd", "sessions"]);
        Ok((s.contains("10.0.0.1") && s.contains(" Up ")).then_some(()))
    })
    .expect("BIRD's BFD session with the router is Up");
    // Once the Poll Sequence is done both sides send every 75-100 ms: 300 ms to detect.
    let bfd = lab.wait_show("r1", "bfd", 10, |v| {
        v[0]["detection_time_ms"].as_f64() == Some(300.0)
    });
    assert_eq!(bfd[0]["ups"], 1, "{bfd}");

    // Crafted: a stranger, a TTL of 64 from the neighbour, a version-2 packet.
    lab.exec_ok("evil", &["python3", "-c", CRAFTED_BFD, "255", "1"]);
    lab.exec_ok("bird", &["python3", "-c", CRAFTED_BFD, "64", "1"]);
    lab.exec_ok("bird", &["python3", "-c", CRAFTED_BFD, "255", "2"]);
    d11_lab::client::wait_until(Duration::from_secs(5), || {
        Ok((lab.counter("r1", "bfd_dropped_not_a_neighbour") == 5
            && lab.counter("r1", "bfd_dropped_bad_ttl") == 5
            && lab.counter("r1", "bfd_dropped_malformed") == 5)
            .then_some(()))
    })
    .expect("each crafted BFD packet counted as what it is");
    let bfd = lab.show("r1", "bfd");
    assert_eq!(
        (bfd[0]["state"].as_str(), bfd[0]["ups"].as_u64()),
        (Some("Up"), Some(1)),
        "{bfd}"
    );

    // The cut: BGP goes down because BFD says so, on both sides, well within the hold time.
    let link = |state: &str| {
        let o = d11_netns_tests::d11()
            .args(["--prefix", &lab.prefix, "lab", "link", "link", state])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    link("down");
    let bgp = lab.wait_show("r1", "bgp", 10, |v| v[0]["state"] != "Established");
    assert!(
        bgp[0]["last_error"].as_str().unwrap_or("").contains("BFD"),
        "{bgp}"
    );
    let bfd = lab.show("r1", "bfd");
    assert_eq!(
        bfd[0]["last_down"]["diagnostic"], "Control Detection Time Expired",
        "{bfd}"
    );
    lab.wait_show("r1", "routes", 5, |v| !has_route(v));
    d11_lab::client::wait_until(Duration::from_secs(10), || {
        let s = birdc(&["show", "protocols", "all", "r1"]);
        Ok(s.contains("BFD session down").then_some(()))
    })
    .expect("BIRD took its BGP session down on BFD");

    // Restored: BFD, then BGP, then the route; a host behind the router reaches it.
    link("up");
    lab.wait_show("r1", "bfd", 30, |v| {
        v[0]["state"] == "Up" && v[0]["ups"] == 2
    });
    lab.wait_show("r1", "routes", 30, has_route);
    lab.exec_ok("k1", &["ping", "-c", "1", "-W", "3", "10.99.0.1"]);
    let _ = bird.kill();
    let _ = bird.wait();
    let files = lab.stop();
    let pcap = files.0.join("pcap/link.pcapng");
    // Every BFD packet of the session decodes (the crafted ones included, as what they are),
    // and both ends' Up packets are there with TTL 255.
    let rows = tshark_fields(
        &pcap,
        "bfd && ip.ttl == 255 && bfd.sta == 3",
        &["ip.src"],
        &[],
    );
    for who in ["10.0.0.1", "10.0.0.2"] {
        assert!(rows.iter().any(|r| r[0] == who), "no Up from {who}");
    }
    assert!(malformed(&pcap, &[]).is_empty());
}
