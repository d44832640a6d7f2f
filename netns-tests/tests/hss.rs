//! The HSS on the epc segment, asked over UDP from a kernel host.

use d11_auth::{usim_check, Milenage};
use d11_netns_tests::*;
use hex_literal::hex;

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn vectors_over_udp_verify_at_the_usim() {
    let scratch_dir = scratch("hss");
    let dir = scratch_dir.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("user_db.csv");
    std::fs::write(
        &db,
        "# Name,Auth,IMSI,Key,OP_Type,OP/OPc,AMF,SQN,QCI,IP_alloc\n\
         ue1,mil,001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,opc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020,9,dynamic\n",
    )
    .unwrap();
    let lab = Lab::up(&format!(
        r#"
name = "hss"
[[segments]]
name = "epc"
[[nodes]]
name = "hss"
role = "hss"
ports = [{{ name = "eth0", segment = "epc", addresses = ["172.16.1.6/24"] }}]
user_db_file = "{}"
[[nodes]]
name = "mme"
role = "kernel"
ports = [{{ name = "eth0", segment = "epc", addresses = ["172.16.1.5/24"] }}]
"#,
        db.display()
    ));
    let ask = |req: &str| -> serde_json::Value {
        let out = lab.exec_ok(
            "mme",
            &[
                "sh",
                "-c",
                &format!("printf '%s' '{req}' | nc -u -w 2 172.16.1.6 3868"),
            ],
        );
        serde_json::from_str(out.lines().next().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{out:?}: {e}"))
    };
    let a = ask(r#"{"type":"AuthInfoRequest","id":1,"imsi":"001010000000001"}"#);
    assert_eq!(a["result"], "ok", "{a}");
    let h16 = |k: &str| -> [u8; 16] {
        let s = a[k].as_str().unwrap();
        std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    };
    // The USIM (the test, with the subscriber's key) accepts the network and computes RES = XRES.
    let usim = Milenage::with_opc(
        &hex!("465b5ce8b199b49faa5f0a2ee238a6bc"),
        &hex!("cd63cb71954a9f4e48a5994e37a02baf"),
    );
    let (o, sqn) = usim_check(&usim, &h16("rand"), &h16("autn"), 0).unwrap();
    assert_eq!(sqn, 0x20);
    let res: String = o.res.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(a["xres"].as_str().unwrap(), res);
    assert_eq!(
        ask(r#"{"type":"AuthInfoRequest","id":2,"imsi":"001019999999999"}"#)["result"],
        "unknown-imsi"
    );
    assert_eq!(ask("not json")["result"], "bad-request");
    let subs = lab.show("hss", "subscribers");
    assert_eq!(subs[0]["imsi"], "001010000000001");
    assert!(subs[0].get("k").is_none(), "keys are not shown");
    let c = lab.show("hss", "hss");
    assert_eq!(
        (c["vectors_sent"].as_u64(), c["bad_requests"].as_u64()),
        (Some(1), Some(1))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
