//! The GSLB on the userspace stack under a virtual clock (`d11_element::sim`): its TCP health
//! checks against two regions of echo hosts, cables pulled and put back, and the answers a
//! client gets over UDP meanwhile. Seconds of check intervals run in milliseconds.

use crate::server::{build, DnsConfig};
use d11_element::sim::{paused, Sim};
use d11_stack::{Stack, StackConfig};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

fn stack_cfg(name: &str, ip: &str) -> serde_json::Value {
    json!({"name": name, "ports": [{"name": "eth0", "addresses": [ip]}]})
}

/// Asks the GSLB (10.0.0.54) for vip.shop.example A from `client`, running the network a
/// second: the sorted addresses (empty if no answer came).
async fn answer(sim: &mut Sim, client: &Stack) -> Vec<String> {
    let out = Rc::new(RefCell::new(None));
    let (client, o) = (client.clone(), out.clone());
    tokio::task::spawn_local(async move {
        let sock = client.udp_bind(0).unwrap();
        let mut q = Message::query();
        q.metadata.id = 99;
        q.add_query(Query::query(
            Name::from_ascii("vip.shop.example.").unwrap(),
            RecordType::A,
        ));
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 54), 53);
        sock.send_to(&q.to_vec().unwrap(), to).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await;
        let mut ips: Vec<String> = match got {
            Ok(Ok((n, _))) => Message::from_vec(&buf[..n])
                .map(|m| m.answers.iter().map(|r| r.data.to_string()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        ips.sort();
        *o.borrow_mut() = Some(ips);
    });
    sim.run_async_for(Duration::from_secs(1)).await;
    let got = out.borrow().clone();
    got.expect("the client's task did not finish")
}

#[test]
fn the_gslb_checks_its_vips_and_fails_over_under_virtual_time() {
    paused(async {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/dns");
        let mut v = stack_cfg("gslb", "10.0.0.54/24");
        v["kind"] = json!("gslb");
        v["zone"] = json!("vip.shop.example.");
        v["zone_file"] = json!(dir.join("vip.shop.example.zone"));
        v["gslb"] = json!({
            "ttl": 30,
            "check_port": 7,
            "check": {"interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 2},
            "regions": [
                {"name": "east", "vips": ["10.0.0.10", "10.0.0.11"], "clients": ["10.0.0.0/24"]},
                {"name": "north", "vips": ["10.0.0.20"], "clients": ["100.64.0.0/10"]},
            ],
        });
        let cfg: DnsConfig = serde_json::from_value(v).unwrap();
        let (gslb, app) = build(&cfg).unwrap();
        tokio::task::spawn_local(app.unwrap());
        let host = |name: &str, ip: &str| {
            let cfg: d11_host::HostConfig = serde_json::from_value(stack_cfg(name, ip)).unwrap();
            let (e, app) = d11_host::build(&cfg).unwrap();
            if let Some(app) = app {
                tokio::task::spawn_local(app);
            }
            e
        };
        let client_cfg: StackConfig =
            serde_json::from_value(stack_cfg("k1", "10.0.0.3/24")).unwrap();
        let (client, client_el) = Stack::new(&client_cfg, "client").unwrap();
        let mut sim = Sim::new();
        let g = sim.add(gslb);
        let v10 = sim.add(host("v10", "10.0.0.10/24"));
        let v11 = sim.add(host("v11", "10.0.0.11/24"));
        let v20 = sim.add(host("v20", "10.0.0.20/24"));
        let k = sim.add(client_el);
        let seg = sim.segment(&[(g, 0), (v10, 0), (v11, 0), (v20, 0), (k, 0)]);
        let secs = Duration::from_secs;
        sim.run_async_for(secs(3)).await;
        assert_eq!(answer(&mut sim, &client).await, ["10.0.0.10", "10.0.0.11"]);
        let health = sim.show(g, "health");
        assert_eq!(health[0]["checks_ok"], 4, "{health}");
        // v11's cable pulled: two failed checks (fall 2) take it out, not one.
        sim.unplug(v11, 0);
        sim.run_async_for(Duration::from_millis(1600)).await;
        assert_eq!(
            sim.show(g, "health")[1]["state"],
            "up",
            "one failure is not enough"
        );
        sim.run_async_for(secs(1)).await;
        assert_eq!(sim.show(g, "health")[1]["state"], "down");
        assert_eq!(answer(&mut sim, &client).await, ["10.0.0.10"]);
        // All of east gone: north's VIP.
        sim.unplug(v10, 0);
        sim.run_async_for(secs(3)).await;
        assert_eq!(answer(&mut sim, &client).await, ["10.0.0.20"]);
        assert_eq!(sim.counter(g, "gslb_failovers"), 1);
        let d = sim.show(g, "decisions");
        let why = d.as_array().unwrap().last().unwrap()["why"].to_string();
        assert!(why.contains("failover to north"), "{why}");
        // v10 back: after two good checks (rise 2) east answers again, with v10 alone.
        sim.plug(v10, 0, seg);
        sim.run_async_for(secs(3)).await;
        assert_eq!(answer(&mut sim, &client).await, ["10.0.0.10"]);
        assert_eq!(sim.counter(g, "gslb_vips_up"), 1);
    });
}
