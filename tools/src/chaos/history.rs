//! What a chaos run records: every client operation with its invoke and
//! completion time and its result, and each replica's final log. Saved as
//! JSON so a failed run can be checked again (`synod chaos --check FILE`).

use serde::{Deserialize, Serialize};

/// One client operation as the workload issued it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Append `data` to the log.
    Append {
        /// The appended text (unique per run).
        data: String,
    },
    /// Set `key` to `value`; returns the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value (unique per run).
        value: String,
    },
    /// Read `key` (linearizable, read-index).
    Get {
        /// The key.
        key: String,
    },
    /// Set `key` to `new` if it holds `old`.
    Cas {
        /// The key.
        key: String,
        /// The expected value.
        old: String,
        /// The new value (unique per run).
        new: String,
    },
}

impl Call {
    /// The KV key this call touches; `None` for appends.
    pub fn key(&self) -> Option<&str> {
        match self {
            Call::Append { .. } => None,
            Call::Put { key, .. } | Call::Get { key } | Call::Cas { key, .. } => Some(key),
        }
    }
}

/// What an acknowledged operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ret", rename_all = "snake_case")]
pub enum Ret {
    /// The append's flattened log index.
    Appended {
        /// The index.
        index: u64,
    },
    /// The value a put replaced.
    Put {
        /// The previous value.
        previous: Option<String>,
    },
    /// The value a get saw.
    Get {
        /// The value.
        value: Option<String>,
    },
    /// Whether a cas swapped, and the value held after it.
    Cas {
        /// Swapped or not.
        swapped: bool,
        /// The value now held.
        value: Option<String>,
    },
}

/// One operation: `ret` and `complete_us` are `None` when the client gave
/// up (the outcome is unknown: it may or may not have taken effect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client that issued it (one operation at a time per client).
    pub client: u32,
    /// Microseconds since the run started, when the call was sent.
    pub invoke_us: u64,
    /// Microseconds since the run started, when the reply came back.
    pub complete_us: Option<u64>,
    /// The call.
    pub call: Call,
    /// The reply, if acknowledged.
    pub ret: Option<Ret>,
}

impl Op {
    /// An acknowledged operation.
    pub fn ok(client: u32, invoke_us: u64, complete_us: u64, call: Call, ret: Ret) -> Op {
        Op {
            client,
            invoke_us,
            complete_us: Some(complete_us),
            call,
            ret: Some(ret),
        }
    }

    /// An operation whose outcome is unknown.
    pub fn unknown(client: u32, invoke_us: u64, call: Call) -> Op {
        Op {
            client,
            invoke_us,
            complete_us: None,
            call,
            ret: None,
        }
    }
}

/// One replica's applied log at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLog {
    /// The node id.
    pub node: u64,
    /// `(index, data)` in index order.
    pub entries: Vec<(u64, String)>,
}

/// Everything the checker looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Client operations, in invoke order.
    pub ops: Vec<Op>,
    /// The final logs of the replicas that were up at the end.
    pub logs: Vec<ReplicaLog>,
}
