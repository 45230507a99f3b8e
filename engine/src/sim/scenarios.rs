//! Named scenario tests, each a classic way consensus goes wrong.

use super::*;

#[test]
fn a_short_sweep_finds_nothing() {
    for seed in 0..40 {
        assert_clean_run(&run_seed(seed, false));
    }
}

/// The leader's pipeline window changing under it (the runtime sets it
/// from measured latencies) breaks no property and stalls nothing.
#[test]
fn a_sweep_with_a_changing_pipeline_window_finds_nothing() {
    for seed in 0..40 {
        assert_clean_run(&run_seed_with(seed, |o| o.vary_pipeline_window = true).0);
    }
}

/// A session table far smaller than the clients: sessions are evicted,
/// their commands refused as expired and the clients start over, under
/// every fault, and still no command is applied twice (the final checks)
/// and the replicas agree.
#[test]
fn a_sweep_with_a_table_of_three_sessions_evicts_and_finds_nothing() {
    let mut expired = 0;
    for seed in 0..40 {
        let (report, stats) = run_seed_with(seed, |o| o.sessions_max = 3);
        assert_clean_run(&report);
        expired += stats.expired;
    }
    assert!(
        expired > 0,
        "no session was ever evicted: the test tests nothing"
    );
}

/// No violation, and something acknowledged.
fn assert_clean_run(report: &SimReport) {
    let seed = report.seed;
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:?}",
        report.violations
    );
    assert!(
        report.acked > 0,
        "seed {seed} acknowledged nothing: {report:?}"
    );
}

/// Seeds until the first violation of `property` under `faults`, if any.
fn first_caught(faults: crate::protocol::TestFaults, property: &str, seeds: u64) -> Option<u64> {
    (0..seeds).find(|seed| {
        run_seed_broken(*seed, faults)
            .violations
            .iter()
            .any(|v| v.property == property)
    })
}

#[test]
fn replying_before_persist_is_caught() {
    let faults = crate::protocol::TestFaults {
        reply_before_persist: true,
        ..Default::default()
    };
    let caught = first_caught(faults, "no vote leaves before its state is durable", 20);
    assert!(
        caught.is_some(),
        "the durability checker missed votes sent before fsync"
    );
}

#[test]
fn accepting_below_the_promise_is_caught() {
    let faults = crate::protocol::TestFaults {
        accept_below_promise: true,
        ..Default::default()
    };
    let caught = first_caught(faults, "nothing accepted below its promise", 200);
    assert!(
        caught.is_some(),
        "the promise checker missed accepts below the promise"
    );
}

use crate::protocol::{Batch, Envelope, Message, NodeId, Slot, Write};

fn fault_free(nodes: usize, seed: u64) -> Cluster {
    Cluster::new(ClusterOptions::new(nodes, seed))
}

fn wait_for_leader(cluster: &mut Cluster) -> usize {
    assert!(
        cluster.run_until(500, |c| c.leader().is_some()),
        "no leader elected"
    );
    cluster.leader().unwrap()
}

fn applied_data(cluster: &Cluster, node: usize) -> Vec<String> {
    cluster
        .applied(node)
        .iter()
        .map(|a| String::from_utf8_lossy(&a.data).into_owned())
        .collect()
}

fn assert_clean(cluster: &Cluster) {
    assert!(
        cluster.violations().is_empty(),
        "{:?}",
        cluster.violations()
    );
}

/// Basic Paxos with two proposers (no election): each pre-empts the other
/// with a higher ballot before the other's Accepts arrive, forever. The
/// schedule is the one in the seed notes: n1 reaches {1,2,3}, n5 reaches
/// {3,4,5}, and acceptor 3 keeps switching sides.
#[test]
fn dueling_proposers_livelock_without_election() {
    let mut options = ClusterOptions::new(5, 7);
    options.manual = true;
    options.tune = |c| c.election_enabled = false;
    let mut cluster = Cluster::new(options);
    let side = |p: usize| -> Vec<u64> {
        if p == 0 {
            vec![1, 2, 3]
        } else {
            vec![3, 4, 5]
        }
    };
    // One phase of proposer p: its messages of `kinds` to its side, and the
    // answers back; everything to the far side is lost.
    let phase = |c: &mut Cluster, p: usize, kinds: &[&str]| {
        let me = NodeId(p as u64 + 1);
        let reach = side(p);
        c.drop_where(|e| e.from == me && !reach.contains(&e.to.0));
        c.deliver_where(|e| e.from == me && kinds.contains(&e.msg.kind()));
        c.deliver_where(|e| e.to == me && reach.contains(&e.from.0));
    };
    cluster.campaign(0);
    cluster.propose(0, "v1");
    cluster.campaign(4);
    cluster.propose(4, "v5");
    phase(&mut cluster, 0, &["Prepare"]);
    phase(&mut cluster, 4, &["Prepare"]);
    for _ in 0..30 {
        phase(&mut cluster, 0, &["Accept"]); // refused by 3: n1 prepares again
        phase(&mut cluster, 0, &["Prepare"]);
        phase(&mut cluster, 4, &["Accept"]); // refused by 3: n5 prepares again
        phase(&mut cluster, 4, &["Prepare"]);
    }
    assert_eq!(cluster.chosen_slots(), 0, "a duel chose something");
    let promised = cluster.replica(2).unwrap().status().promised;
    assert!(promised.round > 60, "ballots keep rising: {promised}");
    assert_clean(&cluster);
}

/// The cure: with election on, one stable leader; proposals sent to both
/// would-be duelists commit.
#[test]
fn an_elected_stable_leader_commits_what_both_proposed() {
    let mut cluster = fault_free(5, 7);
    let leader = wait_for_leader(&mut cluster);
    cluster.propose(leader, "v1");
    cluster.propose(leader, "v5");
    assert!(
        cluster.run_until(100, |c| c.acked().len() == 2),
        "not committed"
    );
    for node in 0..5 {
        cluster.run_until(100, |c| c.applied(node).len() == 2);
        assert_eq!(applied_data(&cluster, node), ["v1", "v5"]);
    }
    assert_clean(&cluster);
}

/// The seed notes' partition: B leads, the network splits {A, B} | {C, D, E}.
/// B cannot commit "set 3" and steps down; C is elected in the majority and
/// commits "set 8"; after the heal A and B adopt C's log.
#[test]
fn two_subnet_partition() {
    let mut cluster = fault_free(5, 11);
    let b = wait_for_leader(&mut cluster);
    assert_eq!(b, 4, "group 0 with equal logs: the highest id leads");
    let a = 0;
    let sides: Vec<usize> = (0..5).map(|n| usize::from(n != a && n != b)).collect();
    cluster.links.split(&sides);
    cluster.propose(b, "set 3");
    cluster.run_ticks(100);
    assert!(
        !cluster.replica(b).unwrap().status().leading,
        "B still leads from the minority"
    );
    let c = wait_for_leader(&mut cluster);
    assert!(sides[c] == 1, "the new leader is in the majority");
    cluster.propose(c, "set 8");
    assert!(
        cluster.run_until(100, |cl| cl.acked().len() == 1),
        "C did not commit set 8"
    );
    cluster.links.heal();
    let c_commit = cluster.replica(c).unwrap().status().commit;
    assert!(cluster.run_until(200, |cl| cl.commits().iter().all(|s| *s == Some(c_commit))));
    for node in 0..5 {
        assert_eq!(applied_data(&cluster, node), ["set 8"], "n{}", node + 1);
    }
    assert_eq!(
        cluster.acked().len(),
        1,
        "set 3 was never reported committed"
    );
    assert_clean(&cluster);
}

/// ZooKeeper's start order: equal logs, group 0.
#[test]
fn start_order_decides_the_first_leader() {
    for (order, expected) in [([0, 1, 2, 3, 4], 2), ([4, 3, 2, 1, 0], 4)] {
        let mut options = ClusterOptions::new(5, 3);
        options.started = 0;
        let mut cluster = Cluster::new(options);
        for (i, node) in order.into_iter().enumerate() {
            cluster.start(node);
            cluster.run_ticks(60);
            if i < 2 {
                assert_eq!(cluster.leader(), None, "no majority up, no leader");
            } else {
                assert_eq!(cluster.leader(), Some(expected), "order {order:?}");
            }
        }
        for node in 0..5 {
            let leader = cluster.replica(node).unwrap().status().leader;
            assert_eq!(
                leader,
                Some(NodeId(expected as u64 + 1)),
                "n{} follows the sitting leader",
                node + 1
            );
        }
        assert_clean(&cluster);
    }
}

/// After a restart of all nodes: the highest epoch wins, then the freshest
/// log, then the id.
#[test]
fn restart_elects_highest_epoch_then_freshest_log_then_id() {
    let accept = |slot: u64, round: u64, owner: u64| Write::Accept {
        slot: Slot(slot),
        entry: crate::protocol::Entry {
            ballot: crate::protocol::Ballot {
                round,
                node: NodeId(owner),
            },
            batch: Batch::noop(),
        },
    };
    let cases: Vec<(Vec<Vec<Write>>, usize, &str)> = vec![
        (
            vec![
                vec![accept(0, 5, 1)],
                (0..4).map(|s| accept(s, 4, 2)).collect(),
                vec![accept(0, 4, 2)],
            ],
            0,
            "highest epoch",
        ),
        (
            vec![
                vec![accept(0, 4, 2)],
                (0..4).map(|s| accept(s, 4, 2)).collect(),
                (0..2).map(|s| accept(s, 4, 2)).collect(),
            ],
            1,
            "freshest log",
        ),
        (vec![vec![accept(0, 4, 2)]; 3], 2, "highest id"),
    ];
    for (disks, expected, why) in cases {
        let mut options = ClusterOptions::new(3, 5);
        options.started = 0;
        let mut cluster = Cluster::new(options);
        for (node, writes) in disks.into_iter().enumerate() {
            cluster.preload(node, writes);
        }
        for node in 0..3 {
            cluster.start(node);
        }
        assert_eq!(wait_for_leader(&mut cluster), expected, "{why}");
        assert_clean(&cluster);
    }
}

/// The leader dies with slots accepted by a minority (slots s and s+2 by n4
/// only, slot s+1 by nobody else). The new leader re-proposes what its
/// Phase 1 finds and fills the hole with a no-op.
#[test]
fn leader_crash_mid_pipeline_recovers_values_and_fills_holes() {
    let mut cluster = fault_free(5, 13);
    let old = wait_for_leader(&mut cluster);
    assert_eq!(old, 4);
    let s = cluster.replica(old).unwrap().status().commit;
    for follower in 0..3 {
        cluster.links.cut_one_way(old, follower);
    }
    cluster.propose(old, "x");
    cluster.run_ticks(1);
    cluster.links.cut_one_way(old, 3);
    cluster.propose(old, "y");
    cluster.run_ticks(1);
    cluster.links.heal();
    for follower in 0..3 {
        cluster.links.cut_one_way(old, follower);
    }
    cluster.propose(old, "z");
    cluster.run_ticks(1);
    cluster.crash(old);
    // With n1 cut off, any Phase 1 majority of the survivors includes n4.
    cluster.links.split(&[1, 0, 0, 0, 0]);
    let new = wait_for_leader(&mut cluster);
    assert_ne!(new, old);
    cluster.links.heal();
    assert!(cluster.run_until(200, |c| (0..4).all(|n| c.commits()[n] == Some(s.plus(3)))));
    for node in 0..4 {
        let log = cluster.replica(node).unwrap().log();
        let at = |i: u64| log.get(s.plus(i)).map(|e| e.batch.clone());
        let one = |d: &str| {
            let mut b = crate::protocol::BatchBuilder::default();
            b.push(&crate::protocol::Command {
                client: cluster
                    .applied(node)
                    .iter()
                    .find(|a| a.data == d.as_bytes())
                    .map(|a| a.client)
                    .unwrap(),
                seq: 1,
                data: bytes::Bytes::copy_from_slice(d.as_bytes()),
            });
            b.finish()
        };
        assert_eq!(at(0), Some(one("x")), "n{}", node + 1);
        assert_eq!(at(1), Some(Batch::noop()), "n{}", node + 1);
        assert_eq!(at(2), Some(one("z")), "n{}", node + 1);
    }
    assert_clean(&cluster);
}

/// A leader frozen long enough for the others to elect a successor wakes up
/// believing it still leads. Its Accepts carry a lower ballot: refused. It
/// steps down, joins the new leader and catches up; its write never commits.
#[test]
fn stale_leader_rejoining_is_refused_and_catches_up() {
    let mut cluster = fault_free(3, 17);
    let old = wait_for_leader(&mut cluster);
    cluster.pause(old);
    let new = wait_for_leader(&mut cluster);
    assert_ne!(new, old);
    cluster.propose(new, "fresh");
    assert!(cluster.run_until(100, |c| c.acked().len() == 1));
    cluster.resume(old);
    assert!(
        cluster.replica(old).unwrap().status().leading,
        "it wakes believing it leads"
    );
    cluster.propose(old, "stale");
    let target = cluster.replica(new).unwrap().status().commit;
    assert!(cluster.run_until(200, |c| c.commits()[old] == Some(target)));
    assert_eq!(
        cluster.replica(old).unwrap().status().leader,
        Some(NodeId(new as u64 + 1))
    );
    for node in 0..3 {
        assert_eq!(applied_data(&cluster, node), ["fresh"], "n{}", node + 1);
    }
    assert_eq!(cluster.acked().len(), 1);
    assert_clean(&cluster);
}

#[test]
fn pooled_messages_are_plain_envelopes() {
    // The manual pool hands out what replicas sent, unchanged.
    let mut options = ClusterOptions::new(3, 1);
    options.manual = true;
    let mut cluster = Cluster::new(options);
    cluster.campaign(0);
    let kinds: Vec<&str> = cluster
        .pool()
        .iter()
        .map(|e: &Envelope| e.msg.kind())
        .collect();
    assert_eq!(kinds, ["Prepare", "Prepare"]);
    assert!(cluster
        .pool()
        .iter()
        .all(|e| matches!(e.msg, Message::Prepare(_))));
}

/// A leader frozen while a successor acknowledges writes wakes up still
/// believing it leads. Read-index makes it confirm with a majority first,
/// which it cannot: the read is never served stale. With the confirmation
/// switched off, the read checker catches the stale read.
#[test]
fn a_deposed_leader_serves_no_stale_reads() {
    for broken in [false, true] {
        let mut options = ClusterOptions::new(3, 23);
        options.faults.read_without_quorum = broken;
        let mut cluster = Cluster::new(options);
        let old = wait_for_leader(&mut cluster);
        cluster.pause(old);
        let new = wait_for_leader(&mut cluster);
        // The successor's heartbeats would depose it the moment it wakes;
        // cut them off so it acts on its stale belief.
        cluster.links.cut_one_way(new, old);
        cluster.propose(new, "written while the old leader slept");
        assert!(cluster.run_until(100, |c| c.acked().len() == 1));
        cluster.resume(old);
        cluster.read(old);
        cluster.run_ticks(50);
        let stale = cluster
            .violations()
            .iter()
            .any(|v| v.property == "reads see every acknowledged write");
        assert_eq!(
            stale,
            broken,
            "broken = {broken}: {:?}",
            cluster.violations()
        );
    }
}

/// Three replicas; "a", "b", "c" are chosen by the leader and one follower
/// while the third is down. Then `forget` takes that follower's votes (its
/// disk lost, say), the leader crashes and the third replica comes back:
/// the only two up are the one that forgot and the one that never knew.
/// `tweak` sets the run's options. Returns the cluster and (leader,
/// forgetful, stale).
fn only_a_forgetful_follower_remembers(
    tweak: fn(&mut ClusterOptions),
    forget: fn(&mut Cluster, usize),
) -> (Cluster, usize, usize, usize) {
    let mut options = ClusterOptions::new(3, 21);
    tweak(&mut options);
    let mut cluster = Cluster::new(options);
    let leader = wait_for_leader(&mut cluster);
    let (forgetful, stale) = ((leader + 1) % 3, (leader + 2) % 3);
    cluster.crash(stale);
    for value in ["a", "b", "c"] {
        cluster.propose(leader, value);
    }
    assert!(
        cluster.run_until(200, |c| c.acked().len() == 3),
        "not chosen"
    );
    cluster.crash(forgetful);
    forget(&mut cluster, forgetful);
    cluster.crash(leader);
    cluster.start(stale);
    (cluster, leader, forgetful, stale)
}

/// The follower's disk is lost.
fn only_a_lost_disk_remembers(unsafely: bool) -> (Cluster, usize, usize, usize) {
    let tweak: fn(&mut ClusterOptions) = match unsafely {
        true => |o| o.wiped_restart_unsafely = true,
        false => |_| {},
    };
    only_a_forgetful_follower_remembers(tweak, Cluster::wipe_and_rejoin)
}

/// The follower's WAL loses everything after its first frame to damage.
fn only_a_cut_tail_remembers(trust: bool) -> (Cluster, usize, usize) {
    let tweak: fn(&mut ClusterOptions) = match trust {
        true => |o| o.trust_cut_tail = true,
        false => |_| {},
    };
    let cut_all_but_the_first = |cluster: &mut Cluster, node: usize| {
        let frames = cluster.disk_writes(node) - 1;
        cluster.cut_tail_and_start(node, frames);
    };
    let (cluster, leader, damaged, _) =
        only_a_forgetful_follower_remembers(tweak, cut_all_but_the_first);
    (cluster, leader, damaged)
}

/// Why a replica that lost its disk must not simply start again: with the
/// one that never heard of them it is a majority that can overwrite the
/// chosen values. The checker sees it.
#[test]
fn a_lost_disk_restarted_as_new_overwrites_chosen_values_and_is_caught() {
    let (mut cluster, _, _, _) = only_a_lost_disk_remembers(true);
    let leader = wait_for_leader(&mut cluster);
    cluster.propose(leader, "z");
    cluster.run_ticks(200);
    let caught: Vec<_> = cluster.violations().iter().map(|v| v.property).collect();
    assert!(
        caught.contains(&"a chosen slot never changes"),
        "the checker missed chosen values overwritten: {caught:?}"
    );
}

/// The same history with the replica rejoining: it votes for nothing while
/// a peer it needs is down (so no leader can form without the chosen
/// values), and once that peer is back it rebuilds and rejoins with every
/// chosen value, then serves as an acceptor (a majority with it commits).
#[test]
fn a_lost_disk_rejoins_only_once_safe_then_votes_again() {
    let (mut cluster, leader, forgetful, stale) = only_a_lost_disk_remembers(false);
    cluster.run_ticks(300);
    assert_eq!(
        cluster.leader(),
        None,
        "a leader formed without the chosen values"
    );
    assert!(cluster.replica(forgetful).unwrap().is_rejoining());
    assert_clean(&cluster);
    cluster.start(leader);
    assert!(
        cluster.run_until(500, |c| !c.replica(forgetful).unwrap().is_rejoining()),
        "never rejoined"
    );
    cluster.run_until(200, |c| c.applied(forgetful).len() == 3);
    assert_eq!(applied_data(&cluster, forgetful), ["a", "b", "c"]);
    // Now it votes: with the old leader down again it and the stale replica
    // commit a new value after the chosen ones.
    cluster.crash(leader);
    let next = wait_for_leader(&mut cluster);
    cluster.propose(next, "d");
    assert!(
        cluster.run_until(300, |c| c.acked().len() == 4),
        "d not chosen"
    );
    for node in [forgetful, stale] {
        cluster.run_until(200, |c| c.applied(node).len() == 4);
        assert_eq!(
            applied_data(&cluster, node),
            ["a", "b", "c", "d"],
            "n{}",
            node + 1
        );
    }
    assert_clean(&cluster);
}

/// Random runs in which crashed replicas come back with their disks lost
/// (one at a time): every safety property holds and every rebuild ends.
#[test]
fn a_sweep_with_lost_disks_finds_nothing() {
    let mut losses = 0;
    for seed in 0..60 {
        let (report, stats) = run_seed_with(seed, |_| {});
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        losses += stats.disk_losses;
    }
    assert!(losses >= 10, "only {losses} disks lost over the sweep");
}

/// The sweep above is not blind to the hazard: the same runs with lost
/// disks restarted as new replicas break a safety property.
#[test]
fn a_sweep_restarting_lost_disks_as_new_is_caught() {
    let caught = (0..300).find(|seed| {
        let (report, _) = run_seed_with(*seed, |o| o.wiped_restart_unsafely = true);
        report.violations.iter().any(|v| v.property != "liveness")
    });
    assert!(caught.is_some(), "no seed showed the harm of a lost disk");
}

/// Random runs in which crashed replicas come back with the last durable
/// frames of their WAL damaged and cut (one rebuild at a time): every
/// safety property holds and every rebuild ends.
#[test]
fn a_sweep_with_damaged_wal_tails_finds_nothing() {
    let mut cut = 0;
    for seed in 0..60 {
        let (report, stats) = run_seed_with(seed, |_| {});
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        cut += stats.tails_cut;
    }
    assert!(cut >= 10, "only {cut} damaged tails over the sweep");
}

/// Why a replica whose damaged WAL tail was cut must not vote at once:
/// what was cut held its votes for chosen values, and with the replica that
/// never heard of them it is a majority that overwrites them.
#[test]
fn a_cut_tail_trusted_overwrites_chosen_values_and_is_caught() {
    let (mut cluster, _, _) = only_a_cut_tail_remembers(true);
    let leader = wait_for_leader(&mut cluster);
    cluster.propose(leader, "z");
    cluster.run_ticks(200);
    let caught: Vec<_> = cluster.violations().iter().map(|v| v.property).collect();
    assert!(
        caught.contains(&"a chosen slot never changes"),
        "the checker missed chosen values overwritten: {caught:?}"
    );
}

/// The same history as the runtime runs it: the replica rebuilds from its
/// peers, votes for nothing while the one that remembers is down, and once
/// it is back ends the rebuild with every chosen value.
#[test]
fn a_cut_tail_rebuilds_before_it_votes_again() {
    let (mut cluster, leader, damaged) = only_a_cut_tail_remembers(false);
    cluster.run_ticks(300);
    assert_eq!(
        cluster.leader(),
        None,
        "a leader formed without the chosen values"
    );
    assert!(cluster.replica(damaged).unwrap().is_rejoining());
    assert_clean(&cluster);
    cluster.start(leader);
    assert!(
        cluster.run_until(500, |c| !c.replica(damaged).unwrap().is_rejoining()),
        "never rejoined"
    );
    cluster.run_until(200, |c| c.applied(damaged).len() == 3);
    assert_eq!(applied_data(&cluster, damaged), ["a", "b", "c"]);
    assert_clean(&cluster);
}

/// Five replicas: the leader, a follower and a third chose a, b and c while
/// the other two were down; then the follower's WAL lost everything after
/// its first frame to damage and the leader went down. With its promise
/// record the follower rebuilds from a majority of its peers (the third
/// and the two that were down); without one it waits for every peer.
fn five_with_a_cut_tail(keep_record: bool) -> (Cluster, usize, usize) {
    let mut cluster = fault_free(5, 5);
    let leader = wait_for_leader(&mut cluster);
    let [damaged, third, down1, down2] = [1, 2, 3, 4].map(|i| (leader + i) % 5);
    cluster.crash(down1);
    cluster.crash(down2);
    for value in ["a", "b", "c"] {
        cluster.propose(leader, value);
    }
    assert!(
        cluster.run_until(200, |c| c.acked().len() == 3),
        "not chosen"
    );
    assert!(cluster.run_until(200, |c| c.applied(third).len() == 3));
    cluster.crash(damaged);
    if !keep_record {
        cluster.forget_promise_record(damaged);
    }
    let frames = cluster.disk_writes(damaged) - 1;
    cluster.crash(leader);
    cluster.cut_tail_and_start(damaged, frames);
    cluster.start(down1);
    cluster.start(down2);
    (cluster, leader, damaged)
}

#[test]
fn a_cut_tail_with_its_promise_record_rebuilds_with_a_majority_of_its_peers() {
    let (mut cluster, _, damaged) = five_with_a_cut_tail(true);
    assert!(
        cluster.run_until(600, |c| !c.replica(damaged).unwrap().is_rejoining()),
        "never rejoined"
    );
    cluster.run_until(200, |c| c.applied(damaged).len() == 3);
    assert_eq!(applied_data(&cluster, damaged), ["a", "b", "c"]);
    assert_clean(&cluster);

    let (mut cluster, leader, damaged) = five_with_a_cut_tail(false);
    cluster.run_ticks(600);
    assert!(
        cluster.replica(damaged).unwrap().is_rejoining(),
        "without a record it needs every peer"
    );
    cluster.start(leader);
    assert!(
        cluster.run_until(600, |c| !c.replica(damaged).unwrap().is_rejoining()),
        "never rejoined with every peer up"
    );
    assert_clean(&cluster);
}

/// Every replica snapshots often and keeps little below the snapshot, so
/// laggards and restarted replicas are sent snapshots under every fault:
/// every safety property holds.
#[test]
fn a_sweep_with_frequent_snapshots_finds_nothing() {
    let (mut taken, mut installed) = (0, 0);
    for seed in 0..40 {
        let (report, stats) = run_seed_with(seed, compact_often);
        assert_clean_run(&report);
        taken += stats.snapshots_taken;
        installed += stats.snapshots_installed;
    }
    assert!(
        taken >= 100 && installed >= 10,
        "{taken} snapshots taken and {installed} installed: the sweep tests little"
    );
}

fn compact_often(options: &mut ClusterOptions) {
    options.snapshot.every_slots = 3;
    options.snapshot.keep_slots = 0;
}

/// The sweep above sees a snapshot that differs from the log it replaces.
#[test]
fn a_sweep_with_snapshots_short_of_a_command_is_caught() {
    let caught = (0..100).find(|seed| {
        let (report, _) = run_seed_with(*seed, |o| {
            compact_often(o);
            o.snapshots_short = true;
        });
        !report.violations.is_empty()
    });
    assert!(caught.is_some(), "no seed showed a short snapshot");
}

/// The sweep above sees a group core that cuts its WAL one accept too
/// high after a snapshot: a vote for a slot above the snapshot is lost.
#[test]
fn a_sweep_cutting_the_wal_one_accept_too_high_is_caught() {
    let caught = (0..300).find(|seed| {
        let (report, _) = run_seed_with(*seed, |o| {
            compact_often(o);
            o.core_faults.cut_one_accept_high = true;
        });
        report.violations.iter().any(|v| v.property != "liveness")
    });
    assert!(caught.is_some(), "no seed showed the harm of the cut");
}

/// A group core whose session table forgets what it applied applies a
/// client's retry a second time: the sweep sees it.
#[test]
fn a_sweep_applying_a_retry_twice_is_caught() {
    let caught = (0..100).find(|seed| {
        let (report, _) = run_seed_with(*seed, |o| o.core_faults.forget_sessions = true);
        report
            .violations
            .iter()
            .any(|v| v.property == "no command is applied twice")
    });
    assert!(caught.is_some(), "no seed showed a command applied twice");
}

/// The five-replica history of docs/protocol.md ("Why the promise record"):
/// P (n5) prepares b and only X (n2) hears it; X's WAL then loses that
/// promise to a damaged tail. L (n1) leads at l < b with Y and Z (n4, n3)
/// and X rejoins under it; L chooses v with X and Y. The Prepare(b) held
/// on the way to Z arrives: Z promises b, and with X's promise from before
/// the crash P completes Phase 1 seeing none of L's values, proposes w, and
/// X and Z accept it. If X's floor is only what its cut WAL holds, two
/// values are chosen for slot 0; with its promise record (floor b), X does
/// not rejoin under l, L outbids b first, and nothing is chosen twice.
fn a_forgotten_promise_history(record_cut: bool) -> Cluster {
    let mut options = ClusterOptions::new(5, 31);
    options.manual = true;
    options.tune = |c| c.election_enabled = false;
    options.record_cut_with_tail = record_cut;
    let mut c = Cluster::new(options);
    let (l, x, z, y, p) = (0, 1, 2, 3, 4);
    let id = |n: usize| NodeId(n as u64 + 1);
    let is = |kind: &'static str, from: usize, to: usize| {
        move |e: &Envelope| e.msg.kind() == kind && e.from == id(from) && e.to == id(to)
    };
    c.campaign(p);
    c.deliver_where(is("Prepare", p, x));
    c.crash(x);
    c.cut_tail_and_start(x, 1);
    c.campaign(l);
    c.deliver_where(|e| e.from == id(l) && [id(y), id(z)].contains(&e.to));
    c.deliver_where(|e| e.to == id(l) && e.msg.kind() == "Promise");
    assert_eq!(c.leader(), Some(l), "L leads without X");
    c.step(x, crate::group::GroupInput::Tick);
    c.deliver_where(is("Rejoin", x, l));
    c.deliver_where(is("RejoinInfo", l, x));
    c.propose(l, "v");
    c.step(l, crate::group::GroupInput::Tick);
    c.deliver_where(|e| e.msg.kind() == "Accept" && [id(x), id(y)].contains(&e.to));
    c.deliver_where(is("Accepted", x, l));
    c.deliver_where(is("Accepted", y, l));
    // The held Prepare(b) reaches Z; P hears X's promise from before.
    c.deliver_where(is("Prepare", p, z));
    c.deliver_where(|e| e.to == id(p) && e.msg.kind() == "Promise");
    c.propose(p, "w");
    c.step(p, crate::group::GroupInput::Tick);
    c.deliver_where(|e| {
        e.msg.kind() == "Accept" && e.from == id(p) && [id(x), id(z)].contains(&e.to)
    });
    c.deliver_where(|e| e.to == id(p) && e.msg.kind() == "Accepted");
    c
}

#[test]
fn a_promise_cut_with_the_tail_lets_two_values_be_chosen_and_is_caught() {
    let cluster = a_forgotten_promise_history(true);
    let caught: Vec<_> = cluster.violations().iter().map(|v| v.property).collect();
    assert!(
        caught.contains(&"a chosen slot never changes"),
        "the checker missed two values chosen: {caught:?}"
    );
}

#[test]
fn the_promise_record_keeps_a_cut_tails_promise() {
    let cluster = a_forgotten_promise_history(false);
    assert_clean(&cluster);
    assert!(
        cluster.replica(1).unwrap().is_rejoining(),
        "X rejoined below its promise"
    );
}
