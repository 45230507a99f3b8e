//! Client sessions: a retried command is applied once, in a bounded table.
//!
//! Each session has at most one request outstanding (as in the Raft
//! dissertation's sessions): the state machine remembers, per client, the
//! last sequence number applied and its reply. A command with that sequence
//! again is a retry and gets the remembered reply; an older one is stale.
//!
//! The table keeps at most `capacity` sessions: recording one more evicts the
//! session whose last command is oldest in the log. Every replica applies the
//! same commands in the same order, so every replica evicts the same ones.
//! Nothing is kept per evicted client, so an evicted session's retries are
//! recognised by tying sequence numbers to the log:
//!
//! - A session starts at sequence 1, or at the `resume_at` of an
//!   [`SessionOutcome::Expired`] (a log index), and adds one per command;
//!   a request carries at most `request_commands_max` commands, and the next
//!   request goes out once the last is answered. So every command is
//!   applied at a log index at least its sequence number.
//! - Evicting a session raises `evicted_through` to its last index, so
//!   every command it applied has a sequence number at most one above it
//!   (the log's first index is 0). A command of a client not in the table
//!   at or below `evicted_through + 1` may be such a retry and is refused as
//!   expired, never applied; above it, it cannot be one, and is fresh.
//!   A tombstone refuses every sequence number below its own index.
//! - A refusal leaves a tombstone session for the client reaching to the
//!   end of the longest request the refused command can begin, so the rest
//!   of that request is refused too, even in a later slot: as far as expiry
//!   goes, a request's first command decides for all of it. `resume_at` is
//!   the refused command's own index: above the tombstone (the table holds
//!   `capacity` sessions, more than a request's commands, at distinct
//!   indexes above `evicted_through`) and below where the client's next
//!   command will be applied.

use std::collections::BTreeMap;

use super::types::{ClientId, LogIndex};

/// Sessions a group keeps.
pub const SESSIONS_MAX: usize = 1 << 16;

/// Commands one request of a session may carry (a client batch).
pub const REQUEST_COMMANDS_MAX: u64 = 4096;

/// Both bounds in one number, `SESSIONS_MAX` in the high 32 bits and
/// `REQUEST_COMMANDS_MAX` in the low. Replicas must agree on both: with
/// another table size they evict other sessions, refuse other commands as
/// expired, and their state machines part. Peers compare it at the
/// handshake and snapshots record it.
pub const SESSION_BOUNDS: u64 = pack_session_bounds(SESSIONS_MAX as u64, REQUEST_COMMANDS_MAX);

/// Session bounds packed as [`SESSION_BOUNDS`] packs this build's.
pub const fn pack_session_bounds(sessions_max: u64, request_commands_max: u64) -> u64 {
    (sessions_max << 32) | request_commands_max
}

/// The two bounds packed in a [`SESSION_BOUNDS`]-style number, for messages.
pub fn describe_session_bounds(bounds: u64) -> String {
    format!(
        "{} sessions of up to {} commands a request",
        bounds >> 32,
        bounds & u64::from(u32::MAX)
    )
}

/// What to do with a command, given its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOutcome<R> {
    /// Not seen before: apply it, then [`Sessions::record`] it.
    Fresh,
    /// A retry of the last applied command: answer with its reply.
    Duplicate {
        /// Where it was applied.
        index: LogIndex,
        /// What it returned.
        reply: R,
    },
    /// Older than the last applied command: the client moved on; ignore.
    Stale,
    /// The session was evicted, and this command may be the retry of one
    /// applied before: not applied. A client that sent it for the first time
    /// (and so knows none of its request was applied) sends it again as
    /// sequence `resume_at` and counts on from there; one that had sent it
    /// before cannot know whether it was applied.
    Expired {
        /// Where the session may start again.
        resume_at: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session<R> {
    last_seq: u64,
    index: LogIndex,
    /// `None`: a tombstone, refusing `last_seq` and below as expired.
    reply: Option<R>,
}

/// The last applied command per client, at most `capacity` of them.
/// Deterministic order, so snapshots of it are identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions<R> {
    by_client: BTreeMap<ClientId, Session<R>>,
    /// Each session by the index of its last command: oldest first.
    by_index: BTreeMap<LogIndex, ClientId>,
    capacity: usize,
    request_commands_max: u64,
    /// The last index of the newest evicted session, once one was.
    evicted_through: Option<LogIndex>,
}

impl<R: Clone> Default for Sessions<R> {
    fn default() -> Self {
        Sessions::with_capacity(SESSIONS_MAX, REQUEST_COMMANDS_MAX)
    }
}

/// One session as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord<R> {
    /// Whose.
    pub client: ClientId,
    /// The last sequence number applied (or refused, for a tombstone).
    pub last_seq: u64,
    /// The log index of that command.
    pub index: LogIndex,
    /// Its reply; `None` for a tombstone.
    pub reply: Option<R>,
}

impl<R: Clone> Sessions<R> {
    /// An empty table keeping at most `capacity` sessions, for requests of
    /// at most `request_commands_max` commands. Every replica of a group must
    /// use the same two numbers; `capacity` is raised to one more than the
    /// request bound if below (`resume_at` must clear a tombstone).
    pub fn with_capacity(capacity: usize, request_commands_max: u64) -> Sessions<R> {
        let request_commands_max = request_commands_max.max(1);
        Sessions {
            by_client: BTreeMap::new(),
            by_index: BTreeMap::new(),
            capacity: capacity.max((request_commands_max as usize).saturating_add(1)),
            request_commands_max,
            evicted_through: None,
        }
    }

    /// Classifies command `(client, seq)` at log `index` (indexes rise from
    /// call to call). Client 0 has no session: always fresh. An expired
    /// command leaves the tombstone described in the module docs.
    pub fn check(&mut self, client: ClientId, seq: u64, index: LogIndex) -> SessionOutcome<R> {
        if client == ClientId(0) {
            return SessionOutcome::Fresh;
        }
        let outcome = match self.by_client.get(&client) {
            Some(session) => match &session.reply {
                None if seq <= session.last_seq => {
                    return SessionOutcome::Expired {
                        resume_at: session.index.0,
                    }
                }
                Some(reply) if seq == session.last_seq => SessionOutcome::Duplicate {
                    index: session.index,
                    reply: reply.clone(),
                },
                Some(_) if seq < session.last_seq => SessionOutcome::Stale,
                _ => SessionOutcome::Fresh,
            },
            None => match self.evicted_through {
                // `<=` one past: the log's first index is 0, so a command
                // may sit at an index one below its sequence number.
                Some(through) if seq <= through.0.saturating_add(1) => {
                    SessionOutcome::Expired { resume_at: index.0 }
                }
                _ => SessionOutcome::Fresh,
            },
        };
        if let SessionOutcome::Expired { .. } = outcome {
            // The tombstone refuses everything below its own index (which
            // is above the rest of this request): a late copy of an older
            // request must not leave a low one that a retry passes over.
            let last_seq = seq
                .saturating_add(self.request_commands_max - 1)
                .max(index.0.saturating_sub(1));
            self.insert(client, last_seq, index, None);
        }
        outcome
    }

    /// Remembers that `(client, seq)` was applied at `index` with `reply`
    /// (`index` above every index recorded before), evicting the oldest
    /// session if the table is full.
    pub fn record(&mut self, client: ClientId, seq: u64, index: LogIndex, reply: R) {
        if client != ClientId(0) {
            self.insert(client, seq, index, Some(reply));
        }
    }

    fn insert(&mut self, client: ClientId, last_seq: u64, index: LogIndex, reply: Option<R>) {
        let session = Session {
            last_seq,
            index,
            reply,
        };
        if let Some(previous) = self.by_client.insert(client, session) {
            self.by_index.remove(&previous.index);
        }
        if let Some(displaced) = self.by_index.insert(index, client) {
            // Two sessions at one index only come from a malformed snapshot;
            // keep the tables consistent all the same.
            if displaced != client {
                self.by_client.remove(&displaced);
            }
        }
        while self.by_client.len() > self.capacity {
            let Some((oldest, evicted)) = self.by_index.pop_first() else {
                break;
            };
            self.by_client.remove(&evicted);
            self.evicted_through = self.evicted_through.max(Some(oldest));
        }
    }

    /// Sessions remembered (tombstones included).
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// The table's bounds, packed as [`pack_session_bounds`] packs them: a
    /// replica restores a snapshot of this table only under the same.
    pub fn bounds(&self) -> u64 {
        pack_session_bounds(self.capacity as u64, self.request_commands_max)
    }

    /// True when no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// The last index of the newest evicted session, if any was evicted.
    pub fn evicted_through(&self) -> Option<LogIndex> {
        self.evicted_through
    }

    /// Every session in client order: what a snapshot keeps, with
    /// [`Sessions::evicted_through`].
    pub fn iter(&self) -> impl Iterator<Item = SessionRecord<&R>> {
        self.by_client.iter().map(|(client, s)| SessionRecord {
            client: *client,
            last_seq: s.last_seq,
            index: s.index,
            reply: s.reply.as_ref(),
        })
    }

    /// The table a snapshot describes. A list longer than `capacity` keeps
    /// the newest sessions.
    pub fn restore(
        capacity: usize,
        request_commands_max: u64,
        evicted_through: Option<LogIndex>,
        sessions: impl IntoIterator<Item = SessionRecord<R>>,
    ) -> Sessions<R> {
        let mut sorted: Vec<_> = sessions.into_iter().collect();
        sorted.sort_by_key(|s| s.index);
        let mut out = Sessions::with_capacity(capacity, request_commands_max);
        out.evicted_through = evicted_through;
        for s in sorted {
            out.insert(s.client, s.last_seq, s.index, s.reply);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn retries_get_the_first_reply_and_old_commands_are_stale() {
        let mut sessions = Sessions::default();
        let c = ClientId(7);
        assert_eq!(sessions.check(c, 1, LogIndex(10)), SessionOutcome::Fresh);
        sessions.record(c, 1, LogIndex(10), "one");
        assert_eq!(
            sessions.check(c, 1, LogIndex(11)),
            SessionOutcome::Duplicate {
                index: LogIndex(10),
                reply: "one"
            }
        );
        assert_eq!(sessions.check(c, 2, LogIndex(12)), SessionOutcome::Fresh);
        sessions.record(c, 2, LogIndex(12), "two");
        assert_eq!(sessions.check(c, 1, LogIndex(13)), SessionOutcome::Stale);
        sessions.record(ClientId(0), 5, LogIndex(14), "anon");
        assert_eq!(
            sessions.check(ClientId(0), 5, LogIndex(15)),
            SessionOutcome::Fresh
        );
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn an_evicted_session_is_refused_until_it_resumes_above_its_request() {
        // Room for 3 sessions (2 + 1), requests of up to 2 commands.
        let mut sessions = Sessions::with_capacity(0, 2);
        let mut index = 0;
        let mut next = || {
            index += 1;
            LogIndex(index)
        };
        for client in 1..=4 {
            let at = next();
            assert_eq!(
                sessions.check(ClientId(client), 1, at),
                SessionOutcome::Fresh
            );
            sessions.record(ClientId(client), 1, at, at.0);
        }
        // Client 1 was the oldest: gone, and its retry is refused, not applied.
        assert_eq!(sessions.len(), 3);
        assert_eq!(sessions.evicted_through(), Some(LogIndex(1)));
        let at = next();
        let SessionOutcome::Expired { resume_at } = sessions.check(ClientId(1), 1, at) else {
            panic!("the retry of an evicted session's command was not refused");
        };
        assert_eq!(resume_at, at.0);
        // The rest of its request too, in whatever slot it comes.
        let at = next();
        assert_eq!(
            sessions.check(ClientId(1), 2, at),
            SessionOutcome::Expired { resume_at }
        );
        // Resumed where it was told: a fresh session.
        let at = next();
        assert_eq!(
            sessions.check(ClientId(1), resume_at, at),
            SessionOutcome::Fresh
        );
        sessions.record(ClientId(1), resume_at, at, at.0);
        // A client new to the table is refused while its sequence number
        // could be an evicted session's, and told where to start.
        let at = next();
        assert!(matches!(
            sessions.check(ClientId(40), 2, at),
            SessionOutcome::Expired { .. }
        ));
    }

    /// Two ways a retry slipped through, found in review: a session whose
    /// command sat at index 0 with sequence 1, and a late copy of an older
    /// request leaving a tombstone below the retry.
    #[test]
    fn retries_of_an_evicted_session_are_refused_from_index_zero_and_after_late_copies() {
        let mut sessions = Sessions::with_capacity(2, 1);
        let fresh = |s: &mut Sessions<u64>, client, seq, at| {
            assert_eq!(
                s.check(ClientId(client), seq, LogIndex(at)),
                SessionOutcome::Fresh
            );
            s.record(ClientId(client), seq, LogIndex(at), at);
        };
        fresh(&mut sessions, 1, 1, 0);
        fresh(&mut sessions, 2, 1, 1);
        fresh(&mut sessions, 3, 1, 2);
        assert!(matches!(
            sessions.check(ClientId(1), 1, LogIndex(3)),
            SessionOutcome::Expired { .. }
        ));

        let mut sessions = Sessions::with_capacity(2, 1);
        fresh(&mut sessions, 1, 5, 10);
        fresh(&mut sessions, 1, 9, 20);
        fresh(&mut sessions, 2, 1, 21);
        fresh(&mut sessions, 3, 1, 22);
        assert_eq!(sessions.evicted_through(), Some(LogIndex(20)));
        assert!(matches!(
            sessions.check(ClientId(1), 5, LogIndex(23)),
            SessionOutcome::Expired { .. }
        ));
        assert!(matches!(
            sessions.check(ClientId(1), 9, LogIndex(24)),
            SessionOutcome::Expired { .. }
        ));
    }

    #[test]
    fn a_snapshot_of_the_table_restores_the_same_table() {
        let mut sessions = Sessions::with_capacity(0, 1);
        for client in 1..=9u64 {
            let at = LogIndex(client * 2);
            if let SessionOutcome::Fresh = sessions.check(ClientId(client % 5 + 1), 1, at) {
                sessions.record(ClientId(client % 5 + 1), 1, at, client);
            }
        }
        let _ = sessions.check(ClientId(77), 1, LogIndex(30));
        let records: Vec<_> = sessions
            .iter()
            .map(|s| SessionRecord {
                client: s.client,
                last_seq: s.last_seq,
                index: s.index,
                reply: s.reply.copied(),
            })
            .collect();
        let restored = Sessions::restore(0, 1, sessions.evicted_through(), records);
        assert_eq!(restored, sessions);
    }

    /// A client following the rules in the module docs: one request
    /// outstanding, sent again with the same numbers until answered.
    #[derive(Clone, Debug)]
    struct ModelClient {
        next_seq: u64,
        /// (id, first seq, commands, sent before) of the request out.
        request: Option<(usize, u64, u64, bool)>,
    }

    /// One step of the property test below: who sends, a new request's
    /// size, whether the answer is lost, whether the request's commands land
    /// in two slots, whether a late copy of one of the client's older
    /// sendings arrives first (which one), and whether the table goes
    /// through a snapshot (a replica restarting from one) after the step.
    type Step = (usize, u64, bool, bool, Option<prop::sample::Index>, bool);

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            (
                0usize..12,
                1u64..4,
                any::<bool>(),
                any::<bool>(),
                proptest::option::weighted(0.15, any::<prop::sample::Index>()),
                proptest::bool::weighted(0.05),
            ),
            1..400,
        )
    }

    /// What the table was, taken apart and put together as a snapshot does.
    fn through_snapshot(
        sessions: &Sessions<u64>,
        capacity: usize,
        request_max: u64,
    ) -> Sessions<u64> {
        let records = sessions.iter().map(|s| SessionRecord {
            client: s.client,
            last_seq: s.last_seq,
            index: s.index,
            reply: s.reply.copied(),
        });
        Sessions::restore(
            capacity,
            request_max,
            sessions.evicted_through(),
            records.collect::<Vec<_>>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Many clients, a table much smaller than them, requests of up to
        /// three commands whose commands may land in two slots with others
        /// between, answers lost at random, late copies of older sendings
        /// (a network that duplicates and delays), the log starting at
        /// index 0, 1 or 2, restarts from snapshots: no command is applied
        /// twice, and a request refused as expired on its first sending has
        /// had nothing applied (so sending it again as new is safe).
        #[test]
        fn no_command_is_applied_twice_however_small_the_table(
            capacity in 0usize..10,
            first_index in 0u64..3,
            steps in steps(),
        ) {
            let request_max = 3;
            let mut sessions: Sessions<u64> = Sessions::with_capacity(capacity, request_max);
            let mut clients = vec![ModelClient { next_seq: 1, request: None }; 12];
            // Every sending so far, per client: (request, first seq, commands).
            let mut sent: Vec<Vec<(usize, u64, u64)>> = vec![Vec::new(); 12];
            let mut applied: BTreeSet<(usize, u64)> = BTreeSet::new();
            let (mut next_index, mut requests) = (first_index, 0usize);
            for (who, size, answer_lost, split, late, restart) in steps {
                let id = ClientId(who as u64 + 1);
                // Delivers one sending; whether it was refused as expired
                // (and where to resume), and how many of it applied.
                let mut deliver = |sessions: &mut Sessions<u64>, (request, first, count): (usize, u64, u64)| {
                    let (mut expired, mut applied_now) = (None, 0);
                    for offset in 0..count {
                        if offset == 1 && split {
                            next_index += 7;
                        }
                        let index = LogIndex(next_index);
                        next_index += 1;
                        match sessions.check(id, first + offset, index) {
                            SessionOutcome::Fresh => {
                                if !applied.insert((request, offset)) {
                                    return Err(format!("command {offset} of request {request} applied twice"));
                                }
                                sessions.record(id, first + offset, index, index.0);
                                applied_now += 1;
                            }
                            SessionOutcome::Expired { resume_at } => {
                                if expired.is_some_and(|e| e != resume_at) {
                                    return Err(format!("request {request} told two places to resume"));
                                }
                                expired = Some(resume_at);
                            }
                            SessionOutcome::Duplicate { .. } | SessionOutcome::Stale => {}
                        }
                    }
                    Ok((expired, applied_now))
                };
                if let Some(which) = late.filter(|_| !sent[who].is_empty()) {
                    let copy = sent[who][which.index(sent[who].len())];
                    deliver(&mut sessions, copy).map_err(TestCaseError::fail)?;
                }
                let client = &mut clients[who];
                let (request, first, count, sent_before) = client.request.unwrap_or_else(|| {
                    requests += 1;
                    (requests, client.next_seq, size, false)
                });
                sent[who].push((request, first, count));
                let (expired, applied_now) =
                    deliver(&mut sessions, (request, first, count)).map_err(TestCaseError::fail)?;
                let client = &mut clients[who];
                client.request = match expired {
                    Some(resume_at) => {
                        prop_assert!(applied_now == 0 || sent_before, "expired, yet partly applied");
                        client.next_seq = resume_at;
                        // Never sent before: nothing applied, send it anew.
                        // Sent before: in doubt, given up.
                        (!sent_before).then_some((request, resume_at, count, false))
                    }
                    None if answer_lost => Some((request, first, count, true)),
                    None => {
                        client.next_seq = first + count;
                        None
                    }
                };
                if restart {
                    let restored = through_snapshot(&sessions, capacity, request_max);
                    prop_assert_eq!(&restored, &sessions);
                    sessions = restored;
                }
            }
        }
    }
}
