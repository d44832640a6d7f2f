//! Stage 4, the authoritative servers: root, `example.` and `shop.example.` (d11-dns with the
//! zone files of labs/dns) asked by BIND's `dig` from a kernel host, over UDP and TCP; bad
//! queries are answered FORMERR and counted and the servers go on; tshark finds every message
//! well formed.

use d11_netns_tests::*;

fn lab() -> Lab {
    let dns = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../labs/dns");
    let server = |name: &str, addr: &str, zone: &str, file: &str| {
        format!(
            "[[nodes]]\nname = \"{name}\"\nrole = \"dns\"\nports = [{{ name = \"eth0\", segment = \"net\", addresses = [\"{addr}/24\"] }}]\nzone = \"{zone}\"\nzone_file = \"{}\"\n",
            dns.join(file).display()
        )
    };
    let topo = format!(
        "name = \"dns\"\n[[segments]]\nname = \"net\"\n{}{}{}[[nodes]]\nname = \"k1\"\nrole = \"kernel\"\nports = [{{ name = \"eth0\", segment = \"net\", addresses = [\"192.0.2.100/24\", \"203.0.113.100/24\"] }}]\n",
        server("root-dns", "192.0.2.10", ".", "root.zone"),
        server("tld-dns", "192.0.2.11", "example.", "example.zone"),
        server("auth-dns", "203.0.113.53", "shop.example.", "shop.example.zone"),
    );
    Lab::up(&topo)
}

/// `dig +norec` from k1: the sections of the answer, one record a line (`+noall` with the
/// given sections), and the header's status and flags.
fn dig(lab: &Lab, args: &[&str]) -> (Vec<String>, String) {
    let mut cmd = vec!["dig", "+norec", "+tries=1", "+time=3"];
    cmd.extend_from_slice(args);
    let full = lab.exec_ok("k1", &cmd);
    let header = full
        .lines()
        .filter(|l| l.contains("status:") || l.starts_with(";; flags:"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut short = vec!["dig", "+norec", "+tries=1", "+time=3", "+noall"];
    short.extend_from_slice(&["+answer", "+authority", "+additional"]);
    short.extend_from_slice(args);
    let records = lab
        .exec_ok("k1", &short)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (records, header)
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn dig_follows_root_tld_and_shop_to_the_gslb_referral() {
    let lab = lab();
    // N2: the root refers to the TLD, with glue; not authoritative.
    let (r, h) = dig(&lab, &["@192.0.2.10", "www.shop.example", "A"]);
    assert_eq!(
        r,
        [
            "example. 86400 IN NS tld-dns.example.",
            "tld-dns.example. 86400 IN A 192.0.2.11"
        ],
        "{h}"
    );
    assert!(h.contains("status: NOERROR") && !h.contains(" aa"), "{h}");
    // N3: the TLD refers to the shop.
    let (r, _) = dig(&lab, &["@192.0.2.11", "www.shop.example", "A"]);
    assert_eq!(
        r,
        [
            "shop.example. 86400 IN NS auth-dns.shop.example.",
            "auth-dns.shop.example. 86400 IN A 203.0.113.53"
        ]
    );
    // N4: the CNAME, authoritatively, and the referral of vip.shop.example to the GSLB.
    let (r, h) = dig(&lab, &["@203.0.113.53", "www.shop.example", "A"]);
    assert_eq!(
        r,
        [
            "www.shop.example. 3600 IN CNAME vip.shop.example.",
            "vip.shop.example. 3600 IN NS gslb.shop.example.",
            "gslb.shop.example. 3600 IN A 203.0.113.54"
        ]
    );
    assert!(h.contains("flags: qr aa"), "{h}");
    // The same over TCP.
    let (t, _) = dig(&lab, &["+tcp", "@203.0.113.53", "www.shop.example", "A"]);
    assert_eq!(t, r);
    // NXDOMAIN with the SOA at the negative TTL (min of 3600 and MINIMUM 300).
    let (r, h) = dig(&lab, &["@203.0.113.53", "nope.shop.example", "A"]);
    assert!(h.contains("status: NXDOMAIN"), "{h}");
    assert_eq!(r.len(), 1);
    assert!(
        r[0].starts_with("shop.example. 300 IN SOA auth-dns.shop.example."),
        "{r:?}"
    );
    // Someone else's zone: refused.
    let (_, h) = dig(&lab, &["@203.0.113.53", "www.other.example", "A"]);
    assert!(h.contains("status: REFUSED"), "{h}");
    // ANY: one record set (RFC 8482).
    let any = lab.exec_ok(
        "k1",
        &[
            "dig",
            "+norec",
            "+noall",
            "+answer",
            "@203.0.113.53",
            "shop.example",
            "ANY",
        ],
    );
    let r: Vec<String> = any
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(!r.is_empty());
    let t = r[0].split(' ').nth(3).unwrap().to_string();
    assert!(
        r.iter().all(|l| l.split(' ').nth(3) == Some(t.as_str())),
        "{r:?}"
    );
    // `d11 show auth-dns zones` lists the zone.
    let zones = lab.show("auth-dns", "zones");
    assert_eq!(zones[0]["origin"], "shop.example.");
    assert!(zones[0]["records"].as_array().unwrap().len() >= 6);
    let files = lab.stop();
    let pcap = files.0.join("pcap/net.pcapng");
    let bad = malformed(&pcap, &[]);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(tshark_fields(&pcap, "dns", &["dns.id"], &[]).len() >= 16);
}

/// Malformed queries from a kernel host (compression loop, a 64-octet label, counts beyond the
/// message, no question, cut short) get FORMERR and are counted; the server answers the next
/// good query.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn bad_queries_get_formerr_and_the_server_goes_on() {
    let lab = lab();
    let header = |qd: u8| vec![0x12, 0x34, 0x01, 0x00, 0, qd, 0, 0, 0, 0, 0, 0];
    let mut loop_q = header(1);
    loop_q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut long = header(1);
    long.push(64);
    long.extend_from_slice(&[b'a'; 64]);
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut cut = header(1);
    cut.extend_from_slice(&[3, b'w', b'w']);
    let bad = [loop_q, long, header(1), header(0), cut];
    for q in &bad {
        lab.udp_send("k1", "203.0.113.53", 53, q);
    }
    let c = lab.wait_show("auth-dns", "counters", 10, |c| {
        c["dns_formerr"].as_u64() >= Some(bad.len() as u64)
    });
    assert_eq!(c["dns_formerr"], bad.len() as u64, "{c}");
    let (r, _) = dig(&lab, &["@203.0.113.53", "gslb.shop.example", "A"]);
    assert_eq!(r, ["gslb.shop.example. 3600 IN A 203.0.113.54"]);
}
