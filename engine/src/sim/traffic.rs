//! What moves between the simulated replicas and their clients: messages
//! and snapshot chunks over the lossy network, proposals, reads, and the
//! answers the group cores give them.

use std::collections::BTreeSet;

use bytes::Bytes;
use rand::Rng;

use super::client::SimClient;
use super::cluster::{Cluster, Event, SimCallers};
use crate::group::snapshot::chunks_from;
use crate::group::{GroupInput, Proposal, ProposeOutcome, ReadOutcome};
use crate::protocol::{ClientId, Command, Envelope, NodeId, ReadId, Slot};

impl Cluster {
    pub(super) fn send(&mut self, envelope: Envelope) {
        self.stats.messages += 1;
        if self.options.manual {
            self.pool.push(envelope);
            return;
        }
        let (from, to) = (envelope.from.0 as usize - 1, envelope.to.0 as usize - 1);
        if self.lost_in_transit(from, to) {
            return;
        }
        let copies = if self.rng.random_bool(self.network.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.transit_units(from, to);
            self.schedule(delay, Event::Deliver(envelope.clone()));
        }
    }

    /// Sends `node`'s snapshot to peer `to` over the network from byte
    /// `offset` on, chunk by chunk as the runtime does, each lost or
    /// delayed like a message.
    pub(super) fn send_snapshot(
        &mut self,
        node: usize,
        to: NodeId,
        upto: Slot,
        encoded: &Bytes,
        offset: u64,
    ) {
        let from = super::checker::node_id(node);
        let to = to.0 as usize - 1;
        for chunk in chunks_from(upto, encoded, offset) {
            self.stats.messages += 1;
            if self.lost_in_transit(node, to) {
                continue;
            }
            let delay = self.transit_units(node, to);
            self.schedule(delay, Event::DeliverChunk { from, to, chunk });
        }
    }

    /// Sends `node`'s ask for the rest of `to`'s snapshot `upto` from
    /// `offset`, lost or delayed like a message.
    pub(super) fn ask_snapshot(&mut self, node: usize, to: NodeId, upto: Slot, offset: u64) {
        let from = super::checker::node_id(node);
        let to = to.0 as usize - 1;
        self.stats.messages += 1;
        if self.lost_in_transit(node, to) {
            return;
        }
        let delay = self.transit_units(node, to);
        let ask = Event::DeliverAsk {
            from,
            to,
            upto,
            offset,
        };
        self.schedule(delay, ask);
    }

    /// Whether something sent from `from` to `to` now is lost (a cut link,
    /// or the network's loss rate); counts it if so.
    fn lost_in_transit(&mut self, from: usize, to: usize) -> bool {
        let lost = !self.links.is_up(from, to) || self.rng.random_bool(self.network.loss);
        if lost {
            self.stats.dropped += 1;
        }
        lost
    }

    /// Time units until something sent from `from` to `to` now arrives: the
    /// network's delay or a straggler's, and not before a clog lifts.
    fn transit_units(&mut self, from: usize, to: usize) -> u64 {
        let delay = if self.rng.random_bool(self.network.straggler) {
            self.rng
                .random_range(1..=self.network.straggler_units_max.max(1))
        } else {
            self.rng.random_range(
                self.network.delay_min..=self.network.delay_max.max(self.network.delay_min),
            )
        };
        let at = (self.now + delay).max(self.links.clogged_until(from, to));
        at - self.now
    }

    /// A group core answered a client's command.
    pub(super) fn on_answer(&mut self, (client, seq): (ClientId, u64), outcome: ProposeOutcome) {
        let nodes = self.nodes.len();
        let tick = self.tick();
        let known = self.clients.iter_mut().find(|c| c.id == client);
        match (outcome, known) {
            (ProposeOutcome::Applied { index, .. }, Some(c)) => {
                if c.on_acked(seq) {
                    self.acked.push((client, seq, index));
                }
            }
            // A one-shot session of `propose`.
            (ProposeOutcome::Applied { index, .. }, None) => self.acked.push((client, seq, index)),
            (ProposeOutcome::Expired { resume_at }, known) => {
                self.stats.expired += 1;
                if let Some(c) = known {
                    c.on_expired(seq, resume_at);
                }
            }
            (ProposeOutcome::Refused(reason), Some(c)) => c.on_refused(seq, reason, nodes, tick),
            // Clients retry on their own timeouts.
            (ProposeOutcome::Refused(_), None)
            | (ProposeOutcome::Stale, _)
            | (ProposeOutcome::Stopped, _)
            | (ProposeOutcome::InDoubt { .. }, _) => {}
        }
    }

    /// A group core answered a read.
    pub(super) fn on_read_answer(&mut self, node: usize, id: ReadId, outcome: ReadOutcome) {
        match outcome {
            ReadOutcome::Value(_) => self.check_read(node, id),
            ReadOutcome::Refused(_) | ReadOutcome::Stopped => {
                self.reads.remove(&id);
            }
        }
    }

    /// A read-index read is served from `node`'s state machine now: it must
    /// see every command acknowledged before the read was issued.
    fn check_read(&mut self, node: usize, id: ReadId) {
        let Some(acked_before) = self.reads.remove(&id) else {
            return;
        };
        let applied: BTreeSet<(ClientId, u64)> = self
            .applied(node)
            .iter()
            .map(|a| (a.client, a.seq))
            .collect();
        let missing = self.acked[..acked_before]
            .iter()
            .find(|(client, seq, _)| !applied.contains(&(*client, *seq)));
        if let Some((client, seq, _)) = missing {
            let detail = format!(
                "n{} served {id:?} without ({client:?}, {seq}), acknowledged before it",
                node + 1
            );
            self.checker
                .fail("reads see every acknowledged write", detail);
        }
        self.stats.reads += 1;
    }

    /// Issues a read at `node`, remembering what had been acknowledged.
    pub fn read(&mut self, node: usize) -> ReadId {
        let id = ReadId(self.next_read);
        self.next_read += 1;
        self.reads.insert(id, self.acked.len());
        if self.is_running(node) {
            self.step(node, GroupInput::Read(Bytes::new(), id));
        }
        id
    }

    /// Adds `count` client sessions issuing `ops` commands each.
    pub fn add_clients(&mut self, count: usize, ops: u32) {
        for _ in 0..count {
            let id = ClientId(self.next_client);
            self.next_client += 1;
            let target = self.rng.random_range(0..self.nodes.len());
            self.clients.push(SimClient::new(id, target, ops));
        }
    }

    pub(super) fn clients_tick(&mut self) {
        let tick = self.tick();
        let timeout = u64::from(self.configs[0].election_timeout_ticks) * 3;
        for i in 0..self.clients.len() {
            let client = &mut self.clients[i];
            let due = match &client.pending {
                Some(p) if tick >= p.resend_tick => true,
                Some(p) if tick >= p.sent_tick + timeout => {
                    client.target = (client.target + 1) % self.nodes.len();
                    true
                }
                Some(_) => false,
                None if client.ops_left > 0 && self.rng.random_bool(0.2) => {
                    let pending = client.issue(tick).clone();
                    self.checker
                        .on_proposed(client.id, pending.seq, &pending.data);
                    true
                }
                None => false,
            };
            if due {
                self.client_send(i, tick);
            }
            // Reads go to any node: a deposed leader must refuse or confirm.
            if self.clients[i].ops_left > 0 && self.rng.random_bool(0.05) {
                let node = self.rng.random_range(0..self.nodes.len());
                self.read(node);
            }
        }
    }

    fn client_send(&mut self, i: usize, tick: u64) {
        let client = &mut self.clients[i];
        let Some(pending) = &mut client.pending else {
            return;
        };
        pending.sent_tick = tick;
        pending.resend_tick = u64::MAX;
        let command = Command {
            client: client.id,
            seq: pending.seq,
            data: pending.data.clone(),
        };
        let target = client.target;
        if self.is_running(target) {
            self.propose_at(target, command);
        }
    }

    fn propose_at(&mut self, node: usize, command: Command) {
        let caller = (command.client, command.seq);
        let proposal: Proposal<SimCallers> = Proposal::One(command, caller);
        self.step(node, GroupInput::Propose(vec![proposal]));
    }

    /// Proposes one command at `node` on behalf of a fresh one-shot session;
    /// returns the session.
    pub fn propose(&mut self, node: usize, data: &str) -> ClientId {
        let client = ClientId(1_000_000 + self.next_client);
        self.next_client += 1;
        self.checker.on_proposed(client, 1, data.as_bytes());
        let command = Command {
            client,
            seq: 1,
            data: Bytes::copy_from_slice(data.as_bytes()),
        };
        self.propose_at(node, command);
        client
    }

    /// Stops clients from issuing new commands (they still retry).
    pub fn stop_new_commands(&mut self) {
        for client in &mut self.clients {
            client.ops_left = 0;
        }
    }

    /// Whether every client has its commands acknowledged.
    pub fn clients_idle(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.pending.is_none() && c.ops_left == 0)
    }

    /// Messages waiting for manual delivery.
    pub fn pool(&self) -> &[Envelope] {
        &self.pool
    }

    /// Delivers (in order) every pooled message matching `pick`; returns how
    /// many. New messages they cause go to the pool.
    pub fn deliver_where(&mut self, mut pick: impl FnMut(&Envelope) -> bool) -> usize {
        let (chosen, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pool)
            .into_iter()
            .partition(|e| pick(e));
        self.pool = rest;
        let count = chosen.len();
        for envelope in chosen {
            self.deliver(envelope);
        }
        count
    }

    /// Drops every pooled message matching `pick`.
    pub fn drop_where(&mut self, mut pick: impl FnMut(&Envelope) -> bool) {
        self.pool.retain(|e| !pick(e));
    }
}
