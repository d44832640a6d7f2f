//! The mobile network of labs/mobile.toml: attach, tunnels, the carrier NAT, and what the
//! captures show on each hop (journey.md hops 1 to 5).

use d11_netns_tests::*;
use serde_json::Value;
use std::path::PathBuf;

const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn imsi(i: usize) -> String {
    format!("0010100000{i:05}")
}

/// labs/mobile.toml with its phone replaced by `ues` (node tables) and `n` subscribers.
fn topology(dir: &std::path::Path, n: usize, ues: &[String]) -> String {
    let db = dir.join("users.csv");
    let mut csv = String::from("# Name,Auth,IMSI,Key,OP_Type,OP/OPc,AMF,SQN,QCI,IP_alloc\n");
    for i in 1..=n {
        // The 50th subscriber has a static address.
        let ip = if i == 50 { "10.45.1.50" } else { "dynamic" };
        csv += &format!(
            "ue{i},mil,{},{K},opc,{OPC},8000,000000000020,9,{ip}\n",
            imsi(i)
        );
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&db, csv).unwrap();
    let base = std::fs::read_to_string(repo().join("labs/mobile.toml")).unwrap();
    let mut blocks: Vec<String> = base
        .split("\n[[nodes]]\n")
        .filter(|b| !b.contains("\nrole = \"ue\"") && !b.starts_with("name = \"ue\""))
        .map(str::to_string)
        .collect();
    blocks.extend(ues.iter().cloned());
    blocks.join("\n[[nodes]]\n").replace(
        "user_db_file = \"mobile-users.csv\"",
        &format!("user_db_file = \"{}\"", db.display()),
    )
}

fn ue(name: &str, i: usize, key: &str, mode: &str, pdn: &str, app: &str) -> String {
    format!(
        "name = \"{name}\"\nrole = \"ue\"\nports = [{{ name = \"radio\", segment = \"radio\" }}]\nimsi = \"{}\"\nkey = \"{key}\"\nopc = \"{OPC}\"\nmode = \"{mode}\"\npdn_type = \"{pdn}\"\n{app}\n",
        imsi(i)
    )
}

fn tmp(name: &str) -> LabDir {
    scratch(&format!("mobile-{name}"))
}

fn attached(lab: &Lab, node: &str) -> Value {
    lab.wait_show(node, "ue", 30, |v| {
        v["state"] == "attached" || v["state"] == "rejected"
    })
}

/// One tshark field per row of matching packets.
fn rows(file: &std::path::Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    tshark_fields(
        file,
        filter,
        fields,
        &["-o", "gtp.dissect_tpdu_as:ETHERNET"],
    )
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn app_order_rides_the_tunnels_and_captures_match_hops_1_to_5() {
    let dir = tmp("hops");
    let lab = Lab::up(&topology(
        &dir.0,
        1,
        &[ue(
            "ue",
            1,
            K,
            "app",
            "ethernet",
            r#"app = { url = "https://www.shop.example/purchaseOrder", resolve = ["www.shop.example:443:203.0.113.10"], data = '{"order": {"date": "2018-11-11 00:00:01", "className": "Rust in Action", "Author": "d11", "price": 11.11}}', headers = ["Idempotency-Key: hops-1"] }"#,
        )],
    ));
    let u = attached(&lab, "ue");
    assert_eq!(u["state"], "attached", "{u}");
    assert_eq!(
        (u["ip"].as_str(), u["mtu"].as_u64(), u["dns"].as_str()),
        (Some("10.45.0.2"), Some(1450), Some("198.51.100.53"))
    );
    let app = lab.wait_show("ue", "app", 30, |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(app[0]["ok"], true, "{app}");
    assert_eq!(app[0]["outcome"]["status"], 201, "{app}");
    let body: Value = serde_json::from_str(app[0]["outcome"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "created");

    let pgw = lab.show("pgw", "sessions");
    let sgw = lab.show("sgw", "sessions");
    let enb = lab.show("enb", "bearers");
    let mme = lab.show("mme", "contexts");
    assert_eq!(pgw[0]["imsi"], imsi(1));
    assert_eq!(pgw[0]["ue_ip"], "10.45.0.2");
    assert_eq!(sgw[0]["state"], "active");
    assert_eq!(mme[0]["state"], "attached");
    // The TEIDs agree end to end: each side's remote TEID is the other's local one.
    assert_eq!(sgw[0]["s5u_pgw_teid"], pgw[0]["s5u_pgw_teid"]);
    assert_eq!(pgw[0]["s5u_sgw_teid"], sgw[0]["s5u_sgw_teid"]);
    assert_eq!(enb[0]["sgw_teid"], sgw[0]["s1u_sgw_teid"]);
    assert_eq!(sgw[0]["s1u_enb_teid"], enb[0]["enb_teid"]);
    let s1u_up = sgw[0]["s1u_sgw_teid"].as_u64().unwrap().to_string();
    let s5u_up = pgw[0]["s5u_pgw_teid"].as_u64().unwrap().to_string();
    let s1u_down = enb[0]["enb_teid"].as_u64().unwrap().to_string();
    let nat = lab.show("nat", "mappings");
    let ext = nat[0]["external"].as_str().unwrap().to_string();
    let (ext_ip, ext_port) = ext.split_once(':').unwrap();

    let mac = |n: &str, p: &str| lab.mac(n, p);
    let (ue_mac, gw_mac) = (mac("ue", "radio"), mac("pgw", "ues"));
    let (enb_epc, sgw_epc, sgw_s5, pgw_s5) = (
        mac("enb", "epc"),
        mac("sgw", "epc"),
        mac("sgw", "s5"),
        mac("pgw", "s5"),
    );
    let (pgw_sgi, nat_sgi, nat_car, r1_car) = (
        mac("pgw", "sgi"),
        mac("nat", "sgi"),
        mac("nat", "carrier"),
        mac("r1", "carrier"),
    );
    let pcap = |seg: &str| lab.pcap(seg);
    let (radio, epc, s5, sgi, carrier) = (
        pcap("radio"),
        pcap("epc"),
        pcap("s5"),
        pcap("sgi"),
        pcap("carrier"),
    );
    // The lab goes down first: the captures are complete once their writers stopped.
    let _files = lab.stop();

    // Every uplink TCP segment with payload towards 443 must show the hop's headers.
    let up = "tcp.dstport == 443 && tcp.len > 0";
    let check = |file: &PathBuf, fields: &[&str], want: &[&str]| {
        let r = rows(file, up, fields);
        assert!(!r.is_empty(), "{}: nothing matches {up}", file.display());
        for row in &r {
            let got: Vec<String> = row
                .iter()
                .map(|f| f.split(',').map(num).collect::<Vec<_>>().join(","))
                .collect();
            assert_eq!(got, want, "{}: {fields:?}", file.display());
        }
        // With every IPv4, UDP and TCP checksum checked: the SGW and PGW rewrite G-PDUs
        // where they lie and update the UDP checksum incrementally.
        let bad = malformed(
            file,
            &[
                "-o",
                "gtp.dissect_tpdu_as:ETHERNET",
                "-o",
                "ip.check_checksum:TRUE",
                "-o",
                "udp.check_checksum:TRUE",
                "-o",
                "tcp.check_checksum:TRUE",
            ],
        );
        assert!(bad.is_empty(), "{}: {bad:?}", file.display());
    };
    // Hop 1, radio: the UE's own frame, to the MAC of its gateway (the PGW's tunnel end).
    check(
        &radio,
        &["eth.src", "eth.dst", "ip.src", "ip.dst"],
        &[&ue_mac, &gw_mac, "10.45.0.2", "203.0.113.10"],
    );
    // Hop 2, epc: eNodeB to SGW, GTP-U with the SGW's S1-U TEID, the UE's frame inside.
    let outer_inner = |a: &str, b: &str| format!("{a},{b}");
    check(
        &epc,
        &[
            "eth.src",
            "eth.dst",
            "ip.src",
            "ip.dst",
            "udp.dstport",
            "gtp.teid",
        ],
        &[
            &outer_inner(&enb_epc, &ue_mac),
            &outer_inner(&sgw_epc, &gw_mac),
            "172.16.1.2,10.45.0.2",
            "172.16.1.3,203.0.113.10",
            "2152",
            &s1u_up,
        ],
    );
    // Hop 3, s5: SGW to PGW with the PGW's S5 TEID.
    check(
        &s5,
        &[
            "eth.src",
            "eth.dst",
            "ip.src",
            "ip.dst",
            "udp.dstport",
            "gtp.teid",
        ],
        &[
            &outer_inner(&sgw_s5, &ue_mac),
            &outer_inner(&pgw_s5, &gw_mac),
            "172.16.5.3,10.45.0.2",
            "172.16.5.4,203.0.113.10",
            "2152",
            &s5u_up,
        ],
    );
    // Hop 4, sgi: out of the tunnel, routed by the PGW to the NAT.
    check(
        &sgi,
        &["eth.src", "eth.dst", "ip.src", "ip.dst"],
        &[&pgw_sgi, &nat_sgi, "10.45.0.2", "203.0.113.10"],
    );
    // Hop 5, carrier: translated to the NAT's public address and port.
    check(
        &carrier,
        &["eth.src", "eth.dst", "ip.src", "ip.dst", "tcp.srcport"],
        &[&nat_car, &r1_car, ext_ip, "203.0.113.10", ext_port],
    );
    // Downlink on epc: the SGW to the eNodeB with the eNodeB's TEID.
    let down = rows(&epc, "tcp.srcport == 443", &["ip.src", "gtp.teid"]);
    assert!(!down.is_empty());
    for r in &down {
        assert_eq!(
            (r[0].as_str(), num(&r[1])),
            ("172.16.1.3,203.0.113.10", s1u_down.clone())
        );
    }
    // Session set-up on epc: Create Session, Modify Bearer, both answered; nothing malformed.
    let types: Vec<String> = tshark_fields(&epc, "gtpv2", &["gtpv2.message_type"], &[])
        .into_iter()
        .map(|r| num(&r[0]))
        .collect();
    for t in ["32", "33", "34", "35"] {
        assert!(types.iter().any(|x| x == t), "no GTPv2 type {t}: {types:?}");
    }
    let s5_types: Vec<String> = tshark_fields(&s5, "gtpv2", &["gtpv2.message_type"], &[])
        .into_iter()
        .map(|r| num(&r[0]))
        .collect();
    assert!(
        s5_types.contains(&"32".into()) && s5_types.contains(&"33".into()),
        "{s5_types:?}"
    );
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn modem_mode_runs_curl_and_traceroute_on_the_phone() {
    let dir = tmp("modem");
    let lab = Lab::up(&topology(
        &dir.0,
        2,
        &[
            ue("ue", 1, K, "modem", "ethernet", ""),
            ue("ue4", 2, K, "modem", "ipv4", ""),
        ],
    ));
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    // Big enough for full-sized segments: the MSS the tunnels allow must hold both ways.
    let page: String = (0..4000).map(|i| format!("line {i:05}\n")).collect();
    std::fs::write(www.join("page.txt"), &page).unwrap();
    let mut server = lab.openssl_www("srv", &www);
    let pki = format!("/run/d11/{}/pki", lab.prefix);
    let mut ips = Vec::new();
    for (node, mtu) in [("ue", "1450"), ("ue4", "1464")] {
        let u = attached(&lab, node);
        assert_eq!(u["state"], "attached", "{u}");
        // Both attach at once: which gets .2 and which .3 is the order they reach the PGW.
        let ip = u["ip"].as_str().unwrap().to_string();
        assert!(ip == "10.45.0.2" || ip == "10.45.0.3", "{u}");
        ips.push(ip.clone());
        let link = lab.exec_ok(node, &["ip", "-o", "addr", "show", "dev", "uesim0"]);
        assert!(link.contains(&format!("{ip}/16")), "{link}");
        let l = lab.exec_ok(node, &["ip", "-o", "link", "show", "dev", "uesim0"]);
        assert!(l.contains(&format!("mtu {mtu}")), "{l}");
        // The kernel's resolver in the phone's namespace asks the PDN session's DNS server.
        let conf = lab.exec_ok(node, &["cat", "/etc/resolv.conf"]);
        assert!(conf.contains("nameserver 198.51.100.53\n"), "{conf}");
        let got = lab.exec_ok(
            node,
            &[
                "curl",
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                &format!("{pki}/root.pem"),
                "--resolve",
                "www.srv.example:443:203.0.113.20",
                "https://www.srv.example/page.txt",
            ],
        );
        assert!(got == page, "{node}: curl got {} bytes", got.len());
    }
    assert_ne!(ips[0], ips[1]);
    // Both pages went down the tunnels at once (one copy, no frame to the UEs' port between):
    // at least a full-sized segment's worth of G-PDUs per page.
    let at_once = lab.counter("pgw", "encapsulated_at_once");
    assert!(at_once >= 2 * (page.len() / 1450) as u64, "{at_once}");
    let _ = server.kill();
    let _ = server.wait();
    // Traceroute from the phone: the PGW (its gateway), the NAT, the router, the server.
    let (hops, out) = lab.traceroute("ue", "203.0.113.20");
    assert_eq!(
        hops,
        ["10.45.0.1", "172.16.9.1", "198.51.100.1", "203.0.113.20"],
        "{out}"
    );
    assert!(lab.counter("pgw", "mss_clamped") >= 2);
    let pgw = lab.show("pgw", "sessions");
    assert_eq!(pgw.as_array().unwrap().len(), 2, "{pgw}");
    let ue4 = pgw
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["imsi"] == imsi(2))
        .unwrap();
    assert_eq!(ue4["pdn_type"], "ipv4", "{pgw}");
    // A phone switched off detaches: Delete Session through SGW and PGW, the eNodeB's bearer
    // released; switched on again, it attaches anew.
    lab.restart("ue4");
    lab.wait_show("pgw", "counters", 30, |c| c["sessions_deleted"] == 1);
    assert_eq!(lab.counter("sgw", "sessions_deleted"), 1);
    lab.wait_show("enb", "counters", 30, |c| c["bearers_released"] == 1);
    assert_eq!(lab.show("mme", "mme")["detaches"], 1);
    assert_eq!(attached(&lab, "ue4")["state"], "attached");
    lab.wait_show("pgw", "sessions", 30, |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    });
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn wrong_key_is_rejected_and_bad_gtp_is_answered_or_counted() {
    let probe = "name = \"probe\"\nrole = \"kernel\"\nports = [{ name = \"eth0\", segment = \"epc\", addresses = [\"172.16.1.9/24\"] }]\n".to_string();
    let dir = tmp("reject");
    let lab = Lab::up(&topology(
        &dir.0,
        3,
        &[
            ue(
                "ue",
                1,
                K,
                "app",
                "ethernet",
                r#"app = { url = "https://www.shop.example/health", resolve = ["www.shop.example:443:203.0.113.10"] }"#,
            ),
            ue(
                "bad",
                2,
                "00112233445566778899aabbccddeeff",
                "app",
                "ethernet",
                "",
            ),
            // A USIM ahead of the HSS (SQN 4096 seen, the HSS at 32): resynchronisation.
            ue("ahead", 3, K, "app", "ipv4", "sqn = 4096"),
            probe,
        ],
    ));
    // The wrong key: the phone finds the network's AUTN does not verify (MAC failure), and the
    // MME rejects the attach.
    let b = attached(&lab, "bad");
    assert_eq!(
        (b["state"].as_str(), b["reject_cause"].as_str()),
        (Some("rejected"), Some("mac-failure")),
        "{b}"
    );
    assert_eq!(lab.counter("bad", "auth_mac_failures"), 1);
    let m = lab.show("mme", "mme");
    assert_eq!(
        (
            m["attach_rejected"].as_u64(),
            m["reject_mac_failure"].as_u64()
        ),
        (Some(1), Some(1)),
        "{m}"
    );
    // The USIM ahead of the HSS: sync failure with AUTS, the HSS resynchronises, the second
    // challenge is fresh and the attach goes through.
    let a = attached(&lab, "ahead");
    assert_eq!(a["state"], "attached", "{a}");
    assert_eq!(lab.counter("ahead", "auth_sync_failures"), 1);
    assert_eq!(lab.counter("ahead", "auth_responses_sent"), 1);
    assert_eq!(lab.show("mme", "mme")["resyncs"], 1);
    assert_eq!(lab.show("hss", "hss")["resync_accepted"], 1);
    // GTPv2-C Echo from the MME to the SGW, answered with the SGW's Recovery.
    assert!(lab.show("mme", "mme")["echo_answered"].as_u64() >= Some(1));
    let ctx = lab.show("mme", "contexts");
    assert!(
        ctx.as_array()
            .unwrap()
            .iter()
            .any(|c| c["imsi"] == imsi(2) && c["state"] == "rejected"),
        "{ctx}"
    );

    // GTP-U to the SGW from a host that is no eNodeB.
    let gpdu_unknown: &[u8] = &[0x30, 0xff, 0, 4, 0xde, 0xad, 0xbe, 0xef, 0x45, 0, 0, 0];
    let bad_length: &[u8] = &[0x30, 0xff, 0, 0x40, 0, 0, 0, 1, 0x45, 0, 0, 0];
    let truncated_ext: &[u8] = &[0x34, 0xff, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0x85, 2, 0];
    let wrong_version: &[u8] = &[0x50, 0xff, 0, 4, 0, 0, 0, 1, 0x45, 0, 0, 0];
    let bad_gtpc: &[u8] = &[0x48, 0x20, 0, 0xff, 0, 0, 0, 0, 0, 0, 1, 0];
    let echo: &[u8] = &[0x32, 1, 0, 4, 0, 0, 0, 0, 0, 7, 0, 0];
    for p in [gpdu_unknown, bad_length, truncated_ext, wrong_version] {
        lab.udp_send("probe", "172.16.1.3", 2152, p);
    }
    lab.udp_send("probe", "172.16.1.3", 2123, bad_gtpc);
    lab.udp_send("probe", "172.16.1.3", 2152, echo);
    // A G-PDU for the good phone's own tunnel, from the probe (no eNodeB of that tunnel): a
    // UDP packet to the server inside, which must not come out of the PGW.
    let sessions = lab.show("sgw", "sessions");
    let teid = sessions
        .as_array()
        .and_then(|a| a.iter().find(|s| s["imsi"] == imsi(1)))
        .and_then(|s| s["s1u_sgw_teid"].as_u64())
        .unwrap_or_else(|| panic!("the phone's S1-U TEID: {sessions}")) as u32;
    let mut spoofed = vec![0x30, 0xff, 0, 28];
    spoofed.extend_from_slice(&teid.to_be_bytes());
    let mut inner = [0u8; 28];
    inner[0] = 0x45;
    inner[3] = 28;
    inner[8] = 64;
    inner[9] = 17;
    inner[12..16].copy_from_slice(&[10, 45, 0, 2]);
    inner[16..20].copy_from_slice(&[203, 0, 113, 10]);
    inner[20..22].copy_from_slice(&9u16.to_be_bytes());
    inner[22..24].copy_from_slice(&9u16.to_be_bytes());
    inner[25] = 8;
    spoofed.extend_from_slice(&inner);
    let up = lab.counter("sgw", "uplink_packets");
    lab.udp_send("probe", "172.16.1.3", 2152, &spoofed);
    let c = lab.show("sgw", "counters");
    assert_eq!(c["s1u_rx_wrong_peer"], 1, "{c}");
    assert_eq!(c["uplink_packets"], up, "{c}");
    assert_eq!(c["s1u_rx_unknown_teid"], 1, "{c}");
    assert_eq!(c["s1u_tx_error_indication"], 1, "{c}");
    assert!(c["s1u_rx_malformed"].as_u64().unwrap() >= 3, "{c}");
    assert_eq!(c["gtpc_malformed"], 1, "{c}");
    assert_eq!(c["s1u_tx_echo_response"], 1, "{c}");
    // The good phone still gets through.
    let u = attached(&lab, "ue");
    assert_eq!(u["state"], "attached");
    let app = lab.wait_show("ue", "app", 30, |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(app[0]["outcome"]["status"], 200, "{app}");
    let epc = lab.pcap("epc");
    let _files = lab.stop();
    // Error Indication (type 26) with TEID 0 back to the probe; Echo Response with Recovery.
    let ei = tshark_fields(
        &epc,
        "gtp.message == 26 && !icmp",
        &["ip.src", "ip.dst", "gtp.teid"],
        &[],
    );
    assert_eq!(ei.len(), 1, "{ei:?}");
    assert_eq!(
        (ei[0][0].as_str(), ei[0][1].as_str(), num(&ei[0][2])),
        ("172.16.1.3", "172.16.1.9", "0".into())
    );
    let er = tshark_fields(
        &epc,
        "gtp.message == 2 && !icmp",
        &["ip.dst", "gtp.recovery"],
        &[],
    );
    assert_eq!(er.len(), 1, "{er:?}");
    assert_eq!(er[0][0], "172.16.1.9");
    // Nothing malformed but what the probe sent on purpose.
    let bad: Vec<String> = malformed(&epc, &["-o", "gtp.dissect_tpdu_as:ETHERNET"])
        .into_iter()
        .filter(|l| !l.contains("172.16.1.9 →"))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn fifty_phones_attach_each_with_its_own_address_and_tunnels() {
    const N: usize = 50;
    let ues: Vec<String> = (1..=N)
        .map(|i| {
            let pdn = if i % 2 == 0 { "ipv4" } else { "ethernet" };
            ue(
                &format!("ue{i}"),
                i,
                K,
                "app",
                pdn,
                r#"app = { url = "https://www.shop.example/health", resolve = ["www.shop.example:443:203.0.113.10"], timeout_s = 30 }"#,
            )
        })
        .collect();
    let dir = tmp("fifty");
    let lab = Lab::up(&topology(&dir.0, N, &ues));
    for i in 1..=N {
        let node = format!("ue{i}");
        lab.wait_show(&node, "ue", 120, |v| v["state"] == "attached");
        let app = lab.wait_show(&node, "app", 120, |v| {
            v.as_array().is_some_and(|a| !a.is_empty())
        });
        assert_eq!(app[0]["outcome"]["status"], 200, "{node}: {app}");
    }
    let pgw = lab.show("pgw", "sessions");
    let s = pgw.as_array().unwrap();
    assert_eq!(s.len(), N, "{pgw}");
    let distinct = |k: &str| {
        let mut v: Vec<String> = s.iter().map(|x| x[k].to_string()).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    for k in [
        "imsi",
        "ue_ip",
        "s5u_pgw_teid",
        "s5u_sgw_teid",
        "s5c_pgw_teid",
    ] {
        assert_eq!(distinct(k), N, "{k} not distinct");
    }
    assert_eq!(lab.show("enb", "bearers").as_array().unwrap().len(), N);
    // The subscriber with a static address (IP_alloc in the HSS's file) got it.
    assert_eq!(lab.show("ue50", "ue")["ip"], "10.45.1.50");
    assert_eq!(lab.counter("mme", "attach_accepted") as usize, N);
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn echo_supervises_paths_and_a_restart_shows_in_the_recovery_counter() {
    let dir = tmp("echo");
    let topo = topology(&dir.0, 1, &[ue("ue", 1, K, "app", "ethernet", "")]);
    let topo = ["enb", "sgw", "pgw"].iter().fold(topo, |t, r| {
        t.replace(
            &format!("role = \"{r}\"\n"),
            &format!("role = \"{r}\"\necho_interval_s = 1\n"),
        )
    });
    let lab = Lab::up(&topo);
    assert_eq!(attached(&lab, "ue")["state"], "attached");
    let peer = |v: &Value, ip: &str| -> Value {
        v.as_array()
            .and_then(|a| a.iter().find(|p| p["peer"] == ip).cloned())
            .unwrap_or(Value::Null)
    };
    // The SGW watches both its paths (to the eNodeB and to the PGW) and both answer.
    let paths = lab.wait_show("sgw", "paths", 30, |v| {
        peer(v, "172.16.1.2")["state"] == "up" && peer(v, "172.16.5.4")["state"] == "up"
    });
    let before = peer(&paths, "172.16.5.4")["peer_recovery"]
        .as_u64()
        .unwrap();
    lab.restart("pgw");
    // The PGW came back with a Recovery one higher; the SGW counts a peer restart.
    let paths = lab.wait_show("sgw", "paths", 30, |v| {
        peer(v, "172.16.5.4")["peer_restarts"] == 1
    });
    assert_eq!(
        peer(&paths, "172.16.5.4")["peer_recovery"].as_u64(),
        Some(before + 1)
    );
    assert_eq!(lab.counter("sgw", "peer_restarts"), 1);
    // The restarted PGW lost the session; the SGW deleted its copy and told the MME, which
    // had the phone attach again: one session at the PGW, the new one. The eNodeB's path to
    // the SGW stayed up.
    lab.wait_show("pgw", "sessions", 30, |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(lab.counter("sgw", "sessions_deleted_peer_restart"), 1);
    assert_eq!(peer(&lab.show("enb", "paths"), "172.16.1.3")["state"], "up");
}

/// `lab restart pgw` while the phone places orders: the SGW sees the PGW's Recovery grow on
/// S5-C (GTPv2-C Echo), deletes the session the PGW lost and sends the MME a PGW Restart
/// Notification; the MME detaches the phone with "re-attach required"; the phone attaches
/// again and its orders go on (the one cut is placed again with its Idempotency-Key).
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_pgw_restart_detaches_the_phone_which_attaches_again_and_orders_on() {
    let app = r#"app = { url = "https://www.shop.example/purchaseOrder", resolve = ["www.shop.example:443:203.0.113.10"], data = '{"order": {"date": "2018-11-11 00:00:01", "className": "Rust in Action", "Author": "d11", "price": 11.11}}', headers = ["Idempotency-Key: restart-{n}"], count = 150, retries = 3, timeout_s = 5 }"#;
    let dir = tmp("pgw-restart");
    let topo = topology(&dir.0, 1, &[ue("ue", 1, K, "app", "ethernet", app)]);
    let topo = ["enb", "sgw", "pgw"].iter().fold(topo, |t, r| {
        t.replace(
            &format!("role = \"{r}\"\n"),
            &format!("role = \"{r}\"\necho_interval_s = 1\n"),
        )
    });
    let lab = Lab::up(&topo);
    assert_eq!(attached(&lab, "ue")["state"], "attached");
    // A few orders are through (and the SGW has answered Echoes from the PGW on S5-C).
    let before = lab.wait_show("ue", "app_summary", 60, |v| v["ok"].as_u64() >= Some(3))["ok"]
        .as_u64()
        .unwrap();
    lab.restart("pgw");
    // Orders go on after the restart.
    lab.wait_show("ue", "app_summary", 60, |v| {
        v["ok"].as_u64() >= Some(before + 10)
    });
    let paths = lab.show("sgw", "control_paths");
    assert!(
        paths.as_array().is_some_and(|a| a
            .iter()
            .any(|p| p["peer"] == "172.16.5.4" && p["peer_restarts"] == 1)),
        "{paths}"
    );
    // SGW: the restart seen, the session deleted, the MME told and answering.
    let c = lab.wait_show("sgw", "counters", 30, |c| {
        c["pgw_restart_notifications_acked"] == 1
    });
    assert_eq!(
        (&c["pgw_restarts"], &c["sessions_deleted_peer_restart"]),
        (&1.into(), &1.into()),
        "{c}"
    );
    assert_eq!(lab.counter("mme", "network_detaches"), 1);
    // The phone attached again, with a session at the restarted PGW.
    lab.wait_show("ue", "counters", 30, |c| c["attach_accepts"] == 2);
    assert_eq!(lab.counter("ue", "network_detaches"), 1);
    assert_eq!(attached(&lab, "ue")["state"], "attached");
    assert_eq!(lab.show("pgw", "sessions").as_array().unwrap().len(), 1);
    // Every order went through, the ones after the restart too.
    let s = lab.wait_show("ue", "app_summary", 180, |v| v["requests"] == 150);
    assert_eq!(s["ok"], 150, "{}", lab.show("ue", "app"));
    let epc = lab.pcap("epc");
    let _files = lab.stop();
    // On S11: the notification and its acknowledgment, decoded by tshark.
    let prn = tshark_fields(
        &epc,
        "gtpv2.message_type == 179 || gtpv2.message_type == 180",
        &["gtpv2.message_type", "ip.src"],
        &[],
    );
    assert!(
        prn.iter().any(|r| r[0] == "179" && r[1] == "172.16.1.3")
            && prn.iter().any(|r| r[0] == "180" && r[1] == "172.16.1.5"),
        "{prn:?}"
    );
    let bad = malformed(&epc, &[]);
    assert!(bad.is_empty(), "{bad:?}");
}
