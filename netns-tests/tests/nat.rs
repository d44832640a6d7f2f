//! The carrier NAT with kernel hosts on both sides.

use d11_netns_tests::*;

const LAB: &str = r#"
name = "nat"
[[segments]]
name = "sgi"
[[segments]]
name = "carrier"
[[nodes]]
name = "k1"
role = "kernel"
gateway = "172.16.9.1"
ports = [{ name = "eth0", segment = "sgi", addresses = ["172.16.9.50/24"] }]
[[nodes]]
name = "nat"
role = "nat"
ports = [
  { name = "eth0", segment = "sgi", addresses = ["172.16.9.1/24"] },
  { name = "eth1", segment = "carrier", addresses = ["198.51.100.2/24"] },
]
nat = { inside = ["eth0"], outside = "eth1", pool = ["198.51.100.10-19"] }
[[nodes]]
name = "s1"
role = "kernel"
ports = [{ name = "eth0", segment = "carrier", addresses = ["198.51.100.80/24"] }]
[[nodes]]
name = "s2"
role = "kernel"
ports = [{ name = "eth0", segment = "carrier", addresses = ["198.51.100.81/24"] }]
"#;

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn kernel_hosts_through_the_nat() {
    let lab = Lab::up(LAB);
    let out = lab.exec_ok(
        "k1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.80"],
    );
    assert!(out.contains("2 received"), "{out}");
    // traceroute: the NAT, then the server, whose port-unreachable comes back translated.
    let (hops, out) = lab.traceroute("k1", "198.51.100.80");
    assert_eq!(hops, ["172.16.9.1", "198.51.100.80"], "{out}");
    // One internal UDP endpoint to two servers: one external endpoint (EIM), port kept.
    let cap = lab.capture("carrier");
    lab.exec_ok("k1", &["sh", "-c", "echo a | nc -u -w 1 -p 40000 198.51.100.80 45001; echo b | nc -u -w 1 -p 40000 198.51.100.81 45002"]);
    // Both datagrams have left the NAT once it knows both servers' MACs and sent nothing that
    // waits for one (a loaded machine may answer ARP late); then the capture may stop.
    lab.wait_show("nat", "arp", 10, |v| {
        let done = |ip: &str| {
            v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|n| n["address"] == ip && !n["mac"].is_null() && n["queued"] == 0)
            })
        };
        done("198.51.100.80") && done("198.51.100.81")
    });
    let cap = cap.stop();
    let seen = tshark_fields(
        &cap,
        "(udp.dstport == 45001 || udp.dstport == 45002) && !icmp",
        &["ip.src", "udp.srcport", "ip.dst"],
        &[],
    );
    assert_eq!(
        seen.len(),
        2,
        "{seen:?}\nnat counters: {}",
        lab.show("nat", "counters")
    );
    assert_eq!(
        seen[0][..2],
        seen[1][..2],
        "same external endpoint: {seen:?}"
    );
    assert!(seen[0][0].starts_with("198.51.100.1"), "{seen:?}");
    assert_eq!(seen[0][1], "40000", "port preserved");
    let maps = lab.show("nat", "mappings");
    let udp: Vec<_> = maps
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["proto"] == "udp" && m["internal"] == "172.16.9.50:40000")
        .collect();
    assert_eq!(udp.len(), 1, "{maps}");
    assert_eq!(udp[0]["remotes"].as_array().unwrap().len(), 2);
    let bad = malformed(&cap, &[]);
    assert!(bad.is_empty(), "{bad:?}");
    let c = lab.show("nat", "counters");
    assert!(c["icmp_errors_translated"].as_u64().unwrap() >= 1, "{c}");
}
