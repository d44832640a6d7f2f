//! The PGW's UE address pool (10.45.0.0/16 in the reference lab): the first address is the
//! UEs' gateway, network and broadcast addresses are never given, static addresses (from the
//! subscriber database) are reserved.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

#[derive(Debug)]
pub struct Pool {
    first: u32,
    last: u32,
    next: u32,
    used: BTreeSet<u32>,
    by_imsi: HashMap<String, Ipv4Addr>,
}

impl Pool {
    /// A pool over `net/prefix`; `gateway` (and network and broadcast) are never handed out.
    pub fn new(net: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Option<Self> {
        if !(8..=30).contains(&prefix) {
            return None;
        }
        let mask = u32::MAX << (32 - prefix);
        let base = u32::from(net) & mask;
        let (first, last) = (base + 1, base | !mask);
        let mut used = BTreeSet::new();
        used.insert(u32::from(gateway));
        Some(Self {
            first,
            last: last - 1,
            next: first,
            used,
            by_imsi: HashMap::new(),
        })
    }

    /// The address of `imsi`: its static one if given (and free), its current one if it has
    /// one, else the next free. None when the pool is exhausted.
    pub fn allocate(&mut self, imsi: &str, fixed: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(a) = self.by_imsi.get(imsi) {
            return Some(*a);
        }
        let a = match fixed {
            Some(f) => {
                let v = u32::from(f);
                if v < self.first || v > self.last || self.used.contains(&v) {
                    return None;
                }
                v
            }
            None => {
                let size = self.last - self.first + 1;
                let mut found = None;
                for i in 0..size {
                    let v = self.first + (self.next - self.first + i) % size;
                    if !self.used.contains(&v) {
                        found = Some(v);
                        break;
                    }
                }
                let v = found?;
                self.next = if v == self.last { self.first } else { v + 1 };
                v
            }
        };
        self.used.insert(a);
        let addr = Ipv4Addr::from(a);
        self.by_imsi.insert(imsi.to_string(), addr);
        Some(addr)
    }

    pub fn release(&mut self, imsi: &str) -> Option<Ipv4Addr> {
        let a = self.by_imsi.remove(imsi)?;
        self.used.remove(&u32::from(a));
        Some(a)
    }

    pub fn in_use(&self) -> usize {
        self.by_imsi.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_around_the_gateway_and_reserves_static_addresses() {
        let mut p =
            Pool::new(Ipv4Addr::new(10, 45, 0, 0), 16, Ipv4Addr::new(10, 45, 0, 1)).unwrap();
        assert_eq!(p.allocate("a", None), Some(Ipv4Addr::new(10, 45, 0, 2)));
        assert_eq!(
            p.allocate("a", None),
            Some(Ipv4Addr::new(10, 45, 0, 2)),
            "same UE, same address"
        );
        assert_eq!(
            p.allocate("s", Some(Ipv4Addr::new(10, 45, 0, 3))),
            Some(Ipv4Addr::new(10, 45, 0, 3))
        );
        assert_eq!(p.allocate("b", None), Some(Ipv4Addr::new(10, 45, 0, 4)));
        assert_eq!(
            p.allocate("x", Some(Ipv4Addr::new(10, 45, 0, 3))),
            None,
            "taken"
        );
        assert_eq!(
            p.allocate("y", Some(Ipv4Addr::new(10, 46, 0, 3))),
            None,
            "outside"
        );
        assert_eq!(p.release("a"), Some(Ipv4Addr::new(10, 45, 0, 2)));
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut p =
            Pool::new(Ipv4Addr::new(10, 45, 0, 0), 30, Ipv4Addr::new(10, 45, 0, 1)).unwrap();
        assert_eq!(p.allocate("a", None), Some(Ipv4Addr::new(10, 45, 0, 2)));
        assert_eq!(
            p.allocate("b", None),
            None,
            "a /30 holds one UE beside its gateway"
        );
        p.release("a");
        assert_eq!(p.allocate("b", None), Some(Ipv4Addr::new(10, 45, 0, 2)));
    }
}
