//! Benchmark helpers: the null forwarder (the baseline every forwarding element is measured
//! against) and the frame generator used by `bench/`.

use d11_element::{Element, PortId, Transmit};
use serde::Deserialize;
use std::time::Instant;

/// Copies every frame from port 0 to port 1 and back, unchanged: the cost of the element
/// runtime and two TAPs, and nothing else.
#[derive(Debug, Default)]
pub struct NullForwarder {
    frames: u64,
}

#[derive(Debug, Deserialize)]
pub struct NullConfig {
    pub ports: Vec<NullPort>,
}

#[derive(Debug, Deserialize)]
pub struct NullPort {
    pub name: String,
}

impl Element for NullForwarder {
    fn role(&self) -> &'static str {
        "null"
    }
    fn handle_frame(
        &mut self,
        _now: Instant,
        port: PortId,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
    ) {
        self.frames += 1;
        tx.send(port ^ 1, frame);
    }
    fn takes_gso(&self) -> bool {
        true
    }
    fn takes_udp_segments(&self) -> bool {
        true
    }
    fn takes_tunnel_gso(&self) -> bool {
        true
    }
    /// A super-frame goes on whole (cut only if the other port has no offloads).
    fn handle_frame_gso(
        &mut self,
        _now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &d11_wire::gso::Gso,
        tx: &mut dyn Transmit,
    ) {
        self.frames += 1;
        tx.send_gso(port ^ 1, frame, gso);
    }
    fn show(&self, _table: &str, _now: Instant) -> Option<serde_json::Value> {
        None
    }
    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        out("frames", self.frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_element::Collect;

    #[test]
    fn crosses_ports_unchanged() {
        let mut n = NullForwarder::default();
        let mut tx = Collect::default();
        n.handle_frame(Instant::now(), 0, &mut [1, 2, 3], &mut tx);
        n.handle_frame(Instant::now(), 1, &mut [4], &mut tx);
        assert_eq!(tx.frames, vec![(1, vec![1, 2, 3]), (0, vec![4])]);
    }
}
