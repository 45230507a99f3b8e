//! One frame from the wire to the disk: an Accept is encoded once, by the
//! leader, and those bytes are its WAL record, what every follower is sent,
//! and (on a follower) its WAL record again, stored as received.

use bytes::Bytes;

use crate::protocol::{Accept, Ballot, Batch, Entry, GroupId, Message, Slot};
use crate::runtime::codec::encode_message;

/// An Accept's frame body, with what identifies it.
struct AcceptFrame {
    slot: Slot,
    ballot: Ballot,
    commit: Slot,
    /// The batch's bytes: the same `Bytes` (not equal ones) means the same
    /// value the frame was made of.
    batch: Bytes,
    body: Bytes,
}

impl AcceptFrame {
    fn holds(&self, slot: Slot, ballot: Ballot, batch: &Batch) -> bool {
        let same_bytes = |a: &Bytes, b: &Bytes| a.as_ptr() == b.as_ptr() && a.len() == b.len();
        self.slot == slot && self.ballot == ballot && same_bytes(&self.batch, batch.bytes())
    }
}

/// The Accept frames of the step under way: the one received from the
/// leader, or the one this leader encoded.
#[derive(Default)]
pub(super) struct Frames {
    accept: Option<AcceptFrame>,
}

impl Frames {
    /// A peer's message arrived in `frame`: an Accept's frame is kept for
    /// its WAL record.
    pub(super) fn received(&mut self, msg: &Message, frame: Bytes) {
        if let Message::Accept(accept) = msg {
            self.accept = Some(AcceptFrame {
                slot: accept.slot,
                ballot: accept.ballot,
                commit: accept.commit,
                batch: accept.batch.bytes().clone(),
                body: frame,
            });
        }
    }

    /// The WAL record of the accepted `entry` at `slot`: the frame it came
    /// in, or a new Accept frame (with `commit`, the commit point it is
    /// sent with) that the sends of the same Accept then share.
    pub(super) fn wal_record(
        &mut self,
        group: GroupId,
        slot: Slot,
        entry: &Entry,
        commit: Slot,
    ) -> Bytes {
        if let Some(frame) = self
            .accept
            .as_ref()
            .filter(|f| f.holds(slot, entry.ballot, &entry.batch))
        {
            return frame.body.clone();
        }
        let accept = Accept {
            ballot: entry.ballot,
            slot,
            batch: entry.batch.clone(),
            commit,
        };
        self.encode_accept(group, &accept)
    }

    /// The frame body of `msg` to a peer: an Accept encoded already (for
    /// the WAL or another follower) is sent as it is.
    pub(super) fn message(&mut self, group: GroupId, msg: &Message) -> Bytes {
        let Message::Accept(accept) = msg else {
            return Bytes::from_owner(encode_message(group, msg));
        };
        match &self.accept {
            Some(frame)
                if frame.commit == accept.commit
                    && frame.holds(accept.slot, accept.ballot, &accept.batch) =>
            {
                frame.body.clone()
            }
            _ => self.encode_accept(group, accept),
        }
    }

    fn encode_accept(&mut self, group: GroupId, accept: &Accept) -> Bytes {
        let body = Bytes::from_owner(encode_message(group, &Message::Accept(accept.clone())));
        self.accept = Some(AcceptFrame {
            slot: accept.slot,
            ballot: accept.ballot,
            commit: accept.commit,
            batch: accept.batch.bytes().clone(),
            body: body.clone(),
        });
        body
    }

    /// The step is over: nothing is kept across steps (a resend is a new
    /// frame, a later step's Accept another value).
    pub(super) fn clear(&mut self) {
        self.accept = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BatchBuilder, ClientId, Command, NodeId};

    fn batch(data: &'static [u8]) -> Batch {
        let mut builder = BatchBuilder::default();
        builder.push(&Command {
            client: ClientId(1),
            seq: 1,
            data: Bytes::from_static(data),
        });
        builder.finish()
    }

    fn accept(batch: &Batch, commit: u64) -> Accept {
        Accept {
            ballot: Ballot {
                round: 2,
                node: NodeId(1),
            },
            slot: Slot(4),
            batch: batch.clone(),
            commit: Slot(commit),
        }
    }

    fn entry(accept: &Accept) -> Entry {
        Entry {
            ballot: accept.ballot,
            batch: accept.batch.clone(),
        }
    }

    #[test]
    fn a_leader_encodes_an_accept_once_for_its_wal_and_every_follower() {
        let (group, value) = (GroupId(0), batch(b"v"));
        let accept = accept(&value, 3);
        let mut frames = Frames::default();
        let record = frames.wal_record(group, accept.slot, &entry(&accept), accept.commit);
        let to_two = frames.message(group, &Message::Accept(accept.clone()));
        let to_three = frames.message(group, &Message::Accept(accept.clone()));
        assert_eq!(
            record.as_ptr(),
            to_two.as_ptr(),
            "the WAL record is what is sent"
        );
        assert_eq!(to_two.as_ptr(), to_three.as_ptr(), "one encoding for both");
        // Another commit point, or an equal value that is not this one, is
        // another frame.
        let later = frames.message(group, &Message::Accept(super::tests::accept(&value, 4)));
        assert_ne!(later.as_ptr(), record.as_ptr());
        let equal = batch(b"v");
        let other = frames.message(group, &Message::Accept(super::tests::accept(&equal, 4)));
        assert_ne!(other.as_ptr(), later.as_ptr());
    }

    #[test]
    fn a_follower_stores_the_accept_as_it_received_it() {
        let (group, value) = (GroupId(0), batch(b"v"));
        let accept = accept(&value, 3);
        let received = Bytes::from_owner(encode_message(group, &Message::Accept(accept.clone())));
        let mut frames = Frames::default();
        frames.received(&Message::Accept(accept.clone()), received.clone());
        let record = frames.wal_record(group, accept.slot, &entry(&accept), Slot(0));
        assert_eq!(record.as_ptr(), received.as_ptr());
        frames.clear();
        let record = frames.wal_record(group, accept.slot, &entry(&accept), Slot(0));
        assert_ne!(record.as_ptr(), received.as_ptr(), "not kept past its step");
    }
}
