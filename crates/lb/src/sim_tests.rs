//! The balancer with real TCP on both sides, in memory under a virtual clock
//! (`d11_element::sim`): a client on our stack, the balancer, two echo hosts. Checks, round
//! robin, and a backend whose cable is pulled, with seconds of timers in milliseconds.

use super::*;
use d11_element::sim::{paused, Sim};
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn stack_cfg(name: &str, ip: &str) -> serde_json::Value {
    json!({"name": name, "ports": [{"name": "eth0", "addresses": [ip]}]})
}

/// `n` connections from the client through the balancer, each an echo of one line; the
/// answers (None for a failed one), filled in as they come.
fn clients(stack: Stack, n: usize) -> Rc<RefCell<Vec<Option<String>>>> {
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    tokio::task::spawn_local(async move {
        for i in 0..n {
            let r = async {
                let mut c = stack
                    .connect(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10), 7))
                    .await
                    .ok()?;
                let line = format!("order-{i}\n");
                c.write_all(line.as_bytes()).await.ok()?;
                let mut buf = vec![0u8; line.len()];
                c.read_exact(&mut buf).await.ok()?;
                String::from_utf8(buf).ok()
            };
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), r)
                .await
                .ok()
                .flatten();
            o.borrow_mut().push(r);
        }
    });
    out
}

#[test]
fn round_robin_with_checks_and_a_pulled_cable() {
    paused(async {
        let lb: LbConfig = serde_json::from_value({
            let mut v = stack_cfg("lb1", "10.0.0.10/24");
            v["listen"] = json!(7);
            v["balance"] = json!("roundrobin");
            v["check"] = json!({"interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 2});
            v["backends"] = json!([
                {"name": "h1", "address": "10.0.0.21:7"},
                {"name": "h2", "address": "10.0.0.22:7"},
            ]);
            v
        })
        .unwrap();
        let host = |name: &str, ip: &str| {
            let cfg: d11_host::HostConfig = serde_json::from_value(stack_cfg(name, ip)).unwrap();
            let (e, app) = d11_host::build(&cfg).unwrap();
            if let Some(app) = app {
                tokio::task::spawn_local(app);
            }
            e
        };
        let (h1, h2) = (host("h1", "10.0.0.21/24"), host("h2", "10.0.0.22/24"));
        let (lb, app) = build(&lb).unwrap();
        if let Some(app) = app {
            tokio::task::spawn_local(app);
        }
        let client_cfg: StackConfig =
            serde_json::from_value(stack_cfg("k1", "10.0.0.3/24")).unwrap();
        let (client, client_el) = Stack::new(&client_cfg, "client").unwrap();
        let mut sim = Sim::new();
        let (l, a, b, k) = (sim.add(lb), sim.add(h1), sim.add(h2), sim.add(client_el));
        sim.segment(&[(l, 0), (a, 0), (b, 0), (k, 0)]);
        let secs = std::time::Duration::from_secs;
        sim.run_async_for(secs(3)).await;
        let up = |sim: &Sim| {
            sim.show(l, "backends")
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["state"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(up(&sim), ["up", "up"]);
        let totals = |sim: &Sim| -> Vec<u64> {
            sim.show(l, "backends")
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["total"].as_u64().unwrap_or(0))
                .collect()
        };
        // Four orders, two to each backend.
        let got = clients(client.clone(), 4);
        sim.run_async_for(secs(2)).await;
        let want: Vec<Option<String>> = (0..4).map(|i| Some(format!("order-{i}\n"))).collect();
        assert_eq!(*got.borrow(), want);
        assert_eq!(totals(&sim), [2, 2]);
        // h2's cable is pulled: two failed checks (fall 2) take it out, and every order goes
        // to h1.
        sim.unplug(b, 0);
        sim.run_async_for(secs(3)).await;
        assert_eq!(up(&sim), ["up", "down"]);
        assert_eq!(sim.counter(l, "backends_down"), 1);
        let got = clients(client, 4);
        sim.run_async_for(secs(2)).await;
        assert_eq!(*got.borrow(), want);
        assert_eq!(totals(&sim), [6, 2]);
    });
}
