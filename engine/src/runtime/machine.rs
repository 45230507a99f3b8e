//! The state machine a `synod node` runs for each group: the raw log that
//! `synod client append` writes, and the KV store beside it.

use bytes::Bytes;

use super::client_proto::{ClientResponse, LogEntry};
use super::kv::{Kv, KvCommand, KvOp, KvReply};
use super::readable_log::{LogColumns, ReadableLog};
use crate::group::archive::{from_bytes, to_bytes};
use crate::group::state_machine::{Applying, Capture, StateMachine};

const TAG_APPEND: u8 = 0;
const TAG_KV: u8 = 1;
const QUERY_GET: u8 = 0;
const QUERY_LOG: u8 = 1;

/// Entries returned by one log read at most.
pub const READ_ENTRIES_MAX: u32 = 10_000;

/// Bytes of applied entries kept readable; older entries are dropped, so
/// the state (and every snapshot of it) stays bounded under an endless load.
pub const LOG_RETAIN_BYTES: usize = 16 << 20;

/// KV store plus the latest applied log entries, readable by index.
#[derive(Debug)]
pub struct NodeMachine {
    kv: Kv,
    /// The latest applied commands: appends as written, KV writes as text.
    log: ReadableLog,
    retain_bytes: usize,
}

impl Default for NodeMachine {
    fn default() -> Self {
        NodeMachine::retaining(LOG_RETAIN_BYTES)
    }
}

/// A snapshot of a node's state machine. The log is stored as columns (each
/// entry's index, its length, and all entries' bytes end to end): a few
/// large copies, not one allocation per entry.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct MachineSnapshot {
    kv: Vec<u8>,
    log_indexes: Vec<u64>,
    log_lens: Vec<u32>,
    log_data: Vec<u8>,
}

/// Tags a raw append for the log.
pub fn append_command(data: &[u8]) -> Bytes {
    tagged(TAG_APPEND, data)
}

/// Bytes that `items` appends of `item_bytes` each take in a slot's batch.
pub fn append_batch_bytes(item_bytes: usize, items: usize) -> usize {
    items.saturating_mul(crate::protocol::COMMAND_HEADER_BYTES + 1 + item_bytes)
}

/// Tags raw appends for the log, all in one buffer that the commands
/// share (one allocation for a client batch, not one per item).
pub fn append_commands<T: AsRef<[u8]>>(items: &[T]) -> Vec<Bytes> {
    let total = items.iter().map(|item| item.as_ref().len() + 1).sum();
    let mut buffer = Vec::with_capacity(total);
    for item in items {
        buffer.push(TAG_APPEND);
        buffer.extend_from_slice(item.as_ref());
    }
    let buffer = Bytes::from(buffer);
    let mut start = 0;
    items
        .iter()
        .map(|item| {
            let end = start + 1 + item.as_ref().len();
            let command = buffer.slice(start..end);
            start = end;
            command
        })
        .collect()
}

/// Tags a KV command for the log.
pub fn kv_command(command: &KvCommand) -> Bytes {
    tagged(TAG_KV, &command.encode())
}

/// A query for a key's value.
pub fn get_query(key: &[u8]) -> Bytes {
    tagged(QUERY_GET, key)
}

/// A query for applied entries `from..from + count`.
pub fn log_query(from: u64, count: u32) -> Bytes {
    let mut query = vec![QUERY_LOG];
    query.extend_from_slice(&from.to_le_bytes());
    query.extend_from_slice(&count.min(READ_ENTRIES_MAX).to_le_bytes());
    Bytes::from(query)
}

fn tagged(tag: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(tag);
    out.extend_from_slice(data);
    Bytes::from(out)
}

impl NodeMachine {
    /// A machine that keeps about `retain_bytes` of applied entries.
    pub fn retaining(retain_bytes: usize) -> NodeMachine {
        NodeMachine {
            kv: Kv::default(),
            log: ReadableLog::retaining(retain_bytes),
            retain_bytes,
        }
    }

    /// The first log index still readable (0 if none was dropped).
    pub fn log_start(&self) -> u64 {
        self.log.start()
    }

    fn apply_one(&mut self, command: &Applying<'_>) -> Bytes {
        match command.data.split_first() {
            Some((&TAG_APPEND, data)) => {
                self.log.push(command.index.0, data);
                Bytes::new()
            }
            Some((&TAG_KV, data)) => {
                let reply = self
                    .kv
                    .apply(&[Applying { data, ..*command }])
                    .pop()
                    .unwrap_or_default();
                let shown = KvCommand::decode(data)
                    .map_or_else(|e| format!("invalid: {e}"), |c| describe(&c.op));
                self.log.push(command.index.0, shown.as_bytes());
                reply
            }
            _ => {
                self.log.push(command.index.0, b"invalid command");
                KvReply::Invalid("unknown command tag".into()).encode()
            }
        }
    }

    fn read_log(&self, from: u64, count: u32) -> Vec<LogEntry> {
        self.log
            .read(from, count.min(READ_ENTRIES_MAX) as usize)
            .into_iter()
            .map(|(index, data)| LogEntry {
                index,
                data: data.to_vec(),
            })
            .collect()
    }
}

impl StateMachine for NodeMachine {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        commands.iter().map(|c| self.apply_one(c)).collect()
    }

    /// A KV get answers with `KvReply` bytes; a log read with a
    /// `ClientResponse::Entries`.
    fn query(&self, query: &[u8]) -> Bytes {
        match query.split_first() {
            Some((&QUERY_GET, key)) => self.kv.query(key),
            Some((&QUERY_LOG, rest)) if rest.len() == 12 => {
                let from = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                let count = u32::from_le_bytes(rest[8..].try_into().expect("4 bytes"));
                Bytes::from(ClientResponse::Entries(self.read_log(from, count)).encode())
            }
            _ => Bytes::from(ClientResponse::Error("malformed query".into()).encode()),
        }
    }

    /// On the core: the KV store's O(1) clone and the log's chunk handles;
    /// the copying and encoding run in the `Capture`.
    fn snapshot(&self) -> Capture {
        let kv = self.kv.clone();
        let log = self.log.capture();
        Capture::deferred(move || {
            let LogColumns {
                indexes,
                lens,
                data,
            } = log.columns();
            let snapshot = MachineSnapshot {
                kv: kv.encode().to_vec(),
                log_indexes: indexes,
                log_lens: lens,
                log_data: data,
            };
            Bytes::from(to_bytes(&snapshot).into_vec())
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let snapshot: MachineSnapshot = from_bytes(snapshot)?;
        let MachineSnapshot {
            kv: kv_bytes,
            log_indexes,
            log_lens,
            log_data,
        } = snapshot;
        if log_indexes.len() != log_lens.len() {
            return Err("log columns of different lengths".into());
        }
        if !log_indexes.windows(2).all(|w| w[0] < w[1]) {
            return Err("log entries out of order".into());
        }
        let total: u64 = log_lens.iter().map(|len| u64::from(*len)).sum();
        if total != log_data.len() as u64 {
            return Err("log lengths do not add up to the log bytes".into());
        }
        let mut kv = Kv::default();
        kv.restore(&kv_bytes)?;
        let mut restored = NodeMachine::retaining(self.retain_bytes);
        restored.kv = kv;
        let mut at = 0;
        for (index, len) in log_indexes.into_iter().zip(log_lens) {
            let end = at + len as usize;
            restored.log.push(index, &log_data[at..end]);
            at = end;
        }
        *self = restored;
        Ok(())
    }
}

/// A KV write as a line of text, for log reads.
fn describe(op: &KvOp) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match op {
        KvOp::Put {
            key,
            value,
            ttl_ms: None,
        } => format!("put {} {}", text(key), text(value)),
        KvOp::Put {
            key,
            value,
            ttl_ms: Some(ttl),
        } => format!("put {} {} ttl {ttl}ms", text(key), text(value)),
        KvOp::Cas { key, old, new } => {
            let old = old.as_deref().map_or_else(|| "(absent)".to_string(), text);
            format!("cas {} {} {}", text(key), old, text(new))
        }
        KvOp::Delete { key } => format!("delete {}", text(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LogIndex;

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
}

#[cfg(test)]
mod snapshot_columns {
    use super::*;

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
}
