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
        csv += &format!(
            "ue{i},mil,{},{K},opc,{OPC},8000,000000000020,9,dynamic\n",
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
    blocks
        .join("\n[[nodes]]\n")
        .replace(
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

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("d11-mobile-{name}-{}", std::process::id()))
}

fn attached(lab: &Lab, node: &str) -> Value {
    lab.wait_show(node, "ue", 30, |v| {
        v["state"] == "attached" || v["state"] == "rejected"
    })
}

/// One tshark field per row of matching packets.
fn rows(file: &std::path::Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    tshark_fields(file, filter, fields, &["-o", "gtp.dissect_tpdu_as:ETHERNET"])
}

#[test]
fn app_order_rides_the_tunnels_and_captures_match_hops_1_to_5() {
    let lab = Lab::up(&topology(
        &tmp("hops"),
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
    let app = lab.wait_show("ue", "app", 30, |v| v.as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(app[0]["ok"], true, "{app}");
    assert_eq!(app[0]["outcome"]["status"], 201, "{app}");
    let body: Value =
        serde_json::from_str(app[0]["outcome"]["body"].as_str().unwrap()).unwrap();
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
    let (enb_epc, sgw_epc, sgw_s5, pgw_s5) =
        (mac("enb", "epc"), mac("sgw", "epc"), mac("sgw", "s5"), mac("pgw", "s5"));
    let (pgw_sgi, nat_sgi, nat_car, r1_car) =
        (mac("pgw", "sgi"), mac("nat", "sgi"), mac("nat", "carrier"), mac("r1", "carrier"));
    let pcap = |seg: &str| lab.pcap(seg);
    let (radio, epc, s5, sgi, carrier) = (
        pcap("radio"),
        pcap("epc"),
        pcap("s5"),
        pcap("sgi"),
        pcap("carrier"),
    );
    // The lab goes down first: the captures are complete once their writers stopped.
    drop(lab);

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
        let bad = malformed(file, &["-o", "gtp.dissect_tpdu_as:ETHERNET"]);
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
        &["eth.src", "eth.dst", "ip.src", "ip.dst", "udp.dstport", "gtp.teid"],
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
        &["eth.src", "eth.dst", "ip.src", "ip.dst", "udp.dstport", "gtp.teid"],
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
        assert_eq!((r[0].as_str(), num(&r[1])), ("172.16.1.3,203.0.113.10", s1u_down.clone()));
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
    assert!(s5_types.contains(&"32".into()) && s5_types.contains(&"33".into()), "{s5_types:?}");
}
