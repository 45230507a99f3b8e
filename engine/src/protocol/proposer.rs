//! The distinguished proposer: Phase 1 for all slots at once (`prepare.rs`), recovery of
//! open slots, then batched, pipelined Phase 2, heartbeats and read-index.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::action::{Action, Actions, Refusal, Reply, Write};
use super::batch::{Batch, BatchBuilder, Command};
use super::log::Entry;
use super::membership::{Membership, CHANGE_DELAY_SLOTS};
use super::message::{
    Accept, Accepted, CatchUp, CatchUpRequest, Heartbeat, Message, Nack, Prepare,
};
use super::quorum::VoteSet;
use super::reads::PendingRead;
use super::types::{Ballot, ClientId, NodeId, Slot};
use super::{Replica, Role};

#[derive(Clone, Debug)]
pub(super) struct Leading {
    pub(super) ballot: Ballot,
    pub(super) phase: Phase,
    /// Where the next new batch goes.
    pub(super) next_slot: Slot,
    /// Slots `commit..next_slot`, oldest first.
    inflight: VecDeque<InFlight>,
    /// Commands waiting for room in the pipeline, already cut into batches.
    queue: VecDeque<BatchBuilder>,
    queue_bytes: u64,
    /// When the oldest queued command arrived (for linger).
    queued_since: Option<u64>,
    /// Bytes of the last batch cut: a new batch's buffer starts this large,
    /// so that under a steady load it is allocated once at about its size
    /// (small ones from the allocator's fast path), not at the bound.
    batch_bytes_last: usize,
    /// A configuration entry waiting for the pipeline (it travels alone).
    change: Option<Batch>,
    /// Tick each member was last heard from.
    pub(super) heard_at: BTreeMap<NodeId, u64>,
    /// Each member's commit point as its latest heartbeat answer gave it.
    pub(super) follower_commits: BTreeMap<NodeId, Slot>,
    pub(super) next_heartbeat_at: u64,
    /// Slots below this were open when we took over; reads wait for them.
    pub(super) recovery_end: Slot,
    /// Recovered values for the slots from `next_slot` on, re-proposed
    /// ahead of new batches and at most `pipeline_max` slots in flight, so
    /// a long recovery does not flood the peers' queues (the narrower
    /// window for new batches does not apply: these merge with nothing).
    pub(super) recovering: VecDeque<Batch>,
    pub(super) read_round: u64,
    /// Highest read round each member echoed.
    pub(super) read_acks: BTreeMap<NodeId, u64>,
    pub(super) reads: VecDeque<PendingRead>,
}

#[derive(Clone, Debug)]
pub(super) enum Phase {
    Preparing {
        promises: BTreeMap<NodeId, Pages>,
        prepared_at: u64,
        /// Every node sent a Prepare.
        asked: BTreeSet<NodeId>,
        /// Configurations found in the promises at or above the commit
        /// point: any of them may have been chosen, so Phase 1 needs a
        /// majority of each (docs/protocol.md, "Membership").
        found: Vec<Membership>,
    },
    Steady,
}

/// An acceptor's promise as its pages arrive.
#[derive(Clone, Debug, Default)]
pub(super) struct Pages {
    pub(super) entries: Vec<(Slot, Entry)>,
    /// The page asked for next; `None` once the last page is in.
    pub(super) asking_from: Option<Slot>,
}

impl Pages {
    pub(super) fn complete(&self) -> bool {
        self.asking_from.is_none()
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    batch: Batch,
    acks: VoteSet,
    sent_at: u64,
}

impl Leading {
    pub(super) fn is_steady(&self) -> bool {
        matches!(self.phase, Phase::Steady)
    }

    /// A snapshot says every slot below `upto` is chosen (the commit
    /// point was `commit`): what was in flight below it is done, and
    /// recovery and new proposals start there.
    pub(super) fn skip_to(&mut self, commit: Slot, upto: Slot) {
        let done = upto.distance_from(commit).min(self.inflight.len() as u64);
        self.inflight.drain(..done as usize);
        let skipped = upto.distance_from(self.next_slot);
        let recovered = skipped.min(self.recovering.len() as u64);
        self.recovering.drain(..recovered as usize);
        self.next_slot = self.next_slot.max(upto);
        self.recovery_end = self.recovery_end.max(upto);
    }

    /// Whether a configuration entry waits or is in flight, unchosen.
    pub(super) fn has_change_in_flight(&self) -> bool {
        self.change.is_some()
            || self.inflight.iter().any(|f| Membership::is_entry(&f.batch))
            || self.recovering.iter().any(Membership::is_entry)
    }

    /// Queues a configuration entry: it takes the next free slot.
    pub(super) fn propose_change(&mut self, entry: Batch) {
        self.change = Some(entry);
    }

    /// The end of the slots Phase 1 recovered.
    pub(super) fn recovery_end(&self) -> Slot {
        self.recovery_end
    }

    /// Slots in flight beyond the commit point.
    pub(super) fn inflight_slots(&self) -> u32 {
        self.inflight.len() as u32
    }

    pub(super) fn check_invariants(&self, commit: Slot) {
        assert_eq!(
            self.inflight.len() as u64,
            self.next_slot.distance_from(commit),
            "in-flight slots are exactly commit..next_slot"
        );
        if !self.is_steady() {
            assert!(
                self.inflight.is_empty(),
                "nothing is proposed before Phase 1 ends"
            );
        }
    }
}

impl Replica {
    /// Starts Phase 1 with a ballot above every one seen.
    pub(super) fn become_leader(&mut self, out: &mut Actions) {
        self.abandon_leadership(out);
        let ballot = Ballot {
            round: self
                .round_seen_max
                .max(self.promised.round)
                .saturating_add(1),
            node: self.config.id,
        };
        self.round_seen_max = ballot.round;
        self.promised = ballot;
        self.persist(Write::Promise(ballot), out);
        let peers: Vec<NodeId> = self.peers().copied().collect();
        let heard_at = peers
            .iter()
            .chain([&self.config.id])
            .map(|p| (*p, self.now))
            .collect();
        self.role = Role::Leading(Box::new(Leading {
            ballot,
            phase: Phase::Preparing {
                promises: BTreeMap::new(),
                prepared_at: self.now,
                asked: peers.iter().copied().collect(),
                found: Vec::new(),
            },
            next_slot: self.commit,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            queued_since: None,
            batch_bytes_last: 0,
            change: None,
            heard_at,
            follower_commits: BTreeMap::new(),
            next_heartbeat_at: self.now,
            recovery_end: self.commit,
            recovering: VecDeque::new(),
            read_round: 0,
            read_acks: BTreeMap::new(),
            reads: VecDeque::new(),
        }));
        // The Prepares wait for our own promise to be durable, like votes:
        // a ballot that left before a crash could otherwise be issued again
        // after it (the durable promise is where the next round starts),
        // and a delayed Promise to the first use counted for the second.
        let prepare = Message::Prepare(Prepare {
            ballot,
            from_slot: self.commit,
        });
        for peer in peers {
            self.send_durable(peer, prepare.clone(), out);
        }
        let own = self.promise_for(ballot, self.commit, usize::MAX);
        self.send_durable(self.config.id, Message::Promise(own), out);
    }

    /// Leaves the leader role, if held: queued commands and reads are refused
    /// (in-flight slots may still be chosen; clients retry with the same
    /// sequence and sessions apply them once).
    pub(super) fn abandon_leadership(&mut self, out: &mut Actions) {
        let role = std::mem::replace(
            &mut self.role,
            Role::Looking(super::election::Looking::idle()),
        );
        let Role::Leading(leading) = role else {
            self.role = role;
            return;
        };
        let reason = Refusal::NotLeader(None);
        for builder in leading.queue {
            for command in builder.finish().iter() {
                out.push(Action::Reply(Reply::Refused {
                    client: command.client,
                    seq: command.seq,
                    reason,
                }));
            }
        }
        for read in leading.reads {
            out.push(Action::Reply(Reply::ReadRefused {
                id: read.id,
                reason,
            }));
        }
    }

    /// Accepts `batch` at `slot` locally and sends it to every follower. The
    /// followers' copies leave now; our own vote counts once our write is
    /// durable.
    fn leader_accept_slot(&mut self, slot: Slot, batch: Batch, out: &mut Actions) {
        let now = self.now;
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        let ballot = leading.ballot;
        debug_assert_eq!(slot, leading.next_slot);
        leading.inflight.push_back(InFlight {
            batch: batch.clone(),
            acks: VoteSet::default(),
            sent_at: now,
        });
        leading.next_slot = slot.next();
        let accept = Message::Accept(Accept {
            ballot,
            slot,
            batch: batch.clone(),
            commit: self.commit,
        });
        self.acceptor_accept(slot, Entry { ballot, batch }, out);
        self.broadcast(&accept, out);
        self.send_durable(
            self.config.id,
            Message::Accepted(Accepted { ballot, slot }),
            out,
        );
    }

    /// The leader state, if this replica leads at `ballot`, after noting
    /// that `from` was heard from (its answer proves it still follows us).
    pub(super) fn leader_heard_from(
        &mut self,
        from: NodeId,
        ballot: Ballot,
    ) -> Option<&mut Leading> {
        let now = self.now;
        let Role::Leading(leading) = &mut self.role else {
            return None;
        };
        if leading.ballot != ballot {
            return None;
        }
        if let Some(at) = leading.heard_at.get_mut(&from) {
            *at = now;
        } else if self.schedule.knows(from) {
            leading.heard_at.insert(from, now);
        }
        Some(leading)
    }

    pub(super) fn on_accepted(&mut self, from: NodeId, accepted: Accepted, out: &mut Actions) {
        let commit = self.commit;
        // Counted among the members of the slot's own configuration.
        let position = self.schedule.at(accepted.slot).position(from);
        let Some(leading) = self.leader_heard_from(from, accepted.ballot) else {
            return;
        };
        let Some(position) = position else {
            return;
        };
        if accepted.slot < commit || accepted.slot >= leading.next_slot {
            return;
        }
        let offset = accepted.slot.distance_from(commit) as usize;
        leading.inflight[offset].acks.insert(position);
        self.leader_advance_commit(out);
    }

    /// Commits the contiguous run of chosen slots at the front of the window.
    fn leader_advance_commit(&mut self, out: &mut Actions) {
        let mut advanced = false;
        loop {
            let Role::Leading(leading) = &self.role else {
                return;
            };
            let membership = self.schedule.at(self.commit);
            if !leading
                .inflight
                .front()
                .is_some_and(|f| membership.is_quorum(f.acks))
            {
                break;
            }
            let Role::Leading(leading) = &mut self.role else {
                return;
            };
            let chosen = leading.inflight.pop_front().expect("front checked");
            debug_assert_eq!(
                self.log.get(self.commit).map(|e| &e.batch),
                Some(&chosen.batch)
            );
            self.commit_next(out);
            advanced = true;
        }
        if advanced {
            self.leader_serve_reads(out);
            self.leader_flush(out);
        }
    }

    /// Queues commands that arrived together, then cuts batches: commands
    /// queued in one step share slots instead of taking one slot each.
    ///
    /// A session's commands that arrived together (one request, a client
    /// batch) are taken or refused whole and go into one slot, never split
    /// over two: each slot is chosen on its own, and a request whose first
    /// slot became a no-op under the next leader while its second was
    /// chosen would leave a later sequence number applied and an earlier
    /// one not, whose retry the session would then call stale, as if
    /// applied. A request larger than one batch is refused `TooLarge`. Once
    /// a session's request is refused, its later ones in this step are too.
    pub(super) fn on_propose(
        &mut self,
        commands: impl IntoIterator<Item = Command>,
        out: &mut Actions,
    ) {
        let mut commands = commands.into_iter().peekable();
        let mut refused_sessions = BTreeSet::new();
        while let Some(first) = commands.next() {
            let session = (first.client != ClientId(0)).then_some(first.client);
            let mut request = vec![first];
            if let Some(client) = session {
                while let Some(next) = commands.next_if(|c| c.client == client) {
                    request.push(next);
                }
            }
            let result = match session {
                Some(client) if refused_sessions.contains(&client) => Err(Refusal::Busy),
                _ => self.leader_enqueue(&request),
            };
            if let Err(reason) = result {
                refused_sessions.extend(session);
                for command in &request {
                    out.push(Action::Reply(Reply::Refused {
                        client: command.client,
                        seq: command.seq,
                        reason,
                    }));
                }
            }
        }
        self.leader_flush(out);
    }

    /// Queues one request's commands into one batch builder, or none of them.
    fn leader_enqueue(&mut self, request: &[Command]) -> Result<(), Refusal> {
        let command_bytes_max = self.config.command_bytes_max as usize;
        if request.iter().any(|c| c.data.len() > command_bytes_max) {
            return Err(Refusal::TooLarge);
        }
        if request.iter().any(|c| c.client == ClientId::MEMBERSHIP) {
            return Err(Refusal::ReservedClient);
        }
        let hint = self.leader();
        let (bytes_max, cmds_max) = (
            self.config.batch_bytes_max as usize,
            self.config.batch_cmds_max,
        );
        let queue_bytes_max = self.config.queue_bytes_max;
        let now = self.now;
        let Role::Leading(leading) = &mut self.role else {
            return Err(Refusal::NotLeader(hint));
        };
        let bytes: usize = request.iter().map(Command::encoded_len).sum();
        let count = u32::try_from(request.len()).unwrap_or(u32::MAX);
        if !BatchBuilder::default().fits_all(bytes, count, bytes_max, cmds_max) {
            return Err(Refusal::TooLarge);
        }
        if leading.queue_bytes + bytes as u64 > queue_bytes_max {
            return Err(Refusal::Busy);
        }
        if !leading
            .queue
            .back()
            .is_some_and(|b| b.fits_all(bytes, count, bytes_max, cmds_max))
        {
            // As large as the last batch: most batches are far below the
            // bound, and the buffer doubles when one is larger.
            let capacity = bytes_max.min(bytes.max(leading.batch_bytes_last));
            leading
                .queue
                .push_back(BatchBuilder::with_capacity(capacity));
        }
        let builder = leading.queue.back_mut().expect("just ensured");
        for command in request {
            builder.push(command);
        }
        leading.queue_bytes += bytes as u64;
        leading.queued_since.get_or_insert(now);
        Ok(())
    }

    /// Fills the pipeline: recovered values first, up to `pipeline_max`
    /// slots (they are whole batches already), then batches cut from the
    /// queued commands, up to the window (`Replica::set_pipeline_window`).
    ///
    /// Never more than `CHANGE_DELAY_SLOTS` beyond the commit point, so the
    /// configuration of every slot proposed is known. (A proposer need not
    /// vote: a removed leader still drives its slots until it has handed
    /// over.) A configuration entry goes alone, after the recovered
    /// values; then, while one is chosen but not in force and nothing else
    /// waits, no-ops bring its first slot nearer.
    pub(super) fn leader_flush(&mut self, out: &mut Actions) {
        let (pipeline_max, window, linger) = (
            u64::from(self.config.pipeline_max).min(CHANGE_DELAY_SLOTS),
            u64::from(self.pipeline_window),
            u64::from(self.config.linger_ticks),
        );
        let pending_from = self.schedule.latest_from();
        loop {
            let Role::Leading(leading) = &mut self.role else {
                return;
            };
            let inflight = leading.inflight.len() as u64;
            if !leading.is_steady() || inflight >= pipeline_max {
                return;
            }
            let slot = leading.next_slot;
            if let Some(batch) = leading.recovering.pop_front() {
                self.leader_accept_slot(slot, batch, out);
                continue;
            }
            if let Some(batch) = leading.change.take() {
                self.leader_accept_slot(slot, batch, out);
                continue;
            }
            if leading.queue.is_empty() && slot < pending_from && inflight < window {
                self.leader_accept_slot(slot, Batch::noop(), out);
                continue;
            }
            if leading.queue.is_empty() || inflight >= window {
                return;
            }
            // Only the last builder can be partial; let it linger if asked.
            let lingering = leading.queue.len() == 1
                && leading
                    .queued_since
                    .is_some_and(|since| since + linger > self.now);
            if lingering {
                return;
            }
            let builder = leading.queue.pop_front().expect("non-empty");
            leading.queue_bytes -= builder.bytes_len() as u64;
            leading.batch_bytes_last = builder.bytes_len();
            if leading.queue.is_empty() {
                leading.queued_since = None;
            }
            let slot = leading.next_slot;
            self.leader_accept_slot(slot, builder.finish(), out);
        }
    }

    pub(super) fn on_nack(&mut self, nack: Nack, out: &mut Actions) {
        self.see_round(nack.promised.round);
        let Role::Leading(leading) = &self.role else {
            return;
        };
        if nack.ballot != leading.ballot || nack.promised <= leading.ballot {
            return;
        }
        if self.config.election_enabled {
            self.start_looking(out);
        } else {
            // Basic Paxos: a pre-empted proposer retries with a higher ballot.
            self.become_leader(out);
        }
    }

    pub(super) fn leading_tick(&mut self, out: &mut Actions) {
        let (now, me) = (self.now, self.config.id);
        let timeout = u64::from(self.config.election_timeout_ticks);
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        leading.heard_at.insert(me, now);
        // A member added since we took over gets the same grace as the
        // others had at the start.
        for peer in &self.peers {
            leading.heard_at.entry(*peer).or_insert(now);
        }
        let Role::Leading(leading) = &self.role else {
            return;
        };
        let heard_at = &leading.heard_at;
        let heard = self.majorities(|id| heard_at.get(&id).is_some_and(|at| at + timeout >= now));
        if !heard {
            // Cut off from a majority: stop taking writes (the partition case).
            if self.config.election_enabled {
                self.start_looking(out);
            } else {
                self.abandon_leadership(out);
            }
            return;
        }
        if leading.is_steady() {
            // A snapshot installed while leading moves the commit point to
            // an in-flight slot whose answers may all be in already: none
            // is coming to count it.
            self.leader_advance_commit(out);
            self.leader_hand_over_if_removed(out);
            self.leader_start_read_round();
            if self.now >= self.next_heartbeat_at() {
                self.leader_heartbeat(out);
            }
            self.leader_resend_accepts(out);
            self.leader_flush(out);
            self.leader_serve_reads(out);
        } else {
            self.leader_resend_prepare(out);
        }
    }

    fn next_heartbeat_at(&self) -> u64 {
        match &self.role {
            Role::Leading(l) => l.next_heartbeat_at,
            _ => u64::MAX,
        }
    }

    pub(super) fn leader_heartbeat(&mut self, out: &mut Actions) {
        let next = self.now + u64::from(self.config.heartbeat_ticks);
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        leading.next_heartbeat_at = next;
        let heartbeat = Message::Heartbeat(Heartbeat {
            ballot: leading.ballot,
            commit: self.commit,
            read_round: leading.read_round,
        });
        self.broadcast(&heartbeat, out);
    }

    /// A leader whose configuration no longer counts it as a voter (it was
    /// removed, or made a learner) hands leadership to a voter that
    /// answers, on every heartbeat until one takes it: the one furthest
    /// along, and only once it has seen the change take force. An heir
    /// behind the change does not know it is a voter, nor do the voters
    /// behind it; their Phase 1 failed, this leader was elected again
    /// (it knows most), handed over again, and the group went round for
    /// ever. Until then it leads on, and the voters catch up from it.
    fn leader_hand_over_if_removed(&mut self, out: &mut Actions) {
        let (now, me) = (self.now, self.config.id);
        let timeout = u64::from(self.config.election_timeout_ticks);
        let membership = self.schedule.at(self.commit);
        if membership.is_voter(me) || now < self.next_heartbeat_at() {
            return;
        }
        let in_force_from = self.schedule.governing_from(self.commit);
        let Role::Leading(leading) = &self.role else {
            return;
        };
        let heir = membership
            .voter_ids()
            .filter(|id| {
                leading
                    .heard_at
                    .get(id)
                    .is_some_and(|at| at + timeout >= now)
            })
            .filter_map(|id| Some((*leading.follower_commits.get(&id)?, id)))
            .filter(|(commit, _)| *commit >= in_force_from)
            .max();
        if let Some((_, heir)) = heir {
            self.transfer_leadership(heir, out);
        }
    }

    /// Sends unchosen slots again to the members that have not accepted them.
    fn leader_resend_accepts(&mut self, out: &mut Actions) {
        let (now, resend) = (self.now, u64::from(self.config.resend_ticks));
        let commit = self.commit;
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        let ballot = leading.ballot;
        let mut resends = Vec::new();
        for (offset, slot) in leading.inflight.iter_mut().enumerate() {
            let membership = self.schedule.at(commit.plus(offset as u64));
            if membership.is_quorum(slot.acks) || slot.sent_at + resend > now {
                continue;
            }
            slot.sent_at = now;
            resends.push((
                self.commit.plus(offset as u64),
                slot.batch.clone(),
                slot.acks,
            ));
        }
        for (slot, batch, acks) in resends {
            let accept = Message::Accept(Accept {
                ballot,
                slot,
                batch,
                commit: self.commit,
            });
            let membership = self.schedule.at(slot);
            for (position, peer) in membership.members().iter().enumerate() {
                if peer.id != self.config.id && !acks.contains(position) {
                    self.send(peer.id, accept.clone(), out);
                }
            }
        }
    }

    pub(super) fn on_catchup_request(
        &mut self,
        from: NodeId,
        request: CatchUpRequest,
        out: &mut Actions,
    ) {
        let Role::Leading(leading) = &self.role else {
            return;
        };
        if request.ballot != leading.ballot || request.from_slot >= self.commit {
            return;
        }
        if request.from_slot < self.log.start() {
            out.push(Action::SendSnapshot { to: from });
            return;
        }
        let end = self.commit.min(
            request
                .from_slot
                .plus(u64::from(self.config.catchup_slots_max)),
        );
        let (mut entries, mut bytes) = (Vec::new(), 0);
        let mut slot = request.from_slot;
        while slot < end {
            let entry = self
                .log
                .get(slot)
                .expect("committed slots above log start are held");
            bytes += entry.batch.bytes().len();
            if !entries.is_empty() && bytes > self.config.page_bytes_max as usize {
                break; // the follower asks again from where this page ends
            }
            entries.push((slot, entry.batch.clone()));
            slot = slot.next();
        }
        let catchup = CatchUp {
            ballot: leading.ballot,
            commit: self.commit,
            entries,
        };
        self.send(from, Message::CatchUp(catchup), out);
    }
}
