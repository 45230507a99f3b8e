//! The client protocol on a node's client port: one rkyv request body per
//! frame (the request id rides in the frame's `seq`), one reply per request.

use crate::group::archive::{from_bytes, to_bytes};

use super::kv::{KvOp, KvReply};

/// Frame kind of a client request.
pub const KIND_CLIENT_REQUEST: u16 = 32;
/// Frame kind of a reply to one.
pub const KIND_CLIENT_REPLY: u16 = 33;
/// Items one `AppendBatch` may carry.
pub const APPEND_BATCH_MAX: usize = crate::protocol::REQUEST_COMMANDS_MAX as usize;

pub(crate) use wire::{ArchivedClientOp, ArchivedClientRequest};
pub use wire::{ClientOp, ClientRequest, ClientResponse, LogEntry};

/// The formats. rkyv derives archived types beside each, without docs.
#[allow(missing_docs)]
mod wire {
    use super::*;

    /// What a client asks.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum ClientOp {
        /// Append raw bytes to the log (exactly once per (client, seq)).
        Append {
            client: u64,
            seq: u64,
            data: Vec<u8>,
        },
        /// Append each item, in order, as command `(client, seq + i)`: one
        /// request for many commands (exactly once each).
        AppendBatch {
            client: u64,
            seq: u64,
            items: Vec<Vec<u8>>,
        },
        /// A KV write (exactly once per (client, seq)).
        Kv { client: u64, seq: u64, op: KvOp },
        /// A linearizable KV read.
        Get { key: Vec<u8> },
        /// Entries of this node's applied log from `from` (stale reads
        /// allowed: whatever this node has applied).
        ReadLog { from: u64, count: u32 },
        /// Who leads, as this node sees it.
        Status,
    }

    /// A request for one group.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct ClientRequest {
        /// The group (shard) addressed.
        pub group: u32,
        /// The operation.
        pub op: ClientOp,
    }

    /// One applied log entry.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct LogEntry {
        /// Its log index.
        pub index: u64,
        /// Its bytes as appended.
        pub data: Vec<u8>,
    }

    /// The answer.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum ClientResponse {
        /// The append is chosen and applied at `index`.
        Appended { index: u64 },
        /// Each item of an `AppendBatch` is chosen and applied: at its index,
        /// or `None` where an earlier try of the batch applied it already.
        AppendedBatch { indexes: Vec<Option<u64>> },
        /// The KV write is applied at `index`.
        Kv { index: u64, reply: KvReply },
        /// A KV read's value.
        Value(Option<Vec<u8>>),
        /// Applied log entries.
        Entries(Vec<LogEntry>),
        /// This node and who it believes leads.
        Status {
            node: u64,
            leader: Option<u64>,
            leading: bool,
            /// Slots applied (every slot below is chosen and applied here).
            applied: u64,
            /// The highest ballot promised, as (round, node).
            ballot: (u64, u64),
        },
        /// Ask the leader instead. Said too by a leader that stepped down
        /// with the command in flight: it may still be applied, so retry
        /// with the same (client, seq), which the session applies once
        /// (client 0 has no session: its retry may apply twice).
        NotLeader { leader: Option<u64> },
        /// The leader's queue is full: back off and retry.
        Busy,
        /// The client's session was evicted (the table of sessions is
        /// bounded) and this request may repeat one applied before: not
        /// applied. Sent for the first time, none of it was applied: send
        /// it again with sequence numbers from `resume_at` and count on
        /// from there. Sent before, its outcome is unknown.
        SessionExpired { resume_at: u64 },
        /// The request failed; the reason.
        Error(String),
    }
}

impl ClientRequest {
    /// The request's body bytes.
    pub fn encode(&self) -> Vec<u8> {
        to_bytes(self).into_vec()
    }

    /// Parses a body from a client (checked; any bytes may arrive).
    pub fn decode(body: &[u8]) -> Result<ClientRequest, String> {
        from_bytes(body)
    }
}

impl ClientResponse {
    /// The reply's body bytes.
    pub fn encode(&self) -> Vec<u8> {
        to_bytes(self).into_vec()
    }

    /// Parses a reply body.
    pub fn decode(body: &[u8]) -> Result<ClientResponse, String> {
        from_bytes(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_garbage_is_refused() {
        let request = ClientRequest {
            group: 2,
            op: ClientOp::Kv {
                client: 7,
                seq: 1,
                op: KvOp::Delete { key: b"k".to_vec() },
            },
        };
        assert_eq!(ClientRequest::decode(&request.encode()), Ok(request));
        let reply = ClientResponse::Entries(vec![LogEntry {
            index: 4,
            data: b"x".to_vec(),
        }]);
        assert_eq!(ClientResponse::decode(&reply.encode()), Ok(reply));
        assert!(ClientRequest::decode(b"\xff\xff\xff\xff garbage").is_err());
        assert!(ClientRequest::decode(&[]).is_err());
    }
}
