#![no_main]
//! Any frame into a userspace endpoint stack: never a panic.
use d11_element::{Collect, Element};
use d11_stack::{Stack, StackConfig};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let cfg: StackConfig = serde_json::from_str(
        r#"{"name":"h","gateway":"10.0.1.1","ports":[{"name":"eth0","addresses":["10.0.1.2/24"]}]}"#,
    )
    .unwrap();
    let (stack, mut element) = Stack::new(&cfg, "host").unwrap();
    let _listener = stack.listen(443, 2).unwrap();
    let mut tx = Collect::default();
    // Frames are length-prefixed so one input can hold a conversation.
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let mut f = rest[2..2 + len].to_vec();
        element.handle_frame(Instant::now(), 0, &mut f, &mut tx);
        rest = &rest[2 + len..];
    }
    element.poll(Instant::now(), &mut tx);
});
