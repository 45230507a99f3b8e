//! Leadership transfer: the leader names a member, which takes over at once.

use super::*;

fn take_overs(actions: &[Action]) -> Vec<(NodeId, Ballot)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                to,
                msg: Message::TakeOver(t),
                ..
            }) => Some((*to, t.ballot)),
            _ => None,
        })
        .collect()
}

/// Replica `id`, following replica 1 at `b` (it promised b).
fn following_one(id: u64, b: Ballot) -> Replica {
    let mut r = replica(id, DurableState::default());
    let prepare = Prepare {
        ballot: b,
        from_slot: Slot(0),
    };
    step(&mut r, from(1, id, Message::Prepare(prepare)));
    assert_eq!(r.leader(), Some(NodeId(1)));
    r
}

#[test]
fn a_leader_hands_over_to_the_member_it_names() {
    let (mut leader, b, _) = elected();
    let to_self = step(&mut leader, Input::TransferLeadership(NodeId(1)));
    let to_stranger = step(&mut leader, Input::TransferLeadership(NodeId(7)));
    assert!(take_overs(&to_self).is_empty() && take_overs(&to_stranger).is_empty());
    let handed = step(&mut leader, Input::TransferLeadership(NodeId(2)));
    assert_eq!(take_overs(&handed), [(NodeId(2), b)]);
    // A follower does not hand over what it does not hold.
    let mut follower = following_one(3, b);
    let asked = step(&mut follower, Input::TransferLeadership(NodeId(2)));
    assert!(take_overs(&asked).is_empty());
}

#[test]
fn the_named_member_campaigns_above_the_old_ballot_at_once() {
    let b = ballot(1, 1);
    let mut next = following_one(2, b);
    let actions = step(
        &mut next,
        from(1, 2, Message::TakeOver(TakeOver { ballot: b })),
    );
    let Some(Action::Persist(Write::Promise(own))) = actions.first() else {
        panic!("no campaign: {actions:?}");
    };
    assert!(*own > b && own.node == NodeId(2), "{own}");
    // Its Prepares leave once its own promise is durable.
    let sync = actions.iter().find_map(|a| match a {
        Action::Sync(s) => Some(*s),
        _ => None,
    });
    let after = step(&mut next, Input::Persisted(sync.expect("synced")));
    let prepares = after
        .iter()
        .filter(|a| matches!(a, Action::Send(Envelope { msg: Message::Prepare(p), .. }) if p.ballot == *own))
        .count();
    assert_eq!(prepares, 2);
}

#[test]
fn a_stale_or_misattributed_hand_over_changes_nothing() {
    let b = ballot(1, 1);
    // It has promised a later ballot since: the hand-over is stale.
    let mut moved_on = following_one(2, b);
    let later = Prepare {
        ballot: ballot(2, 3),
        from_slot: Slot(0),
    };
    step(&mut moved_on, from(3, 2, Message::Prepare(later)));
    let stale = step(
        &mut moved_on,
        from(1, 2, Message::TakeOver(TakeOver { ballot: b })),
    );
    assert!(
        !stale.iter().any(|a| matches!(a, Action::Persist(_))),
        "{stale:?}"
    );
    assert_eq!(moved_on.leader(), Some(NodeId(3)));
    // A hand-over of a ballot the sender does not own is refused.
    let mut r = following_one(2, b);
    let before = format!("{r:?}");
    let mut out = Actions::default();
    let forged = from(3, 2, Message::TakeOver(TakeOver { ballot: b }));
    assert!(matches!(
        r.step(forged, &mut out),
        Err(StepError::BadBallot { .. })
    ));
    assert_eq!(format!("{r:?}"), before);
}
