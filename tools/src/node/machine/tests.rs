//! The node machine: appends and KV writes in one readable log, its bound,
//! its snapshots, and the bytes of its commands and snapshots pinned.

use synod_engine::protocol::LogIndex;

use super::*;
use synod_client_proto::{EventKind, WatchEvent};

#[test]
fn appends_tagged_together_are_each_the_append_tagged_alone() {
    let items: [&[u8]; 4] = [b"a", b"", b"longer item", b"z"];
    let together = append_commands(&items);
    let alone: Vec<Bytes> = items.iter().map(|item| append_command(item)).collect();
    assert_eq!(together, alone);
    assert!(append_commands::<&[u8]>(&[]).is_empty());
}

#[test]
fn appends_and_kv_writes_share_one_readable_log() {
    let mut machine = NodeMachine::default();
    let put = kv_command(&KvCommand {
        now_ms: 1,
        op: KvOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: None,
        },
    });
    let commands = [
        append_command(b"hello"),
        put,
        Bytes::from_static(b"\x09junk"),
    ];
    let applying: Vec<Applying<'_>> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| Applying {
            client: Default::default(),
            seq: 0,
            index: LogIndex(i as u64),
            data: c,
        })
        .collect();
    let replies = machine.apply(&applying);
    assert!(replies[0].is_empty());
    assert_eq!(KvReply::decode(&replies[1]).unwrap(), KvReply::Done(None));
    assert!(matches!(
        KvReply::decode(&replies[2]).unwrap(),
        KvReply::Invalid(_)
    ));
    assert_eq!(
        KvReply::decode(&machine.query(&get_query(b"k"))).unwrap(),
        KvReply::Value(Some(b"v".to_vec()))
    );
    let ClientResponse::Entries(entries) =
        ClientResponse::decode(&machine.query(&log_query(0, 2))).unwrap()
    else {
        panic!("not entries")
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0],
        LogEntry {
            index: 0,
            data: b"hello".to_vec()
        }
    );
    let ClientResponse::Entries(entries) =
        ClientResponse::decode(&machine.query(&log_query(2, 5))).unwrap()
    else {
        panic!("not entries")
    };
    assert_eq!(entries.len(), 1);
    assert!(matches!(
        ClientResponse::decode(&machine.query(b"")).unwrap(),
        ClientResponse::Error(_)
    ));
}

fn appended(machine: &mut NodeMachine, from: u64, count: u64) {
    for i in from..from + count {
        let command = append_command(format!("entry {i:04}").as_bytes());
        machine.apply(&[Applying {
            client: Default::default(),
            seq: 0,
            index: LogIndex(i),
            data: &command,
        }]);
    }
}

fn log_of(machine: &NodeMachine) -> Vec<LogEntry> {
    match ClientResponse::decode(&machine.query(&log_query(0, READ_ENTRIES_MAX))).unwrap() {
        ClientResponse::Entries(entries) => entries,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_log_keeps_its_latest_bytes_and_snapshots_carry_it() {
    // Entries of 10 bytes count 26: 100 of them fit in 2,600 bytes.
    let mut machine = NodeMachine::retaining(2_600);
    appended(&mut machine, 0, 250);
    assert_eq!(machine.log_start(), 150, "only the latest 100 kept");
    let entries = log_of(&machine);
    assert_eq!(entries.len(), 100);
    assert_eq!(entries[0].data, b"entry 0150");

    let mut restored = NodeMachine::retaining(2_600);
    restored.restore(&machine.snapshot().encode()).unwrap();
    assert_eq!(log_of(&restored), entries);
    appended(&mut restored, 250, 10);
    assert_eq!(restored.log_start(), 160, "the bound holds after a restore");

    let before = log_of(&restored);
    assert!(restored.restore(b"not a snapshot").is_err());
    assert_eq!(
        log_of(&restored),
        before,
        "a refused snapshot changes nothing"
    );
}

fn encoded(snapshot: &MachineSnapshot) -> Vec<u8> {
    to_bytes(snapshot).into_vec()
}

#[test]
fn a_snapshot_whose_log_columns_disagree_is_refused_and_changes_nothing() {
    let good = MachineSnapshot {
        kv: NodeMachine::default().kv.encode().to_vec(),
        log_indexes: vec![3, 4],
        log_lens: vec![2, 1],
        log_data: b"abc".to_vec(),
    };
    let mut machine = NodeMachine::default();
    machine.restore(&encoded(&good)).unwrap();
    assert_eq!(machine.log_start(), 3);
    for (bad, reason) in [
        (
            MachineSnapshot {
                log_lens: vec![2],
                ..good_clone(&good)
            },
            "columns",
        ),
        (
            MachineSnapshot {
                log_lens: vec![2, 5],
                ..good_clone(&good)
            },
            "add up",
        ),
        (
            MachineSnapshot {
                log_indexes: vec![4, 3],
                ..good_clone(&good)
            },
            "order",
        ),
    ] {
        let error = machine.restore(&encoded(&bad)).unwrap_err();
        assert!(error.contains(reason), "{error}");
        assert_eq!(
            machine.log_start(),
            3,
            "a refused snapshot changed the state"
        );
    }
}

fn good_clone(s: &MachineSnapshot) -> MachineSnapshot {
    MachineSnapshot {
        kv: s.kv.clone(),
        log_indexes: s.log_indexes.clone(),
        log_lens: s.log_lens.clone(),
        log_data: s.log_data.clone(),
    }
}

/// A KV command and a snapshot as the engine's copy of this machine encoded
/// them: the WALs and snapshots of running nodes hold exactly these bytes,
/// and a node must read them back after an upgrade.
#[test]
fn commands_and_snapshots_keep_their_bytes() {
    let put = kv_command(&KvCommand {
        now_ms: 5,
        op: KvOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: Some(7),
        },
    });
    assert_eq!(hex(&put), WIRE_PUT);
    assert_eq!(hex(&log_query(3, 4)), WIRE_LOG_QUERY);
    let mut machine = NodeMachine::default();
    let append = append_command(b"x");
    machine.apply(&[
        Applying {
            client: Default::default(),
            seq: 0,
            index: LogIndex(0),
            data: &append,
        },
        Applying {
            client: Default::default(),
            seq: 0,
            index: LogIndex(1),
            data: &put,
        },
    ]);
    let snapshot = machine.snapshot().encode();
    assert_eq!(hex(&snapshot), WIRE_SNAPSHOT);
    let mut restored = NodeMachine::default();
    restored.restore(&snapshot).unwrap();
    assert_eq!(log_of(&restored), log_of(&machine));
    // A snapshot written before leases existed is read to the same state.
    let mut upgraded = NodeMachine::default();
    upgraded
        .restore(&unhex(WIRE_SNAPSHOT_BEFORE_LEASES))
        .unwrap();
    assert_eq!(log_of(&upgraded), log_of(&machine));
    assert_eq!(upgraded.kv.get(b"k"), machine.kv.get(b"k"));
    assert_eq!(upgraded.kv.next_deadline(), machine.kv.next_deadline());
    // Where its watch history starts comes from the log it kept.
    assert_eq!(upgraded.next_index, 2);
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn an_append_costs_its_bytes_and_the_tag_clients_count() {
    for data in [&b""[..], b"x", b"a longer append"] {
        let command = append_command(data);
        assert_eq!(
            command.len(),
            data.len() + synod_client_proto::APPEND_TAG_BYTES
        );
        assert_eq!(
            synod_client_proto::append_batch_bytes(data.len(), 1),
            synod_engine::protocol::COMMAND_HEADER_BYTES + command.len()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const WIRE_PUT: &str = "016b76000000000000050000000000000000000000ecffffff01000000e5ffffff010000000000000001000000000000000700000000000000";
const WIRE_LOG_QUERY: &str = "01030000000000000004000000";
const WIRE_SNAPSHOT: &str = "73796e6f646b76326b76000000000000f8ffffff01000000f1ffffff0100000001000000000000000c000000000000000000000000000000000000000000000005000000000000000200000000000000c0ffffff01000000e8ffffff0000000000000000000000000100000000000000010000000f00000078707574206b20762074746c20376d7378ffffff60000000d0ffffff02000000d8ffffff02000000d8ffffff10000000";
const WIRE_SNAPSHOT_BEFORE_LEASES: &str = "6b7600000000000000000000f4ffffff01000000000000000000000000000000000000000000000000000000000000000000000000000000c9ffffff0100000001000000000000000c000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000100000000000000050000000000000048ffffff0100000000000000000000000100000000000000010000000f00000078707574206b20762074746c20376d7310ffffffc8000000d0ffffff02000000d8ffffff02000000d8ffffff10000000";

fn apply_kv(machine: &mut NodeMachine, index: u64, now_ms: u64, op: KvOp) {
    let command = kv_command(&KvCommand { now_ms, op });
    machine.apply(&[Applying {
        client: Default::default(),
        seq: 0,
        index: LogIndex(index),
        data: &command,
    }]);
}

fn watched(machine: &NodeMachine, prefix: &[u8], from: u64) -> ClientResponse {
    ClientResponse::decode(&machine.query(&watch_query(prefix, from, 0))).unwrap()
}

fn put_op(key: &str, value: &str) -> KvOp {
    KvOp::Put {
        key: key.into(),
        value: value.into(),
        ttl_ms: None,
    }
}

#[test]
fn watches_read_the_changes_under_a_prefix_from_an_index() {
    let mut machine = NodeMachine::default();
    machine.apply(&[Applying {
        client: Default::default(),
        seq: 0,
        index: LogIndex(0),
        data: &append_command(b"not a KV change"),
    }]);
    apply_kv(&mut machine, 1, 1, put_op("svc/a", "1"));
    apply_kv(&mut machine, 2, 1, put_op("other", "x"));
    apply_kv(
        &mut machine,
        3,
        1,
        KvOp::Delete {
            key: b"svc/a".to_vec(),
        },
    );
    let ClientResponse::Events { events, next, .. } = watched(&machine, b"svc/", 0) else {
        panic!("not events");
    };
    let seen: Vec<(u64, EventKind)> = events.iter().map(|e| (e.index, e.kind)).collect();
    assert_eq!(seen, [(1, EventKind::Put), (3, EventKind::Delete)]);
    assert_eq!(next, 4);
    let ClientResponse::Events { events, next, .. } = watched(&machine, b"svc/", 2) else {
        panic!("not events");
    };
    assert_eq!((events.len(), next), (1, 4));
    // From "now": nothing, and where the next change will be.
    assert_eq!(
        watched(&machine, b"", u64::MAX),
        ClientResponse::Events {
            events: vec![],
            next: 4,
            next_skip: 0
        }
    );
    assert_eq!(
        parse_next_due(&machine.query(&next_due_query())),
        None,
        "nothing is due"
    );
}

#[test]
fn a_restored_machine_watches_only_from_its_snapshot_on() {
    let mut machine = NodeMachine::default();
    apply_kv(&mut machine, 0, 1, put_op("k", "1"));
    apply_kv(&mut machine, 1, 1, put_op("k", "2"));
    // The last command a tick, which log reads do not show.
    apply_kv(&mut machine, 2, 5, KvOp::Tick { renew: false });
    let snapshot = machine.snapshot().encode();
    let mut restored = NodeMachine::default();
    restored.restore(&snapshot).unwrap();
    assert_eq!(
        watched(&restored, b"", 2),
        ClientResponse::Compacted { first: 3 }
    );
    apply_kv(&mut restored, 3, 5, put_op("k", "3"));
    let ClientResponse::Events { events, next, .. } = watched(&restored, b"", 3) else {
        panic!("not events");
    };
    assert_eq!((events.len(), next), (1, 4));
}

#[test]
fn the_watch_history_is_bounded_and_says_where_it_starts() {
    let mut log = WatchLog::new(10 * 60, 0);
    for index in 0..100u64 {
        log.push([WatchEvent {
            index,
            kind: EventKind::Put,
            key: b"key".to_vec(),
            value: Some(b"v".to_vec()),
        }]);
    }
    let ClientResponse::Compacted { first } = log.read(b"", 0, 0, 100) else {
        panic!("the oldest changes are kept beyond the bound");
    };
    assert!(first > 80 && first < 100, "{first}");
    let ClientResponse::Events { events, next, .. } = log.read(b"", first, 0, 100) else {
        panic!("not events");
    };
    assert_eq!(events.len() as u64, 100 - first);
    assert_eq!(next, 100);
}

/// Reads every change from index 0 through answers of at most the budget,
/// going on from each answer's `next` and `next_skip`.
fn read_all(log: &WatchLog, next_index: u64) -> Vec<(u64, Vec<u8>)> {
    let (mut from, mut skip) = (0, 0);
    let mut seen = Vec::new();
    loop {
        let ClientResponse::Events {
            events,
            next,
            next_skip,
        } = log.read(b"", from, skip, next_index)
        else {
            panic!("not events");
        };
        let bytes: usize = events
            .iter()
            .map(|e| e.key.len() + e.value.as_ref().map_or(0, Vec::len))
            .sum();
        assert!(bytes <= super::watch::WATCH_ANSWER_BYTES, "{bytes}");
        if events.is_empty() {
            return seen;
        }
        assert!((next, next_skip) > (from, skip), "no progress from {from}");
        seen.extend(events.iter().map(|e| (e.index, e.key.clone())));
        (from, skip) = (next, next_skip);
    }
}

#[test]
fn a_watch_answer_stays_within_its_budget_and_resumes_where_it_stopped() {
    let mut log = WatchLog::new(64 << 20, 0);
    let value = vec![b'v'; 100 << 10];
    let put = |index, key: String| WatchEvent {
        index,
        kind: EventKind::Put,
        key: key.into_bytes(),
        value: Some(value.clone()),
    };
    // 20 commands of two 100 KiB puts each, then one command (a lease
    // ending, say) with 30 changes of 100 KiB: 7 MB of changes.
    for index in 0..20u64 {
        log.push([put(index, "a".into()), put(index, "b".into())]);
    }
    log.push((0..30).map(|k| put(20, format!("k{k:02}"))));
    let seen = read_all(&log, 21);
    assert_eq!(seen.len(), 70, "every change once");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
}
