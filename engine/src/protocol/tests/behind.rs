//! A replica behind its peers: a follower catching up page by page, and a
//! leader elected while its followers held more than it did.

use super::*;

fn catchup_requests(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send(Envelope {
                    msg: Message::CatchUpRequest(_),
                    ..
                })
            )
        })
        .count()
}

#[test]
fn a_duplicated_page_of_catch_up_asks_for_the_next_once() {
    let b = ballot(1, 1);
    let mut follower = replica(3, DurableState::default());
    let heartbeat = Heartbeat {
        ballot: b,
        commit: Slot(3),
        read_round: 0,
    };
    let asked = step(&mut follower, from(1, 3, Message::Heartbeat(heartbeat)));
    assert_eq!(catchup_requests(&asked), 1);
    let page = CatchUp {
        ballot: b,
        commit: Slot(3),
        entries: vec![(Slot(0), batch("a"))],
    };
    let next = step(&mut follower, from(1, 3, Message::CatchUp(page.clone())));
    assert_eq!(
        catchup_requests(&next),
        1,
        "the answer asks for the next page"
    );
    assert_eq!(follower.status().commit, Slot(1));
    // The network delivers the page twice: the copy asks for nothing, or
    // every duplicated page would double the requests from there on.
    let copy = step(&mut follower, from(1, 3, Message::CatchUp(page)));
    assert_eq!(catchup_requests(&copy), 0, "{copy:?}");
}

#[test]
fn a_follower_keeps_the_slots_its_leader_has_not_committed() {
    let b = ballot(2, 1);
    let mut log = Log::default();
    for slot in 0..5 {
        log.insert(
            Slot(slot),
            Entry {
                ballot: ballot(1, 2),
                batch: batch("x"),
            },
        );
    }
    let durable = DurableState {
        promised: ballot(1, 2),
        log,
        commit: Slot(5),
        start_index: LogIndex(0),
        schedule: None,
    };
    let mut follower = replica(3, durable);
    assert_eq!(
        follower.compaction_limit(),
        Slot(5),
        "no leader: its own commit"
    );
    let heartbeat = Heartbeat {
        ballot: b,
        commit: Slot(2),
        read_round: 0,
    };
    step(&mut follower, from(1, 3, Message::Heartbeat(heartbeat)));
    assert_eq!(
        follower.compaction_limit(),
        Slot(2),
        "a leader elected from behind proposes slots 2 to 4 again: keep them to vote"
    );
}

#[test]
fn a_follower_hands_its_snapshot_to_a_leader_behind_it() {
    let b = ballot(1, 1);
    let mut follower = replica(2, DurableState::default());
    assert!(follower.install_snapshot(Slot(5), LogIndex(5), None));
    let accept = |slot: u64| {
        Message::Accept(Accept {
            ballot: b,
            slot: Slot(slot),
            batch: batch("x"),
            commit: Slot(2),
        })
    };
    let first = step(&mut follower, from(1, 2, accept(2)));
    assert!(
        first.contains(&Action::SendSnapshot { to: NodeId(1) }),
        "{first:?}"
    );
    let later = step(&mut follower, from(1, 2, accept(3)));
    assert!(
        !later
            .iter()
            .any(|a| matches!(a, Action::SendSnapshot { .. })),
        "once per resend of the leader's first open slot: {later:?}"
    );
}

/// [`elected`], with three one-command slots proposed.
fn elected_with_three_in_flight() -> (Replica, Ballot) {
    let (mut leader, b, _) = elected();
    for seq in 0..3 {
        let command = Command {
            client: ClientId(1),
            seq,
            data: Bytes::from_static(b"v"),
        };
        step(&mut leader, Input::Propose(command));
    }
    (leader, b)
}

#[test]
fn a_steady_leader_installs_a_snapshot_ahead_of_it_and_goes_on_from_it() {
    let (mut leader, b) = elected_with_three_in_flight();
    assert_eq!(leader.status().inflight, 3);
    assert!(leader.install_snapshot(Slot(2), LogIndex(2), None));
    let status = leader.status();
    assert!(status.leading);
    assert_eq!((status.commit, status.inflight), (Slot(2), 1));
    let sync = SyncId(leader.next_sync.0 - 1);
    step(&mut leader, Input::Persisted(sync));
    let accepted = Message::Accepted(Accepted {
        ballot: b,
        slot: Slot(2),
    });
    let actions = step(&mut leader, from(2, 1, accepted));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Commit { slot: Slot(2), .. })),
        "{actions:?}"
    );
}

/// The slot a snapshot installed while leading leaves at the front may
/// have had all its answers already: no more are coming, and the next
/// tick chooses it (a group once waited on it for ever).
#[test]
fn a_leader_chooses_the_answered_slot_a_snapshot_leaves_at_the_front() {
    let (mut leader, b) = elected_with_three_in_flight();
    let sync = SyncId(leader.next_sync.0 - 1);
    step(&mut leader, Input::Persisted(sync));
    let accepted = Message::Accepted(Accepted {
        ballot: b,
        slot: Slot(2),
    });
    step(&mut leader, from(2, 1, accepted));
    assert_eq!(leader.status().commit, Slot(0), "slots 0 and 1 are open");
    assert!(leader.install_snapshot(Slot(2), LogIndex(2), None));
    assert_eq!(leader.status().commit, Slot(2));
    let actions = step(&mut leader, Input::Tick);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Commit { slot: Slot(2), .. })),
        "{actions:?}"
    );
    assert_eq!(leader.status().commit, Slot(3));
}
