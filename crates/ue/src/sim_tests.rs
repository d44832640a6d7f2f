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
    /// A host of ours on the epc segment that is no peer of anyone (172.16.1.66).
    rogue: Stack,
    _dir: PathBuf,
}

fn mobile(key: &str, sgw_plugged: bool) -> Mobile {
    let dir = std::env::temp_dir().join(format!(
        "d11-ue-sim-{}-{}",
        std::process::id(),
        key.len() + usize::from(sgw_plugged)
    ));
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
    Mobile {
        sim,
        ue,
        mme,
        sgw,
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
            // (Kept open: a dropped socket loses what still waits for ARP.)
            std::future::pending::<()>().await;
        });
        m.sim.run_async_for(Duration::from_secs(2)).await;
        assert_eq!(m.sim.counter(m.mme, "gtpc_untrusted"), 1);
        assert_eq!(m.sim.counter(m.mme, "network_detaches"), 0);
        assert_eq!(m.sim.show(m.ue, "ue")["state"], "attached");
    });
}
