//! The order back end's services on the userspace stack, called over Dubbo 2 / Hessian 2.

use d11_netns_tests::*;
use serde_json::Value;

const LAB: &str = r#"
name = "backend"
[[segments]]
name = "vpc"
[[nodes]]
name = "inventory"
role = "inventory"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.31/24"] }]
stock = { "book-11" = 100 }
[[nodes]]
name = "k1"
role = "kernel"
ports = [{ name = "eth0", segment = "vpc", addresses = ["192.168.1.3/24"] }]
"#;

fn rpc(lab: &Lab, args: &[&str]) -> Value {
    lab.rpc("vpc", "192.168.1.50/24", args)
}

const DEDUCT: [&str; 4] = [
    "192.168.1.31:20880",
    "com.shop.InventoryService",
    "deduct",
    "Ljava/lang/String;Ljava/lang/String;J",
];

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn a_thousand_concurrent_deducts_on_a_hundred_take_exactly_a_hundred() {
    let lab = Lab::up(LAB);
    // One connection, a thousand calls in flight on it.
    let args: Vec<&str> = ["--count", "1000", "--concurrency", "1000"]
        .into_iter()
        .chain(DEDUCT)
        .chain([r#"["order-{n}", "book-11", 1]"#])
        .collect();
    let r = rpc(&lab, &args);
    assert_eq!(r["ok"], 100, "{}", r["errors"]);
    assert_eq!(
        r["errors"]["the provider threw: com.shop.OutOfStockException: out of stock"],
        900
    );
    let stock = lab.show("inventory", "stock");
    assert_eq!(stock[0]["quantity"], 0);
    // A retried deduct for an order that has its stock takes nothing more; restore gives back once.
    let again = [DEDUCT.as_slice(), &[r#"["order-7", "book-11", 1]"#]].concat();
    assert_eq!(rpc(&lab, &again)["ok"], 1);
    let restore = [
        "192.168.1.31:20880",
        "com.shop.InventoryService",
        "restore",
        "Ljava/lang/String;",
        r#"["order-7"]"#,
    ];
    assert_eq!(rpc(&lab, &restore)["results"][0], true);
    assert_eq!(rpc(&lab, &restore)["results"][0], false);
    assert_eq!(lab.show("inventory", "stock")[0]["quantity"], 1);
    // Garbage at the service: the connection is closed, the service keeps serving.
    lab.exec_ok(
        "k1",
        &[
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -N -w 2 192.168.1.31 20880; true",
        ],
    );
    // Corrupted frames from a kernel client (nc): a bad header closes that connection (the
    // stream is lost); a readable header with an unreadable body, or with a broken Hessian
    // value, gets a BAD_REQUEST (40) answer for its id. The service serves others throughout.
    let send = |bytes: &[u8]| -> Vec<u8> {
        let oct: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
        let out = lab.exec_ok(
            "k1",
            &[
                "sh",
                "-c",
                &format!("printf '{oct}' | nc -N -w 2 192.168.1.31 20880 | od -An -tx1 -v; true"),
            ],
        );
        out.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    };
    let frame = |id: u8, body: &[u8]| -> Vec<u8> {
        let mut f = vec![0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, id];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    };
    // A bad magic: closed, nothing answered.
    let mut bad_magic = frame(1, b"\x052.0.2");
    bad_magic[0] = 0xca;
    assert!(send(&bad_magic).is_empty());
    // A body that is not a request (a long where the Dubbo version string goes).
    let r = send(&frame(2, &[0xf8, 0x01, 0x02]));
    assert_eq!(r.get(..4), Some(&[0xda, 0xbb, 0x02, 40][..]), "{r:x?}");
    assert_eq!(r[11], 2, "the answer carries the request's id");
    // A Hessian string that says 16 characters and has 3.
    let mut body = Vec::new();
    for s in [
        "2.0.2",
        "com.shop.InventoryService",
        "0.0.0",
        "stock",
        "Ljava/lang/String;",
    ] {
        body.push(s.len() as u8);
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&[0x10, b'a', b'b', b'c']);
    let r = send(&frame(3, &body));
    assert_eq!(r.get(..4), Some(&[0xda, 0xbb, 0x02, 40][..]), "{r:x?}");
    assert_eq!(r[11], 3);
    // A body length past the limit: the header is refused, the connection closed.
    let mut huge = frame(4, b"");
    huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(send(&huge).is_empty());
    let stock_call = [
        "192.168.1.31:20880",
        "com.shop.InventoryService",
        "stock",
        "Ljava/lang/String;",
        r#"["book-11"]"#,
    ];
    assert_eq!(rpc(&lab, &stock_call)["results"][0], 1);
    // An unknown method: an error status, not a hang.
    let r = rpc(
        &lab,
        &[
            "192.168.1.31:20880",
            "com.shop.InventoryService",
            "steal",
            "",
            "[]",
        ],
    );
    assert_eq!(r["ok"], 0);
    assert!(r["errors"].to_string().contains("status 60"), "{r}");
    let pcap = lab.pcap("vpc");
    let _files = lab.stop();
    // contrib/wireshark/dubbo.lua reads every call from the capture: the thousand deducts
    // (several frames to a segment, reassembled), the answers, nothing malformed.
    let lua = format!(
        "lua_script:{}/../contrib/wireshark/dubbo.lua",
        env!("CARGO_MANIFEST_DIR")
    );
    let rows = tshark_fields(
        &pcap,
        "dubbo.request == 1 && dubbo.method == \"deduct\"",
        &["dubbo.service", "dubbo.method"],
        &["-X", &lua],
    );
    let calls: usize = rows.iter().map(|r| r[1].split(',').count()).sum();
    assert!(calls >= 1001, "{calls} deduct requests decoded");
    assert!(rows
        .iter()
        .all(|r| r[0].split(',').all(|s| s == "com.shop.InventoryService")));
    let statuses = tshark_fields(
        &pcap,
        "dubbo.status == 60",
        &["dubbo.status"],
        &["-X", &lua],
    );
    assert_eq!(statuses.len(), 1);
    let bad = malformed(&pcap, &["-X", &lua]);
    assert!(bad.is_empty(), "{bad:?}");
}
