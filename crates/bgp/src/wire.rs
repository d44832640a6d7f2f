//! BGP messages on a TCP stream: framing (RFC 4271 §4.1: the 16-octet marker, the length,
//! the type) and the codec, which is NetGauze's (`netgauze-bgp-pkt`). A header that is wrong
//! becomes the NOTIFICATION §6.1 requires; a message NetGauze cannot parse, the NOTIFICATION
//! its error maps to.

use netgauze_bgp_pkt::notification::{BgpNotificationMessage, MessageHeaderError};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;
use std::collections::HashMap;

/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// The largest message without the Extended Message capability (RFC 8654, not offered).
pub const MAX_LEN: usize = 4096;

/// The message's octets.
pub fn encode(m: &BgpMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len());
    // Writing to a Vec fails only for a message over the length field, which we never build.
    let _ = m.write(&mut out);
    out
}

/// Splits a TCP byte stream into messages.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `None` until one has arrived, or the NOTIFICATION a bad
    /// header calls for (the stream cannot be read on after it).
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, BgpNotificationMessage>> {
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        if self.buf[..16].iter().any(|&b| b != 0xff) {
            return Some(Err(BgpNotificationMessage::MessageHeaderError(
                MessageHeaderError::ConnectionNotSynchronized {
                    value: Box::new([]),
                },
            )));
        }
        let len = usize::from(u16::from_be_bytes([self.buf[16], self.buf[17]]));
        if !(HEADER_LEN..=MAX_LEN).contains(&len) {
            // The Data field: the erroneous Length field (§6.1).
            return Some(Err(BgpNotificationMessage::MessageHeaderError(
                MessageHeaderError::BadMessageLength {
                    value: Box::new([self.buf[16], self.buf[17]]),
                },
            )));
        }
        if self.buf.len() < len {
            return None;
        }
        Some(Ok(self.buf.drain(..len).collect()))
    }
}

/// Parses one whole message; `asn4`: both sides announced 4-octet AS numbers (RFC 6793).
/// Returns the message and how many malformed path attributes were skipped in it (for the
/// caller to treat as RFC 7606 says), or the NOTIFICATION for what cannot be read on.
pub fn decode(bytes: &[u8], asn4: bool) -> Result<(BgpMessage, usize), BgpNotificationMessage> {
    let mut ctx = BgpParsingContext::new(
        asn4,
        HashMap::new(),
        HashMap::new(),
        true,
        true,
        false,
        false,
    );
    let mut cur = SliceReader::new(bytes);
    let m = BgpMessage::parse(&mut cur, &mut ctx).map_err(BgpNotificationMessage::from)?;
    Ok((m, ctx.parsing_errors().path_attr_errors().len()))
}

/// The (code, subcode) of a NOTIFICATION, as RFC 4271 §4.5 numbers them.
pub fn codes(n: &BgpNotificationMessage) -> (u8, u8) {
    let b = encode(&BgpMessage::Notification(n.clone()));
    (b[HEADER_LEN], b[HEADER_LEN + 1])
}
