//! Proposals made on this node that wait for their commands to apply.
//!
//! A request's commands are kept as runs of consecutive sequence numbers of
//! one client (a client batch is one run), not one entry per command: the
//! leader looks each applied command up here, and a slot's commands come in
//! request order, so almost every lookup is answered by the run the previous
//! one was found in, without a search. A request of one command costs no
//! allocation of its own beyond its map and slab entries.

use std::collections::BTreeMap;

use slab::Slab;

use super::action::{Callers, GroupAction, ProposeOutcome};
use crate::protocol::{ClientId, Command};

/// Where a waiting request's outcomes go.
pub(crate) enum Answer<C: Callers> {
    /// A proposal of one command.
    One(C::Proposal),
    /// A request of many, answered together once every one is known.
    Many(C::Request),
}

/// Waiting requests, found by any of their commands' `(client, seq)`.
pub(crate) struct Waiters<C: Callers> {
    requests: Slab<Request<C>>,
    runs: Slab<Run>,
    /// Each waiting run by its client and first sequence number. A
    /// client's runs never overlap.
    by_start: BTreeMap<(ClientId, u64), usize>,
    /// The run the latest lookup found.
    last_found: Option<usize>,
}

impl<C: Callers> Default for Waiters<C> {
    fn default() -> Self {
        Waiters {
            requests: Slab::new(),
            runs: Slab::new(),
            by_start: BTreeMap::new(),
            last_found: None,
        }
    }
}

struct Request<C: Callers> {
    pending: Pending<C>,
}

enum Pending<C: Callers> {
    /// Its one command is unknown while the request waits.
    One(C::Proposal),
    Many {
        reply: C::Request,
        /// One per command; `None` until known.
        outcomes: Vec<Option<ProposeOutcome>>,
        unknown: usize,
    },
}

impl<C: Callers> Request<C> {
    fn known(&self, place: usize) -> bool {
        match &self.pending {
            Pending::One(_) => false,
            Pending::Many { outcomes, .. } => outcomes[place].is_some(),
        }
    }
}

/// Commands `first..=last` of `client`, places `at..` of their request.
struct Run {
    client: ClientId,
    first: u64,
    last: u64,
    request: usize,
    at: usize,
    unknown: u64,
}

/// Where answers go: the core's action list.
type Out<C> = Vec<GroupAction<C>>;

impl<C: Callers> Waiters<C> {
    /// Waits for `commands`' outcomes, sent to `reply` together (one for
    /// `Answer::One`) once all are known. A command already waiting from
    /// an earlier request is taken over by this one, as a retry supersedes
    /// its first try: the earlier request is told `Stopped` for it, and
    /// goes on waiting for its other commands.
    pub(crate) fn wait(&mut self, commands: &[Command], reply: Answer<C>, out: &mut Out<C>) {
        debug_assert!(!matches!(reply, Answer::One(_)) || commands.len() == 1);
        if commands.is_empty() {
            if let Answer::Many(reply) = reply {
                out.push(GroupAction::AnswerMany(reply, Vec::new()));
            }
            return;
        }
        let pending = match reply {
            Answer::One(reply) => Pending::One(reply),
            Answer::Many(reply) => Pending::Many {
                reply,
                outcomes: vec![None; commands.len()],
                unknown: commands.len(),
            },
        };
        let request = self.requests.insert(Request { pending });
        let mut at = 0;
        while at < commands.len() {
            let (client, first) = (commands[at].client, commands[at].seq);
            let mut last = first;
            let mut len = 1;
            while let Some(next) = commands.get(at + len) {
                if next.client != client || Some(next.seq) != last.checked_add(1) {
                    break;
                }
                last = next.seq;
                len += 1;
            }
            self.add_run(client, first, last, request, at, out);
            at += len;
        }
    }

    fn add_run(
        &mut self,
        client: ClientId,
        first: u64,
        last: u64,
        request: usize,
        at: usize,
        out: &mut Out<C>,
    ) {
        let overlapping: Vec<usize> = self
            .by_start
            .range((client, 0)..=(client, last))
            .rev()
            .map(|(_, &run)| run)
            .take_while(|&run| self.runs[run].last >= first)
            .collect();
        for run in overlapping {
            self.cut_run(run, first, last, ProposeOutcome::Stopped, out);
        }
        self.insert_run(client, first, last, request, at);
    }

    /// Waits for the commands `first..=last` of `client`, places `at..` of
    /// `request`, those of them still unknown.
    fn insert_run(&mut self, client: ClientId, first: u64, last: u64, request: usize, at: usize) {
        let state = &self.requests[request];
        let places = at..=at + (last - first) as usize;
        let unknown = places.filter(|&place| !state.known(place)).count() as u64;
        if unknown == 0 {
            return;
        }
        let run = self.runs.insert(Run {
            client,
            first,
            last,
            request,
            at,
            unknown,
        });
        self.by_start.insert((client, first), run);
    }

    /// Tells whoever waits for `(client, seq)` its outcome; true if this
    /// was its request's last unknown command (the request was answered).
    pub(crate) fn answer(
        &mut self,
        client: ClientId,
        seq: u64,
        outcome: ProposeOutcome,
        out: &mut Out<C>,
    ) -> bool {
        let Some(run) = self.find(client, seq) else {
            return false;
        };
        let Run {
            first, request, at, ..
        } = self.runs[run];
        let place = at + (seq - first) as usize;
        let answered = self.settle(request, place, outcome, out);
        let run_state = &mut self.runs[run];
        run_state.unknown -= 1;
        if run_state.unknown == 0 {
            self.remove_run(run);
        }
        answered
    }

    fn find(&mut self, client: ClientId, seq: u64) -> Option<usize> {
        let holds = |run: &Run| run.client == client && run.first <= seq && seq <= run.last;
        let run = match self.last_found {
            Some(run) if self.runs.get(run).is_some_and(holds) => run,
            _ => {
                let (_, &run) = self.by_start.range(..=(client, seq)).next_back()?;
                if !holds(&self.runs[run]) {
                    return None;
                }
                self.last_found = Some(run);
                run
            }
        };
        let Run {
            first, request, at, ..
        } = self.runs[run];
        // Answered already (refused, say, then applied by a later leader).
        (!self.requests[request].known(at + (seq - first) as usize)).then_some(run)
    }

    /// Records one outcome; answers the request if it was the last.
    fn settle(
        &mut self,
        request: usize,
        place: usize,
        outcome: ProposeOutcome,
        out: &mut Out<C>,
    ) -> bool {
        let mut outcome = Some(outcome);
        if let Pending::Many {
            outcomes, unknown, ..
        } = &mut self.requests[request].pending
        {
            debug_assert!(outcomes[place].is_none());
            outcomes[place] = outcome.take();
            *unknown -= 1;
            if *unknown > 0 {
                return false;
            }
        }
        let state = self.requests.remove(request);
        match state.pending {
            Pending::One(reply) => out.push(GroupAction::Answer(
                reply,
                outcome.unwrap_or(ProposeOutcome::Stopped),
            )),
            Pending::Many {
                reply, outcomes, ..
            } => {
                let outcomes = outcomes.into_iter();
                let outcomes = outcomes
                    .map(|o| o.unwrap_or(ProposeOutcome::Stopped))
                    .collect();
                out.push(GroupAction::AnswerMany(reply, outcomes));
            }
        }
        true
    }

    /// Gives the commands `from..=to` of `run` still unknown `outcome`;
    /// the rest of the run goes on waiting.
    fn cut_run(
        &mut self,
        run: usize,
        from: u64,
        to: u64,
        outcome: ProposeOutcome,
        out: &mut Out<C>,
    ) {
        let Run {
            client,
            first,
            last,
            request,
            at,
            ..
        } = self.remove_run(run);
        for seq in from.max(first)..=to.min(last) {
            let place = at + (seq - first) as usize;
            if !self.requests[request].known(place)
                && self.settle(request, place, outcome.clone(), out)
            {
                // That was the request's last unknown command.
                return;
            }
        }
        if first < from {
            self.insert_run(client, first, from - 1, request, at);
        }
        if last > to {
            let after = at + (to + 1 - first) as usize;
            self.insert_run(client, to + 1, last, request, after);
        }
    }

    fn remove_run(&mut self, run: usize) -> Run {
        let removed = self.runs.remove(run);
        self.by_start.remove(&(removed.client, removed.first));
        if self.last_found == Some(run) {
            self.last_found = None;
        }
        removed
    }

    /// Answers every waiting command `outcome`.
    pub(crate) fn answer_all(&mut self, outcome: ProposeOutcome, out: &mut Out<C>) {
        let runs: Vec<usize> = self.runs.iter().map(|(run, _)| run).collect();
        for run in runs {
            self.cut_run(run, 0, u64::MAX, outcome.clone(), out);
        }
        debug_assert!(self.requests.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use proptest::prelude::*;

    use futures_channel::oneshot;

    use super::*;
    use crate::protocol::LogIndex;

    /// Callers that wait on channels, as the runtime's do.
    #[derive(Debug)]
    struct Channels;

    impl Callers for Channels {
        type Proposal = oneshot::Sender<ProposeOutcome>;
        type Request = oneshot::Sender<Vec<ProposeOutcome>>;
        type Read = ();
    }

    /// Waiters whose answers are sent on at once.
    #[derive(Default)]
    struct Harness {
        inner: Waiters<Channels>,
    }

    impl std::ops::Deref for Harness {
        type Target = Waiters<Channels>;
        fn deref(&self) -> &Self::Target {
            &self.inner
        }
    }

    impl Harness {
        fn send(out: Vec<GroupAction<Channels>>) {
            for action in out {
                match action {
                    GroupAction::Answer(tx, outcome) => {
                        let _ = tx.send(outcome);
                    }
                    GroupAction::AnswerMany(tx, outcomes) => {
                        let _ = tx.send(outcomes);
                    }
                    other => panic!("waiters only answer: {other:?}"),
                }
            }
        }

        fn wait(&mut self, commands: &[Command], reply: Answer<Channels>) {
            let mut out = Vec::new();
            self.inner.wait(commands, reply, &mut out);
            Harness::send(out);
        }

        fn answer(&mut self, client: ClientId, seq: u64, outcome: ProposeOutcome) -> Option<()> {
            let mut out = Vec::new();
            let answered = self.inner.answer(client, seq, outcome, &mut out);
            Harness::send(out);
            answered.then_some(())
        }

        fn answer_all(&mut self, outcome: ProposeOutcome) {
            let mut out = Vec::new();
            self.inner.answer_all(outcome, &mut out);
            Harness::send(out);
        }
    }

    fn command(client: u64, seq: u64) -> Command {
        Command {
            client: ClientId(client),
            seq,
            data: Bytes::new(),
        }
    }

    fn applied(index: u64) -> ProposeOutcome {
        ProposeOutcome::Applied {
            index: LogIndex(index),
            reply: Bytes::new(),
        }
    }

    fn many(waiters: &mut Harness, commands: &[Command]) -> oneshot::Receiver<Vec<ProposeOutcome>> {
        let (tx, rx) = oneshot::channel();
        waiters.wait(commands, Answer::Many(tx));
        rx
    }

    #[test]
    fn a_batch_is_answered_once_every_command_is_known_each_in_its_place() {
        let mut waiters = Harness::default();
        let commands: Vec<Command> = (10..14).map(|seq| command(7, seq)).collect();
        let mut rx = many(&mut waiters, &commands);
        assert_eq!(waiters.answer(ClientId(7), 12, applied(2)), None);
        assert_eq!(waiters.answer(ClientId(7), 10, applied(0)), None);
        // Twice, or not waited for: nothing changes.
        assert_eq!(waiters.answer(ClientId(7), 10, applied(99)), None);
        assert_eq!(waiters.answer(ClientId(7), 14, applied(99)), None);
        assert_eq!(waiters.answer(ClientId(8), 11, applied(99)), None);
        assert_eq!(waiters.answer(ClientId(7), 13, ProposeOutcome::Stale), None);
        assert_eq!(rx.try_recv(), Ok(None));
        assert!(waiters.answer(ClientId(7), 11, applied(1)).is_some());
        let outcomes = rx.try_recv().unwrap().unwrap();
        assert_eq!(
            outcomes,
            vec![applied(0), applied(1), applied(2), ProposeOutcome::Stale]
        );
        assert_eq!(waiters.requests.len(), 0);
        assert!(waiters.by_start.is_empty() && waiters.runs.is_empty());
    }

    #[test]
    fn a_request_of_several_clients_and_gaps_is_found_by_each_command() {
        let mut waiters = Harness::default();
        let commands = [
            command(1, 5),
            command(1, 6),
            command(2, 6),
            command(1, 8),
            command(0, u64::MAX - 1),
            command(0, u64::MAX),
        ];
        let mut rx = many(&mut waiters, &commands);
        assert_eq!(waiters.runs.len(), 4);
        for (at, c) in commands.iter().enumerate().rev() {
            assert_eq!(rx.try_recv(), Ok(None));
            waiters.answer(c.client, c.seq, applied(at as u64));
        }
        let expected: Vec<_> = (0..commands.len() as u64).map(applied).collect();
        assert_eq!(rx.try_recv().unwrap().unwrap(), expected);
        assert!(waiters.runs.is_empty() && waiters.requests.is_empty());
    }

    #[test]
    fn a_retry_takes_over_what_it_repeats_and_the_first_try_waits_for_the_rest() {
        let mut waiters = Harness::default();
        let first: Vec<Command> = (0..6).map(|seq| command(3, seq)).collect();
        let mut first_rx = many(&mut waiters, &first);
        waiters.answer(ClientId(3), 0, applied(0));
        // Repeats 2..=3 of the first try, in the middle of its run.
        let retry: Vec<Command> = (2..4).map(|seq| command(3, seq)).collect();
        let mut retry_rx = many(&mut waiters, &retry);
        assert_eq!(first_rx.try_recv(), Ok(None));
        for seq in [5, 1, 2, 3] {
            waiters.answer(ClientId(3), seq, applied(seq));
        }
        assert_eq!(retry_rx.try_recv(), Ok(Some(vec![applied(2), applied(3)])));
        assert_eq!(first_rx.try_recv(), Ok(None), "seq 4 is still unknown");
        assert!(waiters.answer(ClientId(3), 4, applied(4)).is_some());
        assert_eq!(
            first_rx.try_recv(),
            Ok(Some(vec![
                applied(0),
                applied(1),
                ProposeOutcome::Stopped,
                ProposeOutcome::Stopped,
                applied(4),
                applied(5),
            ]))
        );
        assert!(waiters.requests.is_empty() && waiters.runs.is_empty());
        assert!(waiters.by_start.is_empty());
    }

    #[test]
    fn stopping_answers_what_is_unknown_and_keeps_what_is_known() {
        let mut waiters = Harness::default();
        let (tx, mut one) = oneshot::channel();
        waiters.wait(&[command(1, 1)], Answer::One(tx));
        let (tx, mut answered) = oneshot::channel();
        waiters.wait(&[command(1, 7)], Answer::One(tx));
        assert!(waiters.answer(ClientId(1), 7, applied(3)).is_some());
        assert_eq!(answered.try_recv(), Ok(Some(applied(3))));
        let mut batch = many(&mut waiters, &[command(2, 1), command(2, 2)]);
        let mut empty = many(&mut waiters, &[]);
        assert_eq!(empty.try_recv(), Ok(Some(Vec::new())));
        waiters.answer(ClientId(2), 2, applied(9));
        waiters.answer_all(ProposeOutcome::Stopped);
        assert_eq!(one.try_recv(), Ok(Some(ProposeOutcome::Stopped)));
        assert_eq!(
            batch.try_recv(),
            Ok(Some(vec![ProposeOutcome::Stopped, applied(9)]))
        );
        assert_eq!(waiters.requests.len(), 0);
    }

    proptest! {
        /// Against one map entry per command, where a command proposed
        /// again takes over from its earlier proposal (told `Stopped`):
        /// the same answers for requests that overlap, repeat commands or
        /// mix clients, whatever order their commands are answered in, and
        /// each request answered exactly once.
        #[test]
        fn agrees_with_a_map_entry_per_command(
            requests in proptest::collection::vec(
                proptest::collection::vec((0u64..3, 0u64..8), 1..8), 1..12),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..80),
            answer_between in any::<proptest::sample::Index>(),
        ) {
            let mut waiters = Harness::default();
            let mut expected: Vec<Vec<ProposeOutcome>> = Vec::new();
            let mut receivers = Vec::new();
            let mut by_command = HashMap::new();
            let mut keys = std::collections::BTreeSet::new();
            let split = answer_between.index(order.len() + 1);
            let answer = |waiters: &mut Harness,
                              by_command: &mut HashMap<(ClientId, u64), (usize, usize)>,
                              expected: &mut Vec<Vec<ProposeOutcome>>,
                              keys: &std::collections::BTreeSet<(ClientId, u64)>,
                              picks: &[proptest::sample::Index],
                              from: usize| {
                let keys: Vec<_> = keys.iter().copied().collect();
                for (n, pick) in picks.iter().enumerate() {
                    let key = keys[pick.index(keys.len())];
                    let outcome = applied((from + n) as u64);
                    if let Some((request, place)) = by_command.remove(&key) {
                        expected[request][place] = outcome.clone();
                    }
                    waiters.answer(key.0, key.1, outcome);
                }
            };
            for (r, request) in requests.iter().enumerate() {
                let commands: Vec<Command> =
                    request.iter().map(|&(client, seq)| command(client, seq)).collect();
                expected.push(vec![ProposeOutcome::Stopped; commands.len()]);
                for (place, c) in commands.iter().enumerate() {
                    // An older proposal of it keeps `Stopped`.
                    by_command.insert((c.client, c.seq), (r, place));
                    keys.insert((c.client, c.seq));
                }
                receivers.push(many(&mut waiters, &commands));
                if r == requests.len() / 2 {
                    answer(&mut waiters, &mut by_command, &mut expected, &keys, &order[..split], 0);
                }
            }
            answer(&mut waiters, &mut by_command, &mut expected, &keys, &order[split..], split);
            waiters.answer_all(ProposeOutcome::Stopped);
            prop_assert_eq!(waiters.requests.len(), 0);
            prop_assert!(waiters.runs.is_empty() && waiters.by_start.is_empty());
            for (mut rx, expected) in receivers.into_iter().zip(expected) {
                prop_assert_eq!(rx.try_recv(), Ok(Some(expected)));
            }
        }
    }
}
