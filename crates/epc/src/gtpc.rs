//! The GTPv2-C messages of session set-up (3GPP TS 29.274) as the MME, SGW and PGW use them:
//! typed builders over [`d11_wire::gtpv2::Writer`] and readers over its `Packet`.
//!
//! IE instances follow the message tables of TS 29.274 §7.2: in a Create Session Request the
//! sender's F-TEID is instance 0 and the PGW's control-plane address instance 1; inside "Bearer
//! Context to be created" the S5/S8-U SGW F-TEID is instance 2; in the response's "Bearer
//! Context created" the S1-U SGW F-TEID is instance 0 and the S5/S8-U PGW F-TEID instance 2.

use d11_wire::gtpv2::value::{
    ambr, apn, apn_decode, bearer_qos, cause as cause_v, paa_v4, paa_v4_decode, serving_network,
    tbcd, tbcd_decode, Fteid,
};
use d11_wire::gtpv2::{ie, msg, Header, Packet, Writer};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

pub use d11_wire::gtpv2::{cause, iface, UDP_PORT};

/// PDN Type values (TS 29.274 §8.34): IPv4 1, Ethernet 5 (Release 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
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

/// Why a message was refused: the cause to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub u8);

fn fteid(p: Option<d11_wire::gtpv2::Ie<'_>>) -> Option<Fteid> {
    Fteid::decode(p?.value)
}

fn header(message_type: MessageType, teid: Option<u32>, sequence: u32) -> Header {
    Header {
        message_type,
        teid,
        sequence,
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

impl CreateSessionRequest {
    pub fn encode(&self, teid: u32, seq: u32) -> Vec<u8> {
        let mut w = Writer::new(header(msg::CREATE_SESSION_REQUEST, Some(teid), seq))
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
            .finish()
    }

    pub fn decode(p: &Packet<'_>) -> Result<Self, Refused> {
        let missing = Refused(cause::MANDATORY_IE_MISSING);
        let imsi = p
            .find(ie::IMSI, 0)
            .and_then(|i| tbcd_decode(i.value))
            .ok_or(missing)?;
        let sender = fteid(p.find(ie::F_TEID, 0)).ok_or(missing)?;
        let apn = p
            .find(ie::APN, 0)
            .and_then(|i| apn_decode(i.value))
            .ok_or(missing)?;
        let pdn_type = p
            .find(ie::PDN_TYPE, 0)
            .and_then(|i| i.u8())
            .and_then(PdnType::from_code)
            .ok_or(missing)?;
        let paa = p
            .find(ie::PAA, 0)
            .and_then(|i| paa_v4_decode(i.value))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let bc = p.find(ie::BEARER_CONTEXT, 0).ok_or(missing)?;
        let ebi = bc.find(ie::EBI, 0).and_then(|i| i.u8()).ok_or(missing)? & 0x0f;
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

    pub fn encode(&self, teid: u32, seq: u32) -> Vec<u8> {
        let mut w = Writer::new(header(msg::CREATE_SESSION_RESPONSE, Some(teid), seq)).ie(
            ie::CAUSE,
            0,
            &cause_v(self.cause),
        );
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
        w.finish()
    }

    pub fn decode(p: &Packet<'_>) -> Result<Self, Refused> {
        let missing = Refused(cause::MANDATORY_IE_MISSING);
        let c = p.find(ie::CAUSE, 0).and_then(|i| i.u8()).ok_or(missing)?;
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
            recovery: read_recovery(p),
        })
    }
}

/// Modify Bearer Request (MME -> SGW): the eNodeB's S1-U F-TEID.
pub fn modify_bearer_request(teid: u32, seq: u32, ebi: u8, enb: Fteid) -> Vec<u8> {
    Writer::new(header(msg::MODIFY_BEARER_REQUEST, Some(teid), seq))
        .group(ie::BEARER_CONTEXT, 0)
        .ie(ie::EBI, 0, &[ebi])
        .ie(ie::F_TEID, 0, &enb.encode())
        .end()
        .finish()
}

/// Reads a Modify Bearer Request: (EBI, eNodeB F-TEID).
pub fn read_modify_bearer_request(p: &Packet<'_>) -> Result<(u8, Fteid), Refused> {
    let missing = Refused(cause::MANDATORY_IE_MISSING);
    let bc = p.find(ie::BEARER_CONTEXT, 0).ok_or(missing)?;
    let ebi = bc.find(ie::EBI, 0).and_then(|i| i.u8()).ok_or(missing)?;
    let f = fteid(bc.find(ie::F_TEID, 0)).ok_or(missing)?;
    Ok((ebi & 0x0f, f))
}

pub fn modify_bearer_response(
    teid: u32,
    seq: u32,
    c: u8,
    ebi: u8,
    s1u_sgw: Option<Fteid>,
) -> Vec<u8> {
    let mut w = Writer::new(header(msg::MODIFY_BEARER_RESPONSE, Some(teid), seq))
        .ie(ie::CAUSE, 0, &cause_v(c))
        .group(ie::BEARER_CONTEXT, 0)
        .ie(ie::EBI, 0, &[ebi])
        .ie(ie::CAUSE, 0, &cause_v(c));
    if let Some(f) = s1u_sgw {
        w = w.ie(ie::F_TEID, 0, &f.encode());
    }
    w.end().finish()
}

/// Delete Session Request: the linked EPS bearer id.
pub fn delete_session_request(teid: u32, seq: u32, ebi: u8) -> Vec<u8> {
    Writer::new(header(msg::DELETE_SESSION_REQUEST, Some(teid), seq))
        .ie(ie::EBI, 0, &[ebi])
        .finish()
}

/// A response with only a Cause (Delete Session Response).
pub fn cause_response(message_type: MessageType, teid: u32, seq: u32, c: u8) -> Vec<u8> {
    Writer::new(header(message_type, Some(teid), seq))
        .ie(ie::CAUSE, 0, &cause_v(c))
        .finish()
}

/// The Cause of a response.
pub fn read_cause(p: &Packet<'_>) -> Option<u8> {
    p.find(ie::CAUSE, 0).and_then(|i| i.u8())
}

/// Echo Request / Response with our Recovery (restart counter).
pub fn echo(message_type: MessageType, seq: u32, recovery: u8) -> Vec<u8> {
    Writer::new(header(message_type, None, seq))
        .ie(ie::RECOVERY, 0, &[recovery])
        .finish()
}

pub fn read_recovery(p: &Packet<'_>) -> Option<u8> {
    p.find(ie::RECOVERY, 0).and_then(|i| i.u8())
}

/// PGW Restart Notification (TS 29.274 §7.9.5), SGW to MME: the PGW whose S5/S8 control
/// address is `pgw` restarted (its sessions are gone); `sgw` is the SGW's S11 address.
pub fn pgw_restart_notification(seq: u32, pgw: Ipv4Addr, sgw: Ipv4Addr) -> Vec<u8> {
    Writer::new(header(msg::PGW_RESTART_NOTIFICATION, Some(0), seq))
        .ie(ie::IP_ADDRESS, 0, &pgw.octets())
        .ie(ie::IP_ADDRESS, 1, &sgw.octets())
        .finish()
}

/// The PGW and SGW addresses of a PGW Restart Notification (both mandatory).
pub fn read_pgw_restart_notification(p: &Packet<'_>) -> Result<(Ipv4Addr, Ipv4Addr), Refused> {
    let ip = |instance| {
        p.find(ie::IP_ADDRESS, instance)
            .and_then(|i| <[u8; 4]>::try_from(i.value).ok())
            .map(Ipv4Addr::from)
            .ok_or(Refused(cause::MANDATORY_IE_MISSING))
    };
    Ok((ip(0)?, ip(1)?))
}

/// Whether a message type is a request.
pub fn is_request(t: MessageType) -> bool {
    t.is_request()
}

pub use d11_wire::gtpv2::msg as message;
pub use d11_wire::gtpv2::MessageType;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_session_round_trips() {
        let r = CreateSessionRequest {
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
        };
        let b = r.encode(0, 42);
        let p = Packet::new_checked(&b).unwrap();
        assert_eq!(p.header().sequence, 42);
        assert_eq!(CreateSessionRequest::decode(&p).unwrap(), r);
        let a = CreateSessionResponse {
            cause: cause::REQUEST_ACCEPTED,
            sender: Some(r.sender),
            pgw_c: None,
            paa: Some(Ipv4Addr::new(10, 45, 0, 2)),
            ebi: 5,
            s1u_sgw: None,
            s5u_pgw: r.s5u_sgw,
            recovery: Some(3),
        };
        let b = a.encode(7, 42);
        assert_eq!(
            CreateSessionResponse::decode(&Packet::new_checked(&b).unwrap()).unwrap(),
            a
        );
        // A request without its bearer context is refused with "mandatory IE missing".
        let b = d11_wire::gtpv2::Writer::new(header(msg::CREATE_SESSION_REQUEST, Some(0), 1))
            .ie(ie::IMSI, 0, &tbcd("001").unwrap())
            .finish();
        assert_eq!(
            CreateSessionRequest::decode(&Packet::new_checked(&b).unwrap()),
            Err(Refused(cause::MANDATORY_IE_MISSING))
        );
    }

    #[test]
    fn pgw_restart_notification_round_trips() {
        let (pgw, sgw) = (Ipv4Addr::new(172, 16, 5, 4), Ipv4Addr::new(172, 16, 1, 3));
        let b = pgw_restart_notification(9, pgw, sgw);
        // Header with TEID 0, then two IP Address IEs (type 74), instances 0 and 1.
        assert_eq!(
            b,
            [
                0x48, 179, 0, 24, 0, 0, 0, 0, 0, 0, 9, 0, // header
                74, 0, 4, 0, 172, 16, 5, 4, // PGW S5/S8 control plane
                74, 0, 4, 1, 172, 16, 1, 3, // SGW S11
            ]
        );
        let p = Packet::new_checked(&b).unwrap();
        assert_eq!(read_pgw_restart_notification(&p), Ok((pgw, sgw)));
        let cut = Writer::new(header(msg::PGW_RESTART_NOTIFICATION, Some(0), 1))
            .ie(ie::IP_ADDRESS, 0, &pgw.octets())
            .finish();
        assert_eq!(
            read_pgw_restart_notification(&Packet::new_checked(&cut).unwrap()),
            Err(Refused(cause::MANDATORY_IE_MISSING))
        );
    }
}
