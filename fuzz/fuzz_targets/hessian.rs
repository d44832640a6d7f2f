#![no_main]
//! Any bytes into the Hessian 2.0 decoder, value after value: an error or a value, never a
//! panic; what it decodes encodes again and decodes to the same.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = d11_hessian::Decoder::new(data);
    while !d.is_empty() {
        match d.read() {
            Ok(v) => {
                let again = d11_hessian::to_bytes(&v);
                let back = d11_hessian::from_bytes(&again).expect("our own encoding decodes");
                // NaN is never equal to itself; compare the encodings instead.
                assert_eq!(d11_hessian::to_bytes(&back), again);
            }
            Err(_) => break,
        }
    }
});
