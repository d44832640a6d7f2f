//! Health checks as HAProxy counts them: a peer goes down after `fall` failed checks in a row
//! and comes back after `rise` good ones. The one rule for the balancer's backends and the
//! gateway node's LB VMs; how a check is made (a TCP connect, a SYN probe) is theirs.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When and how strictly to check.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CheckConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

impl Default for CheckConfig {
    fn default() -> Self {
        // HAProxy's defaults: inter 2s, rise 2, fall 3.
        Self {
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }
}

impl CheckConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(10))
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(10))
    }
}

/// A peer's state by its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Health {
    pub up: bool,
    /// Successes (while down) or failures (while up) in a row.
    pub streak: u32,
}

impl Health {
    pub fn new(up: bool) -> Self {
        Self { up, streak: 0 }
    }

    /// A check's result; `Some(up)` when the state changes.
    pub fn record(&mut self, ok: bool, cfg: &CheckConfig) -> Option<bool> {
        // The streak counts results against the current state.
        if ok != self.up {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        let need = if self.up { cfg.fall } else { cfg.rise }.max(1);
        if self.streak < need {
            return None;
        }
        self.up = !self.up;
        self.streak = 0;
        Some(self.up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_then_rise() {
        let cfg = CheckConfig::default();
        let mut h = Health::new(true);
        // Two failures are not enough (fall 3); a success in between starts over.
        assert_eq!(h.record(false, &cfg), None);
        assert_eq!(h.record(false, &cfg), None);
        assert_eq!(h.record(true, &cfg), None);
        assert_eq!(h.record(false, &cfg), None);
        assert_eq!(h.record(false, &cfg), None);
        assert_eq!(h.record(false, &cfg), Some(false));
        assert!(!h.up);
        assert_eq!(h.record(true, &cfg), None);
        assert_eq!(h.record(true, &cfg), Some(true));
        // rise 0 or fall 0 mean 1.
        let cfg = CheckConfig {
            rise: 0,
            fall: 0,
            ..cfg
        };
        assert_eq!(h.record(false, &cfg), Some(false));
    }
}
