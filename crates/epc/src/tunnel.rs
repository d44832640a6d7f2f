//! A GTP-U tunnel endpoint (3GPP TS 29.281), sans-IO: the UDP payloads of port 2152 in, what
//! to deliver or answer out. The eNodeB, SGW and PGW each hold one.
//!
//! - A G-PDU for a known TEID is delivered (its T-PDU), counted per tunnel, if it comes from
//!   the tunnel's far end; from any other address it is counted (`rx_wrong_peer`) and dropped,
//!   unanswered (an answer would go to whoever the source claims to be).
//! - A G-PDU for an unknown TEID draws an Error Indication (TEID 0; TEID Data I and GTP-U Peer
//!   Address IEs, §7.3.1), so the sender can tear the tunnel down.
//! - An extension header the endpoint must understand but does not draws a Supported Extension
//!   Headers Notification, and the packet is dropped (§5.2.1).
//! - Echo Request is answered with Echo Response carrying the Recovery counter (§7.2.2).
//! - Anything malformed or unexpected is counted by reason and dropped.

use d11_wire::gtpu::{emit_signalling, ext, Ie, IeIter, MessageType, Packet, Repr};
use serde::Serialize;
// (Keys are ours: TEIDs and UE addresses we gave out.)
use foldhash::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// One tunnel as seen from this endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Tunnel {
    pub local_teid: u32,
    pub remote_teid: u32,
    pub remote: Ipv4Addr,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// What a received message comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A T-PDU for this tunnel.
    Deliver {
        local_teid: u32,
        tpdu: &'a [u8],
    },
    /// Send `reply` (already written) back to the peer.
    Reply,
    /// The peer answered our echo.
    EchoResponse {
        recovery: Option<u8>,
    },
    /// The peer reports that our tunnel with `teid` is unknown to it.
    ErrorIndication {
        teid: u32,
    },
    /// End of a tunnel's traffic on this path (after a path switch).
    EndMarker {
        local_teid: u32,
    },
    Dropped(Drop),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Malformed,
    UnknownTeid,
    WrongPeer,
    UnsupportedExtension,
    UnexpectedMessage,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    pub rx_g_pdu: u64,
    pub rx_malformed: u64,
    pub rx_unknown_teid: u64,
    pub rx_wrong_peer: u64,
    pub rx_unsupported_extension: u64,
    pub rx_unexpected: u64,
    pub tx_error_indication: u64,
    pub tx_echo_response: u64,
    pub tx_sehn: u64,
}

/// Extension headers this endpoint understands.
pub const SUPPORTED: &[u8] = &[ext::PDU_SESSION_CONTAINER, ext::UDP_PORT];

pub struct Endpoint {
    local: Ipv4Addr,
    recovery: u8,
    tunnels: HashMap<u32, Tunnel>,
    next_teid: u32,
    seq: u16,
    pub c: Counters,
}

impl Endpoint {
    /// An endpoint at `local`; `recovery` is its restart counter (it grows at each restart).
    pub fn new(local: Ipv4Addr, recovery: u8, first_teid: u32) -> Self {
        Self {
            local,
            recovery,
            tunnels: HashMap::default(),
            next_teid: first_teid.max(1),
            seq: 0,
            c: Counters::default(),
        }
    }

    /// A TEID not in use (never 0, which signalling uses).
    pub fn allocate_teid(&mut self) -> u32 {
        loop {
            let t = self.next_teid;
            self.next_teid = self.next_teid.wrapping_add(1).max(1);
            if !self.tunnels.contains_key(&t) {
                return t;
            }
        }
    }

    pub fn add(&mut self, local_teid: u32, remote_teid: u32, remote: Ipv4Addr) {
        self.tunnels.insert(
            local_teid,
            Tunnel {
                local_teid,
                remote_teid,
                remote,
                rx_packets: 0,
                rx_bytes: 0,
                tx_packets: 0,
                tx_bytes: 0,
            },
        );
    }

    /// Points an existing tunnel at a new far end (Modify Bearer).
    pub fn update(&mut self, local_teid: u32, remote_teid: u32, remote: Ipv4Addr) -> bool {
        match self.tunnels.get_mut(&local_teid) {
            Some(t) => {
                t.remote_teid = remote_teid;
                t.remote = remote;
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, local_teid: u32) -> Option<Tunnel> {
        self.tunnels.remove(&local_teid)
    }

    pub fn get(&self, local_teid: u32) -> Option<&Tunnel> {
        self.tunnels.get(&local_teid)
    }

    pub fn tunnels(&self) -> impl Iterator<Item = &Tunnel> {
        self.tunnels.values()
    }

    /// Handles one GTP-U message from `peer`; answers go into `reply`.
    pub fn receive<'a>(
        &mut self,
        peer: Ipv4Addr,
        msg: &'a [u8],
        reply: &mut Vec<u8>,
    ) -> Received<'a> {
        reply.clear();
        let Ok(p) = Packet::new_checked(msg) else {
            self.c.rx_malformed += 1;
            return Received::Dropped(Drop::Malformed);
        };
        let teid = p.teid();
        let seq = p.sequence_number();
        match p.message_type() {
            MessageType::GPdu => {
                if p.extensions().check_comprehension(SUPPORTED, true).is_err() {
                    self.c.rx_unsupported_extension += 1;
                    self.c.tx_sehn += 1;
                    self.signal(
                        MessageType::SupportedExtensionHeadersNotification,
                        0,
                        &[Ie::ExtensionHeaderTypeList(SUPPORTED)],
                        reply,
                    );
                    return Received::Dropped(Drop::UnsupportedExtension);
                }
                let Some(t) = self.tunnels.get_mut(&teid) else {
                    self.c.rx_unknown_teid += 1;
                    self.c.tx_error_indication += 1;
                    let ies = [
                        Ie::TeidDataI(teid),
                        Ie::GtpuPeerAddress(IpAddr::V4(self.local)),
                    ];
                    self.signal(MessageType::ErrorIndication, 0, &ies, reply);
                    return Received::Dropped(Drop::UnknownTeid);
                };
                if t.remote != peer {
                    self.c.rx_wrong_peer += 1;
                    return Received::Dropped(Drop::WrongPeer);
                }
                // The T-PDU as a slice of `msg` (the view's payload borrows the view).
                let (hl, len) = (p.header_len(), p.payload().len());
                t.rx_packets += 1;
                t.rx_bytes += len as u64;
                self.c.rx_g_pdu += 1;
                Received::Deliver {
                    local_teid: teid,
                    tpdu: &msg[hl..hl + len],
                }
            }
            MessageType::EchoRequest => {
                self.c.tx_echo_response += 1;
                let n = emit_buf(reply, |b| {
                    emit_signalling(
                        MessageType::EchoResponse,
                        0,
                        Some(seq.unwrap_or(0)),
                        &[Ie::Recovery(self.recovery)],
                        b,
                    )
                });
                reply.truncate(n);
                Received::Reply
            }
            MessageType::EchoResponse => {
                let recovery = IeIter::new(p.payload()).flatten().find_map(|i| match i {
                    Ie::Recovery(r) => Some(r),
                    _ => None,
                });
                Received::EchoResponse { recovery }
            }
            MessageType::ErrorIndication => {
                match IeIter::new(p.payload()).flatten().find_map(|i| match i {
                    Ie::TeidDataI(t) => Some(t),
                    _ => None,
                }) {
                    Some(teid) => Received::ErrorIndication { teid },
                    None => {
                        self.c.rx_malformed += 1;
                        Received::Dropped(Drop::Malformed)
                    }
                }
            }
            MessageType::EndMarker if self.tunnels.get(&teid).is_some_and(|t| t.remote == peer) => {
                Received::EndMarker { local_teid: teid }
            }
            _ => {
                self.c.rx_unexpected += 1;
                Received::Dropped(Drop::UnexpectedMessage)
            }
        }
    }

    fn signal(&mut self, t: MessageType, teid: u32, ies: &[Ie<'_>], out: &mut Vec<u8>) {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let n = emit_buf(out, |b| emit_signalling(t, teid, Some(seq), ies, b));
        out.truncate(n);
    }

    /// The TEID of a G-PDU from `peer` that can be switched where it lies: the mandatory
    /// header only (no sequence number, N-PDU number or extension header), a length that is
    /// the message's, and a tunnel of ours whose far end is `peer`. Nothing is counted;
    /// anything else goes through [`receive`](Self::receive).
    pub fn plain_g_pdu(&self, peer: Ipv4Addr, msg: &[u8]) -> Option<u32> {
        let p = Packet::new_checked(msg).ok()?;
        if p.has_optional()
            || p.message_type() != MessageType::GPdu
            || usize::from(p.length()) != msg.len() - d11_wire::gtpu::HEADER_LEN
        {
            return None;
        }
        let teid = p.teid();
        self.tunnels
            .get(&teid)
            .is_some_and(|t| t.remote == peer)
            .then_some(teid)
    }

    /// Counts a G-PDU that [`plain_g_pdu`](Self::plain_g_pdu) found for our tunnel `teid`
    /// (`len` octets with its header) as delivered, as [`receive`](Self::receive) counts
    /// it; false (nothing counted) if the tunnel is gone.
    pub fn delivered(&mut self, teid: u32, len: usize) -> bool {
        let Some(t) = self.tunnels.get_mut(&teid) else {
            return false;
        };
        t.rx_packets += 1;
        t.rx_bytes += len.saturating_sub(d11_wire::gtpu::HEADER_LEN) as u64;
        self.c.rx_g_pdu += 1;
        true
    }

    /// Switches a G-PDU that [`plain_g_pdu`](Self::plain_g_pdu) found for our tunnel `from`
    /// to tunnel `to` of `next`, in place: its TEID becomes `to`'s remote TEID, and both ends
    /// count it as [`receive`](Self::receive) and [`encapsulate`](Self::encapsulate) do.
    /// Returns the far end, or `None` (nothing counted or changed) if either tunnel is gone.
    pub fn switch_in_place(
        &mut self,
        from: u32,
        next: &mut Endpoint,
        to: u32,
        msg: &mut [u8],
    ) -> Option<Ipv4Addr> {
        let out = next.tunnels.get_mut(&to)?;
        let len = (msg.len() - d11_wire::gtpu::HEADER_LEN) as u64;
        if !self.delivered(from, msg.len()) {
            return None;
        }
        out.tx_packets += 1;
        out.tx_bytes += len;
        msg[4..8].copy_from_slice(&out.remote_teid.to_be_bytes());
        Some(out.remote)
    }

    /// An Echo Request for path supervision.
    pub fn echo_request(&mut self, out: &mut Vec<u8>) {
        self.signal(MessageType::EchoRequest, 0, &[], out);
    }

    /// Wraps `tpdu` for the tunnel `local_teid` into `out` (the UDP payload); returns the far
    /// end to send it to.
    pub fn encapsulate(
        &mut self,
        local_teid: u32,
        tpdu: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Ipv4Addr> {
        let (header, to) = self.g_pdu_header(local_teid, tpdu.len())?;
        out.clear();
        out.extend_from_slice(&header);
        out.extend_from_slice(tpdu);
        Some(to)
    }

    /// The header of a G-PDU carrying `len` octets through the tunnel `local_teid`, counted
    /// as sent, and the far end to send it to (for a caller that sends header and T-PDU
    /// from where they lie); `None` if there is no such tunnel or the T-PDU is too long.
    pub fn g_pdu_header(
        &mut self,
        local_teid: u32,
        len: usize,
    ) -> Option<([u8; d11_wire::gtpu::HEADER_LEN], Ipv4Addr)> {
        let t = self.tunnels.get_mut(&local_teid)?;
        let mut header = [0u8; d11_wire::gtpu::HEADER_LEN];
        Repr::g_pdu(t.remote_teid, len).emit(&mut header).ok()?;
        t.tx_packets += 1;
        t.tx_bytes += len as u64;
        Some((header, t.remote))
    }
}

fn emit_buf(out: &mut Vec<u8>, f: impl FnOnce(&mut [u8]) -> d11_wire::Result<usize>) -> usize {
    out.clear();
    out.resize(512, 0);
    f(out).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::gtpu::{ExtensionChain, ExtensionHeader};

    const SGW: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 3);
    const ENB: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 2);

    #[test]
    fn tunnels_deliver_and_encapsulate_with_counters() {
        let mut sgw = Endpoint::new(SGW, 1, 0x100);
        let mut enb = Endpoint::new(ENB, 1, 0x200);
        let (s_teid, e_teid) = (sgw.allocate_teid(), enb.allocate_teid());
        sgw.add(s_teid, e_teid, ENB);
        enb.add(e_teid, s_teid, SGW);
        let mut wire = Vec::new();
        let to = enb.encapsulate(e_teid, b"ip packet", &mut wire).unwrap();
        assert_eq!(to, SGW);
        let mut reply = Vec::new();
        assert_eq!(
            sgw.receive(ENB, &wire, &mut reply),
            Received::Deliver {
                local_teid: s_teid,
                tpdu: b"ip packet"
            }
        );
        assert!(reply.is_empty());
        // The same G-PDU from anyone but the tunnel's far end: dropped, unanswered.
        let elsewhere = Ipv4Addr::new(172, 16, 1, 66);
        assert_eq!(
            sgw.receive(elsewhere, &wire, &mut reply),
            Received::Dropped(Drop::WrongPeer)
        );
        assert!(reply.is_empty());
        assert_eq!(sgw.c.rx_wrong_peer, 1);
        assert_eq!(sgw.plain_g_pdu(ENB, &wire), Some(s_teid));
        assert_eq!(sgw.plain_g_pdu(elsewhere, &wire), None);
        assert_eq!(
            (
                sgw.get(s_teid).unwrap().rx_packets,
                enb.get(e_teid).unwrap().tx_bytes
            ),
            (1, 9)
        );
        // The same with an extension header we understand (PDU Session Container).
        let c = ExtensionHeader::pdu_session_container(1, 9);
        let mut cb = [0u8; 4];
        let chain = ExtensionChain::encode(
            &[ExtensionHeader {
                kind: ext::PDU_SESSION_CONTAINER,
                content: &c,
            }],
            &mut cb,
        )
        .unwrap();
        let r = Repr {
            extensions: chain,
            ..Repr::g_pdu(s_teid, 4)
        };
        let mut m = vec![0u8; r.buffer_len()];
        r.emit(&mut m).unwrap();
        let hl = r.header_len();
        m[hl..].copy_from_slice(b"data");
        assert_eq!(
            sgw.receive(ENB, &m, &mut reply),
            Received::Deliver {
                local_teid: s_teid,
                tpdu: b"data"
            }
        );
    }

    #[test]
    fn unknown_teid_draws_an_error_indication() {
        let mut sgw = Endpoint::new(SGW, 1, 0x100);
        let mut m = vec![0u8; 8 + 3];
        Repr::g_pdu(0xdead, 3).emit(&mut m).unwrap();
        let mut reply = Vec::new();
        assert_eq!(
            sgw.receive(ENB, &m, &mut reply),
            Received::Dropped(Drop::UnknownTeid)
        );
        let p = Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(
            (p.message_type(), p.teid()),
            (MessageType::ErrorIndication, 0)
        );
        let ies: Vec<_> = IeIter::new(p.payload()).flatten().collect();
        assert_eq!(
            ies,
            vec![Ie::TeidDataI(0xdead), Ie::GtpuPeerAddress(IpAddr::V4(SGW))]
        );
        // The peer learns which tunnel it was.
        let mut enb = Endpoint::new(ENB, 1, 1);
        assert_eq!(
            enb.receive(SGW, &reply, &mut Vec::new()),
            Received::ErrorIndication { teid: 0xdead }
        );
    }

    #[test]
    fn echo_carries_recovery() {
        let mut a = Endpoint::new(ENB, 5, 1);
        let mut b = Endpoint::new(SGW, 9, 1);
        let mut req = Vec::new();
        a.echo_request(&mut req);
        let mut resp = Vec::new();
        assert_eq!(b.receive(ENB, &req, &mut resp), Received::Reply);
        assert_eq!(
            a.receive(SGW, &resp, &mut Vec::new()),
            Received::EchoResponse { recovery: Some(9) }
        );
    }

    #[test]
    fn unknown_required_extension_and_garbage_are_refused() {
        let mut sgw = Endpoint::new(SGW, 1, 0x100);
        let t = sgw.allocate_teid();
        sgw.add(t, 1, ENB);
        let mut cb = [0u8; 4];
        let chain = ExtensionChain::encode(
            &[ExtensionHeader {
                kind: 0xdf,
                content: &[0, 0],
            }],
            &mut cb,
        )
        .unwrap();
        let r = Repr {
            extensions: chain,
            ..Repr::g_pdu(t, 1)
        };
        let mut m = vec![0u8; r.buffer_len()];
        r.emit(&mut m).unwrap();
        let mut reply = Vec::new();
        assert_eq!(
            sgw.receive(ENB, &m, &mut reply),
            Received::Dropped(Drop::UnsupportedExtension)
        );
        let p = Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(
            p.message_type(),
            MessageType::SupportedExtensionHeadersNotification
        );
        for bad in [
            &[][..],
            &[0x30][..],
            &[0x50, 0xff, 0, 0, 0, 0, 0, 1][..],
            &[0x30, 0xff, 0, 9, 0, 0, 0, 1][..],
        ] {
            assert!(matches!(
                sgw.receive(ENB, bad, &mut reply),
                Received::Dropped(Drop::Malformed)
            ));
        }
        assert_eq!(sgw.c.rx_malformed, 4);
        assert_eq!(sgw.c.tx_sehn, 1);
    }
}
