//! The tasks and threads a group's actions start: syncs, the snapshot
//! writer, snapshot transfers to peers, and the rebuild marker's removal.
//! Each feeds its outcome back into the group's inbox.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::driver::GroupDriver;
use super::marker::remove_marker;
use super::outgoing::Outgoing;
use super::Inbound;
use crate::group::snapshot::{chunk_at, encode_chunk, SnapshotError, KIND_SNAPSHOT_CHUNK};
use crate::group::{SnapshotJob, SnapshotStart, StateMachine};
use crate::protocol::{NodeId, Slot, SyncId};
use crate::runtime::snapshot_file;

/// How long a snapshot transfer may wait on a full peer queue before it
/// gives up (the follower, hearing nothing, asks for the rest from what it
/// holds).
const SNAPSHOT_SEND_PATIENCE: Duration = Duration::from_secs(5);

impl<S: StateMachine> GroupDriver<S> {
    /// Group commit: the WAL folds every sync requested while one is in
    /// flight into the next write + fdatasync.
    pub(super) fn sync(&self, sync: SyncId) {
        let (wal, inputs) = (self.wal.clone(), self.inputs.clone());
        let fsync_latency = self.metrics.fsync_latency.clone();
        glommio::spawn_local(async move {
            // The test-only broken build (feature `unsafe-ack-before-fsync`,
            // docs/chaos.md): report the write durable now, write it later,
            // so a crash in between loses acknowledged commands.
            let unsafe_ack = cfg!(feature = "unsafe-ack-before-fsync");
            if unsafe_ack {
                let _ = inputs.send(Inbound::Persisted(sync, None)).await;
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            let started = Instant::now();
            let synced = wal.sync().await;
            fsync_latency.observe(started.elapsed().as_secs_f64());
            let input = match synced {
                Ok(_) if unsafe_ack => return,
                // The window wants the disk's cycle, not this wait (up to
                // two cycles under group commit).
                Ok(_) => Inbound::Persisted(sync, wal.last_commit_time()),
                Err(error) => Inbound::Fatal(error),
            };
            let _ = inputs.send(input).await;
        })
        .detach();
    }

    /// Once every append so far is durable, the rebuild marker goes.
    pub(super) fn end_rebuild(&self) {
        let (wal, inputs, group) = (self.wal.clone(), self.inputs.clone(), self.group.0);
        let marker = self.marker.clone();
        let promised = self.core.replica().status().promised;
        glommio::spawn_local(async move {
            let failure = match wal.sync().await {
                Ok(_) => remove_marker(&marker).err().map(Inbound::RebuildFailed),
                Err(error) => Some(Inbound::Fatal(error)),
            };
            match failure {
                Some(input) => {
                    let _ = inputs.send(input).await;
                }
                None => {
                    tracing::info!(group, ballot = %promised, "rebuilt and rejoined: voting again")
                }
            }
        })
        .detach();
    }

    /// Encodes and writes the file on a thread of its own (paced to the
    /// applied rate unless `urgent`); `SnapshotSaved` comes back. Not on
    /// glommio's blocking pool: it has one thread, which the WAL's segment
    /// removals (under the WAL's lock) and other groups' snapshots would
    /// queue behind a paced write.
    pub(super) fn save_snapshot(&mut self, upto: Slot, job: SnapshotJob, urgent: bool) {
        let policy = self.core.snapshot_policy();
        let rate = (!urgent)
            .then(|| policy.write_rate(self.paced_bytes, self.paced_since.elapsed()))
            .flatten();
        self.paced_bytes = 0;
        self.paced_since = Instant::now();
        let (path, inputs, group) = (self.snapshot_path.clone(), self.inputs.clone(), self.group);
        let failed = |path: &std::path::Path, why: String| SnapshotError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(why),
        };
        let (done, written) = oneshot::channel();
        let thread_path = path.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("synod-snapshot-{}", group.0))
            .spawn(move || {
                let result = job.encode().map_err(Unsaved::Encoding).and_then(|encoded| {
                    snapshot_file::save(&thread_path, &encoded, rate)
                        .map(|()| encoded)
                        .map_err(Unsaved::Writing)
                });
                let _ = done.send(result);
            });
        if let Err(error) = spawned {
            let error = failed(&path, format!("cannot start the snapshot thread: {error}"));
            self.stop_on(Inbound::SnapshotFailed(error));
            return;
        }
        glommio::spawn_local(async move {
            let input = match written.await {
                Ok(Ok(encoded)) => Inbound::SnapshotSaved {
                    upto,
                    encoded: Bytes::from(encoded),
                },
                Ok(Err(Unsaved::Writing(error))) => Inbound::SnapshotFailed(error),
                Ok(Err(Unsaved::Encoding(error))) => {
                    tracing::error!(
                        group = group.0,
                        %error,
                        "cannot encode a snapshot; the log is not compacted"
                    );
                    Inbound::SnapshotSkipped(upto)
                }
                // The thread panicked (in the state machine's encoding, say).
                Err(_) => {
                    Inbound::SnapshotFailed(failed(&path, "the snapshot thread panicked".into()))
                }
            };
            let _ = inputs.send(input).await;
        })
        .detach();
    }

    /// Queues `input` to the group's own loop, which stops on it.
    fn stop_on(&self, input: Inbound) {
        let inputs = self.inputs.clone();
        glommio::spawn_local(async move {
            let _ = inputs.send(input).await;
        })
        .detach();
    }

    /// Sends a durable snapshot to `to` in chunks, one transfer per peer at
    /// a time, pacing on the peer's queue. A peer's ask for the rest
    /// (`SnapshotStart::Asked`) moves a transfer of the same snapshot under
    /// way to that offset, or replaces one of an older snapshot; otherwise
    /// a transfer under way goes on untouched.
    pub(super) fn send_snapshot(
        &mut self,
        to: NodeId,
        upto: Slot,
        encoded: Bytes,
        start: SnapshotStart,
    ) {
        if let Some(outgoing) = self.sending.borrow().get(&to) {
            match start {
                SnapshotStart::Asked(offset) if outgoing.upto == upto => {
                    outgoing.next.set(offset);
                    return;
                }
                SnapshotStart::Asked(_) => outgoing.superseded.set(true),
                SnapshotStart::From(_) => return,
            }
        }
        let start = start.offset();
        tracing::info!(
            group = self.group.0,
            to = to.0,
            upto = upto.0,
            bytes = encoded.len(),
            from = start,
            "sending a snapshot"
        );
        let outgoing = Rc::new(Outgoing {
            upto,
            next: Cell::new(start),
            superseded: Cell::new(false),
        });
        self.sending.borrow_mut().insert(to, outgoing.clone());
        let (group, link, sending) = (self.group, self.link.clone(), self.sending.clone());
        glommio::spawn_local(async move {
            'chunks: while !outgoing.superseded.get() {
                let offset = outgoing.next.get();
                if offset >= encoded.len() as u64 {
                    break;
                }
                let chunk = chunk_at(upto, &encoded, offset);
                let end = offset + chunk.data.len() as u64;
                let body = Bytes::from_owner(encode_chunk(group, &chunk));
                let started = Instant::now();
                while !link.send_frame(to, KIND_SNAPSHOT_CHUNK, body.clone()) {
                    if started.elapsed() > SNAPSHOT_SEND_PATIENCE {
                        tracing::warn!(
                            group = group.0,
                            to = to.0,
                            "snapshot transfer stalled; dropped"
                        );
                        break 'chunks;
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                // Unless the peer asked for another offset meanwhile.
                if outgoing.next.get() == offset {
                    outgoing.next.set(end);
                }
                // Encoding and queueing a chunk costs the core a fraction
                // of a millisecond; without a yield a transfer whose peer
                // queue has room runs chunk after chunk while the group's
                // own task waits (tens of ms for a snapshot of 80 MB).
                glommio::executor().yield_now().await;
            }
            let mut sending = sending.borrow_mut();
            if sending.get(&to).is_some_and(|o| Rc::ptr_eq(o, &outgoing)) {
                sending.remove(&to);
            }
        })
        .detach();
    }
}

/// Why a snapshot was not saved.
enum Unsaved {
    /// It could not be encoded: logged, the log stays uncompacted.
    Encoding(SnapshotError),
    /// The file could not be written: fatal.
    Writing(SnapshotError),
}
