#![no_main]
//! Any frame into a userspace endpoint stack, plain or with any offload header (as a TAP with
//! `IFF_VNET_HDR` hands them over): never a panic.
use d11_element::{Collect, Element};
use d11_stack::{Stack, StackConfig};
use d11_wire::gso::Gso;
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let cfg: StackConfig = serde_json::from_str(
        r#"{"name":"h","gateway":"10.0.1.1","ports":[{"name":"eth0","addresses":["10.0.1.2/24"],"offload":true}]}"#,
    )
    .unwrap();
    let (stack, mut element) = Stack::new(&cfg, "host").unwrap();
    let _listener = stack.listen(443, 2).unwrap();
    let mut tx = Collect::default();
    // Frames are length-prefixed so one input can hold a conversation; with the length's top
    // bit, the bytes start with an offload header's 24 octets.
    let mut rest = data;
    while rest.len() >= 2 {
        let offloaded = rest[0] & 0x80 != 0;
        let len = usize::from(u16::from_be_bytes([rest[0] & 0x7f, rest[1]])).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        if offloaded {
            let (h, f) = body.split_at(body.len().min(Gso::TUNNEL_LEN));
            element.handle_frame_gso(Instant::now(), 0, &mut f.to_vec(), &Gso::parse(h), &mut tx);
        } else {
            element.handle_frame(Instant::now(), 0, &mut body.to_vec(), &mut tx);
        }
        rest = &rest[2 + len..];
    }
    element.poll(Instant::now(), &mut tx);
});
