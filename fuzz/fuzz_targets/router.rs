#![no_main]
//! Any sequence of frames into a router's ports, plain or with any offload header (as a TAP
//! with `IFF_VNET_HDR` hands them over): never a panic.
use d11_element::{Collect, Element};
use d11_router::{Router, RouterConfig};
use d11_wire::gso::Gso;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let cfg: RouterConfig = serde_json::from_str(
        r#"{"name":"r","ports":[{"name":"eth0","addresses":["10.0.1.1/24"],"offload":true},{"name":"eth1","addresses":["10.0.2.1/24"],"mtu":576}],
            "routes":[{"prefix":"0.0.0.0/0","via":"10.0.2.2"}]}"#,
    )
    .unwrap();
    let mut r = Router::new(&cfg).unwrap();
    let mut now = Instant::now();
    let mut tx = Collect::default();
    // Frames are length-prefixed: [port, len_hi, len_lo, bytes...]; with the port octet's top
    // bit, the bytes start with an offload header's 24 octets.
    let mut rest = data;
    while rest.len() >= 3 {
        let port = usize::from(rest[0] % 3);
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        if rest[0] & 0x80 != 0 {
            let (h, f) = body.split_at(body.len().min(Gso::TUNNEL_LEN));
            r.handle_frame_gso(now, port, &mut f.to_vec(), &Gso::parse(h), &mut tx);
        } else {
            r.handle_frame(now, port, &mut body.to_vec(), &mut tx);
        }
        now += Duration::from_millis(700);
        r.poll(now, &mut tx);
        rest = &rest[3 + len..];
    }
});
