//! d11-hss: the subscriber database and the authentication centre, for the MME.
//!
//! The MME asks over UDP (port 3868) with JSON messages of our own (docs/mobile.md):
//!
//! | request | answer |
//! |---|---|
//! | `{"type": "AuthInfoRequest", "id": 1, "imsi": "001010000000001"}` | `{"type": "AuthInfoAnswer", "id": 1, "result": "ok", "rand", "xres", "autn", "ck", "ik"}` (hex; and `"static_ip"` when the subscriber has one), or `"result": "unknown-imsi"` |
//! | `{"type": "ResyncRequest", "id": 2, "imsi", "rand", "auts"}` | `{"type": "ResyncAnswer", "id": 2, "result": "ok"}` or `"mac-failure"` |
//!
//! A datagram that is not such a request is counted and answered `"result": "bad-request"`.

use d11_element::{counters, App};
use d11_epc::subscribers::Subscribers;
use d11_stack::{Stack, StackConfig, StackElement};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

pub const PORT: u16 = 3868;

/// The HSS's config: its node's entry of the topology file.
#[derive(Debug, Clone, Deserialize)]
pub struct HssConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    /// The subscriber file (srsEPC user_db.csv format).
    pub user_db_file: PathBuf,
}

counters! {
    pub struct HssCounters {
        auth_info_requests,
        vectors_sent,
        unknown_imsi,
        resync_requests,
        resync_accepted,
        resync_rejected,
        bad_requests,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(v: Option<&Value>) -> Option<[u8; N]> {
    let s = v?.as_str()?;
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// 16 octets from the kernel's random source, for RAND.
fn random16() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// Answers one request; the datagram's bytes in, the answer out.
pub fn answer(db: &mut Subscribers, c: &mut HssCounters, req: &[u8]) -> Value {
    let Ok(v) = serde_json::from_slice::<Value>(req) else {
        c.bad_requests += 1;
        return json!({ "result": "bad-request", "error": "not JSON" });
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let imsi = v.get("imsi").and_then(Value::as_str);
    match (v.get("type").and_then(Value::as_str), imsi) {
        (Some("AuthInfoRequest"), Some(imsi)) => {
            c.auth_info_requests += 1;
            let Ok(rand) = random16() else {
                return json!({ "type": "AuthInfoAnswer", "id": id, "result": "no-randomness" });
            };
            let static_ip = db.get(imsi).and_then(|s| s.ip);
            match db.vector(imsi, &rand) {
                Some(x) => {
                    c.vectors_sent += 1;
                    let mut a = json!({ "type": "AuthInfoAnswer", "id": id, "result": "ok", "rand": hex(&x.rand), "xres": hex(&x.xres), "autn": hex(&x.autn), "ck": hex(&x.ck), "ik": hex(&x.ik) });
                    // The subscription's static address (IP_alloc), for the PGW via the MME.
                    if let Some(ip) = static_ip {
                        a["static_ip"] = json!(ip.to_string());
                    }
                    a
                }
                None => {
                    c.unknown_imsi += 1;
                    json!({ "type": "AuthInfoAnswer", "id": id, "result": "unknown-imsi" })
                }
            }
        }
        (Some("ResyncRequest"), Some(imsi)) => {
            c.resync_requests += 1;
            let (Some(rand), Some(auts)) = (unhex::<16>(v.get("rand")), unhex::<14>(v.get("auts")))
            else {
                c.bad_requests += 1;
                return json!({ "type": "ResyncAnswer", "id": id, "result": "bad-request", "error": "rand: 32 hex digits, auts: 28" });
            };
            if db.resync(imsi, &rand, &auts) {
                c.resync_accepted += 1;
                json!({ "type": "ResyncAnswer", "id": id, "result": "ok" })
            } else {
                c.resync_rejected += 1;
                json!({ "type": "ResyncAnswer", "id": id, "result": "mac-failure" })
            }
        }
        _ => {
            c.bad_requests += 1;
            json!({ "id": id, "result": "bad-request", "error": "type AuthInfoRequest or ResyncRequest, with imsi" })
        }
    }
}

/// Builds the HSS: reads the subscribers, binds UDP 3868, serves.
pub fn build(cfg: &HssConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let text = std::fs::read_to_string(&cfg.user_db_file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read user_db_file {}: {e}",
            cfg.user_db_file.display()
        )
    })?;
    let db = Rc::new(RefCell::new(Subscribers::parse(&text)?));
    let c = Rc::new(RefCell::new(HssCounters::default()));
    let (stack, element) = Stack::new(&cfg.stack, "hss")?;
    let d2 = db.clone();
    stack.add_table("subscribers", move || {
        json!(d2.borrow().iter().collect::<Vec<_>>())
    });
    let c3 = c.clone();
    stack.add_counters(move |out| c3.borrow().for_each(out));
    let c2 = c.clone();
    stack.add_table("hss", move || {
        let mut m = serde_json::Map::new();
        c2.borrow().for_each(&mut |k, v| {
            m.insert(k.to_string(), json!(v));
        });
        Value::Object(m)
    });
    let udp = stack.udp_bind(PORT)?;
    let app: App = Box::pin(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = udp.recv_from(&mut buf).await?;
            let reply = answer(&mut db.borrow_mut(), &mut c.borrow_mut(), &buf[..n]);
            udp.send_to(reply.to_string().as_bytes(), from).await?;
        }
    });
    Ok((element, Some(app)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_auth::{usim_check, Milenage, UsimError};

    const DB: &str = "ue1,mil,001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,opc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020,9,dynamic\n";

    #[test]
    fn answers_vectors_resync_and_bad_requests() {
        let mut db = Subscribers::parse(DB).unwrap();
        let mut c = HssCounters::default();
        let a = answer(
            &mut db,
            &mut c,
            br#"{"type":"AuthInfoRequest","id":7,"imsi":"001010000000001"}"#,
        );
        assert_eq!(
            (a["result"].as_str(), a["id"].as_i64()),
            (Some("ok"), Some(7))
        );
        let (rand, autn) = (
            unhex::<16>(a.get("rand")).unwrap(),
            unhex::<16>(a.get("autn")).unwrap(),
        );
        let s = db.get("001010000000001").unwrap();
        let usim = Milenage::with_opc(&s.k, &s.opc);
        let (o, _) = usim_check(&usim, &rand, &autn, 0).unwrap();
        assert_eq!(hex(&o.res), a["xres"].as_str().unwrap());
        // A USIM ahead of the HSS: AUTS, resync, and the next vector is fresh for it.
        let a = answer(
            &mut db,
            &mut c,
            br#"{"type":"AuthInfoRequest","id":8,"imsi":"001010000000001"}"#,
        );
        let (rand, autn) = (
            unhex::<16>(a.get("rand")).unwrap(),
            unhex::<16>(a.get("autn")).unwrap(),
        );
        let Err(UsimError::SyncFailure { auts }) = usim_check(&usim, &rand, &autn, 0x900) else {
            panic!()
        };
        let req = json!({"type": "ResyncRequest", "id": 9, "imsi": "001010000000001", "rand": hex(&rand), "auts": hex(&auts)});
        assert_eq!(
            answer(&mut db, &mut c, req.to_string().as_bytes())["result"],
            "ok"
        );
        let a = answer(
            &mut db,
            &mut c,
            br#"{"type":"AuthInfoRequest","id":10,"imsi":"001010000000001"}"#,
        );
        let (rand, autn) = (
            unhex::<16>(a.get("rand")).unwrap(),
            unhex::<16>(a.get("autn")).unwrap(),
        );
        assert!(usim_check(&usim, &rand, &autn, 0x900).is_ok());
        assert_eq!(
            answer(
                &mut db,
                &mut c,
                br#"{"type":"AuthInfoRequest","id":1,"imsi":"999"}"#
            )["result"],
            "unknown-imsi"
        );
        for bad in [
            &b"\xff\xfe"[..],
            b"{}",
            br#"{"type":"ResyncRequest","imsi":"1","rand":"zz"}"#,
        ] {
            assert_eq!(answer(&mut db, &mut c, bad)["result"], "bad-request");
        }
        assert_eq!(
            (
                c.vectors_sent,
                c.unknown_imsi,
                c.bad_requests,
                c.resync_accepted
            ),
            (3, 1, 3, 1)
        );
    }
}
