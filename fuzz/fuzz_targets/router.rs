#![no_main]
//! Any sequence of frames into a router's ports: never a panic.
use d11_element::{Collect, Element};
use d11_router::{Router, RouterConfig};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let cfg: RouterConfig = serde_json::from_str(
        r#"{"name":"r","ports":[{"name":"eth0","addresses":["10.0.1.1/24"]},{"name":"eth1","addresses":["10.0.2.1/24"],"mtu":576}],
            "routes":[{"prefix":"0.0.0.0/0","via":"10.0.2.2"}]}"#,
    )
    .unwrap();
    let mut r = Router::new(&cfg).unwrap();
    let mut now = Instant::now();
    let mut tx = Collect::default();
    // Frames are length-prefixed: [port, len_hi, len_lo, bytes...].
    let mut rest = data;
    while rest.len() >= 3 {
        let port = usize::from(rest[0] % 3);
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let mut f = rest[3..3 + len].to_vec();
        r.handle_frame(now, port, &mut f, &mut tx);
        now += Duration::from_millis(700);
        r.poll(now, &mut tx);
        rest = &rest[3 + len..];
    }
});
