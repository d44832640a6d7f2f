//! The cloud's virtual network: d11-vswitch on two physical hosts, two tenants reusing the
//! same subnet on VNIs 1001 and 1002, and the Linux kernel's own VXLAN device as a third VTEP.

use d11_netns_tests::*;

/// hosta and hostb (d11-vswitch) on the underlay; tenant A (VNI 1001: a1 on hosta, a2 on
/// hostb) and tenant B (VNI 1002: b1, b2) with the same addresses; hostk, a kernel host on the
/// underlay, for the kernel's VXLAN. VMs are kernel hosts, so ping and ARP are the kernel's.
const LAB: &str = r#"
name = "vxlan"
[[segments]]
name = "underlay"
subnet = "10.1.0.0/24"
[[segments]]
name = "a1"
mtu = 1450
[[segments]]
name = "a2"
mtu = 1450
[[segments]]
name = "b1"
mtu = 1450
[[segments]]
name = "b2"
mtu = 1450

[[nodes]]
name = "hosta"
role = "vswitch"
ports = [
  { name = "vm-a1", segment = "a1" },
  { name = "vm-b1", segment = "b1" },
  { name = "underlay", segment = "underlay", addresses = ["10.1.0.11/24"] },
]
vnis = { vm-a1 = 1001, vm-b1 = 1002 }
vteps = { "1001" = ["10.1.0.12", "10.1.0.13"], "1002" = ["10.1.0.12"] }

[[nodes]]
name = "hostb"
role = "vswitch"
ports = [
  { name = "vm-a2", segment = "a2" },
  { name = "vm-b2", segment = "b2" },
  { name = "underlay", segment = "underlay", addresses = ["10.1.0.12/24"] },
]
vnis = { vm-a2 = 1001, vm-b2 = 1002 }
vteps = { "1001" = ["10.1.0.11", "10.1.0.13"], "1002" = ["10.1.0.11"] }

[[nodes]]
name = "a1"
role = "kernel"
ports = [{ name = "eth0", segment = "a1", addresses = ["192.168.1.20/24"] }]
[[nodes]]
name = "a2"
role = "kernel"
ports = [{ name = "eth0", segment = "a2", addresses = ["192.168.1.21/24"] }]
[[nodes]]
name = "b1"
role = "kernel"
ports = [{ name = "eth0", segment = "b1", addresses = ["192.168.1.20/24"] }]
[[nodes]]
name = "b2"
role = "kernel"
ports = [{ name = "eth0", segment = "b2", addresses = ["192.168.1.21/24"] }]
[[nodes]]
name = "hostk"
role = "kernel"
ports = [{ name = "eth0", segment = "underlay", addresses = ["10.1.0.13/24"] }]
"#;

fn kernel_mac(lab: &Lab, node: &str) -> String {
    lab.exec_ok(node, &["cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_string()
}

#[test]
fn two_tenants_on_the_same_subnet_never_meet() {
    let lab = Lab::up(LAB);
    for (from, to) in [
        ("a1", "192.168.1.21"),
        ("b1", "192.168.1.21"),
        ("a2", "192.168.1.20"),
    ] {
        lab.exec_ok(from, &["ping", "-c", "2", "-i", "0.2", "-W", "2", to]);
    }
    // Full-sized frames fit: 1450 inside, 1500 on the underlay.
    lab.exec_ok(
        "b2",
        &[
            "ping",
            "-c",
            "1",
            "-M",
            "do",
            "-s",
            "1422",
            "-W",
            "2",
            "192.168.1.20",
        ],
    );
    // Each VM resolved its peer in its own tenant.
    let neigh = lab.exec_ok("a1", &["ip", "neigh", "show", "192.168.1.21"]);
    assert!(neigh.contains(&kernel_mac(&lab, "a2")), "{neigh}");
    let neigh = lab.exec_ok("b1", &["ip", "neigh", "show", "192.168.1.21"]);
    assert!(neigh.contains(&kernel_mac(&lab, "b2")), "{neigh}");
    let fdb = lab.show("hostb", "fdb");
    let at = |vni: u64, mac: &str| {
        fdb.as_array()
            .unwrap()
            .iter()
            .find(|e| e["vni"] == vni && e["mac"] == mac)
            .map(|e| {
                (
                    e["where"].as_str().unwrap().to_string(),
                    e["at"].as_str().unwrap().to_string(),
                )
            })
    };
    assert_eq!(
        at(1001, &kernel_mac(&lab, "a1")),
        Some(("vtep".into(), "10.1.0.11".into()))
    );
    assert_eq!(
        at(1002, &kernel_mac(&lab, "b1")),
        Some(("vtep".into(), "10.1.0.11".into()))
    );
    assert_eq!(at(1001, &kernel_mac(&lab, "b1")), None);
    let macs_a = [kernel_mac(&lab, "a1"), kernel_mac(&lab, "a2")];
    let macs_b = [kernel_mac(&lab, "b1"), kernel_mac(&lab, "b2")];
    let (ua, b1, b2, a1) = (
        lab.pcap("underlay"),
        lab.pcap("b1"),
        lab.pcap("b2"),
        lab.pcap("a1"),
    );
    drop(lab);
    // Tenant B's ports saw no frame of tenant A, and the other way round.
    for (file, foreign) in [(&b1, &macs_a), (&b2, &macs_a), (&a1, &macs_b)] {
        let srcs = tshark_fields(file, "eth", &["eth.src"], &[]);
        for r in &srcs {
            assert!(!foreign.contains(&r[0]), "{}: {r:?}", file.display());
        }
    }
    // On the underlay: VXLAN for both VNIs, each inner frame from its own tenant.
    let rows = tshark_fields(&ua, "vxlan", &["vxlan.vni", "eth.src"], &[]);
    assert!(!rows.is_empty());
    for r in &rows {
        let inner = r[1].split(',').nth(1).unwrap_or("").to_string();
        match num(&r[0]).as_str() {
            "1001" => assert!(macs_a.contains(&inner), "{r:?}"),
            "1002" => assert!(macs_b.contains(&inner), "{r:?}"),
            v => panic!("VNI {v}"),
        }
    }
    let bad = malformed(&ua, &[]);
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn the_kernels_vxlan_reaches_our_vms_and_bad_vxlan_is_counted() {
    let lab = Lab::up(LAB);
    // The kernel's VTEP on hostk: VNI 1001, flooding to both hosts (as our vswitches do).
    for cmd in [
        "ip link add vx0 type vxlan id 1001 local 10.1.0.13 dstport 4789 dev eth0",
        "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.1.0.11",
        "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.1.0.12",
        "ip addr add 192.168.1.30/24 dev vx0",
        "ip link set vx0 up",
    ] {
        lab.exec_ok("hostk", &["sh", "-c", cmd]);
    }
    // Both ways, to a VM on each host.
    lab.exec_ok(
        "hostk",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.1.20"],
    );
    lab.exec_ok(
        "hostk",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.1.21"],
    );
    lab.exec_ok(
        "a1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.1.30"],
    );
    lab.exec_ok(
        "a2",
        &[
            "ping",
            "-c",
            "1",
            "-M",
            "do",
            "-s",
            "1400",
            "-W",
            "2",
            "192.168.1.30",
        ],
    );
    // Tenant B (same subnet, VNI 1002) does not reach the kernel's VNI 1001.
    let o = lab.exec("b1", &["ping", "-c", "1", "-W", "1", "192.168.1.30"]);
    assert!(!o.status.success(), "tenant B reached VNI 1001");
    let vteps = lab.show("hosta", "vteps");
    assert!(
        vteps
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["vtep"] == "10.1.0.13" && v["vni"] == 1001),
        "{vteps}"
    );
    // Bad VXLAN to hosta: the switch counts and drops it, and keeps switching.
    let inner: Vec<u8> = [[0xffu8; 6], [2, 0, 0, 0, 0, 9]].concat();
    let with = |hdr: &[u8]| [hdr, &inner[..], &[8, 6], &[0u8; 46][..]].concat();
    lab.udp_send("hostk", "10.1.0.11", 4789, &[0x08, 0, 0]);
    lab.udp_send(
        "hostk",
        "10.1.0.11",
        4789,
        &with(&[0, 0, 0, 0, 0, 0x03, 0xe9, 0]),
    );
    lab.udp_send(
        "hostk",
        "10.1.0.11",
        4789,
        &with(&[0x08, 0, 0, 0, 0, 0x10, 0x92, 0]),
    );
    let c = lab.show("hosta", "counters");
    assert_eq!(
        (
            &c["vxlan_malformed"],
            &c["vxlan_bad_flags"],
            &c["vxlan_unknown_vni"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{c}"
    );
    lab.exec_ok("hostk", &["ping", "-c", "1", "-W", "2", "192.168.1.20"]);
}
