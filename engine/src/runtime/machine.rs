//! The state machine a `synod node` runs for each group: the raw log that
//! `synod client append` writes, and the KV store beside it.

use bytes::Bytes;

use super::client_proto::{ClientResponse, LogEntry};
use super::kv::{Kv, KvCommand, KvOp, KvReply};
use super::state_machine::{Applying, StateMachine};
use crate::protocol::LogIndex;

const TAG_APPEND: u8 = 0;
const TAG_KV: u8 = 1;
const QUERY_GET: u8 = 0;
const QUERY_LOG: u8 = 1;

/// Entries returned by one log read at most.
pub const READ_ENTRIES_MAX: u32 = 10_000;

/// KV store plus the applied log, readable by index.
#[derive(Debug, Default)]
pub struct NodeMachine {
    kv: Kv,
    /// Every applied command: appends as written, KV writes as text.
    log: Vec<(LogIndex, Bytes)>,
}

/// Tags a raw append for the log.
pub fn append_command(data: &[u8]) -> Bytes {
    tagged(TAG_APPEND, data)
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
    fn apply_one(&mut self, command: &Applying<'_>) -> Bytes {
        match command.data.split_first() {
            Some((&TAG_APPEND, data)) => {
                self.log.push((command.index, Bytes::copy_from_slice(data)));
                Bytes::new()
            }
            Some((&TAG_KV, data)) => {
                let reply = self
                    .kv
                    .apply(&[Applying {
                        index: command.index,
                        data,
                    }])
                    .pop()
                    .unwrap_or_default();
                let shown = KvCommand::decode(data)
                    .map_or_else(|e| format!("invalid: {e}"), |c| describe(&c.op));
                self.log.push((command.index, Bytes::from(shown)));
                reply
            }
            _ => {
                self.log
                    .push((command.index, Bytes::from_static(b"invalid command")));
                KvReply::Invalid("unknown command tag".into()).encode()
            }
        }
    }

    fn read_log(&self, from: u64, count: u32) -> Vec<LogEntry> {
        let start = self.log.partition_point(|(index, _)| index.0 < from);
        self.log[start..]
            .iter()
            .take(count.min(READ_ENTRIES_MAX) as usize)
            .map(|(index, data)| LogEntry {
                index: index.0,
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

    fn snapshot(&self) -> Bytes {
        // The raw log is not part of snapshots yet: compaction is to come.
        self.kv.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.kv.restore(snapshot)
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
}
