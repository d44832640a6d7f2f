//! Named counters as plain struct fields: incrementing one is an add, not a map lookup.

/// Declares a struct of `u64` counters with a `for_each` that yields (name, value).
///
/// ```
/// d11_element::counters! { pub struct C { rx_frames, tx_frames } }
/// let mut c = C::default();
/// c.rx_frames += 1;
/// let mut seen = vec![];
/// c.for_each(&mut |n, v| seen.push((n.to_string(), v)));
/// assert_eq!(seen[0], ("rx_frames".to_string(), 1));
/// ```
#[macro_export]
macro_rules! counters {
    ($vis:vis struct $name:ident { $($field:ident),* $(,)? }) => {
        #[derive(Debug, Default, Clone)]
        $vis struct $name { $(pub $field: u64),* }
        impl $name {
            pub fn for_each(&self, f: &mut dyn FnMut(&str, u64)) {
                $(f(stringify!($field), self.$field);)*
            }
        }
    };
}

/// Counts frames dropped by [`d11_wire::guard::check_frame`], one counter per reason.
#[derive(Debug, Default, Clone)]
pub struct GuardDrops([u64; d11_wire::guard::DropReason::ALL.len()]);

impl GuardDrops {
    pub fn count(&mut self, r: d11_wire::guard::DropReason) {
        self.0[r.index()] += 1;
    }

    pub fn get(&self, r: d11_wire::guard::DropReason) -> u64 {
        self.0[r.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Yields `drop_<reason>` for every reason.
    pub fn for_each(&self, f: &mut dyn FnMut(&str, u64)) {
        for r in d11_wire::guard::DropReason::ALL {
            let name = format!("drop_{}", r.name());
            f(&name, self.0[r.index()]);
        }
    }
}
