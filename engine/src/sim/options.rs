//! How a simulated cluster is built, and what a run counts.

use super::network::NetworkFaults;
use crate::group::snapshot::SnapshotPolicy;
use crate::protocol::Config;

/// How a cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Replicas.
    pub nodes: usize,
    /// The first `members` replicas are the group's first voters; the
    /// rest run as nodes not added yet (configuration changes add them).
    pub members: usize,
    /// Drives every random choice.
    pub seed: u64,
    /// Network fault rates.
    pub network: NetworkFaults,
    /// Largest fsync latency, in time units (syncs complete in order).
    pub fsync_units_max: u64,
    /// Adjusts each replica's config.
    pub tune: fn(&mut Config),
    /// Messages wait in a pool for the test to deliver them by hand, and
    /// syncs complete at once.
    pub manual: bool,
    /// Record a line per event.
    pub trace: bool,
    /// Replicas started at creation; the rest wait for `start`.
    pub started: usize,
    /// Each tick, each replica's pipeline window changes with probability
    /// 1/20 to a random size (as the runtime's latency-driven window does).
    pub vary_pipeline_window: bool,
    /// Client sessions each replica keeps (the runtime's bound is
    /// `SESSIONS_MAX`; a small one makes evictions and expired sessions).
    pub sessions_max: usize,
    /// When replicas snapshot, compact and drop the disk writes a restart
    /// no longer needs (the group core's policy); a peer behind the
    /// compaction point is sent the snapshot. `every_slots` 0: never.
    pub snapshot: SnapshotPolicy,
    /// Bytes of filler in every state machine snapshot, so that snapshots
    /// span several chunks (`SimMachine::with_ballast`).
    pub snapshot_ballast: usize,
    /// Deliberately broken protocol rules, for tests of the checkers.
    #[cfg(test)]
    pub(crate) faults: crate::protocol::TestFaults,
    /// Deliberately broken group-core rules, for tests of the checkers.
    #[cfg(test)]
    pub(crate) core_faults: crate::group::CoreFaults,
    /// A replica whose disk was wiped restarts as if new instead of
    /// rejoining (what an operator who forgets `--rejoin` does), for tests
    /// that prove the checker sees the harm.
    #[cfg(test)]
    pub(crate) wiped_restart_unsafely: bool,
    /// A replica whose damaged tail was cut votes at once, as if nothing
    /// that counted could have been cut (the checkers must catch it).
    #[cfg(test)]
    pub(crate) trust_cut_tail: bool,
    /// Test only, broken on purpose: the promise record is cut with the
    /// WAL's tail (as if kept in it), so a rebuild's floor is the promise
    /// the cut WAL still holds.
    #[cfg(test)]
    pub(crate) record_cut_with_tail: bool,
    /// Snapshots lose their last applied command.
    #[cfg(test)]
    pub(crate) snapshots_short: bool,
    /// A replica crashes in the step that installs a peer's snapshot,
    /// before that snapshot is durable (the first such install only).
    #[cfg(test)]
    pub(crate) crash_after_install: bool,
}

impl ClusterOptions {
    /// A fault-free cluster of `nodes`, all started, never snapshotting.
    pub fn new(nodes: usize, seed: u64) -> ClusterOptions {
        ClusterOptions {
            nodes,
            members: nodes,
            seed,
            network: NetworkFaults::none(),
            fsync_units_max: 2,
            tune: |_| {},
            manual: false,
            trace: false,
            started: nodes,
            vary_pipeline_window: false,
            sessions_max: crate::protocol::SESSIONS_MAX,
            snapshot: SnapshotPolicy {
                every_slots: 0,
                every_bytes: u64::MAX,
                keep_slots: 0,
                write_pace: 0,
                write_floor_bytes_per_sec: 0,
            },
            snapshot_ballast: 0,
            #[cfg(test)]
            faults: crate::protocol::TestFaults::default(),
            #[cfg(test)]
            core_faults: crate::group::CoreFaults::default(),
            #[cfg(test)]
            wiped_restart_unsafely: false,
            #[cfg(test)]
            trust_cut_tail: false,
            #[cfg(test)]
            record_cut_with_tail: false,
            #[cfg(test)]
            snapshots_short: false,
            #[cfg(test)]
            crash_after_install: false,
        }
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Times a replica finished Phase 1 as leader.
    pub elections: u64,
    /// Crashes, partitions, cuts and clogs injected.
    pub faults: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages lost (dropped, cut off, or addressed to a dead node).
    pub dropped: u64,
    /// Linearizable reads served (and checked).
    pub reads: u64,
    /// Disks lost (each replica then rebuilt from its peers).
    pub disk_losses: u64,
    /// Restarts with a damaged WAL tail cut.
    pub tails_cut: u64,
    /// Leadership handed to another member.
    pub transfers: u64,
    /// Commands refused because their session had been evicted.
    pub expired: u64,
    /// Snapshots replicas took of their own state machine.
    pub snapshots_taken: u64,
    /// Snapshots replicas installed from a peer.
    pub snapshots_installed: u64,
    /// Asks for the rest of a snapshot after lost chunks.
    pub snapshot_asks: u64,
    /// Configuration changes a leader took up.
    pub reconfigurations: u64,
    /// Nodes whose disk was lost retired for good, for a new member to
    /// replace (seeds with changes).
    pub retirements: u64,
}
