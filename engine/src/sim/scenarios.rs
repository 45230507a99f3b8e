//! Named scenario tests, each a classic way consensus goes wrong.

use super::*;

mod membership;
mod rebuild;

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

/// A replica that crashes after installing a peer's snapshot of several
/// chunks, before that snapshot is durable, comes back with the state its
/// disk held (its own, older), never part of the new one; it catches up
/// again, and every replica ends with the same commands applied once.
#[test]
fn a_crash_between_installing_a_snapshot_and_saving_it_leaves_the_old_state() {
    let mut options = ClusterOptions::new(3, 11);
    compact_often(&mut options);
    options.snapshot_ballast = 700 << 10;
    options.crash_after_install = true;
    let mut cluster = Cluster::new(options);
    let leader = wait_for_leader(&mut cluster);
    let lagging = (leader + 1) % 3;
    cluster.add_clients(2, 10);
    assert!(
        cluster.run_until(3000, |c| c.clients_idle()),
        "clients stuck"
    );
    let before = applied_data(&cluster, lagging);
    cluster.crash(lagging);
    cluster.add_clients(2, 30);
    assert!(
        cluster.run_until(3000, |c| c.clients_idle()),
        "clients stuck"
    );
    cluster.start(lagging);
    assert!(
        cluster.run_until(3000, |c| !c.is_running(lagging)),
        "n{} never installed a snapshot",
        lagging + 1
    );
    assert_eq!(cluster.stats().snapshots_installed, 1);
    // Back from its disk: what it had before (its WAL may hold a commit or
    // two it had not applied), nothing of the snapshot it installed and
    // lost, which covered nearly all 80 commands.
    cluster.start(lagging);
    let restarted = applied_data(&cluster, lagging);
    let leaders = applied_data(&cluster, leader);
    assert!(leaders.starts_with(&restarted), "{restarted:?}");
    assert!(
        restarted.len() >= before.len() && restarted.len() < before.len() + 5,
        "{} applied before the crash, {} after",
        before.len(),
        restarted.len()
    );
    assert!(
        cluster.run_until(3000, |c| c.applied(lagging).len()
            == c.applied(leader).len()),
        "n{} did not catch up again",
        lagging + 1
    );
    assert!(
        cluster.stats().snapshots_installed >= 2,
        "caught up by snapshot again"
    );
    assert_eq!(
        applied_data(&cluster, lagging),
        applied_data(&cluster, leader)
    );
    assert_eq!(cluster.acked().len(), 2 * 10 + 2 * 30);
    assert_clean(&cluster);
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

/// The leader hands leadership to a follower while clients write: the
/// follower leads within a few ticks (no election timeout waited out),
/// every client's commands are applied once, and every check holds.
#[test]
fn a_leader_hands_over_under_load_and_nothing_is_lost() {
    let mut cluster = fault_free(3, 41);
    let leader = wait_for_leader(&mut cluster);
    cluster.add_clients(3, 40);
    cluster.run_ticks(15);
    let to = (leader + 1) % 3;
    cluster.transfer_leadership(leader, to);
    let timeout = u64::from(Config::new(NodeId(1), vec![NodeId(1)]).election_timeout_ticks);
    assert!(
        cluster.run_until(timeout / 2, |c| c.leader() == Some(to)),
        "n{} did not take over at once",
        to + 1
    );
    assert!(
        cluster.run_until(3000, |c| c.clients_idle()),
        "clients stuck"
    );
    assert_eq!(cluster.acked().len(), 3 * 40);
    assert_clean(&cluster);
}

/// Random runs in which crashed replicas come back with their disks lost or
/// the last durable frames of their WAL damaged and cut (one rebuild at a
/// time), and the leader hands over at random moments, under every fault
/// the sweep draws: every safety property holds and every rebuild ends.
/// One sweep for the three: the fault plan draws each in its own share of
/// the same seeds.
#[test]
fn a_sweep_of_rebuilds_and_transfers_finds_nothing() {
    let (mut losses, mut cut, mut transfers) = (0, 0, 0);
    for seed in 0..60 {
        let (report, stats) = run_seed_with(seed, |_| {});
        assert_clean_run(&report);
        losses += stats.disk_losses;
        cut += stats.tails_cut;
        transfers += stats.transfers;
    }
    assert!(losses >= 10, "only {losses} disks lost over the sweep");
    assert!(cut >= 10, "only {cut} damaged tails over the sweep");
    assert!(transfers >= 20, "only {transfers} transfers over the sweep");
}
