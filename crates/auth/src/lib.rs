//! EPS-AKA for the lab's MME and HSS: Milenage (3GPP TS 35.206), authentication vectors
//! (TS 33.102 §6.3, TS 33.401), the UE's check of AUTN, and SQN resynchronisation (AUTS).
//!
//! Milenage is written here because no maintained Rust crate offers it; it is AES-128 (the
//! RustCrypto `aes` crate) and a few XORs and rotations. Its conformance tests are the 3GPP test
//! sets (TS 35.207 / 35.208).

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;

pub type Key = [u8; 16];

/// Milenage with the standard constants (r1..r5 = 64, 0, 32, 64, 96; c1..c5 = 0, 1, 2, 4, 8).
pub struct Milenage {
    aes: Aes128,
    opc: Key,
}

fn xor(a: &Key, b: &Key) -> Key {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Cyclic rotation left by `bytes` octets (r is a multiple of 8 for the standard constants).
fn rot(x: &Key, bytes: usize) -> Key {
    std::array::from_fn(|i| x[(i + bytes) % 16])
}

fn c(i: u8) -> Key {
    let mut k = [0u8; 16];
    k[15] = i;
    k
}

/// The outputs of f2 to f5* for one RAND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    /// RES / XRES (f2).
    pub res: [u8; 8],
    /// CK (f3).
    pub ck: Key,
    /// IK (f4).
    pub ik: Key,
    /// AK (f5), conceals SQN in AUTN.
    pub ak: [u8; 6],
    /// AK for resynchronisation (f5*), conceals SQN_MS in AUTS.
    pub ak_star: [u8; 6],
}

impl Milenage {
    fn enc(aes: &Aes128, x: &Key) -> Key {
        let mut b = aes::Block::clone_from_slice(x);
        aes.encrypt_block(&mut b);
        b.into()
    }

    /// With the subscriber key and OPc (as the HSS stores it).
    pub fn with_opc(k: &Key, opc: &Key) -> Self {
        Self {
            aes: Aes128::new(k.into()),
            opc: *opc,
        }
    }

    /// With the subscriber key and the operator's OP: OPc = E_K(OP) xor OP.
    pub fn with_op(k: &Key, op: &Key) -> Self {
        let aes = Aes128::new(k.into());
        let opc = xor(&Self::enc(&aes, op), op);
        Self { aes, opc }
    }

    pub fn opc(&self) -> Key {
        self.opc
    }

    fn temp(&self, rand: &Key) -> Key {
        Self::enc(&self.aes, &xor(rand, &self.opc))
    }

    /// f1 and f1*: (MAC-A, MAC-S) over SQN and AMF.
    pub fn f1(&self, rand: &Key, sqn: &[u8; 6], amf: &[u8; 2]) -> ([u8; 8], [u8; 8]) {
        let temp = self.temp(rand);
        let mut in1 = [0u8; 16];
        in1[0..6].copy_from_slice(sqn);
        in1[6..8].copy_from_slice(amf);
        in1[8..14].copy_from_slice(sqn);
        in1[14..16].copy_from_slice(amf);
        let x = xor(&xor(&temp, &rot(&xor(&in1, &self.opc), 8)), &c(0));
        let out1 = xor(&Self::enc(&self.aes, &x), &self.opc);
        let mut mac_a = [0u8; 8];
        let mut mac_s = [0u8; 8];
        mac_a.copy_from_slice(&out1[0..8]);
        mac_s.copy_from_slice(&out1[8..16]);
        (mac_a, mac_s)
    }

    /// f2, f3, f4, f5 and f5*.
    pub fn f2345(&self, rand: &Key) -> Outputs {
        let t = xor(&self.temp(rand), &self.opc);
        let out =
            |r: usize, ci: u8| xor(&Self::enc(&self.aes, &xor(&rot(&t, r), &c(ci))), &self.opc);
        let out2 = out(0, 1);
        let (out3, out4, out5) = (out(4, 2), out(8, 4), out(12, 8));
        let mut res = [0u8; 8];
        res.copy_from_slice(&out2[8..16]);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out2[0..6]);
        let mut ak_star = [0u8; 6];
        ak_star.copy_from_slice(&out5[0..6]);
        Outputs {
            res,
            ck: out3,
            ik: out4,
            ak,
            ak_star,
        }
    }
}

/// An authentication vector as the HSS hands it to the MME (TS 33.401 §6.1.1; KASME left to
/// the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vector {
    pub rand: Key,
    pub xres: [u8; 8],
    /// SQN xor AK || AMF || MAC-A.
    pub autn: Key,
    pub ck: Key,
    pub ik: Key,
}

/// The network side: a vector for `sqn`.
pub fn vector(m: &Milenage, rand: &Key, sqn: &[u8; 6], amf: &[u8; 2]) -> Vector {
    let (mac_a, _) = m.f1(rand, sqn, amf);
    let o = m.f2345(rand);
    let mut autn = [0u8; 16];
    for i in 0..6 {
        autn[i] = sqn[i] ^ o.ak[i];
    }
    autn[6..8].copy_from_slice(amf);
    autn[8..16].copy_from_slice(&mac_a);
    Vector {
        rand: *rand,
        xres: o.res,
        autn,
        ck: o.ck,
        ik: o.ik,
    }
}

/// Why the USIM refuses a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsimError {
    /// MAC-A does not verify: the network does not know our key.
    #[error("MAC failure: the network failed authentication")]
    MacFailure,
    /// The SQN is not fresh: the USIM answers with AUTS so the HSS can resynchronise.
    #[error("synchronisation failure")]
    SyncFailure { auts: [u8; 14] },
}

/// The USIM side: checks AUTN, returns RES (and CK, IK) or why not. `sqn_ms` is the highest
/// SQN the USIM has accepted; a SQN is fresh when greater (TS 33.102 Annex C, simplified to
/// "strictly increasing"). On success the caller stores the new SQN.
pub fn usim_check(
    m: &Milenage,
    rand: &Key,
    autn: &Key,
    sqn_ms: u64,
) -> Result<(Outputs, u64), UsimError> {
    let o = m.f2345(rand);
    let mut sqn = [0u8; 6];
    for i in 0..6 {
        sqn[i] = autn[i] ^ o.ak[i];
    }
    let amf = [autn[6], autn[7]];
    let (mac_a, _) = m.f1(rand, &sqn, &amf);
    if mac_a[..] != autn[8..16] {
        return Err(UsimError::MacFailure);
    }
    let sqn_v = sqn_u64(&sqn);
    if sqn_v <= sqn_ms {
        // AUTS = SQN_MS xor AK* || MAC-S, with AMF zero (TS 33.102 §6.3.3).
        let ms = sqn_bytes(sqn_ms);
        let (_, mac_s) = m.f1(rand, &ms, &[0, 0]);
        let mut auts = [0u8; 14];
        for i in 0..6 {
            auts[i] = ms[i] ^ o.ak_star[i];
        }
        auts[6..14].copy_from_slice(&mac_s);
        return Err(UsimError::SyncFailure { auts });
    }
    Ok((o, sqn_v))
}

/// The HSS side of a resynchronisation: recovers SQN_MS from AUTS if MAC-S verifies.
pub fn resync(m: &Milenage, rand: &Key, auts: &[u8; 14]) -> Option<u64> {
    let o = m.f2345(rand);
    let mut ms = [0u8; 6];
    for i in 0..6 {
        ms[i] = auts[i] ^ o.ak_star[i];
    }
    let (_, mac_s) = m.f1(rand, &ms, &[0, 0]);
    (mac_s[..] == auts[6..14]).then(|| sqn_u64(&ms))
}

pub fn sqn_u64(s: &[u8; 6]) -> u64 {
    s.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
}

pub fn sqn_bytes(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Parses 32 hex digits (K, OP, OPc as subscriber files write them).
pub fn parse_key(s: &str) -> Option<Key> {
    let s = s.trim();
    if s.len() != 32 {
        return None;
    }
    let mut k = [0u8; 16];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    /// TS 35.208 test sets 1 and 2 (the same values as TS 35.207's).
    #[test]
    fn conformance_test_sets() {
        struct Set {
            k: Key,
            rand: Key,
            sqn: [u8; 6],
            amf: [u8; 2],
            op: Key,
            opc: Key,
            f1: [u8; 8],
            f1s: [u8; 8],
            f2: [u8; 8],
            f3: Key,
            f4: Key,
            f5: [u8; 6],
        }
        let sets = [
            Set {
                k: hex!("465b5ce8b199b49faa5f0a2ee238a6bc"),
                rand: hex!("23553cbe9637a89d218ae64dae47bf35"),
                sqn: hex!("ff9bb4d0b607"),
                amf: hex!("b9b9"),
                op: hex!("cdc202d5123e20f62b6d676ac72cb318"),
                opc: hex!("cd63cb71954a9f4e48a5994e37a02baf"),
                f1: hex!("4a9ffac354dfafb3"),
                f1s: hex!("01cfaf9ec4e871e9"),
                f2: hex!("a54211d5e3ba50bf"),
                f3: hex!("b40ba9a3c58b2a05bbf0d987b21bf8cb"),
                f4: hex!("f769bcd751044604127672711c6d3441"),
                f5: hex!("aa689c648370"),
            },
            Set {
                k: hex!("0396eb317b6d1c36f19c1c84cd6ffd16"),
                rand: hex!("c00d603103dcee52c4478119494202e8"),
                sqn: hex!("fd8eef40df7d"),
                amf: hex!("af17"),
                op: hex!("ff53bade17df5d4e793073ce9d7579fa"),
                opc: hex!("53c15671c60a4b731c55b4a441c0bde2"),
                f1: hex!("5df5b31807e258b0"),
                f1s: hex!("a8c016e51ef4a343"),
                f2: hex!("d3a628ed988620f0"),
                f3: hex!("58c433ff7a7082acd424220f2b67c556"),
                f4: hex!("21a8c1f929702adb3e738488b9f5c5da"),
                f5: hex!("c47783995f72"),
            },
        ];
        for (i, s) in sets.iter().enumerate() {
            let m = Milenage::with_op(&s.k, &s.op);
            assert_eq!(m.opc(), s.opc, "set {}", i + 1);
            assert_eq!(
                m.f1(&s.rand, &s.sqn, &s.amf),
                (s.f1, s.f1s),
                "set {}",
                i + 1
            );
            let o = Milenage::with_opc(&s.k, &s.opc).f2345(&s.rand);
            assert_eq!(
                (o.res, o.ck, o.ik, o.ak),
                (s.f2, s.f3, s.f4, s.f5),
                "set {}",
                i + 1
            );
        }
        // f5* of test set 1.
        let m = Milenage::with_opc(&sets[0].k, &sets[0].opc);
        assert_eq!(m.f2345(&sets[0].rand).ak_star, hex!("451e8beca43b"));
    }

    #[test]
    fn aka_round_trip_wrong_key_and_resync() {
        let k = hex!("465b5ce8b199b49faa5f0a2ee238a6bc");
        let opc = hex!("cd63cb71954a9f4e48a5994e37a02baf");
        let hss = Milenage::with_opc(&k, &opc);
        let rand = hex!("00112233445566778899aabbccddeeff");
        let v = vector(&hss, &rand, &sqn_bytes(33), &hex!("8000"));
        // The USIM with the same key accepts, and its RES equals XRES.
        let usim = Milenage::with_opc(&k, &opc);
        let (o, sqn) = usim_check(&usim, &v.rand, &v.autn, 32).unwrap();
        assert_eq!((o.res, sqn), (v.xres, 33));
        // A USIM with another key refuses the network.
        let other = Milenage::with_opc(&hex!("00000000000000000000000000000001"), &opc);
        assert_eq!(
            usim_check(&other, &v.rand, &v.autn, 0),
            Err(UsimError::MacFailure)
        );
        // A stale SQN: AUTS lets the HSS learn SQN_MS.
        let Err(UsimError::SyncFailure { auts }) = usim_check(&usim, &v.rand, &v.autn, 1000) else {
            panic!("expected a sync failure")
        };
        assert_eq!(resync(&hss, &v.rand, &auts), Some(1000));
        let mut bad = auts;
        bad[13] ^= 1;
        assert_eq!(resync(&hss, &v.rand, &bad), None);
    }

    #[test]
    fn keys_parse() {
        assert_eq!(
            parse_key("465B5CE8B199B49FAA5F0A2EE238A6BC"),
            Some(hex!("465b5ce8b199b49faa5f0a2ee238a6bc"))
        );
        assert_eq!(parse_key("465b"), None);
        assert_eq!(parse_key("zz5b5ce8b199b49faa5f0a2ee238a6bc"), None);
    }
}
