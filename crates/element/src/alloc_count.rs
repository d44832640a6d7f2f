//! Counting heap allocations in a test, to show that a forwarding path allocates nothing per
//! packet (as boringtun writes into caller-provided buffers). A test crate installs
//! [`Counting`] as its global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static COUNTING: d11_element::alloc_count::Counting = d11_element::alloc_count::Counting;
//! ```
//!
//! and asks [`allocations_in`] how many allocations a closure made on its own thread (the
//! tests of a crate run on threads of their own, so one test's count is its own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations and reallocations per thread.
pub struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

/// The allocations `f` made on this thread (0 unless [`Counting`] is the global allocator,
/// so a test also checks that something was counted at all: see [`counting_is_on`]).
pub fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

/// Whether [`Counting`] is installed: a `Vec` is seen to allocate.
pub fn counting_is_on() -> bool {
    allocations_in(|| drop(std::hint::black_box(vec![0u8; 64]))) > 0
}

/// A transmitter that only counts the frames it is given.
#[derive(Debug, Default)]
pub struct CountingSink(pub u64);

impl crate::Transmit for CountingSink {
    fn send(&mut self, _port: crate::PortId, _frame: &[u8]) {
        self.0 += 1;
    }
}

/// Rounds of [`allocations_forwarding`] before it counts.
const WARM_ROUNDS: usize = 4;

/// Feeds `frames` (port, frame) to `e` `rounds` times, each through one reused buffer, and
/// returns the allocations that made and the frames it sent. Warm the element first (next
/// hops resolved, tables filled); a few uncounted rounds here let its buffer pools fill:
/// this measures the steady state.
pub fn allocations_forwarding(
    e: &mut dyn crate::Element,
    now: std::time::Instant,
    frames: &[(crate::PortId, Vec<u8>)],
    rounds: usize,
) -> (u64, u64) {
    assert!(
        counting_is_on(),
        "install alloc_count::Counting as the global allocator"
    );
    let len = frames.iter().map(|(_, f)| f.len()).max().unwrap_or(0);
    let mut buf = vec![0u8; len];
    let mut sink = CountingSink::default();
    let mut round = |sink: &mut CountingSink| {
        for (port, f) in frames {
            buf[..f.len()].copy_from_slice(f);
            e.handle_frame(now, *port, &mut buf[..f.len()], sink);
        }
    };
    // A few rounds first, uncounted: the element's pools reach their steady size.
    for _ in 0..WARM_ROUNDS {
        round(&mut CountingSink::default());
    }
    let n = allocations_in(|| {
        for _ in 0..rounds {
            round(&mut sink);
        }
    });
    (n, sink.0)
}
