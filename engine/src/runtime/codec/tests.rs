//! Round trips, and refusal of bodies that are not what they claim.

use super::wal::WireWrite;
use super::*;
use crate::protocol::Write;
use crate::protocol::{BatchBuilder, ClientId, Command};
use proptest::prelude::*;

const LIMITS: BatchLimits = BatchLimits {
    batch_bytes_max: 1 << 20,
    command_bytes_max: 1 << 16,
};

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn batch(items: &[&[u8]]) -> Batch {
    let mut builder = BatchBuilder::default();
    for (i, data) in items.iter().enumerate() {
        builder.push(&Command {
            client: ClientId(3),
            seq: i as u64,
            data: Bytes::copy_from_slice(data),
        });
    }
    builder.finish()
}

/// A received frame body: owned, 16-byte aligned, as the WAL and the
/// transport hand them over.
fn received(body: &[u8]) -> Bytes {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(body);
    Bytes::from_owner(aligned)
}

fn round_trip(msg: Message) {
    let frame = received(&encode_message(GroupId(7), &msg));
    let (group, decoded) = decode_envelope(&frame, NodeId(1), NodeId(2), LIMITS).unwrap();
    let envelope = Envelope {
        from: NodeId(1),
        to: NodeId(2),
        msg,
    };
    assert_eq!((group, decoded), (GroupId(7), envelope));
}

#[test]
fn an_accept_is_its_own_wal_record_and_only_an_accept_of_this_group_is() {
    let accept = Accept {
        ballot: ballot(3, 1),
        slot: Slot(6),
        batch: batch(&[b"abc", b"d"]),
        commit: Slot(5),
    };
    let frame = received(&encode_message(
        GroupId(7),
        &Message::Accept(accept.clone()),
    ));
    let write = decode_wal_accept(&frame, GroupId(7), LIMITS).unwrap();
    let Write::Accept { slot, entry } = write else {
        panic!("an accept");
    };
    assert_eq!(
        (slot, entry.ballot, &entry.batch),
        (accept.slot, accept.ballot, &accept.batch)
    );
    assert!(frame.as_ptr_range().contains(&entry.batch.bytes().as_ptr()));
    assert!(
        decode_wal_accept(&frame, GroupId(8), LIMITS).is_err(),
        "another group's"
    );
    let heartbeat = Message::Heartbeat(Heartbeat {
        ballot: ballot(3, 1),
        commit: Slot(6),
        read_round: 1,
    });
    let frame = received(&encode_message(GroupId(7), &heartbeat));
    assert!(
        decode_wal_accept(&frame, GroupId(7), LIMITS).is_err(),
        "not an accept"
    );
}

#[test]
fn every_message_round_trips() {
    let b = ballot(3, 1);
    let entry = Entry {
        ballot: ballot(2, 2),
        batch: batch(&[b"x", b"yz"]),
    };
    let vote = Vote {
        epoch: 2,
        commit: Slot(3),
        last_ballot: b,
        last_slot: Slot(9),
        rank: 0,
        node: NodeId(3),
    };
    for msg in [
        Message::Prepare(Prepare {
            ballot: b,
            from_slot: Slot(4),
        }),
        Message::Promise(Promise {
            ballot: b,
            log_start: Slot(1),
            from_slot: Slot(4),
            next_from: Some(Slot(9)),
            entries: vec![(Slot(5), entry.clone())],
        }),
        Message::Nack(Nack {
            ballot: b,
            promised: ballot(4, 2),
        }),
        Message::Accept(Accept {
            ballot: b,
            slot: Slot(6),
            batch: batch(&[b"abc"]),
            commit: Slot(5),
        }),
        Message::Accepted(Accepted {
            ballot: b,
            slot: Slot(6),
        }),
        Message::Heartbeat(Heartbeat {
            ballot: b,
            commit: Slot(6),
            read_round: 8,
        }),
        Message::HeartbeatAck(HeartbeatAck {
            ballot: b,
            read_round: 8,
            commit: Slot(77),
        }),
        Message::CatchUpRequest(CatchUpRequest {
            ballot: b,
            from_slot: Slot(2),
        }),
        Message::CatchUp(CatchUp {
            ballot: b,
            commit: Slot(9),
            entries: vec![(Slot(2), Batch::noop())],
        }),
        Message::Notification(Notification {
            round: 4,
            state: PeerState::Looking(vote),
        }),
        Message::Notification(Notification {
            round: 4,
            state: PeerState::Following(NodeId(2)),
        }),
        Message::Notification(Notification {
            round: 4,
            state: PeerState::Leading,
        }),
        Message::TakeOver(TakeOver { ballot: b }),
        Message::Rejoin(Rejoin { floor: None }),
        Message::Rejoin(Rejoin { floor: Some(b) }),
        Message::RejoinInfo(RejoinInfo {
            promised: b,
            recovery_end: None,
        }),
        Message::RejoinInfo(RejoinInfo {
            promised: b,
            recovery_end: Some(Slot(12)),
        }),
    ] {
        round_trip(msg);
    }
}

#[test]
fn writes_round_trip_and_batches_are_sliced_not_copied() {
    for write in [
        Write::Promise(ballot(5, 2)),
        Write::Commit(Slot(9)),
        Write::Accept {
            slot: Slot(3),
            entry: Entry {
                ballot: ballot(5, 2),
                batch: batch(&[b"k=v"]),
            },
        },
    ] {
        let frame = received(&encode_write(&write));
        let decoded = decode_write(&frame, &frame, LIMITS).unwrap();
        assert_eq!(decoded, write);
        if let Write::Accept { entry, .. } = decoded {
            let range = frame.as_ptr_range();
            assert!(
                range.contains(&entry.batch.bytes().as_ptr()),
                "the batch is a slice of the frame"
            );
        }
    }
}

#[test]
fn a_lying_batch_count_is_refused() {
    let wire = WirePeerFrame {
        group: 0,
        msg: WireMessage::Accept {
            ballot: ballot_out(ballot(1, 1)),
            slot: 0,
            commit: 0,
            count: 2,
            batch: batch(&[b"a"]).bytes().clone(),
        },
    };
    let frame = received(&serialize(&wire));
    assert!(matches!(
        decode_message(&frame, LIMITS),
        Err(DecodeError::Batch(_))
    ));
}

#[test]
fn a_zero_ballot_in_the_wal_is_refused() {
    let frame = received(&serialize(&WireWrite::Promise(WireBallot {
        round: 0,
        node: 1,
    })));
    assert!(matches!(
        decode_write(&frame, &frame, LIMITS),
        Err(DecodeError::Frame(FrameError::Invalid(_)))
    ));
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let frame = received(&bytes);
        let _ = decode_message(&frame, LIMITS);
        let _ = decode_wal_accept(&frame, GroupId(0), LIMITS);
        let _ = decode_write(&frame, &frame, LIMITS);
    }
}

/// The session bounds fit below the format revision, so both are compared.
#[test]
fn the_peer_compat_number_holds_the_revision_and_the_session_bounds() {
    assert_eq!(super::PEER_COMPAT >> 56, super::PEER_FORMAT_REVISION);
    assert_eq!(
        super::PEER_COMPAT & ((1 << 56) - 1),
        crate::protocol::SESSION_BOUNDS
    );
}
