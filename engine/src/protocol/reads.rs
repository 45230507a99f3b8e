//! Linearizable reads by read index: the leader confirms with a majority
//! that it still leads, then serves once its commit point covers the read.

use super::action::{Action, Actions, Refusal, Reply};
use super::message::HeartbeatAck;
use super::types::{NodeId, ReadId, Slot};
use super::{Replica, Role};

#[derive(Clone, Copy, Debug)]
pub(super) struct PendingRead {
    pub(super) id: ReadId,
    /// 0 until a heartbeat round is started for it.
    pub(super) round: u64,
    /// Serve once every slot below is applied.
    pub(super) commit: Slot,
}

impl Replica {
    pub(super) fn on_heartbeat_ack(&mut self, from: NodeId, ack: HeartbeatAck, out: &mut Actions) {
        let Some(leading) = self.leader_heard_from(from, ack.ballot) else {
            return;
        };
        let acked = leading.read_acks.entry(from).or_default();
        *acked = (*acked).max(ack.read_round);
        let commit = leading.follower_commits.entry(from).or_default();
        *commit = (*commit).max(ack.commit);
        self.leader_serve_reads(out);
    }

    pub(super) fn on_read(&mut self, id: ReadId, out: &mut Actions) {
        let (hint, reads_max) = (self.leader(), self.config.reads_max as usize);
        let commit = self.commit;
        let Role::Leading(leading) = &mut self.role else {
            out.push(Action::Reply(Reply::ReadRefused {
                id,
                reason: Refusal::NotLeader(hint),
            }));
            return;
        };
        if leading.reads.len() >= reads_max {
            out.push(Action::Reply(Reply::ReadRefused {
                id,
                reason: Refusal::Busy,
            }));
            return;
        }
        leading.reads.push_back(PendingRead {
            id,
            round: 0,
            commit: commit.max(leading.recovery_end),
        });
        // A group of one voter confirms its leadership alone.
        if self.majorities(|id| id == self.config.id) {
            self.leader_start_read_round();
            self.leader_serve_reads(out);
        }
    }

    /// Reads that arrived since the last round get a new one; the heartbeat
    /// that carries it must come after they arrived, or it proves nothing.
    pub(super) fn leader_start_read_round(&mut self) {
        let me = self.config.id;
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        if !leading.reads.iter().any(|r| r.round == 0) {
            return;
        }
        leading.read_round += 1;
        let round = leading.read_round;
        leading.read_acks.insert(me, round);
        for read in leading.reads.iter_mut().filter(|r| r.round == 0) {
            read.round = round;
        }
        leading.next_heartbeat_at = self.now;
    }

    pub(super) fn leader_serve_reads(&mut self, out: &mut Actions) {
        let commit = self.commit;
        #[cfg(test)]
        let skip_read_quorum = self.faults.read_without_quorum;
        loop {
            let Role::Leading(leading) = &self.role else {
                return;
            };
            // A read that arrived during Phase 1 could not know how far the
            // recovered slots reach: it waits for them too.
            if !leading.is_steady() {
                return;
            }
            let Some(read) = leading.reads.front().copied() else {
                return;
            };
            let read_commit = read.commit.max(leading.recovery_end);
            let acks = &leading.read_acks;
            let confirmed = read.round != 0
                && self.majorities(|id| acks.get(&id).is_some_and(|r| *r >= read.round));
            #[cfg(test)]
            let confirmed = confirmed || skip_read_quorum;
            if !confirmed || commit < read_commit {
                return;
            }
            if let Role::Leading(leading) = &mut self.role {
                leading.reads.pop_front();
            }
            out.push(Action::Reply(Reply::ReadReady {
                id: read.id,
                commit: read_commit,
            }));
        }
    }
}
