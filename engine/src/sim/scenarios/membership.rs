//! Configuration changes under every fault the sweep draws.

use super::*;

/// Seeds with changes: no safety property breaks while the group changes
/// its members (a value is chosen only by a majority of its slot's own
/// voters, every replica counts the voters the committed entries name,
/// agreement, validity, durability). A seed may still stall (the gap in
/// docs/protocol.md, "Membership"); what a stall then makes the end-of-run
/// checks say is not a safety finding, so only what the checkers found
/// before the liveness phase gave up counts here.
#[test]
fn configuration_changes_under_faults_break_no_safety_property() {
    let (mut changes, mut stalled) = (0, 0);
    for seed in 0..60 {
        let report = run_seed_changing_members(seed, false);
        changes += report.reconfigurations;
        let before_stall: Vec<&Violation> = report
            .violations
            .iter()
            .take_while(|v| v.property != "liveness")
            .collect();
        assert!(
            before_stall.is_empty(),
            "seed {seed}: {before_stall:?} (replay: synod sim --seed {seed} --change-members --trace)"
        );
        stalled += usize::from(!report.violations.is_empty());
    }
    assert!(
        changes > 20,
        "only {changes} changes: the test tests little"
    );
    assert!(stalled <= 3, "{stalled} of 60 seeds stalled");
}

/// A replaced replica: a new node joins as a voter in place of one that is
/// down for good, and the group goes on with no acknowledged command lost.
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
    let voters: Vec<NodeId> = (0..4).filter(|i| *i != dead).map(node_id).collect();
    cluster.change_membership(leader, Membership::voters(&voters).unwrap());
    assert_eq!(cluster.stats().reconfigurations, 1);
    let in_force = cluster.run_until(3_000, |c| {
        c.leader().and_then(|l| c.replica(l)).is_some_and(|r| {
            r.change_pending_until().is_none() && r.schedule().latest().is_voter(node_id(3))
        })
    });
    assert!(in_force, "the new configuration never came into force");
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
/// replicas past the change refused (docs/protocol.md, "Election"). Each
/// now converges with no finding at all.
#[test]
fn elections_across_a_change_end() {
    for seed in [35, 931, 1994, 2100, 2968] {
        let report = run_seed_changing_members(seed, false);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?} (replay: synod sim --seed {seed} --change-members --trace)",
            report.violations.first()
        );
    }
}
