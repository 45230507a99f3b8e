//! Checks on every message from outside, before it can change anything.

use super::batch::Batch;
use super::membership::Membership;
use super::message::{Envelope, Message, PeerState};
use super::types::{Ballot, NodeId, Slot};
use super::{Replica, StepError, ROUND_MAX, SLOTS_AHEAD_MAX};

impl Replica {
    /// Refuses, with a reason, any envelope no correct peer could send.
    pub(super) fn check_envelope(&self, envelope: &Envelope) -> Result<(), StepError> {
        if envelope.to != self.config.id {
            return Err(StepError::WrongAddressee(envelope.to));
        }
        let from = envelope.from;
        // Any other node may speak: one added in a configuration this
        // replica has not learned yet must reach it. What a non-member may
        // change is limited where each message is handled.
        if from == self.config.id || from == NodeId(0) {
            return Err(StepError::UnknownSender(from));
        }
        let kind = envelope.msg.kind();
        let owned_by = |ballot: Ballot, owner: NodeId| {
            if ballot.round > 0 && ballot.round < ROUND_MAX && ballot.node == owner {
                Ok(())
            } else {
                Err(StepError::BadBallot { kind, ballot })
            }
        };
        let me = self.config.id;
        match &envelope.msg {
            Message::Prepare(m) => owned_by(m.ballot, from),
            Message::Heartbeat(m) => owned_by(m.ballot, from),
            Message::TakeOver(m) => owned_by(m.ballot, from),
            Message::Accept(m) => {
                owned_by(m.ballot, from)?;
                self.check_reach(kind, m.slot)?;
                check_entry(kind, &m.batch)?;
                field(
                    kind,
                    m.commit <= m.slot,
                    "commit point beyond the slot it accompanies",
                )
            }
            Message::CatchUp(m) => {
                owned_by(m.ballot, from)?;
                let slots_max = self.config.catchup_slots_max as usize;
                field(
                    kind,
                    m.entries.len() <= slots_max,
                    "more entries than catchup_slots_max",
                )?;
                let increasing = m.entries.windows(2).all(|w| w[0].0 < w[1].0);
                field(kind, increasing, "entries out of slot order")?;
                for (slot, batch) in &m.entries {
                    self.check_reach(kind, *slot)?;
                    check_entry(kind, batch)?;
                    field(kind, *slot < m.commit, "entry at or above the commit point")?;
                }
                Ok(())
            }
            Message::Promise(m) => {
                owned_by(m.ballot, me)?;
                for (slot, entry) in &m.entries {
                    self.check_reach(kind, *slot)?;
                    check_entry(kind, &entry.batch)?;
                    field(
                        kind,
                        entry.ballot <= m.ballot,
                        "entry accepted above the promise",
                    )?;
                }
                Ok(())
            }
            Message::Nack(m) => {
                owned_by(m.ballot, me)?;
                field(
                    kind,
                    m.promised > m.ballot,
                    "refuses a ballot it has not outbid",
                )?;
                field(
                    kind,
                    self.could_own(m.promised),
                    "names a promise no member could hold",
                )
            }
            Message::Accepted(m) => owned_by(m.ballot, me),
            Message::HeartbeatAck(m) => owned_by(m.ballot, me),
            Message::CatchUpRequest(m) => owned_by(m.ballot, me),
            Message::Rejoin(m) => match m.floor {
                Some(floor) if floor != Ballot::ZERO && !self.could_own(floor) => {
                    Err(StepError::BadBallot {
                        kind,
                        ballot: floor,
                    })
                }
                _ => Ok(()),
            },
            Message::RejoinInfo(m) => {
                let promised = m.promised;
                if promised != Ballot::ZERO && !self.could_own(promised) {
                    return Err(StepError::BadBallot {
                        kind,
                        ballot: promised,
                    });
                }
                field(
                    kind,
                    m.recovery_end.is_none() || promised.node == from,
                    "recovery end from a node that does not own its ballot",
                )
            }
            Message::Notification(m) => {
                let named = match m.state {
                    PeerState::Looking(vote) => vote.node,
                    PeerState::Following(leader) => leader,
                    PeerState::Leading => from,
                };
                field(kind, named != NodeId(0), "names node 0")?;
                let epoch = match m.state {
                    PeerState::Looking(vote) => vote.epoch.max(vote.last_ballot.round),
                    _ => 0,
                };
                field(
                    kind,
                    m.round < ROUND_MAX && epoch < ROUND_MAX,
                    "election round or epoch out of range",
                )
            }
        }
    }

    /// Whether a node could have issued `ballot`.
    fn could_own(&self, ballot: Ballot) -> bool {
        ballot.round > 0 && ballot.round < ROUND_MAX && ballot.node != NodeId(0)
    }

    /// A slot this replica could hold without reserving unbounded memory.
    fn check_reach(&self, kind: &'static str, slot: Slot) -> Result<(), StepError> {
        let base = self.commit.max(self.log.end()).0;
        if slot.0 >= base.saturating_add(SLOTS_AHEAD_MAX) {
            return Err(StepError::BadSlot { kind, slot });
        }
        Ok(())
    }
}

/// A configuration entry must decode: every replica that learns it chosen
/// derives its quorums from it.
fn check_entry(kind: &'static str, batch: &Batch) -> Result<(), StepError> {
    let well_formed = !Membership::is_entry(batch) || Membership::from_batch(batch).is_ok();
    field(kind, well_formed, "malformed configuration entry")
}

fn field(kind: &'static str, ok: bool, reason: &'static str) -> Result<(), StepError> {
    if ok {
        Ok(())
    } else {
        Err(StepError::BadField { kind, reason })
    }
}
