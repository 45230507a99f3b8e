//! Exact-action tests of the group core's handlers: what one input makes
//! the executor do, written one line per action.

use bytes::Bytes;
use synod_wal::Position;

use super::snapshot::{chunks, Snapshot, SnapshotChunk, SnapshotPolicy};
use super::*;
use crate::protocol::{
    Accept, Accepted, Ballot, Batch, ClientId, Command, Config, Envelope, HeartbeatAck, LogIndex,
    Message, NodeId, Prepare, Promise, Sessions, Slot, SyncId, Write,
};

/// Callers named by a number, so answers can be told apart.
#[derive(Debug)]
struct Named;

impl Callers for Named {
    type Proposal = u32;
    type Request = u32;
    type Read = u32;
}

/// Remembers what it applied; replies with each command's index.
#[derive(Clone, Debug, Default)]
struct Recorder {
    applied: Vec<(LogIndex, Vec<u8>)>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        commands
            .iter()
            .map(|c| {
                self.applied.push((c.index, c.data.to_vec()));
                Bytes::from(format!("r{}", c.index.0))
            })
            .collect()
    }
    fn query(&self, _: &[u8]) -> Bytes {
        Bytes::from(format!("{} applied", self.applied.len()))
    }
    fn snapshot(&self) -> Capture {
        let bytes: Vec<u8> = self.applied.iter().flat_map(|(_, d)| d.clone()).collect();
        Capture::encoded(Bytes::from(bytes))
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        if snapshot == b"refuse me" {
            return Err("refused".into());
        }
        self.applied = vec![(LogIndex(0), snapshot.to_vec())];
        Ok(())
    }
}

type Core = GroupCore<Recorder, Named>;

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn never() -> SnapshotPolicy {
    SnapshotPolicy {
        every_slots: 0,
        ..SnapshotPolicy::default()
    }
}

fn core_with(id: u64, policy: SnapshotPolicy, recovery: Recovery) -> (Core, Vec<String>) {
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    let options = CoreOptions::new(Config::new(NodeId(id), members), policy, 1000);
    let mut out = Vec::new();
    let core = Core::recover(options, Recorder::default(), recovery, &mut out).unwrap();
    (core, briefs(out))
}

fn step(core: &mut Core, input: GroupInput<Named>) -> Vec<String> {
    let mut out = Vec::new();
    core.step(input, &mut out).unwrap();
    briefs(out)
}

fn message(from: u64, to: u64, msg: Message) -> GroupInput<Named> {
    GroupInput::Message(Envelope {
        from: NodeId(from),
        to: NodeId(to),
        msg,
    })
}

fn propose(caller: u32, client: u64, seq: u64, data: &str) -> GroupInput<Named> {
    let command = Command {
        client: ClientId(client),
        seq,
        data: Bytes::copy_from_slice(data.as_bytes()),
    };
    GroupInput::Propose(vec![Proposal::One(command, caller)])
}

/// One line per action: what the executor is told to do.
fn briefs(actions: Vec<GroupAction<Named>>) -> Vec<String> {
    actions.into_iter().map(brief).collect()
}

fn brief(action: GroupAction<Named>) -> String {
    match action {
        GroupAction::Append { position, write } => match write {
            Write::Promise(b) => format!("append@{position} promise {b}"),
            Write::Accept { slot, entry } => {
                format!("append@{position} accept {} at {}", slot.0, entry.ballot)
            }
            Write::Commit(slot) => format!("append@{position} commit {}", slot.0),
        },
        GroupAction::Sync(sync) => format!("sync {}", sync.0),
        GroupAction::RecordPromise(b) => format!("record promise {b}"),
        GroupAction::Send(e) => format!("send {} to {}", e.msg.kind(), e.to.0),
        GroupAction::SendSnapshot {
            to, upto, start, ..
        } => match start {
            SnapshotStart::From(0) => format!("send snapshot {} to {}", upto.0, to.0),
            SnapshotStart::From(at) => format!("send snapshot {} to {} from {at}", upto.0, to.0),
            SnapshotStart::Asked(at) => {
                format!("send snapshot {} to {} asked from {at}", upto.0, to.0)
            }
        },
        GroupAction::AskSnapshot { to, upto, offset } => {
            format!("ask {} for snapshot {} from {offset}", to.0, upto.0)
        }
        GroupAction::SaveSnapshot { upto, urgent, .. } => {
            format!("save snapshot {} urgent {urgent}", upto.0)
        }
        GroupAction::RemoveWalBefore(cut) => format!("remove wal before {cut}"),
        GroupAction::MarkRebuilding => "mark rebuilding".into(),
        GroupAction::EndRebuild => "end rebuild".into(),
        GroupAction::Applied {
            slot, first_index, ..
        } => format!("applied slot {} from index {}", slot.0, first_index.0),
        GroupAction::Entry { index, data } => {
            format!("entry {} {}", index.0, String::from_utf8_lossy(&data))
        }
        GroupAction::SnapshotInstalled { from, upto, .. } => {
            format!("installed snapshot {} from {}", upto.0, from.0)
        }
        GroupAction::Answer(caller, outcome) => format!("answer {caller}: {outcome:?}"),
        GroupAction::AnswerMany(caller, outcomes) => format!("answer {caller}: {outcomes:?}"),
        GroupAction::AnswerRead(caller, outcome) => format!("read {caller}: {outcome:?}"),
    }
}

/// Replica 1 of 3, elected at ballot 1.1 with replica 2's promise.
fn leader(policy: SnapshotPolicy) -> Core {
    let (mut core, _) = core_with(1, policy, Recovery::default());
    core.campaign(&mut Vec::new());
    step(&mut core, GroupInput::Persisted(SyncId(1)));
    let promise = Promise {
        ballot: ballot(1, 1),
        log_start: Slot(0),
        from_slot: Slot(0),
        next_from: None,
        entries: vec![],
    };
    step(&mut core, message(2, 1, Message::Promise(promise)));
    assert!(core.replica().status().leading);
    core
}

/// Drives one proposal at the leader to its answer; returns the actions
/// after the proposal's own.
fn choose(core: &mut Core, caller: u32, client: u64, seq: u64, data: &str) -> Vec<String> {
    let slot = core.replica().log().end();
    let proposed = step(core, propose(caller, client, seq, data));
    let sync = proposed
        .iter()
        .find_map(|a| a.strip_prefix("sync ")?.parse().ok())
        .expect("the accept is synced");
    let mut after = step(core, GroupInput::Persisted(SyncId(sync)));
    let accepted = Accepted {
        ballot: ballot(1, 1),
        slot,
    };
    after.extend(step(core, message(2, 1, Message::Accepted(accepted))));
    after
}

#[test]
fn a_proposal_is_written_sent_and_answered_once_its_slot_applies() {
    let mut core = leader(never());
    assert_eq!(core.wal_next(), Position(1), "the campaign's promise");
    assert_eq!(
        step(&mut core, propose(7, 5, 1, "a")),
        [
            "append@1 accept 0 at 1.1",
            "send Accept to 2",
            "send Accept to 3",
            "sync 2"
        ]
    );
    assert_eq!(
        step(&mut core, GroupInput::Persisted(SyncId(2))),
        [] as [&str; 0]
    );
    let accepted = Accepted {
        ballot: ballot(1, 1),
        slot: Slot(0),
    };
    assert_eq!(
        step(&mut core, message(2, 1, Message::Accepted(accepted))),
        [
            "applied slot 0 from index 0",
            "answer 7: Applied { index: LogIndex(0), reply: b\"r0\" }",
            // The commit record rides on the next sync.
            "append@2 commit 1"
        ]
    );
    assert_eq!(core.applied(), Slot(1));
    assert_eq!(core.machine().applied, [(LogIndex(0), b"a".to_vec())]);
}

#[test]
fn a_retry_of_an_applied_command_gets_its_first_reply_and_applies_nothing() {
    let mut core = leader(never());
    choose(&mut core, 7, 5, 1, "a");
    let after = choose(&mut core, 8, 5, 1, "a again");
    assert_eq!(
        after,
        [
            "applied slot 1 from index 1",
            "answer 8: Applied { index: LogIndex(0), reply: b\"r0\" }",
            "append@4 commit 2"
        ]
    );
    assert_eq!(core.machine().applied.len(), 1, "applied once");
}

#[test]
fn a_leader_that_steps_down_answers_what_waits_in_doubt() {
    let mut core = leader(never());
    step(&mut core, propose(7, 5, 1, "a"));
    // Replica 3 has promised a higher ballot: the leader learns it and
    // steps down, with slot 0 in flight.
    let nack = crate::protocol::Nack {
        ballot: ballot(1, 1),
        promised: ballot(2, 3),
    };
    let actions = step(&mut core, message(3, 1, Message::Nack(nack)));
    assert!(!core.replica().status().leading);
    assert_eq!(
        actions.last().map(String::as_str),
        Some("answer 7: InDoubt { leader: None }"),
        "{actions:?}"
    );
}

#[test]
fn a_snapshot_comes_due_by_slots_and_its_durability_cuts_the_wal_below_the_slots_kept() {
    let policy = SnapshotPolicy {
        every_slots: 2,
        keep_slots: 0,
        ..SnapshotPolicy::default()
    };
    let mut core = leader(policy);
    // Promise @0, accept of slot 0 @1, commit 1 @2, accept of 1 @3.
    choose(&mut core, 1, 5, 1, "a");
    let after = choose(&mut core, 2, 5, 2, "b");
    assert_eq!(
        after,
        [
            "applied slot 1 from index 1",
            "answer 2: Applied { index: LogIndex(1), reply: b\"r1\" }",
            "append@4 commit 2",
            "save snapshot 2 urgent false"
        ]
    );
    assert!(core.is_saving_snapshot());
    // Slot 2 is accepted (@5) while the file is written, captured at 5.
    choose(&mut core, 3, 5, 3, "c");
    assert_eq!(core.wal_next(), Position(7), "commit 3 @6");
    let saved = GroupInput::SnapshotSaved {
        upto: Slot(2),
        encoded: Bytes::from_static(b"file"),
    };
    assert_eq!(step(&mut core, saved), ["remove wal before 5"]);
    assert_eq!(core.snapshot(), Slot(2));
    assert_eq!(core.replica().log().start(), Slot(2));
    // A peer behind the compaction point is sent the durable file.
    let request = crate::protocol::CatchUpRequest {
        ballot: ballot(1, 1),
        from_slot: Slot(0),
    };
    let catch_up = |from| message(from, 1, Message::CatchUpRequest(request.clone()));
    let actions = step(&mut core, catch_up(2));
    assert!(
        actions.contains(&"send snapshot 2 to 2".to_string()),
        "{actions:?}"
    );
    // A peer that lost chunks asks for the rest: it goes on from there; an
    // ask for a snapshot this replica no longer has, or past its end,
    // starts its latest over.
    let wanted = |upto, offset| GroupInput::SnapshotWanted {
        from: NodeId(3),
        upto: Slot(upto),
        offset,
    };
    let asked = |at: u64| vec![format!("send snapshot 2 to 3 asked from {at}")];
    assert_eq!(step(&mut core, wanted(2, 3)), asked(3));
    assert_eq!(step(&mut core, wanted(1, 3)), asked(0));
    assert_eq!(step(&mut core, wanted(2, 4)), asked(0));
    // Once it has asked, a peer asking for the log again is sent the
    // snapshot from where it said it lacked bytes, not from the start.
    assert_eq!(step(&mut core, wanted(2, 2)), asked(2));
    let actions = step(&mut core, catch_up(3));
    assert!(
        actions.contains(&"send snapshot 2 to 3 from 2".to_string()),
        "{actions:?}"
    );
}

#[test]
fn a_snapshot_that_cannot_be_encoded_is_retried_only_when_due_again() {
    let policy = SnapshotPolicy {
        every_slots: 1,
        keep_slots: 0,
        ..SnapshotPolicy::default()
    };
    let mut core = leader(policy);
    let after = choose(&mut core, 1, 5, 1, "a");
    assert_eq!(
        after.last().map(String::as_str),
        Some("save snapshot 1 urgent false")
    );
    assert_eq!(
        step(&mut core, GroupInput::SnapshotSkipped(Slot(1))),
        [] as [&str; 0]
    );
    assert!(!core.is_saving_snapshot());
    let after = choose(&mut core, 2, 5, 2, "b");
    assert_eq!(
        after.last().map(String::as_str),
        Some("save snapshot 2 urgent false")
    );
}

fn peer_snapshot(upto: u64, machine: &'static [u8]) -> Vec<SnapshotChunk> {
    peer_snapshot_of(upto, Bytes::from_static(machine))
}

fn peer_snapshot_of(upto: u64, machine: Bytes) -> Vec<SnapshotChunk> {
    let snapshot = Snapshot {
        upto: Slot(upto),
        next_index: LogIndex(upto * 2),
        promised: ballot(1, 2),
        sessions: Sessions::default(),
        machine,
        schedule: None,
    };
    let encoded = Bytes::from(snapshot.encode().unwrap());
    chunks(Slot(upto), &encoded).collect()
}

#[test]
fn a_snapshot_from_a_peer_installs_once_whole_and_is_saved_at_full_speed() {
    let (mut core, _) = core_with(3, never(), Recovery::default());
    let chunk = peer_snapshot(4, b"state").remove(0);
    let actions = step(&mut core, GroupInput::SnapshotChunk(NodeId(2), chunk));
    assert_eq!(
        actions,
        ["installed snapshot 4 from 2", "save snapshot 4 urgent true"]
    );
    assert_eq!(core.applied(), Slot(4));
    assert_eq!(core.replica().status().commit, Slot(4));
    assert_eq!(core.machine().applied, [(LogIndex(0), b"state".to_vec())]);
    let saved = GroupInput::SnapshotSaved {
        upto: Slot(4),
        encoded: Bytes::new(),
    };
    assert_eq!(step(&mut core, saved), ["remove wal before 0"]);
}

#[test]
fn lost_chunks_are_asked_for_once_per_resend_interval_and_the_rest_installs() {
    let (mut core, _) = core_with(3, never(), Recovery::default());
    let pieces = peer_snapshot_of(4, Bytes::from(vec![9u8; 700 << 10]));
    assert_eq!(pieces.len(), 3);
    let chunk = |i: usize| GroupInput::SnapshotChunk(NodeId(2), pieces[i].clone());
    assert_eq!(step(&mut core, chunk(0)), [] as [&str; 0]);
    let held = pieces[1].offset;
    let ask = format!("ask 2 for snapshot 4 from {held}");
    assert_eq!(
        step(&mut core, chunk(2)),
        [ask.as_str()],
        "the second was lost"
    );
    assert_eq!(step(&mut core, chunk(2)), [] as [&str; 0], "asked already");
    // Nothing more comes (the ask was lost): the clock asks again, once
    // per resend interval.
    let resend = Config::new(NodeId(3), vec![NodeId(1), NodeId(2), NodeId(3)]).resend_ticks;
    let asks = |core: &mut Core, ticks: u32| {
        (0..ticks)
            .flat_map(|_| step(core, GroupInput::Tick))
            .filter(|action| action.starts_with("ask"))
            .collect::<Vec<String>>()
    };
    assert_eq!(
        asks(&mut core, resend),
        vec![ask.clone()],
        "the ask was lost"
    );
    assert_eq!(asks(&mut core, resend - 1), [] as [&str; 0]);
    assert_eq!(asks(&mut core, 1), vec![ask.clone()], "lost again");
    assert_eq!(step(&mut core, chunk(2)), [] as [&str; 0], "asked already");
    assert_eq!(step(&mut core, chunk(1)), [] as [&str; 0]);
    assert_eq!(
        step(&mut core, chunk(2)),
        ["installed snapshot 4 from 2", "save snapshot 4 urgent true"]
    );
    assert_eq!(core.applied(), Slot(4));
}

#[test]
fn a_snapshot_refused_by_the_machine_or_damaged_changes_nothing() {
    let (mut core, _) = core_with(3, never(), Recovery::default());
    let chunk = peer_snapshot(4, b"refuse me").remove(0);
    assert_eq!(
        step(&mut core, GroupInput::SnapshotChunk(NodeId(2), chunk)),
        [] as [&str; 0]
    );
    let mut chunk = peer_snapshot(4, b"state").remove(0);
    let mut damaged = chunk.data.to_vec();
    damaged[30] ^= 1;
    chunk.data = Bytes::from(damaged);
    assert_eq!(
        step(&mut core, GroupInput::SnapshotChunk(NodeId(2), chunk)),
        [] as [&str; 0]
    );
    assert_eq!(core.applied(), Slot(0));
    assert_eq!(core.replica().status().commit, Slot(0));
    assert!(core.machine().applied.is_empty());
    assert!(!core.is_saving_snapshot());
}

#[test]
fn a_replica_whose_disk_was_lost_marks_itself_before_anything_else() {
    let rejoin = Recovery {
        rejoin_if_empty: true,
        ..Recovery::default()
    };
    let (core, first) = core_with(3, never(), rejoin);
    assert_eq!(first, ["mark rebuilding"]);
    assert!(core.replica().is_rejoining());
    // A disk with state is not lost: the flag alone does not rebuild it.
    let writes = vec![(Position(0), Write::Promise(ballot(1, 1)))];
    let kept = Recovery {
        writes,
        wal_next: Position(1),
        rejoin_if_empty: true,
        ..Recovery::default()
    };
    let (core, first) = core_with(3, never(), kept);
    // A data directory from before the promise record gets one from its
    // intact WAL.
    assert_eq!(first, ["record promise 1.1"]);
    assert!(!core.replica().is_rejoining());
    assert_eq!(core.wal_next(), Position(1));
}

/// The promise record rises before the write that raises the promise is
/// appended, and only then: a Prepare above it, an Accept above it, not
/// the Accepts at the ballot already recorded.
#[test]
fn the_promise_is_recorded_before_the_write_that_raises_it() {
    let (mut core, _) = core_with(3, never(), Recovery::default());
    let prepare = Prepare {
        ballot: ballot(9, 2),
        from_slot: Slot(0),
    };
    let actions = step(&mut core, message(2, 3, Message::Prepare(prepare)));
    assert_eq!(actions[..2], ["record promise 9.2", "append@0 promise 9.2"]);
    let accept = |b: Ballot, slot| Accept {
        ballot: b,
        slot: Slot(slot),
        batch: Batch::noop(),
        commit: Slot(0),
    };
    let same = step(
        &mut core,
        message(2, 3, Message::Accept(accept(ballot(9, 2), 0))),
    );
    assert!(!same.iter().any(|a| a.starts_with("record")), "{same:?}");
    let higher = step(
        &mut core,
        message(1, 3, Message::Accept(accept(ballot(10, 1), 1))),
    );
    assert_eq!(
        higher[..2],
        ["record promise 10.1", "append@2 accept 1 at 10.1"]
    );
}

/// What a rebuilding replica asks its peers on its first tick.
fn rejoin_floors(core: &mut Core) -> Vec<Option<Ballot>> {
    let mut out = Vec::new();
    core.step(GroupInput::Tick, &mut out).unwrap();
    out.iter()
        .filter_map(|a| match a {
            GroupAction::Send(Envelope {
                msg: Message::Rejoin(r),
                ..
            }) => Some(r.floor),
            _ => None,
        })
        .collect()
}

/// A replica whose tail was cut and whose promise record survived knows
/// its floor: it asks for a leader above it at once. Without a record it
/// asks every peer's promise first.
#[test]
fn a_cut_tail_with_a_promise_record_rebuilds_from_its_floor() {
    let cut = |promise_record| Recovery {
        writes: vec![(Position(0), Write::Promise(ballot(3, 2)))],
        wal_next: Position(1),
        tail_cut: true,
        promise_record,
        ..Recovery::default()
    };
    let (mut known, first) = core_with(3, never(), cut(Some(ballot(5, 1))));
    assert_eq!(first, ["mark rebuilding"]);
    assert_eq!(rejoin_floors(&mut known), [Some(ballot(5, 1)); 2]);
    let (mut blind, first) = core_with(3, never(), cut(None));
    assert_eq!(first, ["mark rebuilding"], "no record started mid-rebuild");
    assert_eq!(rejoin_floors(&mut blind), [None; 2]);
}

/// A WAL whose damaged tail was cut keeps what came before it, but the
/// replica votes for nothing until it has rebuilt from its peers: the cut
/// frame may have been a promise or an accept that counted.
#[test]
fn a_replica_whose_wal_tail_was_cut_rebuilds_keeping_what_it_holds() {
    let writes = vec![(Position(0), Write::Promise(ballot(3, 2)))];
    let cut = Recovery {
        writes,
        wal_next: Position(1),
        tail_cut: true,
        ..Recovery::default()
    };
    let (core, first) = core_with(3, never(), cut);
    assert_eq!(first, ["mark rebuilding"]);
    assert!(core.replica().is_rejoining());
    assert_eq!(core.replica().status().promised, ballot(3, 2));
    assert_eq!(core.wal_next(), Position(1));
}

#[test]
fn a_restart_reapplies_the_committed_log_behind_the_sessions() {
    let mut core = leader(never());
    choose(&mut core, 1, 5, 1, "a");
    choose(&mut core, 2, 5, 2, "b");
    // What the disk holds: the promise, both accepts and the commit record.
    let accepts: Vec<Write> = (0..2)
        .map(|slot| Write::Accept {
            slot: Slot(slot),
            entry: core.replica().log().get(Slot(slot)).unwrap().clone(),
        })
        .collect();
    let mut writes = vec![Write::Promise(ballot(1, 1))];
    writes.extend(accepts);
    writes.push(Write::Commit(Slot(2)));
    let writes: Vec<(Position, Write)> = writes
        .into_iter()
        .enumerate()
        .map(|(at, w)| (Position(at as u64), w))
        .collect();
    let recovery = Recovery {
        wal_next: Position(writes.len() as u64),
        writes,
        promise_record: Some(ballot(1, 1)),
        ..Recovery::default()
    };
    let (restarted, first) = core_with(1, never(), recovery);
    assert_eq!(
        first,
        ["applied slot 0 from index 0", "applied slot 1 from index 1"]
    );
    assert_eq!(restarted.machine().applied, core.machine().applied);
    assert_eq!(restarted.applied(), Slot(2));
}

#[test]
fn reads_wait_for_the_leader_to_confirm_and_local_reads_do_not() {
    let mut core = leader(never());
    assert_eq!(
        step(&mut core, GroupInput::ReadLocal(Bytes::new(), 4)),
        ["read 4: Value(b\"0 applied\")"]
    );
    let actions = step(&mut core, GroupInput::Read(Bytes::new(), 5));
    assert!(
        !actions.iter().any(|a| a.starts_with("read 5")),
        "{actions:?}"
    );
    let actions = step(&mut core, GroupInput::Tick);
    assert!(
        actions.contains(&"send Heartbeat to 2".to_string()),
        "{actions:?}"
    );
    let ack = HeartbeatAck {
        ballot: ballot(1, 1),
        read_round: 1,
        commit: Slot(0),
    };
    assert_eq!(
        step(&mut core, message(2, 1, Message::HeartbeatAck(ack))),
        ["read 5: Value(b\"0 applied\")"]
    );
}

#[test]
fn stopping_answers_every_waiting_proposal_and_read() {
    let mut core = leader(never());
    step(&mut core, propose(7, 5, 1, "a"));
    step(&mut core, GroupInput::Read(Bytes::new(), 9));
    let mut out = Vec::new();
    core.stop(&mut out);
    assert_eq!(briefs(out), ["answer 7: Stopped", "read 9: Stopped"]);
}
