//! synod-client-proto: what a `synod node`'s client port speaks. One rkyv
//! [`ClientRequest`] body per frame of kind [`KIND_CLIENT_REQUEST`] (the
//! request id rides in the frame's `seq`), one [`ClientResponse`] body per
//! request in a frame of kind [`KIND_CLIENT_REPLY`].
//!
//! The node (in the `synod` binary) answers these; `synod client`,
//! `synod status` and the load generator (synod-bench) send them. They
//! live in a crate of their own because the binary depends on the load
//! generator, so the load generator cannot depend on the binary.
#![deny(missing_docs)]

mod client;
mod kv;

pub use client::{
    ArchivedClientOp, ArchivedClientRequest, ClientOp, ClientRequest, ClientResponse, EventKind,
    KeyValue, LogEntry, Member, NodeStatus, WatchEvent,
};
pub use kv::{KvOp, KvReply};

use synod_engine::protocol::{COMMAND_HEADER_BYTES, REQUEST_COMMANDS_MAX};

/// Frame kind of a client request.
pub const KIND_CLIENT_REQUEST: u16 = 32;
/// Frame kind of a reply to one.
pub const KIND_CLIENT_REPLY: u16 = 33;
/// Items one `AppendBatch` may carry: a session's commands of one request
/// enter one slot or none, and the engine takes this many at most.
pub const APPEND_BATCH_MAX: usize = REQUEST_COMMANDS_MAX as usize;
/// Bytes the node's state machine adds to each appended item (its tag,
/// which tells an append from a KV write).
pub const APPEND_TAG_BYTES: usize = 1;

/// Bytes that `items` appends of `item_bytes` each take in a slot's batch,
/// to be held to the node's slot size (`BATCH_BYTES_MAX` of the engine).
pub fn append_batch_bytes(item_bytes: usize, items: usize) -> usize {
    items.saturating_mul(COMMAND_HEADER_BYTES + APPEND_TAG_BYTES + item_bytes)
}
