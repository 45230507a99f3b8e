//! The state machine a `synod node` runs for each group: the raw log that
//! `synod client append` writes, and the KV store beside it.

use bytes::Bytes;
use synod_client_proto::{ClientResponse, KvOp, KvReply, LogEntry};
use synod_engine::archive::{from_bytes, to_bytes};
use synod_engine::runtime::{Applying, Capture, StateMachine};

use super::client_error::ClientError;
use super::kv::{Kv, KvCommand};
use super::log::{LogColumns, ReadableLog};
use commands::{
    parse_log_query, parse_prefix_query, parse_watch_query, PREFIX_BYTES_MAX, QUERY_GET, QUERY_LOG,
    QUERY_NEXT_DUE, QUERY_PREFIX, QUERY_WATCH, TAG_APPEND, TAG_KV,
};
use watch::WatchLog;

mod commands;
#[cfg(test)]
mod tests;
mod watch;

pub use commands::{
    append_command, append_commands, get_query, kv_command, log_query, next_due_query,
    parse_next_due, prefix_query, watch_query, PREFIX_KEYS_MAX, READ_ENTRIES_MAX,
};
pub use watch::WATCH_RETAIN_BYTES;

/// Bytes of applied entries kept readable; older entries are dropped, so
/// the state (and every snapshot of it) stays bounded under an endless load.
pub const LOG_RETAIN_BYTES: usize = 16 << 20;

/// KV store plus the latest applied log entries, readable by index, and
/// the store's latest changes, for watches.
#[derive(Debug)]
pub struct NodeMachine {
    kv: Kv,
    /// The latest applied commands: appends as written, KV writes as text.
    log: ReadableLog,
    retain_bytes: usize,
    watch: WatchLog,
    /// The log index after the last command applied.
    next_index: u64,
    /// The changes of the command being applied (kept to reuse its space).
    events: Vec<synod_client_proto::WatchEvent>,
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

impl NodeMachine {
    /// A machine that keeps about `retain_bytes` of applied entries.
    pub fn retaining(retain_bytes: usize) -> NodeMachine {
        NodeMachine {
            kv: Kv::default(),
            log: ReadableLog::retaining(retain_bytes),
            retain_bytes,
            watch: WatchLog::new(WATCH_RETAIN_BYTES, 0),
            next_index: 0,
            events: Vec::new(),
        }
    }

    /// The first log index still readable (0 if none was dropped). Only
    /// the tests ask.
    #[cfg(test)]
    pub fn log_start(&self) -> u64 {
        self.log.start()
    }

    fn apply_one(&mut self, command: &Applying<'_>) -> Bytes {
        let command_index = command.index.0;
        self.next_index = command_index + 1;
        match command.data.split_first() {
            Some((&TAG_APPEND, data)) => {
                self.log.push(command.index.0, data);
                Bytes::new()
            }
            Some((&TAG_KV, data)) => {
                let reply = self
                    .kv
                    .apply_command(command.index.0, data, &mut self.events);
                self.watch.push(self.events.drain(..));
                match KvCommand::decode(data) {
                    // The leader's clock is not something a client wrote:
                    // log reads skip its index.
                    Ok(KvCommand {
                        op: KvOp::Tick { .. },
                        ..
                    }) => {}
                    Ok(command) => self
                        .log
                        .push(command_index, describe(&command.op).as_bytes()),
                    Err(e) => self
                        .log
                        .push(command_index, format!("invalid: {e}").as_bytes()),
                }
                reply.encode()
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
            Some((&QUERY_LOG, arguments)) => match parse_log_query(arguments) {
                Some((from, count)) => {
                    Bytes::from(ClientResponse::Entries(self.read_log(from, count)).encode())
                }
                None => malformed(),
            },
            Some((&QUERY_PREFIX, arguments)) => match parse_prefix_query(arguments) {
                Some(q) => {
                    let limit = q.limit as usize;
                    let (pairs, more) =
                        self.kv
                            .get_prefix(q.prefix, q.after, limit, PREFIX_BYTES_MAX);
                    Bytes::from(ClientResponse::Pairs { pairs, more }.encode())
                }
                None => malformed(),
            },
            Some((&QUERY_WATCH, arguments)) => match parse_watch_query(arguments) {
                Some((from, skip, prefix)) => {
                    let answer = self.watch.read(prefix, from, skip, self.next_index);
                    Bytes::from(answer.encode())
                }
                None => malformed(),
            },
            Some((&QUERY_NEXT_DUE, [])) => match self.kv.next_deadline() {
                Some(at) => Bytes::copy_from_slice(&at.to_le_bytes()),
                None => Bytes::new(),
            },
            _ => malformed(),
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
        // Every command of the snapshot is below both: the changes they
        // made are in the state only, not in the watch history.
        let log_next = log_indexes.last().map_or(0, |last| last + 1);
        restored.next_index = log_next.max(restored.kv.next_index());
        restored.watch = WatchLog::new(WATCH_RETAIN_BYTES, restored.next_index);
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

fn malformed() -> Bytes {
    Bytes::from(ClientResponse::from(ClientError::MalformedQuery).encode())
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
        KvOp::LeaseGrant { ttl_ms } => format!("lease grant {ttl_ms}ms"),
        KvOp::LeaseKeepAlive { id } => format!("lease keepalive {id}"),
        KvOp::LeaseRevoke { id } => format!("lease revoke {id}"),
        KvOp::PutLease { key, value, lease } => {
            format!("put {} {} lease {lease}", text(key), text(value))
        }
        KvOp::Tick { .. } => "tick".to_string(),
    }
}
