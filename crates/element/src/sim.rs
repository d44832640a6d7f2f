//! A network in memory under a virtual clock: sans-IO elements (routers, tunnel endpoints,
//! switches, the userspace stack) joined by segments, driven deterministically without TAP
//! devices, root or real time, as quinn's tests drive a connection pair.
//!
//! A segment is a broadcast domain, as a lab's bridge is: a frame sent on one of its ports
//! reaches every other port of it (each element keeps what is addressed to it). Time moves
//! only when nothing is left to deliver: to the earliest `poll_at` of any element, and never
//! past the deadline the test gives. [`Sim::run_until`] is bounded: a livelock (frames that
//! never stop) fails the test instead of hanging it.
//!
//! ```ignore
//! let mut sim = Sim::new();
//! let r = sim.add(router);
//! let h = sim.add(host);
//! sim.segment(&[(r, 0), (h, 0)]);
//! sim.run_for(Duration::from_secs(10));
//! assert_eq!(sim.show(r, "arp")[0]["state"], "reachable");
//! ```

use crate::{Element, PortId, Transmit};
use serde_json::Value;
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

/// A node of the simulated network.
pub type NodeId = usize;

/// An element the simulation can hand back as its own type.
pub trait SimElement: Element + Any {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Element + Any> SimElement for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A frame as it crossed a segment.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub segment: usize,
    pub from: (NodeId, PortId),
    pub frame: Vec<u8>,
}

/// What an element sent during one call, before the simulation delivers it.
#[derive(Default)]
struct Outbox {
    frames: Vec<(PortId, Vec<u8>)>,
}

impl Transmit for Outbox {
    fn send(&mut self, port: PortId, frame: &[u8]) {
        self.frames.push((port, frame.to_vec()));
    }
}

/// The network, its clock and its wire.
pub struct Sim {
    now: Instant,
    nodes: Vec<Box<dyn SimElement>>,
    /// Which segment each (node, port) is on.
    attached: HashMap<(NodeId, PortId), usize>,
    segments: Vec<Vec<(NodeId, PortId)>>,
    queue: VecDeque<(NodeId, PortId, Vec<u8>)>,
    /// Every frame that crossed a segment, in order (a capture of the whole network).
    pub wire: Vec<Seen>,
    /// Steps at most per `run_until` (frames delivered and polls) before it fails as a
    /// livelock.
    pub max_steps: usize,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    /// A network whose clock starts now (elements built before it see no time go backwards).
    pub fn new() -> Self {
        Self {
            now: Instant::now(),
            nodes: Vec::new(),
            attached: HashMap::new(),
            segments: Vec::new(),
            queue: VecDeque::new(),
            wire: Vec::new(),
            max_steps: 1_000_000,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn add(&mut self, e: impl SimElement) -> NodeId {
        self.nodes.push(Box::new(e));
        self.nodes.len() - 1
    }

    /// Joins these ports in one broadcast domain; returns the segment's number.
    pub fn segment(&mut self, ports: &[(NodeId, PortId)]) -> usize {
        let id = self.segments.len();
        for p in ports {
            assert!(
                self.attached.insert(*p, id).is_none(),
                "port {p:?} is on two segments"
            );
        }
        self.segments.push(ports.to_vec());
        id
    }

    /// Puts a port on segment `seg` (a cable plugged back in).
    pub fn plug(&mut self, id: NodeId, port: PortId, seg: usize) {
        assert!(
            self.attached.insert((id, port), seg).is_none(),
            "port {:?} is on a segment already",
            (id, port)
        );
        self.segments[seg].push((id, port));
    }

    /// Takes a port off its segment (a cable pulled): what it sends goes nowhere, nothing
    /// reaches it.
    pub fn unplug(&mut self, id: NodeId, port: PortId) {
        if let Some(seg) = self.attached.remove(&(id, port)) {
            self.segments[seg].retain(|p| *p != (id, port));
        }
    }

    /// The element of `id` as its own type.
    pub fn get<T: Any>(&self, id: NodeId) -> &T {
        self.nodes[id]
            .as_any()
            .downcast_ref()
            .expect("node of another type")
    }

    pub fn get_mut<T: Any>(&mut self, id: NodeId) -> &mut T {
        self.nodes[id]
            .as_any_mut()
            .downcast_mut()
            .expect("node of another type")
    }

    /// A table of a node, as `d11 show` would print it.
    pub fn show(&self, id: NodeId, table: &str) -> Value {
        self.nodes[id]
            .show(table, self.now)
            .unwrap_or_else(|| panic!("node {id} has no table {table}"))
    }

    /// A counter of a node.
    pub fn counter(&self, id: NodeId, name: &str) -> u64 {
        let mut v = None;
        self.nodes[id].counters(&mut |n, c| {
            if n == name {
                v = Some(c);
            }
        });
        v.unwrap_or_else(|| panic!("node {id} has no counter {name}"))
    }

    /// A frame arrives at `port` of `id`, as if from its segment.
    pub fn deliver(&mut self, id: NodeId, port: PortId, frame: Vec<u8>) {
        self.queue.push_back((id, port, frame));
    }

    /// Puts what a node sent on its segments.
    fn wire_out(&mut self, from: NodeId, out: Outbox) {
        for (port, f) in out.frames {
            let Some(&seg) = self.attached.get(&(from, port)) else {
                continue; // a port on no segment: unplugged
            };
            self.wire.push(Seen {
                at: self.now,
                segment: seg,
                from: (from, port),
                frame: f.clone(),
            });
            for &(n, p) in &self.segments[seg] {
                if (n, p) != (from, port) {
                    self.queue.push_back((n, p, f.clone()));
                }
            }
        }
    }

    /// Runs until nothing is due before `deadline`, then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) {
        let mut steps = 0usize;
        loop {
            // Deliver everything in flight, then poll whoever is due, at this instant.
            self.hand_over(&mut steps);
            let polled = self.poll_due(&mut steps);
            if polled || !self.queue.is_empty() {
                continue;
            }
            // Idle at this instant: on to the next timer, not past the deadline.
            let next = self
                .nodes
                .iter()
                .filter_map(|e| e.poll_at())
                .filter(|t| *t > self.now)
                .min();
            match next {
                Some(t) if t <= deadline => self.now = t,
                _ => {
                    self.now = self.now.max(deadline);
                    return;
                }
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Whether anything is to be done at this instant.
    fn busy(&self) -> bool {
        !self.queue.is_empty()
            || self
                .nodes
                .iter()
                .any(|e| e.poll_at().is_some_and(|t| t <= self.now))
    }

    /// Hands every frame in flight to its node, and what that sends at once, at this instant.
    fn hand_over(&mut self, steps: &mut usize) {
        while let Some((n, p, mut f)) = self.queue.pop_front() {
            *steps += 1;
            assert!(*steps < self.max_steps, "livelock: {steps} steps");
            let mut out = Outbox::default();
            self.nodes[n].handle_frame(self.now, p, &mut f, &mut out);
            self.wire_out(n, out);
        }
    }

    /// Polls each node that is due at this instant; whether any was.
    fn poll_due(&mut self, steps: &mut usize) -> bool {
        let mut polled = false;
        for n in 0..self.nodes.len() {
            if self.nodes[n].poll_at().is_some_and(|t| t <= self.now) {
                *steps += 1;
                assert!(*steps < self.max_steps, "livelock: {steps} steps");
                let mut out = Outbox::default();
                self.nodes[n].poll(self.now, &mut out);
                self.wire_out(n, out);
                polled = true;
            }
        }
        polled
    }

    /// [`run_until`](Self::run_until) for networks whose programs are tokio tasks beside
    /// their elements (servers and clients on the userspace stack): the clock is tokio's,
    /// which a test pauses (a runtime built with `start_paused(true)`), so it moves only
    /// when every task waits, to the next timer of a task or an element. As the runtime
    /// does, the frames in flight are handed over first, then the tasks they woke run, then
    /// whoever is due is polled; an element a task woke is polled at once.
    pub async fn run_async_until(&mut self, deadline: Instant) {
        let wakeups: Vec<std::rc::Rc<tokio::sync::Notify>> =
            self.nodes.iter().filter_map(|n| n.wakeup()).collect();
        let mut steps = 0usize;
        loop {
            self.now = tokio::time::Instant::now().into_std();
            self.hand_over(&mut steps);
            // The tasks run what the frames woke (and may wake elements again).
            tokio::task::yield_now().await;
            self.now = tokio::time::Instant::now().into_std();
            self.poll_due(&mut steps);
            if self.busy() {
                continue;
            }
            if self.now >= deadline {
                return;
            }
            let next = self
                .nodes
                .iter()
                .filter_map(|e| e.poll_at())
                .filter(|t| *t > self.now)
                .min()
                .map_or(deadline, |t| t.min(deadline));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            let mut sleep = std::pin::pin!(sleep);
            let mut woken: Vec<_> = wakeups.iter().map(|n| Box::pin(n.notified())).collect();
            std::future::poll_fn(|cx| {
                if sleep.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
                for w in woken.iter_mut() {
                    if w.as_mut().poll(cx).is_ready() {
                        return std::task::Poll::Ready(());
                    }
                }
                std::task::Poll::Pending
            })
            .await;
        }
    }

    /// [`run_async_until`](Self::run_async_until) for `d` of tokio's (paused) time.
    pub async fn run_async_for(&mut self, d: Duration) {
        let until = tokio::time::Instant::now().into_std() + d;
        self.run_async_until(until).await;
    }
}

/// Runs `f` on a current-thread runtime whose clock is paused, for
/// [`Sim::run_async_until`]: tokio's timers and the network's move together, only when
/// everything waits.
#[cfg(feature = "test-util")]
pub fn paused(f: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    tokio::task::LocalSet::new().block_on(&rt, f);
}
