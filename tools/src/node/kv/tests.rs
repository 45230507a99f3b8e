//! The store against its replies, its snapshots, and a model that walks
//! every entry on every command.

use synod_engine::protocol::LogIndex;

use super::*;

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
