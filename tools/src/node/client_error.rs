//! Why the node refused or failed a client's request. Clients see the text
//! (`ClientResponse::Error`); every refusal is made here, by its variant.

use synod_client_proto::{ClientResponse, APPEND_BATCH_MAX};
use synod_engine::runtime::node::{ForwardError, BATCH_BYTES_MAX};
use thiserror::Error;

/// A request refused, or failed, by the node's client port or its machine.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ClientError {
    /// The frame is not a client request.
    #[error("unknown request kind {0}")]
    UnknownKind(u16),
    /// The body is not a `ClientRequest` (the check's own words).
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    /// The request could not reach its group (no such group, or its core
    /// has stopped).
    #[error(transparent)]
    Unreachable(#[from] ForwardError),
    /// An `AppendBatch` with no items, or too many.
    #[error("a batch holds 1 to {APPEND_BATCH_MAX} items")]
    BatchItems,
    /// A batch whose last sequence number would pass `u64::MAX`.
    #[error("sequence numbers overflow")]
    SequenceOverflow,
    /// A batch whose commands do not fit one slot.
    #[error("a batch's commands take {bytes} bytes; one slot holds {BATCH_BYTES_MAX}")]
    BatchTooLarge {
        /// The bytes its commands take in a slot.
        bytes: usize,
    },
    /// The command repeats one older than the session's last.
    #[error("sequence number older than the session's last")]
    Stale,
    /// The group stopped before answering.
    #[error("group stopped")]
    GroupStopped,
    /// The command, or the request, does not fit one slot.
    #[error("command, or request, too large for one slot")]
    TooLarge,
    /// The client id is the one reserved for configuration entries.
    #[error("client id {} is reserved", u64::MAX)]
    ReservedClient,
    /// The state machine answered with bytes that are not its reply.
    #[error("malformed reply: {0}")]
    MalformedReply(String),
    /// The state machine answered a read with another kind of reply.
    #[error("unexpected reply {0}")]
    UnexpectedReply(String),
    /// A command only the leader's lease clock proposes.
    #[error("a tick moves the leader's clock: only the leader proposes it")]
    LeaderOnly,
    /// The state machine got a query it does not know (the port makes
    /// every query: this is a bug, answered rather than panicked on).
    #[error("malformed query")]
    MalformedQuery,
}

impl From<ClientError> for ClientResponse {
    fn from(error: ClientError) -> ClientResponse {
        ClientResponse::Error(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients and scripts read these texts: they are what the node said
    /// before its refusals had types.
    #[test]
    fn refusals_say_what_they_always_said() {
        let cases = [
            (
                ClientError::UnknownKind(7),
                "unknown request kind 7".to_string(),
            ),
            (
                ClientError::MalformedRequest("too short".into()),
                "malformed request: too short".into(),
            ),
            (
                ForwardError::NoGroup {
                    group: 9,
                    groups: 4,
                }
                .into(),
                "no group 9 (this node hosts 4)".into(),
            ),
            (
                ForwardError::CoreStopped { core: 1 }.into(),
                "core 1 stopped".into(),
            ),
            (
                ForwardError::Dropped { core: 1 }.into(),
                "core 1 dropped the request".into(),
            ),
            (
                ClientError::BatchItems,
                format!("a batch holds 1 to {APPEND_BATCH_MAX} items"),
            ),
            (
                ClientError::SequenceOverflow,
                "sequence numbers overflow".into(),
            ),
            (
                ClientError::BatchTooLarge { bytes: 300_000 },
                format!("a batch's commands take 300000 bytes; one slot holds {BATCH_BYTES_MAX}"),
            ),
            (
                ClientError::Stale,
                "sequence number older than the session's last".into(),
            ),
            (ClientError::GroupStopped, "group stopped".into()),
            (
                ClientError::TooLarge,
                "command, or request, too large for one slot".into(),
            ),
            (ClientError::MalformedQuery, "malformed query".into()),
        ];
        for (error, text) in cases {
            assert_eq!(ClientResponse::from(error), ClientResponse::Error(text));
        }
    }
}
