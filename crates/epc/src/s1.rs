//! Our own signalling between the UE, the eNodeB and the MME (in place of NAS over RRC and
//! S1AP, which the issue lets us leave out): JSON messages, documented in docs/mobile.md.
//!
//! - UE <-> eNodeB: a [`Nas`] message as the payload of an Ethernet frame of EtherType
//!   [`ETHERTYPE`] (IEEE 802 "local experimental"), on the radio segment.
//! - eNodeB <-> MME: an [`S1`] message in a UDP datagram, port [`PORT`] both ways.
//!
//! The values are the real ones: the IMSI, and RAND, AUTN, RES and AUTS as hex.

use d11_wire::gtpv2::message::PdnType;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// EtherType of radio signalling frames: IEEE Std 802 local experimental EtherType 1.
pub const ETHERTYPE: u16 = 0x88b5;

/// UDP port of eNodeB <-> MME signalling (S1AP's SCTP port number).
pub const PORT: u16 = 36412;

/// Messages between the UE and the MME (what NAS carries), relayed by the eNodeB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Nas {
    AttachRequest {
        imsi: String,
        pdn_type: PdnType,
    },
    AuthenticationRequest {
        rand: String,
        autn: String,
    },
    AuthenticationResponse {
        res: String,
    },
    /// `cause`: "mac-failure" or "sync-failure" (with `auts`).
    AuthenticationFailure {
        cause: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auts: Option<String>,
    },
    AttachAccept {
        ue_ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        dns: Ipv4Addr,
        mtu: u16,
        pdn_type: PdnType,
    },
    AttachReject {
        cause: String,
    },
    /// The UE detaches (switching off).
    DetachRequest {
        imsi: String,
    },
    /// Either way: the detach is done.
    DetachAccept,
    /// The network detaches the UE (TS 24.301 §5.5.2.3); `detach_type` "re-attach required"
    /// asks it to attach again at once (after a PGW restart, TS 23.007 §17).
    NetworkDetachRequest {
        detach_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
}

/// The network's detach type that makes the UE attach again.
pub const REATTACH_REQUIRED: &str = "re-attach required";

/// Messages between the eNodeB and the MME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum S1 {
    /// A UE's message, with the eNodeB's id for the UE.
    UplinkNas {
        enb_ue_id: u32,
        nas: Nas,
    },
    /// A message for the UE.
    DownlinkNas {
        enb_ue_id: u32,
        nas: Nas,
    },
    /// Set up the UE's bearer: the SGW's S1-U end.
    InitialContextSetupRequest {
        enb_ue_id: u32,
        mme_ue_id: u32,
        sgw_teid: u32,
        sgw_addr: Ipv4Addr,
        pdn_type: PdnType,
        ue_ip: Ipv4Addr,
    },
    /// The eNodeB's S1-U end of the bearer.
    InitialContextSetupResponse {
        enb_ue_id: u32,
        mme_ue_id: u32,
        enb_teid: u32,
        enb_addr: Ipv4Addr,
    },
    UeContextReleaseCommand {
        enb_ue_id: u32,
    },
    UeContextReleaseComplete {
        enb_ue_id: u32,
    },
}

/// Hex of octets, lower case.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Exactly `N` octets from hex.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Any number of octets from hex.
pub fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let m = S1::UplinkNas {
            enb_ue_id: 3,
            nas: Nas::AttachRequest {
                imsi: "001010000000001".into(),
                pdn_type: PdnType::Ethernet,
            },
        };
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(
            j,
            r#"{"type":"UplinkNas","enb_ue_id":3,"nas":{"type":"AttachRequest","imsi":"001010000000001","pdn_type":"ethernet"}}"#
        );
        assert_eq!(serde_json::from_str::<S1>(&j).unwrap(), m);
        assert!(serde_json::from_str::<S1>(r#"{"type":"Nope"}"#).is_err());
        assert_eq!(unhex::<2>("0aff"), Some([10, 255]));
        assert_eq!(unhex::<2>("0ag0"), None);
        assert_eq!(unhex_vec("0102"), Some(vec![1, 2]));
    }
}
