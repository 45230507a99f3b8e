//! A new leader's recovery, catch-up, snapshots below the log, and restarts.

use super::*;

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
        schedule: None,
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
            schedule: None,
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
    assert!(follower.install_snapshot(Slot(2), LogIndex(2), None));
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
            schedule: None,
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
    assert!(leader.install_snapshot(Slot(5), LogIndex(7), None));

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

    // Nor does it take one of what it has chosen already.
    assert!(!leader.install_snapshot(Slot(5), LogIndex(7), None));
}
