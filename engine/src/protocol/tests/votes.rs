//! Durability ordering of votes, the acceptor's rules, and refusal of bad input.

use super::*;

#[test]
fn a_promise_leaves_only_after_its_write_is_durable() {
    let mut r = replica(2, DurableState::default());
    let prepare = Prepare {
        ballot: ballot(1, 1),
        from_slot: Slot(0),
    };
    let actions = step(&mut r, from(1, 2, Message::Prepare(prepare)));
    assert_eq!(
        actions,
        vec![
            Action::Persist(Write::Promise(ballot(1, 1))),
            Action::Sync(SyncId(1))
        ]
    );
    let actions = step(&mut r, Input::Persisted(SyncId(1)));
    let promise = Promise {
        ballot: ballot(1, 1),
        log_start: Slot(0),
        from_slot: Slot(0),
        next_from: None,
        entries: vec![],
    };
    assert_eq!(actions, vec![send(2, 1, Message::Promise(promise))]);
}

#[test]
fn an_accepted_leaves_only_after_its_write_is_durable() {
    let mut r = replica(2, DurableState::default());
    let accept = Accept {
        ballot: ballot(1, 1),
        slot: Slot(0),
        batch: batch("x"),
        commit: Slot(0),
    };
    let actions = step(&mut r, from(1, 2, Message::Accept(accept)));
    let entry = Entry {
        ballot: ballot(1, 1),
        batch: batch("x"),
    };
    assert_eq!(
        actions,
        vec![
            Action::Persist(Write::Accept {
                slot: Slot(0),
                entry
            }),
            Action::Sync(SyncId(1))
        ]
    );
    let accepted = Accepted {
        ballot: ballot(1, 1),
        slot: Slot(0),
    };
    assert_eq!(
        step(&mut r, Input::Persisted(SyncId(1))),
        vec![send(2, 1, Message::Accepted(accepted))]
    );
}

#[test]
fn an_acceptor_refuses_ballots_below_its_promise() {
    let durable = DurableState {
        promised: ballot(5, 3),
        log: Log::default(),
        commit: Slot(0),
        start_index: LogIndex(0),
        schedule: None,
    };
    let mut r = replica(2, durable);
    let accept = Accept {
        ballot: ballot(4, 1),
        slot: Slot(0),
        batch: batch("late"),
        commit: Slot(0),
    };
    let nack = Nack {
        ballot: ballot(4, 1),
        promised: ballot(5, 3),
    };
    assert_eq!(
        step(&mut r, from(1, 2, Message::Accept(accept))),
        vec![send(2, 1, Message::Nack(nack))]
    );
    assert!(r.log().get(Slot(0)).is_none());
}

/// A new ballot's Prepares leave, and the leader's own vote counts, only
/// after its own promise is durable (a ballot that left before a crash
/// could be issued again after it); its Accepts later leave at once.
#[test]
fn the_leader_counts_itself_after_its_own_persist() {
    let mut r = replica(1, DurableState::default());
    let mut out = Actions::default();
    r.campaign(&mut out);
    let b = ballot(1, 1);
    let prepare = Message::Prepare(Prepare {
        ballot: b,
        from_slot: Slot(0),
    });
    assert_eq!(
        out.as_slice(),
        &[Action::Persist(Write::Promise(b)), Action::Sync(SyncId(1))]
    );
    assert_eq!(
        step(&mut r, Input::Persisted(SyncId(1))),
        vec![send(1, 2, prepare.clone()), send(1, 3, prepare)]
    );
    let promise = Promise {
        ballot: b,
        log_start: Slot(0),
        from_slot: Slot(0),
        next_from: None,
        entries: vec![],
    };
    let actions = step(&mut r, from(2, 1, Message::Promise(promise)));
    // Phase 1 done: a heartbeat announces the commit point; nothing to recover.
    assert!(matches!(
        actions.as_slice(),
        [Action::Send(_), Action::Send(_)]
    ));
    assert!(r.status().leading);

    let actions = step(
        &mut r,
        Input::Propose(Command {
            client: ClientId(1),
            seq: 1,
            data: Bytes::from_static(b"x"),
        }),
    );
    let accept = Message::Accept(Accept {
        ballot: b,
        slot: Slot(0),
        batch: batch("x"),
        commit: Slot(0),
    });
    let entry = Entry {
        ballot: b,
        batch: batch("x"),
    };
    assert_eq!(
        actions,
        vec![
            Action::Persist(Write::Accept {
                slot: Slot(0),
                entry
            }),
            send(1, 2, accept.clone()),
            send(1, 3, accept),
            Action::Sync(SyncId(2)),
        ]
    );
    // A follower's vote alone is no majority: the leader's own is not counted yet.
    let accepted = Message::Accepted(Accepted {
        ballot: b,
        slot: Slot(0),
    });
    assert!(step(&mut r, from(2, 1, accepted)).is_empty());
    let actions = step(&mut r, Input::Persisted(SyncId(2)));
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::Commit {
                    slot: Slot(0),
                    first_index: LogIndex(0),
                    ..
                },
                Action::Persist(Write::Commit(Slot(1)))
            ]
        ),
        "{actions:?}"
    );
}

#[test]
fn bad_messages_are_refused_and_change_nothing() {
    let mut log = Log::default();
    log.insert(
        Slot(0),
        Entry {
            ballot: ballot(1, 1),
            batch: batch("x"),
        },
    );
    let mut r = replica(
        2,
        DurableState {
            promised: ballot(1, 1),
            log,
            commit: Slot(0),
            start_index: LogIndex(0),
            schedule: None,
        },
    );
    let accept = |b: Ballot, slot: u64, commit: u64| {
        Message::Accept(Accept {
            ballot: b,
            slot: Slot(slot),
            batch: batch("y"),
            commit: Slot(commit),
        })
    };
    let bad: Vec<(Input, &str)> = vec![
        (
            from(1, 3, accept(ballot(2, 1), 1, 0)),
            "addressed elsewhere",
        ),
        (from(0, 2, accept(ballot(2, 0), 1, 0)), "node 0 as sender"),
        (
            from(
                1,
                2,
                Message::Accept(Accept {
                    ballot: ballot(2, 1),
                    slot: Slot(1),
                    batch: {
                        let mut builder = BatchBuilder::default();
                        builder.push(&Command {
                            client: ClientId::MEMBERSHIP,
                            seq: 0,
                            data: Bytes::from_static(b"not a membership"),
                        });
                        builder.finish()
                    },
                    commit: Slot(0),
                }),
            ),
            "malformed configuration entry",
        ),
        (from(2, 2, accept(ballot(2, 2), 1, 0)), "claims to be us"),
        (
            from(1, 2, accept(ballot(2, 3), 1, 0)),
            "ballot owned by another node",
        ),
        (from(1, 2, accept(ballot(0, 1), 1, 0)), "round zero"),
        (
            from(1, 2, accept(ballot(2, 1), SLOTS_AHEAD_MAX + 5, 0)),
            "slot out of reach",
        ),
        (
            from(1, 2, accept(ballot(2, 1), u64::MAX, 0)),
            "slot at the end of time",
        ),
        (
            from(1, 2, accept(ballot(2, 1), 1, 7)),
            "commit beyond the slot",
        ),
        (
            from(
                1,
                2,
                Message::Nack(Nack {
                    ballot: ballot(3, 2),
                    promised: ballot(2, 1),
                }),
            ),
            "nack that outbids nothing",
        ),
        (
            from(
                1,
                2,
                Message::Promise(Promise {
                    ballot: ballot(3, 2),
                    log_start: Slot(0),
                    from_slot: Slot(0),
                    next_from: None,
                    entries: vec![(
                        Slot(0),
                        Entry {
                            ballot: ballot(4, 1),
                            batch: batch("z"),
                        },
                    )],
                }),
            ),
            "promise reporting an entry above its ballot",
        ),
        (
            from(
                1,
                2,
                Message::CatchUp(CatchUp {
                    ballot: ballot(2, 1),
                    commit: Slot(5),
                    entries: vec![(Slot(2), batch("a")), (Slot(1), batch("b"))],
                }),
            ),
            "catch-up out of order",
        ),
        (
            from(
                1,
                2,
                Message::Notification(Notification {
                    round: 1,
                    state: PeerState::Following(NodeId(0)),
                }),
            ),
            "notification naming node 0",
        ),
        (
            Input::Persisted(SyncId(77)),
            "persisted a sync never issued",
        ),
    ];
    for (input, why) in bad {
        let before = format!("{r:?}");
        let mut out = Actions::default();
        assert!(r.step(input, &mut out).is_err(), "accepted: {why}");
        assert!(out.is_empty(), "acted on: {why}");
        assert_eq!(before, format!("{r:?}"), "state changed by: {why}");
    }
}

/// Found by the simulator: a late copy of an Accept for a slot the
/// follower compacted (after installing a snapshot) gets no Accepted. The
/// slot is chosen and held only in the snapshot; a vote for it would be
/// backed by nothing on disk.
#[test]
fn an_accept_for_a_compacted_slot_gets_no_vote() {
    let b = ballot(1, 1);
    let mut follower = replica(2, DurableState::from_snapshot(Slot(5), LogIndex(7), b));
    let late = Message::Accept(Accept {
        ballot: b,
        slot: Slot(3),
        batch: batch("chosen long ago"),
        commit: Slot(3),
    });
    let actions = step(&mut follower, from(1, 2, late));
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send(Envelope {
                msg: Message::Accepted(_),
                ..
            }) | Action::Persist(_)
        )),
        "{actions:?}"
    );
    // A slot above the snapshot is accepted and voted for once durable.
    let current = Message::Accept(Accept {
        ballot: b,
        slot: Slot(5),
        batch: batch("new"),
        commit: Slot(5),
    });
    let actions = step(&mut follower, from(1, 2, current));
    assert!(
        actions.iter().any(|a| matches!(a, Action::Persist(_))),
        "{actions:?}"
    );
}

fn sitting(from_node: u64, state: PeerState) -> Input {
    sitting_in(1, from_node, state)
}

fn sitting_in(round: u64, from_node: u64, state: PeerState) -> Input {
    from(
        from_node,
        1,
        Message::Notification(Notification { round, state }),
    )
}

/// A looking node joins a leader others follow only once that leader says
/// it leads, and with a majority behind it.
#[test]
fn a_looking_node_joins_a_leader_once_it_says_it_leads() {
    let mut r = replica(1, DurableState::default());
    step(&mut r, Input::Tick);
    step(&mut r, sitting(2, PeerState::Following(NodeId(3))));
    assert_eq!(r.leader(), None, "3 has not said it leads");
    step(&mut r, sitting(3, PeerState::Leading));
    assert_eq!(r.leader(), Some(NodeId(3)));
}

/// A candidate a majority follows leads, though it never received their
/// votes (a voter behind a change may not know it, and only follows it
/// once the others' votes decided it): ZooKeeper's `checkLeader`. It
/// then runs Phase 1 like any new leader. Followers from another election
/// round do not count (they may be following it from long ago).
#[test]
fn a_looking_candidate_a_majority_follows_leads() {
    let mut r = replica(1, DurableState::default());
    step(&mut r, Input::Tick);
    step(&mut r, sitting_in(7, 2, PeerState::Following(NodeId(1))));
    assert_eq!(r.leader(), None, "followed in another round");
    let out = step(&mut r, sitting(2, PeerState::Following(NodeId(1))));
    assert_eq!(r.leader(), Some(NodeId(1)));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(Write::Promise(b)) if b.node == NodeId(1))),
        "{out:?}"
    );
}

/// A candidate that is no voter leads too once a majority of the voters
/// follow it in its own round (it may know most, the voters being behind
/// a change), though its own following does not count.
#[test]
fn a_candidate_outside_the_voters_leads_once_a_majority_of_them_follows() {
    let members = vec![NodeId(2), NodeId(3), NodeId(4)];
    let mut r = Replica::new(Config::new(NodeId(1), members), DurableState::default()).unwrap();
    step(&mut r, Input::Tick);
    step(&mut r, sitting(2, PeerState::Following(NodeId(1))));
    assert_eq!(r.leader(), None, "one of three voters");
    step(&mut r, sitting(3, PeerState::Following(NodeId(1))));
    assert_eq!(r.leader(), Some(NodeId(1)));
}
