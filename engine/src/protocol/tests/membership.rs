//! Configuration changes: which quorum counts for which slot, who Phase 1
//! must hear, and what a removed node may still do.

use super::*;

fn voters(ids: &[u64]) -> Membership {
    Membership::voters(&ids.iter().map(|i| NodeId(*i)).collect::<Vec<_>>()).unwrap()
}

fn accepts(actions: &[Action]) -> Vec<(NodeId, Slot)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                to,
                msg: Message::Accept(m),
                ..
            }) => Some((*to, m.slot)),
            _ => None,
        })
        .collect()
}

fn sync_of(actions: &[Action]) -> Option<SyncId> {
    actions.iter().rev().find_map(|a| match a {
        Action::Sync(s) => Some(*s),
        _ => None,
    })
}

fn committed(actions: &[Action]) -> Vec<Slot> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect()
}

fn accepted(from_node: u64, b: Ballot, slot: Slot) -> Input {
    from(
        from_node,
        1,
        Message::Accepted(Accepted { ballot: b, slot }),
    )
}

/// Makes every write so far durable and has `voter` accept every slot the
/// leader has in flight, until its commit point reaches `upto`.
fn drive_to(leader: &mut Replica, b: Ballot, voter: u64, upto: Slot) {
    while leader.status().commit < upto {
        let mut out = Actions::default();
        leader.step(Input::Tick, &mut out).unwrap();
        let sync = SyncId(leader.next_sync.0 - 1);
        step(leader, Input::Persisted(sync));
        let commit = leader.status().commit;
        let inflight = u64::from(leader.status().inflight);
        assert!(inflight > 0, "nothing in flight at {commit:?}");
        for slot in commit.0..commit.0 + inflight {
            step(leader, accepted(voter, b, Slot(slot)));
        }
    }
}

#[test]
fn a_change_governs_from_the_delay_on_with_its_own_quorum() {
    let (mut leader, b, _) = elected();
    let mut out = Actions::default();
    leader
        .propose_membership(voters(&[1, 4, 5]), &mut out)
        .unwrap();
    let sent = accepts(out.as_slice());
    assert_eq!(sent, [(NodeId(2), Slot(0)), (NodeId(3), Slot(0))]);
    let refused = leader.propose_membership(voters(&[1, 2]), &mut Actions::default());
    assert_eq!(refused, Err(ChangeRefusal::Pending), "one change at a time");

    // Chosen by the old voters at slot 0: it governs from the delay on, and
    // the new members now hear the leader.
    step(
        &mut leader,
        Input::Persisted(sync_of(out.as_slice()).unwrap()),
    );
    let after = step(&mut leader, accepted(2, b, Slot(0)));
    assert_eq!(committed(&after), [Slot(0)]);
    let from = Slot(CHANGE_DELAY_SLOTS);
    assert_eq!(leader.change_pending_until(), Some(from));
    assert_eq!(leader.schedule().at(from), &voters(&[1, 4, 5]));
    assert!(
        accepts(&after).contains(&(NodeId(4), Slot(1))),
        "no-ops bring the change nearer, and reach the new members: {after:?}"
    );

    // Up to the change, 1 and 2 make a majority; from it on they do not.
    drive_to(&mut leader, b, 2, from);
    assert_eq!(leader.change_pending_until(), None);
    let mut out = Actions::default();
    leader
        .step(Input::Propose(command(9, 1, "x")), &mut out)
        .unwrap();
    step(
        &mut leader,
        Input::Persisted(sync_of(out.as_slice()).unwrap()),
    );
    assert!(committed(&step(&mut leader, accepted(2, b, from))).is_empty());
    assert!(committed(&step(&mut leader, accepted(3, b, from))).is_empty());
    assert_eq!(committed(&step(&mut leader, accepted(4, b, from))), [from]);
}

/// Replica 1 of `durable`, campaigning at ballot 1.1 with its own promise
/// durable: its Prepares are out.
fn campaigning(durable: DurableState) -> (Replica, Ballot) {
    let mut r = replica(1, durable);
    let mut out = Actions::default();
    r.campaign(&mut out);
    step(&mut r, Input::Persisted(sync_of(out.as_slice()).unwrap()));
    (r, ballot(1, 1))
}

/// A whole promise to `b` reporting `entries`.
fn promise(b: Ballot, entries: Vec<(Slot, Entry)>) -> Message {
    Message::Promise(Promise {
        ballot: b,
        log_start: Slot(0),
        from_slot: Slot(0),
        next_from: None,
        entries,
    })
}

#[test]
fn phase_one_waits_for_a_majority_of_a_configuration_found_in_a_promise() {
    let (mut r, b) = campaigning(DurableState::default());
    let found = vec![(
        Slot(0),
        Entry {
            ballot: ballot(0, 2),
            batch: voters(&[1, 4, 5]).to_batch(),
        },
    )];
    let asked = step(&mut r, from(2, 1, promise(b, found)));
    // 1 and 2 are a majority of {1, 2, 3}, but the entry at slot 0 may be
    // chosen: {1, 4, 5} must promise too, so 4 and 5 are asked.
    assert!(!r.status().leading);
    let prepared: Vec<NodeId> = asked
        .iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                to,
                msg: Message::Prepare(_),
                ..
            }) => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(prepared, [NodeId(4), NodeId(5)]);
    step(&mut r, from(4, 1, promise(b, vec![])));
    assert!(r.status().leading, "1 and 4 are a majority of {{1, 4, 5}}");
}

/// A replica whose schedule has {1, 2, 4} in force: node 3 was removed.
fn after_removing_3(id: u64) -> Replica {
    let durable = DurableState {
        schedule: Schedule::from_entries(vec![(Slot(0), voters(&[1, 2, 4]))]),
        ..DurableState::default()
    };
    replica(id, durable)
}

#[test]
fn a_removed_node_cannot_take_a_promise_or_a_vote() {
    let mut r = after_removing_3(2);
    let prepare = Prepare {
        ballot: ballot(9, 3),
        from_slot: Slot(0),
    };
    assert!(step(&mut r, from(3, 2, Message::Prepare(prepare))).is_empty());
    assert_eq!(r.status().promised, Ballot::ZERO);
    // One that has seen more chosen slots than we have may be a member we
    // do not know of yet: it is answered.
    let ahead = Prepare {
        ballot: ballot(9, 3),
        from_slot: Slot(4),
    };
    step(&mut r, from(3, 2, Message::Prepare(ahead)));
    assert_eq!(r.status().promised, ballot(9, 3));
    // Its election votes are not counted.
    let mut looking = after_removing_3(2);
    step(&mut looking, Input::Tick);
    let vote = Vote {
        epoch: 0,
        commit: Slot(0),
        last_ballot: Ballot::ZERO,
        last_slot: Slot(0),
        rank: 0,
        node: NodeId(3),
    };
    let n = Notification {
        round: 1,
        state: PeerState::Looking(vote),
    };
    step(&mut looking, from(3, 2, Message::Notification(n)));
    for _ in 0..10 {
        step(&mut looking, Input::Tick);
    }
    assert_eq!(looking.leader(), None, "3's vote made no majority");
}

#[test]
fn a_leader_that_is_no_longer_a_voter_hands_over() {
    // {1, 2, 3} governs slot 0 only; {2, 3} from slot 1 on.
    let durable = DurableState {
        schedule: Schedule::from_entries(vec![
            (Slot(0), voters(&[1, 2, 3])),
            (Slot(1), voters(&[2, 3])),
        ]),
        ..DurableState::default()
    };
    let (mut r, b) = campaigning(durable);
    step(&mut r, from(2, 1, promise(b, vec![])));
    assert!(!r.status().leading, "{{2, 3}} needs both");
    let flushed = step(&mut r, from(3, 1, promise(b, vec![])));
    assert!(r.status().leading);
    // It fills slot 0 to bring {2, 3} into force, then hands over, to a
    // voter that has seen the change take force, and to none before.
    step(&mut r, Input::Persisted(sync_of(&flushed).unwrap()));
    step(&mut r, accepted(2, b, Slot(0)));
    assert_eq!(r.status().commit, Slot(1));
    let take_overs = |r: &mut Replica| {
        let mut handed = Vec::new();
        for _ in 0..4 {
            handed.extend(step(r, Input::Tick));
        }
        handed
            .iter()
            .filter_map(|a| match a {
                Action::Send(Envelope {
                    to,
                    msg: Message::TakeOver(t),
                    ..
                }) if t.ballot == b => Some(*to),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        take_overs(&mut r),
        [],
        "no voter is known to be past the change"
    );
    let ack = |commit| {
        Message::HeartbeatAck(HeartbeatAck {
            ballot: b,
            read_round: 0,
            commit: Slot(commit),
        })
    };
    step(&mut r, from(2, 1, ack(0)));
    assert_eq!(take_overs(&mut r), [], "2 has not seen {{2, 3}} take force");
    step(&mut r, from(3, 1, ack(1)));
    let handed = take_overs(&mut r);
    assert!(
        !handed.is_empty() && handed.iter().all(|to| *to == NodeId(3)),
        "{handed:?}"
    );
}

#[test]
fn clients_cannot_use_the_reserved_id() {
    let (mut leader, _, _) = elected();
    let out = step(
        &mut leader,
        Input::Propose(Command {
            client: ClientId::MEMBERSHIP,
            seq: 1,
            data: Bytes::from_static(b"x"),
        }),
    );
    assert_eq!(
        out,
        [Action::Reply(Reply::Refused {
            client: ClientId::MEMBERSHIP,
            seq: 1,
            reason: Refusal::ReservedClient,
        })]
    );
}

fn command(client: u64, seq: u64, data: &str) -> Command {
    Command {
        client: ClientId(client),
        seq,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn broadcast_votes(actions: &[Action]) -> Vec<NodeId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                msg:
                    Message::Notification(Notification {
                        state: PeerState::Looking(v),
                        ..
                    }),
                ..
            }) => Some(v.node),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replica_behind_a_change_backs_a_candidate_ahead_of_it_only() {
    let mut r = replica(2, DurableState::default());
    step(&mut r, Input::Tick);
    let vote = |node: u64, commit: u64| Vote {
        epoch: 1,
        commit: Slot(commit),
        last_ballot: ballot(1, 1),
        last_slot: Slot(commit),
        rank: 0,
        node: NodeId(node),
    };
    let heard = |v: Vote| {
        Message::Notification(Notification {
            round: 1,
            state: PeerState::Looking(v),
        })
    };
    // Node 8 is in no configuration 2 knows and has seen no more than it.
    let stranger = step(&mut r, from(8, 2, heard(vote(8, 0))));
    assert!(broadcast_votes(&stranger).is_empty(), "{stranger:?}");
    // Node 9 has seen chosen slots 2 has not: a change may have made it a
    // voter; 2 backs it and passes the vote on.
    let ahead = step(&mut r, from(8, 2, heard(vote(9, 40))));
    assert!(broadcast_votes(&ahead).contains(&NodeId(9)), "{ahead:?}");
}

/// Two candidates ahead of a replica behind a change, with equal logs: it
/// backs the one whose own rank among the voters at that commit point is
/// higher, whatever the voters it knows would say (here neither is one,
/// and by id alone 9 would beat 8). Ranked by what each replica knew,
/// replicas behind and past a change backed different candidates for ever.
#[test]
fn a_replica_behind_a_change_ranks_candidates_as_they_state_it() {
    let mut r = replica(2, DurableState::default());
    step(&mut r, Input::Tick);
    let vote = |node: u64, rank: u32| Vote {
        epoch: 1,
        commit: Slot(40),
        last_ballot: ballot(1, 1),
        last_slot: Slot(40),
        rank,
        node: NodeId(node),
    };
    let heard = |v: Vote| {
        Message::Notification(Notification {
            round: 1,
            state: PeerState::Looking(v),
        })
    };
    let first = step(&mut r, from(8, 2, heard(vote(9, 1))));
    assert_eq!(
        broadcast_votes(&first).first(),
        Some(&NodeId(9)),
        "{first:?}"
    );
    let second = step(&mut r, from(8, 2, heard(vote(8, 2))));
    assert_eq!(
        broadcast_votes(&second).first(),
        Some(&NodeId(8)),
        "{second:?}"
    );
    let again = step(&mut r, from(7, 2, heard(vote(9, 1))));
    assert!(broadcast_votes(&again).is_empty(), "{again:?}");
}

/// A leader learns how far each member has caught up from its answers to
/// heartbeats (a learner is promoted once it is close); a stale answer does
/// not move it back, and only a leader knows.
#[test]
fn a_leader_knows_each_followers_commit_point_from_heartbeat_answers() {
    let (mut leader, b, _) = elected();
    assert_eq!(leader.follower_commit(NodeId(2)), None, "not heard yet");
    let ack = |commit| {
        Message::HeartbeatAck(HeartbeatAck {
            ballot: b,
            read_round: 0,
            commit: Slot(commit),
        })
    };
    step(&mut leader, from(2, 1, ack(40)));
    step(&mut leader, from(2, 1, ack(12)));
    assert_eq!(leader.follower_commit(NodeId(2)), Some(Slot(40)));
    assert_eq!(leader.follower_commit(NodeId(3)), None);

    // A follower answers with its own commit point.
    let mut follower = replica(2, DurableState::default());
    let heartbeat = Message::Heartbeat(Heartbeat {
        ballot: b,
        commit: Slot(0),
        read_round: 3,
    });
    let sent = step(&mut follower, from(1, 2, heartbeat));
    assert!(sent.iter().any(|a| matches!(a,
        Action::Send(Envelope { to: NodeId(1), msg: Message::HeartbeatAck(m), .. })
            if m.commit == Slot(0) && m.read_round == 3)));
    assert_eq!(
        follower.follower_commit(NodeId(1)),
        None,
        "only a leader knows"
    );
}

/// A candidate whose own vote says it is no voter at a commit point ahead
/// of this replica's is backed (this replica may be behind the change that
/// removed it, and it may know most) but its own vote is not counted, though
/// this replica's older configuration names it: with it, a replica behind a
/// change and the removed node decided alone, before the voters' votes came.
#[test]
fn a_candidate_that_states_it_is_no_voter_does_not_count_its_own_vote() {
    let mut r = replica(2, DurableState::default());
    step(&mut r, Input::Tick);
    let outside = Vote {
        epoch: 1,
        commit: Slot(40),
        last_ballot: ballot(1, 1),
        last_slot: Slot(40),
        rank: 0,
        node: NodeId(3),
    };
    let heard = Message::Notification(Notification {
        round: 1,
        state: PeerState::Looking(outside),
    });
    step(&mut r, from(3, 2, heard.clone()));
    for _ in 0..5 {
        step(&mut r, Input::Tick);
    }
    assert_eq!(r.leader(), None, "3's own vote made a majority with 2's");
    step(&mut r, from(1, 2, heard));
    for _ in 0..5 {
        step(&mut r, Input::Tick);
    }
    assert_eq!(r.leader(), Some(NodeId(3)), "1 and 2 back it");
}
