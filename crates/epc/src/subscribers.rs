//! The HSS's subscribers, in srsEPC's `user_db.csv` format:
//!
//! ```text
//! # Name,Auth,IMSI,Key,OP_Type,OP/OPc,AMF,SQN,QCI,IP_alloc
//! ue1,mil,001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,opc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020,9,dynamic
//! ```
//!
//! Auth is `mil` (Milenage; srsEPC's `xor` test algorithm is not supported), OP_Type `op` or
//! `opc`, AMF 4 hex digits, SQN 12 hex digits, IP_alloc `dynamic` or an IPv4 address.

use d11_auth::{parse_key, resync, sqn_bytes, vector, Key, Milenage, Vector};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user_db line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Subscriber {
    pub name: String,
    pub imsi: String,
    #[serde(skip)]
    pub k: Key,
    #[serde(skip)]
    pub opc: Key,
    pub amf: [u8; 2],
    /// The next SQN the HSS will use.
    pub sqn: u64,
    pub qci: u8,
    /// A static address, or None for one from the PGW's pool.
    pub ip: Option<Ipv4Addr>,
}

/// The subscriber database.
#[derive(Debug, Clone, Default)]
pub struct Subscribers {
    by_imsi: BTreeMap<String, Subscriber>,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Subscribers {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut db = Subscribers::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let err = |what: &str| ParseError {
                line,
                what: what.to_string(),
            };
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if f.len() != 10 {
                return Err(err(&format!("expected 10 fields (Name,Auth,IMSI,Key,OP_Type,OP/OPc,AMF,SQN,QCI,IP_alloc), found {}", f.len())));
            }
            if f[1] != "mil" {
                return Err(err(&format!(
                    "auth {:?}: only mil (Milenage) is supported",
                    f[1]
                )));
            }
            let imsi = f[2];
            if !(6..=15).contains(&imsi.len()) || !imsi.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(&format!("IMSI {imsi:?}: 6 to 15 digits")));
            }
            let k = parse_key(f[3]).ok_or_else(|| err("Key: 32 hex digits"))?;
            let op = parse_key(f[5]).ok_or_else(|| err("OP/OPc: 32 hex digits"))?;
            let opc = match f[4] {
                "opc" => op,
                "op" => Milenage::with_op(&k, &op).opc(),
                other => return Err(err(&format!("OP_Type {other:?}: op or opc"))),
            };
            let amf = hex::<2>(f[6]).ok_or_else(|| err("AMF: 4 hex digits"))?;
            let sqn = hex::<6>(f[7])
                .map(|s| d11_auth::sqn_u64(&s))
                .ok_or_else(|| err("SQN: 12 hex digits"))?;
            let qci: u8 = f[8]
                .parse()
                .ok()
                .filter(|q| (1..=9).contains(q))
                .ok_or_else(|| err("QCI: 1 to 9"))?;
            let ip = match f[9] {
                "dynamic" => None,
                a => Some(
                    a.parse()
                        .map_err(|_| err(&format!("IP_alloc {a:?}: dynamic or an IPv4 address")))?,
                ),
            };
            let s = Subscriber {
                name: f[0].to_string(),
                imsi: imsi.to_string(),
                k,
                opc,
                amf,
                sqn,
                qci,
                ip,
            };
            if db.by_imsi.insert(imsi.to_string(), s).is_some() {
                return Err(err(&format!("IMSI {imsi} listed twice")));
            }
        }
        Ok(db)
    }

    pub fn get(&self, imsi: &str) -> Option<&Subscriber> {
        self.by_imsi.get(imsi)
    }

    pub fn len(&self) -> usize {
        self.by_imsi.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_imsi.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subscriber> {
        self.by_imsi.values()
    }

    /// A fresh authentication vector for `imsi` with `rand`; the SQN advances (TS 33.102
    /// §6.3.2: the HSS increments SQN for each vector).
    pub fn vector(&mut self, imsi: &str, rand: &Key) -> Option<Vector> {
        let s = self.by_imsi.get_mut(imsi)?;
        let m = Milenage::with_opc(&s.k, &s.opc);
        let v = vector(&m, rand, &sqn_bytes(s.sqn), &s.amf);
        s.sqn += 1;
        Some(v)
    }

    /// A resynchronisation request (TS 33.102 §6.3.5): if AUTS verifies, the next SQN is set
    /// just above the USIM's. True if accepted.
    pub fn resync(&mut self, imsi: &str, rand: &Key, auts: &[u8; 14]) -> bool {
        let Some(s) = self.by_imsi.get_mut(imsi) else {
            return false;
        };
        let m = Milenage::with_opc(&s.k, &s.opc);
        match resync(&m, rand, auts) {
            Some(ms) => {
                s.sqn = ms + 1;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_auth::{usim_check, UsimError};
    use hex_literal::hex;

    const DB: &str = "\
# Name,Auth,IMSI,Key,OP_Type,OP/OPc,AMF,SQN,QCI,IP_alloc
ue1,mil,001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,opc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020,9,dynamic
ue2,mil,001010000000002,0396eb317b6d1c36f19c1c84cd6ffd16,op,ff53bade17df5d4e793073ce9d7579fa,8000,000000000001,7,10.45.0.200
";

    #[test]
    fn parses_and_derives_opc() {
        let db = Subscribers::parse(DB).unwrap();
        assert_eq!(db.len(), 2);
        let s2 = db.get("001010000000002").unwrap();
        assert_eq!(
            s2.opc,
            hex!("53c15671c60a4b731c55b4a441c0bde2"),
            "OPc from OP"
        );
        assert_eq!(s2.ip, Some(Ipv4Addr::new(10, 45, 0, 200)));
        assert_eq!(db.get("001010000000001").unwrap().sqn, 0x20);
    }

    #[test]
    fn bad_lines_say_what_and_where() {
        for (line, why) in [
            ("ue,xor,001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,opc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020,9,dynamic", "only mil"),
            ("ue,mil,0010100000000,465b,opc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020,9,dynamic", "Key"),
            ("ue,mil,001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,opc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020,9,10.45.0", "IP_alloc"),
            ("ue,mil,001010000000001", "10 fields"),
        ] {
            let e = Subscribers::parse(&format!("# header\n{line}\n")).unwrap_err();
            assert_eq!(e.line, 2);
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn vectors_advance_and_resync_recovers() {
        let mut db = Subscribers::parse(DB).unwrap();
        let imsi = "001010000000001";
        let s = db.get(imsi).unwrap().clone();
        let usim = Milenage::with_opc(&s.k, &s.opc);
        let rand = [7u8; 16];
        let v = db.vector(imsi, &rand).unwrap();
        let (o, sqn) = usim_check(&usim, &v.rand, &v.autn, 0x10).unwrap();
        assert_eq!((o.res, sqn), (v.xres, 0x20));
        assert_eq!(db.get(imsi).unwrap().sqn, 0x21);
        // The USIM is ahead (SQN_MS 0x500): it sends AUTS; the HSS resynchronises.
        let v = db.vector(imsi, &rand).unwrap();
        let Err(UsimError::SyncFailure { auts }) = usim_check(&usim, &v.rand, &v.autn, 0x500)
        else {
            panic!()
        };
        assert!(db.resync(imsi, &v.rand, &auts));
        let v = db.vector(imsi, &rand).unwrap();
        assert_eq!(usim_check(&usim, &v.rand, &v.autn, 0x500).unwrap().1, 0x501);
        assert!(db.vector("999", &rand).is_none());
    }
}
