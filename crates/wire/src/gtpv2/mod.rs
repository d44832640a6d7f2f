//! GTPv2-C, the control plane between MME, SGW and PGW (3GPP TS 29.274), on UDP 2123.
//!
//! ```text
//!  0               1               2               3
//! +-----+-+-+-+---+---------------+-------------------------------+
//! | Ver |P|T|MP | * | Message Type  |     Length (after 4 octets)  |
//! +-----+-+-+-+---+---------------+-------------------------------+
//! |              TEID (present when T = 1)                        |
//! +-----------------------------------------------+---------------+
//! |          Sequence Number (24 bits)            |     Spare     |
//! +-----------------------------------------------+---------------+
//! | IE: Type (8) | Length (16) | CR (4) Instance (4) | value ...
//! ```
//!
//! A generic TLV layer ([`Packet`], [`IeIter`], [`Writer`]), typed values for the IEs that
//! session set-up needs, and the messages themselves ([`message::Repr`]). Grouped IEs (Bearer Context) hold IEs and parse with the same iterator.
//! No maintained Rust crate encodes GTPv2-C as views over a buffer, so it is ours.

pub mod message;

use crate::{need, Error, Result};
use core::net::Ipv4Addr;

pub const UDP_PORT: u16 = 2123;
const LAYER: &str = "gtpv2";

/// An enum of the protocol numbers we know, which keeps any other as `Unknown(n)`, with both
/// conversions (smoltcp's `enum_with_unknown!`, for one octet): a peer may send what we do not
/// know; it is counted and answered as the spec says, never lost.
macro_rules! enum_with_unknown {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $n:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)*
            Unknown(u8),
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v {
                    $($n => $name::$v,)*
                    v => $name::Unknown(v),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(t: $name) -> u8 {
                match t {
                    $($name::$v => $n,)*
                    $name::Unknown(v) => v,
                }
            }
        }
    };
}

enum_with_unknown! {
    /// A GTPv2-C message type (TS 29.274 table 6.1-1).
    pub enum MessageType {
        EchoRequest = 1,
        EchoResponse = 2,
        CreateSessionRequest = 32,
        CreateSessionResponse = 33,
        ModifyBearerRequest = 34,
        ModifyBearerResponse = 35,
        DeleteSessionRequest = 36,
        DeleteSessionResponse = 37,
        PgwRestartNotification = 179,
        PgwRestartNotificationAck = 180,
    }
}

impl MessageType {
    /// Whether it is a request (TS 29.274 §7.6: one that expects a response).
    pub fn is_request(self) -> bool {
        use MessageType::*;
        match self {
            EchoRequest
            | CreateSessionRequest
            | ModifyBearerRequest
            | DeleteSessionRequest
            | PgwRestartNotification => true,
            Unknown(_)
            | EchoResponse
            | CreateSessionResponse
            | ModifyBearerResponse
            | DeleteSessionResponse
            | PgwRestartNotificationAck => false,
        }
    }
}

/// The message types by their specification names.
pub mod msg {
    use super::MessageType;
    pub const ECHO_REQUEST: MessageType = MessageType::EchoRequest;
    pub const ECHO_RESPONSE: MessageType = MessageType::EchoResponse;
    pub const CREATE_SESSION_REQUEST: MessageType = MessageType::CreateSessionRequest;
    pub const CREATE_SESSION_RESPONSE: MessageType = MessageType::CreateSessionResponse;
    pub const MODIFY_BEARER_REQUEST: MessageType = MessageType::ModifyBearerRequest;
    pub const MODIFY_BEARER_RESPONSE: MessageType = MessageType::ModifyBearerResponse;
    pub const DELETE_SESSION_REQUEST: MessageType = MessageType::DeleteSessionRequest;
    pub const DELETE_SESSION_RESPONSE: MessageType = MessageType::DeleteSessionResponse;
    pub const PGW_RESTART_NOTIFICATION: MessageType = MessageType::PgwRestartNotification;
    pub const PGW_RESTART_NOTIFICATION_ACK: MessageType = MessageType::PgwRestartNotificationAck;
}

enum_with_unknown! {
    /// An IE type (TS 29.274 table 8.1-1).
    pub enum IeType {
        Imsi = 1,
        Cause = 2,
        Recovery = 3,
        Apn = 71,
        Ambr = 72,
        Ebi = 73,
        IpAddress = 74,
        Indication = 77,
        Paa = 79,
        BearerQos = 80,
        RatType = 82,
        ServingNetwork = 83,
        FTeid = 87,
        BearerContext = 93,
        PdnType = 99,
        ApnRestriction = 127,
        SelectionMode = 128,
    }
}

/// The IE types by their specification names.
pub mod ie {
    use super::IeType;
    pub const IMSI: IeType = IeType::Imsi;
    pub const CAUSE: IeType = IeType::Cause;
    pub const RECOVERY: IeType = IeType::Recovery;
    pub const APN: IeType = IeType::Apn;
    pub const AMBR: IeType = IeType::Ambr;
    pub const EBI: IeType = IeType::Ebi;
    pub const IP_ADDRESS: IeType = IeType::IpAddress;
    pub const INDICATION: IeType = IeType::Indication;
    pub const PAA: IeType = IeType::Paa;
    pub const BEARER_QOS: IeType = IeType::BearerQos;
    pub const RAT_TYPE: IeType = IeType::RatType;
    pub const SERVING_NETWORK: IeType = IeType::ServingNetwork;
    pub const F_TEID: IeType = IeType::FTeid;
    pub const BEARER_CONTEXT: IeType = IeType::BearerContext;
    pub const PDN_TYPE: IeType = IeType::PdnType;
    pub const APN_RESTRICTION: IeType = IeType::ApnRestriction;
    pub const SELECTION_MODE: IeType = IeType::SelectionMode;
}

/// F-TEID interface types (TS 29.274 §8.22).
pub mod iface {
    pub const S1U_ENODEB: u8 = 0;
    pub const S1U_SGW: u8 = 1;
    pub const S5S8U_SGW: u8 = 4;
    pub const S5S8U_PGW: u8 = 5;
    pub const S5S8C_SGW: u8 = 6;
    pub const S5S8C_PGW: u8 = 7;
    pub const S11_MME: u8 = 10;
    pub const S11S4_SGW: u8 = 11;
}

/// Cause values used here (TS 29.274 table 8.4-1).
pub mod cause {
    pub const REQUEST_ACCEPTED: u8 = 16;
    pub const CONTEXT_NOT_FOUND: u8 = 64;
    pub const MANDATORY_IE_MISSING: u8 = 70;
    pub const NO_RESOURCES_AVAILABLE: u8 = 73;
    pub const ALL_DYNAMIC_ADDRESSES_OCCUPIED: u8 = 84;
}

/// A GTPv2-C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub message_type: MessageType,
    /// Present on all messages but Echo (T flag).
    pub teid: Option<u32>,
    /// 24 bits.
    pub sequence: u32,
}

impl Header {
    pub fn len(&self) -> usize {
        if self.teid.is_some() {
            12
        } else {
            8
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A read view of a GTPv2-C message over any buffer (`&[u8]`, `Vec<u8>`), as GTP-U's and
/// VXLAN's: checked once by [`new_checked`](Self::new_checked), then read without copying.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
    /// The message's length (the buffer may hold more: padding, a second message).
    len: usize,
    header: Header,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version, length, and that the IEs are well-formed TLVs.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let buf = buffer.as_ref();
        need(LAYER, buf, 0, 8)?;
        let version = buf[0] >> 5;
        if version != 2 {
            return Err(Error::BadVersion {
                layer: LAYER,
                version,
            });
        }
        let t = buf[0] & 0x08 != 0;
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let total = 4 + len;
        need(LAYER, buf, 0, total)?;
        let hl = if t { 12 } else { 8 };
        if total < hl {
            return Err(Error::BadLength {
                layer: LAYER,
                offset: 2,
                value: len,
            });
        }
        let (teid, s) = if t {
            (
                Some(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]])),
                8,
            )
        } else {
            (None, 4)
        };
        let sequence = u32::from_be_bytes([0, buf[s], buf[s + 1], buf[s + 2]]);
        let header = Header {
            message_type: MessageType::from(buf[1]),
            teid,
            sequence,
        };
        let p = Packet {
            buf: buffer,
            len: total,
            header,
        };
        // Every IE must fit (grouped IEs are checked when read).
        for r in p.ies() {
            r?;
        }
        Ok(p)
    }

    pub fn header(&self) -> Header {
        self.header
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf.as_ref()[..self.len]
    }

    /// The top-level IEs.
    pub fn ies(&self) -> IeIter<'_> {
        IeIter::new(&self.as_bytes()[self.header.len()..])
    }

    /// The first top-level IE of `kind` and `instance`.
    pub fn find(&self, kind: IeType, instance: u8) -> Option<Ie<'_>> {
        self.ies()
            .flatten()
            .find(|i| i.kind == kind && i.instance == instance)
    }
}

/// One IE: its type, instance and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ie<'a> {
    pub kind: IeType,
    pub instance: u8,
    pub value: &'a [u8],
}

impl<'a> Ie<'a> {
    /// The IEs inside a grouped IE.
    pub fn group(&self) -> IeIter<'a> {
        IeIter::new(self.value)
    }

    pub fn find(&self, kind: IeType, instance: u8) -> Option<Ie<'a>> {
        self.group()
            .flatten()
            .find(|i| i.kind == kind && i.instance == instance)
    }

    pub fn u8(&self) -> Option<u8> {
        self.value.first().copied()
    }
}

/// Iterates over IEs; stops after the first error.
#[derive(Debug, Clone)]
pub struct IeIter<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> IeIter<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Self { rest: b, offset: 0 }
    }
}

impl<'a> Iterator for IeIter<'a> {
    type Item = Result<Ie<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        let r = (|| {
            need("gtpv2 ie", b, 0, 4)?;
            let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
            need("gtpv2 ie", b, 4, len)?;
            Ok((
                Ie {
                    kind: IeType::from(b[0]),
                    instance: b[3] & 0x0f,
                    value: &b[4..4 + len],
                },
                4 + len,
            ))
        })();
        match r {
            Ok((ie, n)) => {
                self.rest = &b[n..];
                self.offset += n;
                Some(Ok(ie))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Builds a message (IEs appended in order; grouped IEs by nesting).
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    groups: Vec<usize>,
}

impl Writer {
    pub fn new(h: Header) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.push((2 << 5) | if h.teid.is_some() { 0x08 } else { 0 });
        buf.push(u8::from(h.message_type));
        buf.extend_from_slice(&[0, 0]);
        if let Some(t) = h.teid {
            buf.extend_from_slice(&t.to_be_bytes());
        }
        buf.extend_from_slice(&(h.sequence & 0x00ff_ffff).to_be_bytes()[1..]);
        buf.push(0);
        Self {
            buf,
            groups: Vec::new(),
        }
    }

    pub fn ie(mut self, kind: IeType, instance: u8, value: &[u8]) -> Self {
        self.buf.push(u8::from(kind));
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.push(instance & 0x0f);
        self.buf.extend_from_slice(value);
        self
    }

    /// Opens a grouped IE; the IEs until [`end`](Self::end) go inside it.
    pub fn group(mut self, kind: IeType, instance: u8) -> Self {
        self.groups.push(self.buf.len());
        self.buf
            .extend_from_slice(&[u8::from(kind), 0, 0, instance & 0x0f]);
        self
    }

    pub fn end(mut self) -> Self {
        if let Some(at) = self.groups.pop() {
            let len = (self.buf.len() - at - 4) as u16;
            self.buf[at + 1..at + 3].copy_from_slice(&len.to_be_bytes());
        }
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        while !self.groups.is_empty() {
            self = self.end();
        }
        let len = (self.buf.len() - 4) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

/// Typed IE values.
pub mod value {
    use super::*;

    /// IMSI (and MSISDN) digits in TBCD: two digits an octet, low nibble first, 0xF filler.
    pub fn tbcd(digits: &str) -> Option<Vec<u8>> {
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let d: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
        Some(
            d.chunks(2)
                .map(|c| c[0] | (c.get(1).copied().unwrap_or(0x0f) << 4))
                .collect(),
        )
    }

    pub fn tbcd_decode(v: &[u8]) -> Option<String> {
        let mut s = String::new();
        for b in v {
            for n in [b & 0x0f, b >> 4] {
                match n {
                    0..=9 => s.push(char::from(b'0' + n)),
                    0x0f => {}
                    _ => return None,
                }
            }
        }
        Some(s)
    }

    /// Cause: value, then flags (PCE, BCE, CS) zero.
    pub fn cause(c: u8) -> [u8; 2] {
        [c, 0]
    }

    /// Fully qualified TEID with an IPv4 address.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Fteid {
        pub interface: u8,
        pub teid: u32,
        pub ipv4: Ipv4Addr,
    }

    impl Fteid {
        pub fn encode(&self) -> [u8; 9] {
            let mut b = [0u8; 9];
            b[0] = 0x80 | (self.interface & 0x3f);
            b[1..5].copy_from_slice(&self.teid.to_be_bytes());
            b[5..9].copy_from_slice(&self.ipv4.octets());
            b
        }

        pub fn decode(v: &[u8]) -> Option<Self> {
            if v.len() < 9 || v[0] & 0x80 == 0 {
                return None;
            }
            Some(Self {
                interface: v[0] & 0x3f,
                teid: u32::from_be_bytes([v[1], v[2], v[3], v[4]]),
                ipv4: Ipv4Addr::new(v[5], v[6], v[7], v[8]),
            })
        }
    }

    /// APN as DNS labels ("internet" -> 8 "internet").
    pub fn apn(name: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for l in name.split('.') {
            if l.is_empty() || l.len() > 63 {
                return None;
            }
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        Some(out)
    }

    pub fn apn_decode(v: &[u8]) -> Option<String> {
        let mut labels = Vec::new();
        let mut at = 0;
        while at < v.len() {
            let n = usize::from(v[at]);
            let l = v.get(at + 1..at + 1 + n)?;
            labels.push(std::str::from_utf8(l).ok()?);
            at += 1 + n;
        }
        Some(labels.join("."))
    }

    /// Serving network: MCC and MNC digits in the E.212 octet order.
    pub fn serving_network(mcc: &str, mnc: &str) -> Option<[u8; 3]> {
        let d = |s: &str| -> Option<Vec<u8>> {
            s.bytes()
                .map(|b| b.is_ascii_digit().then(|| b - b'0'))
                .collect()
        };
        let (c, n) = (d(mcc)?, d(mnc)?);
        if c.len() != 3 || !(2..=3).contains(&n.len()) {
            return None;
        }
        let n3 = if n.len() == 3 { n[2] } else { 0x0f };
        Some([c[0] | (c[1] << 4), c[2] | (n3 << 4), n[0] | (n[1] << 4)])
    }

    /// APN-AMBR, kbit/s up and down.
    pub fn ambr(up: u32, down: u32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&up.to_be_bytes());
        b[4..].copy_from_slice(&down.to_be_bytes());
        b
    }

    /// PDN Address Allocation for IPv4.
    pub fn paa_v4(a: Ipv4Addr) -> [u8; 5] {
        let o = a.octets();
        [1, o[0], o[1], o[2], o[3]]
    }

    pub fn paa_v4_decode(v: &[u8]) -> Option<Ipv4Addr> {
        (v.len() >= 5 && v[0] & 0x07 == 1).then(|| Ipv4Addr::new(v[1], v[2], v[3], v[4]))
    }

    /// Bearer QoS: ARP (priority level, no pre-emption), QCI, MBR and GBR up/down (kbit/s, 5
    /// octets each).
    pub fn bearer_qos(priority: u8, qci: u8, mbr: (u64, u64), gbr: (u64, u64)) -> [u8; 22] {
        let mut b = [0u8; 22];
        b[0] = (priority & 0x0f) << 2 | 0x01; // PVI = 1: may be pre-empted
        b[1] = qci;
        for (i, v) in [mbr.0, mbr.1, gbr.0, gbr.1].into_iter().enumerate() {
            b[2 + i * 5..7 + i * 5].copy_from_slice(&v.to_be_bytes()[3..]);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_message_and_ie_type_round_trips_and_unknown_ones_are_kept() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(MessageType::from(v)), v);
            assert_eq!(u8::from(IeType::from(v)), v);
        }
        assert_eq!(IeType::from(200), IeType::Unknown(200));
        assert_eq!(MessageType::from(99), MessageType::Unknown(99));
        assert!(MessageType::from(1).is_request());
        assert!(!MessageType::from(2).is_request());
        assert!(!MessageType::Unknown(99).is_request());
        // A message of a type we do not know parses, and keeps its number.
        let b = Writer::new(Header {
            message_type: MessageType::Unknown(99),
            teid: Some(7),
            sequence: 5,
        })
        .finish();
        let p = Packet::new_checked(&b).unwrap();
        assert_eq!(p.header().message_type, MessageType::Unknown(99));
        assert_eq!(b[1], 99);
        // An IE of a type we do not know is kept too.
        let b = Writer::new(Header {
            message_type: MessageType::EchoRequest,
            teid: None,
            sequence: 1,
        })
        .ie(IeType::Unknown(200), 0, &[1, 2])
        .finish();
        let p = Packet::new_checked(&b).unwrap();
        assert_eq!(
            p.find(IeType::Unknown(200), 0).map(|i| i.value),
            Some(&[1u8, 2][..])
        );
    }

    use super::value::*;
    use super::*;
    use hex_literal::hex;

    fn create_session() -> Vec<u8> {
        Writer::new(Header {
            message_type: msg::CREATE_SESSION_REQUEST,
            teid: Some(0),
            sequence: 0x0abcde,
        })
        .ie(ie::IMSI, 0, &tbcd("001010000000001").unwrap())
        .ie(
            ie::SERVING_NETWORK,
            0,
            &serving_network("001", "01").unwrap(),
        )
        .ie(ie::RAT_TYPE, 0, &[6])
        .ie(
            ie::F_TEID,
            0,
            &Fteid {
                interface: iface::S11_MME,
                teid: 0x1111,
                ipv4: Ipv4Addr::new(172, 16, 1, 5),
            }
            .encode(),
        )
        .ie(ie::APN, 0, &apn("internet").unwrap())
        .ie(ie::SELECTION_MODE, 0, &[0])
        .ie(ie::PDN_TYPE, 0, &[1])
        .ie(ie::PAA, 0, &paa_v4(Ipv4Addr::UNSPECIFIED))
        .ie(ie::APN_RESTRICTION, 0, &[0])
        .ie(ie::AMBR, 0, &ambr(100_000, 200_000))
        .group(ie::BEARER_CONTEXT, 0)
        .ie(ie::EBI, 0, &[5])
        .ie(ie::BEARER_QOS, 0, &bearer_qos(9, 9, (0, 0), (0, 0)))
        .end()
        .finish()
    }

    #[test]
    fn golden_header_and_ies() {
        let echo = Writer::new(Header {
            message_type: msg::ECHO_REQUEST,
            teid: None,
            sequence: 7,
        })
        .ie(ie::RECOVERY, 0, &[3])
        .finish();
        assert_eq!(echo, hex!("40 01 0009 000007 00  03 0001 00 03"));
        assert_eq!(
            tbcd("001010000000001").unwrap(),
            hex!("00 01 01 00 00 00 00 f1")
        );
        assert_eq!(serving_network("001", "01").unwrap(), hex!("00 f1 10"));
        assert_eq!(
            Fteid {
                interface: 10,
                teid: 0x1111,
                ipv4: Ipv4Addr::new(172, 16, 1, 5)
            }
            .encode(),
            hex!("8a 00001111 ac100105")
        );
        assert_eq!(
            apn("internet.mnc001").unwrap(),
            hex!("08 696e7465726e6574 06 6d6e63303031")
        );
    }

    #[test]
    fn round_trip_with_a_grouped_ie() {
        let m = create_session();
        let p = Packet::new_checked(&m).unwrap();
        assert_eq!(
            p.header(),
            Header {
                message_type: MessageType::from(32),
                teid: Some(0),
                sequence: 0x0abcde
            }
        );
        assert_eq!(
            tbcd_decode(p.find(ie::IMSI, 0).unwrap().value).unwrap(),
            "001010000000001"
        );
        let f = Fteid::decode(p.find(ie::F_TEID, 0).unwrap().value).unwrap();
        assert_eq!(f.teid, 0x1111);
        assert_eq!(
            apn_decode(p.find(ie::APN, 0).unwrap().value).unwrap(),
            "internet"
        );
        let bc = p.find(ie::BEARER_CONTEXT, 0).unwrap();
        assert_eq!(bc.find(ie::EBI, 0).unwrap().u8(), Some(5));
        assert_eq!(bc.find(ie::BEARER_QOS, 0).unwrap().value.len(), 22);
    }

    #[test]
    fn rejects_bad_input() {
        let m = create_session();
        for n in 0..m.len() {
            assert!(Packet::new_checked(&m[..n]).is_err(), "prefix {n}");
        }
        let mut v1 = m.clone();
        v1[0] = 0x28; // version 1
        assert!(matches!(
            Packet::new_checked(&v1),
            Err(Error::BadVersion { version: 1, .. })
        ));
        let mut long_ie = m.clone();
        long_ie[12 + 2] = 0xff; // the IMSI claims 255 octets
        assert!(Packet::new_checked(&long_ie).is_err());
        assert_eq!(tbcd("12a"), None);
        assert_eq!(tbcd_decode(&[0xab]), None);
        assert_eq!(apn_decode(&[9, b'a']), None);
        assert_eq!(
            Fteid::decode(&[0x0a, 0, 0, 0, 1, 1, 2, 3, 4]),
            None,
            "no address flag"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            if let Ok(p) = Packet::new_checked(&data) {
                for ie in p.ies().flatten() {
                    for inner in ie.group() { let _ = inner; }
                    let _ = Fteid::decode(ie.value);
                    let _ = tbcd_decode(ie.value);
                    let _ = apn_decode(ie.value);
                    let _ = paa_v4_decode(ie.value);
                }
            }
        }
    }
}
