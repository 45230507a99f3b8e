//! The group core's snapshots: taking its own, saving, handing one to a
//! peer behind, gathering a peer's in chunks, and installing it.

use bytes::Bytes;

use super::GroupCore;
use crate::group::action::{Callers, GroupAction, ProposeOutcome, SnapshotJob, SnapshotStart};
use crate::group::snapshot::{Received, Snapshot, SnapshotChunk};
use crate::group::state_machine::StateMachine;
use crate::protocol::{NodeId, Slot};

impl<S: StateMachine, C: Callers> GroupCore<S, C> {
    /// Takes a snapshot when the policy says so and none is being written.
    /// The state is captured here, in step with apply (the state machine's
    /// `snapshot` only captures); the executor encodes and writes it while
    /// the group goes on, and compaction waits for it to be durable.
    pub(super) fn maybe_snapshot(&mut self, out: &mut Vec<GroupAction<C>>) {
        if !self.compaction.due(self.applied, self.snapshot) {
            return;
        }
        let upto = self.applied;
        let job = SnapshotJob::own(
            upto,
            self.next_index,
            self.replica.status().promised,
            self.sessions.clone(),
            self.replica.schedule().clone(),
            self.machine.snapshot(),
        );
        self.compaction.start_saving(upto);
        out.push(GroupAction::SaveSnapshot {
            upto,
            job,
            urgent: false,
        });
    }

    /// The snapshot being written is durable: drop the log below it
    /// (keeping `keep_slots` in memory for followers a little behind) and
    /// the WAL frames a restart no longer needs.
    pub(super) fn on_snapshot_saved(
        &mut self,
        upto: Slot,
        encoded: Bytes,
        out: &mut Vec<GroupAction<C>>,
    ) {
        let Some(saving) = self.compaction.saving.filter(|s| s.upto == upto) else {
            debug_assert!(false, "a snapshot at {upto:?} saved, none asked for");
            return;
        };
        self.snapshot = upto;
        let keep_from = Slot(upto.0.saturating_sub(self.compaction.policy.keep_slots));
        if keep_from > self.replica.log().start() {
            self.replica
                .compact(keep_from.min(self.replica.compaction_limit()));
        }
        let cut = self.compaction.saved(saving, encoded);
        out.push(GroupAction::RemoveWalBefore(cut));
    }

    /// Hands the latest durable snapshot to a peer behind our log's start:
    /// from where the peer last said it lacked bytes of it, if it did, so
    /// that its asks for the log again while it waits do not start what it
    /// mostly holds over.
    pub(super) fn send_snapshot(&mut self, to: NodeId, out: &mut Vec<GroupAction<C>>) {
        match &self.compaction.latest {
            Some((upto, encoded)) => out.push(GroupAction::SendSnapshot {
                to,
                upto: *upto,
                encoded: encoded.clone(),
                start: SnapshotStart::From(
                    self.compaction
                        .wanted_by
                        .get(&to)
                        .filter(|(asked, offset)| asked == upto && *offset < encoded.len() as u64)
                        .map_or(0, |(_, offset)| *offset),
                ),
            }),
            // The log is compacted only below a durable snapshot.
            None => tracing::warn!(to = to.0, "peer needs a snapshot, none is durable yet"),
        }
    }

    /// A peer that lost chunks of our snapshot asks for the rest: the
    /// transfer goes on from where it holds up to, or starts our latest
    /// snapshot over if it asks for one we no longer have.
    pub(super) fn on_snapshot_wanted(
        &mut self,
        from: NodeId,
        upto: Slot,
        offset: u64,
        out: &mut Vec<GroupAction<C>>,
    ) {
        let Some((latest, encoded)) = &self.compaction.latest else {
            return;
        };
        let resume_at = if *latest == upto && offset < encoded.len() as u64 {
            offset
        } else {
            0
        };
        self.compaction.wanted_by.insert(from, (*latest, resume_at));
        out.push(GroupAction::SendSnapshot {
            to: from,
            upto: *latest,
            encoded: encoded.clone(),
            start: SnapshotStart::Asked(resume_at),
        });
    }

    /// Asks again for snapshot chunks lost long enough ago with nothing
    /// since: the ask may have been lost, and the sender sends no more.
    pub(super) fn ask_again_for_lost_chunks(&mut self, out: &mut Vec<GroupAction<C>>) {
        let due = self
            .compaction
            .incoming
            .asks_due(self.ticks, self.ask_every);
        for (to, upto, offset) in due {
            out.push(GroupAction::AskSnapshot { to, upto, offset });
        }
    }

    /// Gathers a snapshot from a peer; installs it once whole. Lost chunks
    /// are asked for again from where what is held ends.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
        out: &mut Vec<GroupAction<C>>,
    ) {
        // A snapshot of what is applied already is neither gathered nor
        // asked for: late chunks of a transfer that lost its purpose would
        // otherwise ask for it again and again.
        if chunk.upto <= self.applied {
            return;
        }
        let received = self
            .compaction
            .incoming
            .take(from, chunk, self.ticks, self.ask_every);
        let encoded = match received {
            Received::Whole(encoded) => encoded,
            Received::Pending => return,
            Received::Gap { upto, offset } => {
                out.push(GroupAction::AskSnapshot {
                    to: from,
                    upto,
                    offset,
                });
                return;
            }
        };
        match Snapshot::decode_for(&encoded, self.sessions.bounds()) {
            Ok(snapshot) => self.install_snapshot(from, snapshot, encoded, out),
            Err(error) => {
                tracing::warn!(from = from.0, %error, "snapshot from a peer refused")
            }
        }
    }

    /// Replaces the applied state with `snapshot` when it is ahead of it.
    /// A snapshot holds only chosen state, so any peer's is correct here;
    /// one the state machine refuses changes nothing.
    pub(super) fn install_snapshot(
        &mut self,
        from: NodeId,
        snapshot: Snapshot,
        encoded: Vec<u8>,
        out: &mut Vec<GroupAction<C>>,
    ) {
        let upto = snapshot.upto;
        let status = self.replica.status();
        // One snapshot is written at a time.
        if upto <= self.applied || self.compaction.saving.is_some() {
            return;
        }
        // The file doubles as this acceptor's promise floor once the WAL
        // below it goes: it must not be lower than what we promised.
        let encoded = if snapshot.promised >= status.promised {
            encoded
        } else {
            let raised = Snapshot {
                promised: status.promised,
                ..snapshot.clone()
            };
            match raised.encode() {
                Ok(encoded) => encoded,
                Err(error) => {
                    tracing::warn!(%error, "cannot re-encode a snapshot from a peer");
                    return;
                }
            }
        };
        if let Err(reason) = self.machine.restore(&snapshot.machine) {
            tracing::warn!(from = from.0, reason, "state machine refused a snapshot");
            return;
        }
        self.sessions = snapshot.sessions;
        let installed = self
            .replica
            .install_snapshot(upto, snapshot.next_index, snapshot.schedule);
        assert!(installed, "checked against applied above");
        if status.leading {
            // Its proposals in the slots the snapshot covers are applied
            // in it or not at all; which, only their sessions can say: the
            // clients retry under the same numbers and each applies once.
            let leader = Some(status.id);
            self.waiters
                .answer_all(ProposeOutcome::InDoubt { leader }, out);
        }
        self.applied = upto;
        self.next_index = snapshot.next_index;
        self.snapshots_installed += 1;
        out.push(GroupAction::SnapshotInstalled {
            from,
            upto,
            next_index: snapshot.next_index,
        });
        // Durable before the WAL below it goes, at full speed: the group
        // cannot compact until it is.
        self.compaction.start_saving(upto);
        out.push(GroupAction::SaveSnapshot {
            upto,
            job: SnapshotJob::installed(encoded),
            urgent: true,
        });
    }
}
