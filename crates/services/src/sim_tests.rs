//! The order back end in memory under a virtual clock (`d11_element::sim`): registry, order,
//! inventory, coupon and a shard on our stack, a client calling `createOrder` by Dubbo RPC.
//! Registration, the registry's pushes, the calls and the idempotency key, with no TAP, root
//! or real time.

use crate::coupon::{build_coupon, CouponConfig};
use crate::db::{build_db, DbConfig};
use crate::inventory::{build_inventory, InventoryConfig};
use crate::order::{build_order, OrderConfig, CREATE_TYPES, ORDER};
use crate::registry::{build_registry, RegistryConfig};
use d11_element::sim::{paused, Sim};
use d11_rpc::d11_dubbo::Request;
use d11_rpc::{Client, Error, Value};
use d11_stack::{Stack, StackConfig};
use serde_json::json;
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

fn node(name: &str, last: u8, extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"name": name,
        "ports": [{"name": "eth0", "addresses": [format!("192.168.1.{last}/24")]}],
        "registry": "192.168.1.5:20880"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn cfg<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn create(key: &str, coupon: Option<&str>) -> Request {
    let s = |x: &str| Value::String(x.into());
    Request::new(
        ORDER,
        "createOrder",
        CREATE_TYPES,
        vec![
            s(key),
            s("alice"),
            s("book"),
            Value::Long(1),
            coupon.map_or(Value::Null, s),
            s("{}"),
        ],
    )
}

#[test]
fn orders_by_rpc_in_virtual_time() {
    paused(async {
        let dir = std::env::temp_dir().join(format!("d11-services-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("shard.sqlite"));
        let mut sim = Sim::new();
        let mut nodes = Vec::new();
        let mut run = |(e, app): (d11_stack::StackElement, Option<d11_element::App>)| {
            if let Some(app) = app {
                tokio::task::spawn_local(app);
            }
            nodes.push(sim.add(e));
        };
        run(build_registry(&cfg::<RegistryConfig>(node("registry", 5, json!({})))).unwrap());
        run(build_db(&cfg::<DbConfig>(node(
            "db1",
            40,
            json!({"database": dir.join("shard.sqlite")}),
        )))
        .unwrap());
        run(build_inventory(&cfg::<InventoryConfig>(node(
            "inventory",
            31,
            json!({"stock": {"book": 1}}),
        )))
        .unwrap());
        run(build_coupon(&cfg::<CouponConfig>(node(
            "coupon",
            32,
            json!({"coupons": ["C1"]}),
        )))
        .unwrap());
        run(build_order(&cfg::<OrderConfig>(node(
            "order",
            30,
            json!({"shards": ["192.168.1.40:20880"]}),
        )))
        .unwrap());
        let client_cfg: StackConfig = cfg(json!({"name": "k1",
            "ports": [{"name": "eth0", "addresses": ["192.168.1.3/24"]}]}));
        let (client, client_el) = Stack::new(&client_cfg, "client").unwrap();
        let k = sim.add(client_el);
        let mut seg: Vec<_> = nodes.iter().map(|n| (*n, 0)).collect();
        seg.push((k, 0));
        sim.segment(&seg);
        let order = nodes[4];
        // The services register; the order service learns of the inventory and the coupons.
        sim.run_async_for(Duration::from_secs(2)).await;
        let providers = sim.show(order, "providers").to_string();
        assert!(providers.contains("InventoryService"), "{providers}");
        assert!(providers.contains("CouponService"), "{providers}");
        // Three calls: an order, the same key again (a replay), another order (sold out).
        let answers = Rc::new(RefCell::new(Vec::new()));
        let a = answers.clone();
        tokio::task::spawn_local(async move {
            let to = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 30), 20880);
            let c = Client::new(client.connect(to).await.unwrap());
            for r in [
                create("k1", Some("C1")),
                create("k1", Some("C1")),
                create("k2", None),
            ] {
                let answer = c.call(r, Duration::from_secs(5)).await;
                a.borrow_mut().push(answer);
            }
        });
        sim.run_async_for(Duration::from_secs(2)).await;
        let got = answers.borrow();
        assert_eq!(got.len(), 3, "{got:?}");
        let replayed = |r: &Result<Option<Value>, Error>| match r {
            Ok(Some(Value::Map { entries, .. })) => entries
                .iter()
                .find(|(k, _)| *k == Value::String("replayed".into()))
                .map(|(_, v)| v.clone()),
            _ => None,
        };
        assert_eq!(replayed(&got[0]), Some(Value::Bool(false)), "{:?}", got[0]);
        assert_eq!(replayed(&got[1]), Some(Value::Bool(true)), "{:?}", got[1]);
        assert!(
            matches!(&got[2], Err(Error::Exception { class, .. }) if class == crate::exceptions::SOLD_OUT),
            "{:?}",
            got[2]
        );
        assert_eq!(sim.counter(order, "created"), 1);
        assert_eq!(sim.counter(order, "replayed"), 1);
        assert_eq!(sim.counter(order, "sold_out"), 1);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A service with `callers` serves those and closes on anyone else before reading a byte:
/// counted as `rpc_untrusted`, never a call.
#[test]
fn a_caller_the_service_does_not_trust_is_counted_and_refused() {
    paused(async {
        let mut sim = Sim::new();
        // Only the order service (192.168.1.30) may call; no registry.
        let (inv, app) = build_inventory(&cfg::<InventoryConfig>(node(
            "inventory",
            31,
            json!({"stock": {"book": 1}, "registry": null, "callers": ["192.168.1.30/32"]}),
        )))
        .unwrap();
        if let Some(app) = app {
            tokio::task::spawn_local(app);
        }
        let inv = sim.add(inv);
        let host = |name: &'static str, last: u8| {
            let c: StackConfig = cfg(json!({"name": name,
                "ports": [{"name": "eth0", "addresses": [format!("192.168.1.{last}/24")]}]}));
            Stack::new(&c, name).unwrap()
        };
        let ((order, order_el), (rogue, rogue_el)) = (host("order", 30), host("rogue", 66));
        let (o, r) = (sim.add(order_el), sim.add(rogue_el));
        sim.segment(&[(inv, 0), (o, 0), (r, 0)]);
        let answers = Rc::new(RefCell::new(Vec::new()));
        for (who, stack) in [("rogue", rogue), ("order", order)] {
            let a = answers.clone();
            tokio::task::spawn_local(async move {
                let to = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 31), 20880);
                let c = Client::new(stack.connect(to).await.unwrap());
                let stock = Request::new(
                    crate::INVENTORY,
                    "stock",
                    "Ljava/lang/String;",
                    vec![Value::String("book".into())],
                );
                let answer = c.call(stock, Duration::from_secs(2)).await;
                a.borrow_mut().push((who, answer.is_ok()));
            });
            sim.run_async_for(Duration::from_secs(3)).await;
        }
        assert_eq!(*answers.borrow(), [("rogue", false), ("order", true)]);
        assert_eq!(sim.counter(inv, "rpc_untrusted"), 1);
        assert_eq!(
            sim.counter(inv, "calls"),
            1,
            "only the order service's call"
        );
    });
}
