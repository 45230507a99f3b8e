//! Proposals, client requests, reads and leadership as clients meet them.

use super::*;

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
        commit: Slot(0),
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
        commit: Slot(0),
    });
    assert_eq!(
        step(&mut r, from(3, 1, ack)),
        vec![Action::Reply(Reply::ReadReady {
            id: ReadId(1),
            commit: Slot(0)
        })]
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
            schedule: None,
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
        commit: Slot(0),
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
