//! Stage 10 through the real path: curl (the kernel's TCP, on a VM of host A) posts orders over
//! HTTPS to the controllers (ctl1 on host B, ctl2 on host A: VXLAN between the hosts), which
//! call the order service by RPC; it calls inventory and coupon and stores the order in one of
//! two SQLite shards, every service found through the registry.

use d11_netns_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

fn topology(stock: u32, order_timeout_ms: u32) -> String {
    let vm = |name: &str, host: &str| -> (String, String) {
        (
            format!("[[segments]]\nname = \"vm-{name}\"\nmtu = 1450\n"),
            format!("{{ name = \"{name}\", segment = \"vm-{name}\" }}, # {host}\n"),
        )
    };
    let a = ["client", "ctl2"];
    let b = [
        "ctl1",
        "registry",
        "order",
        "order2",
        "inventory",
        "coupon",
        "db1",
        "db2",
    ];
    let mut segs = String::new();
    let (mut pa, mut pb) = (String::new(), String::new());
    for n in a {
        let (s, p) = vm(n, "hosta");
        segs += &s;
        pa += &p;
    }
    for n in b {
        let (s, p) = vm(n, "hostb");
        segs += &s;
        pb += &p;
    }
    let vnis = |l: &[&str]| {
        l.iter()
            .map(|n| format!("{n} = 1001"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let svc = |name: &str, role: &str, ip: &str, extra: &str| {
        format!(
            "[[nodes]]\nname = \"{name}\"\nrole = \"{role}\"\nports = [{{ name = \"eth0\", segment = \"vm-{name}\", addresses = [\"192.168.1.{ip}/24\"] }}]\n{extra}\n"
        )
    };
    let reg = "registry = \"192.168.1.5:20880\"\nheartbeat_s = 0.5";
    let order = format!("{reg}\nshards = [\"192.168.1.40:20880\", \"192.168.1.41:20880\"]\ntimeout_ms = {order_timeout_ms}\nbalance = \"leastactive\"");
    let ctl = |name: &str, ip: &str| {
        svc(
            name,
            "ctl",
            ip,
            &format!("tls = {{ names = [\"{name}.shop.example\"] }}\nhttp = {{ backlog = 256 }}\norders = {{ registry = \"192.168.1.5:20880\", timeout_ms = 3000, balance = \"roundrobin\" }}"),
        )
    };
    format!(
        r#"name = "orders"
[[segments]]
name = "underlay"
subnet = "10.1.0.0/24"
{segs}
[[nodes]]
name = "hosta"
role = "vswitch"
ports = [
{pa}  {{ name = "underlay", segment = "underlay", addresses = ["10.1.0.11/24"] }},
]
vnis = {{ {va} }}
vteps = {{ "1001" = ["10.1.0.12"] }}

[[nodes]]
name = "hostb"
role = "vswitch"
ports = [
{pb}  {{ name = "underlay", segment = "underlay", addresses = ["10.1.0.12/24"] }},
]
vnis = {{ {vb} }}
vteps = {{ "1001" = ["10.1.0.11"] }}

{registry}{db1}{db2}{inventory}{coupon}{order}{order2}{ctl1}{ctl2}
[[nodes]]
name = "client"
role = "kernel"
ports = [{{ name = "eth0", segment = "vm-client", addresses = ["192.168.1.100/24"] }}]
"#,
        va = vnis(&a),
        vb = vnis(&b),
        registry = svc(
            "registry",
            "registry",
            "5",
            "unhealthy_after_s = 2\nremove_after_s = 4"
        ),
        db1 = svc("db1", "db", "40", "database = \"shard0.sqlite\""),
        db2 = svc("db2", "db", "41", "database = \"shard1.sqlite\""),
        inventory = svc(
            "inventory",
            "inventory",
            "31",
            &format!("{reg}\ndatabase = \"inventory.sqlite\"\nstock = {{ \"book-11\" = {stock}, pen = 10 }}")
        ),
        coupon = svc(
            "coupon",
            "coupon",
            "32",
            &format!("{reg}\ncoupons = [\"C1\", \"C2\"]")
        ),
        order = svc("order", "order", "30", &order),
        order2 = svc("order2", "order", "33", &order),
        ctl1 = ctl("ctl1", "20"),
        ctl2 = ctl("ctl2", "21"),
    )
}

/// The lab's root certificate, for curl.
fn cacert(lab: &Lab) -> String {
    let pki = lab.status()["pki"].as_str().unwrap().to_string();
    format!("{pki}/root.pem")
}

const BODY: &str = r#"{"order": {"date": "2018-11-11 00:00:01", "className": "book-11", "Author": "d11", "price": 11.11}}"#;

/// Posts one order per key with curl from the client VM, `parallel` at a time, alternating
/// between the two controllers; the HTTP status per key.
fn post_orders(lab: &Lab, keys: &[String], parallel: usize, max_time: f64) -> Vec<(String, u16)> {
    post_orders_of(lab, "book-11", keys, parallel, max_time)
}

fn post_orders_of(
    lab: &Lab,
    item: &str,
    keys: &[String],
    parallel: usize,
    max_time: f64,
) -> Vec<(String, u16)> {
    let body = BODY.replace("book-11", item);
    let cfg = lab.dir.join(format!("curl-{}.cfg", keys[0]));
    // Options after `next` apply to that transfer only: each block carries them all.
    let ca = cacert(lab);
    let blocks: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let ctl = if i % 2 == 0 { "ctl1" } else { "ctl2" };
            format!(
                "url = \"https://{ctl}.shop.example/purchaseOrder\"\ncacert = \"{ca}\"\nresolve = \"ctl1.shop.example:443:192.168.1.20\"\nresolve = \"ctl2.shop.example:443:192.168.1.21\"\nmax-time = {max_time}\nheader = \"Idempotency-Key: {k}\"\nheader = \"Content-Type: application/json\"\ndata = {}\nwrite-out = \"{k} %{{http_code}}\\n\"\noutput = \"/dev/null\"\n",
                serde_json::to_string(&body).unwrap()
            )
        })
        .collect();
    std::fs::write(&cfg, blocks.join("next\n")).unwrap();
    let out = lab.exec(
        "client",
        &[
            "curl",
            "-sS",
            "--no-progress-meter",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &parallel.to_string(),
            "-K",
            cfg.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.is_empty() {
        eprintln!(
            "curl: {}",
            err.lines().take(3).collect::<Vec<_>>().join(" | ")
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, c) = l.split_once(' ')?;
            Some((k.to_string(), c.parse().ok()?))
        })
        .collect()
}

fn count(results: &[(String, u16)]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for (_, c) in results {
        *m.entry(*c).or_default() += 1;
    }
    m
}

/// Every order in both shards, read with the sqlite3 command from the shards' files.
fn stored(lab: &Lab) -> Vec<Value> {
    // The lab keeps a relative `database` under its run directory.
    let run = format!("/run/d11/{}", lab.prefix);
    let mut v = Vec::new();
    for shard in ["shard0", "shard1"] {
        let o = std::process::Command::new("sqlite3")
            .args(["-json", &format!("{run}/data/{shard}.sqlite")])
            .arg("SELECT id, key, item, quantity FROM orders")
            .output()
            .expect("sqlite3 (apt-get install sqlite3)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        if !o.stdout.trim_ascii().is_empty() {
            v.extend(serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap());
        }
    }
    v
}

fn stock(lab: &Lab) -> i64 {
    lab.show("inventory", "stock")
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item"] == "book-11")
        .unwrap()["quantity"]
        .as_i64()
        .unwrap()
}

fn pid(lab: &Lab, node: &str) -> i32 {
    lab.pid(node)
}

/// The registry lists `n` healthy providers of `service`.
fn wait_providers(lab: &Lab, service: &str, n: usize) {
    lab.wait_show("registry", "services", 30, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .filter(|i| i["service"] == service && i["healthy"] == true)
                .count()
                == n
        })
    });
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_thousand_concurrent_orders_for_a_hundred_books_and_a_retry_after_a_cut() {
    let lab = Lab::up(&topology(100, 2000));
    wait_providers(&lab, "com.shop.OrderService", 2);
    wait_providers(&lab, "com.shop.InventoryService", 1);
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    let r = post_orders(&lab, &keys, 1000, 120.0);
    let by = count(&r);
    assert_eq!(r.len(), 1000, "{by:?}");
    assert_eq!(by.get(&201), Some(&100), "{by:?}");
    assert_eq!(by.get(&409), Some(&900), "sold out: {by:?}");
    assert_eq!(stock(&lab), 0);
    let orders = stored(&lab);
    assert_eq!(orders.len(), 100);
    let ok: HashSet<&str> = r
        .iter()
        .filter(|(_, c)| *c == 201)
        .map(|(k, _)| k.as_str())
        .collect();
    let keys_stored: HashSet<&str> = orders.iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(
        ok, keys_stored,
        "the store holds exactly the acknowledged orders"
    );
    // Both shards are used, and the order service balanced over both instances.
    assert!(lab.counter("db1", "stored") > 0 && lab.counter("db2", "stored") > 0);
    assert!(lab.counter("order", "calls") > 0 && lab.counter("order2", "calls") > 0);
    assert_eq!(lab.counter("inventory", "deducted"), 100);

    // A retry after a cut connection: the inventory is stopped, so the order hangs; curl gives
    // up after 0.5 s and closes its connection; the inventory resumes and the order completes
    // behind the client's back. The retry with the same key gets that order, not a second.
    let inv = pid(&lab, "inventory");
    unsafe { libc::kill(inv, libc::SIGSTOP) };
    let first = post_orders_of(&lab, "pen", &["cut-1".to_string()], 1, 0.5);
    unsafe { libc::kill(inv, libc::SIGCONT) };
    assert_eq!(first, vec![("cut-1".to_string(), 0)], "curl gave up");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stored(&lab).len() < 101 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cut order never completed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let again = post_orders_of(&lab, "pen", &["cut-1".to_string()], 1, 30.0);
    assert_eq!(again[0].1, 201, "{again:?}");
    let orders = stored(&lab);
    assert_eq!(orders.len(), 101);
    assert_eq!(orders.iter().filter(|o| o["key"] == "cut-1").count(), 1);
    assert_eq!(
        lab.show("inventory", "stock")
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["item"] == "pen")
            .unwrap()["quantity"],
        9
    );
    assert!(lab.counter("order", "replayed") + lab.counter("order2", "replayed") >= 1);
}

/// The books agree: every order stored has its deduction and every deduction held (not given
/// back) has its stored order; the stock fell by exactly the orders stored.
fn assert_books_agree(lab: &Lab, initial: i64) {
    let orders = stored(lab);
    let ids: HashSet<String> = orders
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), orders.len(), "an order stored twice");
    let held: HashSet<String> = lab
        .show("inventory", "deductions")
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["restored"] == false)
        .map(|d| d["order"].as_str().unwrap().to_string())
        .collect();
    let no_deduction: Vec<_> = ids.difference(&held).collect();
    let no_order: Vec<_> = held.difference(&ids).collect();
    assert!(
        no_deduction.is_empty() && no_order.is_empty(),
        "orders without a deduction: {no_deduction:?}; deductions without an order: {no_order:?}"
    );
    assert_eq!(initial - stock(lab), orders.len() as i64);
}

fn created(lab: &Lab) -> u64 {
    lab.counter("order", "created") + lab.counter("order2", "created")
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn orders_fail_cleanly_without_the_inventory_and_move_off_a_dead_order_instance() {
    let lab = Lab::up(&topology(100_000, 500));
    wait_providers(&lab, "com.shop.OrderService", 2);
    wait_providers(&lab, "com.shop.InventoryService", 1);
    let keys = |p: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{p}{i}")).collect() };

    // kill -9 of the inventory in the middle of a load.
    let (r1, before) = std::thread::scope(|s| {
        let load = s.spawn(|| post_orders(&lab, &keys("a", 400), 20, 60.0));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while created(&lab) < 50 {
            assert!(std::time::Instant::now() < deadline, "no orders");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        unsafe { libc::kill(pid(&lab, "inventory"), libc::SIGKILL) };
        let before = created(&lab);
        (load.join().unwrap(), before)
    });
    let by = count(&r1);
    eprintln!("with the inventory killed after {before} orders: {by:?}");
    assert_eq!(r1.len(), 400);
    // While it is down the orders fail cleanly: 503, none hang.
    assert!(by.get(&503).copied().unwrap_or(0) > 0, "{by:?}");
    assert_eq!(
        by.get(&201).copied().unwrap_or(0) + by.get(&503).copied().unwrap_or(0),
        400,
        "{by:?}"
    );
    lab.restart("inventory");
    wait_providers(&lab, "com.shop.InventoryService", 1);
    let r2 = post_orders(&lab, &keys("b", 100), 20, 60.0);
    assert_eq!(count(&r2).get(&201), Some(&100), "{:?}", count(&r2));
    // The undos owed while it was down are paid now that it is back.
    for o in ["order", "order2"] {
        lab.wait_show(o, "owed", 30, |v| {
            v.as_array().is_some_and(|a| a.is_empty())
        });
    }
    assert_books_agree(&lab, 100_000);

    // kill -9 of one of the two order-service instances under load: the callers move to the
    // other.
    let r3 = std::thread::scope(|s| {
        let load = s.spawn(|| post_orders(&lab, &keys("c", 300), 20, 60.0));
        let start = created(&lab);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while created(&lab) < start + 30 {
            assert!(std::time::Instant::now() < deadline, "no orders");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        unsafe { libc::kill(pid(&lab, "order"), libc::SIGKILL) };
        load.join().unwrap()
    });
    let by = count(&r3);
    eprintln!("with one order instance killed: {by:?}");
    assert_eq!(by.get(&201), Some(&300), "{by:?}");
    wait_providers(&lab, "com.shop.OrderService", 1);
    lab.wait_show("order2", "owed", 30, |v| {
        v.as_array().is_some_and(|a| a.is_empty())
    });
    assert_books_agree(&lab, 100_000);
    let ok = r1
        .iter()
        .chain(&r2)
        .chain(&r3)
        .filter(|(_, c)| *c == 201)
        .count();
    assert_eq!(stored(&lab).len(), ok);
    // A shard restarted keeps its orders (SQLite on disk), and replayed keys still find their
    // orders there.
    let before = lab.counter("db1", "orders");
    assert!(before > 0);
    lab.restart("db1");
    assert_eq!(lab.counter("db1", "orders"), before);
    let again = post_orders(&lab, &keys("c", 300), 20, 60.0);
    assert_eq!(count(&again).get(&201), Some(&300), "{:?}", count(&again));
    assert_eq!(stored(&lab).len(), ok, "replays stored nothing new");
}
