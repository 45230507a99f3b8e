//! The replicated key-value store: synod's example state machine and the one
//! behind `synod client`'s put, get, cas and delete.
//!
//! Expiry is deterministic: the leader stamps each command with its clock
//! (`KvCommand::now_ms`) before proposing, and a replica's notion of time is
//! the highest stamp applied so far, so every replica expires the same keys
//! at the same log index whatever its own clock says.

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use synod_client_proto::{KvOp, KvReply};
use synod_engine::archive::{from_bytes, to_bytes};
use synod_engine::runtime::{Applying, Capture, StateMachine};

pub use wire::KvCommand;
use wire::KvState;

#[cfg(test)]
mod tests;

/// The log and snapshot formats. rkyv derives archived and resolver types
/// beside each; they are an implementation detail without docs of their own.
#[allow(missing_docs)]
mod wire {
    use std::collections::BTreeMap;

    use synod_client_proto::KvOp;

    /// A command as it travels in the log: an operation and the leader's clock.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct KvCommand {
        /// Milliseconds on the proposing leader's clock.
        pub now_ms: u64,
        /// The operation.
        pub op: KvOp,
    }

    #[derive(
        rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq, Eq,
    )]
    pub struct KvState {
        pub now_ms: u64,
        /// key → (value, expiry in leader ms).
        pub entries: BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
    }
}

/// The store. Its maps are persistent (`imbl`): a snapshot clones them in
/// O(1) on the group's core and encodes the clone on the snapshot thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    /// The highest leader stamp applied.
    now_ms: u64,
    /// key → (value, expiry in leader ms).
    entries: OrdMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
    /// (expiry, key) of every entry with one, so expiring is a walk over
    /// the expired, not over the store.
    expiries: OrdSet<(u64, Vec<u8>)>,
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

impl Kv {
    /// The live value of `key` at the store's current time.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let (value, expiry) = self.entries.get(key)?;
        match expiry {
            Some(at) if *at <= self.now_ms => None,
            _ => Some(value),
        }
    }

    fn advance_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        while let Some((at, key)) = self.expiries.get_min().cloned() {
            if at > self.now_ms {
                break;
            }
            self.expiries.remove(&(at, key.clone()));
            self.entries.remove(&key);
        }
    }

    /// Sets `key`, keeping the expiry index in step; returns the old value.
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, expiry: Option<u64>) -> Option<Vec<u8>> {
        if let Some(at) = expiry {
            self.expiries.insert((at, key.clone()));
        }
        let old = self.entries.insert(key.clone(), (value, expiry))?;
        self.forget_expiry(key, old.1);
        Some(old.0)
    }

    /// Removes `key`; returns its value.
    fn remove(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        let (value, expiry) = self.entries.remove(&key)?;
        self.forget_expiry(key, expiry);
        Some(value)
    }

    fn forget_expiry(&mut self, key: Vec<u8>, old: Option<u64>) {
        if let Some(at) = old {
            // A new entry with the same expiry put the same pair back.
            if self.entries.get(&key).and_then(|(_, e)| *e) != Some(at) {
                self.expiries.remove(&(at, key));
            }
        }
    }

    /// The snapshot's bytes (what `restore` takes).
    pub fn encode(&self) -> Bytes {
        Bytes::from(to_bytes(&self.wire()).into_vec())
    }

    /// The store in its snapshot form.
    fn wire(&self) -> KvState {
        KvState {
            now_ms: self.now_ms,
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn apply_one(&mut self, data: &[u8]) -> KvReply {
        let command = match KvCommand::decode(data) {
            Ok(command) => command,
            Err(reason) => return KvReply::Invalid(reason),
        };
        self.advance_clock(command.now_ms);
        let now = self.now_ms;
        match command.op {
            KvOp::Put { key, value, ttl_ms } => {
                let expiry = ttl_ms.map(|ttl| now.saturating_add(ttl));
                KvReply::Done(self.insert(key, value, expiry))
            }
            KvOp::Cas { key, old, new } => {
                let current = self.get(&key).map(<[u8]>::to_vec);
                if current == old {
                    self.insert(key, new.clone(), None);
                    KvReply::Cas {
                        swapped: true,
                        current: Some(new),
                    }
                } else {
                    KvReply::Cas {
                        swapped: false,
                        current,
                    }
                }
            }
            KvOp::Delete { key } => KvReply::Done(self.remove(key)),
        }
    }
}

impl StateMachine for Kv {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        commands
            .iter()
            .map(|c| self.apply_one(c.data).encode())
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
        let state: KvState = from_bytes(snapshot)?;
        let mut kv = Kv {
            now_ms: state.now_ms,
            ..Kv::default()
        };
        for (key, (value, expiry)) in state.entries {
            kv.insert(key, value, expiry);
        }
        *self = kv;
        Ok(())
    }
}
