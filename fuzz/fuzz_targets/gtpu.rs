#![no_main]
use d11_wire::gtpu::{IeIter, Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        if let Ok(r) = Repr::parse(&p) {
            // Whatever parses emits to a message that parses back to the same Repr.
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out).unwrap();
            let p2 = Packet::new_checked(&out[..]).unwrap();
            assert_eq!(Repr::parse(&p2).unwrap(), r);
            for e in r.extensions.iter() {
                let _ = e.content.len();
            }
        }
        for ie in IeIter::new(p.payload()) {
            if let Ok(ie) = ie {
                let mut b = vec![0u8; ie.buffer_len()];
                let _ = ie.emit(&mut b);
            }
        }
    }
});
