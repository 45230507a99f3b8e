//! The group's task: feeds its inbox to the core and carries out the core's
//! actions on glommio with the WAL, the peer link and the snapshot file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use synod_wal::Wal;

use super::feed::CommitFeed;
use super::frames::Frames;
use super::outgoing::Outgoing;
use super::promise_record::PromiseRecord;
use super::stages::StageClock;
use super::transfer;
use super::{Committed, GroupError, GroupStatus, Inbound, MembershipView, PeerLink, Waiting};
use crate::group::snapshot::{encode_wanted, KIND_SNAPSHOT_WANTED};
use crate::group::{
    Callers, GroupAction, GroupCore, GroupInput, Proposal, ProposeOutcome, ReadOutcome,
    StateMachine,
};
use crate::protocol::{ClientId, Command, GroupId, Membership, Message, NodeId, Slot, Write};
use crate::runtime::codec::{encode_write, KIND_WAL_ACCEPT, KIND_WAL_WRITE};
use crate::runtime::metrics::GroupMetrics;
use crate::runtime::window::PipelineWindow;

/// Proposals handed to the core in one step at most.
const PROPOSALS_PER_STEP_MAX: usize = 4096;

/// Ticks the connection to our leader must stay down before the replica is
/// told (one tick can be a reconnect in progress).
const LEADER_UNREACHABLE_TICKS: u32 = 2;

/// The runtime's callers: channels back to the proposing tasks.
#[derive(Debug)]
pub(crate) struct Channels;

impl Callers for Channels {
    type Proposal = Waiting<oneshot::Sender<ProposeOutcome>>;
    type Request = Waiting<oneshot::Sender<Vec<ProposeOutcome>>>;
    type Read = oneshot::Sender<ReadOutcome>;
}

type Actions = Vec<GroupAction<Channels>>;

pub(super) struct GroupDriver<S> {
    pub(super) group: GroupId,
    pub(super) core: GroupCore<S, Channels>,
    pub(super) wal: Rc<Wal>,
    pub(super) link: Rc<dyn PeerLink>,
    pub(super) inputs: Rc<LocalSender<Inbound>>,
    status: Rc<GroupStatus>,
    pub(super) metrics: GroupMetrics,
    feed: CommitFeed,
    /// The actions of the step under way (kept for their buffer).
    actions: Actions,
    /// The Accept frame of the step under way.
    frames: Frames,
    /// Consecutive ticks the connection to our leader has been down.
    leader_down_ticks: u32,
    /// The leader whose connection is watched, and whether it was ever up.
    leader_link: (Option<NodeId>, bool),
    /// Chooses the pipeline window from measured rounds and fsyncs.
    window: PipelineWindow,
    pub(super) snapshot_path: PathBuf,
    pub(super) marker: PathBuf,
    promise_record: PromiseRecord,
    /// Where requests' time goes, stage by stage.
    stages: StageClock,
    /// Peers a snapshot is on its way to, with where each transfer is.
    pub(super) sending: Rc<RefCell<BTreeMap<NodeId, Rc<Outgoing>>>>,
    /// Command bytes applied since `paced_since`, for the write pace.
    pub(super) paced_bytes: u64,
    pub(super) paced_since: Instant,
    /// The schedule last published: its governing and next first slots.
    membership_shape: Option<(Slot, Option<Slot>)>,
}

impl<S: StateMachine> GroupDriver<S> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        group: GroupId,
        core: GroupCore<S, Channels>,
        wal: Rc<Wal>,
        link: Rc<dyn PeerLink>,
        inputs: Rc<LocalSender<Inbound>>,
        status: Rc<GroupStatus>,
        metrics: GroupMetrics,
        pipeline_max: u32,
        history_bytes: usize,
        snapshot_path: PathBuf,
        marker: PathBuf,
        promise_record: PromiseRecord,
    ) -> GroupDriver<S> {
        let mut core = core;
        let feed = CommitFeed::new(history_bytes, core.next_index());
        core.stream_commits(feed.wants_entries());
        GroupDriver {
            group,
            core,
            wal,
            link,
            inputs,
            status,
            metrics,
            feed,
            actions: Vec::new(),
            frames: Frames::default(),
            leader_down_ticks: 0,
            leader_link: (None, false),
            window: PipelineWindow::new(pipeline_max),
            snapshot_path,
            marker,
            promise_record,
            stages: StageClock::default(),
            sending: Rc::default(),
            paced_bytes: 0,
            paced_since: Instant::now(),
            membership_shape: None,
        }
    }

    /// Carries out what recovery emitted (the marker is already written),
    /// then starts the write pace from the live load.
    pub(super) fn carry_out_recovered(&mut self, mut actions: Actions) {
        actions.retain(|a| !matches!(a, GroupAction::MarkRebuilding));
        if let Some(GroupAction::Applied { slot, .. }) = actions
            .iter()
            .rev()
            .find(|a| matches!(a, GroupAction::Applied { .. }))
        {
            tracing::info!(
                group = self.group.0,
                slots = slot.0 + 1,
                "re-applied the committed log"
            );
        }
        self.actions = actions;
        if let Err(error) = self.carry_out() {
            // Recovery appends nothing; only a removal could fail, later.
            tracing::error!(group = self.group.0, %error, "recovery's actions failed");
        }
        self.paced_bytes = 0;
        self.paced_since = Instant::now();
    }

    pub(super) async fn run(
        mut self,
        inbox: LocalReceiver<Inbound>,
        tick: Duration,
    ) -> Result<(), GroupError> {
        let ticker = self.inputs.clone();
        let ticks = glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                if ticker.send(Inbound::Tick).await.is_err() {
                    return;
                }
            }
        });
        let result = self.serve(inbox).await;
        drop(ticks);
        self.core.stop(&mut self.actions);
        let _ = self.carry_out();
        result
    }

    async fn serve(&mut self, inbox: LocalReceiver<Inbound>) -> Result<(), GroupError> {
        let mut held: Option<Inbound> = None;
        loop {
            let inbound = match held.take() {
                Some(inbound) => inbound,
                None => match inbox.recv().await {
                    Some(inbound) => inbound,
                    None => return Ok(()),
                },
            };
            let input = match inbound {
                Inbound::Peer(frame) => {
                    let (envelope, body) = frame.into_parts();
                    self.frames.received(&envelope.msg, body);
                    GroupInput::Message(envelope)
                }
                Inbound::Propose(command, waiting) => {
                    let mut proposals = vec![Proposal::One(command, waiting)];
                    held = self.gather_proposals(&mut proposals, &inbox).await;
                    GroupInput::Propose(proposals)
                }
                Inbound::ProposeMany(commands, waiting) => {
                    let mut proposals = vec![Proposal::Many(commands, waiting)];
                    held = self.gather_proposals(&mut proposals, &inbox).await;
                    GroupInput::Propose(proposals)
                }
                Inbound::Read(query, reply) => GroupInput::Read(query, reply),
                Inbound::ReadLocal(query, reply) => GroupInput::ReadLocal(query, reply),
                Inbound::Persisted(sync, took) => {
                    if let Some(took) = took {
                        self.window.on_fsync(took);
                    }
                    self.stages.persisted(sync, Instant::now());
                    GroupInput::Persisted(sync)
                }
                Inbound::Tick => {
                    if let Some(lost) = self.check_leader_link() {
                        self.step(GroupInput::PeerUnreachable(lost))?;
                    }
                    GroupInput::Tick
                }
                Inbound::TransferLeadership(to, reply) => {
                    let checked = transfer::check(self.core.replica(), to);
                    let go = checked.is_ok();
                    let _ = reply.send(checked);
                    if !go {
                        continue;
                    }
                    tracing::info!(group = self.group.0, to = to.0, "handing leadership over");
                    GroupInput::TransferLeadership(to)
                }
                Inbound::ChangeMembership(membership, reply) => {
                    let membership = self.with_addresses(membership);
                    tracing::info!(
                        group = self.group.0,
                        ?membership,
                        "proposing a configuration"
                    );
                    let proposed = self.core.change_membership(membership, &mut self.actions);
                    let _ = reply.send(proposed);
                    self.carry_out()?;
                    continue;
                }
                Inbound::FollowerCommit(member, reply) => {
                    let _ = reply.send(self.core.replica().follower_commit(member));
                    continue;
                }
                Inbound::Subscribe(from, reply) => {
                    let stream = self.feed.subscribe(from, self.core.next_index());
                    let _ = reply.send(stream);
                    self.core.stream_commits(self.feed.wants_entries());
                    continue;
                }
                Inbound::SnapshotChunk(from, chunk) => GroupInput::SnapshotChunk(from, chunk),
                Inbound::SnapshotWanted { from, upto, offset } => {
                    GroupInput::SnapshotWanted { from, upto, offset }
                }
                Inbound::SnapshotSaved { upto, encoded } => {
                    self.metrics.snapshots.inc();
                    tracing::info!(
                        group = self.group.0,
                        upto = upto.0,
                        bytes = encoded.len(),
                        "snapshot durable; log compacted"
                    );
                    GroupInput::SnapshotSaved { upto, encoded }
                }
                Inbound::SnapshotSkipped(upto) => GroupInput::SnapshotSkipped(upto),
                Inbound::SnapshotFailed(error) => return Err(error.into()),
                Inbound::Fatal(error) => return Err(error.into()),
                Inbound::RebuildFailed(error) => return Err(error),
                Inbound::Stop => return Ok(()),
            };
            self.step(input)?;
        }
    }

    fn step(&mut self, input: GroupInput<Channels>) -> Result<(), GroupError> {
        if let Err(error) = self.core.step(input, &mut self.actions) {
            tracing::debug!(group = self.group.0, %error, "input dropped");
        }
        self.carry_out()
    }

    /// Takes every proposal already queued behind those in `proposals`, so
    /// that commands that arrived together share slots; returns the first
    /// other input met, which must be handled next.
    ///
    /// The protocol takes a session's adjacent commands in one step as one
    /// request, so a proposal of the session whose command ends the step's
    /// (a retry of a request still queued, say) waits for the next step:
    /// joined, the two would be refused as one request too large, or
    /// together, for what either alone may not deserve.
    async fn gather_proposals(
        &mut self,
        proposals: &mut Vec<Proposal<Channels>>,
        inbox: &LocalReceiver<Inbound>,
    ) -> Option<Inbound> {
        let mut count: usize = proposals.iter().map(proposal_len).sum();
        while self.inputs.len() > 0 && count < PROPOSALS_PER_STEP_MAX {
            let input = inbox.recv().await;
            let session = |c: &Command| (c.client != ClientId(0)).then_some(c.client);
            let last = proposals.last().and_then(last_command).and_then(session);
            let follows_its_session =
                |first: Option<&Command>| last.is_some() && first.and_then(session) == last;
            match input {
                Some(Inbound::Propose(command, waiting))
                    if !follows_its_session(Some(&command)) =>
                {
                    count += 1;
                    proposals.push(Proposal::One(command, waiting));
                }
                Some(Inbound::ProposeMany(more, waiting)) if !follows_its_session(more.first()) => {
                    count += more.len();
                    proposals.push(Proposal::Many(more, waiting));
                }
                other => return other,
            }
        }
        None
    }

    /// Carries out the core's actions, in order.
    fn carry_out(&mut self) -> Result<(), GroupError> {
        let mut actions = std::mem::take(&mut self.actions);
        let now = Instant::now();
        let mut result = Ok(());
        let mut rest = actions.drain(..);
        while let Some(action) = rest.next() {
            if let Err(error) = self.carry_out_one(action, rest.as_slice(), now) {
                result = Err(error);
                break;
            }
        }
        drop(rest);
        actions.clear();
        self.actions = actions;
        self.frames.clear();
        self.publish_status();
        result
    }

    /// Appends one acceptor write: an accepted value as its Accept frame,
    /// anything else as a write record.
    fn append(
        &mut self,
        position: synod_wal::Position,
        write: Write,
        commit: Slot,
    ) -> Result<(), GroupError> {
        let landed = match &write {
            Write::Accept { slot, entry } => {
                let body = self.frames.wal_record(self.group, *slot, entry, commit);
                self.metrics.wal_bytes.inc_by(body.len() as u64);
                self.wal.append(KIND_WAL_ACCEPT, &body)?
            }
            Write::Promise(_) | Write::Commit(_) => {
                let body = encode_write(&write);
                self.metrics.wal_bytes.inc_by(body.len() as u64);
                self.wal.append(KIND_WAL_WRITE, &body)?
            }
        };
        assert_eq!(landed, position, "the core counts the WAL's frames");
        Ok(())
    }

    /// Carries out `action`, the actions of the step after it being `rest`.
    fn carry_out_one(
        &mut self,
        action: GroupAction<Channels>,
        rest: &[GroupAction<Channels>],
        now: Instant,
    ) -> Result<(), GroupError> {
        match action {
            GroupAction::Append { position, write } => {
                // The leader's own record of an Accept is the frame its
                // sends share: it carries the commit point they carry.
                let commit = sent_commit(rest, &write)
                    .unwrap_or_else(|| self.core.replica().status().commit);
                // Timed at the leader only: only it answers requests.
                if let (Write::Accept { slot, .. }, true) = (&write, self.status.leading.get()) {
                    self.stages.written(*slot, now);
                }
                self.append(position, write, commit)?;
            }
            GroupAction::Sync(sync) => {
                self.stages.sync_asked(sync);
                self.sync(sync)
            }
            // Blocking, once or twice per election: durable before the
            // write that raises the promise is even appended.
            GroupAction::RecordPromise(ballot) => self.promise_record.write(ballot)?,
            GroupAction::Send(envelope) => {
                if let Message::Accept(accept) = &envelope.msg {
                    self.window.on_accept_sent(accept.slot, now);
                }
                let to = envelope.to;
                let body = self.frames.message(self.group, &envelope.msg);
                if !self.link.send(to, body) {
                    tracing::trace!(group = self.group.0, to = to.0, "peer queue full; dropped");
                }
            }
            GroupAction::SendSnapshot {
                to,
                upto,
                encoded,
                start,
            } => self.send_snapshot(to, upto, encoded, start),
            GroupAction::AskSnapshot { to, upto, offset } => {
                let body = Bytes::from_owner(encode_wanted(self.group, upto, offset));
                if !self.link.send_frame(to, KIND_SNAPSHOT_WANTED, body) {
                    tracing::debug!(group = self.group.0, to = to.0, "snapshot ask dropped");
                }
            }
            GroupAction::SaveSnapshot { upto, job, urgent } => {
                self.save_snapshot(upto, job, urgent)
            }
            GroupAction::RemoveWalBefore(cut) => {
                let (wal, inputs) = (self.wal.clone(), self.inputs.clone());
                glommio::spawn_local(async move {
                    if let Err(error) = wal.remove_before(cut).await {
                        let _ = inputs.send(Inbound::Fatal(error)).await;
                    }
                })
                .detach();
            }
            // Written by `start_group` before the core's first step.
            GroupAction::MarkRebuilding => {}
            GroupAction::EndRebuild => self.end_rebuild(),
            GroupAction::Applied { slot, batch, .. } => {
                self.window.on_chosen(slot, now);
                self.stages.chosen(slot, now);
                self.metrics.batch_commands.observe(f64::from(batch.len()));
                self.paced_bytes += batch.bytes().len() as u64;
            }
            GroupAction::Entry { index, data } => {
                self.publish(Committed::Entry { index, data });
            }
            GroupAction::SnapshotInstalled {
                from,
                upto,
                next_index,
            } => {
                self.publish(Committed::Snapshot { next_index });
                tracing::info!(
                    group = self.group.0,
                    from = from.0,
                    upto = upto.0,
                    "installed a snapshot from a peer"
                );
            }
            GroupAction::Answer(waiting, outcome) => {
                self.observe_latency(&outcome, waiting.since, now);
                let _ = waiting.reply.send(outcome);
            }
            GroupAction::AnswerMany(waiting, outcomes) => {
                if let Some(outcome) = outcomes.last() {
                    self.observe_latency(outcome, waiting.since, now);
                }
                let _ = waiting.reply.send(outcomes);
            }
            GroupAction::AnswerRead(reply, outcome) => {
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    fn observe_latency(&mut self, outcome: &ProposeOutcome, since: Instant, now: Instant) {
        if matches!(outcome, ProposeOutcome::Applied { .. }) {
            let waited = now.saturating_duration_since(since);
            self.metrics.commit_latency.observe(waited.as_secs_f64());
            self.stages.observe(since, &self.metrics);
        }
    }

    /// Hands `committed` to the history and every subscriber; one that has
    /// fallen too far behind, or has gone, is dropped.
    fn publish(&mut self, committed: Committed) {
        let dropped = self.feed.publish(committed);
        if dropped > 0 {
            tracing::info!(
                group = self.group.0,
                dropped,
                "commit subscribers gone or lagging; dropped"
            );
            self.core.stream_commits(self.feed.wants_entries());
        }
    }

    /// Publishes the replica's status, logging one line per change of role.
    fn publish_status(&mut self) {
        let status = self.core.replica().status();
        let (was_leading, had_leader) = (self.status.leading.get(), self.status.leader.get());
        let group = self.group.0;
        if status.leading && !was_leading {
            tracing::info!(group, ballot = %status.promised, commit = status.commit.0, "elected: leading");
        } else if was_leading && !status.leading {
            tracing::info!(group, ballot = %status.promised, "stepped down");
            self.window.forget_rounds();
        }
        if status.leader != had_leader {
            match status.leader {
                Some(leader) => {
                    self.metrics.leader_changes.inc();
                    tracing::info!(group, leader = leader.0, "leader change")
                }
                None => {
                    self.metrics.elections.inc();
                    tracing::info!(group, round = status.election_round, "looking for a leader")
                }
            }
        }
        self.metrics.pipeline_depth.set(i64::from(status.inflight));
        let window = self.core.set_pipeline_window(self.window.slots());
        self.metrics.pipeline_window.set(i64::from(window));
        self.status.leading.set(status.leading);
        self.status.leader.set(status.leader);
        self.status.promised.set(status.promised);
        self.status.applied.set(self.core.applied());
        self.status.next_index.set(self.core.next_index());
        self.status.snapshot.set(self.core.snapshot());
        self.status
            .snapshots_installed
            .set(self.core.snapshots_installed());
        self.status.commit.set(status.commit);
        self.publish_membership(status.commit);
        self.metrics.publish(&self.status.view());
    }

    /// Refreshes the published configuration when the schedule changed
    /// (a configuration chosen, or one come into force): a few comparisons
    /// per step, a copy only on a change.
    fn publish_membership(&mut self, commit: Slot) {
        let schedule = self.core.replica().schedule();
        let next_from = schedule
            .entries()
            .iter()
            .map(|(from, _)| *from)
            .find(|f| *f > commit);
        let shape = (schedule.governing_from(commit), next_from);
        if self.membership_shape == Some(shape) {
            return;
        }
        self.membership_shape = Some(shape);
        let view = MembershipView::of(schedule, commit);
        *self.status.membership.borrow_mut() = Some(view);
        // Members a configuration names are dialed and accepted from now
        // on, those this node was not started with included.
        let me = self.core.replica().config().id;
        for (_, membership) in schedule.entries() {
            for member in membership.members() {
                if member.id != me
                    && !member.addr.is_empty()
                    && !self.link.add_peer(member.id, &member.addr)
                {
                    tracing::warn!(
                        group = self.group.0,
                        member = member.id.0,
                        addr = member.addr,
                        "a member's address cannot be dialed"
                    );
                }
            }
        }
    }

    /// `membership` with each member's address filled in where the caller
    /// left it empty and this node knows it, so that every node the entry
    /// reaches can dial every member.
    fn with_addresses(&self, membership: Membership) -> Membership {
        let mut members = membership.members().to_vec();
        for member in &mut members {
            if member.addr.is_empty() {
                member.addr = self.link.addr_of(member.id).unwrap_or_default();
            }
        }
        Membership::new(members).unwrap_or(membership)
    }

    /// The peer the replica should be told it lost: its leader, once the
    /// transport has been down to it for [`LEADER_UNREACHABLE_TICKS`] ticks
    /// in a row, having been connected to it (a node that just started may
    /// follow a leader it has heard of through another peer before its own
    /// connection is up).
    fn check_leader_link(&mut self) -> Option<NodeId> {
        let me = self.core.replica().config().id;
        let leader = self.core.replica().leader().filter(|l| *l != me);
        if leader != self.leader_link.0 {
            self.leader_link = (leader, false);
            self.leader_down_ticks = 0;
        }
        let leader = leader?;
        let up = self.link.is_connected(leader);
        self.leader_link.1 |= up;
        let down = self.leader_link.1 && !up;
        self.leader_down_ticks = if down { self.leader_down_ticks + 1 } else { 0 };
        if self.leader_down_ticks != LEADER_UNREACHABLE_TICKS {
            return None;
        }
        tracing::info!(
            group = self.group.0,
            leader = leader.0,
            "lost the connection to the leader"
        );
        Some(leader)
    }
}

/// The commit point an Accept of the same value as `write` is sent with
/// among `rest`, if it is sent.
fn sent_commit(rest: &[GroupAction<Channels>], write: &Write) -> Option<Slot> {
    let Write::Accept { slot, entry } = write else {
        return None;
    };
    rest.iter().find_map(|action| match action {
        GroupAction::Send(envelope) => match &envelope.msg {
            Message::Accept(a) if a.slot == *slot && a.ballot == entry.ballot => Some(a.commit),
            _ => None,
        },
        _ => None,
    })
}

fn proposal_len(proposal: &Proposal<Channels>) -> usize {
    match proposal {
        Proposal::One(..) => 1,
        Proposal::Many(commands, _) => commands.len(),
    }
}

fn last_command(proposal: &Proposal<Channels>) -> Option<&Command> {
    match proposal {
        Proposal::One(command, _) => Some(command),
        Proposal::Many(commands, _) => commands.last(),
    }
}
