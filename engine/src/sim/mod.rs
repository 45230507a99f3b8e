//! The deterministic simulator: a whole cluster in one thread, one seed for
//! every choice (faults, timings, config knobs), and a checker per safety
//! property run as the cluster moves.
//!
//! A run has two phases. In the safety phase clients propose while the
//! network loses, duplicates, delays and reorders messages, partitions and
//! clogs links, and replicas crash (losing unsynced writes, perhaps tearing
//! the last one) and restart. In half the seeds replicas also snapshot
//! their state machines, compact their logs and drop the disk writes the
//! snapshot covers, and send snapshots to peers behind them.
//!
//! Each replica is the runtime's own [`crate::group::GroupCore`]: sessions,
//! apply, waiters, the snapshot policy, the WAL cut, snapshot install and
//! the rebuild mark are the code that runs in production. The simulator
//! only executes the core's actions on a simulated disk and network.
//!
//! In the liveness phase the faults stop, every
//! replica is restarted and every link healed, and the cluster must elect a
//! leader and commit every pending command within a tick budget. Then the
//! end-of-run checks: every replica applied the same commands, and every
//! acknowledged command is in each of them exactly once, at the index the
//! client was told. A failing seed replays exactly with `synod sim --seed S
//! --trace`.

mod checker;
mod client;
mod cluster;
mod disk;
mod machine;
mod network;
mod options;
mod snapshot_files;
mod trace;
mod traffic;

#[cfg(test)]
mod scenarios;

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use checker::{node_id, Checker, Violation};
pub use client::SimClient;
pub use cluster::{Cluster, ClusterOptions, SimCallers, Stats, TICK_UNITS};
pub use disk::SimDisk;
pub use machine::{Applied, SimMachine};
pub use network::{Links, NetworkFaults};

use crate::protocol::{ClientId, Config, Member, Membership};

/// Ticks of the safety phase.
pub const SAFETY_TICKS: u64 = 1_500;
/// Ticks the liveness phase may take before the run fails.
pub const LIVENESS_TICKS_MAX: u64 = 3_000;

/// What one seed did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Replicas.
    pub nodes: usize,
    /// Slots chosen.
    pub commits: u64,
    /// Commands acknowledged to clients.
    pub acked: u64,
    /// Times a replica became leader.
    pub elections: u64,
    /// Linearizable reads served and checked.
    pub reads: u64,
    /// Faults injected.
    pub faults: u64,
    /// Replicas that came back with their disk lost and rebuilt.
    pub disk_losses: u64,
    /// Restarts with the WAL's last durable frames damaged and cut.
    pub tails_cut: u64,
    /// Leadership handed to another member by the leader.
    pub transfers: u64,
    /// Configuration changes a leader took up.
    pub reconfigurations: u64,
    /// Nodes retired after losing their disk, replaced by new members.
    pub retirements: u64,
    /// Snapshots the replicas took of their state machines.
    pub snapshots_taken: u64,
    /// Snapshots installed from a peer (by replicas behind its log).
    pub snapshots_installed: u64,
    /// Asks for the rest of a snapshot after lost chunks.
    pub snapshot_asks: u64,
    /// Ticks the liveness phase took.
    pub converge_ticks: u64,
    /// Properties found broken.
    pub violations: Vec<Violation>,
    /// The event trace, when asked for.
    pub trace: Vec<String>,
}

/// The faults one seed draws for its safety phase.
#[derive(Clone, Copy, Debug)]
struct FaultPlan {
    network: NetworkFaults,
    crash_per_tick: f64,
    pause_per_tick: f64,
    partition_per_tick: f64,
    clog_per_tick: f64,
    /// Chance that a crashed replica comes back with its disk lost.
    disk_loss_per_restart: f64,
    /// Chance that a crashed replica comes back with its WAL's last
    /// durable frames damaged (and cut).
    tail_damage_per_restart: f64,
    /// Chance per tick that the leader hands leadership to another member.
    transfer_per_tick: f64,
    /// Chance per tick that the leader proposes a new configuration.
    reconfigure_per_tick: f64,
    /// A lost disk or damaged tail retires the node's id, and a change
    /// replaces it ([`Cluster::retire`]), instead of a rebuild under the
    /// same id by asking the group's first members.
    retire_lost_disks: bool,
}

/// Runs one seed: safety phase with faults, liveness phase without, checks.
pub fn run_seed(seed: u64, trace: bool) -> SimReport {
    run(seed, trace, |_| {})
}

/// `run_seed` with deliberately broken replicas, to prove the checkers fire.
#[cfg(test)]
pub(crate) fn run_seed_broken(seed: u64, faults: crate::protocol::TestFaults) -> SimReport {
    BROKEN.with(|b| b.set(Some(faults)));
    let result = run(seed, false, |options| {
        options.faults = BROKEN.with(|b| b.get()).unwrap_or_default();
    });
    BROKEN.with(|b| b.set(None));
    result
}

#[cfg(test)]
thread_local! {
    static BROKEN: std::cell::Cell<Option<crate::protocol::TestFaults>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
pub(crate) fn run_seed_with(seed: u64, customize: fn(&mut ClusterOptions)) -> (SimReport, Stats) {
    let mut stats = None;
    let report = run_inner(seed, false, customize, &mut stats, false);
    (report, stats.expect("set by the run"))
}

fn run(seed: u64, trace: bool, customize: fn(&mut ClusterOptions)) -> SimReport {
    run_inner(seed, trace, customize, &mut None, false)
}

/// `run_seed` where most seeds also draw configuration changes: one or two
/// nodes start outside the group, and the leader proposes random
/// configurations (voters, learners, nodes left out) under every fault; a
/// lost disk or damaged tail retires the node, and a change replaces it
/// with a spare. A sweep of its own (`synod sim --change-members`), so the
/// default sweep's seeds run as they always have.
pub fn run_seed_changing_members(seed: u64, trace: bool) -> SimReport {
    run_inner(seed, trace, |_| {}, &mut None, true)
}

fn run_inner(
    seed: u64,
    trace: bool,
    customize: fn(&mut ClusterOptions),
    stats_out: &mut Option<Stats>,
    change_members: bool,
) -> SimReport {
    let mut draw = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_5EED);
    let nodes = if draw.random_bool(0.5) { 3 } else { 5 };
    let plan = FaultPlan {
        network: NetworkFaults {
            loss: draw.random_range(0.0..0.3),
            duplicate: draw.random_range(0.0..0.05),
            delay_min: 1,
            delay_max: draw.random_range(2..=30),
            straggler: draw.random_range(0.0..0.02),
            straggler_units_max: 50 * TICK_UNITS,
        },
        crash_per_tick: draw.random_range(0.0..0.004),
        pause_per_tick: draw.random_range(0.0..0.004),
        partition_per_tick: draw.random_range(0.0..0.006),
        clog_per_tick: draw.random_range(0.0..0.004),
        // Drawn apart, so that seeds without disk loss run as before.
        disk_loss_per_restart: ChaCha8Rng::seed_from_u64(seed ^ 0xD15C)
            .random_range(-0.3..0.3f64)
            .max(0.0),
        tail_damage_per_restart: ChaCha8Rng::seed_from_u64(seed ^ 0x7A11)
            .random_range(-0.3..0.3f64)
            .max(0.0),
        transfer_per_tick: ChaCha8Rng::seed_from_u64(seed ^ 0x7F3A)
            .random_range(-0.01..0.01f64)
            .max(0.0),
        reconfigure_per_tick: 0.0,
        retire_lost_disks: false,
    };
    let mut plan = plan;
    // Drawn apart, so that seeds without configuration changes run as
    // before. In those that draw them, one or two nodes start outside the
    // group, and changes add, remove, demote and promote at random.
    let mut reconfigure = ChaCha8Rng::seed_from_u64(seed ^ 0xC0F1_6000);
    let spares = if change_members && reconfigure.random_bool(0.8) {
        plan.reconfigure_per_tick = reconfigure.random_range(0.002..0.012);
        // A replica that lost its disk rebuilds by asking the members of
        // the group's first configuration (`--rejoin`), who may be gone by
        // now: with changes it comes back as a new member instead.
        plan.retire_lost_disks = true;
        reconfigure.random_range(1..=2)
    } else {
        0
    };
    let mut options = ClusterOptions::new(nodes + spares, seed);
    options.members = nodes;
    options.network = plan.network;
    options.fsync_units_max = draw.random_range(1..=15);
    options.trace = trace;
    options.tune = tune_for_seed;
    // Drawn apart, so that seeds without snapshots run as before.
    let mut snapshots = ChaCha8Rng::seed_from_u64(seed ^ 0x5_4A95);
    if snapshots.random_bool(0.5) {
        options.snapshot.every_slots = snapshots.random_range(2..=40);
        options.snapshot.keep_slots = snapshots.random_range(0..=4);
        // In some seeds the bytes applied bring a snapshot due first.
        if snapshots.random_bool(0.3) {
            options.snapshot.every_bytes = snapshots.random_range(64..=2048);
        }
        // In some, snapshots span several chunks: lost and reordered
        // chunks leave gaps the receiver asks to have filled.
        if snapshots.random_bool(0.3) {
            options.snapshot_ballast = snapshots.random_range(300 << 10..=1200 << 10);
        }
    }
    customize(&mut options);
    let mut cluster = Cluster::new(options);
    cluster.add_clients(draw.random_range(2..=6), draw.random_range(5..=30));
    safety_phase(&mut cluster, &plan);
    let converge_ticks = liveness_phase(&mut cluster);
    final_checks(&mut cluster);
    let stats = cluster.stats().clone();
    *stats_out = Some(stats.clone());
    SimReport {
        seed,
        nodes,
        commits: cluster.chosen_slots() as u64,
        acked: cluster.acked().len() as u64,
        elections: stats.elections,
        reads: stats.reads,
        faults: stats.faults,
        disk_losses: stats.disk_losses,
        tails_cut: stats.tails_cut,
        transfers: stats.transfers,
        reconfigurations: stats.reconfigurations,
        retirements: stats.retirements,
        snapshots_taken: stats.snapshots_taken,
        snapshots_installed: stats.snapshots_installed,
        snapshot_asks: stats.snapshot_asks,
        converge_ticks,
        violations: cluster.violations().to_vec(),
        trace: cluster.take_trace(),
    }
}

/// Knobs drawn per seed from the config's seed, so every replica of a run
/// agrees and every run of a seed is the same.
fn tune_for_seed(config: &mut Config) {
    let mut draw = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7E57);
    config.pipeline_max = [1, 2, 4, 16, 64][draw.random_range(0..5)];
    config.batch_cmds_max = [1, 3, 64][draw.random_range(0..3)];
    config.linger_ticks = draw.random_range(0..=2);
    config.heartbeat_ticks = draw.random_range(1..=3);
    config.election_timeout_ticks = draw.random_range(10..=30);
    config.finalize_ticks = draw.random_range(0..=3);
    config.resend_ticks = draw.random_range(3..=8);
    config.catchup_slots_max = [1, 4, 256][draw.random_range(0..3)];
    // Small batches and small promise pages, so Phase 1 often takes pages.
    config.command_bytes_max = 64;
    config.batch_bytes_max = [128, 4096][draw.random_range(0..2)];
    config.page_bytes_max = config.batch_bytes_max * [1, 4, 1024][draw.random_range(0..3)];
}

fn safety_phase(cluster: &mut Cluster, plan: &FaultPlan) {
    let n = cluster.size();
    let mut disk_losses = ChaCha8Rng::seed_from_u64(cluster.seed() ^ 0x0D15_C0FF);
    let mut tail_damage = ChaCha8Rng::seed_from_u64(cluster.seed() ^ 0x7A11_DA3A);
    // Their own stream too: seeds without transfers run as before.
    let mut transfers = ChaCha8Rng::seed_from_u64(cluster.seed() ^ 0x7F3A_0A11);
    let mut changes = ChaCha8Rng::seed_from_u64(cluster.seed() ^ 0xC0F1_6001);
    let mut restart_at: BTreeMap<usize, u64> = BTreeMap::new();
    let mut resume_at: BTreeMap<usize, u64> = BTreeMap::new();
    let mut heal_at: Option<u64> = None;
    for tick in 0..SAFETY_TICKS {
        if cluster.rng().random_bool(plan.crash_per_tick) {
            let node = cluster.rng().random_range(0..n);
            if cluster.is_running(node) {
                cluster.crash(node);
                cluster.count_fault();
                let down = cluster.rng().random_range(5..200);
                restart_at.insert(node, tick + down);
            }
        }
        if cluster.rng().random_bool(plan.pause_per_tick) {
            let node = cluster.rng().random_range(0..n);
            if cluster.is_running(node) {
                cluster.pause(node);
                cluster.count_fault();
                let frozen = cluster.rng().random_range(5..100);
                resume_at.insert(node, tick + frozen);
            }
        }
        let thawed: Vec<usize> = resume_at
            .iter()
            .filter(|(_, at)| **at <= tick)
            .map(|(n, _)| *n)
            .collect();
        for node in thawed {
            resume_at.remove(&node);
            cluster.resume(node);
        }
        let due: Vec<usize> = restart_at
            .iter()
            .filter(|(_, at)| **at <= tick)
            .map(|(n, _)| *n)
            .collect();
        for node in due {
            restart_at.remove(&node);
            // One lost disk at a time: two at once may be a majority's, and
            // then waiting for ever is the right answer.
            let lose = plan.disk_loss_per_restart > 0.0
                && disk_losses.random_bool(plan.disk_loss_per_restart)
                && !cluster.any_rebuilding();
            // Drawn from a stream of their own, after the disk loss's, so
            // that seeds without them run as before.
            let damage = !lose
                && plan.tail_damage_per_restart > 0.0
                && tail_damage.random_bool(plan.tail_damage_per_restart)
                && !cluster.any_rebuilding();
            if (lose || damage) && plan.retire_lost_disks {
                // One replacement at a time, as one rebuild at a time, and
                // never fewer than three nodes left to draw voters from.
                if cluster.live_nodes().len() > 3
                    && cluster.replacement_due().is_none_or(|due| !due)
                {
                    cluster.count_fault();
                    cluster.retire(node);
                } else {
                    cluster.start(node);
                }
            } else if lose {
                cluster.count_fault();
                cluster.wipe_and_rejoin(node);
            } else if damage {
                cluster.count_fault();
                cluster.damage_tail_and_start(node);
            } else {
                cluster.start(node);
            }
        }
        if heal_at.is_none() && cluster.rng().random_bool(plan.partition_per_tick) {
            partition(cluster);
            let lasting = cluster.rng().random_range(10..300);
            heal_at = Some(tick + lasting);
        }
        if heal_at.is_some_and(|at| at <= tick) {
            cluster.links.heal();
            heal_at = None;
        }
        if cluster.rng().random_bool(plan.clog_per_tick) {
            let (from, to) = (
                cluster.rng().random_range(0..n),
                cluster.rng().random_range(0..n),
            );
            let until = (tick + cluster.rng().random_range(5..60)) * TICK_UNITS;
            cluster.links.clog(from, to, until);
            cluster.count_fault();
        }
        if plan.transfer_per_tick > 0.0 && transfers.random_bool(plan.transfer_per_tick) {
            if let Some(leader) = cluster.leader() {
                let to = (leader + transfers.random_range(1..n)) % n;
                cluster.transfer_leadership(leader, to);
            }
        }
        let drawn =
            plan.reconfigure_per_tick > 0.0 && changes.random_bool(plan.reconfigure_per_tick);
        if drawn || cluster.replacement_due() == Some(true) {
            propose_change(cluster, &mut changes);
        }
        cluster.run_ticks(1);
    }
}

/// Has the leader, if any, propose a configuration drawn among the nodes
/// not retired (a refusal, while a change is under way, changes nothing).
fn propose_change(cluster: &mut Cluster, draw: &mut ChaCha8Rng) {
    let Some(leader) = cluster.leader() else {
        return;
    };
    let membership = draw_membership(draw, &cluster.live_nodes(), leader);
    cluster.change_membership(leader, membership);
}

/// A random configuration of the nodes `live`: each a voter, a learner or
/// out, with at least three voters (drawn among the rest, the leader
/// first): the sweep loses one disk at a time, and a group of one or two
/// voters cannot lose one (that is a majority's, as two at once would be
/// in a group of three).
fn draw_membership(draw: &mut ChaCha8Rng, live: &[usize], leader: usize) -> Membership {
    let n = live.len();
    let mut members: Vec<Member> = live
        .iter()
        .filter_map(|&i| {
            let roll = draw.random_range(0.0..1.0f64);
            (roll < 0.75).then(|| Member {
                id: node_id(i),
                voter: roll < 0.6,
                addr: String::new(),
            })
        })
        .collect();
    let mut candidates: Vec<usize> = live.iter().copied().filter(|i| *i != leader).collect();
    candidates.insert(0, leader);
    for node in candidates {
        if members.iter().filter(|m| m.voter).count() >= 3.min(n) {
            break;
        }
        let id = node_id(node);
        if !members.iter().any(|m| m.id == id && m.voter) {
            members.retain(|m| m.id != id);
            members.push(Member {
                id,
                voter: true,
                addr: String::new(),
            });
        }
    }
    Membership::new(members).expect("distinct nodes, three voters")
}

/// Isolates one node, splits the cluster in two, or cuts one link one way.
fn partition(cluster: &mut Cluster) {
    let n = cluster.size();
    cluster.count_fault();
    match cluster.rng().random_range(0..3) {
        0 => {
            let alone = cluster.rng().random_range(0..n);
            let sides: Vec<usize> = (0..n).map(|i| usize::from(i == alone)).collect();
            cluster.links.split(&sides);
        }
        1 => {
            let sides: Vec<usize> = (0..n).map(|_| cluster.rng().random_range(0..2)).collect();
            cluster.links.split(&sides);
        }
        _ => {
            let (from, to) = (
                cluster.rng().random_range(0..n),
                cluster.rng().random_range(0..n),
            );
            if from != to {
                cluster.links.cut_one_way(from, to);
            }
        }
    }
}

/// Heals everything and waits for the cluster to finish every command.
fn liveness_phase(cluster: &mut Cluster) -> u64 {
    cluster.links.heal();
    cluster.set_network(NetworkFaults::none());
    for node in 0..cluster.size() {
        if cluster.is_paused(node) {
            cluster.resume(node);
        } else if !cluster.is_running(node) && !cluster.is_retired(node) {
            cluster.start(node);
        }
    }
    cluster.stop_new_commands();
    let start = cluster.tick();
    // A retired node's replacement, while not done: the operator goes on
    // with it (without it a retired voter would stay in the group).
    let mut changes = ChaCha8Rng::seed_from_u64(cluster.seed() ^ 0xC0F1_6002);
    let converged = loop {
        if converged(cluster) {
            break true;
        }
        if cluster.tick() - start >= LIVENESS_TICKS_MAX {
            break false;
        }
        if cluster.replacement_due() == Some(true) {
            propose_change(cluster, &mut changes);
        }
        cluster.run_ticks(1);
    };
    if !converged {
        let detail = format!(
            "no convergence within {LIVENESS_TICKS_MAX} ticks without faults: leader {:?}, commits {:?}, clients idle {}",
            cluster.leader().map(|l| l + 1),
            cluster.commits(),
            cluster.clients_idle()
        );
        cluster.checker_mut().fail("liveness", detail);
    }
    cluster.tick() - start
}

/// The leader has committed every slot it holds (its recovery too), its
/// newest configuration is in force, every member of it has caught up to
/// it, and every client's commands are done.
fn converged(c: &Cluster) -> bool {
    let commits = c.commits();
    let Some(replica) = c.leader().and_then(|l| c.replica(l)) else {
        return false;
    };
    let end = replica.log().end();
    let leader_done = replica.status().commit == end && replica.change_pending_until().is_none();
    let members_done = c.final_members().iter().all(|m| commits[*m] == Some(end));
    c.clients_idle() && leader_done && members_done
}

/// Every replica applied the same commands; every acknowledged command is in
/// each exactly once, at the index its client was told.
fn final_checks(cluster: &mut Cluster) {
    let members = cluster.final_members();
    let first = members.first().copied().unwrap_or(0);
    let reference = cluster.applied(first).to_vec();
    for node in 0..cluster.size() {
        // A node outside the last configuration stopped hearing the log
        // when it left: it holds a prefix of it.
        let applied = cluster.applied(node);
        let agrees = if members.contains(&node) {
            applied == reference.as_slice()
        } else {
            reference.starts_with(applied)
        };
        if !agrees {
            let detail = format!(
                "n{} applied {} commands, n{} {}",
                node + 1,
                cluster.applied(node).len(),
                first + 1,
                reference.len()
            );
            cluster
                .checker_mut()
                .fail("committed prefixes agree", detail);
        }
    }
    // Client sessions make every retry apply once, bounded table or not.
    let mut seen = BTreeSet::new();
    let twice = reference
        .iter()
        .find(|a| a.client != ClientId(0) && !seen.insert((a.client, a.seq)));
    if let Some(a) = twice {
        let detail = format!(
            "({:?}, {}) applied twice, again at {:?}",
            a.client, a.seq, a.index
        );
        cluster
            .checker_mut()
            .fail("no command is applied twice", detail);
    }
    let acked = cluster.acked().to_vec();
    for node in members {
        for (client, seq, index) in &acked {
            let found: Vec<_> = cluster
                .applied(node)
                .iter()
                .filter(|a| a.client == *client && a.seq == *seq)
                .map(|a| a.index)
                .collect();
            if found != [*index] {
                let detail = format!(
                    "n{}: ({client:?}, {seq}) acknowledged at {index:?} but applied at {found:?}",
                    node + 1
                );
                cluster
                    .checker_mut()
                    .fail("acknowledged commands survive, once", detail);
            }
        }
    }
}
