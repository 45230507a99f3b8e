//! Appends: one command, or a batch of a session's consecutive commands.

use synod_client_proto::{append_batch_bytes, ClientResponse, APPEND_BATCH_MAX};
use synod_engine::protocol::{ClientId, Command};
use synod_engine::runtime::client_port::LocalGroup;
use synod_engine::runtime::node::BATCH_BYTES_MAX;
use synod_engine::runtime::ProposeOutcome;

use super::outcome::proposed;
use crate::node::client_error::ClientError;
use crate::node::machine::{append_command, append_commands};

/// Proposes one append as `(client, seq)`.
pub(super) async fn append(
    group: LocalGroup<'_>,
    client: ClientId,
    seq: u64,
    data: &[u8],
) -> ClientResponse {
    let outcome = group.propose(client, seq, append_command(data)).await;
    proposed(outcome, |index, _| ClientResponse::Appended { index })
}

/// Proposes a batch's items as one client's consecutive commands. Any item
/// refused makes the whole answer that refusal: the client retries the
/// batch with the same sequence numbers, and what was applied stays applied
/// once (the session answers it as older than its last).
pub(super) async fn append_batch<T: AsRef<[u8]>>(
    group: LocalGroup<'_>,
    client: ClientId,
    seq: u64,
    items: &[T],
) -> ClientResponse {
    if let Err(refused) = check_batch(seq, items) {
        return refused.into();
    }
    let commands = append_commands(items)
        .into_iter()
        .enumerate()
        .map(|(i, data)| Command {
            client,
            seq: seq + i as u64,
            data,
        })
        .collect();
    let mut indexes = Vec::with_capacity(items.len());
    for outcome in group.propose_many(commands).await {
        match outcome {
            ProposeOutcome::Applied { index, .. } => indexes.push(Some(index.0)),
            ProposeOutcome::Stale => indexes.push(None),
            other => return proposed(other, |index, _| ClientResponse::Appended { index }),
        }
    }
    ClientResponse::AppendedBatch { indexes }
}

/// Refuses a batch of no items or too many, whose sequence numbers would
/// overflow, or whose commands would not fit one slot.
fn check_batch<T: AsRef<[u8]>>(seq: u64, items: &[T]) -> Result<(), ClientError> {
    if items.is_empty() || items.len() > APPEND_BATCH_MAX {
        return Err(ClientError::BatchItems);
    }
    if seq.checked_add(items.len() as u64 - 1).is_none() {
        return Err(ClientError::SequenceOverflow);
    }
    let bytes: usize = items
        .iter()
        .map(|item| append_batch_bytes(item.as_ref().len(), 1))
        .sum();
    if bytes > BATCH_BYTES_MAX as usize {
        return Err(ClientError::BatchTooLarge { bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_that_cannot_be_one_request_are_refused_before_proposing() {
        let one: [&[u8]; 1] = [b"x"];
        assert_eq!(check_batch(1, &one), Ok(()));
        assert_eq!(check_batch::<&[u8]>(1, &[]), Err(ClientError::BatchItems));
        let too_many = vec![&b""[..]; APPEND_BATCH_MAX + 1];
        assert_eq!(check_batch(1, &too_many), Err(ClientError::BatchItems));
        let two: [&[u8]; 2] = [b"x", b"y"];
        assert_eq!(
            check_batch(u64::MAX, &two),
            Err(ClientError::SequenceOverflow)
        );
        assert_eq!(check_batch(u64::MAX - 1, &two), Ok(()));
        let large = vec![0u8; BATCH_BYTES_MAX as usize];
        let refused = check_batch(1, &[large]).unwrap_err();
        assert!(matches!(refused, ClientError::BatchTooLarge { .. }));
        assert!(refused.to_string().contains("one slot holds"), "{refused}");
    }
}
