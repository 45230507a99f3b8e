//! What a client is told of a proposal or a read that the group answered:
//! the response made from the machine's reply, or a refusal, or where and
//! when to retry.

use bytes::Bytes;
use synod_client_proto::ClientResponse;
use synod_engine::protocol::Refusal;
use synod_engine::runtime::{ProposeOutcome, ReadOutcome};

use crate::node::client_error::ClientError;

/// The response to a proposal: `applied` makes it from the log index and
/// the machine's reply; anything else is a refusal, or where to retry.
pub(super) fn proposed(
    outcome: ProposeOutcome,
    applied: impl FnOnce(u64, Bytes) -> ClientResponse,
) -> ClientResponse {
    match outcome {
        ProposeOutcome::Applied { index, reply } => applied(index.0, reply),
        ProposeOutcome::Refused(reason) => refused(reason),
        ProposeOutcome::Stale => ClientError::Stale.into(),
        ProposeOutcome::Stopped => ClientError::GroupStopped.into(),
        ProposeOutcome::Expired { resume_at } => ClientResponse::SessionExpired { resume_at },
        // The client retries where the group is led now, with the same
        // sequence numbers: the session applies what was chosen once.
        ProposeOutcome::InDoubt { leader } => refused(Refusal::NotLeader(leader)),
    }
}

/// The response to a read: `value` makes it from the machine's answer.
pub(super) fn read(
    outcome: ReadOutcome,
    value: impl FnOnce(Bytes) -> ClientResponse,
) -> ClientResponse {
    match outcome {
        ReadOutcome::Value(bytes) => value(bytes),
        ReadOutcome::Refused(reason) => refused(reason),
        ReadOutcome::Stopped => ClientError::GroupStopped.into(),
    }
}

/// What a client is told of a refusal: where to send it instead, to back
/// off, or that it can never fit.
fn refused(reason: Refusal) -> ClientResponse {
    match reason {
        Refusal::NotLeader(leader) => ClientResponse::NotLeader {
            leader: leader.map(|l| l.0),
        },
        Refusal::Busy => ClientResponse::Busy,
        Refusal::TooLarge => ClientError::TooLarge.into(),
        Refusal::ReservedClient => ClientError::ReservedClient.into(),
    }
}
