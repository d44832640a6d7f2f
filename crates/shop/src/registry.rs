//! The registry centre's state (Nacos and ZooKeeper play it in real deployments), free of I/O:
//! providers register instances and send heartbeats; an instance silent for `unhealthy_after`
//! (15 s) is marked unhealthy and left out of lookups, and after `remove_after` (30 s) removed;
//! every change to a service bumps its revision, so a subscriber that waits for a revision
//! newer than the one it has is told at once of every change (a push, by long poll).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A provider instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instance {
    pub id: u64,
    pub service: String,
    pub version: String,
    pub address: String,
    pub weight: u32,
    pub healthy: bool,
    #[serde(skip)]
    pub last_beat: Instant,
}

#[derive(Debug)]
pub struct Registry {
    instances: BTreeMap<u64, Instance>,
    revisions: BTreeMap<String, u64>,
    next_id: u64,
    pub unhealthy_after: Duration,
    pub remove_after: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            instances: BTreeMap::new(),
            revisions: BTreeMap::new(),
            next_id: 1,
            unhealthy_after: Duration::from_secs(15),
            remove_after: Duration::from_secs(30),
        }
    }
}

impl Registry {
    fn bump(&mut self, service: &str) {
        *self.revisions.entry(service.to_string()).or_default() += 1;
    }

    /// Registers an instance; the same service, version and address again is the same
    /// instance (a provider that restarted), refreshed.
    pub fn register(
        &mut self,
        now: Instant,
        service: &str,
        version: &str,
        address: &str,
        weight: u32,
    ) -> u64 {
        if let Some(i) = self
            .instances
            .values_mut()
            .find(|i| i.service == service && i.version == version && i.address == address)
        {
            i.last_beat = now;
            let changed = !i.healthy || i.weight != weight;
            i.healthy = true;
            i.weight = weight;
            let id = i.id;
            if changed {
                self.bump(service);
            }
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.instances.insert(
            id,
            Instance {
                id,
                service: service.into(),
                version: version.into(),
                address: address.into(),
                weight,
                healthy: true,
                last_beat: now,
            },
        );
        self.bump(service);
        id
    }

    /// A heartbeat; false if the instance is unknown (removed: it must register again).
    pub fn heartbeat(&mut self, now: Instant, id: u64) -> bool {
        let Some(i) = self.instances.get_mut(&id) else {
            return false;
        };
        i.last_beat = now;
        if !i.healthy {
            i.healthy = true;
            let s = i.service.clone();
            self.bump(&s);
        }
        true
    }

    pub fn deregister(&mut self, id: u64) -> bool {
        match self.instances.remove(&id) {
            Some(i) => {
                self.bump(&i.service);
                true
            }
            None => false,
        }
    }

    /// Marks silent instances unhealthy and removes the long silent; returns the services
    /// that changed.
    pub fn sweep(&mut self, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        let (u, r) = (self.unhealthy_after, self.remove_after);
        let gone: Vec<u64> = self
            .instances
            .values()
            .filter(|i| now.saturating_duration_since(i.last_beat) >= r)
            .map(|i| i.id)
            .collect();
        for id in gone {
            if let Some(i) = self.instances.remove(&id) {
                changed.push(i.service);
            }
        }
        for i in self.instances.values_mut() {
            if i.healthy && now.saturating_duration_since(i.last_beat) >= u {
                i.healthy = false;
                changed.push(i.service.clone());
            }
        }
        changed.sort();
        changed.dedup();
        for s in &changed {
            self.bump(s);
        }
        changed
    }

    /// The healthy instances of a service and its revision.
    pub fn lookup(&self, service: &str) -> (u64, Vec<Instance>) {
        (
            self.revision(service),
            self.instances
                .values()
                .filter(|i| i.service == service && i.healthy)
                .cloned()
                .collect(),
        )
    }

    pub fn revision(&self, service: &str) -> u64 {
        self.revisions.get(service).copied().unwrap_or(0)
    }

    pub fn all(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_live_by_heartbeats_and_changes_bump_the_revision() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let mut r = Registry::default();
        let a = r.register(t, "order", "1.0.0", "192.168.1.30:20880", 100);
        let b = r.register(t, "order", "1.0.0", "192.168.1.33:20880", 50);
        assert_eq!(r.lookup("order").1.len(), 2);
        let rev = r.revision("order");
        // A restarted provider registers again: the same instance, no change.
        assert_eq!(
            r.register(s(1), "order", "1.0.0", "192.168.1.30:20880", 100),
            a
        );
        assert_eq!(r.revision("order"), rev);
        // b stops beating: unhealthy at 15 s (left out of lookups), removed at 30 s.
        for n in [5, 10, 15] {
            assert!(r.heartbeat(s(n), a));
        }
        assert_eq!(r.sweep(s(15)), vec!["order".to_string()]);
        assert_eq!(
            r.lookup("order").1.iter().map(|i| i.id).collect::<Vec<_>>(),
            [a]
        );
        assert!(r.revision("order") > rev);
        assert!(r.heartbeat(s(20), a));
        r.sweep(s(30));
        assert!(
            !r.heartbeat(s(31), b),
            "b was removed and must register again"
        );
        assert_eq!(r.all().count(), 1);
        // A's beat brings nothing new; a deregistration does.
        let rev = r.revision("order");
        assert!(r.deregister(a));
        assert!(r.revision("order") > rev);
        assert!(r.lookup("order").1.is_empty());
        assert_eq!(r.lookup("nothing"), (0, vec![]));
    }
}
