//! GTPv2-C requests in flight (TS 29.274 §7.6): a request is sent again every T3 until its
//! answer comes, N3 times at most, then given up. Sans-IO: time is passed in, and what is due
//! is handed back to the caller to send. The SGW's requests to the PGW and the MME, and the
//! MME's to the SGW, go through it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The retransmission timer.
pub const T3: Duration = Duration::from_secs(1);
/// Retransmissions at most.
pub const N3: u32 = 3;

/// A request waiting for its answer, with what its sender keeps about it (`key`).
#[derive(Debug, Clone)]
pub struct Transaction<K> {
    pub key: K,
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub bytes: Vec<u8>,
    sent: Instant,
    tries: u32,
}

/// Requests in flight, by sequence number.
#[derive(Debug)]
pub struct Transactions<K> {
    pending: HashMap<u32, Transaction<K>>,
    pub retransmissions: u64,
    pub timeouts: u64,
}

impl<K> Default for Transactions<K> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            retransmissions: 0,
            timeouts: 0,
        }
    }
}

impl<K> Transactions<K> {
    /// A request with sequence number `seq` was just sent.
    pub fn begin(
        &mut self,
        now: Instant,
        seq: u32,
        from: Ipv4Addr,
        to: Ipv4Addr,
        bytes: Vec<u8>,
        key: K,
    ) {
        self.pending.insert(
            seq,
            Transaction {
                key,
                from,
                to,
                bytes,
                sent: now,
                tries: 1,
            },
        );
    }

    /// The answer to `seq` came: its transaction, if it was ours.
    pub fn answered(&mut self, seq: u32) -> Option<Transaction<K>> {
        self.pending.remove(&seq)
    }

    pub fn get(&self, seq: u32) -> Option<&Transaction<K>> {
        self.pending.get(&seq)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.pending.values().map(|t| &t.key)
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the next request is due again.
    pub fn poll_at(&self) -> Option<Instant> {
        self.pending.values().map(|t| t.sent + T3).min()
    }

    /// Sends again (`send(from, to, bytes)`) what is due; returns the transactions given up
    /// after N3 retransmissions.
    pub fn poll(
        &mut self,
        now: Instant,
        mut send: impl FnMut(Ipv4Addr, Ipv4Addr, &[u8]),
    ) -> Vec<Transaction<K>> {
        let mut due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.sent) >= T3)
            .map(|(s, _)| *s)
            .collect();
        due.sort_unstable();
        let mut gone = Vec::new();
        for seq in due {
            let Some(t) = self.pending.get_mut(&seq) else {
                continue;
            };
            if t.tries > N3 {
                self.timeouts += 1;
                gone.extend(self.pending.remove(&seq));
                continue;
            }
            t.tries += 1;
            t.sent = now;
            self.retransmissions += 1;
            send(t.from, t.to, &t.bytes);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resent_every_t3_n3_times_then_given_up() {
        let t0 = Instant::now();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut tr = Transactions::default();
        tr.begin(t0, 7, a, b, vec![1, 2, 3], "create");
        tr.begin(t0, 8, a, b, vec![4], "delete");
        assert_eq!(tr.poll_at(), Some(t0 + T3));
        let mut sent = Vec::new();
        // Nothing before T3.
        assert!(tr
            .poll(t0 + T3 / 2, |_, _, x| sent.push(x.to_vec()))
            .is_empty());
        assert!(sent.is_empty());
        // 8 is answered; 7 is sent again three times, then given up.
        assert_eq!(tr.answered(8).map(|t| t.key), Some("delete"));
        for i in 1..=N3 {
            assert!(tr
                .poll(t0 + T3 * i, |_, _, x| sent.push(x.to_vec()))
                .is_empty());
        }
        assert_eq!(sent, vec![vec![1, 2, 3]; N3 as usize]);
        let gone = tr.poll(t0 + T3 * (N3 + 1), |_, _, _| panic!("sent once more"));
        assert_eq!(gone.iter().map(|t| t.key).collect::<Vec<_>>(), ["create"]);
        assert!(tr.is_empty());
        assert_eq!((tr.retransmissions, tr.timeouts), (3, 1));
        assert!(tr.answered(7).is_none());
    }
}
