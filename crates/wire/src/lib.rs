//! Wire formats for d11.
//!
//! Ethernet, ARP, IPv4, ICMP, UDP and TCP come from [`smoltcp::wire`] (re-exported as
//! [`smol`]); this crate adds the protocols no maintained crate covers (GTP-U, VXLAN) and
//! [`guard`], which decides whether an untrusted frame is well-formed enough to act on.
//!
//! Every codec has the same shape (after smoltcp): a zero-copy view `Packet<T: AsRef<[u8]>>`
//! whose `new_checked` guarantees that no accessor can panic afterwards, and a `Repr` that can
//! only hold valid states, with `parse`, `buffer_len` and `emit`.

pub mod gtpu;
pub mod guard;
pub mod vxlan;

pub use smoltcp::wire as smol;

/// Why a buffer could not be read as a protocol message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the field at `offset` that needs `need` bytes.
    #[error("{layer}: truncated: need {need} bytes at offset {offset}, have {have}")]
    Truncated {
        layer: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    /// A length field disagrees with the buffer or with another field.
    #[error("{layer}: bad length field {value} at offset {offset}")]
    BadLength {
        layer: &'static str,
        offset: usize,
        value: usize,
    },
    /// A version field holds a value we do not speak.
    #[error("{layer}: unsupported version {version}")]
    BadVersion { layer: &'static str, version: u8 },
    /// A field holds a value the specification forbids.
    #[error("{layer}: invalid {field}")]
    Invalid {
        layer: &'static str,
        field: &'static str,
    },
}

pub type Result<T> = core::result::Result<T, Error>;

#[inline]
pub(crate) fn need(layer: &'static str, buf: &[u8], offset: usize, len: usize) -> Result<()> {
    if buf.len() < offset + len {
        Err(Error::Truncated {
            layer,
            offset,
            need: len,
            have: buf.len().saturating_sub(offset),
        })
    } else {
        Ok(())
    }
}
