//! Seeded link impairment: loss, duplication, reorder, delay with jitter, and a rate limit,
//! separately for each direction.
//!
//! The kernel here has no `netem`, so impairment is ours, in userspace. It is deterministic:
//! the same seed and the same sequence of frames give the same drops. Delayed frames wait in a
//! timer queue ([`FrameDevice::poll_at`]); nothing sleeps.

use crate::FrameDevice;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// What happens to frames in one direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// Probability in [0, 1] that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is sent twice.
    pub duplicate: f64,
    /// Probability that a frame is held back by `reorder_gap`, so later frames overtake it.
    pub reorder: f64,
    pub reorder_gap: Duration,
    /// Fixed delay, plus a uniform random jitter in [0, jitter).
    pub delay: Duration,
    pub jitter: Duration,
    /// Bits per second; frames beyond it queue, and are dropped past `queue_limit` of waiting.
    pub rate_bps: Option<u64>,
    pub queue_limit: Duration,
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        self.loss == 0.0
            && self.duplicate == 0.0
            && self.reorder == 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.rate_bps.is_none()
    }

    /// Parses `loss=0.02,dup=0.01,reorder=0.05,gap=2ms,delay=10ms,jitter=1ms,rate=100mbit,queue=50ms`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut i = Impairment {
            reorder_gap: Duration::from_millis(2),
            queue_limit: Duration::from_millis(50),
            ..Default::default()
        };
        for kv in spec.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("impairment {kv:?}: expected key=value"))?;
            let prob = |v: &str| -> Result<f64, String> {
                let p: f64 = v.parse().map_err(|_| format!("{k}={v}: not a number"))?;
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(format!("{k}={v}: a probability is between 0 and 1"))
                }
            };
            match k {
                "loss" => i.loss = prob(v)?,
                "dup" | "duplicate" => i.duplicate = prob(v)?,
                "reorder" => i.reorder = prob(v)?,
                "gap" => i.reorder_gap = parse_duration(v)?,
                "delay" => i.delay = parse_duration(v)?,
                "jitter" => i.jitter = parse_duration(v)?,
                "queue" => i.queue_limit = parse_duration(v)?,
                "rate" => i.rate_bps = Some(parse_rate(v)?),
                _ => return Err(format!("unknown impairment {k:?} (loss, dup, reorder, gap, delay, jitter, rate, queue)")),
            }
        }
        Ok(i)
    }
}

/// `10ms`, `1.5s`, `250us`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .ok_or_else(|| format!("{v:?}: duration needs a unit (us, ms, s)"))?;
    let n: f64 = num.parse().map_err(|_| format!("{v:?}: not a duration"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return Err(format!("{v:?}: unit must be us, ms or s")),
    };
    if !(0.0..1e6).contains(&secs) {
        return Err(format!("{v:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `100mbit`, `1gbit`, `500kbit`, `64000` (bits per second).
pub fn parse_rate(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else {
        (lower.as_str(), 1.0)
    };
    let n: f64 = num.parse().map_err(|_| format!("{v:?}: not a rate"))?;
    let r = (n * mult) as u64;
    if r == 0 {
        return Err(format!("{v:?}: rate must be positive"));
    }
    Ok(r)
}

/// SplitMix64: small, fast, and stable across releases (unlike `rand`'s `StdRng`), so a seed
/// means the same drops forever.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    lost: u64,
    duplicated: u64,
    reordered: u64,
    delayed: u64,
    rate_dropped: u64,
}

/// One direction's state: its settings, random stream, queue and the link's busy-until time.
struct Lane {
    cfg: Impairment,
    rng: SplitMix64,
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    seq: u64,
    busy_until: Option<Instant>,
    stats: Stats,
}

enum Fate {
    Drop,
    Now { duplicate: bool },
    Later { at: Instant, duplicate: bool },
}

impl Lane {
    fn new(cfg: Impairment, seed: u64) -> Self {
        Self {
            cfg,
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            busy_until: None,
            stats: Stats::default(),
        }
    }

    fn decide(&mut self, now: Instant, len: usize) -> Fate {
        if self.rng.chance(self.cfg.loss) {
            self.stats.lost += 1;
            return Fate::Drop;
        }
        let duplicate = self.rng.chance(self.cfg.duplicate);
        if duplicate {
            self.stats.duplicated += 1;
        }
        let mut at = now + self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            at += self.cfg.jitter.mul_f64(self.rng.next_f64());
        }
        if self.rng.chance(self.cfg.reorder) {
            self.stats.reordered += 1;
            at += self.cfg.reorder_gap;
        }
        if let Some(rate) = self.cfg.rate_bps {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            if start.saturating_duration_since(now) > self.cfg.queue_limit {
                self.stats.rate_dropped += 1;
                return Fate::Drop;
            }
            let tx = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.busy_until = Some(start + tx);
            at = at.max(start + tx);
        }
        if at <= now {
            Fate::Now { duplicate }
        } else {
            self.stats.delayed += 1;
            Fate::Later { at, duplicate }
        }
    }

    fn push(&mut self, at: Instant, frame: &[u8]) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, frame.to_vec())));
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self
            .queue
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            self.queue.pop().map(|Reverse((_, _, f))| f)
        } else {
            None
        }
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }
}

/// Wraps a device with an impairment for frames it sends (`tx`) and receives (`rx`).
pub struct Impaired<D> {
    inner: D,
    tx: Lane,
    rx: Lane,
}

impl<D: FrameDevice> Impaired<D> {
    pub fn new(inner: D, tx: Impairment, rx: Impairment, seed: u64) -> Self {
        Self {
            inner,
            tx: Lane::new(tx, seed),
            rx: Lane::new(rx, seed ^ 0x5555_5555_5555_5555),
        }
    }

    fn send_inner(&mut self, now: Instant, frame: &[u8], note: Option<&str>) -> io::Result<()> {
        match note {
            Some(n) => self.inner.send_noted(now, frame, n),
            None => self.inner.send(now, frame),
        }
    }

    fn send_impaired(&mut self, now: Instant, frame: &[u8], note: Option<&str>) -> io::Result<()> {
        match self.tx.decide(now, frame.len()) {
            Fate::Drop => Ok(()),
            Fate::Now { duplicate } => {
                self.send_inner(now, frame, note)?;
                if duplicate {
                    self.send_inner(now, frame, note)?;
                }
                Ok(())
            }
            Fate::Later { at, duplicate } => {
                self.tx.push(at, frame);
                if duplicate {
                    self.tx.push(at, frame);
                }
                Ok(())
            }
        }
    }
}

impl<D: FrameDevice> FrameDevice for Impaired<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            if let Some(f) = self.rx.pop_due(now) {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                return Ok(Some(n));
            }
            let Some(n) = self.inner.recv(now, buf)? else {
                return Ok(None);
            };
            match self.rx.decide(now, n) {
                Fate::Drop => continue,
                Fate::Now { duplicate } => {
                    if duplicate {
                        self.rx.push(now, &buf[..n]);
                    }
                    return Ok(Some(n));
                }
                Fate::Later { at, duplicate } => {
                    self.rx.push(at, &buf[..n]);
                    if duplicate {
                        self.rx.push(at, &buf[..n]);
                    }
                }
            }
        }
    }

    fn send(&mut self, now: Instant, frame: &[u8]) -> io::Result<()> {
        self.send_impaired(now, frame, None)
    }

    fn wants_notes(&self) -> bool {
        self.inner.wants_notes()
    }

    fn send_noted(&mut self, now: Instant, frame: &[u8], note: &str) -> io::Result<()> {
        self.send_impaired(now, frame, Some(note))
    }

    fn poll_at(&self) -> Option<Instant> {
        [self.tx.next_at(), self.rx.next_at(), self.inner.poll_at()]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll(&mut self, now: Instant) {
        while let Some(f) = self.tx.pop_due(now) {
            if self.inner.send(now, &f).is_err() {
                self.tx.stats.lost += 1;
            }
        }
        self.inner.poll(now);
    }

    fn raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }

    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        self.inner.counters(out);
        for (prefix, s) in [("tx", &self.tx.stats), ("rx", &self.rx.stats)] {
            let names: [(
                &'static str,
                &'static str,
                &'static str,
                &'static str,
                &'static str,
            ); 2] = [
                (
                    "impair_tx_lost",
                    "impair_tx_duplicated",
                    "impair_tx_reordered",
                    "impair_tx_delayed",
                    "impair_tx_rate_dropped",
                ),
                (
                    "impair_rx_lost",
                    "impair_rx_duplicated",
                    "impair_rx_reordered",
                    "impair_rx_delayed",
                    "impair_rx_rate_dropped",
                ),
            ];
            let n = if prefix == "tx" { names[0] } else { names[1] };
            out(n.0, s.lost);
            out(n.1, s.duplicated);
            out(n.2, s.reordered);
            out(n.3, s.delayed);
            out(n.4, s.rate_dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemPair;

    fn run(seed: u64, cfg: Impairment) -> Vec<u8> {
        let (a, mut b) = MemPair::new("a", "b").unwrap();
        let mut d = Impaired::new(a, cfg, Impairment::default(), seed);
        let t0 = Instant::now();
        for i in 0..200u8 {
            d.send(t0, &[i]).unwrap();
        }
        let mut now = t0;
        while let Some(at) = d.poll_at() {
            now = at;
            d.poll(now);
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while let Some(n) = b.recv(now, &mut buf).unwrap() {
            assert_eq!(n, 1);
            got.push(buf[0]);
        }
        got
    }

    #[test]
    fn same_seed_same_fate() {
        let cfg = Impairment::parse("loss=0.1,dup=0.05,reorder=0.1,delay=1ms").unwrap();
        let a = run(7, cfg.clone());
        assert_eq!(a, run(7, cfg.clone()));
        assert_ne!(a, run(8, cfg));
        let lost = 200 - a.iter().collect::<std::collections::HashSet<_>>().len();
        assert!((5..=40).contains(&lost), "lost {lost}");
        assert!(a.windows(2).any(|w| w[0] > w[1]), "some frames reordered");
    }

    #[test]
    fn no_impairment_passes_everything_in_order() {
        assert_eq!(run(1, Impairment::default()), (0..200).collect::<Vec<u8>>());
    }

    #[test]
    fn rate_limit_spaces_frames() {
        let (a, _b) = MemPair::new("a", "b").unwrap();
        let cfg = Impairment::parse("rate=8000,queue=10s").unwrap(); // 1 byte per ms
        let mut d = Impaired::new(a, cfg, Impairment::default(), 1);
        let t0 = Instant::now();
        d.send(t0, &[0u8; 100]).unwrap();
        d.send(t0, &[0u8; 100]).unwrap();
        assert_eq!(d.poll_at(), Some(t0 + Duration::from_millis(100)));
        d.poll(t0 + Duration::from_millis(100));
        assert_eq!(d.poll_at(), Some(t0 + Duration::from_millis(200)));
    }

    #[test]
    fn parse_errors_are_clear() {
        assert!(Impairment::parse("loss=2")
            .unwrap_err()
            .contains("between 0 and 1"));
        assert!(Impairment::parse("lose=0.1")
            .unwrap_err()
            .contains("unknown"));
        assert!(Impairment::parse("delay=10").unwrap_err().contains("unit"));
    }
}
