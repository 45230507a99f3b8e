//! The request and reply bodies.

use crate::kv::{KvOp, KvReply};
use synod_engine::archive::{from_bytes, to_bytes};

pub use wire::{
    ArchivedClientOp, ArchivedClientRequest, ClientOp, ClientRequest, ClientResponse, EventKind,
    KeyValue, LogEntry, Member, NodeStatus, WatchEvent,
};

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
        /// A linearizable read of the live keys starting with `prefix`, in
        /// key order, after `after` if given (the last key of the page
        /// before), at most `limit` of them and about 512 KiB.
        GetPrefix {
            prefix: Vec<u8>,
            after: Option<Vec<u8>>,
            limit: u32,
        },
        /// The KV changes to keys starting with `prefix` at log index
        /// `from` and after, as this node applied them; if there are none
        /// yet, waits up to `wait_ms` for one. `from` u64::MAX: from the
        /// next change on (the answer's `next` says where that is).
        Watch {
            prefix: Vec<u8>,
            from: u64,
            /// Changes at `from` already seen (an answer may stop within
            /// one command's changes): the answer's `next_skip`.
            skip: u32,
            wait_ms: u32,
        },
        /// Who leads, and this node's commit and applied points (answered
        /// with `ClientResponse::NodeStatus`; `Status` keeps its reply).
        NodeStatus,
        /// Hand the group's leadership to node `to` (ask the leader);
        /// answered `LeaderMoved` once this node sees it lead.
        TransferLeader { to: u64 },
        /// The group's members, from its leader (answered `Members`).
        Members,
        /// Make node `id`, reached by its peers at `addr`, a member: a
        /// voter (a learner until it has caught up) or a learner. Answered
        /// `Members` once it is in force, within `wait_ms`.
        AddMember {
            id: u64,
            addr: String,
            voter: bool,
            wait_ms: u32,
        },
        /// Remove member `id`. Answered `Members` (the new configuration)
        /// once it is in force at a majority of its voters, within `wait_ms`.
        RemoveMember { id: u64, wait_ms: u32 },
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

    /// A key and its value.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct KeyValue {
        pub key: Vec<u8>,
        pub value: Vec<u8>,
    }

    /// What happened to a key.
    #[derive(
        rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq,
    )]
    pub enum EventKind {
        /// Set (put, a swap that happened, a put with a lease).
        Put,
        /// Deleted, or gone with its revoked lease.
        Delete,
        /// Gone because its lifetime or its lease's ended.
        Expire,
    }

    /// One change to one key, at the log index of the command that made it.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct WatchEvent {
        pub index: u64,
        pub kind: EventKind,
        pub key: Vec<u8>,
        /// The new value of a put; `None` otherwise.
        pub value: Option<Vec<u8>>,
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
        /// A prefix read's keys and values; `more` if its bounds cut it
        /// short (ask again after the last key).
        Pairs { pairs: Vec<KeyValue>, more: bool },
        /// A watch's changes, in log order; ask again from `next`.
        /// Ask again from `next`, skipping `next_skip` changes there.
        Events {
            events: Vec<WatchEvent>,
            next: u64,
            next_skip: u32,
        },
        /// The changes before log index `first` are no longer kept here:
        /// read the state (`GetPrefix`) and watch from a later index.
        Compacted { first: u64 },
        /// The answer to `ClientOp::NodeStatus`. Boxed: a variant larger
        /// than the largest before it would lengthen every reply's bytes,
        /// which older clients could no longer read.
        NodeStatus(Box<NodeStatus>),
        /// Leadership moved: `leader` leads the group now.
        LeaderMoved { leader: u64 },
        /// The group's members, as its leader knows them.
        Members { leader: u64, members: Vec<Member> },
    }

    /// One member of a group.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct Member {
        pub id: u64,
        /// Where its peers reach it (its `--listen`).
        pub addr: String,
        /// Whether it votes (every member does until learners exist).
        pub voter: bool,
    }

    /// A node's view of a group, with its commit point.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct NodeStatus {
        pub node: u64,
        pub leader: Option<u64>,
        pub leading: bool,
        /// Slots applied (every slot below is chosen and applied here).
        pub applied: u64,
        /// Every slot below is chosen, as this node knows.
        pub commit: u64,
        /// The highest ballot promised, as (round, node).
        pub ballot: (u64, u64),
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

    /// Parses a reply body (checked; any bytes may arrive).
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

    /// Requests and replies as the engine encoded them before this crate
    /// held their format: clients and scripts out there send and parse
    /// exactly these bytes.
    #[test]
    fn the_bytes_on_the_wire_are_those_clients_already_speak() {
        let append = ClientRequest {
            group: 1,
            op: ClientOp::Append {
                client: 2,
                seq: 3,
                data: b"hi".to_vec(),
            },
        };
        let batch = ClientRequest {
            group: 0,
            op: ClientOp::AppendBatch {
                client: 5,
                seq: 6,
                items: vec![b"a".to_vec(), b"bcdefghijklmnop".to_vec()],
            },
        };
        let kv = ClientResponse::Kv {
            index: 9,
            reply: KvReply::Done(Some(b"old".to_vec())),
        };
        let status = ClientResponse::Status {
            node: 1,
            leader: Some(2),
            leading: false,
            applied: 77,
            ballot: (3, 2),
        };
        for (encoded, expected) in [
            (append.encode(), WIRE_APPEND),
            (batch.encode(), WIRE_APPEND_BATCH),
            (kv.encode(), WIRE_KV_REPLY),
            (status.encode(), WIRE_STATUS),
        ] {
            let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, expected);
        }
        assert_eq!(ClientRequest::decode(&unhex(WIRE_APPEND)), Ok(append));
        assert_eq!(ClientResponse::decode(&unhex(WIRE_KV_REPLY)), Ok(kv));
    }

    /// The newer status op and reply decode as themselves; the old `Status`
    /// reply's bytes are pinned above.
    #[test]
    fn the_node_status_op_and_reply_round_trip() {
        let request = ClientRequest {
            group: 0,
            op: ClientOp::NodeStatus,
        };
        assert_eq!(ClientRequest::decode(&request.encode()), Ok(request));
        let reply = ClientResponse::NodeStatus(Box::new(NodeStatus {
            node: 3,
            leader: None,
            leading: false,
            applied: 10,
            commit: 12,
            ballot: (4, 1),
        }));
        assert_eq!(ClientResponse::decode(&reply.encode()), Ok(reply));
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    const WIRE_APPEND: &str = "68690000000000000100000000000000000000000000000002000000000000000300000000000000d8ffffff020000000000000000000000000000000000000000000000000000000000000000000000";
    const WIRE_APPEND_BATCH: &str = "6162636465666768696a6b6c6d6e6f70f0ffffff01000000e9ffffff0f0000000000000000000000010000000000000005000000000000000600000000000000d0ffffff020000000000000000000000000000000000000000000000000000000000000000000000";
    const WIRE_KV_REPLY: &str = "6f6c640000000000020000000000000009000000000000000000000001000000e0ffffff030000000000000000000000000000000000000000000000000000000000000000000000";
    const WIRE_STATUS: &str = "050000000000000001000000000000000100000000000000020000000000000000000000000000004d0000000000000003000000000000000200000000000000";
}
