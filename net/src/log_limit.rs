//! Log lines that strangers can cause, a line a second at most: counted
//! always, logged so that they cannot fill the log.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Lets a line through when a second has passed since the last one.
#[derive(Debug, Default)]
pub(crate) struct OncePerSecond {
    last: Cell<Option<Instant>>,
}

impl OncePerSecond {
    /// Whether to log now (and, if so, the next second starts now).
    pub(crate) fn due(&self) -> bool {
        let now = Instant::now();
        let due = self
            .last
            .get()
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            self.last.set(Some(now));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_passes_and_the_next_within_the_second_does_not() {
        let limit = OncePerSecond::default();
        assert!(limit.due());
        assert!(!limit.due());
    }
}
