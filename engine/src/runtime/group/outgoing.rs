//! A snapshot transfer under way to one peer, shared by the group task
//! (which starts transfers and moves them when the peer asks) and the
//! transfer's own task (which sends the chunks).

use std::cell::Cell;

use crate::protocol::Slot;

/// A snapshot transfer under way to one peer.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The snapshot's slot.
    pub(super) upto: Slot,
    /// The next byte to send: the peer's ask for the rest moves it.
    pub(super) next: Cell<u64>,
    /// A newer snapshot replaced this one: stop.
    pub(super) superseded: Cell<bool>,
}
