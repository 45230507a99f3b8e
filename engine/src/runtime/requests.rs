//! Requests an embedder's [`NodeHandle`](super::node::NodeHandle) sends
//! from its own thread to the core of a group, and their answering there.

use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};

use super::answering::answer_each;
use super::group::{
    ChangeError, CommitStream, Groups, MemberChange, MembershipView, ProposeOutcome, ReadOutcome,
    StatusView, SubscribeError, TransferError,
};
use crate::protocol::{Command, LogIndex, NodeId};

/// Requests a core takes from other threads.
pub(super) enum CoreRequest {
    /// Propose a command to a group of this core.
    Propose {
        group: u32,
        command: Command,
        reply: oneshot::Sender<ProposeOutcome>,
    },
    /// A linearizable read, or a local one (stale reads allowed).
    Read {
        group: u32,
        query: Bytes,
        local: bool,
        reply: oneshot::Sender<ReadOutcome>,
    },
    /// The group's status as it stands.
    Status {
        group: u32,
        reply: oneshot::Sender<Option<StatusView>>,
    },
    /// The group's configuration as it stands.
    Membership {
        group: u32,
        reply: oneshot::Sender<Option<MembershipView>>,
    },
    /// Hand a group's leadership to a member.
    TransferLeadership {
        group: u32,
        to: NodeId,
        reply: oneshot::Sender<Result<(), TransferError>>,
    },
    /// Change a group's members.
    ChangeMembers {
        group: u32,
        change: MemberChange,
        within: Duration,
        reply: oneshot::Sender<Result<MembershipView, ChangeError>>,
    },
    /// Stream a group's commits to this channel.
    Subscribe {
        group: u32,
        from: LogIndex,
        reply: oneshot::Sender<Result<CommitStream, SubscribeError>>,
    },
}

/// Requests queued towards one core at most: callers wait beyond it.
pub(super) const CORE_REQUESTS_MAX: usize = 1024;

/// Answers requests from other threads for this core's groups.
pub(super) fn serve_requests(
    groups: Groups,
    requests: mpsc::Receiver<CoreRequest>,
) -> glommio::Task<()> {
    answer_each(requests, move |request| {
        let groups = groups.clone();
        async move { carry_out(&groups, request).await }
    })
}

/// Carries out one request; a group not on this core is answered as
/// stopped (or absent), never with a panic.
async fn carry_out(groups: &Groups, request: CoreRequest) {
    match request {
        CoreRequest::Propose {
            group,
            command,
            reply,
        } => {
            let outcome = match groups.get(&group) {
                Some((handle, _)) => {
                    handle
                        .propose(command.client, command.seq, command.data)
                        .await
                }
                None => ProposeOutcome::Stopped,
            };
            let _ = reply.send(outcome);
        }
        CoreRequest::Read {
            group,
            query,
            local,
            reply,
        } => {
            let outcome = match groups.get(&group) {
                Some((handle, _)) if local => handle.read_local(query).await,
                Some((handle, _)) => handle.read(query).await,
                None => ReadOutcome::Stopped,
            };
            let _ = reply.send(outcome);
        }
        CoreRequest::Status { group, reply } => {
            let _ = reply.send(groups.get(&group).map(|(_, status)| status.view()));
        }
        CoreRequest::Membership { group, reply } => {
            let view = groups
                .get(&group)
                .and_then(|(_, status)| status.membership());
            let _ = reply.send(view);
        }
        CoreRequest::TransferLeadership { group, to, reply } => {
            let outcome = match groups.get(&group) {
                Some((handle, status)) => handle.transfer_leadership(status, to).await,
                None => Err(TransferError::Stopped),
            };
            let _ = reply.send(outcome);
        }
        CoreRequest::ChangeMembers {
            group,
            change,
            within,
            reply,
        } => {
            let outcome = match groups.get(&group) {
                Some((handle, status)) => handle.change_members(status, change, within).await,
                None => Err(ChangeError::Stopped),
            };
            let _ = reply.send(outcome);
        }
        CoreRequest::Subscribe { group, from, reply } => {
            let stream = match groups.get(&group) {
                Some((handle, _)) => handle.subscribe(from).await,
                None => Err(SubscribeError::NoGroup(group)),
            };
            let _ = reply.send(stream);
        }
    }
}
