//! The safety checkers: one per named property, fed by the simulator as
//! writes are issued and become durable, messages leave and slots commit.
//!
//! | property | checked when |
//! |---|---|
//! | promises never go back | a `Promise` write is issued |
//! | nothing accepted below its promise | an `Accept` write is issued |
//! | a chosen slot never changes | a majority of the slot's voters has durably accepted one ballot |
//! | one configuration per slot | a replica commits a slot (its schedule against the checker's) |
//! | no message before its state is durable | a Promise, Accepted or Prepare leaves |
//! | learned values were chosen, in order | a replica commits a slot |
//! | agreement: committed prefixes agree | a replica commits a slot |
//! | validity: only proposed commands | a replica commits a slot |
//! | durable acceptor state survives a restart | a replica restarts |
//! | acknowledged commands survive, once | the end of a run |

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::{
    Ballot, Batch, ClientId, Envelope, Log, Membership, Message, NodeId, Slot, Write,
    CHANGE_DELAY_SLOTS,
};

/// A property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property's name.
    pub property: &'static str,
    /// What happened.
    pub detail: String,
}

/// Acceptor state as it stands on one replica's disk.
#[derive(Clone, Debug, Default)]
struct DurableView {
    promised: Ballot,
    accepted: BTreeMap<Slot, Ballot>,
}

/// Per-replica bookkeeping.
#[derive(Clone, Debug, Default)]
struct NodeView {
    durable: DurableView,
    /// The highest ballot in any write issued (durable or not).
    issued_promise: Ballot,
    /// The slot this replica must commit next.
    next_commit: Slot,
    /// The highest ballot this replica told a peer it promised or accepted
    /// (a peer may count on it; its own candidacies no peer does).
    promised_to_peers: Ballot,
    /// That ballot as it stood when the replica lost its disk: it must
    /// never accept below it again.
    lost_promise: Ballot,
}

/// Watches a whole cluster.
#[derive(Debug)]
pub struct Checker {
    /// The voters (replica indices) of each slot from the first slot on,
    /// derived here from the committed configuration entries alone, not
    /// from any replica's schedule: a slot is chosen only by a majority of
    /// its own voters, so a removed member's votes never count.
    voters: Vec<(Slot, BTreeSet<usize>)>,
    nodes: Vec<NodeView>,
    /// Who durably accepted what, per slot and ballot.
    votes: BTreeMap<(Slot, Ballot), (Batch, BTreeSet<usize>)>,
    chosen: BTreeMap<Slot, Batch>,
    committed: BTreeMap<Slot, Batch>,
    proposed: BTreeSet<(ClientId, u64, Vec<u8>)>,
    violations: Vec<Violation>,
}

impl Checker {
    /// A checker for `n` replicas.
    pub fn new(n: usize) -> Checker {
        Checker::with_voters(n, n)
    }

    /// A checker for `n` replicas of which the first `voters` make the
    /// first configuration.
    pub fn with_voters(n: usize, voters: usize) -> Checker {
        Checker {
            voters: vec![(Slot(0), (0..voters).collect())],
            nodes: vec![NodeView::default(); n],
            votes: BTreeMap::new(),
            chosen: BTreeMap::new(),
            committed: BTreeMap::new(),
            proposed: BTreeSet::new(),
            violations: Vec::new(),
        }
    }

    /// Everything found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Records a property failure.
    pub fn fail(&mut self, property: &'static str, detail: String) {
        self.violations.push(Violation { property, detail });
    }

    /// Slots known chosen.
    pub fn chosen_slots(&self) -> usize {
        self.chosen.len()
    }

    /// A client proposed this command (validity's reference).
    pub fn on_proposed(&mut self, client: ClientId, seq: u64, data: &[u8]) {
        self.proposed.insert((client, seq, data.to_vec()));
    }

    /// Replica `node` issued `write`.
    pub fn on_write_issued(&mut self, node: usize, write: &Write) {
        let view = &mut self.nodes[node];
        let issued = view.issued_promise;
        match write {
            Write::Promise(ballot) => {
                view.issued_promise = issued.max(*ballot);
                if *ballot < issued {
                    self.fail(
                        "promises never go back",
                        format!("node {node} promised {ballot} after {issued}"),
                    );
                }
            }
            Write::Commit(_) => {}
            Write::Accept { slot, entry } => {
                view.issued_promise = issued.max(entry.ballot);
                if entry.ballot < issued {
                    let detail = format!(
                        "node {node} accepted {slot:?} at {} below its promise {issued}",
                        entry.ballot
                    );
                    self.fail("nothing accepted below its promise", detail);
                }
            }
        }
    }

    /// Replica `node`'s writes became durable.
    pub fn on_durable(&mut self, node: usize, writes: &[Write]) {
        for write in writes {
            match write {
                Write::Promise(ballot) => {
                    let durable = &mut self.nodes[node].durable;
                    durable.promised = durable.promised.max(*ballot);
                }
                Write::Accept { slot, entry } => {
                    self.on_durable_accept(node, *slot, entry.ballot, &entry.batch)
                }
                Write::Commit(_) => {}
            }
        }
    }

    fn on_durable_accept(&mut self, node: usize, slot: Slot, ballot: Ballot, batch: &Batch) {
        let durable = &mut self.nodes[node].durable;
        durable.promised = durable.promised.max(ballot);
        durable.accepted.insert(slot, ballot);
        let (value, voters) = self
            .votes
            .entry((slot, ballot))
            .or_insert_with(|| (batch.clone(), BTreeSet::new()));
        if value != batch {
            let detail = format!("two values accepted at {slot:?} under one ballot {ballot}");
            self.fail("one value per ballot and slot", detail);
            return;
        }
        voters.insert(node);
        let config = voters_at(&self.voters, slot);
        let counted = voters.iter().filter(|v| config.contains(v)).count();
        if counted <= config.len() / 2 {
            return;
        }
        let value = value.clone();
        match self.chosen.get(&slot) {
            None => {
                self.chosen.insert(slot, value);
            }
            Some(chosen) if *chosen != value => {
                let detail = format!("{slot:?} chosen again at {ballot} with another value");
                self.fail("a chosen slot never changes", detail);
            }
            Some(_) => {}
        }
    }

    /// Replica `node` sends `envelope`: a vote must report durable state.
    pub fn on_send(&mut self, node: usize, envelope: &Envelope) {
        let told = match &envelope.msg {
            Message::Promise(p) => Some(p.ballot),
            Message::Accepted(a) => Some(a.ballot),
            _ => None,
        };
        if let Some(ballot) = told.filter(|_| envelope.to != envelope.from) {
            let view = &mut self.nodes[node];
            view.promised_to_peers = view.promised_to_peers.max(ballot);
        }
        let durable = &self.nodes[node].durable;
        let problem = match &envelope.msg {
            Message::Promise(p) if durable.promised < p.ballot => {
                Some(format!("Promise {} before it was durable", p.ballot))
            }
            Message::Promise(p) => p
                .entries
                .iter()
                .find(|(slot, e)| durable.accepted.get(slot).is_none_or(|b| *b < e.ballot))
                .map(|(slot, _)| format!("Promise reports {slot:?} before it was durable")),
            Message::Prepare(p) if durable.promised < p.ballot => Some(format!(
                "Prepare {} before its own promise was durable",
                p.ballot
            )),
            Message::Accepted(a) if durable.accepted.get(&a.slot).is_none_or(|b| *b < a.ballot) => {
                Some(format!(
                    "Accepted {:?} at {} before it was durable",
                    a.slot, a.ballot
                ))
            }
            _ => None,
        };
        if let Some(detail) = problem {
            self.fail(
                "no vote leaves before its state is durable",
                format!("node {node}: {detail}"),
            );
        }
    }

    /// Replica `node` commits `slot`.
    pub fn on_commit(&mut self, node: usize, slot: Slot, batch: &Batch) {
        let expected = self.nodes[node].next_commit;
        if slot != expected {
            self.fail(
                "slots commit in order, once",
                format!("node {node} committed {slot:?}, expected {expected:?}"),
            );
        }
        self.nodes[node].next_commit = slot.next();
        match self.chosen.get(&slot) {
            Some(chosen) if chosen == batch => {}
            Some(_) => self.fail(
                "learned values were chosen",
                format!("node {node} committed a value at {slot:?} that was not chosen"),
            ),
            None => self.fail(
                "learned values were chosen",
                format!("node {node} committed {slot:?} before a majority accepted it"),
            ),
        }
        match self.committed.get(&slot) {
            Some(first) if first != batch => self.fail(
                "agreement",
                format!("node {node} committed another value at {slot:?}"),
            ),
            Some(_) => {}
            None => {
                // The first commit of each slot comes in slot order (a
                // replica commits in order): the schedule grows in order.
                if let Ok(Some(membership)) = Membership::from_batch(batch) {
                    let voters = membership.voter_ids().map(|id| id.0 as usize - 1);
                    let from = slot.plus(CHANGE_DELAY_SLOTS);
                    self.voters.push((from, voters.collect()));
                }
                self.committed.insert(slot, batch.clone());
            }
        }
        for command in batch.iter() {
            if !self
                .proposed
                .contains(&(command.client, command.seq, command.data.to_vec()))
            {
                let detail = format!(
                    "node {node} committed ({:?}, {}) that nobody proposed",
                    command.client, command.seq
                );
                self.fail("validity", detail);
            }
        }
    }

    /// Replica `node` installed a peer's snapshot of every slot below
    /// `upto`: it commits from there.
    pub fn on_snapshot_installed(&mut self, node: usize, upto: Slot) {
        self.nodes[node].next_commit = upto;
    }

    /// Replica `node` restarted from its disk (and snapshot) with this
    /// promise, log and commit point, resuming commits at its commit point. It must hold
    /// everything that was durable: its promise, and each accepted slot
    /// above what its snapshot covers at that ballot or a later one.
    /// Promises that never reached the disk were never sent, so they may be
    /// forgotten; those of a lost disk were, so they may not.
    pub fn on_restart(&mut self, node: usize, promised: Ballot, log: &Log, commit: Slot) {
        let view = &mut self.nodes[node];
        view.next_commit = commit.max(log.start());
        let mut lost = Vec::new();
        if promised < view.durable.promised {
            lost.push(format!(
                "promised {} after {} was durable",
                promised, view.durable.promised
            ));
        }
        for (slot, ballot) in view.durable.accepted.range(log.start()..) {
            if log.get(*slot).is_none_or(|e| e.ballot < *ballot) {
                lost.push(format!("{slot:?} accepted at {ballot} is gone"));
            }
        }
        if let Some(first) = lost.first() {
            let detail = format!("node {node} restarted: {first} ({} in all)", lost.len());
            self.fail("durable acceptor state survives a restart", detail);
        }
        let view = &mut self.nodes[node];
        view.issued_promise = view.durable.promised.max(view.lost_promise);
    }

    /// Replica `node`'s durable writes after the last ones were cut are
    /// `survivors`: what it may have told a peer from the cut ones is lost
    /// with them, as with a lost disk. What it durably accepted still counts
    /// towards what was chosen.
    pub fn on_tail_cut(&mut self, node: usize, survivors: &[Write]) {
        self.on_disk_lost(node);
        self.on_durable(node, survivors);
    }

    /// Replica `node` (crashed) lost its disk. What it durably accepted still
    /// counts towards what was chosen.
    pub fn on_disk_lost(&mut self, node: usize) {
        let view = &mut self.nodes[node];
        view.lost_promise = view.lost_promise.max(view.promised_to_peers);
        view.durable = DurableView::default();
    }
}

/// The voters of `slot` in a schedule of increasing first slots.
fn voters_at(schedule: &[(Slot, BTreeSet<usize>)], slot: Slot) -> &BTreeSet<usize> {
    let after = schedule.partition_point(|(from, _)| *from <= slot);
    &schedule[after.saturating_sub(1)].1
}

impl Checker {
    /// The voters of `slot` by the committed configuration entries, as
    /// node ids, in order.
    pub fn voters_of(&self, slot: Slot) -> Vec<NodeId> {
        voters_at(&self.voters, slot)
            .iter()
            .map(|i| node_id(*i))
            .collect()
    }
}

/// Returns the id of a replica by its index.
pub fn node_id(index: usize) -> NodeId {
    NodeId(index as u64 + 1)
}
