//! Rebuilding a replica that forgot: a lost disk, a damaged WAL tail, and
//! the promise record that lets a cut tail rebuild with a majority.

use super::*;

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

/// The sweep of lost disks (`a_sweep_of_rebuilds_and_transfers_finds_nothing`)
/// is not blind to the hazard: the same runs with lost disks restarted as
/// new replicas break a safety property. Few seeds show it (on
/// 2026-12-07 the first was 764), hence the long range.
#[test]
fn a_sweep_restarting_lost_disks_as_new_is_caught() {
    let caught = (0..2000).find(|seed| {
        let (report, _) = run_seed_with(*seed, |o| o.wiped_restart_unsafely = true);
        report.violations.iter().any(|v| v.property != "liveness")
    });
    assert!(caught.is_some(), "no seed showed the harm of a lost disk");
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
