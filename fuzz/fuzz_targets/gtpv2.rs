#![no_main]
use d11_wire::gtpv2::{value, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        for ie in p.ies().flatten() {
            for inner in ie.group().flatten() {
                let _ = value::Fteid::decode(inner.value);
            }
            let _ = value::tbcd_decode(ie.value);
            let _ = value::apn_decode(ie.value);
            let _ = value::paa_v4_decode(ie.value);
        }
    }
});
