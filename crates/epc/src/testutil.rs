//! Helpers for the elements' unit tests: frames in, datagrams out, ARP answered for the peers.

use crate::gw;
use d11_element::{Collect, Element, PortId};
use std::net::Ipv4Addr;
use std::time::Instant;

/// The crate's tests count their heap allocations (`d11_element::alloc_count`).
#[global_allocator]
static COUNTING: d11_element::alloc_count::Counting = d11_element::alloc_count::Counting;

pub fn udp_frame(
    dst: [u8; 6],
    from: ([u8; 6], Ipv4Addr),
    to: Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&from.0);
    f.extend_from_slice(&[8, 0]);
    let total = 28 + payload.len();
    let mut ip = [0u8; 20];
    d11_wire::ip::write_header(&mut ip, total, 64, 17, from.1, to);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Feeds a frame; answers the element's ARP for `peers`; returns the other frames it sent.
pub fn drive_frames(
    s: &mut dyn Element,
    port: PortId,
    mut f: Vec<u8>,
    peers: &[([u8; 6], Ipv4Addr)],
) -> Vec<(PortId, Vec<u8>)> {
    let now = Instant::now();
    let mut tx = Collect::default();
    s.handle_frame(now, port, &mut f, &mut tx);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tx.frames.len() {
        let (p, fr) = tx.frames[i].clone();
        i += 1;
        if fr[12..14] == [8, 6] && fr[20..22] == [0, 1] {
            let target = Ipv4Addr::new(fr[38], fr[39], fr[40], fr[41]);
            let peer = *peers.iter().find(|x| x.1 == target).expect("a peer's ARP");
            let mine: [u8; 6] = fr[6..12].try_into().unwrap();
            let asker = Ipv4Addr::new(fr[28], fr[29], fr[30], fr[31]);
            let mut a = d11_wire::arp::reply(peer.0, peer.1, mine, asker).to_vec();
            s.handle_frame(now, p, &mut a, &mut tx);
            continue;
        }
        out.push((p, fr));
    }
    out
}

/// [`drive_frames`], keeping the UDP datagrams: (port, destination, destination port, payload).
pub fn drive(
    s: &mut dyn Element,
    port: PortId,
    f: Vec<u8>,
    peers: &[([u8; 6], Ipv4Addr)],
) -> Vec<(PortId, Ipv4Addr, u16, Vec<u8>)> {
    drive_frames(s, port, f, peers)
        .into_iter()
        .filter_map(|(p, fr)| {
            let u = gw::parse_udp(&fr[14..]).ok()?;
            Some((p, u.dst, u.dport, u.payload.to_vec()))
        })
        .collect()
}

/// A G-PDU for `teid` carrying `body`.
pub fn gpdu(teid: u32, body: &[u8]) -> Vec<u8> {
    let r = d11_wire::gtpu::Repr::g_pdu(teid, body.len());
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b).expect("room for the header");
    b[r.header_len()..].copy_from_slice(body);
    b
}

/// A G-PDU for `teid` carrying `body` behind a sequence number: the same T-PDU as [`gpdu`],
/// with an optional field the elements' fast paths leave to the slow one.
pub fn gpdu_with_seq(teid: u32, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0x32, 255];
    b.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    b.extend_from_slice(&teid.to_be_bytes());
    b.extend_from_slice(&[0, 9, 0, 0]);
    b.extend_from_slice(body);
    b
}

/// `f` (a frame from [`udp_frame`]) with its UDP checksum filled in.
pub fn with_udp_checksum(mut f: Vec<u8>) -> Vec<u8> {
    let (src, dst) = (d11_wire::ip::src(&f[14..]), d11_wire::ip::dst(&f[14..]));
    let c = d11_wire::ip::udp_checksum(src, dst, &f[34..]);
    f[40..42].copy_from_slice(&c.to_be_bytes());
    f
}
