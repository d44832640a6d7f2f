//! GTP-U, the GPRS Tunnelling Protocol for the user plane (3GPP TS 29.281).
//!
//! ```text
//!  0               1               2               3
//! +-----+--+-+-+-+-+---------------+-------------------------------+
//! | Ver |PT|*|E|S|PN| Message Type  |            Length             |
//! +-----+--+-+-+-+-+---------------+-------------------------------+
//! |                 Tunnel Endpoint Identifier (TEID)              |
//! +-------------------------------+---------------+----------------+
//! |       Sequence Number         | N-PDU Number  | Next Ext. Type | (present if E, S or PN)
//! +-------------------------------+---------------+----------------+
//! | extension headers: [len in 4-octet units | content | next type] ...
//! +-----------------------------------------------------------------
//! ```
//!
//! `Length` counts every octet after the first eight: the optional field, the extension
//! headers and the payload. When any of E, S, PN is set, all four optional octets are present
//! and the fields whose flag is clear are to be ignored by the receiver (§5.1).
//!
//! No maintained Rust crate encodes GTP-U (etherparse and smoltcp have none), so it is ours.

use crate::{need, Error, Result};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The UDP port of GTP-U (TS 29.281 §4.4.2.0).
pub const UDP_PORT: u16 = 2152;
/// The mandatory part of the header.
pub const HEADER_LEN: usize = 8;
/// Sequence Number, N-PDU Number and Next Extension Header Type.
pub const OPTIONAL_LEN: usize = 4;
/// Octets that GTP-U over IPv4/UDP adds to a T-PDU (20 IPv4 + 8 UDP + 8 GTP-U).
pub const IPV4_OVERHEAD: usize = 36;

const LAYER: &str = "gtpu";
const FLAG_PT: u8 = 0x10;
const FLAG_E: u8 = 0x04;
const FLAG_S: u8 = 0x02;
const FLAG_PN: u8 = 0x01;

/// GTP-U message types (TS 29.281 §6.1). Unknown values are kept, not rejected: a receiver
/// must be able to count what it does not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    EchoRequest,
    EchoResponse,
    ErrorIndication,
    SupportedExtensionHeadersNotification,
    EndMarker,
    GPdu,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::EchoRequest,
            2 => Self::EchoResponse,
            26 => Self::ErrorIndication,
            31 => Self::SupportedExtensionHeadersNotification,
            254 => Self::EndMarker,
            255 => Self::GPdu,
            other => Self::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(v: MessageType) -> u8 {
        match v {
            MessageType::EchoRequest => 1,
            MessageType::EchoResponse => 2,
            MessageType::ErrorIndication => 26,
            MessageType::SupportedExtensionHeadersNotification => 31,
            MessageType::EndMarker => 254,
            MessageType::GPdu => 255,
            MessageType::Unknown(v) => v,
        }
    }
}

/// Next Extension Header Type values (TS 29.281 §5.2.1, figure 5.2.1-3).
pub mod ext {
    pub const NONE: u8 = 0x00;
    pub const SERVICE_CLASS_INDICATOR: u8 = 0x20;
    pub const UDP_PORT: u8 = 0x40;
    pub const RAN_CONTAINER: u8 = 0x81;
    pub const LONG_PDCP_PDU_NUMBER: u8 = 0x82;
    pub const XW_RAN_CONTAINER: u8 = 0x83;
    pub const NR_RAN_CONTAINER: u8 = 0x84;
    pub const PDU_SESSION_CONTAINER: u8 = 0x85;
    pub const PDCP_PDU_NUMBER: u8 = 0xc0;
}

/// How a receiver treats an extension header type it does not understand: bits 8 and 7 of the
/// type (TS 29.281 §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comprehension {
    /// `00`: not required; an intermediate node forwards it.
    NotRequired,
    /// `01`: not required; an intermediate node discards the header and does not forward it.
    NotRequiredDiscard,
    /// `10`: required at the receiving endpoint; an intermediate node forwards it unaltered.
    RequiredAtEndpoint,
    /// `11`: required by every recipient.
    Required,
}

impl Comprehension {
    pub fn of(ext_type: u8) -> Self {
        match ext_type >> 6 {
            0 => Self::NotRequired,
            1 => Self::NotRequiredDiscard,
            2 => Self::RequiredAtEndpoint,
            _ => Self::Required,
        }
    }
}

/// One extension header: its type and its content (without the length octet and the
/// trailing next-type octet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionHeader<'a> {
    pub kind: u8,
    pub content: &'a [u8],
}

impl<'a> ExtensionHeader<'a> {
    /// Wire length of a header with this content. Content must be 4n-2 octets long so that
    /// length octet + content + next-type octet is a multiple of four.
    pub fn wire_len(&self) -> usize {
        self.content.len() + 2
    }

    /// A PDU Session Container (TS 38.415 §5.5.2) for an uplink (`pdu_type` 1) or downlink
    /// (`pdu_type` 0) PDU Session Information frame with the given QoS Flow Identifier.
    pub fn pdu_session_container(pdu_type: u8, qfi: u8) -> [u8; 2] {
        [(pdu_type & 0x0f) << 4, qfi & 0x3f]
    }
}

/// A validated chain of extension headers in wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtensionChain<'a> {
    /// The type of the first header (the header's Next Extension Header Type field).
    pub first: u8,
    /// The headers, as they stand on the wire.
    pub bytes: &'a [u8],
}

impl<'a> ExtensionChain<'a> {
    pub fn is_empty(&self) -> bool {
        self.first == ext::NONE
    }

    pub fn iter(&self) -> ExtensionIter<'a> {
        ExtensionIter {
            next: self.first,
            rest: self.bytes,
        }
    }

    /// Writes `headers` as a chain into `out` and returns the chain that borrows it.
    pub fn encode(headers: &[ExtensionHeader<'_>], out: &'a mut [u8]) -> Result<Self> {
        let total: usize = headers.iter().map(|h| h.wire_len()).sum();
        need(LAYER, out, 0, total)?;
        let mut at = 0;
        for (i, h) in headers.iter().enumerate() {
            let len = h.wire_len();
            if len % 4 != 0 || len / 4 > 255 || h.kind == ext::NONE {
                return Err(Error::Invalid {
                    layer: LAYER,
                    field: "extension header length (content must be 4n-2 octets)",
                });
            }
            out[at] = (len / 4) as u8;
            out[at + 1..at + 1 + h.content.len()].copy_from_slice(h.content);
            out[at + len - 1] = headers.get(i + 1).map_or(ext::NONE, |n| n.kind);
            at += len;
        }
        Ok(Self {
            first: headers.first().map_or(ext::NONE, |h| h.kind),
            bytes: &out[..total],
        })
    }
}

impl ExtensionChain<'_> {
    /// What a receiver does with this chain (TS 29.281 §5.2.1), given the extension types it
    /// `supported`s and whether it is the receiving `endpoint` of the tunnel (else an
    /// intermediate node). `Err(type)`: a header whose comprehension is required here is not
    /// supported; the packet is discarded and a Supported Extension Headers Notification
    /// (listing `supported`) goes back to the sender. `Ok`: unknown headers are skipped.
    pub fn check_comprehension(
        &self,
        supported: &[u8],
        endpoint: bool,
    ) -> core::result::Result<(), u8> {
        for h in self.iter() {
            if supported.contains(&h.kind) {
                continue;
            }
            match Comprehension::of(h.kind) {
                Comprehension::NotRequired | Comprehension::NotRequiredDiscard => {}
                Comprehension::RequiredAtEndpoint if !endpoint => {}
                Comprehension::RequiredAtEndpoint | Comprehension::Required => return Err(h.kind),
            }
        }
        Ok(())
    }
}

/// Iterates over a validated [`ExtensionChain`].
#[derive(Debug, Clone)]
pub struct ExtensionIter<'a> {
    next: u8,
    rest: &'a [u8],
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = ExtensionHeader<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next == ext::NONE || self.rest.is_empty() {
            return None;
        }
        let len = usize::from(self.rest[0]) * 4;
        if len < 2 || len > self.rest.len() {
            return None; // unreachable for a chain from `Packet::new_checked`
        }
        let item = ExtensionHeader {
            kind: self.next,
            content: &self.rest[1..len - 1],
        };
        self.next = self.rest[len - 1];
        self.rest = &self.rest[len..];
        Some(item)
    }
}

/// A read/write view of a GTP-U message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; use for emitting into a buffer you own.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps an untrusted buffer; afterwards no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Checks version, protocol type, the length field, and the extension header chain.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(LAYER, b, 0, HEADER_LEN)?;
        let version = b[0] >> 5;
        if version != 1 {
            return Err(Error::BadVersion {
                layer: LAYER,
                version,
            });
        }
        if b[0] & FLAG_PT == 0 {
            return Err(Error::Invalid {
                layer: LAYER,
                field: "protocol type (0 is GTP')",
            });
        }
        let total = HEADER_LEN + usize::from(u16::from_be_bytes([b[2], b[3]]));
        need(LAYER, b, 0, total)?;
        if self.has_optional() {
            if total < HEADER_LEN + OPTIONAL_LEN {
                return Err(Error::BadLength {
                    layer: LAYER,
                    offset: 2,
                    value: total - HEADER_LEN,
                });
            }
            if b[0] & FLAG_E != 0 {
                let mut next = b[11];
                let mut at = HEADER_LEN + OPTIONAL_LEN;
                while next != ext::NONE {
                    need(LAYER, &b[..total], at, 1)?;
                    let len = usize::from(b[at]) * 4;
                    if len == 0 {
                        return Err(Error::BadLength {
                            layer: LAYER,
                            offset: at,
                            value: 0,
                        });
                    }
                    need(LAYER, &b[..total], at, len)?;
                    next = b[at + len - 1];
                    at += len;
                }
            }
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    pub fn version(&self) -> u8 {
        self.flags() >> 5
    }
    pub fn has_optional(&self) -> bool {
        self.flags() & (FLAG_E | FLAG_S | FLAG_PN) != 0
    }
    pub fn message_type(&self) -> MessageType {
        self.buffer.as_ref()[1].into()
    }
    /// The Length field: octets after the mandatory header.
    pub fn length(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    pub fn teid(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    pub fn sequence_number(&self) -> Option<u16> {
        let b = self.buffer.as_ref();
        (self.flags() & FLAG_S != 0).then(|| u16::from_be_bytes([b[8], b[9]]))
    }
    pub fn npdu_number(&self) -> Option<u8> {
        (self.flags() & FLAG_PN != 0).then(|| self.buffer.as_ref()[10])
    }
    pub fn extensions(&self) -> ExtensionChain<'_> {
        let b = self.buffer.as_ref();
        if self.flags() & FLAG_E == 0 {
            return ExtensionChain::default();
        }
        let total = HEADER_LEN + usize::from(self.length());
        let mut next = b[11];
        let mut at = HEADER_LEN + OPTIONAL_LEN;
        while next != ext::NONE {
            let len = usize::from(b[at]) * 4;
            next = b[at + len - 1];
            at += len;
        }
        debug_assert!(at <= total);
        ExtensionChain {
            first: b[11],
            bytes: &b[HEADER_LEN + OPTIONAL_LEN..at],
        }
    }
    /// Octets before the payload: mandatory, optional and extension headers.
    pub fn header_len(&self) -> usize {
        if self.has_optional() {
            HEADER_LEN + OPTIONAL_LEN + self.extensions().bytes.len()
        } else {
            HEADER_LEN
        }
    }
    /// The T-PDU of a G-PDU, or the information elements of a signalling message.
    pub fn payload(&self) -> &[u8] {
        let total = HEADER_LEN + usize::from(self.length());
        &self.buffer.as_ref()[self.header_len()..total]
    }
}

/// A GTP-U header in a form that can only hold valid states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub message_type: MessageType,
    pub teid: u32,
    pub sequence_number: Option<u16>,
    pub npdu_number: Option<u8>,
    pub extensions: ExtensionChain<'a>,
    /// Octets after the headers (T-PDU or IEs).
    pub payload_len: usize,
}

impl<'a> Repr<'a> {
    /// A G-PDU header for a T-PDU of `payload_len` octets.
    pub fn g_pdu(teid: u32, payload_len: usize) -> Self {
        Self {
            message_type: MessageType::GPdu,
            teid,
            sequence_number: None,
            npdu_number: None,
            extensions: ExtensionChain::default(),
            payload_len,
        }
    }

    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &'a Packet<&'a T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            message_type: packet.message_type(),
            teid: packet.teid(),
            sequence_number: packet.sequence_number(),
            npdu_number: packet.npdu_number(),
            extensions: packet.extensions(),
            payload_len: packet.payload().len(),
        })
    }

    fn has_optional(&self) -> bool {
        self.sequence_number.is_some() || self.npdu_number.is_some() || !self.extensions.is_empty()
    }

    pub fn header_len(&self) -> usize {
        if self.has_optional() {
            HEADER_LEN + OPTIONAL_LEN + self.extensions.bytes.len()
        } else {
            HEADER_LEN
        }
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the headers into the start of `buf`; the payload goes after `header_len()`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let hl = self.header_len();
        need(LAYER, buf, 0, hl)?;
        let length = hl - HEADER_LEN + self.payload_len;
        let length = u16::try_from(length).map_err(|_| Error::BadLength {
            layer: LAYER,
            offset: 2,
            value: length,
        })?;
        let mut flags = (1 << 5) | FLAG_PT;
        if !self.extensions.is_empty() {
            flags |= FLAG_E;
        }
        if self.sequence_number.is_some() {
            flags |= FLAG_S;
        }
        if self.npdu_number.is_some() {
            flags |= FLAG_PN;
        }
        buf[0] = flags;
        buf[1] = self.message_type.into();
        buf[2..4].copy_from_slice(&length.to_be_bytes());
        buf[4..8].copy_from_slice(&self.teid.to_be_bytes());
        if self.has_optional() {
            buf[8..10].copy_from_slice(&self.sequence_number.unwrap_or(0).to_be_bytes());
            buf[10] = self.npdu_number.unwrap_or(0);
            buf[11] = self.extensions.first;
            buf[12..hl].copy_from_slice(self.extensions.bytes);
        }
        Ok(())
    }
}

/// Information element types used by GTP-U (TS 29.281 §8, types from TS 29.060 §7.7).
pub mod ie_type {
    pub const RECOVERY: u8 = 14;
    pub const TEID_DATA_I: u8 = 16;
    pub const GTPU_PEER_ADDRESS: u8 = 133;
    pub const EXTENSION_HEADER_TYPE_LIST: u8 = 141;
    pub const PRIVATE_EXTENSION: u8 = 255;
}

/// An information element of a GTP-U signalling message.
///
/// Types below 128 are TV with a fixed length per type; types from 128 are TLV with a
/// two-octet length, except the Extension Header Type List, whose length is one octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ie<'a> {
    /// Restart counter.
    Recovery(u8),
    /// The TEID of the G-PDU that caused an Error Indication.
    TeidDataI(u32),
    /// The GTP-U peer address (IPv4 or IPv6).
    GtpuPeerAddress(IpAddr),
    /// The extension header types the sender supports.
    ExtensionHeaderTypeList(&'a [u8]),
    /// Extension identifier and value.
    PrivateExtension { enterprise: u16, value: &'a [u8] },
    /// A TLV element we do not interpret, kept so a message can be counted or relayed.
    Unknown { kind: u8, value: &'a [u8] },
}

impl<'a> Ie<'a> {
    pub fn buffer_len(&self) -> usize {
        match self {
            Ie::Recovery(_) => 2,
            Ie::TeidDataI(_) => 5,
            Ie::GtpuPeerAddress(IpAddr::V4(_)) => 3 + 4,
            Ie::GtpuPeerAddress(IpAddr::V6(_)) => 3 + 16,
            Ie::ExtensionHeaderTypeList(l) => 2 + l.len(),
            Ie::PrivateExtension { value, .. } => 3 + 2 + value.len(),
            Ie::Unknown { value, .. } => 3 + value.len(),
        }
    }

    /// Writes the element at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        need("gtpu ie", buf, 0, len)?;
        let tlv = |buf: &mut [u8], kind: u8, value_len: usize| -> Result<()> {
            let l = u16::try_from(value_len).map_err(|_| Error::BadLength {
                layer: "gtpu ie",
                offset: 1,
                value: value_len,
            })?;
            buf[0] = kind;
            buf[1..3].copy_from_slice(&l.to_be_bytes());
            Ok(())
        };
        match *self {
            Ie::Recovery(v) => {
                buf[0] = ie_type::RECOVERY;
                buf[1] = v;
            }
            Ie::TeidDataI(t) => {
                buf[0] = ie_type::TEID_DATA_I;
                buf[1..5].copy_from_slice(&t.to_be_bytes());
            }
            Ie::GtpuPeerAddress(IpAddr::V4(a)) => {
                tlv(buf, ie_type::GTPU_PEER_ADDRESS, 4)?;
                buf[3..7].copy_from_slice(&a.octets());
            }
            Ie::GtpuPeerAddress(IpAddr::V6(a)) => {
                tlv(buf, ie_type::GTPU_PEER_ADDRESS, 16)?;
                buf[3..19].copy_from_slice(&a.octets());
            }
            Ie::ExtensionHeaderTypeList(l) => {
                if l.len() > 255 {
                    return Err(Error::BadLength {
                        layer: "gtpu ie",
                        offset: 1,
                        value: l.len(),
                    });
                }
                buf[0] = ie_type::EXTENSION_HEADER_TYPE_LIST;
                buf[1] = l.len() as u8;
                buf[2..2 + l.len()].copy_from_slice(l);
            }
            Ie::PrivateExtension { enterprise, value } => {
                tlv(buf, ie_type::PRIVATE_EXTENSION, 2 + value.len())?;
                buf[3..5].copy_from_slice(&enterprise.to_be_bytes());
                buf[5..5 + value.len()].copy_from_slice(value);
            }
            Ie::Unknown { kind, value } => {
                if kind < 128 {
                    return Err(Error::Invalid {
                        layer: "gtpu ie",
                        field: "unknown TV type (cannot be encoded without its length)",
                    });
                }
                tlv(buf, kind, value.len())?;
                buf[3..3 + value.len()].copy_from_slice(value);
            }
        }
        Ok(len)
    }
}

/// Iterates over the IEs of a signalling message's payload; stops after the first error.
#[derive(Debug, Clone)]
pub struct IeIter<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> IeIter<'a> {
    pub fn new(payload: &'a [u8]) -> Self {
        Self {
            rest: payload,
            offset: 0,
        }
    }

    fn parse_one(&mut self) -> Result<Ie<'a>> {
        const L: &str = "gtpu ie";
        let b = self.rest;
        let kind = b[0];
        let (ie, len) = match kind {
            ie_type::RECOVERY => {
                need(L, b, 1, 1)?;
                (Ie::Recovery(b[1]), 2)
            }
            ie_type::TEID_DATA_I => {
                need(L, b, 1, 4)?;
                (
                    Ie::TeidDataI(u32::from_be_bytes([b[1], b[2], b[3], b[4]])),
                    5,
                )
            }
            ie_type::EXTENSION_HEADER_TYPE_LIST => {
                need(L, b, 1, 1)?;
                let n = usize::from(b[1]);
                need(L, b, 2, n)?;
                (Ie::ExtensionHeaderTypeList(&b[2..2 + n]), 2 + n)
            }
            k if k < 128 => {
                return Err(Error::Invalid {
                    layer: L,
                    field: "unknown TV information element",
                })
            }
            k => {
                need(L, b, 1, 2)?;
                let n = usize::from(u16::from_be_bytes([b[1], b[2]]));
                need(L, b, 3, n)?;
                let v = &b[3..3 + n];
                let ie = match k {
                    ie_type::GTPU_PEER_ADDRESS => match n {
                        4 => Ie::GtpuPeerAddress(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
                        16 => {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(v);
                            Ie::GtpuPeerAddress(IpAddr::V6(Ipv6Addr::from(o)))
                        }
                        _ => {
                            return Err(Error::BadLength {
                                layer: L,
                                offset: self.offset + 1,
                                value: n,
                            })
                        }
                    },
                    ie_type::PRIVATE_EXTENSION => {
                        if n < 2 {
                            return Err(Error::BadLength {
                                layer: L,
                                offset: self.offset + 1,
                                value: n,
                            });
                        }
                        Ie::PrivateExtension {
                            enterprise: u16::from_be_bytes([v[0], v[1]]),
                            value: &v[2..],
                        }
                    }
                    _ => Ie::Unknown { kind: k, value: v },
                };
                (ie, 3 + n)
            }
        };
        self.rest = &b[len..];
        self.offset += len;
        Ok(ie)
    }
}

impl<'a> Iterator for IeIter<'a> {
    type Item = Result<Ie<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.parse_one();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

/// Writes a complete signalling message (header and IEs) into `buf`; returns its length.
///
/// Echo Request/Response, Error Indication and Supported Extension Headers Notification carry
/// a sequence number (S = 1, TS 29.281 §5.1); pass `None` for End Marker.
pub fn emit_signalling(
    message_type: MessageType,
    teid: u32,
    sequence_number: Option<u16>,
    ies: &[Ie<'_>],
    buf: &mut [u8],
) -> Result<usize> {
    let repr = Repr {
        message_type,
        teid,
        sequence_number,
        npdu_number: None,
        extensions: ExtensionChain::default(),
        payload_len: ies.iter().map(Ie::buffer_len).sum(),
    };
    let total = repr.buffer_len();
    need(LAYER, buf, 0, total)?;
    repr.emit(buf)?;
    let mut at = repr.header_len();
    for ie in ies {
        at += ie.emit(&mut buf[at..])?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    // A G-PDU with a PDU Session Container (UL, QFI 9) and a 4-octet T-PDU.
    const G_PDU_EXT: [u8; 20] = hex!(
        "34 ff 000c 00000457"   // v1 PT E, G-PDU, length 12, TEID 0x457
        "0000 00 85"            // seq 0 (S clear), N-PDU 0, next = PDU Session Container
        "01 10 09 00"           // len 1 (4 octets), UL PDU type 1, QFI 9, no more
        "de ad be ef"           // T-PDU
    );

    #[test]
    fn golden_g_pdu_with_pdu_session_container() {
        let p = Packet::new_checked(&G_PDU_EXT[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.message_type, MessageType::GPdu);
        assert_eq!(r.teid, 0x457);
        assert_eq!(r.sequence_number, None);
        let exts: Vec<_> = r.extensions.iter().collect();
        assert_eq!(
            exts,
            vec![ExtensionHeader {
                kind: ext::PDU_SESSION_CONTAINER,
                content: &[0x10, 0x09]
            }]
        );
        assert_eq!(p.payload(), &hex!("de ad be ef"));

        let content = ExtensionHeader::pdu_session_container(1, 9);
        let mut chain = [0u8; 4];
        let chain = ExtensionChain::encode(
            &[ExtensionHeader {
                kind: ext::PDU_SESSION_CONTAINER,
                content: &content,
            }],
            &mut chain,
        )
        .unwrap();
        let r2 = Repr {
            extensions: chain,
            sequence_number: None,
            npdu_number: None,
            ..Repr::g_pdu(0x457, 4)
        };
        let mut out = [0xa5u8; 20];
        r2.emit(&mut out).unwrap();
        out[16..].copy_from_slice(&hex!("de ad be ef"));
        assert_eq!(out, G_PDU_EXT);
    }

    #[test]
    fn golden_plain_g_pdu() {
        let mut out = [0xa5u8; 8];
        Repr::g_pdu(0x1234_5678, 100).emit(&mut out).unwrap();
        assert_eq!(out, hex!("30 ff 0064 12345678"));
    }

    #[test]
    fn golden_echo_and_error_indication() {
        let mut buf = [0xa5u8; 64];
        let n = emit_signalling(MessageType::EchoRequest, 0, Some(7), &[], &mut buf).unwrap();
        assert_eq!(&buf[..n], &hex!("32 01 0004 00000000 0007 00 00"));

        let n = emit_signalling(
            MessageType::EchoResponse,
            0,
            Some(7),
            &[Ie::Recovery(3)],
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..n], &hex!("32 02 0006 00000000 0007 00 00 0e 03"));

        let n = emit_signalling(
            MessageType::ErrorIndication,
            0,
            Some(1),
            &[
                Ie::TeidDataI(0xabcd),
                Ie::GtpuPeerAddress(IpAddr::V4(Ipv4Addr::new(172, 16, 1, 3))),
            ],
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            &buf[..n],
            &hex!("32 1a 0010 00000000 0001 00 00  10 0000abcd  85 0004 ac100103")
        );
        let p = Packet::new_checked(&buf[..n]).unwrap();
        let ies: Vec<_> = IeIter::new(p.payload()).collect::<Result<_>>().unwrap();
        assert_eq!(
            ies,
            vec![
                Ie::TeidDataI(0xabcd),
                Ie::GtpuPeerAddress(IpAddr::V4(Ipv4Addr::new(172, 16, 1, 3)))
            ]
        );

        let n = emit_signalling(
            MessageType::SupportedExtensionHeadersNotification,
            0,
            Some(2),
            &[Ie::ExtensionHeaderTypeList(&[
                ext::PDU_SESSION_CONTAINER,
                ext::UDP_PORT,
            ])],
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            &buf[..n],
            &hex!("32 1f 0008 00000000 0002 00 00 8d 02 85 40")
        );

        let n = emit_signalling(MessageType::EndMarker, 0x99, None, &[], &mut buf).unwrap();
        assert_eq!(&buf[..n], &hex!("30 fe 0000 00000099"));
    }

    #[test]
    fn rejects_bad_version_pt_and_lengths() {
        assert!(matches!(
            Packet::new_checked(&hex!("50 ff 0000 00000001")[..]),
            Err(Error::BadVersion { version: 2, .. })
        ));
        assert!(matches!(
            Packet::new_checked(&hex!("20 ff 0000 00000001")[..]),
            Err(Error::Invalid { .. })
        ));
        // Length claims more than the buffer has.
        assert!(Packet::new_checked(&hex!("30 ff 0010 00000001 aa")[..]).is_err());
        // S set but length too short for the optional field.
        assert!(Packet::new_checked(&hex!("32 ff 0002 00000001 0000")[..]).is_err());
        // Extension header with length 0.
        assert!(
            Packet::new_checked(&hex!("34 ff 0008 00000001 0000 00 85 00 00 00 00")[..]).is_err()
        );
        // Extension chain that runs past Length.
        assert!(Packet::new_checked(
            &hex!("34 ff 0008 00000001 0000 00 85 02 00 00 00 00 00 00 00")[..]
        )
        .is_err());
    }

    #[test]
    fn every_truncated_prefix_is_an_error() {
        for n in 0..G_PDU_EXT.len() {
            assert!(Packet::new_checked(&G_PDU_EXT[..n]).is_err(), "prefix {n}");
        }
        let mut buf = [0u8; 64];
        let n = emit_signalling(
            MessageType::ErrorIndication,
            0,
            Some(1),
            &[
                Ie::TeidDataI(1),
                Ie::GtpuPeerAddress(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            ],
            &mut buf,
        )
        .unwrap();
        let p = Packet::new_checked(&buf[..n]).unwrap();
        let ies = p.payload();
        // A cut inside an IE is an error; a cut between IEs (after TEID Data I, 5 octets) is a
        // shorter valid list.
        for k in 1..ies.len() {
            let r: Result<Vec<_>> = IeIter::new(&ies[..k]).collect();
            assert_eq!(r.is_err(), k != 5, "IE prefix {k}");
        }
    }

    #[test]
    fn unknown_headers_follow_their_comprehension_bits() {
        // A chain of: UDP Port (0x40, not required), a made-up 0x9f (required at endpoint),
        // and a made-up 0xdf (required everywhere).
        let mut buf = [0u8; 12];
        let hs = [
            ExtensionHeader {
                kind: 0x40,
                content: &[0, 0],
            },
            ExtensionHeader {
                kind: 0x9f,
                content: &[0, 0],
            },
            ExtensionHeader {
                kind: 0xdf,
                content: &[0, 0],
            },
        ];
        let chain = ExtensionChain::encode(&hs, &mut buf).unwrap();
        assert_eq!(chain.check_comprehension(&[0x9f, 0xdf], true), Ok(()));
        assert_eq!(
            chain.check_comprehension(&[0xdf], false),
            Ok(()),
            "intermediate node forwards 10"
        );
        assert_eq!(
            chain.check_comprehension(&[0xdf], true),
            Err(0x9f),
            "endpoint must understand 10"
        );
        assert_eq!(
            chain.check_comprehension(&[0x9f], false),
            Err(0xdf),
            "everyone must understand 11"
        );
        assert_eq!(
            ExtensionChain::default().check_comprehension(&[], true),
            Ok(())
        );
    }

    #[test]
    fn comprehension_bits() {
        assert_eq!(Comprehension::of(0x20), Comprehension::NotRequired);
        assert_eq!(Comprehension::of(0x40), Comprehension::NotRequiredDiscard);
        assert_eq!(Comprehension::of(0x85), Comprehension::RequiredAtEndpoint);
        assert_eq!(Comprehension::of(0xc0), Comprehension::Required);
    }

    proptest! {
        #[test]
        fn round_trip(teid: u32, seq: Option<u16>, npdu: Option<u8>, qfi in 0u8..64,
                      with_ext: bool, payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let content = ExtensionHeader::pdu_session_container(1, qfi);
            let mut chain_buf = [0u8; 4];
            let chain = if with_ext {
                ExtensionChain::encode(&[ExtensionHeader { kind: ext::PDU_SESSION_CONTAINER, content: &content }], &mut chain_buf).unwrap()
            } else { ExtensionChain::default() };
            let repr = Repr { message_type: MessageType::GPdu, teid, sequence_number: seq, npdu_number: npdu, extensions: chain, payload_len: payload.len() };
            let mut buf = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut buf).unwrap();
            let hl = repr.header_len();
            buf[hl..].copy_from_slice(&payload);
            let p = Packet::new_checked(&buf[..]).unwrap();
            let back = Repr::parse(&p).unwrap();
            prop_assert_eq!(back, repr);
            prop_assert_eq!(p.payload(), &payload[..]);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = Repr::parse(&p);
                let _ = p.extensions().iter().count();
                for ie in IeIter::new(p.payload()) { let _ = ie; }
            }
        }
    }
}
