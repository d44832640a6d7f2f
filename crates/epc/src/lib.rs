//! Pieces of the mobile core that several programs share: the HSS's subscriber database, the
//! GTP-U tunnel endpoint of the eNodeB, SGW and PGW, and the PGW's UE address pool and TCP MSS
//! clamping.

pub mod enb;
pub mod gw;
pub mod mss;
pub mod pgw;
pub mod pool;
pub mod s1;
pub mod sgw;
pub mod subscribers;
pub mod superframe;
#[cfg(test)]
mod superframe_tests;
#[cfg(test)]
pub(crate) mod testutil;
pub mod transactions;
pub mod tunnel;
