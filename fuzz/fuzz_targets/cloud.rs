#![no_main]
//! Any sequence of frames into a vswitch or the gateway node: raw frames, VXLAN datagrams to
//! their underlay address in well-formed IPv4/UDP, and TCP/UDP to a VIP; each plain or with
//! any offload header (as a TAP with `IFF_VNET_HDR` hands them over). Never a panic.
use d11_element::{Collect, Element};
use d11_vgw::{Logic as VgwLogic, VgwConfig};
use d11_vswitch::{Logic as VswitchLogic, VswitchConfig};
use d11_wire::gso::Gso;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fn ipv4(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&[8, 0]);
    let total = 20 + l4.len();
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    d11_wire::fill_ipv4_checksum(&mut ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&50000u16.to_be_bytes());
    u.extend_from_slice(&port.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let mut e: Box<dyn Element> = if which % 2 == 0 {
        let cfg: VswitchConfig = serde_json::from_str(
            r#"{"name":"hosta","ports":[{"name":"vm1","offload":true},{"name":"vm2"},{"name":"underlay","addresses":["10.1.0.11/24"],"offload":true}],
                "vnis":{"vm1":1001,"vm2":1002},"vteps":{"1001":["10.1.0.12"]}}"#,
        )
        .unwrap();
        Box::new(VswitchLogic::new(&cfg).unwrap())
    } else {
        let cfg: VgwConfig = serde_json::from_str(
            r#"{"name":"vgw1","ports":[{"name":"external","addresses":["203.0.113.2/24"],"offload":true},{"name":"underlay","addresses":["10.1.0.1/24"],"offload":true}],
                "vpc":{"vni":1001,"router":"192.168.1.1/24","hosts":["10.1.0.11","10.1.0.12"]},
                "vips":[{"vip":"203.0.113.10","lbs":["192.168.1.10"]}]}"#,
        )
        .unwrap();
        Box::new(VgwLogic::new(&cfg).unwrap())
    };
    let (underlay_port, underlay_addr, external) = if which % 2 == 0 {
        (2usize, [10, 1, 0, 11], None)
    } else {
        (1usize, [10, 1, 0, 1], Some(0usize))
    };
    let mut now = Instant::now();
    let mut tx = Collect::default();
    // Records: [kind, len_hi, len_lo, bytes...].
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        // With the kind's top bit, the bytes start with an offload header's 24 octets.
        let (g, body) = if kind & 0x80 != 0 {
            let (h, b) = body.split_at(body.len().min(Gso::TUNNEL_LEN));
            (Some(Gso::parse(h)), b)
        } else {
            (None, body)
        };
        let kind = kind & 0x7f;
        let (port, mut f) = match kind % 4 {
            0 => (usize::from(kind >> 2) % 3, body.to_vec()),
            1 => (underlay_port, ipv4([0xff; 6], [10, 1, 0, 12], underlay_addr, 17, &udp(4789, body))),
            2 => match external {
                Some(p) => (p, ipv4([0xff; 6], [198, 51, 100, 10], [203, 0, 113, 10], 6, body)),
                None => (0, body.to_vec()),
            },
            _ => match external {
                Some(p) => (p, ipv4([0xff; 6], [198, 51, 100, 10], [203, 0, 113, 10], 17, &udp(443, body))),
                None => (1, body.to_vec()),
            },
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
