//! The `replace` fault: a node is lost for good and a new one, at a new
//! address and with the next id, takes its place through the membership
//! commands an operator would use (`synod node --join`, `synod member
//! add`, `synod member remove`).

use std::net::SocketAddr;
use std::time::Duration;

use synod_bench::local::node_dir;

use super::nemesis::Nemesis;
use crate::admin_cmd::Replacement;

/// How long each membership command may take (the new node catches up
/// first).
const CHANGE_WAIT: Duration = Duration::from_secs(60);

impl Nemesis {
    /// Whether any node has been replaced (the cluster's first members
    /// are then no longer all there, and `--rejoin` cannot work).
    pub(super) fn replaced(&self) -> bool {
        self.members.iter().any(|&id| id > self.first_members)
    }

    /// Kills a member for good, wipes its disk, starts a new node in its
    /// place and changes the membership: the new one added as a voter, the
    /// old one removed. A command that fails is a finding.
    pub(super) fn replace(&mut self) -> (Vec<usize>, String) {
        let old = self.pick(1)[0];
        if self.spares.is_empty() {
            return (vec![old], "no spare address left; nothing replaced".into());
        }
        let (listen, client) = self.spares.remove(0);
        self.kill_and_settle(old);
        let _ = std::fs::remove_dir_all(node_dir(&self.data_dir, old));
        self.members.retain(|&id| id != old);
        let via: Vec<SocketAddr> = self
            .members
            .iter()
            .map(|&id| self.cluster.client_addrs[id - 1])
            .collect();
        let new = match self.cluster.join(listen, client, &via) {
            Ok(new) => new,
            Err(e) => {
                self.findings
                    .push(format!("starting a node to replace n{old}: {e}"));
                self.members.push(old);
                self.restart(old);
                return (vec![old], "not replaced".into());
            }
        };
        self.members.push(new);
        let reach = [via, vec![client]].concat();
        let replacement = Replacement {
            old: old as u64,
            new: new as u64,
            addr: listen,
            wait: CHANGE_WAIT,
            leader_wait_ms: (CHANGE_WAIT - Duration::from_secs(2)).as_millis() as u32,
        };
        if let Err((what, reply)) = replacement.run(&reach, 0, None) {
            self.findings
                .push(format!("replacing n{old} by n{new}: {what}: {reply}"));
            return (vec![old, new], format!("{what} failed"));
        }
        (vec![old, new], format!("n{old} replaced by n{new}"))
    }
}
