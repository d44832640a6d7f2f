#![no_main]
use d11_wire::vxlan::{Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        let _ = p.payload().len();
        let _ = p.reserved_bits_set();
        if let Ok(r) = Repr::parse(&p) {
            let mut b = [0u8; 8];
            r.emit(&mut b).unwrap();
            assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
        }
    }
});
