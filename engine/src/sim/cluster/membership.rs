//! Configuration changes in the simulated cluster, and the check that
//! every replica counts the voters the committed entries name.

use super::Cluster;
use crate::protocol::{ClientId, Membership, NodeId};

impl Cluster {
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
        if core.change_membership(membership, &mut out).is_ok() {
            self.stats.reconfigurations += 1;
            self.note(|| format!("n{} proposes voters {voters:?}", node + 1));
        }
        self.after_step(node, None, out);
    }
}
