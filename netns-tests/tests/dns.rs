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

/// `dig +norec` from k1 (asking a server itself): the records of the answer, authority and
/// additional sections, one a line, and the header's status and flags.
fn dig(lab: &Lab, args: &[&str]) -> (Vec<String>, String) {
    run_dig(lab, true, args, &["ANSWER", "AUTHORITY", "ADDITIONAL"])
}

/// `dig` with recursion desired (asking the resolver): the answer section's records and the
/// header.
fn dig_rd(lab: &Lab, args: &[&str]) -> (Vec<String>, String) {
    run_dig(lab, false, args, &["ANSWER"])
}

fn run_dig(lab: &Lab, norec: bool, args: &[&str], sections: &[&str]) -> (Vec<String>, String) {
    let mut cmd = vec!["dig", "+tries=1", "+time=5"];
    if norec {
        cmd.push("+norec");
    }
    cmd.extend_from_slice(args);
    let full = lab.exec_ok("k1", &cmd);
    let header = full
        .lines()
        .filter(|l| l.contains("status:") || l.starts_with(";; flags:"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut records = Vec::new();
    let mut on = false;
    for l in full.lines() {
        if let Some(rest) = l.strip_prefix(";; ") {
            on = sections
                .iter()
                .any(|s| rest.starts_with(&format!("{s} SECTION")));
            continue;
        }
        if on && !l.trim().is_empty() && !l.starts_with(';') {
            records.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
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
    assert!(
        tshark_fields(&pcap, "dns", &["dns.id"], &[]).len() >= 12,
        "seven questions and their answers"
    );
}

/// Malformed queries from a kernel host (compression loop, a 64-octet label, a name over 255
/// octets, counts beyond the message, no question, cut short) get FORMERR and are counted;
/// the server answers the next good query.
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
    // A name of 305 octets (five labels of 60): over the 255 a name may have.
    let mut over = header(1);
    for _ in 0..5 {
        over.push(60);
        over.extend_from_slice(&[b'a'; 60]);
    }
    over.extend_from_slice(&[0, 0, 1, 0, 1]);
    // Three questions announced, one there.
    let mut counts = header(3);
    counts.extend_from_slice(&[3, b'w', b'w', b'w', 0, 0, 1, 0, 1]);
    let bad = [loop_q, long, header(1), header(0), cut, over, counts];
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

/// The resolver under test at 198.51.100.53 (`D11_DNS_SUBJECT`): ours (`d11`, the default) or
/// Unbound (`unbound`, Debian's), so that the resolver tests are known to be right: the same
/// assertions hold of both, but for the ones about our own tables and counters.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Subject {
    D11,
    Unbound,
}

fn subject() -> Subject {
    match std::env::var("D11_DNS_SUBJECT").as_deref() {
        Err(_) | Ok("d11") | Ok("") => Subject::D11,
        Ok("unbound") => Subject::Unbound,
        Ok(other) => panic!("D11_DNS_SUBJECT={other:?}: d11 or unbound"),
    }
}

fn subject_is_ours() -> bool {
    subject() == Subject::D11
}

/// Who serves the zones of the resolver labs.
#[derive(Clone, Copy, PartialEq)]
enum Servers {
    /// d11-dns in the authoritative role.
    D11,
    /// NSD from Debian, on kernel hosts at the same addresses.
    Nsd,
}

/// The resolver lab: ldns (d11-dns, kind = "resolver", 198.51.100.53) and Unbound's host
/// (198.51.100.54) and the client k1 on the carrier's segment, a router, the root and TLD
/// servers on ix, the shop's and a GSLB stand-in (a zone of the three VIPs) on dc. Returns
/// the lab, its scratch directory, and the servers' processes when they are NSD.
fn resolver_lab(servers: Servers) -> (Lab, LabDir, Vec<std::process::Child>) {
    resolver_lab_with(servers, None, "")
}

/// [`resolver_lab`] with a GSLB of its own: `gslb` is its policy (a TOML inline table; the
/// stand-in zone's VIPs are gone then) and `extra` more nodes.
fn resolver_lab_with(
    servers: Servers,
    gslb: Option<&str>,
    extra: &str,
) -> (Lab, LabDir, Vec<std::process::Child>) {
    let dns = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../labs/dns");
    let dir = scratch("dns-resolver");
    let vip = dir.0.join("vip.zone");
    let stand_in = if gslb.is_some() {
        ""
    } else {
        "@ A 203.0.113.10\n@ A 203.0.113.11\n@ A 203.0.113.12\n"
    };
    std::fs::write(
        &vip,
        format!("$ORIGIN vip.shop.example.\n$TTL 30\n@ SOA gslb.shop.example. hm 1 1 1 1 10\n@ NS gslb.shop.example.\n{stand_in}"),
    )
    .unwrap();
    let f = |n: &str| dns.join(n).display().to_string();
    // The shop's zone, and a name whose 120 addresses do not fit UDP (TC, then TCP).
    let shop = dir.0.join("shop.example.zone");
    let mut text = std::fs::read_to_string(dns.join("shop.example.zone")).unwrap();
    for i in 0..120 {
        text += &format!("big 60 IN A 10.0.0.{}\n", i + 1);
    }
    std::fs::write(&shop, text).unwrap();
    let zones = [
        (
            "root-dns",
            "ix",
            "192.0.2.10",
            "192.0.2.1",
            ".",
            f("root.zone"),
        ),
        (
            "tld-dns",
            "ix",
            "192.0.2.11",
            "192.0.2.1",
            "example.",
            f("example.zone"),
        ),
        (
            "auth-dns",
            "dc",
            "203.0.113.53",
            "203.0.113.1",
            "shop.example.",
            shop.display().to_string(),
        ),
        (
            "gslb",
            "dc",
            "203.0.113.54",
            "203.0.113.1",
            "vip.shop.example.",
            vip.display().to_string(),
        ),
    ];
    let mut nodes = String::new();
    for (name, seg, addr, gw, zone, file) in &zones {
        let port = format!(
            "ports = [{{ name = \"eth0\", segment = \"{seg}\", addresses = [\"{addr}/24\"] }}]"
        );
        let policy = match (*name, gslb) {
            ("gslb", Some(p)) => format!("kind = \"gslb\"\ngslb = {p}\n"),
            _ => String::new(),
        };
        nodes += &match servers {
            Servers::D11 => format!(
                "[[nodes]]\nname = \"{name}\"\nrole = \"dns\"\ngateway = \"{gw}\"\n{port}\nzone = \"{zone}\"\nzone_file = \"{file}\"\n{policy}"
            ),
            Servers::Nsd => format!("[[nodes]]\nname = \"{name}\"\nrole = \"kernel\"\ngateway = \"{gw}\"\n{port}\n"),
        };
    }
    // Against NSD, with QNAME minimisation (RFC 9156); against ours, without.
    let minimise = servers == Servers::Nsd;
    let topo = format!(
        r#"name = "dns-resolver"
[[segments]]
name = "carrier"
[[segments]]
name = "ix"
[[segments]]
name = "dc"
[[nodes]]
name = "r1"
role = "router"
ports = [
  {{ name = "carrier", segment = "carrier", addresses = ["198.51.100.1/24"] }},
  {{ name = "ix", segment = "ix", addresses = ["192.0.2.1/24"] }},
  {{ name = "dc", segment = "dc", addresses = ["203.0.113.1/24"] }},
]
{ldns}
[[nodes]]
name = "k1"
role = "kernel"
gateway = "198.51.100.1"
dns = ["198.51.100.53"]
ports = [{{ name = "eth0", segment = "carrier", addresses = ["198.51.100.100/24"] }}]
[[nodes]]
name = "unbound"
role = "kernel"
gateway = "198.51.100.1"
ports = [{{ name = "eth0", segment = "carrier", addresses = ["198.51.100.54/24"] }}]
[[nodes]]
name = "evil"
role = "kernel"
gateway = "192.0.2.1"
ports = [{{ name = "eth0", segment = "ix", addresses = ["192.0.2.66/24"] }}]
{nodes}
{extra}"#,
        ldns = match subject() {
            Subject::D11 => format!(
                "[[nodes]]\nname = \"ldns\"\nrole = \"dns\"\nkind = \"resolver\"\ngateway = \"198.51.100.1\"\nports = [{{ name = \"eth0\", segment = \"carrier\", addresses = [\"198.51.100.53/24\"] }}]\nroot_hints_file = \"{}\"\nclients = [\"198.51.100.0/24\"]\necs_zones = [\"vip.shop.example.\"]\nqname_minimisation = {minimise}\n",
                f("root.hints")
            ),
            Subject::Unbound => "[[nodes]]\nname = \"ldns\"\nrole = \"kernel\"\ngateway = \"198.51.100.1\"\nports = [{ name = \"eth0\", segment = \"carrier\", addresses = [\"198.51.100.53/24\"] }]\n".to_string(),
        },
    );
    let lab = Lab::up(&topo);
    let mut children = Vec::new();
    if servers == Servers::Nsd {
        for (name, _, addr, _, zone, file) in &zones {
            let conf = dir.0.join(format!("nsd-{name}.conf"));
            let d = dir.0.display();
            std::fs::write(
                &conf,
                format!(
                    "server:\n  ip-address: {addr}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd-{name}.pid\"\n  xfrdfile: \"{d}/xfrd-{name}.state\"\n  xfrdir: \"{d}\"\n  zonelistfile: \"{d}/zones-{name}.list\"\n  logfile: \"{d}/nsd-{name}.log\"\n  do-ip6: no\nremote-control:\n  control-enable: no\nzone:\n  name: \"{zone}\"\n  zonefile: \"{file}\"\n"
                ),
            )
            .unwrap();
            children.push(
                lab.client()
                    .command(name, &["nsd", "-d", "-c", conf.to_str().unwrap()])
                    .unwrap()
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("nsd (apt-get install nsd)"),
            );
        }
        // Ready when each answers its zone's SOA.
        for (_, _, addr, _, zone, _) in &zones {
            let at = format!("@{addr}");
            d11_lab::client::wait_until(std::time::Duration::from_secs(20), || {
                let o = lab.exec(
                    "k1",
                    &["dig", "+norec", "+tries=1", "+time=1", &at, zone, "SOA"],
                );
                Ok(String::from_utf8_lossy(&o.stdout)
                    .contains("status: NOERROR")
                    .then_some(()))
            })
            .unwrap_or_else(|e| panic!("nsd at {addr}: {e:#}"));
        }
    }
    if subject() == Subject::Unbound {
        children.push(start_unbound(&lab, &dir, "ldns", "198.51.100.53", minimise));
    }
    (lab, dir, children)
}

/// Starts Unbound (Debian's) on its host with the lab's root hints; returns once it resolves
/// www.shop.example. The caller kills it.
fn unbound(lab: &Lab, dir: &LabDir) -> std::process::Child {
    start_unbound(lab, dir, "unbound", "198.51.100.54", false)
}

/// Unbound on `node` at `addr`: the carrier's clients may ask, ECS goes to the GSLB only (its
/// subnet cache), QNAME minimisation if `minimise`.
fn start_unbound(
    lab: &Lab,
    dir: &LabDir,
    node: &str,
    addr: &str,
    minimise: bool,
) -> std::process::Child {
    let hints = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../labs/dns/root.hints");
    let conf = dir.0.join(format!("unbound-{node}.conf"));
    let qmin = if minimise { "yes" } else { "no" };
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: {addr}\n  access-control: 198.51.100.0/24 allow\n  do-ip6: no\n  root-hints: \"{}\"\n  module-config: \"subnetcache iterator\"\n  send-client-subnet: 203.0.113.54\n  max-client-subnet-ipv4: 24\n  username: \"\"\n  chroot: \"\"\n  directory: \"{}\"\n  pidfile: \"\"\n  use-syslog: no\n  qname-minimisation: {qmin}\nremote-control:\n  control-enable: no\n",
            hints.display(),
            dir.0.display()
        ),
    )
    .unwrap();
    let child = lab
        .client()
        .command(node, &["unbound", "-d", "-c", conf.to_str().unwrap()])
        .unwrap()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unbound (apt-get install unbound)");
    let at = format!("@{addr}");
    d11_lab::client::wait_until(std::time::Duration::from_secs(20), || {
        // Up when it answers (REFUSED is enough: a question of its own would warm its cache).
        let o = lab.exec("k1", &["dig", "+tries=1", "+time=2", &at, ".", "CH", "TXT"]);
        Ok(String::from_utf8_lossy(&o.stdout)
            .contains("->>HEADER<<-")
            .then_some(()))
    })
    .expect("unbound answers");
    child
}

/// Records without their TTLs (each resolver counts down from its own fetch), sorted (Unbound
/// rotates record sets).
fn without_ttl(rs: &[String]) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .map(|l| {
            let mut w: Vec<&str> = l.split(' ').collect();
            w.remove(1);
            w.join(" ")
        })
        .collect();
    v.sort();
    v
}

/// Our resolver resolves for a kernel host's `dig` through our servers: the CNAME and the
/// three VIPs, the second time from its cache (no upstream query), NXDOMAIN; Unbound with the
/// same hints gets the same records from our servers (so they answer as a real resolver
/// needs); nothing malformed on the wire.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn the_resolver_resolves_www_for_dig_and_answers_again_from_its_cache() {
    let (lab, dir, _) = resolver_lab(Servers::D11);
    let (r, h) = dig_rd(&lab, &["@198.51.100.53", "www.shop.example", "A"]);
    assert!(h.contains("status: NOERROR") && h.contains(" ra"), "{h}");
    // The CNAME first; the order of an RRset's records is the resolver's (Unbound rotates).
    assert_eq!(r[0], "www.shop.example. 3600 IN CNAME vip.shop.example.");
    let mut a = r[1..].to_vec();
    a.sort();
    assert_eq!(
        a,
        [
            "vip.shop.example. 30 IN A 203.0.113.10",
            "vip.shop.example. 30 IN A 203.0.113.11",
            "vip.shop.example. 30 IN A 203.0.113.12"
        ]
    );
    if subject_is_ours() {
        let c = lab.show("ldns", "counters");
        assert_eq!(
            (c["upstream_queries"].as_u64(), c["cache_misses"].as_u64()),
            (Some(4), Some(1)),
            "{c}"
        );
    }
    // Without a server: the host's resolver configuration (the lab's `dns`) names ldns.
    let (again, h) = dig_rd(&lab, &["www.shop.example", "A"]);
    assert_eq!(again.len(), 4, "{h}");
    if subject_is_ours() {
        let c = lab.show("ldns", "counters");
        assert_eq!(
            (c["upstream_queries"].as_u64(), c["cache_hits"].as_u64()),
            (Some(4), Some(1)),
            "{c}"
        );
    }
    // Too big for UDP from our shop server: ldns asks it again over TCP, and dig ldns.
    let (big, _) = dig_rd(&lab, &["@198.51.100.53", "big.shop.example", "A"]);
    assert_eq!(big.len(), 120);
    if subject_is_ours() {
        assert_eq!(lab.counter("ldns", "tcp_retries"), 1);
        assert_eq!(lab.counter("auth-dns", "dns_truncated"), 1);
    }
    // dig +trace from our root: each delegation in turn to the shop's CNAME (where dig's
    // trace ends, an answer), and for the CNAME's target on to the GSLB's VIPs.
    let trace = |name: &str| {
        lab.exec_ok(
            "k1",
            &[
                "dig",
                "+trace",
                "+tries=1",
                "+time=3",
                "@192.0.2.10",
                name,
                "A",
            ],
        )
    };
    let www = trace("www.shop.example");
    for from in [
        "from 192.0.2.10#53(root-dns.example)",
        "from 192.0.2.11#53(tld-dns.example)",
        "from 203.0.113.53#53(auth-dns.shop.example)",
    ] {
        assert!(www.contains(from), "{from}: {www}");
    }
    assert!(
        www.contains("www.shop.example.\t3600\tIN\tCNAME\tvip.shop.example."),
        "{www}"
    );
    let vip = trace("vip.shop.example");
    assert!(
        vip.contains("from 203.0.113.54#53(gslb.shop.example)"),
        "{vip}"
    );
    assert!(
        vip.contains("vip.shop.example.\t30\tIN\tA\t203.0.113.12"),
        "{vip}"
    );
    if subject_is_ours() {
        let cache = lab.show("ldns", "cache").to_string();
        assert!(
            cache.contains("vip.shop.example.") && cache.contains("203.0.113.11"),
            "{cache}"
        );
    }
    let (_, h) = dig_rd(&lab, &["@198.51.100.53", "nope.shop.example", "A"]);
    assert!(h.contains("status: NXDOMAIN"), "{h}");
    // Not a client of the carrier (a host on ix): no answer (ours drops it and counts it;
    // Unbound answers REFUSED).
    let o = lab.exec(
        "evil",
        &[
            "dig",
            "+tries=1",
            "+time=1",
            "@198.51.100.53",
            "www.shop.example",
            "A",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("status: NOERROR"), "{out}");
    if subject_is_ours() {
        assert!(!o.status.success(), "{out}");
        assert_eq!(lab.counter("ldns", "refused_clients"), 1);
    }
    let mut u = unbound(&lab, &dir);
    let (theirs, _) = dig_rd(&lab, &["@198.51.100.54", "www.shop.example", "A"]);
    let _ = u.kill();
    let _ = u.wait();
    assert_eq!(
        without_ttl(&theirs),
        without_ttl(&r),
        "Unbound and ldns agree"
    );
    let files = lab.stop();
    for seg in ["carrier", "ix", "dc"] {
        let pcap = files.0.join(format!("pcap/{seg}.pcapng"));
        let bad = malformed(&pcap, &[]);
        assert!(bad.is_empty(), "{seg}: {bad:?}");
    }
}

/// The other subject: the zones served by NSD (Debian's). Our resolver resolves through them
/// to the records Unbound gets (so our resolver is right), NXDOMAIN included.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn the_resolver_resolves_through_nsd_as_unbound_does() {
    let (lab, dir, mut nsd) = resolver_lab(Servers::Nsd);
    let (ours, h) = dig_rd(&lab, &["@198.51.100.53", "www.shop.example", "A"]);
    assert!(h.contains("status: NOERROR"), "{h}");
    let (_, nx) = dig_rd(&lab, &["@198.51.100.53", "nope.shop.example", "A"]);
    // Too big for UDP: NSD truncates, ldns asks again over TCP; dig too (TC from ldns).
    let (big, _) = dig_rd(&lab, &["@198.51.100.53", "big.shop.example", "A"]);
    let mut u = unbound(&lab, &dir);
    let (theirs, _) = dig_rd(&lab, &["@198.51.100.54", "www.shop.example", "A"]);
    let (_, their_nx) = dig_rd(&lab, &["@198.51.100.54", "nope.shop.example", "A"]);
    let (their_big, _) = dig_rd(&lab, &["@198.51.100.54", "big.shop.example", "A"]);
    let _ = u.kill();
    let _ = u.wait();
    for c in &mut nsd {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(ours.len(), 4, "{ours:?}");
    assert_eq!(without_ttl(&ours), without_ttl(&theirs));
    assert!(
        nx.contains("status: NXDOMAIN") && their_nx.contains("status: NXDOMAIN"),
        "{nx} / {their_nx}"
    );
    assert_eq!(big.len(), 120);
    let sorted = |v: &[String]| {
        let mut v = without_ttl(v);
        v.sort();
        v
    };
    assert_eq!(sorted(&big), sorted(&their_big));
    if subject_is_ours() {
        let c = lab.show("ldns", "counters");
        assert!(
            c["tcp_retries"].as_u64() >= Some(1) && c["truncated"].as_u64() >= Some(1),
            "{c}"
        );
    }
    // With QNAME minimisation, the root and the TLD saw one label below their zones.
    let files = lab.stop();
    let asked = |server: &str| {
        let o = std::process::Command::new("tshark")
            .arg("-r")
            .arg(files.0.join("pcap/ix.pcapng"))
            .args([
                "-Y",
                &format!(
                    "dns.flags.response == 0 && ip.src == 198.51.100.53 && ip.dst == {server}"
                ),
            ])
            .args(["-T", "fields", "-e", "dns.qry.name"])
            .output()
            .expect("tshark");
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    // Every name asked of a server is at most one label below its zone (a resolver may also
    // ask the root for itself: Unbound primes with ". NS").
    let labels = |n: &str| {
        if n == "<Root>" {
            0
        } else {
            n.split('.').count()
        }
    };
    let root = asked("192.0.2.10");
    assert!(root.contains(&"example".to_string()), "{root:?}");
    assert!(root.iter().all(|n| labels(n) <= 1), "{root:?}");
    let tld = asked("192.0.2.11");
    assert!(tld.contains(&"shop.example".to_string()), "{tld:?}");
    assert!(tld.iter().all(|n| labels(n) <= 2), "{tld:?}");
}

/// Forged answers, as an off-path attacker sends them: from the shop's and the GSLB's
/// addresses, port 53, to ldns at random ports with random IDs, for www and vip with the
/// address 6.6.6.6; for `argv[1]` seconds at `argv[2]` a second, through the router (raw IPv4,
/// the source spoofed).
const FLOOD: &str = r#"
import os, random, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"
def forged(src, qname):
    dns = struct.pack("!HHHHHH", random.getrandbits(16), 0x8400, 1, 1, 0, 0)
    dns += name(qname) + struct.pack("!HH", 1, 1)
    dns += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 86400, 4) + bytes([6, 6, 6, 6])
    udp = struct.pack("!HHHH", 53, random.randint(1024, 65535), 8 + len(dns), 0) + dns
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton("198.51.100.53"))
    return ip + udp
print("flooding", flush=True)
start = time.time()
end = start + float(sys.argv[1])
rate = float(sys.argv[2])
n = 0
while time.time() < end:
    for src, q in (("203.0.113.53", "www.shop.example"), ("203.0.113.54", "vip.shop.example")):
        s.sendto(forged(src, q), ("198.51.100.53", 0))
        n += 1
    # At `rate` a second: a flood the lab's links carry (the point is the guessing, not
    # starving the machine the tests share).
    ahead = n / rate - (time.time() - start)
    if ahead > 0:
        time.sleep(ahead)
print(n, flush=True)
"#;

/// An attacker on ix floods ldns with forged answers (guessing IDs and ports, spoofing the
/// shop's and the GSLB's addresses) while it resolves: the answer and the cache hold only the
/// real records.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn forged_answers_flooding_the_resolver_are_never_cached() {
    use std::io::BufRead;
    let (lab, _dir, _) = resolver_lab(Servers::D11);
    let before = lab.counter("r1", "forwarded");
    let mut flood = lab
        .client()
        .command("evil", &["python3", "-c", FLOOD, "4", "10000"])
        .unwrap()
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(flood.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "flooding");
    // Resolutions while the flood runs: cold, then names that miss the cache.
    let (r, h) = dig_rd(
        &lab,
        &["+tries=3", "@198.51.100.53", "www.shop.example", "A"],
    );
    let (g, _) = dig_rd(
        &lab,
        &["+tries=3", "@198.51.100.53", "gslb.shop.example", "A"],
    );
    line.clear();
    out.read_line(&mut line).unwrap();
    let sent: u64 = line.trim().parse().unwrap();
    let _ = flood.wait();
    assert!(sent > 1000, "the flood sent {sent}");
    assert!(
        lab.counter("r1", "forwarded") - before > 1000,
        "and it crossed the router"
    );
    // The forged answers reached ldns at ports it does not listen on; it answered them with
    // port unreachables at the ICMP rate only (so they cost it little).
    let ldns = if subject_is_ours() {
        let c = lab.show("ldns", "counters");
        assert!(c["udp_no_socket"].as_u64() > Some(1000), "{c}");
        assert!(c["icmp_rate_limited"].as_u64() > Some(0), "{c}");
        c
    } else {
        serde_json::Value::Null
    };
    assert_eq!(
        without_ttl(&r),
        [
            "vip.shop.example. IN A 203.0.113.10",
            "vip.shop.example. IN A 203.0.113.11",
            "vip.shop.example. IN A 203.0.113.12",
            "www.shop.example. IN CNAME vip.shop.example."
        ],
        "{h} {ldns}"
    );
    assert_eq!(without_ttl(&g), ["gslb.shop.example. IN A 203.0.113.54"]);
    // What it has cached, asked again after the flood, is the real records.
    for name in ["www.shop.example", "vip.shop.example"] {
        let (a, _) = dig_rd(&lab, &["@198.51.100.53", name, "A"]);
        assert!(
            !a.is_empty() && a.iter().all(|r| !r.contains("6.6.6.6")),
            "{a:?}"
        );
    }
    if subject_is_ours() {
        let cache = lab.show("ldns", "cache").to_string();
        assert!(!cache.contains("6.6.6.6"), "{cache}");
    }
}

/// A kernel host `name` at `addr` on dc, for a VIP.
fn vip_host(name: &str, addr: &str) -> String {
    format!(
        "[[nodes]]\nname = \"{name}\"\nrole = \"kernel\"\ngateway = \"203.0.113.1\"\nports = [{{ name = \"eth0\", segment = \"dc\", addresses = [\"{addr}/24\"] }}]\n"
    )
}

/// The A records of `dig @server vip.shop.example` with `+subnet` if given.
fn gslb_answer(lab: &Lab, subnet: Option<&str>) -> Vec<String> {
    let mut args = vec!["@203.0.113.54", "vip.shop.example", "A"];
    let s = subnet.map(|s| format!("+subnet={s}"));
    if let Some(s) = &s {
        args.push(s);
    }
    let (r, _) = run_dig(lab, true, &args, &["ANSWER"]);
    let mut a: Vec<String> = r
        .iter()
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect();
    a.sort();
    a
}

/// HTTPDNS's answer to `curl URL` from k1, parsed.
fn httpdns_get(lab: &Lab, url: &str, cacert: Option<&str>) -> serde_json::Value {
    let mut cmd = vec!["curl", "-sS", "--max-time", "10"];
    if let Some(c) = cacert {
        cmd.extend(["--cacert", c]);
    }
    cmd.push(url);
    let out = lab.exec_ok("k1", &cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{url}: {e}: {out}"))
}

fn ips(v: &serde_json::Value) -> Vec<String> {
    let mut a: Vec<String> = v["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    a.sort();
    a
}

/// The GSLB with two regions whose VIPs are kernel hosts listening on 443 (east: .10 and
/// .11, nearest the carrier; north: .20, nearest 100.64.0.0/10). It answers by ECS, else by
/// the sender; a VIP whose listener stops leaves the answers after its fall count of failed
/// checks; a region with none left fails over to north. HTTPDNS, asked with curl over HTTP
/// and HTTPS, answers as DNS does for the same client (`ip=`, else the sender).
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn the_gslb_follows_health_and_fails_over_and_httpdns_agrees() {
    let policy = "{ ttl = 5, check_port = 443, check = { interval_ms = 200, timeout_ms = 300, rise = 2, fall = 2 }, regions = [ { name = \"east\", vips = [\"203.0.113.10\", \"203.0.113.11\"], clients = [\"198.51.100.0/24\"] }, { name = \"north\", vips = [\"203.0.113.20\"], clients = [\"100.64.0.0/10\"] } ] }";
    let hints = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../labs/dns/root.hints");
    let extra = format!(
        "{}{}{}[[nodes]]\nname = \"httpdns\"\nrole = \"dns\"\nkind = \"httpdns\"\nroot_hints_file = \"{}\"\necs_zones = [\"vip.shop.example.\"]\nhosts = [\"www.shop.example\"]\ntls = {{ names = [\"httpdns.shop.example\"] }}\ngateway = \"203.0.113.1\"\nports = [{{ name = \"eth0\", segment = \"dc\", addresses = [\"203.0.113.55/24\"] }}]\n",
        vip_host("v10", "203.0.113.10"),
        vip_host("v11", "203.0.113.11"),
        vip_host("v20", "203.0.113.20"),
        hints.display()
    );
    let (lab, _dir, _) = resolver_lab_with(Servers::D11, Some(policy), &extra);
    let mut listeners: std::collections::HashMap<&str, std::process::Child> = ["v10", "v11", "v20"]
        .into_iter()
        .map(|n| {
            let c = lab
                .client()
                .command(n, &["nc", "-lk", "443"])
                .unwrap()
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("nc");
            (n, c)
        })
        .collect();
    let healthy = |v: &serde_json::Value, n: usize| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .filter(|x| x["state"] == "up" && x["checks_ok"].as_u64() >= Some(2))
                .count()
                == n
        })
    };
    lab.wait_show("gslb", "health", 20, |v| healthy(v, 3));
    let east = ["203.0.113.10", "203.0.113.11"].map(String::from).to_vec();
    let north = vec!["203.0.113.20".to_string()];
    // By ECS, and by the sender (k1, the carrier's) without it.
    assert_eq!(gslb_answer(&lab, Some("198.51.100.0/24")), east);
    assert_eq!(gslb_answer(&lab, Some("100.64.1.0/24")), north);
    assert_eq!(gslb_answer(&lab, None), east);
    // Through ldns: it sends k1's /24 as ECS.
    let (r, _) = dig_rd(&lab, &["@198.51.100.53", "www.shop.example", "A"]);
    assert_eq!(r.len(), 3, "{r:?}");
    let d = lab.show("gslb", "decisions");
    let last = d.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["from"].as_str(),
            last["client"].as_str(),
            last["asked_by"].as_str()
        ),
        (Some("ecs/24"), Some("198.51.100.0"), Some("198.51.100.53")),
        "{d}"
    );
    // HTTPDNS over HTTP and HTTPS: the sender's region, or ip='s; nothing for other names.
    let cacert = format!("/run/d11/{}/pki/root.pem", lab.prefix);
    let h = httpdns_get(&lab, "http://203.0.113.55/d?host=www.shop.example", None);
    assert_eq!(
        (h["host"].as_str(), ips(&h)),
        (Some("www.shop.example"), east.clone()),
        "{h}"
    );
    assert!(
        h["ttl"].as_u64() <= h["origin_ttl"].as_u64() && h["origin_ttl"] == 5,
        "{h}"
    );
    let h = httpdns_get(
        &lab,
        "https://203.0.113.55/d?host=www.shop.example&ip=100.64.1.1",
        Some(&cacert),
    );
    assert_eq!(ips(&h), north, "{h}");
    let h = httpdns_get(&lab, "http://203.0.113.55/d?host=www.example.org", None);
    assert_eq!(
        h,
        serde_json::json!({"host": "www.example.org", "ips": [], "ttl": 0, "origin_ttl": 0})
    );
    let bad = lab.exec_ok(
        "k1",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://203.0.113.55/d?host=a..b",
        ],
    );
    assert_eq!(bad, "400");
    // v11's listener stops: after `fall` (2) failed checks it leaves the answers.
    let mut stop = |n: &str| {
        let mut c = listeners.remove(n).unwrap();
        let _ = c.kill();
        let _ = c.wait();
    };
    stop("v11");
    let h = lab.wait_show("gslb", "health", 10, |v| v[1]["state"] == "down");
    assert_eq!(h[1]["vip"], "203.0.113.11");
    assert!(h[1]["checks_failed"].as_u64() >= Some(2), "{h}");
    assert_eq!(h[0]["state"], "up", "{h}");
    assert_eq!(gslb_answer(&lab, Some("198.51.100.0/24")), ["203.0.113.10"]);
    // The whole of east down: north's VIP, for east's clients too; HTTPDNS agrees.
    stop("v10");
    lab.wait_show("gslb", "health", 10, |v| v[0]["state"] == "down");
    assert_eq!(gslb_answer(&lab, Some("198.51.100.0/24")), north);
    let d = lab.show("gslb", "decisions");
    let why = d.as_array().unwrap().last().unwrap()["why"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("east has no healthy VIP: failover to north"),
        "{why}"
    );
    assert_eq!(lab.counter("gslb", "gslb_failovers"), 1);
    // HTTPDNS's cached east answer holds for 5 s (the TTL); then it asks again.
    let h = d11_lab::client::wait_until(std::time::Duration::from_secs(15), || {
        let h = httpdns_get(&lab, "http://203.0.113.55/d?host=www.shop.example", None);
        Ok((ips(&h) == north).then_some(h))
    })
    .unwrap_or_else(|e| panic!("HTTPDNS never answered north: {e:#}"));
    assert_eq!(ips(&h), north);
    for (_, mut c) in listeners {
        let _ = c.kill();
        let _ = c.wait();
    }
}
