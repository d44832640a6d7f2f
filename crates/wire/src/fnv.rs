//! FNV-1a (Fowler/Noll/Vo), the one non-cryptographic hash of the project: stable across runs
//! and versions (MACs derived from node names, order ids and shards, flow hashes for balancing
//! and for the outer UDP source ports of tunnels). Not for anything an attacker could aim at.

const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME_64: u64 = 0x0100_0000_01b3;
const OFFSET_32: u32 = 0x811c_9dc5;
const PRIME_32: u32 = 0x0100_0193;

/// FNV-1a, 64 bits, fed in pieces.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(OFFSET_64)
    }
}

impl Fnv64 {
    pub fn write(mut self, bytes: &[u8]) -> Self {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(PRIME_64);
        }
        self
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a, 64 bits, of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    Fnv64::default().write(bytes).finish()
}

/// FNV-1a, 32 bits, of `bytes`.
pub fn fnv1a32(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes
        .into_iter()
        .fold(OFFSET_32, |h, b| (h ^ u32::from(b)).wrapping_mul(PRIME_32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // From the FNV reference test vectors (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a32(*b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(*b"foobar"), 0xbf9c_f968);
        assert_eq!(
            Fnv64::default().write(b"foo").write(b"bar").finish(),
            fnv1a64(b"foobar")
        );
    }
}
