#![no_main]
//! Any sequence of frames into an eNodeB, SGW or PGW: raw frames, and datagrams to their own
//! GTP-U, GTPv2-C and S1 ports in well-formed IPv4/UDP (so the fuzzer reaches the protocol
//! code past the checksums); and offloaded frames, as a TAP hands them over: UDP super-frames
//! of GTP-U messages (what a kernel peer sends with `UDP_SEGMENT`), TCP super-frames to or
//! from the phone, and any frame with any offload header. Never a panic.
use d11_element::{Collect, Element};
use d11_epc::{enb, pgw, sgw};
use d11_wire::gso::{Gso, GSO_TCPV4, NEEDS_CSUM};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

/// An Ethernet frame from `src_mac` holding an IPv4 packet (no options, its header's checksum
/// right) of `protocol` from `src` to `dst`: `l4` then `payload`.
fn ipv4(
    (dst_mac, src_mac): ([u8; 6], [u8; 6]),
    protocol: u8,
    (src, dst): ([u8; 4], [u8; 4]),
    l4: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[8, 0]);
    let total = 20 + l4.len() + payload.len();
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, protocol, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    d11_wire::fill_ipv4_checksum(&mut ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f.extend_from_slice(payload);
    f
}

fn udp(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], port: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 8];
    h[..2].copy_from_slice(&port.to_be_bytes());
    h[2..4].copy_from_slice(&port.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ipv4((dst_mac, [2, 0, 0, 0, 0, 9]), 17, (src, dst), &h, payload)
}

const UE: [u8; 4] = [10, 45, 0, 2];
const SERVER: [u8; 4] = [203, 0, 113, 20];

/// An IPv4/TCP frame from `src` to `dst` (from the phone's MAC; data offset 5, checksum left
/// partial, as a kernel's TCP super-frame has it), and the offload header for it with
/// segments of `mss` octets.
fn tcp(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], mss: u16, payload: &[u8]) -> (Vec<u8>, Gso) {
    let h = [0x9c, 0x40, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];
    let f = ipv4((dst_mac, [2, 0xd1, 0, 0, 0xbe, 1]), 6, (src, dst), &h, payload);
    let g = Gso {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
        outer_th: 0,
        inner_nh: 0,
    };
    (f, g)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let (mut e, addrs, src): (Box<dyn Element>, [[u8; 4]; 2], [u8; 4]) = match which % 3 {
        0 => (
            Box::new(
                enb::EnbLogic::new(
                    &serde_json::from_str(r#"{"name":"enb","mme":"172.16.1.5","ports":[{"name":"radio","mac":"02:00:00:00:00:01","offload":true},{"name":"epc","mac":"02:00:00:00:00:02","addresses":["172.16.1.2/24"],"offload":true}],
                        "static_bearers":[{"ue_mac":"02:d1:00:00:be:01","pdn_type":"ethernet","ue_ip":"10.45.0.2","enb_teid":1,"sgw":"172.16.1.3","sgw_teid":2}]}"#).unwrap(),
                    1,
                )
                .unwrap(),
            ),
            [[172, 16, 1, 2], [172, 16, 1, 2]],
            [172, 16, 1, 5],
        ),
        1 => (
            Box::new(
                sgw::SgwLogic::new(
                    &serde_json::from_str(r#"{"name":"sgw","ports":[{"name":"epc","mac":"02:00:00:00:00:01","addresses":["172.16.1.3/24"],"offload":true},{"name":"s5","mac":"02:00:00:00:00:02","addresses":["172.16.5.3/24"],"offload":true}],
                        "static_sessions":[{"imsi":"1","enb":"172.16.1.2","enb_teid":1,"s1u_teid":2,"pgw":"172.16.5.4","pgw_teid":3,"s5u_teid":4}]}"#).unwrap(),
                    1,
                )
                .unwrap(),
            ),
            [[172, 16, 1, 3], [172, 16, 5, 3]],
            [172, 16, 1, 5],
        ),
        _ => (
            Box::new(
                pgw::PgwLogic::new(
                    &serde_json::from_str(r#"{"name":"pgw","ports":[{"name":"s5","mac":"02:00:00:00:00:01","addresses":["172.16.5.4/24"],"offload":true},{"name":"sgi","mac":"02:00:00:00:00:02","addresses":["172.16.9.4/24"],"offload":true}],
                        "routes":[{"prefix":"0.0.0.0/0","via":"172.16.9.1"}],
                        "static_sessions":[{"imsi":"1","ue_ip":"10.45.0.2","s5u_teid":3,"sgw":"172.16.5.3","sgw_teid":4}]}"#).unwrap(),
                    1,
                )
                .unwrap(),
            ),
            [[172, 16, 5, 4], [172, 16, 9, 4]],
            [172, 16, 5, 3],
        ),
    };
    // The tunnels' far end on each port (GTP-U from anyone else is dropped unread), and the
    // port the phone's own packets come in on (the server's come in on the other).
    let (peers, ue_port): ([[u8; 4]; 2], usize) = match which % 3 {
        0 => ([[172, 16, 1, 3]; 2], 0),
        1 => ([[172, 16, 1, 2], [172, 16, 5, 4]], 0),
        _ => ([[172, 16, 5, 3]; 2], 0),
    };
    let mut now = Instant::now();
    let mut tx = Collect::default();
    // Records: [kind, len_hi, len_lo, bytes...]; kind picks the port and whether the bytes are
    // a raw frame, a datagram to 2152, 2123 or 36412, or an offloaded frame (above).
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        let port = usize::from(kind & 1);
        let mac = [2, 0, 0, 0, 0, 1 + port as u8];
        // The first two octets of an offloaded record's bytes: the size of its segments.
        let size = body.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let tail = body.get(2..).unwrap_or_default();
        let (mut f, g) = match (kind >> 1) % 7 {
            0 => (body.to_vec(), None),
            k @ 1..=3 => {
                let dport = [2152, 2123, 36412][usize::from(k - 1)];
                // The element's MAC on the port: broadcast reaches it as well.
                (udp([0xff; 6], src, addrs[port], dport, body), None)
            }
            // A UDP super-frame of GTP-U messages from the tunnels' far end on the port.
            4 => (udp(mac, peers[port], addrs[port], 2152, tail), Some(Gso::udp_segments(size))),
            // A TCP super-frame to or from the phone.
            5 => {
                let (a, b) = if port == ue_port { (UE, SERVER) } else { (SERVER, UE) };
                let (f, g) = tcp(mac, a, b, size, tail);
                (f, Some(g))
            }
            // Any frame with any offload header (its 24 octets as a TAP hands them over).
            _ => {
                let (h, f) = body.split_at(body.len().min(Gso::TUNNEL_LEN));
                (f.to_vec(), Some(Gso::parse(h)))
            }
        };
        match g {
            Some(g) if e.takes_gso() => e.handle_frame_gso(now, port, &mut f, &g, &mut tx),
            _ => e.handle_frame(now, port, &mut f, &mut tx),
        }
        now += Duration::from_millis(300);
        e.poll(now, &mut tx);
        tx.frames.clear();
        rest = &rest[3 + len..];
    }
});
