//! Configuration changes in the simulated cluster, and the check that
//! every replica counts the voters the committed entries name.

use super::Cluster;
use crate::protocol::{ClientId, Membership, NodeId};

impl Cluster {
    /// Crashed replica `node` lost its disk and its id is retired for
    /// good, as an operator does who brings the machine back under a new
    /// id (`synod node --join`, then `member add` and `member remove`):
    /// coming back under the old id would break the promises the lost
    /// disk held, whatever configuration is in force. In the sweep the new
    /// id is a spare, running empty, that a change adds.
    pub fn retire(&mut self, node: usize) {
        self.wipe(node);
        self.nodes[node].retired = true;
        self.stats.retirements += 1;
        self.note(|| format!("n{} retired", node + 1));
    }

    /// Whether `node` was retired.
    pub fn is_retired(&self, node: usize) -> bool {
        self.nodes[node].retired
    }

    /// The nodes not retired, by index.
    pub fn live_nodes(&self) -> Vec<usize> {
        (0..self.size()).filter(|i| !self.is_retired(*i)).collect()
    }

    /// Whether a retired node is still a member of the leader's newest
    /// configuration, or that configuration is not in force yet (or no
    /// leader knows): its replacement is not done. `None` when no node
    /// was retired.
    pub fn replacement_due(&self) -> Option<bool> {
        let retired: Vec<NodeId> = (0..self.size())
            .filter(|i| self.nodes[*i].retired)
            .map(super::node_id)
            .collect();
        if retired.is_empty() {
            return None;
        }
        let Some(replica) = self.leader().and_then(|l| self.replica(l)) else {
            return Some(true);
        };
        let latest = replica.schedule().latest();
        Some(
            retired.iter().any(|id| latest.contains(*id))
                || replica.change_pending_until().is_some(),
        )
    }

    /// The nodes of the leader's newest configuration, by index (every
    /// node when there is no leader): the ones that must hold everything
    /// at the end of a run. The others must hold a prefix of it.
    pub fn final_members(&self) -> Vec<usize> {
        let Some(replica) = self.leader().and_then(|l| self.replica(l)) else {
            return (0..self.size()).collect();
        };
        (0..self.size())
            .filter(|i| replica.schedule().latest().contains(super::node_id(*i)))
            .collect()
    }

    /// One configuration per slot: the replica's configuration of its next
    /// slot is the one the committed entries give.
    pub(super) fn check_schedule(&mut self, node: usize) {
        let Some(replica) = self.nodes[node].core.as_ref().map(|c| c.replica()) else {
            return;
        };
        let commit = replica.status().commit;
        let own: Vec<NodeId> = replica.schedule().at(commit).voter_ids().collect();
        let expected = self.checker.voters_of(commit);
        if own != expected {
            let detail = format!(
                "n{} counts {own:?} as the voters of {commit:?}; the committed entries say {expected:?}",
                node + 1
            );
            self.checker.fail("one configuration per slot", detail);
        }
    }

    /// Has leader `node` propose `membership` (a change the sweep draws;
    /// the named scenarios call it too). A refusal changes nothing.
    pub fn change_membership(&mut self, node: usize, membership: Membership) {
        let Some(core) = self.nodes[node].core.as_mut() else {
            return;
        };
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        // Validity: the entry is a proposal like a client's.
        let data = membership.encode();
        self.checker.on_proposed(ClientId::MEMBERSHIP, 0, &data);
        let mut out = Vec::new();
        match core.change_membership(membership, &mut out) {
            Ok(()) => {
                self.stats.reconfigurations += 1;
                self.note(|| format!("n{} proposes voters {voters:?}", node + 1));
            }
            Err(refusal) => {
                self.note(|| format!("n{} refuses voters {voters:?}: {refusal}", node + 1))
            }
        }
        self.after_step(node, None, out);
    }
}
