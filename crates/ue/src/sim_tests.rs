//! The attach, end to end, in memory under a virtual clock: the phone, the eNodeB, the MME
//! and HSS (tasks on our stack), the SGW and PGW, joined by in-memory segments
//! (`d11_element::sim`), on a tokio runtime whose clock is paused, so seconds of timers take
//! milliseconds and every run is the same.

use super::*;
use d11_element::sim::{paused, NodeId, Sim};
use std::time::Duration;

const IMSI: &str = "001010000000001";
const KEY: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

fn cfg<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The mobile network of labs/mobile.toml, without what lies beyond the PGW. `key` is the
/// phone's USIM key; `sgw_plugged`: whether the SGW is on the epc segment.
struct Mobile {
    sim: Sim,
    ue: NodeId,
    mme: NodeId,
    sgw: NodeId,
    /// Every node by name.
    names: Vec<(&'static str, NodeId)>,
    /// A host of ours on the epc segment that is no peer of anyone (172.16.1.66).
    rogue: Stack,
    _dir: PathBuf,
}

impl Mobile {
    fn node(&self, name: &str) -> NodeId {
        self.names.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

impl Drop for Mobile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn mobile(key: &str, sgw_plugged: bool) -> Mobile {
    // One directory per network (tests run in parallel; each removes its own).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("d11-ue-sim-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("users.csv");
    std::fs::write(
        &db,
        format!("ue1,mil,{IMSI},{KEY},opc,{OPC},8000,000000000020,9,dynamic\n"),
    )
    .unwrap();
    let enb = d11_epc::enb::EnbLogic::new(
        &cfg(json!({"name": "enb", "mme": "172.16.1.5", "ports": [
            {"name": "radio"}, {"name": "epc", "addresses": ["172.16.1.2/24"]}]})),
        1,
    )
    .unwrap();
    let sgw = d11_epc::sgw::SgwLogic::new(
        &cfg(json!({"name": "sgw", "ports": [
            {"name": "epc", "addresses": ["172.16.1.3/24"]},
            {"name": "s5", "addresses": ["172.16.5.3/24"]}]})),
        1,
    )
    .unwrap();
    let pgw = d11_epc::pgw::PgwLogic::new(
        &cfg(json!({"name": "pgw", "ue_pool": "10.45.0.0/16", "ports": [
            {"name": "s5", "addresses": ["172.16.5.4/24"]},
            {"name": "sgi", "addresses": ["172.16.9.4/24"]}]})),
        1,
    )
    .unwrap();
    let (hss, hss_app) = d11_hss::build(&cfg(json!({"name": "hss", "user_db_file": db,
        "ports": [{"name": "epc", "addresses": ["172.16.1.6/24"]}]})))
    .unwrap();
    let (mme, mme_app) = d11_mme::build(
        &cfg(
            json!({"name": "mme", "hss": "172.16.1.6", "sgw": "172.16.1.3",
            "pgw": "172.16.5.4", "ports": [{"name": "epc", "addresses": ["172.16.1.5/24"]}]}),
        ),
        1,
    )
    .unwrap();
    let (ue, _sh, _attached) = Ue::new(
        &cfg(json!({"name": "ue", "imsi": IMSI, "key": key, "opc": OPC,
            "pdn_type": "ethernet", "mode": "app", "ports": [{"name": "radio"}]})),
        None,
    )
    .unwrap();
    for app in [hss_app, mme_app].into_iter().flatten() {
        tokio::task::spawn_local(app);
    }
    let mut sim = Sim::new();
    let (enb, sgw, pgw) = (sim.add(enb), sim.add(sgw), sim.add(pgw));
    let (hss, mme, ue) = (sim.add(hss), sim.add(mme), sim.add(ue));
    sim.segment(&[(ue, 0), (enb, 0)]);
    let rogue_cfg: StackConfig = cfg(json!({"name": "rogue",
        "ports": [{"name": "eth0", "addresses": ["172.16.1.66/24"]}]}));
    let (rogue, rogue_el) = Stack::new(&rogue_cfg, "rogue").unwrap();
    let r = sim.add(rogue_el);
    let mut epc = vec![(enb, 1), (mme, 0), (hss, 0), (r, 0)];
    if sgw_plugged {
        epc.push((sgw, 0));
    }
    sim.segment(&epc);
    sim.segment(&[(sgw, 1), (pgw, 0)]);
    let names = vec![
        ("ue", ue),
        ("enb", enb),
        ("mme", mme),
        ("hss", hss),
        ("sgw", sgw),
        ("pgw", pgw),
    ];
    Mobile {
        sim,
        ue,
        mme,
        sgw,
        names,
        rogue,
        _dir: dir,
    }
}

#[test]
fn the_phone_attaches_and_gets_its_address() {
    paused(async {
        let mut m = mobile(KEY, true);
        m.sim.run_async_for(Duration::from_secs(5)).await;
        let ue = m.sim.show(m.ue, "ue");
        assert_eq!(ue["state"], "attached", "{ue}");
        assert_eq!(ue["ip"], "10.45.0.2", "{ue}");
        assert_eq!(ue["gateway"], "10.45.0.1", "{ue}");
        assert_eq!(m.sim.counter(m.mme, "attach_accepted"), 1);
        assert_eq!(m.sim.counter(m.sgw, "sessions_created"), 1);
        // The whole attach took virtual milliseconds (ARP, EPS-AKA, GTPv2-C, bearers).
        let ms = ue["attach_ms"].as_f64().unwrap();
        assert!(ms < 100.0, "{ms} ms");
    });
}

#[test]
fn a_wrong_key_is_a_mac_failure_and_final() {
    paused(async {
        let mut m = mobile("00000000000000000000000000000000", true);
        m.sim.run_async_for(Duration::from_secs(30)).await;
        let ue = m.sim.show(m.ue, "ue");
        assert_eq!(ue["state"], "rejected", "{ue}");
        assert_eq!(ue["reject_cause"], "mac-failure", "{ue}");
        // Final: one Attach Request, not one every few seconds.
        assert_eq!(m.sim.counter(m.ue, "attach_requests_sent"), 1);
    });
}

#[test]
fn an_sgw_that_never_answers_is_asked_four_times_then_the_attach_is_refused() {
    paused(async {
        let mut m = mobile(KEY, false);
        // T3 is 1 s, N3 3: the MME's first Echo Request and the Create Session Request each
        // go four times in 4 s, then are given up, and the attach is refused; the phone
        // tries again after attach_retry_s (5 s).
        m.sim.run_async_for(Duration::from_millis(3900)).await;
        assert_eq!(m.sim.counter(m.mme, "gtpc_retransmissions"), 6);
        assert_eq!(m.sim.counter(m.mme, "gtpc_timeouts"), 0);
        assert_eq!(m.sim.show(m.ue, "ue")["state"], "attaching");
        m.sim.run_async_for(Duration::from_millis(600)).await;
        assert_eq!(m.sim.counter(m.mme, "gtpc_retransmissions"), 6);
        assert_eq!(m.sim.counter(m.mme, "gtpc_timeouts"), 2);
        let ue = m.sim.show(m.ue, "ue");
        assert_eq!(ue["state"], "rejected", "{ue}");
    });
}

#[test]
fn a_pgw_restart_notification_from_anyone_but_the_sgw_detaches_nobody() {
    paused(async {
        let mut m = mobile(KEY, true);
        m.sim.run_async_for(Duration::from_secs(2)).await;
        assert_eq!(m.sim.show(m.ue, "ue")["state"], "attached");
        // A notification naming the real PGW and SGW, sent from another address.
        use d11_wire::gtpv2::message::{Message, PgwRestartNotification};
        let prn = PgwRestartNotification {
            pgw: Ipv4Addr::new(172, 16, 5, 4),
            sgw: Ipv4Addr::new(172, 16, 1, 3),
        }
        .emit(0, 1);
        let sock = m.rogue.udp_bind(2123).unwrap();
        tokio::task::spawn_local(async move {
            let mme = std::net::SocketAddrV4::new(Ipv4Addr::new(172, 16, 1, 5), 2123);
            sock.send_to(&prn, mme).await.unwrap();
        });
        m.sim.run_async_for(Duration::from_secs(2)).await;
        assert_eq!(m.sim.counter(m.mme, "gtpc_untrusted"), 1);
        assert_eq!(m.sim.counter(m.mme, "network_detaches"), 0);
        assert_eq!(m.sim.show(m.ue, "ue")["state"], "attached");
    });
}

/// What the journey's rows may look up, answered by the elements of a simulation.
struct SimLab<'a> {
    sim: &'a Sim,
    nodes: Vec<(&'static str, NodeId)>,
}

impl SimLab<'_> {
    fn id(&self, node: &str) -> anyhow::Result<NodeId> {
        self.nodes
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, id)| *id)
            .ok_or_else(|| anyhow::anyhow!("no node {node}"))
    }

    fn port(&self, node: &str, port: &str) -> anyhow::Result<Value> {
        let ifs = self.sim.show(self.id(node)?, "interfaces");
        ifs.as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == port).cloned())
            .ok_or_else(|| anyhow::anyhow!("{node} has no port {port}: {ifs}"))
    }
}

impl d11_journey::plan::LabView for SimLab<'_> {
    fn mac(&self, node: &str, port: &str) -> anyhow::Result<String> {
        Ok(self.port(node, port)?["mac"].as_str().unwrap_or("").into())
    }
    fn addr(&self, node: &str, port: &str) -> anyhow::Result<String> {
        let p = self.port(node, port)?;
        let a = p["addresses"][0].as_str().unwrap_or("");
        Ok(a.split('/').next().unwrap_or(a).into())
    }
    fn default_ttl(&self, node: &str) -> anyhow::Result<u8> {
        let v = self.sim.show(self.id(node)?, "interfaces");
        Ok(v[0]["default_ttl"].as_u64().unwrap_or(0) as u8)
    }
    fn segment(&self, node: &str) -> anyhow::Result<String> {
        anyhow::bail!("{node}: segments are numbered in a simulation")
    }
    fn show(&self, node: &str, table: &str) -> anyhow::Result<Value> {
        Ok(self.sim.show(self.id(node)?, table))
    }
}

/// The attach's GTPv2-C messages and the phone's first packet in the tunnels, as journey
/// rows (the format of labs/journeys/).
const ATTACH_JOURNEY: &str = r#"
traffic = "order"
[let]
csr = "gtpv2.message_type == 32"
csresp = "gtpv2.message_type == 33"
[[hop]]
n = "s11"
segment = "epc"
from = "mme"
to = "sgw"
frame = "{csr}"
[hop.expect]
"eth.src" = "{mac mme epc}"
"eth.dst" = "{mac sgw epc}"
"ip.src" = "{addr mme epc}"
"ip.dst" = "{addr sgw epc}"
"udp.dstport" = "2123"
"e212.imsi" = "{imsi}"
"gtpv2.apn" = "internet"
[[hop]]
n = "s5"
segment = "s5"
from = "sgw"
to = "pgw"
frame = "{csr}"
[hop.expect]
"eth.src" = "{mac sgw s5}"
"eth.dst" = "{mac pgw s5}"
"ip.src" = "{addr sgw s5}"
"e212.imsi" = "{imsi}"
[[hop]]
n = "s5'"
segment = "s5"
from = "pgw"
to = "sgw"
frame = "{csresp}"
[hop.expect]
"eth.src" = "{mac pgw s5}"
# Request accepted, in the message and in the bearer context.
"gtpv2.cause" = ["16", "16"]
"gtpv2.pdn_addr_and_prefix.ipv4" = "{ue_ip}"
"#;

/// The journey's checks over a capture the harness made: the attach in virtual time, each
/// segment's frames written as pcapng, rows of data resolved from the elements' tables, and
/// tshark reading the frames back, as `d11 journey` does on a real lab. A wrong expectation
/// is reported as a mismatch.
#[test]
fn the_journeys_rows_check_a_capture_of_the_attach_in_virtual_time() {
    if std::process::Command::new("tshark")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("skipped: tshark is not installed (sudo ./scripts/test installs it)");
        return;
    }
    paused(async {
        let mut m = mobile(KEY, true);
        m.sim.run_async_for(Duration::from_secs(5)).await;
        let ue = m.sim.show(m.ue, "ue");
        assert_eq!(ue["state"], "attached", "{ue}");
        // The segments of mobile(): 0 radio, 1 epc, 2 s5.
        let pcap = m._dir.join("pcap");
        std::fs::create_dir_all(&pcap).unwrap();
        let t0 = m.sim.wire.first().map(|s| s.at).unwrap();
        for (i, name) in ["radio", "epc", "s5"].into_iter().enumerate() {
            let f = std::fs::File::create(pcap.join(format!("{name}.pcapng"))).unwrap();
            let mut sink = d11_netdev::pcap::PcapngSink::new(f, name, None).unwrap();
            for s in m.sim.wire.iter().filter(|s| s.segment == i) {
                let ts = Duration::from_secs(1_541_894_400) + (s.at - t0);
                sink.write_at(ts, &s.frame, d11_netdev::pcap::Direction::Unknown, None)
                    .unwrap();
            }
            sink.flush().unwrap();
        }
        let (sgw, mme) = (m.sgw, m.mme);
        let nodes = m.names.clone();
        let lab = SimLab { sim: &m.sim, nodes };
        let mut facts = d11_journey::plan::Facts::new();
        facts.insert("imsi".into(), IMSI.into());
        facts.insert("ue_ip".into(), ue["ip"].as_str().unwrap().into());
        let plan = d11_journey::plan::Plan::parse(ATTACH_JOURNEY).unwrap();
        let hops = plan.hops(&lab, &facts).unwrap();
        let results = d11_journey::check_hops(&pcap, &hops, true).unwrap();
        for r in &results {
            assert!(r.ok, "{r:#?}");
        }
        assert_eq!(results.len(), 3);
        // Wireshark reads every frame of the attach without complaint.
        let bad = d11_journey::malformed(&pcap, true).unwrap();
        assert_eq!(bad.len(), 3);
        assert!(bad.iter().all(|(_, n)| *n == 0), "{bad:?}");
        assert!(
            m.sim.counter(sgw, "sessions_created") == 1
                && m.sim.counter(mme, "attach_accepted") == 1
        );
        // A row that expects what did not happen does not match.
        let wrong = ATTACH_JOURNEY.replace("[\"16\", \"16\"]", "[\"16\", \"64\"]");
        assert_ne!(wrong, ATTACH_JOURNEY);
        let hops = d11_journey::plan::Plan::parse(&wrong)
            .unwrap()
            .hops(&lab, &facts)
            .unwrap();
        let results = d11_journey::check_hops(&pcap, &hops, true).unwrap();
        assert!(
            results[..2].iter().all(|r| r.ok) && !results[2].ok,
            "{results:#?}"
        );
    });
}

#[global_allocator]
static COUNTING: d11_element::alloc_count::Counting = d11_element::alloc_count::Counting;

fn mac_of(sim: &Sim, id: NodeId, port: &str) -> [u8; 6] {
    let ifs = sim.show(id, "interfaces");
    let s = ifs
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == port))
        .and_then(|i| i["mac"].as_str())
        .unwrap()
        .to_string();
    let mut m = [0u8; 6];
    for (b, h) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(h, 16).unwrap();
    }
    m
}

/// The eNodeB, once the phone is attached, moves the phone's frames into the S1-U tunnel
/// and the tunnel's back onto the radio without allocating per frame.
#[test]
fn the_enodeb_forwards_without_allocating_once_attached() {
    paused(async {
        let mut m = mobile(KEY, true);
        m.sim.run_async_for(Duration::from_secs(5)).await;
        let (enb, pgw) = (m.node("enb"), m.node("pgw"));
        let b = m.sim.show(enb, "bearers");
        let (enb_teid, ue_ip) = (
            b[0]["enb_teid"].as_u64().unwrap() as u32,
            b[0]["ue_ip"].as_str().unwrap().parse::<Ipv4Addr>().unwrap(),
        );
        let (ue_mac, enb_epc) = (mac_of(&m.sim, m.ue, "radio"), mac_of(&m.sim, enb, "epc"));
        let (sgw_epc, gw_mac) = (mac_of(&m.sim, m.sgw, "epc"), mac_of(&m.sim, pgw, "ues"));
        let srv = Ipv4Addr::new(203, 0, 113, 10);
        let ip = |src: Ipv4Addr, dst: Ipv4Addr| {
            let mut p = vec![0u8; 600];
            d11_wire::ip::write_header(&mut p, 600, 64, 17, src, dst);
            p
        };
        let up = d11_epc::gw::ethernet_frame(gw_mac, ue_mac, 0x0800, &ip(ue_ip, srv));
        let inner = d11_epc::gw::ethernet_frame(ue_mac, gw_mac, 0x0800, &ip(srv, ue_ip));
        let r = d11_wire::gtpu::Repr::g_pdu(enb_teid, inner.len());
        let mut g = vec![0u8; r.buffer_len()];
        r.emit(&mut g).unwrap();
        g[r.header_len()..].copy_from_slice(&inner);
        let mut udp = vec![0u8; 28 + g.len()];
        let (sgw_a, enb_a) = (Ipv4Addr::new(172, 16, 1, 3), Ipv4Addr::new(172, 16, 1, 2));
        d11_wire::ip::write_header(&mut udp, 28 + g.len(), 64, 17, sgw_a, enb_a);
        udp[20..22].copy_from_slice(&2152u16.to_be_bytes());
        udp[22..24].copy_from_slice(&2152u16.to_be_bytes());
        udp[24..26].copy_from_slice(&((8 + g.len()) as u16).to_be_bytes());
        udp[28..].copy_from_slice(&g);
        let down = d11_epc::gw::ethernet_frame(enb_epc, sgw_epc, 0x0800, &udp);
        // Once through the network: the eNodeB resolves the SGW's MAC.
        m.sim.deliver(enb, 0, up.clone());
        m.sim.deliver(enb, 1, down.clone());
        m.sim.run_async_for(Duration::from_millis(100)).await;
        let now = m.sim.now();
        let e = m.sim.get_mut::<d11_epc::enb::Enb>(enb);
        let (allocs, sent) =
            d11_element::alloc_count::allocations_forwarding(e, now, &[(0, up), (1, down)], 1000);
        assert_eq!(sent, 2000);
        assert_eq!(allocs, 0, "heap allocations for 2000 frames");
    });
}
