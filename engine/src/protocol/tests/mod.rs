//! Exact-action tests of single handlers, and refusal of bad input: the
//! shared helpers here, the tests by subject in the files beside.

use bytes::Bytes;

use super::*;

mod behind;
mod clients;
mod membership;
mod recovery;
mod transfer;
mod votes;

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
