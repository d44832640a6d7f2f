#![no_main]
//! Any sequence of frames into an eNodeB, SGW or PGW: raw frames, and datagrams to their own
//! GTP-U, GTPv2-C and S1 ports in well-formed IPv4/UDP (so the fuzzer reaches the protocol
//! code past the checksums). Never a panic.
use d11_element::{Collect, Element};
use d11_epc::{enb, pgw, sgw};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fn udp(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&[8, 0]);
    let total = 28 + payload.len();
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    d11_wire::fill_ipv4_checksum(&mut ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let (mut e, addrs, src): (Box<dyn Element>, [[u8; 4]; 2], [u8; 4]) = match which % 3 {
        0 => (
            Box::new(
                enb::EnbLogic::new(
                    &serde_json::from_str(r#"{"name":"enb","mme":"172.16.1.5","ports":[{"name":"radio"},{"name":"epc","addresses":["172.16.1.2/24"]}]}"#).unwrap(),
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
                    &serde_json::from_str(r#"{"name":"sgw","ports":[{"name":"epc","addresses":["172.16.1.3/24"]},{"name":"s5","addresses":["172.16.5.3/24"]}],
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
                    &serde_json::from_str(r#"{"name":"pgw","ports":[{"name":"s5","addresses":["172.16.5.4/24"]},{"name":"sgi","addresses":["172.16.9.4/24"]}],
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
    let mut now = Instant::now();
    let mut tx = Collect::default();
    // Records: [kind, len_hi, len_lo, bytes...]; kind picks the port and whether the bytes are
    // a raw frame or a datagram to 2152, 2123 or 36412.
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        let port = usize::from(kind & 1);
        let mut f = match (kind >> 1) % 4 {
            0 => body.to_vec(),
            k => {
                let dport = [2152, 2123, 36412][usize::from(k - 1)];
                // The element's MAC on the port: broadcast reaches it as well.
                udp([0xff; 6], src, addrs[port], dport, body)
            }
        };
        e.handle_frame(now, port, &mut f, &mut tx);
        now += Duration::from_millis(300);
        e.poll(now, &mut tx);
        tx.frames.clear();
        rest = &rest[3 + len..];
    }
});
