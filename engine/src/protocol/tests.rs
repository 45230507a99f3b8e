//! Exact-action tests of single handlers, and refusal of bad input.

use bytes::Bytes;

use super::*;

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn replica(id: u64, durable: DurableState) -> Replica {
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    Replica::new(Config::new(NodeId(id), members), durable).unwrap()
}

fn from(from: u64, to: u64, msg: Message) -> Input {
    Input::Message(Envelope {
        from: NodeId(from),
        to: NodeId(to),
        msg,
    })
}

fn batch(data: &str) -> Batch {
    let mut builder = BatchBuilder::default();
    builder.push(&Command {
        client: ClientId(1),
        seq: 1,
        data: Bytes::copy_from_slice(data.as_bytes()),
    });
    builder.finish()
}

fn step(replica: &mut Replica, input: Input) -> Vec<Action> {
    let mut out = Actions::default();
    replica.step(input, &mut out).unwrap();
    out.as_slice().to_vec()
}

/// Replica 1 of 3, fresh and elected at ballot 1.1: it campaigned, its own
/// promise is durable and replica 2's promise is in. Returns what it did.
fn elected() -> (Replica, Ballot, Vec<Action>) {
    elected_with(|_| {})
}

/// [`elected`], with its config adjusted first.
fn elected_with(tune: impl FnOnce(&mut Config)) -> (Replica, Ballot, Vec<Action>) {
    let mut config = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
    tune(&mut config);
    let mut r = Replica::new(config, DurableState::default()).unwrap();
    let mut out = Actions::default();
    r.campaign(&mut out);
    let mut actions = out.as_slice().to_vec();
    actions.extend(step(&mut r, Input::Persisted(SyncId(1))));
    let b = ballot(1, 1);
    let promise = Promise {
        ballot: b,
        log_start: Slot(0),
        from_slot: Slot(0),
        next_from: None,
        entries: vec![],
    };
    actions.extend(step(&mut r, from(2, 1, Message::Promise(promise))));
    assert!(r.status().leading);
    (r, b, actions)
}

/// The read round of the heartbeat among `actions` (a tick starts a round
/// for reads waiting on one).
fn read_round_sent(actions: &[Action]) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Send(Envelope {
                msg: Message::Heartbeat(h),
                ..
            }) => Some(h.read_round),
            _ => None,
        })
        .expect("a heartbeat starts the read round")
}

fn send(from: u64, to: u64, msg: Message) -> Action {
    Action::Send(Envelope {
        from: NodeId(from),
        to: NodeId(to),
        msg,
    })
}

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

/// Recovery re-proposes the value of the highest ballot for each open slot
/// and fills gaps with no-ops.
#[test]
fn recovery_takes_the_highest_ballot_and_fills_holes() {
    let mut log = Log::default();
    log.insert(
        Slot(0),
        Entry {
            ballot: ballot(2, 3),
            batch: batch("new"),
        },
    );
    let durable = DurableState {
        promised: ballot(2, 3),
        log,
        commit: Slot(0),
        start_index: LogIndex(0),
    };
    let mut r = replica(1, durable);
    // Recovered values are whole batches already: the pipeline window,
    // there to let new commands share slots, does not hold them back.
    r.set_pipeline_window(1);
    let mut out = Actions::default();
    r.campaign(&mut out);
    let b = ballot(3, 1);
    step(&mut r, Input::Persisted(SyncId(1)));
    let promise = Promise {
        ballot: b,
        log_start: Slot(0),
        from_slot: Slot(0),
        next_from: None,
        entries: vec![
            (
                Slot(0),
                Entry {
                    ballot: ballot(1, 3),
                    batch: batch("old"),
                },
            ),
            (
                Slot(2),
                Entry {
                    ballot: ballot(1, 2),
                    batch: batch("w"),
                },
            ),
        ],
    };
    let actions = step(&mut r, from(2, 1, Message::Promise(promise)));
    let proposed: Vec<(Slot, Batch)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                to: NodeId(2),
                msg: Message::Accept(m),
                ..
            }) => Some((m.slot, m.batch.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        proposed,
        vec![
            (Slot(0), batch("new")),
            (Slot(1), Batch::noop()),
            (Slot(2), batch("w"))
        ]
    );
}

#[test]
fn followers_fetch_slots_they_hold_under_another_ballot() {
    let mut log = Log::default();
    log.insert(
        Slot(0),
        Entry {
            ballot: ballot(1, 2),
            batch: batch("stale"),
        },
    );
    let mut r = replica(
        3,
        DurableState {
            promised: ballot(1, 2),
            log,
            commit: Slot(0),
            start_index: LogIndex(0),
        },
    );
    let heartbeat = Heartbeat {
        ballot: ballot(2, 1),
        commit: Slot(1),
        read_round: 0,
    };
    let actions = step(&mut r, from(1, 3, Message::Heartbeat(heartbeat)));
    let request = CatchUpRequest {
        ballot: ballot(2, 1),
        from_slot: Slot(0),
    };
    assert!(
        actions.contains(&send(3, 1, Message::CatchUpRequest(request))),
        "{actions:?}"
    );
    assert_eq!(
        r.status().commit,
        Slot(0),
        "a value from another ballot is not known chosen"
    );
    let catchup = CatchUp {
        ballot: ballot(2, 1),
        commit: Slot(1),
        entries: vec![(Slot(0), batch("chosen"))],
    };
    let actions = step(&mut r, from(1, 3, Message::CatchUp(catchup)));
    assert!(actions.iter().any(
        |a| matches!(a, Action::Commit { slot: Slot(0), batch: b, .. } if *b == batch("chosen"))
    ));
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
        (from(9, 2, accept(ballot(2, 9), 1, 0)), "unknown sender"),
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
                    state: PeerState::Following(NodeId(42)),
                }),
            ),
            "notification naming a stranger",
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

#[test]
fn proposals_to_a_follower_are_redirected() {
    let mut r = replica(2, DurableState::default());
    step(
        &mut r,
        from(
            1,
            2,
            Message::Heartbeat(Heartbeat {
                ballot: ballot(1, 1),
                commit: Slot(0),
                read_round: 0,
            }),
        ),
    );
    let actions = step(
        &mut r,
        Input::Propose(Command {
            client: ClientId(4),
            seq: 9,
            data: Bytes::new(),
        }),
    );
    assert_eq!(
        actions,
        vec![Action::Reply(Reply::Refused {
            client: ClientId(4),
            seq: 9,
            reason: Refusal::NotLeader(Some(NodeId(1)))
        })]
    );
}

#[test]
fn reads_wait_for_a_majority_round_after_they_arrive() {
    let (mut r, b, _) = elected();
    assert!(
        step(&mut r, Input::Read(ReadId(1))).is_empty(),
        "no read is served before confirmation"
    );
    let old_ack = Message::HeartbeatAck(HeartbeatAck {
        ballot: b,
        read_round: 0,
    });
    assert!(
        step(&mut r, from(2, 1, old_ack)).is_empty(),
        "an ack of an older round proves nothing"
    );
    let actions = step(&mut r, Input::Tick);
    let round = read_round_sent(&actions);
    let ack = Message::HeartbeatAck(HeartbeatAck {
        ballot: b,
        read_round: round,
    });
    assert_eq!(
        step(&mut r, from(3, 1, ack)),
        vec![Action::Reply(Reply::ReadReady {
            id: ReadId(1),
            commit: Slot(0)
        })]
    );
}

/// A follower that needs slots the leader compacted is handed to the
/// snapshot path; after installing one it resumes from the snapshot point.
#[test]
fn catchup_below_the_compaction_point_asks_for_a_snapshot() {
    let (mut leader, b, _) = elected();
    for (i, data) in ["a", "b", "c"].into_iter().enumerate() {
        let command = Command {
            client: ClientId(1),
            seq: i as u64,
            data: Bytes::from_static(data.as_bytes()),
        };
        step(&mut leader, Input::Propose(command));
        step(&mut leader, Input::Persisted(SyncId(i as u64 + 2)));
        let accepted = Message::Accepted(Accepted {
            ballot: b,
            slot: Slot(i as u64),
        });
        step(&mut leader, from(2, 1, accepted));
    }
    assert_eq!(leader.status().commit, Slot(3));
    leader.compact(Slot(2));
    let request = Message::CatchUpRequest(CatchUpRequest {
        ballot: b,
        from_slot: Slot(1),
    });
    assert_eq!(
        step(&mut leader, from(3, 1, request)),
        vec![Action::SendSnapshot { to: NodeId(3) }]
    );
    let request = Message::CatchUpRequest(CatchUpRequest {
        ballot: b,
        from_slot: Slot(2),
    });
    let actions = step(&mut leader, from(3, 1, request));
    assert!(
        matches!(actions.as_slice(), [Action::Send(Envelope { msg: Message::CatchUp(c), .. })] if c.entries.len() == 1),
        "{actions:?}"
    );

    let mut follower = replica(3, DurableState::default());
    assert!(follower.install_snapshot(Slot(2), LogIndex(2)));
    assert_eq!(
        (follower.status().commit, follower.status().commit_index),
        (Slot(2), LogIndex(2))
    );
    let catchup = CatchUp {
        ballot: b,
        commit: Slot(3),
        entries: vec![(Slot(2), batch("c"))],
    };
    let actions = step(&mut follower, from(1, 3, Message::CatchUp(catchup)));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Commit {
            slot: Slot(2),
            first_index: LogIndex(2),
            ..
        }
    )));
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

/// Found by the simulator: a read that arrives during Phase 1 must also wait
/// for the slots the new leader recovers, or it misses writes acknowledged
/// by the previous leader.
#[test]
fn a_read_during_phase_one_waits_for_the_recovered_slots() {
    let mut log = Log::default();
    log.insert(
        Slot(0),
        Entry {
            ballot: ballot(1, 2),
            batch: batch("acked by the old leader"),
        },
    );
    let mut r = replica(
        1,
        DurableState {
            promised: ballot(1, 2),
            log,
            commit: Slot(0),
            start_index: LogIndex(0),
        },
    );
    let mut out = Actions::default();
    r.campaign(&mut out);
    let b = ballot(2, 1);
    assert!(step(&mut r, Input::Read(ReadId(1))).is_empty());
    step(&mut r, Input::Persisted(SyncId(1)));
    step(
        &mut r,
        from(
            2,
            1,
            Message::Promise(Promise {
                ballot: b,
                log_start: Slot(0),
                from_slot: Slot(0),
                next_from: None,
                entries: vec![],
            }),
        ),
    );
    assert!(r.status().leading);
    let actions = step(&mut r, Input::Tick);
    let round = read_round_sent(&actions);
    let ack = Message::HeartbeatAck(HeartbeatAck {
        ballot: b,
        read_round: round,
    });
    let actions = step(&mut r, from(2, 1, ack));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Reply(Reply::ReadReady { .. }))),
        "served before the recovered slot committed: {actions:?}"
    );
    step(&mut r, Input::Persisted(SyncId(2)));
    let actions = step(
        &mut r,
        from(
            2,
            1,
            Message::Accepted(Accepted {
                ballot: b,
                slot: Slot(0),
            }),
        ),
    );
    let commit_then_read: Vec<_> = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Commit { .. } | Action::Reply(Reply::ReadReady { .. })
            )
        })
        .collect();
    assert!(
        matches!(
            commit_then_read.as_slice(),
            [
                Action::Commit { slot: Slot(0), .. },
                Action::Reply(Reply::ReadReady {
                    id: ReadId(1),
                    commit: Slot(1)
                })
            ]
        ),
        "{actions:?}"
    );
}

/// A restarted replica resumes from its commit record: its Phase 1 asks
/// only for what it does not know to be chosen (asking from slot 0 made
/// the promises of a long log too large to send).
#[test]
fn the_commit_point_survives_a_restart() {
    let (mut r, b, elected_actions) = elected();
    let mut writes: Vec<Write> = elected_actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Persist(w) => Some(w),
            _ => None,
        })
        .collect();
    for (i, data) in ["a", "b"].into_iter().enumerate() {
        let command = Command {
            client: ClientId(1),
            seq: i as u64,
            data: Bytes::from_static(data.as_bytes()),
        };
        let mut all = step(&mut r, Input::Propose(command));
        all.extend(step(&mut r, Input::Persisted(SyncId(i as u64 + 2))));
        all.extend(step(
            &mut r,
            from(
                2,
                1,
                Message::Accepted(Accepted {
                    ballot: b,
                    slot: Slot(i as u64),
                }),
            ),
        ));
        writes.extend(all.into_iter().filter_map(|a| match a {
            Action::Persist(w) => Some(w),
            _ => None,
        }));
    }
    assert!(writes.contains(&Write::Commit(Slot(2))), "{writes:?}");
    let restarted = replica(1, DurableState::replay(&writes));
    assert_eq!(
        (restarted.status().commit, restarted.status().commit_index),
        (Slot(2), LogIndex(2))
    );
    let again: Vec<(Slot, LogIndex)> = restarted.committed().map(|(s, i, _)| (s, i)).collect();
    assert_eq!(again, vec![(Slot(0), LogIndex(0)), (Slot(1), LogIndex(1))]);
    // A commit record beyond what the log holds is never believed.
    let mut short = writes.clone();
    short.push(Write::Commit(Slot(9)));
    assert_eq!(DurableState::replay(&short).commit, Slot(2));
}

/// Promises come in pages of at most `page_bytes_max` batch bytes, so a
/// leader far behind never asks for one message larger than a frame; it
/// asks page after page and recovers every value.
#[test]
fn promises_are_paged_and_recovery_gathers_every_page() {
    let small = |id: u64, durable: DurableState| {
        let members = vec![NodeId(1), NodeId(2), NodeId(3)];
        let mut config = Config::new(NodeId(id), members);
        config.command_bytes_max = 8;
        config.batch_bytes_max = 30;
        config.page_bytes_max = 30;
        config.queue_bytes_max = 1 << 10;
        Replica::new(config, durable).unwrap()
    };
    let mut log = Log::default();
    for (slot, data) in ["a", "b", "c"].into_iter().enumerate() {
        log.insert(
            Slot(slot as u64),
            Entry {
                ballot: ballot(1, 2),
                batch: batch(data),
            },
        );
    }
    let mut acceptor = small(
        2,
        DurableState {
            promised: ballot(1, 2),
            log,
            commit: Slot(0),
            start_index: LogIndex(0),
        },
    );
    // It saw ballot 1.2 before, so it campaigns at 2.1.
    let mut leader = small(
        1,
        DurableState {
            promised: ballot(1, 2),
            ..DurableState::default()
        },
    );
    let mut out = Actions::default();
    leader.campaign(&mut out);
    let mut to_acceptor: Vec<Envelope> = Vec::new();
    let mut pages = 0;
    let mut accepts = Vec::new();
    let mut pending: Vec<Action> = out.drain().collect();
    pending.extend(step(&mut leader, Input::Persisted(SyncId(1))));
    for _ in 0..10 {
        for action in pending.drain(..) {
            match action {
                Action::Send(e) if e.to == NodeId(2) => match &e.msg {
                    Message::Accept(a) => accepts.push((a.slot, a.batch.clone())),
                    _ => to_acceptor.push(e),
                },
                _ => {}
            }
        }
        for envelope in to_acceptor.drain(..) {
            let mut replies = step(&mut acceptor, Input::Message(envelope));
            if let Some(Action::Sync(id)) = replies
                .iter()
                .find(|a| matches!(a, Action::Sync(_)))
                .cloned()
            {
                replies.extend(step(&mut acceptor, Input::Persisted(id)));
            }
            for reply in replies {
                if let Action::Send(e) = reply.clone() {
                    if e.to != NodeId(1) {
                        continue;
                    }
                    if let Message::Promise(p) = &e.msg {
                        pages += 1;
                        assert!(
                            p.entries.len() <= 1,
                            "a page holds one 21-byte batch: {p:?}"
                        );
                    }
                    pending.extend(step(&mut leader, Input::Message(e)));
                }
            }
        }
    }
    assert_eq!(pages, 3, "three entries, three pages");
    assert!(leader.status().leading);
    assert_eq!(
        accepts,
        vec![
            (Slot(0), batch("a")),
            (Slot(1), batch("b")),
            (Slot(2), batch("c"))
        ]
    );
}

/// An acceptor that compacted past a new leader's commit point hands it its
/// snapshot; the leader installs it during Phase 1, asks again from there
/// and completes Phase 1. (Found on real processes: a restarted replica
/// with an older snapshot won the election and could never finish Phase 1,
/// since every promise lacked slots that only snapshots held.)
#[test]
fn a_leader_behind_an_acceptors_compaction_point_recovers_from_its_snapshot() {
    let compacted = DurableState::from_snapshot(Slot(5), LogIndex(7), Ballot::ZERO);
    let mut acceptor = replica(2, compacted);
    let b = ballot(1, 1);
    let prepare = Prepare {
        ballot: b,
        from_slot: Slot(0),
    };
    let actions = step(&mut acceptor, from(1, 2, Message::Prepare(prepare)));
    assert!(
        actions.contains(&Action::SendSnapshot { to: NodeId(1) }),
        "{actions:?}"
    );

    let mut leader = replica(1, DurableState::default());
    let mut out = Actions::default();
    leader.campaign(&mut out);
    step(&mut leader, Input::Persisted(SyncId(1)));
    let behind = Promise {
        ballot: b,
        log_start: Slot(5),
        from_slot: Slot(0),
        next_from: None,
        entries: vec![],
    };
    step(&mut leader, from(2, 1, Message::Promise(behind)));
    assert!(
        !leader.status().leading,
        "a promise lacking slots 0..5 counts for nothing"
    );
    assert!(leader.install_snapshot(Slot(5), LogIndex(7)));

    let mut asked_from = None;
    for _ in 0..=leader.config().resend_ticks {
        for action in step(&mut leader, Input::Tick) {
            if let Action::Send(Envelope {
                to: NodeId(2),
                msg: Message::Prepare(p),
                ..
            }) = action
            {
                asked_from = Some(p.from_slot);
            }
        }
    }
    assert_eq!(asked_from, Some(Slot(5)), "Prepare again from the snapshot");
    let promise = Promise {
        ballot: b,
        log_start: Slot(5),
        from_slot: Slot(5),
        next_from: None,
        entries: vec![],
    };
    step(&mut leader, from(2, 1, Message::Promise(promise)));
    let status = leader.status();
    assert!(status.leading, "Phase 1 completes");
    assert_eq!((status.commit, status.commit_index), (Slot(5), LogIndex(7)));

    // A steady leader refuses a snapshot: its log holds what it needs.
    assert!(!leader.install_snapshot(Slot(9), LogIndex(20)));
}

/// The transport's word that the leader's connection is gone makes a
/// follower look at once; the same word about another peer changes nothing.
#[test]
fn a_follower_whose_leader_is_unreachable_looks_at_once() {
    let mut follower = replica(2, DurableState::default());
    let heartbeat = Heartbeat {
        ballot: ballot(1, 1),
        commit: Slot(0),
        read_round: 0,
    };
    step(&mut follower, from(1, 2, Message::Heartbeat(heartbeat)));
    assert_eq!(follower.leader(), Some(NodeId(1)));

    let actions = step(&mut follower, Input::PeerUnreachable(NodeId(3)));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(follower.leader(), Some(NodeId(1)));

    let actions = step(&mut follower, Input::PeerUnreachable(NodeId(1)));
    assert!(follower.status().looking);
    let notified: Vec<NodeId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                to,
                msg: Message::Notification(_),
                ..
            }) => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(notified, vec![NodeId(1), NodeId(3)], "{actions:?}");
}

/// A session's commands in one step are taken as a prefix: after a refusal,
/// its later commands are refused too, so a retry never finds a later
/// sequence number applied and an earlier one missing.
#[test]
fn a_sessions_request_is_refused_whole_and_its_later_ones_too() {
    let (mut leader, _, _) = elected();
    let command = |client: u64, seq: u64, bytes: usize| Command {
        client: ClientId(client),
        seq,
        data: Bytes::from(vec![b'x'; bytes]),
    };
    let too_large = leader.config().command_bytes_max as usize + 1;
    let commands = vec![
        command(5, 1, 8),
        command(5, 2, too_large),
        command(5, 3, 8),
        command(6, 1, 8),
        command(0, 0, too_large),
        command(0, 0, 8),
        command(5, 4, 8),
    ];
    let actions = step(&mut leader, Input::ProposeBatch(commands));
    let refused: Vec<(u64, u64, Refusal)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(Reply::Refused {
                client,
                seq,
                reason,
            }) => Some((client.0, *seq, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        vec![
            (5, 1, Refusal::TooLarge),
            (5, 2, Refusal::TooLarge),
            (5, 3, Refusal::TooLarge),
            (0, 0, Refusal::TooLarge),
            (5, 4, Refusal::Busy),
        ],
        "client 6 and sessionless commands are unaffected"
    );
}

/// Each slot is chosen on its own: a request split over two could have
/// its first slot lost to a no-op and its second chosen, and the session
/// would then call the retry of its first commands stale, as if applied.
#[test]
fn a_request_goes_into_one_slot_whole_or_is_refused_as_too_large() {
    // Commands of 8 bytes take 28 with their header: three fit a batch.
    let (mut leader, _, _) = elected_with(|c| {
        c.command_bytes_max = 8;
        c.batch_bytes_max = 100;
    });
    leader.set_pipeline_window(1);
    let command = |client: u64, seq: u64| Command {
        client: ClientId(client),
        seq,
        data: Bytes::from(vec![b'x'; 8]),
    };
    step(&mut leader, Input::Propose(command(9, 1)));
    assert_eq!(
        leader.status().inflight,
        1,
        "slot 0 out; the window is full"
    );
    let actions = step(
        &mut leader,
        Input::ProposeBatch(vec![
            command(1, 1),
            command(2, 1),
            command(2, 2),
            command(2, 3),
            command(3, 1),
            command(3, 2),
            command(3, 3),
            command(3, 4),
        ]),
    );
    let refused: Vec<(u64, u64)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(Reply::Refused {
                client,
                seq,
                reason: Refusal::TooLarge,
            }) => Some((client.0, *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        vec![(3, 1), (3, 2), (3, 3), (3, 4)],
        "four never fit"
    );
    // Client 2's three did not fit beside client 1's: a slot of their own.
    leader.set_pipeline_window(3);
    let actions = step(&mut leader, Input::Tick);
    let slots: Vec<Vec<(u64, u64)>> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                to: NodeId(2),
                msg: Message::Accept(accept),
                ..
            }) => Some(accept.batch.iter().map(|c| (c.client.0, c.seq)).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(slots, vec![vec![(1, 1)], vec![(2, 1), (2, 2), (2, 3)]]);
}

#[test]
fn commands_beyond_the_pipeline_window_wait_and_share_one_slot() {
    let (mut leader, b, _) = elected();
    assert_eq!(leader.set_pipeline_window(0), 1, "clamped up to one slot");
    let cap = leader.config().pipeline_max;
    assert_eq!(
        leader.set_pipeline_window(cap + 1),
        cap,
        "clamped to pipeline_max"
    );
    leader.set_pipeline_window(1);
    let propose = |seq: u64| {
        Input::Propose(Command {
            client: ClientId(1),
            seq,
            data: Bytes::from(vec![b'x'; 4]),
        })
    };
    let accepts = |actions: &[Action]| -> Vec<(Slot, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Envelope {
                    to: NodeId(2),
                    msg: Message::Accept(accept),
                    ..
                }) => Some((accept.slot, accept.batch.len())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(accepts(&step(&mut leader, propose(1))), vec![(Slot(0), 1)]);
    // One slot is in flight: the next commands wait, in one batch.
    assert!(accepts(&step(&mut leader, propose(2))).is_empty());
    assert!(accepts(&step(&mut leader, propose(3))).is_empty());
    assert_eq!(leader.status().inflight, 1);
    let accepted = Message::Accepted(Accepted {
        ballot: b,
        slot: Slot(0),
    });
    // Sync 1 was the promise, sync 2 slot 0's accept.
    let mut actions = step(&mut leader, Input::Persisted(SyncId(2)));
    actions.extend(step(&mut leader, from(2, 1, accepted)));
    assert_eq!(leader.status().commit, Slot(1));
    assert_eq!(accepts(&actions), vec![(Slot(1), 2)], "{actions:?}");
    // A wider window lets the next proposal go at once, beside slot 1.
    leader.set_pipeline_window(2);
    assert_eq!(accepts(&step(&mut leader, propose(4))), vec![(Slot(2), 1)]);
    assert_eq!(leader.status().inflight, 2);
}

/// A group of one member is its own majority: ticks make it look, vote
/// for itself, lead once its own promise is durable, and choose a command
/// once its own accept is.
#[test]
fn a_group_of_one_elects_itself_and_commits_alone() {
    let mut r = Replica::new(
        Config::new(NodeId(1), vec![NodeId(1)]),
        DurableState::default(),
    )
    .unwrap();
    let mut pending = Vec::new();
    let mut committed = Vec::new();
    let mut proposed = false;
    for _ in 0..500 {
        let mut inputs = vec![Input::Tick];
        inputs.extend(pending.drain(..).map(Input::Persisted));
        if r.status().leading && !proposed {
            inputs.push(Input::Propose(Command {
                client: ClientId(1),
                seq: 1,
                data: Bytes::from_static(b"alone"),
            }));
            proposed = true;
        }
        for input in inputs {
            for action in step(&mut r, input) {
                match action {
                    Action::Sync(sync) => pending.push(sync),
                    Action::Commit { batch, .. } => committed.push(batch),
                    Action::Send(e) => panic!("a group of one sends nothing: {e:?}"),
                    _ => {}
                }
            }
        }
        if !committed.is_empty() {
            break;
        }
    }
    assert!(r.status().leading, "{:?}", r.status());
    let data: Vec<Vec<u8>> = committed
        .iter()
        .flat_map(|b| b.iter().map(|c| c.data.to_vec()).collect::<Vec<_>>())
        .collect();
    assert!(data.contains(&b"alone".to_vec()), "{data:?}");
}
