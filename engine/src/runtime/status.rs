//! What a group looks like from one node at one moment: plain data, read by
//! the embedder, the metrics and the client port.

use crate::protocol::{Ballot, LogIndex, NodeId, Slot};

/// A group's state as one node sees it, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// Slots applied to the state machine (those below this one).
    pub applied: Slot,
    /// The log index of the next command to apply (a subscription from it
    /// streams what is applied from now on).
    pub next_index: LogIndex,
    /// Every slot below is chosen, as this replica knows.
    pub commit: Slot,
    /// Whether this replica leads (Phase 1 done).
    pub leading: bool,
    /// Who it believes leads.
    pub leader: Option<NodeId>,
    /// The highest ballot it promised.
    pub promised: Ballot,
    /// The slot of its latest durable snapshot (0: none).
    pub snapshot: Slot,
}
