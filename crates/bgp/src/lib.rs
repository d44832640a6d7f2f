//! BGP-4 for the lab (stage 2 of docs/journey.md), sans-IO: time is passed in, the I/O layer
//! (the router's TCP) carries the octets.
//!
//! - [`wire`]: framing on a TCP stream and the codec, which is NetGauze's `netgauze-bgp-pkt`
//!   (a maintained crate with typed messages, capabilities and path attributes, and parse
//!   errors mapped to NOTIFICATIONs), so no BGP encoding is written by hand here.
//! - [`session`]: one session's finite state machine (RFC 4271 §8) and timers.
//! - [`rib`]: Adj-RIB-In, import policy and the decision process (§9.1), with why.
//! - [`speaker`]: sessions, RIB and Adj-RIB-Out together: what a router runs.
//! - [`bfd`]: BFD (RFC 5880/5881), asynchronous mode, to see a dead link in milliseconds.
//! - [`update`]: UPDATEs to and from the RIB's terms, with RFC 7606's treat-as-withdraw.

pub mod bfd;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod update;
pub mod wire;

#[cfg(test)]
mod rib_tests;
#[cfg(test)]
mod speaker_tests;
#[cfg(test)]
mod tests;
