//! What a `kill -9` must not make the back end forget: a coupon it redeemed, and the stock
//! an order had taken when its order service died.

use d11_netns_tests::*;
use serde_json::Value;
use std::process::Stdio;

const LAB: &str = r#"
name = "crash"
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
heartbeat_s = 0.5
database = "inventory.sqlite"
stock = { "book" = 10 }
[[nodes]]
name = "coupon"
role = "coupon"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.32/24"] }]
registry = "192.168.1.5:20880"
heartbeat_s = 0.5
database = "coupons.sqlite"
coupons = ["C0", "C1", "C2", "C3", "C4", "C9"]
[[nodes]]
name = "order"
role = "order"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.30/24"] }]
registry = "192.168.1.5:20880"
shards = ["192.168.1.40:20880"]
database = "order-journal.sqlite"
timeout_ms = 20000
"#;

fn rpc(lab: &Lab, args: &[&str]) -> Value {
    lab.rpc("vpc", "192.168.1.50/24", args)
}

const COUPON: [&str; 3] = ["192.168.1.32:20880", "com.shop.CouponService", "redeem"];
const STRINGS: &str = "Ljava/lang/String;Ljava/lang/String;";

fn redeem(lab: &Lab, coupon: &str, order: &str) -> Value {
    let args = format!(r#"["{coupon}", "{order}"]"#);
    rpc(lab, &[COUPON[0], COUPON[1], COUPON[2], STRINGS, &args])
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_redeemed_coupon_stays_redeemed_after_kill_9() {
    let lab = Lab::up(LAB);
    assert_eq!(redeem(&lab, "C9", "order-a")["ok"], 1);
    lab.signal("coupon", libc::SIGKILL);
    lab.restart("coupon");
    // Another order is refused: the ledger kept the first one.
    let r = redeem(&lab, "C9", "order-b");
    assert_eq!(r["ok"], 0, "a redeemed coupon was redeemed again: {r}");
    let e = r["errors"].to_string();
    assert!(e.contains("IllegalStateException"), "{r}");
    // The first order again is a retry, and fine.
    assert_eq!(redeem(&lab, "C9", "order-a")["ok"], 1);
    let coupons = lab.show("coupon", "coupons");
    let c9 = coupons
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["coupon"] == "C9")
        .cloned();
    assert_eq!(c9.map(|c| c["order"].clone()), Some("order-a".into()));
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn orders_cut_by_kill_9_give_their_stock_back_at_the_next_start() {
    let lab = Lab::up(LAB);
    lab.wait_show("order", "providers", 30, |v| {
        let has = |s: &str| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|p| p["service"] == s))
        };
        has("com.shop.InventoryService") && has("com.shop.CouponService")
    });
    // The coupon service stops answering: five orders take their stock, then wait for it.
    lab.signal("coupon", libc::SIGSTOP);
    let create = [
        "--count",
        "5",
        "--concurrency",
        "5",
        "--timeout",
        "60",
        "192.168.1.30:20880",
        "com.shop.OrderService",
        "createOrder",
        "Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;JLjava/lang/String;Ljava/lang/String;",
        r#"["cut-{n}", "u", "book", 1, "C{n}", "{}"]"#,
    ];
    let mut client = lab
        .rpc_command("vpc", "192.168.1.50/24", &create)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stock = |lab: &Lab| lab.show("inventory", "stock")[0]["quantity"].as_i64();
    lab.wait_show("inventory", "stock", 30, |s| s[0]["quantity"] == 5);
    // kill -9 of the order service with five orders between their deduction and the coupon.
    lab.signal("order", libc::SIGKILL);
    let _ = client.kill();
    let _ = client.wait();
    lab.signal("coupon", libc::SIGCONT);
    assert_eq!(stock(&lab), Some(5));
    lab.restart("order");
    // The new order service finds the five under way, none stored: it gives everything back.
    lab.wait_show("inventory", "stock", 30, |s| s[0]["quantity"] == 10);
    lab.wait_show("order", "orphans", 30, |v| {
        v.as_array().is_some_and(|a| a.is_empty())
    });
    lab.wait_show("order", "owed", 30, |v| {
        v.as_array().is_some_and(|a| a.is_empty())
    });
    for d in lab.show("inventory", "deductions").as_array().unwrap() {
        assert_eq!(d["restored"], true, "a deduction is still held: {d}");
    }
    for c in lab.show("coupon", "coupons").as_array().unwrap() {
        assert_eq!(c["order"], Value::Null, "a coupon is still held: {c}");
    }
    // And the shop goes on: the same keys again make their orders now.
    let again = [
        "--count",
        "5",
        "--concurrency",
        "5",
        "192.168.1.30:20880",
        create[7],
        create[8],
        create[9],
        create[10],
    ];
    let r = rpc(&lab, &again);
    assert_eq!(r["ok"], 5, "{r}");
    assert_eq!(stock(&lab), Some(5));
}
