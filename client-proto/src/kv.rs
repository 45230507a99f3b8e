//! The KV store's operations and replies as clients send and see them (the
//! store itself runs in the node).

use bytes::Bytes;

use synod_engine::archive::{from_bytes, to_bytes};

pub use wire::{KvOp, KvReply};

/// The formats. rkyv derives archived and resolver types beside each; they
/// are an implementation detail without docs of their own.
#[allow(missing_docs)]
mod wire {
    /// One operation on the store.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum KvOp {
        /// Sets `key` to `value`, expiring after `ttl_ms` if given.
        Put {
            /// Key.
            key: Vec<u8>,
            /// Value.
            value: Vec<u8>,
            /// Lifetime in milliseconds of leader time.
            ttl_ms: Option<u64>,
        },
        /// Sets `key` to `new` only if it currently holds `old` (None: absent).
        Cas {
            /// Key.
            key: Vec<u8>,
            /// Expected value.
            old: Option<Vec<u8>>,
            /// New value.
            new: Vec<u8>,
        },
        /// Removes `key`.
        Delete {
            /// Key.
            key: Vec<u8>,
        },
        /// Grants a lease that lives `ttl_ms` past its grant and each
        /// keepalive, by the leader's clock; its id is the command's index.
        LeaseGrant {
            /// Lifetime in milliseconds.
            ttl_ms: u64,
        },
        /// Restarts lease `id`'s lifetime.
        LeaseKeepAlive {
            /// The lease.
            id: u64,
        },
        /// Ends lease `id` now, deleting its keys.
        LeaseRevoke {
            /// The lease.
            id: u64,
        },
        /// Sets `key` to `value`, attached to lease `lease`: the key goes
        /// when the lease does.
        PutLease {
            /// Key.
            key: Vec<u8>,
            /// Value.
            value: Vec<u8>,
            /// The lease.
            lease: u64,
        },
        /// The leader's clock moved: expire what is due. With `renew`
        /// (the first tick of a new leader) every lease's lifetime starts
        /// again, so no lease ends early for a leader change.
        Tick {
            /// Restart every lease's lifetime.
            renew: bool,
        },
    }

    /// What an operation returned.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum KvReply {
        /// Put or Delete done; the previous value, if any.
        Done(Option<Vec<u8>>),
        /// Cas outcome and the value now held.
        Cas {
            /// Whether the swap happened.
            swapped: bool,
            /// The current value.
            current: Option<Vec<u8>>,
        },
        /// A read's result.
        Value(Option<Vec<u8>>),
        /// The command could not be decoded.
        Invalid(String),
        /// A lease granted or kept alive, and its lifetime.
        Lease {
            /// Its id.
            id: u64,
            /// Its lifetime in milliseconds.
            ttl_ms: u64,
        },
        /// There is no lease `id` (never granted, expired or revoked).
        NoLease {
            /// The lease asked for.
            id: u64,
        },
        /// The lease is revoked and its keys deleted.
        Revoked,
    }
}

impl KvReply {
    /// The reply's bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(to_bytes(self).into_vec())
    }

    /// Parses reply bytes (checked: any bytes may arrive).
    pub fn decode(bytes: &[u8]) -> Result<KvReply, String> {
        from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_garbage_is_refused() {
        let reply = KvReply::Cas {
            swapped: false,
            current: Some(b"v".to_vec()),
        };
        assert_eq!(KvReply::decode(&reply.encode()), Ok(reply));
        assert!(KvReply::decode(b"\xff\xff\xff\xff garbage").is_err());
    }
}
