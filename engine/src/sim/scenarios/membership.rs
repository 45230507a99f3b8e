//! Configuration changes under every fault the sweep draws.

use super::*;

/// Seeds with changes, lost disks replaced by new members among them: no
/// property breaks while the group changes its members (a value is chosen
/// only by a majority of its slot's own voters, every replica counts the
/// voters the committed entries name, agreement, validity, durability),
/// and every seed ends with every command done.
#[test]
fn configuration_changes_under_faults_break_no_property() {
    let (mut changes, mut retired) = (0, 0);
    for seed in 0..60 {
        let report = run_seed_changing_members(seed, false);
        changes += report.reconfigurations;
        retired += report.retirements;
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?} (replay: synod sim --seed {seed} --change-members --trace)",
            report.violations.first()
        );
    }
    assert!(
        changes > 20 && retired > 0,
        "only {changes} changes and {retired} lost disks replaced: the test tests little"
    );
}

/// A replaced replica: a new node joins as a voter in place of one whose
/// disk was lost (its id retired for good), and the group goes on with no
/// acknowledged command lost.
#[test]
fn a_dead_replica_is_replaced_by_a_new_node() {
    let mut options = ClusterOptions::new(4, 7);
    options.members = 3;
    let mut cluster = Cluster::new(options);
    cluster.add_clients(3, 20);
    assert!(cluster.run_until(500, |c| c.leader().is_some()));
    let leader = cluster.leader().unwrap();
    let dead = (leader + 1) % 3;
    cluster.crash(dead);
    cluster.retire(dead);
    assert_eq!(cluster.replacement_due(), Some(true));
    let voters: Vec<NodeId> = (0..4).filter(|i| *i != dead).map(node_id).collect();
    cluster.change_membership(leader, Membership::voters(&voters).unwrap());
    assert_eq!(cluster.stats().reconfigurations, 1);
    let in_force = cluster.run_until(3_000, |c| {
        c.leader().and_then(|l| c.replica(l)).is_some_and(|r| {
            r.change_pending_until().is_none() && r.schedule().latest().is_voter(node_id(3))
        })
    });
    assert!(in_force, "the new configuration never came into force");
    assert_eq!(cluster.replacement_due(), Some(false));
    // The old voter stays down: the new one counts in its place.
    cluster.stop_new_commands();
    let caught_up = cluster.run_until(3_000, |c| {
        let commits = c.commits();
        c.clients_idle() && commits[3].is_some() && commits[3] == commits[leader]
    });
    assert!(
        caught_up,
        "the new voter never caught up: {:?}",
        cluster.commits()
    );
    assert!(
        cluster.violations().is_empty(),
        "{:?}",
        cluster.violations()
    );
    let acked = cluster.acked().to_vec();
    for (client, seq, index) in acked {
        let found = cluster
            .applied(3)
            .iter()
            .any(|a| a.client == client && a.seq == seq && a.index == index);
        assert!(
            found,
            "({client:?}, {seq}) at {index:?} missing on the new node"
        );
    }
}

/// Seeds whose elections once never ended across a change: replicas on
/// either side of it ranked equal candidates in different orders, or those
/// behind it elected one of their own by a newer epoch, whose Phase 1 the
/// replicas past the change refused (docs/protocol.md, "Election"); a
/// removed leader handed over to a voter behind the change (6567); a
/// leader waited for answers a snapshot had made it forget to count
/// (5335). Each now converges with no finding at all.
#[test]
fn elections_across_a_change_end() {
    let seeds = [
        35, 931, 1994, 2100, 2968, 3762, 4111, 5197, 5335, 6567, 8014,
    ];
    for seed in seeds {
        let report = run_seed_changing_members(seed, false);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?} (replay: synod sim --seed {seed} --change-members --trace)",
            report.violations.first()
        );
    }
}

/// Stops new commands, lets every client's be acknowledged, and checks
/// the run found nothing; `what` names it if commands stall.
fn finish(cluster: &mut Cluster, what: &str) {
    cluster.stop_new_commands();
    assert!(
        cluster.run_until(3_000, |c| c.clients_idle()),
        "{what}: commands stalled"
    );
    assert_clean(cluster);
}

/// Voters `ids` (0-based node indices) as a configuration.
fn voters_of(ids: impl IntoIterator<Item = usize>) -> Membership {
    let ids: Vec<NodeId> = ids.into_iter().map(node_id).collect();
    Membership::voters(&ids).unwrap()
}

/// Runs until the leader's newest configuration is in force, and returns
/// that leader.
fn until_in_force(cluster: &mut Cluster, voters: &Membership) -> usize {
    let in_force = cluster.run_until(3_000, |c| {
        c.leader()
            .and_then(|l| c.replica(l))
            .is_some_and(|r| r.change_pending_until().is_none() && r.schedule().latest() == voters)
    });
    assert!(in_force, "the configuration never came into force");
    cluster.leader().unwrap()
}

/// The leader removes itself: it drives the change into force, hands
/// leadership to a voter, and the group goes on without it; it runs on,
/// removed, and disturbs nothing (its votes and Prepares are ignored).
#[test]
fn a_leader_that_removes_itself_hands_over_and_stays_out() {
    let mut cluster = Cluster::new(ClusterOptions::new(4, 11));
    cluster.add_clients(3, 30);
    assert!(cluster.run_until(500, |c| c.leader().is_some()));
    let old = cluster.leader().unwrap();
    let rest = voters_of((0..4).filter(|i| *i != old));
    cluster.change_membership(old, rest.clone());
    until_in_force(&mut cluster, &rest);
    let handed_over = cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != old));
    assert!(handed_over, "the removed leader still leads");
    let steady = cluster.leader();
    cluster.run_ticks(2_000);
    assert_eq!(
        cluster.leader(),
        steady,
        "the removed node unseated the leader"
    );
    assert!(cluster.is_running(old), "the removed node runs on");
    finish(&mut cluster, "the group");
}

/// A removed node that was down while it was removed comes back with its
/// old state: it does not know it was removed, looks for a leader, and
/// the group neither follows it nor changes leader.
#[test]
fn a_removed_node_that_returns_does_not_disturb_the_group() {
    let mut cluster = Cluster::new(ClusterOptions::new(4, 12));
    cluster.add_clients(3, 30);
    assert!(cluster.run_until(500, |c| c.leader().is_some()));
    let leader = cluster.leader().unwrap();
    let gone = (leader + 1) % 4;
    cluster.crash(gone);
    let rest = voters_of((0..4).filter(|i| *i != gone));
    cluster.change_membership(leader, rest.clone());
    let leader = until_in_force(&mut cluster, &rest);
    cluster.run_ticks(500);
    cluster.start(gone);
    cluster.run_ticks(2_000);
    assert_eq!(
        cluster.leader(),
        Some(leader),
        "the returning node disturbed the leader"
    );
    finish(&mut cluster, "the group");
}

/// The leader crashes the moment it has proposed a change: the change is
/// chosen by the next leader or never, the group goes on, and every slot
/// has one configuration (the checker's "one configuration per slot").
#[test]
fn the_leader_crashing_mid_change_leaves_one_configuration_per_slot() {
    for seed in 20..26 {
        let mut cluster = Cluster::new(ClusterOptions::new(5, seed));
        cluster.add_clients(3, 30);
        assert!(cluster.run_until(500, |c| c.leader().is_some()));
        let leader = cluster.leader().unwrap();
        let next = voters_of((0..5).filter(|i| *i != (leader + 2) % 5));
        cluster.change_membership(leader, next);
        cluster.crash(leader);
        assert!(cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != leader)));
        cluster.start(leader);
        finish(&mut cluster, &format!("seed {seed}"));
    }
}

/// A voter added while the group is split: the side with a majority of the
/// old configuration chooses it, the new voter catches up once the split
/// heals, and no slot is chosen twice.
#[test]
fn a_voter_added_during_a_partition_catches_up_after_it() {
    let mut options = ClusterOptions::new(4, 13);
    options.members = 3;
    let mut cluster = Cluster::new(options);
    cluster.add_clients(3, 30);
    assert!(cluster.run_until(500, |c| c.leader().is_some()));
    let leader = cluster.leader().unwrap();
    let cut = (leader + 1) % 3;
    let sides: Vec<usize> = (0..4).map(|i| usize::from(i == cut)).collect();
    cluster.links.split(&sides);
    let four = voters_of(0..4);
    cluster.change_membership(leader, four.clone());
    until_in_force(&mut cluster, &four);
    cluster.links.heal();
    cluster.stop_new_commands();
    let caught_up = cluster.run_until(3_000, |c| {
        let commits = c.commits();
        c.clients_idle() && commits.iter().all(|x| x.is_some() && *x == commits[0])
    });
    assert!(
        caught_up,
        "not every replica caught up: {:?}",
        cluster.commits()
    );
    assert_clean(&cluster);
}
