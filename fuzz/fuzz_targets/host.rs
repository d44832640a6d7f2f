#![no_main]
//! Any frame into a userspace host: never a panic.
use d11_element::{Collect, Element};
use d11_host::{Host, HostConfig};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let cfg: HostConfig = serde_json::from_str(
        r#"{"name":"h","gateway":"10.0.1.1","ports":[{"name":"eth0","addresses":["10.0.1.2/24"]}]}"#,
    )
    .unwrap();
    let now = Instant::now();
    let mut h = Host::new(&cfg, now).unwrap();
    let mut tx = Collect::default();
    let mut f = data.to_vec();
    h.handle_frame(now, 0, &mut f, &mut tx);
});
