//! Checks on every message from outside, before it can change anything.

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
        if from == self.config.id || self.member_position(from).is_none() {
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
                for (slot, _) in &m.entries {
                    self.check_reach(kind, *slot)?;
                    field(kind, *slot < m.commit, "entry at or above the commit point")?;
                }
                Ok(())
            }
            Message::Promise(m) => {
                owned_by(m.ballot, me)?;
                for (slot, entry) in &m.entries {
                    self.check_reach(kind, *slot)?;
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
                field(
                    kind,
                    self.member_position(named).is_some(),
                    "names a node outside the group",
                )?;
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

    /// Whether a member could have issued `ballot`.
    fn could_own(&self, ballot: Ballot) -> bool {
        ballot.round > 0 && ballot.round < ROUND_MAX && self.member_position(ballot.node).is_some()
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

fn field(kind: &'static str, ok: bool, reason: &'static str) -> Result<(), StepError> {
    if ok {
        Ok(())
    } else {
        Err(StepError::BadField { kind, reason })
    }
}
