//! Pieces of the mobile core that several programs share: the HSS's subscriber database and
//! the GTP-U tunnel endpoint of the eNodeB, SGW and PGW.

pub mod subscribers;
pub mod tunnel;
