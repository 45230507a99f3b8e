//! A 3-replica cluster in one thread with no I/O: the protocol core alone,
//! for benches. Syncs complete at once and messages are delivered in order.

use std::collections::VecDeque;

use synod_engine::protocol::{
    Action, Actions, Batch, Command, Config, DurableState, Envelope, Input, NodeId, Replica,
};

/// Replicas, a message queue, and what each replica applied.
pub struct InMemoryCluster {
    replicas: Vec<Replica>,
    queue: VecDeque<Envelope>,
    out: Actions,
    syncs: Vec<(usize, synod_engine::protocol::SyncId)>,
    /// Commands applied by each replica.
    applied: Vec<u64>,
    /// Batches committed by each replica, in slot order (shared, not copied).
    committed: Vec<Vec<Batch>>,
}

impl InMemoryCluster {
    /// `n` replicas; replica 1 campaigns and leads.
    pub fn new(n: u64, tune: impl Fn(&mut Config)) -> InMemoryCluster {
        let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let replicas = members
            .iter()
            .map(|id| {
                let mut config = Config::new(*id, members.clone());
                tune(&mut config);
                Replica::new(config, DurableState::default()).expect("valid config")
            })
            .collect();
        let mut cluster = InMemoryCluster {
            replicas,
            queue: VecDeque::new(),
            out: Actions::default(),
            syncs: Vec::new(),
            applied: vec![0; n as usize],
            committed: vec![Vec::new(); n as usize],
        };
        cluster.replicas[0].campaign(&mut cluster.out);
        cluster.carry_out(0);
        cluster.pump();
        assert!(cluster.replicas[0].status().leading, "replica 1 leads");
        cluster
    }

    /// Proposes the commands at the leader in one step and delivers every
    /// message until the cluster is quiet (the leader has committed them;
    /// followers learn so from the next Accept or heartbeat).
    pub fn propose(&mut self, commands: &[Command]) {
        self.step(0, Input::ProposeBatch(commands.to_vec()));
        self.pump();
    }

    /// Runs until every replica applied `total` commands in all.
    pub fn wait_applied(&mut self, total: u64) {
        while self.applied.iter().any(|a| *a < total) {
            // Followers learn the last commit point from a heartbeat.
            self.step(0, Input::Tick);
            self.pump();
        }
    }

    /// Commands applied by each replica.
    pub fn applied(&self) -> &[u64] {
        &self.applied
    }

    /// Whether every replica committed the same batches.
    pub fn logs_agree(&self) -> bool {
        self.committed.iter().all(|log| {
            log.len() == self.committed[0].len()
                && log
                    .iter()
                    .zip(&self.committed[0])
                    .all(|(a, b)| same_batch(a, b))
        })
    }

    fn step(&mut self, replica: usize, input: Input) {
        self.replicas[replica]
            .step(input, &mut self.out)
            .expect("replicas send only valid messages");
        self.carry_out(replica);
    }

    fn carry_out(&mut self, replica: usize) {
        for action in self.out.drain() {
            match action {
                Action::Persist(_) => {}
                Action::Sync(id) => self.syncs.push((replica, id)),
                Action::Send(envelope) => self.queue.push_back(envelope),
                Action::Commit { batch, .. } => {
                    self.applied[replica] += u64::from(batch.len());
                    self.committed[replica].push(batch);
                }
                Action::Reply(_) | Action::SendSnapshot { .. } => {}
            }
        }
    }

    /// Completes syncs and delivers messages until nothing is left to do.
    fn pump(&mut self) {
        loop {
            if let Some((replica, id)) = self.syncs.pop() {
                self.step(replica, Input::Persisted(id));
            } else if let Some(envelope) = self.queue.pop_front() {
                let to = envelope.to.0 as usize - 1;
                self.step(to, Input::Message(envelope));
            } else {
                return;
            }
        }
    }
}

/// Equal batches; replicas normally share the leader's buffer, and a shared
/// buffer is equal to itself without comparing its bytes.
fn same_batch(a: &Batch, b: &Batch) -> bool {
    a.len() == b.len()
        && (a.bytes().as_ptr() == b.bytes().as_ptr() && a.bytes().len() == b.bytes().len()
            || a.bytes() == b.bytes())
}
