//! Applying a chosen slot's commands behind client sessions.

use bytes::Bytes;

use super::action::ProposeOutcome;
use super::state_machine::{Applying, StateMachine};
use crate::protocol::{Batch, ClientId, LogIndex, SessionOutcome, Sessions};

/// One command's outcome, as `apply_batch` settles it.
pub(crate) struct Applied<'a> {
    pub(crate) client: ClientId,
    pub(crate) seq: u64,
    pub(crate) index: LogIndex,
    pub(crate) outcome: ProposeOutcome,
    /// The command's bytes if the state machine applied it now; `None` for
    /// a retry of one applied before, or a stale one.
    pub(crate) data: Option<&'a [u8]>,
}

/// Applies `batch`, whose first command has log index `first_index`: each
/// command the sessions have not seen goes to `machine`, each retry gets
/// its first reply, each stale one `Stale`. `settled` hears every command's
/// outcome, in log order.
///
/// A session's fresh commands in a row (a client batch) go to the machine
/// in one call and touch the session twice, not twice each: the session
/// keeps only its latest, and a sequence number above a fresh one is fresh.
pub(crate) fn apply_batch<'a>(
    machine: &mut impl StateMachine,
    sessions: &mut Sessions<Bytes>,
    first_index: LogIndex,
    batch: &'a Batch,
    mut settled: impl FnMut(Applied<'a>),
) {
    let mut run = Run::default();
    for (offset, command) in batch.iter().enumerate() {
        let index = LogIndex(first_index.0 + offset as u64);
        if run.takes(command.client, command.seq) {
            run.push(index, command.seq, command.data);
            continue;
        }
        run.apply(machine, sessions, &mut settled);
        let outcome = match sessions.check(command.client, command.seq, index) {
            SessionOutcome::Fresh => {
                run.client = command.client;
                run.push(index, command.seq, command.data);
                continue;
            }
            SessionOutcome::Duplicate { index, reply } => ProposeOutcome::Applied { index, reply },
            SessionOutcome::Stale => ProposeOutcome::Stale,
            SessionOutcome::Expired { resume_at } => ProposeOutcome::Expired { resume_at },
        };
        settled(Applied {
            client: command.client,
            seq: command.seq,
            index,
            outcome,
            data: None,
        });
    }
    run.apply(machine, sessions, &mut settled);
}

/// Fresh commands of one session, in log order, not yet applied.
#[derive(Default)]
struct Run<'a> {
    client: ClientId,
    applying: Vec<Applying<'a>>,
    seqs: Vec<u64>,
}

impl<'a> Run<'a> {
    /// Whether `(client, seq)` is fresh because it follows a fresh command
    /// of its session in this run (client 0 has no session: always).
    fn takes(&self, client: ClientId, seq: u64) -> bool {
        match self.seqs.last() {
            Some(&last) => client == self.client && (client == ClientId(0) || seq > last),
            None => false,
        }
    }

    fn push(&mut self, index: LogIndex, seq: u64, data: &'a [u8]) {
        let client = self.client;
        self.applying.push(Applying {
            index,
            client,
            seq,
            data,
        });
        self.seqs.push(seq);
    }

    /// Applies the run's commands, records the session's latest, and
    /// settles each; leaves the run empty.
    fn apply(
        &mut self,
        machine: &mut impl StateMachine,
        sessions: &mut Sessions<Bytes>,
        settled: &mut impl FnMut(Applied<'a>),
    ) {
        let Some(&last_seq) = self.seqs.last() else {
            return;
        };
        let mut replies = machine.apply(&self.applying).into_iter();
        let last = self.applying.len() - 1;
        for (at, (command, &seq)) in self.applying.iter().zip(&self.seqs).enumerate() {
            let reply = replies.next().unwrap_or_default();
            if at == last {
                sessions.record(self.client, last_seq, command.index, reply.clone());
            }
            settled(Applied {
                client: self.client,
                seq,
                index: command.index,
                outcome: ProposeOutcome::Applied {
                    index: command.index,
                    reply,
                },
                data: Some(command.data),
            });
        }
        self.applying.clear();
        self.seqs.clear();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::group::state_machine::Capture;
    use crate::protocol::{BatchBuilder, Command};

    /// Remembers what it applied; replies with each command's index.
    #[derive(Default)]
    struct Recorder {
        applied: Vec<(LogIndex, Vec<u8>)>,
        calls: usize,
    }

    impl StateMachine for Recorder {
        fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
            self.calls += 1;
            commands
                .iter()
                .map(|c| {
                    self.applied.push((c.index, c.data.to_vec()));
                    Bytes::from(c.index.0.to_le_bytes().to_vec())
                })
                .collect()
        }
        fn query(&self, _: &[u8]) -> Bytes {
            Bytes::new()
        }
        fn snapshot(&self) -> Capture {
            Capture::encoded(Bytes::new())
        }
        fn restore(&mut self, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
    }

    type Outcomes = Vec<(ClientId, u64, LogIndex, ProposeOutcome, Option<Vec<u8>>)>;

    fn batch(commands: &[(u64, u64)]) -> Batch {
        let mut builder = BatchBuilder::with_capacity(1024);
        for (n, &(client, seq)) in commands.iter().enumerate() {
            builder.push(&Command {
                client: ClientId(client),
                seq,
                data: Bytes::from(vec![n as u8; 3]),
            });
        }
        builder.finish()
    }

    fn run(
        machine: &mut Recorder,
        sessions: &mut Sessions<Bytes>,
        first: u64,
        batch: &Batch,
    ) -> Outcomes {
        let mut out = Vec::new();
        apply_batch(machine, sessions, LogIndex(first), batch, |a| {
            out.push((
                a.client,
                a.seq,
                a.index,
                a.outcome,
                a.data.map(<[u8]>::to_vec),
            ))
        });
        out
    }

    /// One command at a time, as written in the sessions' own terms.
    fn one_by_one(
        machine: &mut Recorder,
        sessions: &mut Sessions<Bytes>,
        first: u64,
        batch: &Batch,
    ) -> Outcomes {
        let mut out = Vec::new();
        for (offset, c) in batch.iter().enumerate() {
            let index = LogIndex(first + offset as u64);
            let (outcome, data) = match sessions.check(c.client, c.seq, index) {
                SessionOutcome::Fresh => {
                    let reply = machine.apply(&[Applying {
                        index,
                        client: c.client,
                        seq: c.seq,
                        data: c.data,
                    }]);
                    let reply = reply[0].clone();
                    sessions.record(c.client, c.seq, index, reply.clone());
                    (
                        ProposeOutcome::Applied { index, reply },
                        Some(c.data.to_vec()),
                    )
                }
                SessionOutcome::Duplicate { index, reply } => {
                    (ProposeOutcome::Applied { index, reply }, None)
                }
                SessionOutcome::Stale => (ProposeOutcome::Stale, None),
                SessionOutcome::Expired { resume_at } => {
                    (ProposeOutcome::Expired { resume_at }, None)
                }
            };
            out.push((c.client, c.seq, index, outcome, data));
        }
        out
    }

    #[test]
    fn a_client_batch_is_one_call_and_retries_inside_a_slot_get_the_first_reply() {
        let mut machine = Recorder::default();
        let mut sessions = Sessions::default();
        // Client 1's batch 5..=8, then a retry of 8, then a stale 3.
        let slot = batch(&[(1, 5), (1, 6), (1, 7), (1, 8), (1, 8), (1, 3), (2, 1)]);
        let out = run(&mut machine, &mut sessions, 100, &slot);
        assert_eq!(machine.calls, 2, "client 1's run, then client 2's");
        assert_eq!(machine.applied.len(), 5);
        let reply_of = |index: u64| ProposeOutcome::Applied {
            index: LogIndex(index),
            reply: Bytes::from(index.to_le_bytes().to_vec()),
        };
        assert_eq!(out[3].3, reply_of(103));
        assert_eq!((out[4].3.clone(), out[4].4.clone()), (reply_of(103), None));
        assert_eq!(
            (out[5].3.clone(), out[5].4.clone()),
            (ProposeOutcome::Stale, None)
        );
        assert!(matches!(
            sessions.check(ClientId(1), 8, LogIndex(200)),
            SessionOutcome::Duplicate {
                index: LogIndex(103),
                ..
            }
        ));
    }

    proptest! {
        /// Whatever the mix of sessions, retries and stale commands, over
        /// several slots: the same outcomes, the same commands applied in
        /// the same order with the same replies, and the same sessions as
        /// applying one command at a time.
        #[test]
        fn agrees_with_one_command_at_a_time(
            slots in proptest::collection::vec(
                proptest::collection::vec((0u64..6, 0u64..12), 1..20), 1..5),
        ) {
            let (mut fast, mut slow) = (Recorder::default(), Recorder::default());
            // A table of three sessions for up to six clients: evictions
            // and expired commands, too.
            let small = || Sessions::with_capacity(0, 1);
            let (mut fast_sessions, mut slow_sessions) = (small(), small());
            let mut first = 1;
            for commands in &slots {
                let slot = batch(commands);
                let got = run(&mut fast, &mut fast_sessions, first, &slot);
                let want = one_by_one(&mut slow, &mut slow_sessions, first, &slot);
                prop_assert_eq!(got, want);
                first += commands.len() as u64;
            }
            prop_assert_eq!(&fast.applied, &slow.applied);
            prop_assert_eq!(fast_sessions, slow_sessions);
        }
    }
}
