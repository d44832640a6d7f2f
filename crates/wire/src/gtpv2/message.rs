//! The GTPv2-C messages the MME, SGW and PGW exchange (3GPP TS 29.274), as typed
//! representations over the TLV layer: each message a struct that parses from a checked
//! [`Packet`] and emits its bytes ([`Message`]), and [`Repr`], any of them by message type
//! (a type we do not model is kept by number).
//!
//! IE instances follow the message tables of TS 29.274 §7.2: in a Create Session Request the
//! sender's F-TEID is instance 0 and the PGW's control-plane address instance 1; inside "Bearer
//! Context to be created" the S5/S8-U SGW F-TEID is instance 2; in the response's "Bearer
//! Context created" the S1-U SGW F-TEID is instance 0 and the S5/S8-U PGW F-TEID instance 2.

use super::value::{
    ambr, apn, apn_decode, bearer_qos, cause as cause_v, paa_v4, paa_v4_decode, serving_network,
    tbcd, tbcd_decode, Fteid,
};
use super::{cause, ie, msg, Header, Ie, MessageType, Packet, Writer};
use core::net::Ipv4Addr;

/// PDN Type values (TS 29.274 §8.34): IPv4 1, Ethernet 5 (Release 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum PdnType {
    Ipv4,
    #[default]
    Ethernet,
}

impl PdnType {
    pub fn code(self) -> u8 {
        match self {
            PdnType::Ipv4 => 1,
            PdnType::Ethernet => 5,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c & 0x07 {
            1 => Some(PdnType::Ipv4),
            5 => Some(PdnType::Ethernet),
            _ => None,
        }
    }

    /// The UE's IP MTU: the S1-U and S5 links carry 1500-octet IP packets, GTP-U over IPv4/UDP
    /// adds 36 octets, an Ethernet PDU's own header 14 more.
    pub fn ue_mtu(self) -> u16 {
        match self {
            PdnType::Ipv4 => 1500 - 36,
            PdnType::Ethernet => 1500 - 36 - 14,
        }
    }
}

/// The default bearer's EPS bearer id.
pub const DEFAULT_EBI: u8 = 5;

/// Why a message was refused: the cause to answer with (TS 29.274 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub u8);

const MISSING: Refused = Refused(cause::MANDATORY_IE_MISSING);

impl<T: AsRef<[u8]>> Packet<T> {
    /// The Cause of a response (instance 0), if it has one.
    pub fn cause(&self) -> Option<u8> {
        self.find(ie::CAUSE, 0).and_then(|i| i.u8())
    }

    /// The sender's restart counter (Recovery IE), if it sent one.
    pub fn recovery(&self) -> Option<u8> {
        self.find(ie::RECOVERY, 0).and_then(|i| i.u8())
    }
}

fn fteid(p: Option<Ie<'_>>) -> Option<Fteid> {
    Fteid::decode(p?.value)
}

/// One GTPv2-C message type: how it reads from a checked packet and writes its IEs.
pub trait Message: Sized {
    const TYPE: MessageType;
    /// Reads the message's IEs; a missing mandatory IE is refused with its cause.
    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused>;
    /// Appends the message's IEs.
    fn write(&self, w: Writer) -> Writer;
    /// The whole message: the header with `teid` (the receiver's; Echo carries none) and
    /// `sequence`, then the IEs.
    fn emit(&self, teid: u32, sequence: u32) -> Vec<u8> {
        let echo = matches!(Self::TYPE, msg::ECHO_REQUEST | msg::ECHO_RESPONSE);
        let h = Header {
            message_type: Self::TYPE,
            teid: (!echo).then_some(teid),
            sequence,
        };
        self.write(Writer::new(h)).finish()
    }
}

/// Echo Request with the sender's restart counter (TS 29.274 §7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRequest {
    pub recovery: Option<u8>,
}

/// Echo Response with the sender's restart counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoResponse {
    pub recovery: Option<u8>,
}

impl Message for EchoRequest {
    const TYPE: MessageType = msg::ECHO_REQUEST;
    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        Ok(Self {
            recovery: p.recovery(),
        })
    }
    fn write(&self, w: Writer) -> Writer {
        match self.recovery {
            Some(r) => w.ie(ie::RECOVERY, 0, &[r]),
            None => w,
        }
    }
}

impl Message for EchoResponse {
    const TYPE: MessageType = msg::ECHO_RESPONSE;
    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        Ok(Self {
            recovery: p.recovery(),
        })
    }
    fn write(&self, w: Writer) -> Writer {
        EchoRequest {
            recovery: self.recovery,
        }
        .write(w)
    }
}

/// Create Session Request (MME -> SGW on S11, SGW -> PGW on S5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSessionRequest {
    pub imsi: String,
    pub apn: String,
    pub pdn_type: PdnType,
    /// Sender F-TEID for control plane (instance 0).
    pub sender: Fteid,
    /// The PGW's control-plane address (instance 1, TEID 0): where the SGW forwards.
    pub pgw_c: Option<Fteid>,
    /// Requested address (0.0.0.0: the PGW chooses).
    pub paa: Ipv4Addr,
    pub ebi: u8,
    /// S5/S8-U SGW F-TEID in the bearer context (SGW -> PGW only).
    pub s5u_sgw: Option<Fteid>,
}

impl Message for CreateSessionRequest {
    const TYPE: MessageType = msg::CREATE_SESSION_REQUEST;

    fn write(&self, w: Writer) -> Writer {
        let mut w = w
            .ie(ie::IMSI, 0, &tbcd(&self.imsi).unwrap_or_default())
            .ie(
                ie::SERVING_NETWORK,
                0,
                &serving_network("001", "01").unwrap_or_default(),
            )
            .ie(ie::RAT_TYPE, 0, &[6]) // E-UTRAN
            .ie(ie::F_TEID, 0, &self.sender.encode());
        if let Some(p) = &self.pgw_c {
            w = w.ie(ie::F_TEID, 1, &p.encode());
        }
        w = w
            .ie(ie::APN, 0, &apn(&self.apn).unwrap_or_default())
            .ie(ie::SELECTION_MODE, 0, &[0])
            .ie(ie::PDN_TYPE, 0, &[self.pdn_type.code()])
            .ie(ie::PAA, 0, &paa_v4(self.paa))
            .ie(ie::APN_RESTRICTION, 0, &[0])
            .ie(ie::AMBR, 0, &ambr(100_000, 200_000))
            .group(ie::BEARER_CONTEXT, 0)
            .ie(ie::EBI, 0, &[self.ebi]);
        if let Some(u) = &self.s5u_sgw {
            w = w.ie(ie::F_TEID, 2, &u.encode());
        }
        w.ie(ie::BEARER_QOS, 0, &bearer_qos(9, 9, (0, 0), (0, 0)))
            .end()
    }

    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        let imsi = p
            .find(ie::IMSI, 0)
            .and_then(|i| tbcd_decode(i.value))
            .ok_or(MISSING)?;
        let sender = fteid(p.find(ie::F_TEID, 0)).ok_or(MISSING)?;
        let apn = p
            .find(ie::APN, 0)
            .and_then(|i| apn_decode(i.value))
            .ok_or(MISSING)?;
        let pdn_type = p
            .find(ie::PDN_TYPE, 0)
            .and_then(|i| i.u8())
            .and_then(PdnType::from_code)
            .ok_or(MISSING)?;
        let paa = p
            .find(ie::PAA, 0)
            .and_then(|i| paa_v4_decode(i.value))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let bc = p.find(ie::BEARER_CONTEXT, 0).ok_or(MISSING)?;
        let ebi = bc.find(ie::EBI, 0).and_then(|i| i.u8()).ok_or(MISSING)? & 0x0f;
        Ok(Self {
            imsi,
            apn,
            pdn_type,
            sender,
            pgw_c: fteid(p.find(ie::F_TEID, 1)),
            paa,
            ebi,
            s5u_sgw: fteid(bc.find(ie::F_TEID, 2)),
        })
    }
}

/// Create Session Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSessionResponse {
    pub cause: u8,
    pub sender: Option<Fteid>,
    pub pgw_c: Option<Fteid>,
    pub paa: Option<Ipv4Addr>,
    pub ebi: u8,
    /// S1-U SGW F-TEID (instance 0), in the SGW's answer to the MME.
    pub s1u_sgw: Option<Fteid>,
    /// S5/S8-U PGW F-TEID (instance 2).
    pub s5u_pgw: Option<Fteid>,
    /// The sender's restart counter (TS 29.274 §7.2.2: sent to a peer it talks to for the
    /// first time; we always send it).
    pub recovery: Option<u8>,
}

impl CreateSessionResponse {
    /// A refusal with `cause` for bearer `ebi`.
    pub fn refused(cause: u8, ebi: u8) -> Self {
        Self {
            cause,
            sender: None,
            pgw_c: None,
            paa: None,
            ebi,
            s1u_sgw: None,
            s5u_pgw: None,
            recovery: None,
        }
    }
}

impl Message for CreateSessionResponse {
    const TYPE: MessageType = msg::CREATE_SESSION_RESPONSE;

    fn write(&self, w: Writer) -> Writer {
        let mut w = w.ie(ie::CAUSE, 0, &cause_v(self.cause));
        if let Some(s) = &self.sender {
            w = w.ie(ie::F_TEID, 0, &s.encode());
        }
        if let Some(s) = &self.pgw_c {
            w = w.ie(ie::F_TEID, 1, &s.encode());
        }
        if let Some(a) = self.paa {
            w = w
                .ie(ie::PAA, 0, &paa_v4(a))
                .ie(ie::APN_RESTRICTION, 0, &[0]);
        }
        w = w
            .group(ie::BEARER_CONTEXT, 0)
            .ie(ie::EBI, 0, &[self.ebi])
            .ie(ie::CAUSE, 0, &cause_v(self.cause));
        if let Some(s) = &self.s1u_sgw {
            w = w.ie(ie::F_TEID, 0, &s.encode());
        }
        if let Some(s) = &self.s5u_pgw {
            w = w.ie(ie::F_TEID, 2, &s.encode());
        }
        let mut w = w.end();
        if let Some(r) = self.recovery {
            w = w.ie(ie::RECOVERY, 0, &[r]);
        }
        w
    }

    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        let c = p.cause().ok_or(MISSING)?;
        let bc = p.find(ie::BEARER_CONTEXT, 0);
        Ok(Self {
            cause: c,
            sender: fteid(p.find(ie::F_TEID, 0)),
            pgw_c: fteid(p.find(ie::F_TEID, 1)),
            paa: p.find(ie::PAA, 0).and_then(|i| paa_v4_decode(i.value)),
            ebi: bc
                .and_then(|b| b.find(ie::EBI, 0))
                .and_then(|i| i.u8())
                .unwrap_or(DEFAULT_EBI),
            s1u_sgw: bc.and_then(|b| fteid(b.find(ie::F_TEID, 0))),
            s5u_pgw: bc.and_then(|b| fteid(b.find(ie::F_TEID, 2))),
            recovery: p.recovery(),
        })
    }
}

/// Modify Bearer Request (MME -> SGW): the eNodeB's S1-U F-TEID for bearer `ebi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModifyBearerRequest {
    pub ebi: u8,
    pub enb: Fteid,
}

impl Message for ModifyBearerRequest {
    const TYPE: MessageType = msg::MODIFY_BEARER_REQUEST;
    fn write(&self, w: Writer) -> Writer {
        w.group(ie::BEARER_CONTEXT, 0)
            .ie(ie::EBI, 0, &[self.ebi])
            .ie(ie::F_TEID, 0, &self.enb.encode())
            .end()
    }
    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        let bc = p.find(ie::BEARER_CONTEXT, 0).ok_or(MISSING)?;
        let ebi = bc.find(ie::EBI, 0).and_then(|i| i.u8()).ok_or(MISSING)?;
        let enb = fteid(bc.find(ie::F_TEID, 0)).ok_or(MISSING)?;
        Ok(Self {
            ebi: ebi & 0x0f,
            enb,
        })
    }
}

/// Modify Bearer Response: the cause, for bearer `ebi`, with the SGW's S1-U F-TEID if it
/// changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModifyBearerResponse {
    pub cause: u8,
    pub ebi: u8,
    pub s1u_sgw: Option<Fteid>,
}

impl Message for ModifyBearerResponse {
    const TYPE: MessageType = msg::MODIFY_BEARER_RESPONSE;
    fn write(&self, w: Writer) -> Writer {
        let mut w = w
            .ie(ie::CAUSE, 0, &cause_v(self.cause))
            .group(ie::BEARER_CONTEXT, 0)
            .ie(ie::EBI, 0, &[self.ebi])
            .ie(ie::CAUSE, 0, &cause_v(self.cause));
        if let Some(f) = self.s1u_sgw {
            w = w.ie(ie::F_TEID, 0, &f.encode());
        }
        w.end()
    }
    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        let cause = p.cause().ok_or(MISSING)?;
        let bc = p.find(ie::BEARER_CONTEXT, 0);
        Ok(Self {
            cause,
            ebi: bc
                .and_then(|b| b.find(ie::EBI, 0))
                .and_then(|i| i.u8())
                .map_or(DEFAULT_EBI, |e| e & 0x0f),
            s1u_sgw: bc.and_then(|b| fteid(b.find(ie::F_TEID, 0))),
        })
    }
}

/// Delete Session Request: the linked EPS bearer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteSessionRequest {
    pub ebi: u8,
}

impl Message for DeleteSessionRequest {
    const TYPE: MessageType = msg::DELETE_SESSION_REQUEST;
    fn write(&self, w: Writer) -> Writer {
        w.ie(ie::EBI, 0, &[self.ebi])
    }
    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        let ebi = p.find(ie::EBI, 0).and_then(|i| i.u8()).ok_or(MISSING)?;
        Ok(Self { ebi: ebi & 0x0f })
    }
}

/// Messages that carry only a Cause (answers whose bearer contexts we do not use).
macro_rules! cause_only {
    ($($(#[$m:meta])* $name:ident = $t:expr;)*) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            pub cause: u8,
        }

        impl Message for $name {
            const TYPE: MessageType = $t;
            fn write(&self, w: Writer) -> Writer {
                w.ie(ie::CAUSE, 0, &cause_v(self.cause))
            }
            fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
                Ok(Self {
                    cause: p.cause().ok_or(MISSING)?,
                })
            }
        }
    )*};
}

cause_only! {
    /// Delete Session Response.
    DeleteSessionResponse = msg::DELETE_SESSION_RESPONSE;
    /// PGW Restart Notification Acknowledge.
    PgwRestartNotificationAck = msg::PGW_RESTART_NOTIFICATION_ACK;
}

/// PGW Restart Notification (TS 29.274 §7.9.5), SGW to MME: the PGW whose S5/S8 control
/// address is `pgw` restarted (its sessions are gone); `sgw` is the SGW's S11 address. Sent
/// with TEID 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgwRestartNotification {
    pub pgw: Ipv4Addr,
    pub sgw: Ipv4Addr,
}

impl Message for PgwRestartNotification {
    const TYPE: MessageType = msg::PGW_RESTART_NOTIFICATION;
    fn write(&self, w: Writer) -> Writer {
        w.ie(ie::IP_ADDRESS, 0, &self.pgw.octets())
            .ie(ie::IP_ADDRESS, 1, &self.sgw.octets())
    }
    fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        let ip = |instance| {
            p.find(ie::IP_ADDRESS, instance)
                .and_then(|i| <[u8; 4]>::try_from(i.value).ok())
                .map(Ipv4Addr::from)
                .ok_or(MISSING)
        };
        Ok(Self {
            pgw: ip(0)?,
            sgw: ip(1)?,
        })
    }
}

/// Any GTPv2-C message, by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    EchoRequest(EchoRequest),
    EchoResponse(EchoResponse),
    CreateSessionRequest(CreateSessionRequest),
    CreateSessionResponse(CreateSessionResponse),
    ModifyBearerRequest(ModifyBearerRequest),
    ModifyBearerResponse(ModifyBearerResponse),
    DeleteSessionRequest(DeleteSessionRequest),
    DeleteSessionResponse(DeleteSessionResponse),
    PgwRestartNotification(PgwRestartNotification),
    PgwRestartNotificationAck(PgwRestartNotificationAck),
    /// A message type we do not model (TS 29.274 §7.7.7: a receiver discards it), kept by
    /// number.
    Other(MessageType),
}

/// Calls `$f!(Variant)` for each modelled message, so that parse and emit list them once.
macro_rules! each_message {
    ($m:ident) => {
        $m!(
            EchoRequest,
            EchoResponse,
            CreateSessionRequest,
            CreateSessionResponse,
            ModifyBearerRequest,
            ModifyBearerResponse,
            DeleteSessionRequest,
            DeleteSessionResponse,
            PgwRestartNotification,
            PgwRestartNotificationAck
        )
    };
}

impl Repr {
    /// The message a checked packet holds.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Refused> {
        let t = p.header().message_type;
        macro_rules! by_type {
            ($($v:ident),*) => {
                $(if t == $v::TYPE {
                    return $v::parse(p).map(Repr::$v);
                })*
            };
        }
        each_message!(by_type);
        Ok(Repr::Other(t))
    }

    pub fn message_type(&self) -> MessageType {
        macro_rules! type_of {
            ($($v:ident),*) => {
                match self {
                    $(Repr::$v(_) => $v::TYPE,)*
                    Repr::Other(t) => *t,
                }
            };
        }
        each_message!(type_of)
    }

    /// The message's bytes (see [`Message::emit`]); a message of a type we do not model has
    /// only its header.
    pub fn emit(&self, teid: u32, sequence: u32) -> Vec<u8> {
        macro_rules! emit_each {
            ($($v:ident),*) => {
                match self {
                    $(Repr::$v(m) => m.emit(teid, sequence),)*
                    Repr::Other(t) => Writer::new(Header {
                        message_type: *t,
                        teid: Some(teid),
                        sequence,
                    })
                    .finish(),
                }
            };
        }
        each_message!(emit_each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gtpv2::iface;

    fn csr() -> CreateSessionRequest {
        CreateSessionRequest {
            imsi: "001010000000001".into(),
            apn: "internet".into(),
            pdn_type: PdnType::Ethernet,
            sender: Fteid {
                interface: iface::S5S8C_SGW,
                teid: 7,
                ipv4: Ipv4Addr::new(172, 16, 5, 3),
            },
            pgw_c: None,
            paa: Ipv4Addr::UNSPECIFIED,
            ebi: 5,
            s5u_sgw: Some(Fteid {
                interface: iface::S5S8U_SGW,
                teid: 9,
                ipv4: Ipv4Addr::new(172, 16, 5, 3),
            }),
        }
    }

    /// Every modelled message emits, checks as a packet, and parses back to itself through
    /// [`Repr`], with its header's type, TEID and sequence.
    #[test]
    fn every_message_round_trips_through_repr() {
        let f = csr().sender;
        let all = [
            Repr::EchoRequest(EchoRequest { recovery: Some(3) }),
            Repr::EchoResponse(EchoResponse { recovery: None }),
            Repr::CreateSessionRequest(csr()),
            Repr::CreateSessionResponse(CreateSessionResponse {
                cause: cause::REQUEST_ACCEPTED,
                sender: Some(f),
                pgw_c: None,
                paa: Some(Ipv4Addr::new(10, 45, 0, 2)),
                ebi: 5,
                s1u_sgw: None,
                s5u_pgw: Some(f),
                recovery: Some(3),
            }),
            Repr::CreateSessionResponse(CreateSessionResponse::refused(73, 5)),
            Repr::ModifyBearerRequest(ModifyBearerRequest { ebi: 5, enb: f }),
            Repr::ModifyBearerResponse(ModifyBearerResponse {
                cause: cause::REQUEST_ACCEPTED,
                ebi: 5,
                s1u_sgw: Some(f),
            }),
            Repr::DeleteSessionRequest(DeleteSessionRequest { ebi: 5 }),
            Repr::DeleteSessionResponse(DeleteSessionResponse { cause: 16 }),
            Repr::PgwRestartNotification(PgwRestartNotification {
                pgw: Ipv4Addr::new(172, 16, 5, 4),
                sgw: Ipv4Addr::new(172, 16, 1, 3),
            }),
            Repr::PgwRestartNotificationAck(PgwRestartNotificationAck { cause: 16 }),
            Repr::Other(MessageType::from(250)),
        ];
        for m in all {
            let b = m.emit(0x1234, 42);
            let p = Packet::new_checked(&b[..]).unwrap();
            let h = p.header();
            assert_eq!(h.message_type, m.message_type());
            assert_eq!(h.sequence, 42);
            let echo = matches!(m, Repr::EchoRequest(_) | Repr::EchoResponse(_));
            assert_eq!(h.teid, (!echo).then_some(0x1234), "{m:?}");
            assert_eq!(Repr::parse(&p), Ok(m));
        }
    }

    #[test]
    fn a_missing_mandatory_ie_is_refused_with_its_cause() {
        let h = |t| Header {
            message_type: t,
            teid: Some(0),
            sequence: 1,
        };
        // A Create Session Request without its bearer context.
        let b = Writer::new(h(msg::CREATE_SESSION_REQUEST))
            .ie(ie::IMSI, 0, &tbcd("001").unwrap())
            .finish();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(MISSING));
        // A PGW Restart Notification with only the PGW's address.
        let b = Writer::new(h(msg::PGW_RESTART_NOTIFICATION))
            .ie(ie::IP_ADDRESS, 0, &[172, 16, 5, 4])
            .finish();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(PgwRestartNotification::parse(&p), Err(MISSING));
        // Responses without a Cause.
        for t in [
            msg::CREATE_SESSION_RESPONSE,
            msg::MODIFY_BEARER_RESPONSE,
            msg::DELETE_SESSION_RESPONSE,
        ] {
            let b = Writer::new(h(t)).finish();
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p), Err(MISSING), "{t:?}");
        }
    }

    #[test]
    fn a_pgw_restart_notification_is_laid_out_as_ts_29_274_says() {
        let b = PgwRestartNotification {
            pgw: Ipv4Addr::new(172, 16, 5, 4),
            sgw: Ipv4Addr::new(172, 16, 1, 3),
        }
        .emit(0, 9);
        // Header with TEID 0, then two IP Address IEs (type 74), instances 0 and 1.
        assert_eq!(
            b,
            [
                0x48, 179, 0, 24, 0, 0, 0, 0, 0, 0, 9, 0, // header
                74, 0, 4, 0, 172, 16, 5, 4, // PGW S5/S8 control plane
                74, 0, 4, 1, 172, 16, 1, 3, // SGW S11
            ]
        );
    }
}
