//! The store's log and snapshot formats. rkyv derives archived and resolver
//! types beside each; they are an implementation detail without docs.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use synod_client_proto::KvOp;

/// A command as it travels in the log: an operation and the leader's clock.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KvCommand {
    /// Milliseconds on the proposing leader's clock.
    pub now_ms: u64,
    /// The operation.
    pub op: KvOp,
}

/// The snapshot as it is written, after [`STATE_MAGIC`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default)]
pub struct KvState {
    pub now_ms: u64,
    /// One past the log index of the last command applied.
    pub next_index: u64,
    pub entries: Vec<StoredEntry>,
    pub leases: Vec<StoredLease>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
pub struct StoredEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Expiry in leader ms.
    pub expiry: Option<u64>,
    pub lease: Option<u64>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
pub struct StoredLease {
    pub id: u64,
    pub ttl_ms: u64,
    pub deadline: u64,
}

/// Marks a snapshot in the current format. Snapshots written before leases
/// existed ([`KvStateBeforeLeases`]) carry no mark: their rkyv bytes start
/// with a key's or a value's bytes.
pub const STATE_MAGIC: &[u8; 8] = b"synodkv2";

/// The snapshot format before leases: key → (value, expiry in leader ms).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default)]
pub struct KvStateBeforeLeases {
    pub now_ms: u64,
    pub entries: BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
}
