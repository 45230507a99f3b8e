//! The simulated snapshot file: written off the core some time after the
//! core asks (as the runtime's writer thread does), lost if the process
//! dies first, and fed back as `SnapshotSaved` once durable.

use bytes::Bytes;
use rand::Rng;

use super::cluster::{Cluster, Event, TICK_UNITS};
use crate::group::{GroupInput, SnapshotJob};
use crate::protocol::Slot;

impl Cluster {
    /// Encodes the snapshot at once (it is deterministic) and makes the
    /// file durable 1 to 5 ticks later, unless the node crashes first, as
    /// the runtime's snapshot thread does.
    pub(super) fn save_snapshot(&mut self, node: usize, upto: Slot, job: SnapshotJob) {
        let encoded = match job.encode() {
            Ok(encoded) => Bytes::from(encoded),
            Err(error) => {
                self.checker
                    .fail("snapshots encode", format!("n{}: {error}", node + 1));
                self.step(node, GroupInput::SnapshotSkipped(upto));
                return;
            }
        };
        let incarnation = self.nodes[node].incarnation;
        let delay = self.rng.random_range(1..=5 * TICK_UNITS);
        let event = Event::SnapshotSaved {
            node,
            incarnation,
            upto,
            encoded,
        };
        self.schedule(delay, event);
    }

    /// The file is durable, unless the process that wrote it died first.
    pub(super) fn snapshot_saved(
        &mut self,
        node: usize,
        incarnation: u64,
        upto: Slot,
        encoded: Bytes,
    ) {
        let n = &self.nodes[node];
        if n.incarnation != incarnation || n.core.is_none() {
            return; // the process died before the file was durable
        }
        if n.paused {
            // Its loop sees the saved file once it runs again.
            let event = Event::SnapshotSaved {
                node,
                incarnation,
                upto,
                encoded,
            };
            self.schedule(TICK_UNITS, event);
            return;
        }
        self.nodes[node].snapshot_file = Some(encoded.to_vec());
        self.note(|| format!("n{} snapshot at {upto:?} durable", node + 1));
        self.step(node, GroupInput::SnapshotSaved { upto, encoded });
    }
}
