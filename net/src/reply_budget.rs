//! The reply memory of one client port (one core's share): bytes of replies
//! made and not yet written to their sockets, queued or waiting for room in
//! their connection's queue. Past the budget, no connection's requests are
//! read until replies drain: a client that does not read its replies slows
//! everyone's reading, not the node's memory.

use std::cell::Cell;

use crate::notify::Notify;

#[derive(Debug)]
pub(crate) struct ReplyBudget {
    bytes_max: usize,
    used: Cell<usize>,
    /// Moves when bytes are given back.
    freed: Notify,
}

impl ReplyBudget {
    pub fn new(bytes_max: usize) -> ReplyBudget {
        ReplyBudget {
            bytes_max,
            used: Cell::new(0),
            freed: Notify::default(),
        }
    }

    /// Counts `bytes` of a reply made.
    pub fn take(&self, bytes: usize) {
        self.used.set(self.used.get() + bytes);
    }

    /// `bytes` were written, or their connection closed.
    pub fn give_back(&self, bytes: usize) {
        debug_assert!(self.used.get() >= bytes, "more given back than taken");
        self.used.set(self.used.get().saturating_sub(bytes));
        self.freed.notify();
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Waits until the replies in memory are below the budget.
    pub async fn below(&self) {
        loop {
            let epoch = self.freed.epoch();
            if self.used.get() < self.bytes_max {
                return;
            }
            self.freed.changed_since(epoch).await;
        }
    }
}
