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

fn run_at(kv: &mut Kv, index: u64, now_ms: u64, op: KvOp) -> (KvReply, Vec<WatchEvent>) {
    let data = KvCommand { now_ms, op }.encode();
    let mut events = Vec::new();
    let reply = kv.apply_command(index, &data, &mut events);
    (reply, events)
}

fn put_lease(key: &str, lease: u64) -> KvOp {
    KvOp::PutLease {
        key: key.into(),
        value: b"up".to_vec(),
        lease,
    }
}

#[test]
fn a_lease_keeps_its_keys_until_it_expires_or_is_revoked() {
    let mut kv = Kv::default();
    let (granted, _) = run_at(&mut kv, 10, 1_000, KvOp::LeaseGrant { ttl_ms: 500 });
    assert_eq!(
        granted,
        KvReply::Lease {
            id: 10,
            ttl_ms: 500
        }
    );
    run_at(&mut kv, 11, 1_000, put_lease("svc/a", 10));
    run_at(&mut kv, 12, 1_000, put_lease("svc/b", 10));
    assert_eq!(
        run_at(&mut kv, 13, 1_000, put_lease("svc/c", 99)).0,
        KvReply::NoLease { id: 99 }
    );
    // Kept alive at 1,400: it now ends at 1,900, not 1,500.
    assert_eq!(
        run_at(&mut kv, 14, 1_400, KvOp::LeaseKeepAlive { id: 10 }).0,
        KvReply::Lease {
            id: 10,
            ttl_ms: 500
        }
    );
    assert_eq!(kv.next_deadline(), Some(1_900));
    let (_, events) = run_at(&mut kv, 15, 1_899, KvOp::Tick { renew: false });
    assert!(events.is_empty());
    assert_eq!(kv.get(b"svc/a"), Some(&b"up"[..]));
    // The leader's tick at the deadline expires the lease and its keys,
    // told as expiries at the tick's index.
    let (_, events) = run_at(&mut kv, 16, 1_900, KvOp::Tick { renew: false });
    let expired: Vec<(u64, EventKind, Vec<u8>)> = events
        .into_iter()
        .map(|e| (e.index, e.kind, e.key))
        .collect();
    assert_eq!(
        expired,
        [
            (16, EventKind::Expire, b"svc/a".to_vec()),
            (16, EventKind::Expire, b"svc/b".to_vec())
        ]
    );
    assert_eq!(kv.get(b"svc/a"), None);
    assert_eq!(
        run_at(&mut kv, 17, 1_900, KvOp::LeaseKeepAlive { id: 10 }).0,
        KvReply::NoLease { id: 10 }
    );
    // Revoking deletes at once.
    run_at(&mut kv, 18, 2_000, KvOp::LeaseGrant { ttl_ms: 10_000 });
    run_at(&mut kv, 19, 2_000, put_lease("x", 18));
    let (revoked, events) = run_at(&mut kv, 20, 2_000, KvOp::LeaseRevoke { id: 18 });
    assert_eq!(revoked, KvReply::Revoked);
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(kv.get(b"x"), None);
    assert_eq!(kv.next_deadline(), None);
}

#[test]
fn a_new_leader_whose_clock_is_ahead_renews_before_anything_expires() {
    let mut kv = Kv::default();
    run_at(&mut kv, 1, 1_000, KvOp::LeaseGrant { ttl_ms: 500 });
    run_at(&mut kv, 2, 1_000, put_lease("k", 1));
    // The new leader's clock reads 5,000: without the renewal the lease
    // (due at 1,500) would end the moment it stamps anything.
    let (_, events) = run_at(&mut kv, 3, 5_000, KvOp::Tick { renew: true });
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(kv.get(b"k"), Some(&b"up"[..]));
    assert_eq!(kv.next_deadline(), Some(5_500));
}

#[test]
fn a_snapshot_from_before_leases_is_read() {
    let mut old = wire::KvStateBeforeLeases {
        now_ms: 77,
        ..Default::default()
    };
    old.entries.insert(b"a".to_vec(), (b"1".to_vec(), None));
    old.entries
        .insert(b"t".to_vec(), (b"2".to_vec(), Some(100)));
    let bytes = to_bytes(&old);
    let mut kv = Kv::default();
    kv.restore(&bytes).unwrap();
    assert_eq!(kv.get(b"a"), Some(&b"1"[..]));
    assert_eq!(kv.get(b"t"), Some(&b"2"[..]));
    assert_eq!(kv.next_deadline(), Some(100));
    let mut again = Kv::default();
    again.restore(&kv.snapshot().encode()).unwrap();
    assert_eq!(again, kv);
}

#[test]
fn a_prefix_read_gives_the_live_keys_in_order_up_to_its_limit() {
    let mut kv = Kv::default();
    for (i, key) in ["a/2", "a/1", "b/1", "a/3"].into_iter().enumerate() {
        run_at(
            &mut kv,
            i as u64,
            10,
            put(key, "v", (key == "a/3").then_some(5)),
        );
    }
    run_at(&mut kv, 9, 20, KvOp::Tick { renew: false });
    let keys = |(pairs, more): (Vec<KeyValue>, bool)| {
        let keys: Vec<String> = pairs.iter().map(|p| text(&p.key)).collect();
        (keys, more)
    };
    assert_eq!(
        keys(kv.get_prefix(b"a/", None, 10, usize::MAX)),
        (vec!["a/1".into(), "a/2".into()], false)
    );
    assert_eq!(
        keys(kv.get_prefix(b"a/", None, 1, usize::MAX)),
        (vec!["a/1".into()], true)
    );
    // The next page starts after the last key of the one before.
    assert_eq!(
        keys(kv.get_prefix(b"a/", Some(b"a/1"), 1, usize::MAX)),
        (vec!["a/2".into()], false)
    );
    assert_eq!(keys(kv.get_prefix(b"", None, 10, usize::MAX)).0.len(), 3);
    // A byte budget cuts a page too, never below one key.
    assert_eq!(
        keys(kv.get_prefix(b"", None, 10, 1)),
        (vec!["a/1".into()], true)
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A key's value, expiry and lease in the model.
type ModelEntry = (Vec<u8>, Option<u64>, Option<u64>);

/// The store as it was before the expiry index: every command walks
/// every entry and every lease.
#[derive(Default)]
struct Model {
    now_ms: u64,
    /// key → (value, expiry, lease).
    entries: std::collections::BTreeMap<Vec<u8>, ModelEntry>,
    /// id → (ttl, deadline).
    leases: std::collections::BTreeMap<u64, (u64, u64)>,
}

impl Model {
    fn run(&mut self, index: u64, now_ms: u64, op: &KvOp) -> KvReply {
        if let KvOp::Tick { renew: true } = op {
            let now = self.now_ms.max(now_ms);
            for (ttl, deadline) in self.leases.values_mut() {
                *deadline = (*deadline).max(now + *ttl);
            }
        }
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        self.leases.retain(|_, (_, deadline)| *deadline > now);
        let leases = self.leases.clone();
        self.entries.retain(|_, (_, expiry, lease)| {
            expiry.is_none_or(|at| at > now) && lease.is_none_or(|id| leases.contains_key(&id))
        });
        match op.clone() {
            KvOp::Put { key, value, ttl_ms } => {
                let old = self
                    .entries
                    .insert(key, (value, ttl_ms.map(|t| now + t), None));
                KvReply::Done(old.map(|o| o.0))
            }
            KvOp::PutLease { key, value, lease } => {
                if !self.leases.contains_key(&lease) {
                    return KvReply::NoLease { id: lease };
                }
                let old = self.entries.insert(key, (value, None, Some(lease)));
                KvReply::Done(old.map(|o| o.0))
            }
            KvOp::Cas { key, old, new } => {
                let current = self.get(&key);
                if current == old {
                    self.entries.insert(key, (new.clone(), None, None));
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
            KvOp::Delete { key } => KvReply::Done(self.entries.remove(&key).map(|o| o.0)),
            KvOp::LeaseGrant { ttl_ms } => {
                self.leases.insert(index, (ttl_ms, now + ttl_ms));
                KvReply::Lease { id: index, ttl_ms }
            }
            KvOp::LeaseKeepAlive { id } => match self.leases.get_mut(&id) {
                Some((ttl, deadline)) => {
                    *deadline = (*deadline).max(now + *ttl);
                    KvReply::Lease { id, ttl_ms: *ttl }
                }
                None => KvReply::NoLease { id },
            },
            KvOp::LeaseRevoke { id } => {
                if self.leases.remove(&id).is_none() {
                    return KvReply::NoLease { id };
                }
                self.entries.retain(|_, (_, _, lease)| *lease != Some(id));
                KvReply::Revoked
            }
            KvOp::Tick { .. } => KvReply::Done(None),
        }
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (value, expiry, _) = self.entries.get(key)?;
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
    // Lease ids are the indexes of earlier commands (0..60 in a run).
    let lease = 0u64..60;
    let op = prop_oneof![
        (key.clone(), value.clone(), ttl).prop_map(|(key, value, ttl_ms)| KvOp::Put {
            key,
            value,
            ttl_ms
        }),
        (
            key.clone(),
            proptest::option::of(value.clone()),
            value.clone()
        )
            .prop_map(|(key, old, new)| KvOp::Cas { key, old, new }),
        key.clone().prop_map(|key| KvOp::Delete { key }),
        (key, value, lease.clone()).prop_map(|(key, value, lease)| KvOp::PutLease {
            key,
            value,
            lease
        }),
        (0u64..20).prop_map(|ttl_ms| KvOp::LeaseGrant { ttl_ms }),
        lease.clone().prop_map(|id| KvOp::LeaseKeepAlive { id }),
        lease.prop_map(|id| KvOp::LeaseRevoke { id }),
        any::<bool>().prop_map(|renew| KvOp::Tick { renew }),
    ];
    (0u64..40, op)
}

proptest::proptest! {
    /// The expiry and lease indexes change nothing a client sees: every
    /// reply, every key's value and every snapshot's restore agree with a
    /// store that walks all entries and leases on every command; and the
    /// changes told to watchers replay the store: applying them to a copy
    /// of the keys gives the keys.
    #[test]
    fn the_indexes_agree_with_walking_every_entry_and_lease(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut kv = Kv::default();
        let mut model = Model::default();
        let mut watched = std::collections::BTreeMap::new();
        let mut clock = 0;
        for (index, (step, op)) in ops.into_iter().enumerate() {
            clock += step % 7;
            let stamp = if step % 5 == 0 { clock / 2 } else { clock };
            let data = KvCommand { now_ms: stamp, op: op.clone() }.encode();
            let mut events = Vec::new();
            let reply = kv.apply_command(index as u64, &data, &mut events);
            proptest::prop_assert_eq!(reply, model.run(index as u64, stamp, &op));
            for event in events {
                proptest::prop_assert_eq!(event.index, index as u64);
                match event.value {
                    Some(value) => watched.insert(event.key, value),
                    None => watched.remove(&event.key),
                };
            }
            for k in 0u8..6 {
                proptest::prop_assert_eq!(kv.get(&[k]).map(<[u8]>::to_vec), model.get(&[k]));
            }
            let stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = model
                .entries
                .iter()
                .map(|(k, (v, _, _))| (k.clone(), v.clone()))
                .collect();
            proptest::prop_assert_eq!(&watched, &stored);
            let mut restored = Kv::default();
            restored.restore(&kv.snapshot().encode()).unwrap();
            proptest::prop_assert_eq!(&restored, &kv);
        }
    }
}
