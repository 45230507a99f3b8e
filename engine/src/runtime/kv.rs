//! The replicated key-value store: synod's example state machine and the one
//! behind `synod client`'s put, get, cas and delete.
//!
//! Expiry is deterministic: the leader stamps each command with its clock
//! (`KvCommand::now_ms`) before proposing, and a replica's notion of time is
//! the highest stamp applied so far, so every replica expires the same keys
//! at the same log index whatever its own clock says.

use crate::group::archive::{from_bytes, to_bytes};
use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use crate::group::state_machine::{Applying, Capture, StateMachine};

use wire::KvState;
pub use wire::{KvCommand, KvOp, KvReply};

/// The log and reply formats. rkyv derives archived and resolver types
/// beside each; they are an implementation detail without docs of their own.
#[allow(missing_docs)]
mod wire {
    use std::collections::BTreeMap;

    /// One operation on the store.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum KvOp {
        /// Sets `key` to `value`, expiring after `ttl_ms` if given.
        Put {
            /// Key.
            key: Vec<u8>,
            /// Value.
            value: Vec<u8>,
            /// Lifetime in milliseconds of leader time.
            ttl_ms: Option<u64>,
        },
        /// Sets `key` to `new` only if it currently holds `old` (None: absent).
        Cas {
            /// Key.
            key: Vec<u8>,
            /// Expected value.
            old: Option<Vec<u8>>,
            /// New value.
            new: Vec<u8>,
        },
        /// Removes `key`.
        Delete {
            /// Key.
            key: Vec<u8>,
        },
    }

    /// A command as it travels in the log: an operation and the leader's clock.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct KvCommand {
        /// Milliseconds on the proposing leader's clock.
        pub now_ms: u64,
        /// The operation.
        pub op: KvOp,
    }

    /// What an operation returned.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum KvReply {
        /// Put or Delete done; the previous value, if any.
        Done(Option<Vec<u8>>),
        /// Cas outcome and the value now held.
        Cas {
            /// Whether the swap happened.
            swapped: bool,
            /// The current value.
            current: Option<Vec<u8>>,
        },
        /// A read's result.
        Value(Option<Vec<u8>>),
        /// The command could not be decoded.
        Invalid(String),
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

impl KvReply {
    /// The reply's bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(to_bytes(self).into_vec())
    }

    /// Parses reply bytes.
    pub fn decode(bytes: &[u8]) -> Result<KvReply, String> {
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

    /// Live keys.
    pub fn len(&self) -> usize {
        self.entries
            .keys()
            .filter(|k| self.get(k).is_some())
            .count()
    }

    /// True when no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LogIndex;

    fn run(kv: &mut Kv, now_ms: u64, op: KvOp) -> KvReply {
        let data = KvCommand { now_ms, op }.encode();
        let replies = kv.apply(&[Applying {
            client: Default::default(),
            seq: 0,
            index: LogIndex(0),
            data: &data,
        }]);
        KvReply::decode(&replies[0]).unwrap()
    }

    fn put(key: &str, value: &str, ttl_ms: Option<u64>) -> KvOp {
        KvOp::Put {
            key: key.into(),
            value: value.into(),
            ttl_ms,
        }
    }

    #[test]
    fn put_cas_delete() {
        let mut kv = Kv::default();
        assert_eq!(run(&mut kv, 1, put("a", "1", None)), KvReply::Done(None));
        assert_eq!(
            run(&mut kv, 2, put("a", "2", None)),
            KvReply::Done(Some(b"1".to_vec()))
        );
        let cas = |old: &str, new: &str| KvOp::Cas {
            key: b"a".to_vec(),
            old: Some(old.into()),
            new: new.into(),
        };
        assert_eq!(
            run(&mut kv, 3, cas("1", "3")),
            KvReply::Cas {
                swapped: false,
                current: Some(b"2".to_vec())
            }
        );
        assert_eq!(
            run(&mut kv, 4, cas("2", "3")),
            KvReply::Cas {
                swapped: true,
                current: Some(b"3".to_vec())
            }
        );
        assert_eq!(
            run(&mut kv, 5, KvOp::Delete { key: b"a".to_vec() }),
            KvReply::Done(Some(b"3".to_vec()))
        );
        assert_eq!(kv.get(b"a"), None);
    }

    #[test]
    fn ttl_expires_by_log_time_not_by_the_local_clock() {
        let mut kv = Kv::default();
        run(&mut kv, 1_000, put("k", "v", Some(500)));
        assert_eq!(kv.get(b"k"), Some(&b"v"[..]));
        // A later command stamped before the deadline keeps it alive...
        run(&mut kv, 1_499, put("other", "x", None));
        assert_eq!(kv.get(b"k"), Some(&b"v"[..]));
        // ...a stamp from a leader whose clock is behind never turns time back...
        run(&mut kv, 10, put("other", "y", None));
        assert_eq!(kv.get(b"k"), Some(&b"v"[..]));
        // ...and the first command at or past the deadline expires it, on
        // every replica at the same index.
        run(&mut kv, 1_500, put("other", "z", None));
        assert_eq!(kv.get(b"k"), None);
    }

    #[test]
    fn snapshots_restore_the_same_state_and_garbage_is_refused() {
        let mut kv = Kv::default();
        run(&mut kv, 7, put("a", "1", Some(100)));
        let snapshot = kv.snapshot().encode();
        let mut other = Kv::default();
        other.restore(&snapshot).unwrap();
        assert_eq!(other, kv);
        assert!(other.restore(b"not a snapshot").is_err());
        assert_eq!(other, kv, "a refused snapshot changes nothing");
        let replies = kv.apply(&[Applying {
            client: Default::default(),
            seq: 0,
            index: LogIndex(1),
            data: b"garbage",
        }]);
        assert!(matches!(
            KvReply::decode(&replies[0]).unwrap(),
            KvReply::Invalid(_)
        ));
    }

    /// The store as it was before the expiry index: every command walks
    /// every entry.
    #[derive(Default)]
    struct Model {
        now_ms: u64,
        entries: std::collections::BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
    }

    impl Model {
        fn run(&mut self, now_ms: u64, op: &KvOp) {
            self.now_ms = self.now_ms.max(now_ms);
            let now = self.now_ms;
            self.entries
                .retain(|_, (_, expiry)| expiry.is_none_or(|at| at > now));
            match op.clone() {
                KvOp::Put { key, value, ttl_ms } => {
                    self.entries
                        .insert(key, (value, ttl_ms.map(|t| now.saturating_add(t))));
                }
                KvOp::Cas { key, old, new } => {
                    if self.get(&key) == old {
                        self.entries.insert(key, (new, None));
                    }
                }
                KvOp::Delete { key } => {
                    self.entries.remove(&key);
                }
            }
        }

        fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
            let (value, expiry) = self.entries.get(key)?;
            expiry
                .is_none_or(|at| at > self.now_ms)
                .then(|| value.clone())
        }
    }

    fn op() -> impl proptest::strategy::Strategy<Value = (u64, KvOp)> {
        use proptest::prelude::*;
        let key = (0u8..6).prop_map(|k| vec![k]);
        let value = (0u8..3).prop_map(|v| vec![v]);
        let ttl = proptest::option::of(0u64..20);
        let op = prop_oneof![
            (key.clone(), value.clone(), ttl).prop_map(|(key, value, ttl_ms)| KvOp::Put {
                key,
                value,
                ttl_ms
            }),
            (key.clone(), proptest::option::of(value.clone()), value)
                .prop_map(|(key, old, new)| KvOp::Cas { key, old, new }),
            key.prop_map(|key| KvOp::Delete { key }),
        ];
        (0u64..40, op)
    }

    proptest::proptest! {
        /// The expiry index changes nothing a client sees: every reply,
        /// every key's value and every snapshot's restore agree with a
        /// store that walks all entries on every command.
        #[test]
        fn the_expiry_index_agrees_with_walking_every_entry(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            let mut kv = Kv::default();
            let mut model = Model::default();
            let mut clock = 0;
            for (step, op) in ops {
                clock += step % 7;
                let stamp = if step % 5 == 0 { clock / 2 } else { clock };
                run(&mut kv, stamp, op.clone());
                model.run(stamp, &op);
                for k in 0u8..6 {
                    proptest::prop_assert_eq!(kv.get(&[k]).map(<[u8]>::to_vec), model.get(&[k]));
                }
                let mut restored = Kv::default();
                restored.restore(&kv.snapshot().encode()).unwrap();
                proptest::prop_assert_eq!(&restored, &kv);
            }
        }
    }
}
