//! The replicated key-value store: synod's example state machine and the one
//! behind `synod client`'s put, get, cas, delete and leases.
//!
//! Time is deterministic: the leader stamps each command with its clock
//! (`KvCommand::now_ms`) before proposing, and a replica's notion of time is
//! the highest stamp applied so far, so every replica expires the same keys
//! and leases at the same log index whatever its own clock says. On an idle
//! store the leader proposes a `Tick` when something comes due
//! (`next_deadline`), so expiry does not wait for the next write.

mod lease;
mod wire;

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use synod_client_proto::{EventKind, KeyValue, KvOp, KvReply, WatchEvent};
use synod_engine::archive::{from_bytes, to_bytes};
use synod_engine::runtime::{Applying, Capture, StateMachine};

use lease::Leases;
pub use wire::KvCommand;
use wire::{KvState, KvStateBeforeLeases, StoredEntry, StoredLease, STATE_MAGIC};

#[cfg(test)]
mod tests;

/// One key's value, its expiry (leader ms) and the lease it is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    value: Vec<u8>,
    expiry: Option<u64>,
    lease: Option<u64>,
}

/// The store. Its maps are persistent (`imbl`): a snapshot clones them in
/// O(1) on the group's core and encodes the clone on the snapshot thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    /// The highest leader stamp applied.
    now_ms: u64,
    /// One past the log index of the last command applied (0: none).
    next_index: u64,
    entries: OrdMap<Vec<u8>, Entry>,
    /// (expiry, key) of every entry with one, so expiring is a walk over
    /// the expired, not over the store.
    expiries: OrdSet<(u64, Vec<u8>)>,
    leases: Leases,
}

impl KvCommand {
    /// The command's bytes for the log.
    pub fn encode(&self) -> Bytes {
        Bytes::from(to_bytes(self).into_vec())
    }

    /// Parses log bytes (checked: any bytes may arrive from a client).
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, String> {
        from_bytes(bytes)
    }
}

/// Where a command's changes are told, as watch events.
struct Changes<'a> {
    index: u64,
    events: &'a mut Vec<WatchEvent>,
}

impl Changes<'_> {
    fn push(&mut self, kind: EventKind, key: Vec<u8>, value: Option<Vec<u8>>) {
        let index = self.index;
        self.events.push(WatchEvent {
            index,
            kind,
            key,
            value,
        });
    }
}

impl Kv {
    /// The live value of `key` at the store's current time.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let entry = self.entries.get(key)?;
        match entry.expiry {
            Some(at) if at <= self.now_ms => None,
            _ => Some(&entry.value),
        }
    }

    /// The live keys starting with `prefix` and after `after`, in order,
    /// at most `limit` of them and about `bytes_max` bytes (one at least);
    /// and whether there were more.
    pub fn get_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        bytes_max: usize,
    ) -> (Vec<KeyValue>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let live = self
            .entries
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, entry)| entry.expiry.is_none_or(|at| at > self.now_ms));
        let mut pairs = Vec::new();
        let mut bytes = 0;
        for (key, entry) in live {
            if pairs.len() == limit || (bytes >= bytes_max && !pairs.is_empty()) {
                return (pairs, true);
            }
            bytes += key.len() + entry.value.len();
            pairs.push(KeyValue {
                key: key.clone(),
                value: entry.value.clone(),
            });
        }
        (pairs, false)
    }

    /// One past the log index of the last command applied: every change
    /// the store made is at an index below it.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The earliest time (leader ms) at which a key or a lease comes due.
    pub fn next_deadline(&self) -> Option<u64> {
        let key = self.expiries.get_min().map(|(at, _)| *at);
        let lease = self.leases.next_deadline();
        key.into_iter().chain(lease).min()
    }

    /// Moves the store's time to `now_ms` (never back) and removes what
    /// came due: keys past their expiry and leases past their deadline,
    /// with their keys.
    fn advance_clock(&mut self, now_ms: u64, changes: &mut Changes<'_>) {
        self.now_ms = self.now_ms.max(now_ms);
        while let Some((at, key)) = self.expiries.get_min().cloned() {
            if at > self.now_ms {
                break;
            }
            // Live until the clock passed it: every earlier move of the
            // clock removed what was due then.
            self.expiries.remove(&(at, key.clone()));
            if self.remove_entry(&key).is_some() {
                changes.push(EventKind::Expire, key, None);
            }
        }
        while let Some(id) = self.leases.first_due(self.now_ms) {
            self.end_lease(id, EventKind::Expire, changes);
        }
    }

    /// Ends lease `id` and deletes its keys; false if there is no such lease.
    fn end_lease(&mut self, id: u64, kind: EventKind, changes: &mut Changes<'_>) -> bool {
        let Some(keys) = self.leases.remove(id) else {
            return false;
        };
        for key in keys {
            if self.remove_entry(&key).is_some() {
                changes.push(kind, key, None);
            }
        }
        true
    }

    /// Sets `key`, keeping the expiry index and the leases in step;
    /// returns the old live value.
    fn insert(&mut self, key: Vec<u8>, entry: Entry) -> Option<Vec<u8>> {
        let old = self.remove(&key);
        if let Some(at) = entry.expiry {
            self.expiries.insert((at, key.clone()));
        }
        if let Some(id) = entry.lease {
            self.leases.attach(id, key.clone());
        }
        self.entries.insert(key, entry);
        old
    }

    /// Removes `key`; returns its value if it was live.
    fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let entry = self.remove_entry(key)?;
        entry
            .expiry
            .is_none_or(|at| at > self.now_ms)
            .then_some(entry.value)
    }

    /// Removes `key`'s entry, live or not, from the indexes too.
    fn remove_entry(&mut self, key: &[u8]) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        if let Some(at) = entry.expiry {
            self.expiries.remove(&(at, key.to_vec()));
        }
        if let Some(id) = entry.lease {
            self.leases.detach(id, key);
        }
        Some(entry)
    }

    /// Applies one command at log index `index`, telling its changes to
    /// `events`.
    pub fn apply_command(
        &mut self,
        index: u64,
        data: &[u8],
        events: &mut Vec<WatchEvent>,
    ) -> KvReply {
        let command = match KvCommand::decode(data) {
            Ok(command) => command,
            Err(reason) => return KvReply::Invalid(reason),
        };
        self.next_index = self.next_index.max(index + 1);
        let mut changes = Changes { index, events };
        if let KvOp::Tick { renew: true } = command.op {
            // Before the clock moves: a new leader's clock may be ahead,
            // and no lease may end early for it.
            self.leases.renew_all(self.now_ms.max(command.now_ms));
        }
        self.advance_clock(command.now_ms, &mut changes);
        self.apply_op(index, command.op, &mut changes)
    }

    fn apply_op(&mut self, index: u64, op: KvOp, changes: &mut Changes<'_>) -> KvReply {
        let now = self.now_ms;
        match op {
            KvOp::Put { key, value, ttl_ms } => {
                let expiry = ttl_ms.map(|ttl| now.saturating_add(ttl));
                self.put(key, value, expiry, None, changes)
            }
            KvOp::PutLease { key, value, lease } => {
                if !self.leases.contains(lease) {
                    return KvReply::NoLease { id: lease };
                }
                self.put(key, value, None, Some(lease), changes)
            }
            KvOp::Cas { key, old, new } => {
                let current = self.get(&key).map(<[u8]>::to_vec);
                if current != old {
                    return KvReply::Cas {
                        swapped: false,
                        current,
                    };
                }
                self.put(key, new.clone(), None, None, changes);
                KvReply::Cas {
                    swapped: true,
                    current: Some(new),
                }
            }
            KvOp::Delete { key } => {
                let old = self.remove(&key);
                if old.is_some() {
                    changes.push(EventKind::Delete, key, None);
                }
                KvReply::Done(old)
            }
            KvOp::LeaseGrant { ttl_ms } => {
                // The command's index is unique and the same on every replica.
                self.leases.grant(index, ttl_ms, now);
                KvReply::Lease { id: index, ttl_ms }
            }
            KvOp::LeaseKeepAlive { id } => match self.leases.renew(id, now) {
                Some(ttl_ms) => KvReply::Lease { id, ttl_ms },
                None => KvReply::NoLease { id },
            },
            KvOp::LeaseRevoke { id } => {
                if self.end_lease(id, EventKind::Delete, changes) {
                    KvReply::Revoked
                } else {
                    KvReply::NoLease { id }
                }
            }
            // A renewing tick renewed before the clock moved.
            KvOp::Tick { .. } => KvReply::Done(None),
        }
    }

    fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        expiry: Option<u64>,
        lease: Option<u64>,
        changes: &mut Changes<'_>,
    ) -> KvReply {
        changes.push(EventKind::Put, key.clone(), Some(value.clone()));
        let entry = Entry {
            value,
            expiry,
            lease,
        };
        KvReply::Done(self.insert(key, entry))
    }

    /// The snapshot's bytes (what `restore` takes).
    pub fn encode(&self) -> Bytes {
        let state = KvState {
            now_ms: self.now_ms,
            next_index: self.next_index,
            entries: self
                .entries
                .iter()
                .map(|(key, entry)| StoredEntry {
                    key: key.clone(),
                    value: entry.value.clone(),
                    expiry: entry.expiry,
                    lease: entry.lease,
                })
                .collect(),
            leases: self
                .leases
                .iter()
                .map(|(id, lease)| StoredLease {
                    id: *id,
                    ttl_ms: lease.ttl_ms,
                    deadline: lease.deadline,
                })
                .collect(),
        };
        let mut bytes = STATE_MAGIC.to_vec();
        bytes.extend_from_slice(&to_bytes(&state));
        Bytes::from(bytes)
    }

    /// The store a snapshot holds, of this format or the one before leases.
    fn decode(snapshot: &[u8]) -> Result<Kv, String> {
        let state = match snapshot.strip_prefix(STATE_MAGIC) {
            Some(body) => from_bytes::<KvState>(body)?,
            None => {
                let old: KvStateBeforeLeases = from_bytes(snapshot)?;
                let entries = old.entries.into_iter().map(|(key, (value, expiry))| {
                    let lease = None;
                    StoredEntry {
                        key,
                        value,
                        expiry,
                        lease,
                    }
                });
                KvState {
                    now_ms: old.now_ms,
                    next_index: 0,
                    entries: entries.collect(),
                    leases: Vec::new(),
                }
            }
        };
        let mut kv = Kv {
            now_ms: state.now_ms,
            next_index: state.next_index,
            ..Kv::default()
        };
        for lease in state.leases {
            kv.leases
                .insert(lease.id, lease.ttl_ms, lease.deadline, OrdSet::new());
        }
        for entry in state.entries {
            if entry.lease.is_some_and(|id| !kv.leases.contains(id)) {
                return Err("a key is attached to a lease the snapshot does not hold".into());
            }
            let (expiry, lease) = (entry.expiry, entry.lease);
            let value = entry.value;
            if kv.entries.contains_key(&entry.key) {
                return Err("a key appears twice".into());
            }
            kv.insert_stored(
                entry.key,
                Entry {
                    value,
                    expiry,
                    lease,
                },
            );
        }
        Ok(kv)
    }

    /// Adds an entry as a snapshot held it (expired or not).
    fn insert_stored(&mut self, key: Vec<u8>, entry: Entry) {
        if let Some(at) = entry.expiry {
            self.expiries.insert((at, key.clone()));
        }
        if let Some(id) = entry.lease {
            self.leases.attach(id, key.clone());
        }
        self.entries.insert(key, entry);
    }
}

impl StateMachine for Kv {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        let mut events = Vec::new();
        commands
            .iter()
            .map(|c| {
                events.clear();
                self.apply_command(c.index.0, c.data, &mut events).encode()
            })
            .collect()
    }

    /// A query is a key; the reply is its live value.
    fn query(&self, query: &[u8]) -> Bytes {
        KvReply::Value(self.get(query).map(<[u8]>::to_vec)).encode()
    }

    fn snapshot(&self) -> Capture {
        let kv = self.clone();
        Capture::deferred(move || kv.encode())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = Kv::decode(snapshot)?;
        Ok(())
    }
}
