//! Client sessions: a retried command is applied once.
//!
//! Each session has at most one command outstanding (as in the Raft
//! dissertation's sessions): the state machine remembers, per client, the last
//! sequence number applied and its reply. A command with that sequence again
//! is a retry and gets the remembered reply; an older one is stale.

use std::collections::BTreeMap;

use super::types::{ClientId, LogIndex};

/// What to do with a command, given its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOutcome<'a, R> {
    /// Not seen before: apply it.
    Fresh,
    /// A retry of the last applied command: answer with its reply.
    Duplicate {
        /// Where it was applied.
        index: LogIndex,
        /// What it returned.
        reply: &'a R,
    },
    /// Older than the last applied command: the client moved on; ignore.
    Stale,
}

/// The last applied command per client. Deterministic order, so snapshots of
/// it are identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions<R> {
    last: BTreeMap<ClientId, (u64, LogIndex, R)>,
}

impl<R> Default for Sessions<R> {
    fn default() -> Self {
        Sessions {
            last: BTreeMap::new(),
        }
    }
}

impl<R> Sessions<R> {
    /// Classifies `(client, seq)`. Client 0 has no session: always fresh.
    pub fn check(&self, client: ClientId, seq: u64) -> SessionOutcome<'_, R> {
        if client == ClientId(0) {
            return SessionOutcome::Fresh;
        }
        match self.last.get(&client) {
            Some((last, index, reply)) if *last == seq => SessionOutcome::Duplicate {
                index: *index,
                reply,
            },
            Some((last, _, _)) if *last > seq => SessionOutcome::Stale,
            _ => SessionOutcome::Fresh,
        }
    }

    /// Remembers that `(client, seq)` was applied at `index` with `reply`.
    pub fn record(&mut self, client: ClientId, seq: u64, index: LogIndex, reply: R) {
        if client != ClientId(0) {
            self.last.insert(client, (seq, index, reply));
        }
    }

    /// Sessions remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// True when no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Every session in client order, `(client, seq, index, reply)`: what a
    /// snapshot keeps.
    pub fn iter(&self) -> impl Iterator<Item = (ClientId, u64, LogIndex, &R)> {
        self.last
            .iter()
            .map(|(client, (seq, index, reply))| (*client, *seq, *index, reply))
    }
}

impl<R> FromIterator<(ClientId, u64, LogIndex, R)> for Sessions<R> {
    fn from_iter<I: IntoIterator<Item = (ClientId, u64, LogIndex, R)>>(sessions: I) -> Self {
        let mut out = Sessions::default();
        for (client, seq, index, reply) in sessions {
            out.record(client, seq, index, reply);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_get_the_first_reply_and_old_commands_are_stale() {
        let mut sessions = Sessions::default();
        let c = ClientId(7);
        assert_eq!(sessions.check(c, 1), SessionOutcome::Fresh);
        sessions.record(c, 1, LogIndex(10), "one");
        assert_eq!(
            sessions.check(c, 1),
            SessionOutcome::Duplicate {
                index: LogIndex(10),
                reply: &"one"
            }
        );
        assert_eq!(sessions.check(c, 2), SessionOutcome::Fresh);
        sessions.record(c, 2, LogIndex(11), "two");
        assert_eq!(sessions.check(c, 1), SessionOutcome::Stale);
        sessions.record(ClientId(0), 5, LogIndex(12), "anon");
        assert_eq!(sessions.check(ClientId(0), 5), SessionOutcome::Fresh);
        assert_eq!(sessions.len(), 1);
    }
}
