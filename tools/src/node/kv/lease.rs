//! The store's leases: lifetimes by the leader's clock, each with the keys
//! attached to it.

use imbl::{OrdMap, OrdSet};

/// One lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Lease {
    pub ttl_ms: u64,
    /// When it ends, in leader ms.
    pub deadline: u64,
    pub keys: OrdSet<Vec<u8>>,
}

/// Every live lease, and their deadlines in order so that expiring is a
/// walk over the expired, not over every lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Leases {
    by_id: OrdMap<u64, Lease>,
    deadlines: OrdSet<(u64, u64)>,
}

impl Leases {
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Lease)> {
        self.by_id.iter()
    }

    /// Starts lease `id` (its lifetime from `now`), with no keys.
    pub fn grant(&mut self, id: u64, ttl_ms: u64, now: u64) {
        self.insert(id, ttl_ms, now.saturating_add(ttl_ms), OrdSet::new());
    }

    /// Adds a lease as a snapshot held it.
    pub fn insert(&mut self, id: u64, ttl_ms: u64, deadline: u64, keys: OrdSet<Vec<u8>>) {
        if let Some(old) = self.by_id.insert(
            id,
            Lease {
                ttl_ms,
                deadline,
                keys,
            },
        ) {
            self.deadlines.remove(&(old.deadline, id));
        }
        self.deadlines.insert((deadline, id));
    }

    /// Restarts lease `id`'s lifetime from `now`, never shortening it;
    /// returns its ttl, or `None` if there is no such lease.
    pub fn renew(&mut self, id: u64, now: u64) -> Option<u64> {
        let lease = self.by_id.get_mut(&id)?;
        let deadline = lease.deadline.max(now.saturating_add(lease.ttl_ms));
        self.deadlines.remove(&(lease.deadline, id));
        self.deadlines.insert((deadline, id));
        lease.deadline = deadline;
        Some(lease.ttl_ms)
    }

    /// Restarts every lease's lifetime from `now`.
    pub fn renew_all(&mut self, now: u64) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.renew(id, now);
        }
    }

    /// Removes lease `id`; returns its keys.
    pub fn remove(&mut self, id: u64) -> Option<OrdSet<Vec<u8>>> {
        let lease = self.by_id.remove(&id)?;
        self.deadlines.remove(&(lease.deadline, id));
        Some(lease.keys)
    }

    /// The id of a lease whose deadline is at or before `now`.
    pub fn first_due(&self, now: u64) -> Option<u64> {
        let (deadline, id) = self.deadlines.get_min()?;
        (*deadline <= now).then_some(*id)
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.get_min().map(|(deadline, _)| *deadline)
    }

    pub fn attach(&mut self, id: u64, key: Vec<u8>) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.insert(key);
        }
    }

    pub fn detach(&mut self, id: u64, key: &[u8]) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.remove(key);
        }
    }
}
