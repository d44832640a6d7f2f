//! The order back end called by a Dubbo 2 client that is not ours: Apache dubbo-js 2.x
//! (`dubbo2.js` from the npm registry, `netns-tests/dubbo-client`), run with Node.js on a
//! kernel host. Its requests carry attachments as a `java.util.HashMap` with `timeout` as an
//! int, as Dubbo 2.7 and later send them; its answers are decoded by hessian.js.

use d11_netns_tests::*;
use serde_json::Value;
use std::path::PathBuf;

const LAB: &str = r#"
name = "dubbo-client"
[[segments]]
name = "vpc"
subnet = "192.168.1.0/24"
[[nodes]]
name = "registry"
role = "registry"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.5/24"] }]
[[nodes]]
name = "db1"
role = "db"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.40/24"] }]
database = "shard0.sqlite"
[[nodes]]
name = "inventory"
role = "inventory"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.31/24"] }]
registry = "192.168.1.5:20880"
database = "inventory.sqlite"
stock = { "book-11" = 2 }
[[nodes]]
name = "coupon"
role = "coupon"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.32/24"] }]
registry = "192.168.1.5:20880"
coupons = ["DOUBLE11-001"]
[[nodes]]
name = "order"
role = "order"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.30/24"] }]
registry = "192.168.1.5:20880"
shards = ["192.168.1.40:20880"]
[[nodes]]
name = "k1"
role = "kernel"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.3/24"] }]
"#;

/// The client's directory, with its node_modules (`npm ci` there; scripts/test does it).
fn client_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dubbo-client");
    assert!(
        d.join("node_modules/dubbo2.js").is_dir(),
        "the Dubbo client is not installed: run ./scripts/test, or `npm ci` in {}",
        d.display()
    );
    d
}

/// One call from k1 with dubbo2.js; the line call.js prints.
fn call(lab: &Lab, at: &str, service: &str, method: &str, args: &str) -> Value {
    let script = client_dir().join("call.js");
    let out = lab.exec_ok(
        "k1",
        &["node", script.to_str().unwrap(), at, service, method, args],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

const INVENTORY: &str = "com.shop.InventoryService";
const ORDER: &str = "com.shop.OrderService";

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_real_dubbo_client_orders_and_is_told_sold_out() {
    let lab = Lab::up(LAB);
    // The order service has found the inventory and the coupon service through the registry.
    lab.wait_show("order", "providers", 30, |v| {
        let has = |s: &str| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|p| p["service"] == s))
        };
        has(INVENTORY) && has("com.shop.CouponService")
    });
    let inv = "192.168.1.31:20880";
    let r = call(&lab, inv, INVENTORY, "stock", r#"["book-11"]"#);
    assert_eq!(
        (&r["ok"], &r["value"]),
        (&Value::Bool(true), &2.into()),
        "{r}"
    );
    // A java.lang.Long argument; the answer is the quantity left.
    let r = call(
        &lab,
        inv,
        INVENTORY,
        "deduct",
        r#"["direct-1", "book-11", {"long": 1}]"#,
    );
    assert_eq!(
        (&r["ok"], &r["value"]),
        (&Value::Bool(true), &1.into()),
        "{r}"
    );

    // createOrder: a map holding a com.shop.Order (a Hessian typed object).
    let args =
        r#"["key-1", "alice", "book-11", {"long": 1}, "DOUBLE11-001", "{\"price\": 11.11}"]"#;
    let r = call(&lab, "192.168.1.30:20880", ORDER, "createOrder", args);
    assert_eq!(r["ok"], true, "{r}");
    let order = &r["value"]["order"];
    assert_eq!(
        (
            &order["key"],
            &order["user"],
            &order["item"],
            &order["quantity"],
            &order["coupon"]
        ),
        (
            &"key-1".into(),
            &"alice".into(),
            &"book-11".into(),
            &1.into(),
            &"DOUBLE11-001".into()
        ),
        "{r}"
    );
    assert!(order["id"].as_str().is_some_and(|s| s.starts_with("D11-")));
    assert_eq!(r["value"]["replayed"], false, "{r}");
    assert_eq!(r["typed"]["order"]["$class"], "com.shop.Order", "{r}");

    // The stock is gone: a Java exception of the right class, with its message.
    let args = r#"["key-2", "bob", "book-11", {"long": 1}, null, "{}"]"#;
    let r = call(&lab, "192.168.1.30:20880", ORDER, "createOrder", args);
    assert_eq!(
        (&r["ok"], &r["name"]),
        (&Value::Bool(false), &"com.shop.SoldOutException".into()),
        "{r}"
    );
    let r = call(
        &lab,
        inv,
        INVENTORY,
        "deduct",
        r#"["direct-2", "book-11", {"long": 1}]"#,
    );
    assert_eq!(r["name"], "com.shop.OutOfStockException", "{r}");
    assert!(
        r["message"].as_str().unwrap_or("").contains("out of stock"),
        "{r}"
    );
    assert_eq!(lab.show("order", "counters")["sold_out"], 1);
}
