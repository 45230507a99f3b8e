//! Handing a group's leadership to a named member (`protocol/transfer.rs`):
//! checked where the replica is, then waited for until this node sees the
//! member lead.

use std::time::{Duration, Instant};

use futures_channel::oneshot;
use thiserror::Error;

use super::{GroupHandle, GroupStatus, Inbound};
use crate::protocol::{NodeId, Replica};

/// How long a transfer waits for the member to take over: a Phase 1,
/// normally a few round trips.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(5);

/// Why leadership was not handed over.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TransferError {
    /// This replica does not lead (or is still in its Phase 1): ask the
    /// leader.
    #[error("this node does not lead the group (leader: {leader:?})")]
    NotLeader {
        /// Who it believes leads.
        leader: Option<NodeId>,
    },
    /// The named node is not a voter of the group's configurations.
    #[error("node {} is not a member of the group (a voter)", .0.0)]
    NotAMember(NodeId),
    /// The member did not take over in time (down, cut off, or rebuilding);
    /// the old leader may lead on, or another election may follow.
    #[error("node {} did not take over within {} ms", to.0, waited.as_millis())]
    TimedOut {
        /// The member.
        to: NodeId,
        /// How long this node waited.
        waited: Duration,
    },
    /// The group stopped.
    #[error("the group stopped")]
    Stopped,
}

/// Whether `replica` may hand leadership to `to` now.
pub(super) fn check(replica: &Replica, to: NodeId) -> Result<(), TransferError> {
    if !replica.schedule().votes_anywhere(to) {
        return Err(TransferError::NotAMember(to));
    }
    let status = replica.status();
    if !status.leading {
        return Err(TransferError::NotLeader {
            leader: status.leader,
        });
    }
    Ok(())
}

impl GroupHandle {
    /// Hands leadership to member `to` and waits until this node sees it
    /// lead (at once if it is this node and it leads). `status` is the
    /// group's, on this core.
    pub async fn transfer_leadership(
        &self,
        status: &GroupStatus,
        to: NodeId,
    ) -> Result<(), TransferError> {
        let (tx, rx) = oneshot::channel();
        if self
            .inputs
            .send(Inbound::TransferLeadership(to, tx))
            .await
            .is_err()
        {
            return Err(TransferError::Stopped);
        }
        rx.await.map_err(|_| TransferError::Stopped)??;
        let start = Instant::now();
        loop {
            let view = status.view();
            if view.leader == Some(to) {
                return Ok(());
            }
            if start.elapsed() >= TRANSFER_WAIT {
                return Err(TransferError::TimedOut {
                    to,
                    waited: start.elapsed(),
                });
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }
}
