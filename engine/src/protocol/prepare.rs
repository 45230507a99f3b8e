//! Phase 1 of a new leader: promises gathered page by page from a majority
//! of every configuration that may govern an open slot, then the highest-
//! ballot value of each open slot re-proposed.

use std::collections::BTreeMap;

use super::action::Actions;
use super::batch::Batch;
use super::log::Entry;
use super::membership::Membership;
use super::message::{Message, Prepare, Promise};
use super::proposer::{Pages, Phase};
use super::types::{NodeId, Slot};
use super::{Replica, Role};

impl Replica {
    pub(super) fn on_promise(&mut self, from: NodeId, promise: Promise, out: &mut Actions) {
        let (commit, now) = (self.commit, self.now);
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        let ballot = leading.ballot;
        let Phase::Preparing {
            promises, found, ..
        } = &mut leading.phase
        else {
            return;
        };
        // An acceptor that compacted slots we lack cannot help recover them.
        if promise.ballot != ballot || promise.log_start > commit {
            return;
        }
        leading.heard_at.insert(from, now);
        let pages = promises.entry(from).or_insert_with(|| Pages {
            entries: Vec::new(),
            asking_from: Some(commit),
        });
        // A page we did not ask for (a duplicate, or late) changes nothing.
        if pages.asking_from != Some(promise.from_slot) {
            return;
        }
        pages.entries.extend(promise.entries);
        pages.asking_from = promise.next_from;
        if let Some(from_slot) = promise.next_from {
            self.send(from, Message::Prepare(Prepare { ballot, from_slot }), out);
            return;
        }
        for (_, entry) in pages.entries.iter().filter(|(slot, _)| *slot >= commit) {
            if let Ok(Some(membership)) = Membership::from_batch(&entry.batch) {
                if !found.contains(&membership) {
                    found.push(membership);
                }
            }
        }
        self.leader_maybe_prepared(out);
    }

    /// Phase 1 ends once a majority of every configuration that may govern
    /// a slot at or above the commit point has promised: those in the
    /// schedule, and those found in the promises (chosen or not, we cannot
    /// tell yet). Members of a found configuration not asked yet are asked.
    pub(super) fn leader_maybe_prepared(&mut self, out: &mut Actions) {
        let (me, commit) = (self.config.id, self.commit);
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        let ballot = leading.ballot;
        let Phase::Preparing { asked, found, .. } = &mut leading.phase else {
            return;
        };
        let mut newly_asked = Vec::new();
        for member in found.iter().flat_map(|m| m.members()) {
            if member.id != me && asked.insert(member.id) {
                newly_asked.push(member.id);
            }
        }
        let Role::Leading(leading) = &self.role else {
            return;
        };
        let Phase::Preparing {
            promises, found, ..
        } = &leading.phase
        else {
            return;
        };
        let promised = |id: NodeId| promises.get(&id).is_some_and(Pages::complete);
        let prepared = found.iter().all(|m| m.majority(promised)) && self.majorities(promised);
        for peer in newly_asked {
            let from_slot = commit;
            self.send(peer, Message::Prepare(Prepare { ballot, from_slot }), out);
        }
        if prepared {
            self.leader_recover(out);
        }
    }

    /// Phase 1 is done: re-propose, at our ballot, the highest-ballot value
    /// reported for every open slot, and a no-op for every gap.
    pub(super) fn leader_recover(&mut self, out: &mut Actions) {
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        let Phase::Preparing { promises, .. } =
            std::mem::replace(&mut leading.phase, Phase::Steady)
        else {
            return;
        };
        let mut best: BTreeMap<Slot, Entry> = BTreeMap::new();
        for (slot, entry) in promises
            .into_values()
            .filter(Pages::complete)
            .flat_map(|p| p.entries)
        {
            if slot < self.commit {
                continue;
            }
            match best.get(&slot) {
                Some(have) if have.ballot >= entry.ballot => {}
                _ => {
                    best.insert(slot, entry);
                }
            }
        }
        let end = best.keys().next_back().map_or(self.commit, |s| s.next());
        leading.recovery_end = end;
        let mut slot = self.commit;
        while slot < end {
            let batch = best.remove(&slot).map_or_else(Batch::noop, |e| e.batch);
            leading.recovering.push_back(batch);
            slot = slot.next();
        }
        self.leader_heartbeat(out);
        self.leader_flush(out);
    }

    pub(super) fn leader_resend_prepare(&mut self, out: &mut Actions) {
        let (now, resend) = (self.now, u64::from(self.config.resend_ticks));
        let Role::Leading(leading) = &mut self.role else {
            return;
        };
        let Phase::Preparing {
            promises,
            prepared_at,
            asked,
            ..
        } = &mut leading.phase
        else {
            return;
        };
        if *prepared_at + resend > now {
            return;
        }
        *prepared_at = now;
        // Each missing acceptor is asked again for the page it owes.
        let missing: Vec<(NodeId, Slot)> = asked
            .iter()
            .copied()
            .filter_map(|m| match promises.get(&m) {
                None => Some((m, self.commit)),
                Some(pages) => pages.asking_from.map(|from| (m, from)),
            })
            .collect();
        let ballot = leading.ballot;
        for (peer, from_slot) in missing {
            self.send(peer, Message::Prepare(Prepare { ballot, from_slot }), out);
        }
    }
}
