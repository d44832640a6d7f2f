//! Product pictures for the lab: real PNG files (RFC 2083) of a requested size, drawn from a
//! seed, so that a browser or an image viewer opens what the CDN carries. The pixels are
//! stored uncompressed (zlib "stored" blocks), which makes the file's size the size asked for,
//! to within a row.

use sha2::{Digest, Sha256};

/// CRC-32 (ISO 3309, as PNG's chunks use), bitwise: pictures are made once, at start.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for p in parts {
        for &b in *p {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
    }
    !c
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// A square RGB picture of about `size` octets (at least 64x64... down to 8x8 for tiny
/// sizes): stripes and a gradient whose colours come from `seed`.
pub fn png(seed: &str, size: usize) -> Vec<u8> {
    let side = (((size.saturating_sub(100)) / 3) as f64).sqrt().max(8.0) as usize;
    let colour = Sha256::digest(seed.as_bytes());
    let mut raw = Vec::with_capacity((side * 3 + 1) * side);
    for y in 0..side {
        raw.push(0); // filter: none
        for x in 0..side {
            let band = (x * 8 / side + y * 8 / side) % 4;
            let base = &colour[band * 3..band * 3 + 3];
            raw.push(base[0].wrapping_add((x * 255 / side) as u8 / 4));
            raw.push(base[1].wrapping_add((y * 255 / side) as u8 / 4));
            raw.push(base[2]);
        }
    }
    // zlib: header, stored blocks of at most 65,535 octets, Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let n = b.len() as u16;
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&(!n).to_le_bytes());
        z.extend_from_slice(b);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(side as u32).to_be_bytes());
    ihdr.extend_from_slice(&(side as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_near_what_was_asked_and_the_checksums_are_right() {
        for size in [10_000, 200_000, 2_000_000] {
            let p = png("p1", size);
            assert!(
                p.len() <= size + 4096 && p.len() + 4096 >= size,
                "{size}: {}",
                p.len()
            );
            assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
            // IHDR's CRC as every PNG reader checks it.
            let crc = u32::from_be_bytes([p[29], p[30], p[31], p[32]]);
            assert_eq!(crc, crc32(&[&p[12..16], &p[16..29]]));
        }
        assert_eq!(crc32(&[b"123456789"]), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_ne!(png("a", 10_000), png("b", 10_000));
    }
}
