//! A single-threaded "something changed" signal: glommio executors are
//! single-threaded, so an epoch counter and a waker list are enough.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Waiters read [`Notify::epoch`], check their condition, and if it does not
/// hold wait for the epoch to move; `notify` moves it and wakes them all.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    epoch: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    pub(crate) fn notify(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }

    /// Completes once `notify` has been called after `epoch` was read.
    pub(crate) async fn changed_since(&self, epoch: u64) {
        poll_fn(|cx| {
            if self.epoch.get() != epoch {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
