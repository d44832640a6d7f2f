//! Offloads: kernel hosts with TSO, GSO, GRO and checksum offload on, and a d11-router whose
//! TAPs take TCP super-frames (`offload = true`). Transit super-frames cross the router whole
//! where the next port takes them; where it does not (no offloads, or a smaller MTU) they are
//! cut into segments with complete checksums. Kernel TCP at both ends checks every octet.

use d11_netns_tests::*;
use std::process::{Command, Stdio};

const LAB: &str = r#"
name = "offload"
[[segments]]
name = "a"
[[segments]]
name = "b"
[[segments]]
name = "c"
[[nodes]]
name = "k1"
role = "kernel"
gateway = "10.0.1.1"
ports = [{ name = "eth0", segment = "a", addresses = ["10.0.1.3/24"], offload = true }]
[[nodes]]
name = "r1"
role = "router"
ports = [
  { name = "eth0", segment = "a", addresses = ["10.0.1.1/24"], offload = true },
  { name = "eth1", segment = "b", addresses = ["10.0.2.1/24"], offload = true },
  { name = "eth2", segment = "c", addresses = ["10.0.3.1/24"], mtu = 1400 },
]
[[nodes]]
name = "k2"
role = "kernel"
gateway = "10.0.2.1"
ports = [{ name = "eth0", segment = "b", addresses = ["10.0.2.3/24"], offload = true }]
[[nodes]]
name = "k3"
role = "kernel"
gateway = "10.0.3.1"
ports = [{ name = "eth0", segment = "c", addresses = ["10.0.3.3/24"], offload = true }]
"#;

/// Sends `file` (in the lab's directory) from `from` to `to`:5001 with nc, and returns the
/// SHA-256 the receiver computed of what it got.
fn transfer(lab: &Lab, from: &str, to: &str, to_addr: &str, file: &std::path::Path) -> String {
    let rx = Command::new("ip")
        .args(["netns", "exec", &format!("{}-{to}", lab.prefix)])
        .args(["sh", "-c", "timeout 60 nc -d -l -p 5001 | sha256sum"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("nc -l");
    // The listener is up when ss shows it (no sleep).
    d11_lab::client::wait_until(std::time::Duration::from_secs(10), || {
        let out = lab.exec(to, &["ss", "-ltn", "sport", "= :5001"]).stdout;
        Ok(out.windows(5).any(|w| w == b":5001").then_some(()))
    })
    .expect("the receiver listens");
    let f = file.display().to_string();
    lab.exec_ok(
        from,
        &[
            "sh",
            "-c",
            &format!("timeout 60 nc -N {to_addr} 5001 < {f}"),
        ],
    );
    let out = rx.wait_with_output().expect("receiver");
    first_word(&String::from_utf8_lossy(&out.stdout))
}

/// The first word of a command's output (`sha256sum` prints the sum, then the file name).
fn first_word(out: &str) -> String {
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn port(lab: &Lab, node: &str, name: &str, key: &str) -> u64 {
    lab.show(node, "ports")
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .and_then(|p| p[key].as_u64())
        .unwrap_or_else(|| panic!("{node} port {name}: no {key}"))
}

/// A file of `bytes` random octets made on `node` (in the lab's directory), and its SHA-256.
fn random_file(lab: &Lab, node: &str, name: &str, bytes: usize) -> (std::path::PathBuf, String) {
    let path = lab.dir.join(name);
    let f = path.display().to_string();
    lab.exec_ok(
        node,
        &["sh", "-c", &format!("head -c {bytes} /dev/urandom > {f}")],
    );
    (path, first_word(&lab.exec_ok(node, &["sha256sum", &f])))
}

/// What a kernel node's IP layer has taken in: packets as the stack received them (a
/// super-frame is one: `Ip: InReceives`) and the segments they carried (`IpExt: In*Pkts`,
/// which count a super-frame's `gso_segs`).
fn ip_in(lab: &Lab, node: &str) -> (u64, u64) {
    let field = |file: &str, table: &str, names: &[&str]| -> u64 {
        let text = lab.exec_ok(node, &["cat", file]);
        let mut rows = text.lines().filter(|l| l.starts_with(table));
        let (head, vals) = (rows.next().unwrap_or(""), rows.next().unwrap_or(""));
        let vals: Vec<&str> = vals.split_whitespace().collect();
        head.split_whitespace()
            .enumerate()
            .filter(|(_, h)| names.contains(h))
            .map(|(i, h)| {
                vals.get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("{node} {file}: no {h}"))
            })
            .sum()
    };
    (
        field("/proc/net/snmp", "Ip:", &["InReceives"]),
        field(
            "/proc/net/netstat",
            "IpExt:",
            &["InNoECTPkts", "InECT1Pkts", "InECT0Pkts", "InCEPkts"],
        ),
    )
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn super_frames_cross_the_router_whole_or_cut_and_every_octet_arrives() {
    let lab = Lab::up(LAB);
    let (data, want) = random_file(&lab, "k1", "data.bin", 30_000_000);
    for addr in ["10.0.2.3", "10.0.3.3"] {
        let out = lab.exec_ok("k1", &["ping", "-c", "1", "-W", "2", addr]);
        assert!(out.contains("1 received"), "{out}");
    }

    // k1 -> k2: both of the router's ports take super-frames, which pass whole.
    let got = transfer(&lab, "k1", "k2", "10.0.2.3", &data);
    assert_eq!(got, want, "k1 -> k2: what arrived is what was sent");
    assert!(
        port(&lab, "r1", "eth0", "rx_gso") > 0,
        "super-frames came in"
    );
    assert!(port(&lab, "r1", "eth1", "tx_gso") > 0, "and went out whole");
    assert!(lab.counter("r1", "gso_frames") > 0);
    assert_eq!(
        lab.counter("r1", "frag_needed"),
        0,
        "a super-frame is no big packet"
    );

    // k2 -> k1, the other way.
    let (back, want_back) = random_file(&lab, "k2", "back.bin", 20_000_000);
    let got = transfer(&lab, "k2", "k1", "10.0.1.3", &back);
    assert_eq!(got, want_back, "k2 -> k1");

    // k1 -> k3: the router's next port has no offloads and a 1400-octet MTU (k3's is 1500, so
    // k3 offers an MSS that does not fit it). The first super-frames' segments do not fit:
    // cut, each too big with DF, answered "fragmentation needed"; k1 learns the path's MTU,
    // and later super-frames pass the router whole until the port, which cuts them.
    let got = transfer(&lab, "k1", "k3", "10.0.3.3", &data);
    assert_eq!(got, want, "k1 -> k3: what arrived is what was sent");
    assert!(
        lab.counter("r1", "frag_needed") > 0,
        "the path MTU was learned"
    );
    assert!(
        lab.counter("r1", "gso_cut") + port(&lab, "r1", "eth2", "gso_segments") > 0,
        "super-frames were cut for the port without offloads"
    );
    assert_eq!(lab.counter("r1", "gso_dropped"), 0);
    assert_eq!(port(&lab, "r1", "eth2", "gso_errors"), 0);

    // The captures show what travels, super-frames as such, and tshark finds nothing wrong.
    let dir = lab.stop();
    for seg in ["a", "b", "c"] {
        let pcap = dir.0.join("pcap").join(format!("{seg}.pcapng"));
        // (Random data on these ports is no protocol: tshark's heuristics may guess one.)
        let bad = malformed(&pcap, &["-d", "tcp.port==5001,data"]);
        assert!(bad.is_empty(), "segment {seg}: {bad:?}");
    }
}

const NAT_LAB: &str = r#"
name = "offload-nat"
[[segments]]
name = "sgi"
[[segments]]
name = "carrier"
[[nodes]]
name = "k1"
role = "kernel"
gateway = "172.16.9.1"
ports = [{ name = "eth0", segment = "sgi", addresses = ["172.16.9.50/24"], offload = true }]
[[nodes]]
name = "nat"
role = "nat"
ports = [
  { name = "eth0", segment = "sgi", addresses = ["172.16.9.1/24"], offload = true },
  { name = "eth1", segment = "carrier", addresses = ["198.51.100.2/24"], offload = true },
]
nat = { inside = ["eth0"], outside = "eth1", pool = ["198.51.100.10-19"] }
[[nodes]]
name = "s1"
role = "kernel"
ports = [{ name = "eth0", segment = "carrier", addresses = ["198.51.100.80/24"], offload = true }]
[[nodes]]
name = "h1"
role = "host"
ports = [{ name = "eth0", segment = "carrier", addresses = ["198.51.100.90/24"] }]
"#;

/// The NAT translates super-frames whole, both ways. Between kernel hosts the partial
/// checksum is never checked (a veth trusts it); towards h1, our stack on a TAP without
/// offloads, the kernel completes each segment's checksum from the partial one the NAT
/// rewrote, and our stack checks it: a wrong one would be dropped and the upload stall.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn the_nat_translates_super_frames_whole_and_every_octet_arrives() {
    let lab = Lab::up(NAT_LAB);
    let (up, want_up) = random_file(&lab, "k1", "up.bin", 20_000_000);
    // Out through the NAT (k1's data to s1), then back (s1's data to k1, over a connection
    // k1 opens: only an inside host can open a mapping).
    let got = transfer(&lab, "k1", "s1", "198.51.100.80", &up);
    assert_eq!(got, want_up, "k1 -> s1");
    let (down, want_down) = random_file(&lab, "s1", "down.bin", 20_000_000);
    let mut server = Command::new("ip")
        .args(["netns", "exec", &format!("{}-s1", lab.prefix)])
        .args([
            "sh",
            "-c",
            &format!("timeout 60 nc -N -l -p 5002 < {}", down.display()),
        ])
        .spawn()
        .expect("server");
    d11_lab::client::wait_until(std::time::Duration::from_secs(10), || {
        let out = lab.exec("s1", &["ss", "-ltn", "sport", "= :5002"]).stdout;
        Ok(out.windows(5).any(|w| w == b":5002").then_some(()))
    })
    .expect("the server listens");
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{}-k1", lab.prefix)])
        .args([
            "sh",
            "-c",
            "timeout 60 nc -d 198.51.100.80 5002 | sha256sum",
        ])
        .output()
        .expect("client");
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.split_whitespace().next(),
        Some(want_down.as_str()),
        "s1 -> k1 through the mapping"
    );
    let _ = server.wait();
    // To h1 (a plain TAP: the kernel completes the checksums from the NAT's partial ones).
    let f = up.display().to_string();
    lab.exec_ok(
        "k1",
        &[
            "sh",
            "-c",
            &format!("timeout 30 nc -N 198.51.100.90 9 < {f}"),
        ],
    );
    let sha = first_word(&want_up);
    lab.wait_show("h1", "transfers", 10, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|t| t["sha256"] == sha.as_str()))
    });
    let ports = lab.show("nat", "ports");
    for p in ["eth0", "eth1"] {
        assert!(
            port(&lab, "nat", p, "rx_gso") > 0,
            "super-frames came in on {p}: {ports}"
        );
        assert!(
            port(&lab, "nat", p, "tx_gso") > 0,
            "and went out whole on {p}: {ports}"
        );
    }
    assert_eq!(lab.counter("nat", "gso_dropped"), 0);
}

const VXLAN_LAB: &str = r#"
name = "offload-vxlan"
[[segments]]
name = "underlay"
[[segments]]
name = "vm-a"
mtu = 1450
[[segments]]
name = "vm-b"
mtu = 1450
[[segments]]
name = "vm-k"
mtu = 1450
[[nodes]]
name = "vm1"
role = "kernel"
ports = [{ name = "eth0", segment = "vm-a", addresses = ["192.168.1.20/24"], offload = true }]
[[nodes]]
name = "vm2"
role = "kernel"
ports = [{ name = "eth0", segment = "vm-b", addresses = ["192.168.1.21/24"], offload = true }]
[[nodes]]
name = "vm3"
role = "kernel"
ports = [{ name = "eth0", segment = "vm-k", addresses = ["192.168.1.22/24"], offload = true }]
[[nodes]]
name = "hosta"
role = "vswitch"
ports = [
  { name = "vm", segment = "vm-a", offload = true },
  { name = "underlay", segment = "underlay", addresses = ["10.1.0.11/24"], offload = true },
]
vnis = { vm = 1001 }
vteps = { "1001" = ["10.1.0.12", "10.1.0.13"] }
[[nodes]]
name = "hostb"
role = "vswitch"
ports = [
  { name = "vm", segment = "vm-b", offload = true },
  { name = "underlay", segment = "underlay", addresses = ["10.1.0.12/24"] },
]
vnis = { vm = 1001 }
vteps = { "1001" = ["10.1.0.11", "10.1.0.13"] }
[[nodes]]
name = "hostk"
role = "kernel"
ports = [
  { name = "vm", segment = "vm-k", offload = true },
  { name = "underlay", segment = "underlay", addresses = ["10.1.0.13/24"], offload = true },
]
"#;

/// VXLAN super-frames: hosta's VM sends TCP super-frames, which leave hosta whole inside
/// VXLAN (a tunnel super-frame). Towards hostb, whose underlay TAP has no offloads, the kernel
/// cuts them into VXLAN segments (checking our metadata as it does so); towards hostk, the
/// kernel's own VXLAN device (a real peer) takes them whole. The other way, hostb cuts its
/// VM's super-frames itself (its underlay takes none), and hostk's kernel VTEP sends tunnel
/// super-frames that hosta takes whole. Kernel TCP at the ends checks every octet.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn vxlan_super_frames_cross_the_vswitch_whole_and_the_kernel_vtep_agrees() {
    let lab = Lab::up(VXLAN_LAB);
    // hostk: the kernel's VTEP, VNI 1001, with both d11 VTEPs as flood destinations, bridged
    // to its VM's port.
    for cmd in [
        "ip link add vx0 type vxlan id 1001 local 10.1.0.13 dstport 4789 dev underlay",
        "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.1.0.11",
        "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.1.0.12",
        "ip link add br0 type bridge",
        "ip link set vm master br0",
        "ip link set vx0 master br0",
        "ip link set vx0 up",
        "ip link set br0 up",
    ] {
        lab.exec_ok("hostk", &cmd.split(' ').collect::<Vec<_>>());
    }
    for (from, to) in [("vm1", "192.168.1.21"), ("vm1", "192.168.1.22")] {
        let out = lab.exec_ok(from, &["ping", "-c", "1", "-W", "2", to]);
        assert!(out.contains("1 received"), "{from} -> {to}: {out}");
    }
    let (a, want_a) = random_file(&lab, "vm1", "a.bin", 20_000_000);
    let (b, want_b) = random_file(&lab, "vm2", "b.bin", 10_000_000);
    let (k, want_k) = random_file(&lab, "vm3", "k.bin", 20_000_000);
    assert_eq!(
        transfer(&lab, "vm1", "vm2", "192.168.1.21", &a),
        want_a,
        "vm1 -> vm2"
    );
    assert!(
        lab.counter("hosta", "encap_gso") > 0,
        "hosta wrapped super-frames"
    );
    assert!(
        port(&lab, "hosta", "underlay", "tx_gso") > 0,
        "and sent them whole"
    );
    assert_eq!(
        transfer(&lab, "vm2", "vm1", "192.168.1.20", &b),
        want_b,
        "vm2 -> vm1"
    );
    assert!(
        port(&lab, "hostb", "underlay", "gso_segments") > 0,
        "hostb cut its VM's super-frames for its plain underlay"
    );
    let whole_before = lab.counter("hosta", "decap_gso");
    assert_eq!(
        transfer(&lab, "vm1", "vm3", "192.168.1.22", &a),
        want_a,
        "vm1 -> the kernel VTEP"
    );
    assert_eq!(
        transfer(&lab, "vm3", "vm1", "192.168.1.20", &k),
        want_k,
        "the kernel VTEP -> vm1"
    );
    assert!(
        lab.counter("hosta", "decap_gso") > whole_before,
        "the kernel VTEP's tunnel super-frames came in whole and were unwrapped"
    );
    for (node, counters) in [
        (
            "hosta",
            ["vxlan_malformed", "gso_not_vxlan", "encap_too_big"],
        ),
        (
            "hostb",
            ["vxlan_malformed", "gso_not_vxlan", "encap_too_big"],
        ),
    ] {
        for c in counters {
            assert_eq!(lab.counter(node, c), 0, "{node} {c}");
        }
    }
    for (node, p) in [
        ("hosta", "vm"),
        ("hosta", "underlay"),
        ("hostb", "vm"),
        ("hostb", "underlay"),
    ] {
        assert_eq!(port(&lab, node, p, "gso_errors"), 0, "{node} {p}");
        assert_eq!(port(&lab, node, p, "tx_errors"), 0, "{node} {p}");
    }
    let dir = lab.stop();
    for seg in ["underlay", "vm-a", "vm-b"] {
        let pcap = dir.0.join("pcap").join(format!("{seg}.pcapng"));
        let bad = malformed(&pcap, &["-d", "tcp.port==5001,data"]);
        assert!(bad.is_empty(), "segment {seg}: {bad:?}");
    }
}

const VGW_LAB: &str = r#"
name = "offload-vgw"
[[segments]]
name = "dc"
[[segments]]
name = "underlay"
[[segments]]
name = "vm-lb1"
mtu = 1450
[[segments]]
name = "vm-lb2"
mtu = 1450
[[nodes]]
name = "cl"
role = "kernel"
ports = [{ name = "eth0", segment = "dc", addresses = ["203.0.113.50/24"], offload = true }]
[[nodes]]
name = "lb1"
role = "host"
gateway = "192.168.1.1"
ports = [{ name = "eth0", segment = "vm-lb1", addresses = ["192.168.1.10/24"] }]
[[nodes]]
name = "lb2"
role = "kernel"
gateway = "192.168.1.1"
ports = [{ name = "eth0", segment = "vm-lb2", addresses = ["192.168.1.11/24"], offload = true }]
[[nodes]]
name = "hosta"
role = "vswitch"
ports = [
  { name = "lb1", segment = "vm-lb1", offload = true },
  { name = "lb2", segment = "vm-lb2", offload = true },
  { name = "underlay", segment = "underlay", addresses = ["10.1.0.11/24"], offload = true },
]
vnis = { lb1 = 1001, lb2 = 1001 }
vteps = { "1001" = ["10.1.0.1"] }
[[nodes]]
name = "vgw1"
role = "vgw"
ports = [
  { name = "external", segment = "dc", addresses = ["203.0.113.2/24"], offload = true },
  { name = "underlay", segment = "underlay", addresses = ["10.1.0.1/24"], offload = true },
]
vpc = { vni = 1001, router = "192.168.1.1/24", hosts = ["10.1.0.11"] }
vips = [
  { vip = "203.0.113.10", ports = [9], lbs = ["192.168.1.10"] },
  { vip = "203.0.113.11", ports = [8443], lbs = ["192.168.1.11"] },
]
lb_check = { interval_ms = 200, timeout_ms = 200, rise = 1, fall = 3 }
"#;

/// The cloud's gateway node with offloads: super-frames to a VIP are translated to the LB
/// whole (the address folded into the partial checksum as such) and leave in VXLAN whole;
/// the LB's super-frames come back in VXLAN whole, are unwrapped and translated back whole.
/// A kernel peer trusts a partial checksum between veths, so each direction ends at our own
/// stack on a TAP without offloads, where the kernel completes every segment's checksum from
/// the partial one and our stack checks it (a wrong one would stall the transfer):
/// - up: the kernel client cl sends to 203.0.113.10:9, lb1 (d11-host) hashes what it got;
/// - down: a userspace client on dc (d11-fetch) gets 5 MB over HTTP from the kernel VM lb2
///   through 203.0.113.11.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn the_gateway_translates_and_wraps_super_frames_whole() {
    let lab = Lab::up(VGW_LAB);
    let (up, want_up) = random_file(&lab, "cl", "up.bin", 20_000_000);
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    lab.exec_ok(
        "lb2",
        &[
            "sh",
            "-c",
            &format!("head -c 5000000 /dev/urandom > {}/down.bin", www.display()),
        ],
    );
    let _server = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &format!("{}-lb2", lab.prefix)])
            .args(["python3", "-m", "http.server", "8443", "--directory"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3"),
    );
    d11_lab::client::wait_until(std::time::Duration::from_secs(10), || {
        let out = lab.exec("lb2", &["ss", "-ltn", "sport", "= :8443"]).stdout;
        Ok(out.windows(5).any(|w| w == b":8443").then_some(()))
    })
    .expect("the VM's server listens");
    lab.wait_show("vgw1", "vips", 10, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().all(|x| x["lbs"][0]["state"] == "up"))
    });

    // Up: the client's super-frames to lb1, through the gateway and hosta.
    let f = up.display().to_string();
    lab.exec_ok(
        "cl",
        &[
            "sh",
            "-c",
            &format!("timeout 30 nc -N 203.0.113.10 9 < {f}"),
        ],
    );
    lab.wait_show("lb1", "transfers", 10, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|t| t["sha256"] == want_up.as_str()))
    });
    assert!(
        lab.counter("vgw1", "encap_gso") > 0,
        "super-frames went into VXLAN whole"
    );
    assert!(port(&lab, "vgw1", "external", "rx_gso") > 0);

    // Down: lb2's super-frames to a userspace client, back through the gateway.
    let o = d11()
        .args(["--prefix", &lab.prefix, "lab", "fetch", "dc", "--"])
        .args(["--address", "203.0.113.60/24", "--gateway", "203.0.113.2"])
        .args([
            "--timeout",
            "30",
            "--json",
            "http://203.0.113.11:8443/down.bin",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON outcome");
    assert_eq!(o["status"], 200, "{o}");
    assert_eq!(
        o["body_len"], 5_000_000,
        "every octet arrived, every checksum good"
    );
    assert!(
        lab.counter("vgw1", "decap_gso") > 0,
        "super-frames came out of VXLAN whole"
    );
    assert!(
        port(&lab, "vgw1", "external", "tx_gso") > 0,
        "and left whole"
    );
    assert!(lab.counter("vgw1", "vip_replies_translated") > 0);
    for c in ["vxlan_malformed", "gso_not_vxlan", "encap_too_big"] {
        assert_eq!(lab.counter("vgw1", c), 0, "{c}");
    }
    for p in ["external", "underlay"] {
        assert_eq!(port(&lab, "vgw1", p, "gso_errors"), 0, "{p}");
        assert_eq!(port(&lab, "vgw1", p, "tx_errors"), 0, "{p}");
    }
}

const LB_LAB: &str = r#"
name = "offload-lb"
[[segments]]
name = "a"
[[nodes]]
name = "k1"
role = "kernel"
ports = [{ name = "eth0", segment = "a", addresses = ["10.0.1.3/24"], offload = true }]
[[nodes]]
name = "lb9"
role = "lb"
ports = [{ name = "eth0", segment = "a", addresses = ["10.0.1.10/24"], offload = true }]
listen = 9
backends = [{ name = "h2", address = "10.0.1.20:9" }]
[[nodes]]
name = "lb19"
role = "lb"
ports = [{ name = "eth0", segment = "a", addresses = ["10.0.1.11/24"], offload = true }]
listen = 19
backends = [{ name = "h2", address = "10.0.1.20:19" }]
[[nodes]]
name = "h2"
role = "host"
ports = [{ name = "eth0", segment = "a", addresses = ["10.0.1.20/24"] }]
services = { source_bytes = 20000000 }
[[nodes]]
name = "h3"
role = "host"
ports = [{ name = "eth0", segment = "a", addresses = ["10.0.1.30/24"], offload = true }]
services = { source_bytes = 20000000 }
"#;

/// k1 downloads the source service (port 19) at `addr` with nc and hashes what came; then
/// waits until `host`, the d11-host that serves it, lists a whole 20 MB transfer with that
/// SHA-256 (a balancer's health checks to port 19 are transfers too, cut short).
fn download_whole(lab: &Lab, addr: &str, host: &str) {
    let got = lab.exec_ok(
        "k1",
        &[
            "sh",
            "-c",
            &format!("timeout 30 nc -d {addr} 19 | sha256sum"),
        ],
    );
    let got = first_word(&got);
    lab.wait_show(host, "transfers", 10, |v| {
        v.as_array().is_some_and(|a| {
            a.iter().any(|t| {
                t["service"] == "source"
                    && t["bytes"] == 20_000_000
                    && t["sha256"].as_str() == Some(got.as_str())
            })
        })
    });
}

/// Our endpoint stack with offloads (two d11-lb, whose TAPs take super-frames): the kernel's
/// super-frames come in whole with partial checksums, and smoltcp sends super-frames of its
/// own (TSO). Each direction has our stack on a TAP without offloads at one end (d11-host
/// h2), where the kernel completes each segment's checksum from our partial one and h2's
/// stack checks it, so a wrong one would stall the transfer:
/// - up: k1 sends 20 MB through lb9 to h2's discard service, which hashes what it got;
/// - down: h2's source service sends 20 MB through lb19 to k1, whose hash must equal h2's
///   (the balancer checks h2's plain segments' checksums itself, as smoltcp no longer does).
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn the_endpoint_stack_takes_and_sends_super_frames_and_every_octet_arrives() {
    let lab = Lab::up(LB_LAB);
    let (up, want_up) = random_file(&lab, "k1", "up.bin", 20_000_000);
    let f = up.display().to_string();
    lab.exec_ok(
        "k1",
        &["sh", "-c", &format!("timeout 30 nc -N 10.0.1.10 9 < {f}")],
    );
    lab.wait_show("h2", "transfers", 10, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|t| t["sha256"] == want_up.as_str()))
    });
    assert!(
        lab.counter("lb9", "tcp_super_frames_received") > 0,
        "the kernel's super-frames came in whole"
    );
    assert!(
        lab.counter("lb9", "tcp_super_frames_sent") > 0,
        "smoltcp built super-frames"
    );
    assert!(port(&lab, "lb9", "eth0", "tx_gso") > 0, "which left whole");

    download_whole(&lab, "10.0.1.11", "h2");
    assert!(lab.counter("lb19", "tcp_super_frames_sent") > 0);

    // Straight from our stack to the kernel's: h3's super-frames must reach k1 whole. Linux
    // cuts any that reach the veth's `gso_max_size` (65,536 with the link header), so k1's IP
    // layer would then take in more packets than h3 sent frames.
    let (k1_before, sent_before) = (ip_in(&lab, "k1"), port(&lab, "h3", "eth0", "tx_frames"));
    download_whole(&lab, "10.0.1.30", "h3");
    let k1 = ip_in(&lab, "k1");
    let (packets, segments) = (k1.0 - k1_before.0, k1.1 - k1_before.1);
    let sent = port(&lab, "h3", "eth0", "tx_frames") - sent_before;
    assert!(lab.counter("h3", "tcp_super_frames_sent") > 0);
    assert!(
        packets <= sent,
        "h3 sent {sent} frames, k1 took {packets} packets ({segments} segments): cut on the way"
    );
    assert!(
        segments > 2 * packets,
        "{packets} packets, {segments} segments"
    );
    for lb in ["lb9", "lb19"] {
        for c in ["tcp_bad_checksum", "gso_unsupported"] {
            assert_eq!(lab.counter(lb, c), 0, "{lb} {c}");
        }
        assert_eq!(port(&lab, lb, "eth0", "gso_errors"), 0, "{lb}");
        assert_eq!(port(&lab, lb, "eth0", "tx_errors"), 0, "{lb}");
    }
    let dir = lab.stop();
    let pcap = dir.0.join("pcap").join("a.pcapng");
    let bad = malformed(
        &pcap,
        &["-d", "tcp.port==9,data", "-d", "tcp.port==19,data"],
    );
    assert!(bad.is_empty(), "{bad:?}");
}

/// The mobile core between two kernel hosts with offloads on (an Ethernet PDU session set up
/// by configuration); `$S5` is whether the SGW's S5 port takes super-frames. Every other port
/// of the eNodeB, SGW and PGW does.
const GTP_LAB: &str = r#"
name = "offload-gtp"
[[segments]]
name = "radio"
mtu = 1450
[[segments]]
name = "epc"
[[segments]]
name = "s5"
[[segments]]
name = "sgi"
mtu = 1450
[[nodes]]
name = "ue"
role = "kernel"
gateway = "10.45.0.1"
ports = [{ name = "eth0", segment = "radio", addresses = ["10.45.0.2/16"], offload = true }]
[[nodes]]
name = "enb"
role = "enb"
mme = "172.16.1.5"
echo_interval_s = 0
ports = [{ name = "radio", segment = "radio", offload = true }, { name = "epc", segment = "epc", addresses = ["172.16.1.2/24"], offload = true }]
static_bearers = [{ ue_mac = "02:d1:00:00:be:01", pdn_type = "ethernet", ue_ip = "10.45.0.2", enb_teid = 100, sgw = "172.16.1.3", sgw_teid = 200 }]
[[nodes]]
name = "sgw"
role = "sgw"
echo_interval_s = 0
ports = [{ name = "epc", segment = "epc", addresses = ["172.16.1.3/24"], offload = true }, { name = "s5", segment = "s5", addresses = ["172.16.5.3/24"], offload = $S5 }]
static_sessions = [{ imsi = "001010000000001", enb = "172.16.1.2", enb_teid = 100, s1u_teid = 200, pgw = "172.16.5.4", pgw_teid = 300, s5u_teid = 400 }]
[[nodes]]
name = "pgw"
role = "pgw"
echo_interval_s = 0
ports = [{ name = "s5", segment = "s5", addresses = ["172.16.5.4/24"], offload = true }, { name = "sgi", segment = "sgi", addresses = ["172.16.9.4/24"], offload = true }]
static_sessions = [{ imsi = "001010000000001", ue_ip = "10.45.0.2", pdn_type = "ethernet", s5u_teid = 300, sgw = "172.16.5.3", sgw_teid = 400 }]
[[nodes]]
name = "srv"
role = "kernel"
gateway = "172.16.9.4"
ports = [{ name = "eth0", segment = "sgi", addresses = ["172.16.9.1/24"], offload = true }]
"#;

/// The GTP lab up, the phone given the MAC its bearer knows, 20 MB sent each way between
/// phone and server, every octet checked.
fn gtp_lab_transfers(s5_offload: bool) -> Lab {
    let lab = Lab::up(&GTP_LAB.replace("$S5", &s5_offload.to_string()));
    lab.exec_ok(
        "ue",
        &[
            "ip",
            "link",
            "set",
            "dev",
            "eth0",
            "address",
            "02:d1:00:00:be:01",
        ],
    );
    let out = lab.exec_ok("ue", &["ping", "-c", "1", "-W", "5", "172.16.9.1"]);
    assert!(out.contains("1 received"), "{out}");
    let (up, want_up) = random_file(&lab, "ue", "up.bin", 20_000_000);
    assert_eq!(
        transfer(&lab, "ue", "srv", "172.16.9.1", &up),
        want_up,
        "phone -> server"
    );
    let (down, want_down) = random_file(&lab, "srv", "down.bin", 20_000_000);
    assert_eq!(
        transfer(&lab, "srv", "ue", "10.45.0.2", &down),
        want_down,
        "server -> phone"
    );
    lab
}

/// With offloads on every port, the phone's and the server's TCP super-frames cross the
/// core as UDP super-frames of G-PDUs and leave it merged again.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn tcp_super_frames_cross_the_gtp_core_whole_and_every_octet_arrives() {
    let lab = gtp_lab_transfers(true);
    for (node, name) in [
        ("enb", "uplink_super_frames"),
        ("enb", "downlink_super_frames"),
        ("sgw", "super_frames_switched"),
        ("pgw", "uplink_super_frames"),
        ("pgw", "downlink_super_frames"),
    ] {
        assert!(lab.counter(node, name) > 0, "{node} {name}");
    }
    assert!(port(&lab, "sgw", "epc", "rx_gso") > 0 && port(&lab, "sgw", "s5", "tx_gso") > 0);
    for node in ["enb", "sgw", "pgw"] {
        assert_eq!(lab.counter(node, "gso_dropped"), 0, "{node}");
        assert_eq!(lab.counter(node, "local_too_big"), 0, "{node}");
    }
    let dir = lab.stop();
    for seg in ["radio", "epc", "s5", "sgi"] {
        let pcap = dir.0.join("pcap").join(format!("{seg}.pcapng"));
        let bad = malformed(&pcap, &["-d", "tcp.port==5001,data"]);
        assert!(bad.is_empty(), "segment {seg}: {bad:?}");
    }
}

/// Where a port cannot take them, UDP super-frames of G-PDUs are cut into the G-PDUs they
/// stand for: by the SGW's runtime towards its S5 port (uplink), by the kernel towards that
/// port's TAP (downlink, from the PGW); the SGW's checks of each (its UDP checksum among them)
/// pass, and every octet arrives.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn g_pdu_super_frames_are_cut_where_a_port_cannot_take_them() {
    let lab = gtp_lab_transfers(false);
    assert!(
        lab.counter("sgw", "super_frames_switched") > 0,
        "uplink: whole into the SGW"
    );
    assert!(
        port(&lab, "sgw", "s5", "gso_segments") > 0,
        "cut by the SGW for S5"
    );
    assert!(
        lab.counter("pgw", "downlink_super_frames") > 0,
        "downlink: packed by the PGW"
    );
    assert!(
        lab.counter("sgw", "switched_in_place") > lab.counter("sgw", "super_frames_switched") * 10,
        "the downlink's G-PDUs, cut by the kernel, switched one by one"
    );
    assert_eq!(lab.counter("sgw", "udp_errors"), 0);
    assert_eq!(port(&lab, "sgw", "s5", "gso_errors"), 0);
    lab.stop();
}

/// A kernel host beside a GTP-U element (`argv`: its own address, the element's, and the TEID
/// of the phone's tunnel there), sending with UDP segmentation (`UDP_SEGMENT`): the kernel's
/// own UDP super-frames, each datagram a GTP-U message. Prints the reply of each message
/// answered: its type and sequence number, or the TEID an Error Indication names.
const UDP_SUPER_FRAMES: &str = r#"
import socket, struct, sys
SOL_UDP, UDP_SEGMENT = 17, 103
me, element, teid = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((me, 2152))
s.settimeout(3)
def send(segs, size):
    assert all(len(x) == size for x in segs[:-1]) and 0 < len(segs[-1]) <= size
    s.sendmsg([b"".join(segs)], [(SOL_UDP, UDP_SEGMENT, struct.pack("H", size))], 0, (element, 2152))
def echo(seq):
    return struct.pack("!BBHIHBB", 0x32, 1, 4, 0, seq, 0, 0)
def g_pdu(teid, body, length=None):
    return struct.pack("!BBHI", 0x30, 255, len(body) if length is None else length, teid) + body
# 60 Echo Requests in one super-frame.
send([echo(i) for i in range(60)], 12)
# One of each kind: the phone's tunnel (but not from its far end), a tunnel that does not
# exist, not GTP at all, a length past the datagram's end, and last, shorter, an Echo Request.
send([g_pdu(teid, bytes(32)), g_pdu(9999, bytes(32)), b"\xff" * 40,
      g_pdu(teid, bytes(32), length=100), echo(77)], 40)
# Five G-PDUs for the phone's tunnel, all alike, as its far end would send them; but from here.
send([g_pdu(teid, bytes(32))] * 5, 40)
try:
    while True:
        d = s.recv(2000)
        if d[1] == 26:
            # Its first IE: Tunnel Endpoint Identifier Data I (16), the TEID it was sent to.
            print("error-indication", struct.unpack("!I", d[13:17])[0] if d[12:13] == b"\x10" else d.hex())
        else:
            print("type", d[1], "seq", struct.unpack("!H", d[8:10])[0])
except socket.timeout:
    pass
"#;

/// A kernel peer's UDP super-frames to the GTP-U port of the eNodeB, the SGW and the PGW
/// arrive whole (their ports take them) and are taken as the datagrams they stand for, each
/// on its own merits: every Echo Request answered, G-PDUs for a tunnel whose far end is
/// someone else dropped unanswered (a whole super-frame of them too), one for no tunnel
/// answered with an Error Indication, the malformed counted; nothing forwarded.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_kernel_peers_udp_super_frames_are_taken_datagram_by_datagram() {
    let topology = GTP_LAB.replace("$S5", "true")
        + r#"
[[nodes]]
name = "probe"
role = "kernel"
ports = [
  { name = "eth0", segment = "epc", addresses = ["172.16.1.9/24"], offload = true },
  { name = "eth1", segment = "s5", addresses = ["172.16.5.9/24"], offload = true },
]
"#;
    let lab = Lab::up(&topology);
    let mut want: Vec<String> = (0..60)
        .chain([77])
        .map(|i| format!("type 2 seq {i}"))
        .collect();
    want.push("error-indication 9999".into());
    want.sort();
    // (element, its GTP-U port, where it would forward, its counters' prefix, the probe's
    // address beside it, the element's, the phone's TEID there)
    for (node, gtp_port, onward, c, me, element, teid) in [
        (
            "enb",
            "epc",
            "radio",
            "gtpu",
            "172.16.1.9",
            "172.16.1.2",
            "100",
        ),
        ("sgw", "epc", "s5", "s1u", "172.16.1.9", "172.16.1.3", "200"),
        ("pgw", "s5", "sgi", "s5u", "172.16.5.9", "172.16.5.4", "300"),
    ] {
        let out = lab.exec_ok(
            "probe",
            &["python3", "-c", UDP_SUPER_FRAMES, me, element, teid],
        );
        let mut replies: Vec<&str> = out.lines().collect();
        replies.sort();
        assert_eq!(replies, want, "{node}: {out}");
        assert_eq!(
            port(&lab, node, gtp_port, "rx_gso"),
            3,
            "{node}: every super-frame whole"
        );
        for (name, n) in [
            ("tx_echo_response", 61),
            ("tx_error_indication", 1),
            ("rx_unknown_teid", 1),
            ("rx_wrong_peer", 6),
            ("rx_malformed", 2),
        ] {
            assert_eq!(
                lab.counter(node, &format!("{c}_{name}")),
                n,
                "{node} {c}_{name}"
            );
        }
        assert_eq!(
            port(&lab, node, onward, "tx_frames"),
            0,
            "{node}: nothing forwarded"
        );
    }
    lab.stop();
}
