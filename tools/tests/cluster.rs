//! Real processes on loopback: `synod node` binaries with their own data
//! directories, driven through `synod client`'s line protocol. Bounded in
//! time: every wait has a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[path = "support/cluster.rs"]
mod local_cluster;
#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use local_cluster::{
    appends, appends_in_group, appends_to, assert_group_log_holds, assert_log_holds, leader,
    leader_other_than, TestCluster,
};
use support::client;

#[test]
fn kill_the_leader_mid_load_and_lose_nothing() {
    let mut cluster = TestCluster::new(3);
    let first = leader(&cluster);
    let mut acked = appends(&cluster, "before", 200);
    // Four clients, 500 appends each, while the leader is SIGKILLed.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let arg = cluster.cluster_arg();
            std::thread::spawn(move || appends_to(&arg, &format!("client{w}"), 500))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill(first as usize - 1);
    leader_other_than(&cluster, first);
    cluster.start(first as usize - 1, "secret");
    for writer in writers {
        acked.extend(writer.join().expect("a client thread"));
    }
    acked.extend(appends(&cluster, "after", 100));
    for i in 0..3 {
        assert_log_holds(&cluster, i, &acked);
    }
}

#[test]
fn a_full_restart_recovers_every_acknowledged_append_from_the_wals() {
    let mut cluster = TestCluster::new(3);
    leader(&cluster);
    let acked = appends(&cluster, "durable", 100);
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start(i, "secret");
    }
    leader(&cluster);
    for i in 0..3 {
        assert_log_holds(&cluster, i, &acked);
    }
}

/// A cluster of one node is its own majority: it leads, takes writes and
/// keeps them across a restart.
#[test]
fn a_cluster_of_one_node_leads_and_keeps_its_writes() {
    let mut cluster = TestCluster::new(1);
    assert_eq!(leader(&cluster), 1);
    let acked = appends(&cluster, "alone", 20);
    cluster.kill(0);
    cluster.start(0, "secret");
    assert_eq!(leader(&cluster), 1);
    assert_log_holds(&cluster, 0, &acked);
}

/// SIGTERM stops a node through its shutdown path: it says so in its log,
/// stops its groups and exits 0, and what it acknowledged is there after a
/// restart.
#[test]
fn sigterm_stops_a_node_cleanly_and_it_says_so() {
    stops_cleanly_on(libc::SIGTERM, "before-term", "SIGTERM");
}

/// SIGINT (Ctrl-C) stops a node the same clean way as SIGTERM.
#[test]
fn sigint_stops_a_node_cleanly_and_it_says_so() {
    stops_cleanly_on(libc::SIGINT, "before-int", "stopping");
}

/// A one-node cluster sent `signal` exits 0 with `said` and "stopped" in
/// its log, and restarts holding every append acknowledged before it.
fn stops_cleanly_on(signal: libc::c_int, tag: &str, said: &str) {
    let mut cluster = TestCluster::new(1);
    leader(&cluster);
    let acked = appends(&cluster, tag, 10);
    let status = cluster.signal(0, signal);
    assert!(status.success(), "{status:?}");
    let log = cluster.log(1);
    assert!(log.contains(said), "{log}");
    assert!(log.contains("stopped"), "{log}");
    cluster.start(0, "secret");
    leader(&cluster);
    assert_log_holds(&cluster, 0, &acked);
}

/// `put` takes the rest of the line as its value, spaces and all, and
/// `cas K --absent NEW` sets a key only while it is absent.
#[test]
fn values_with_spaces_and_compare_and_set_if_absent() {
    let cluster = TestCluster::new(1);
    leader(&cluster);
    let lines: Vec<String> = [
        "put greeting hello,   wide world",
        "get greeting",
        "cas lock --absent holder-1",
        "cas lock --absent holder-2",
        "get lock",
    ]
    .map(String::from)
    .to_vec();
    let replies = client(&["--cluster", &cluster.cluster_arg()], &lines);
    assert_eq!(replies[1]["value"], "hello,   wide world", "{replies:?}");
    assert_eq!(replies[2]["swapped"], true, "{replies:?}");
    assert_eq!(replies[3]["swapped"], false, "{replies:?}");
    assert_eq!(replies[4]["value"], "holder-1", "{replies:?}");
}

#[test]
fn a_node_with_the_wrong_secret_is_refused() {
    let mut cluster = TestCluster::new(3);
    cluster.kill(2);
    cluster.start(2, "wrong-secret");
    leader(&cluster);
    appends(&cluster, "x", 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.log(1).contains("refused") && !cluster.log(3).contains("refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            cluster.log(3)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let alone = client(
        &["--node", &cluster.nodes[2].client.to_string()],
        &["read 0 100".into()],
    );
    assert_eq!(
        alone[0]["entries"].as_array().map(Vec::len),
        Some(0),
        "the outsider learned nothing: {alone:?}"
    );
}

#[test]
fn garbage_from_a_client_closes_only_that_connection() {
    let cluster = TestCluster::new(3);
    leader(&cluster);
    let mut raw = TcpStream::connect(cluster.nodes[0].client).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(&[0xde; 4096]).unwrap();
    let mut buf = [0u8; 64];
    let closed = matches!(raw.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the node keeps a connection that sent garbage");
    let acked = appends(&cluster, "still-fine", 5);
    assert_log_holds(&cluster, 0, &acked);
    let bad = client(
        &["--cluster", &cluster.cluster_arg()],
        &["frobnicate".into(), "read x".into()],
    );
    assert!(
        bad.iter()
            .all(|r| r["ok"] == false && r["error"].is_string()),
        "{bad:?}"
    );
}

/// A write too large for a slot is refused with a clear error, and the same
/// `synod client` goes on writing (its numbering: `client_sessions.rs`).
#[test]
fn a_refused_write_leaves_the_client_able_to_write() {
    let cluster = TestCluster::new(3);
    leader(&cluster);
    let too_large = format!("append {}", "x".repeat(1 << 17));
    let replies = client(
        &["--cluster", &cluster.cluster_arg()],
        &[
            too_large,
            "append after-refusal".into(),
            "append and-after".into(),
        ],
    );
    assert_eq!(replies[0]["ok"], false, "{}", replies[0]);
    assert!(
        replies[0]["error"].as_str().unwrap().contains("too large"),
        "{}",
        replies[0]
    );
    assert_eq!(replies[1]["ok"], true, "{}", replies[1]);
    assert_eq!(replies[2]["ok"], true, "{}", replies[2]);
    let (first, second) = (replies[1]["index"].as_u64(), replies[2]["index"].as_u64());
    assert!(first < second, "{first:?} then {second:?}");
}

/// The node's metrics page, once it serves one.
fn scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            let mut page = String::new();
            stream.read_to_string(&mut page).unwrap();
            return page;
        }
        assert!(Instant::now() < deadline, "no metrics on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of one sample line of a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// Scrapes `addr` until sample `name` reaches `at_least`, and returns the
/// last page: counters such as snapshots move when background work (the
/// snapshot's fsync) finishes, a moment after the log line that starts it.
fn scrape_until(addr: SocketAddr, name: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = scrape(addr);
        if sample(&page, name).is_some_and(|n| n >= at_least) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replica_far_behind_catches_up_by_snapshot_and_metrics_show_it() {
    let mut cluster =
        TestCluster::with_flags(3, &["--snapshot-every", "10", "--snapshot-keep", "2"]);
    let first = leader(&cluster);
    let lagging = (first % 3) as usize; // a follower's index
    let mut acked = appends(&cluster, "early", 20);
    cluster.kill(lagging);
    for round in 0..10 {
        acked.extend(appends(&cluster, &format!("while-down-{round}"), 30));
    }
    // A restart of the leader drops the Accepts its transport queued for
    // the lagging node, so that node cannot catch up from them.
    cluster.kill(first as usize - 1);
    cluster.start(first as usize - 1, "secret");
    let leader_now = leader(&cluster);
    acked.extend(appends(&cluster, "after-restart", 30));
    cluster.start(lagging, "secret");
    assert_log_holds(&cluster, lagging, &acked);
    let id = lagging as u64 + 1;
    assert!(
        cluster.log(id).contains("installed a snapshot from a peer"),
        "node {id} caught up without a snapshot:\n{}\nthe leader's log:\n{}",
        cluster.log(id),
        cluster.log(leader_now)
    );

    // Commit latency is counted where the command was proposed: the leader
    // of the moment, which may have changed since.
    let pages: Vec<String> = cluster.nodes.iter().map(|n| scrape(n.metrics)).collect();
    let committed: f64 = pages
        .iter()
        .filter_map(|p| sample(p, "synod_commit_latency_seconds_count{group=\"0\"}"))
        .sum();
    assert!(committed >= 30.0, "{pages:?}");
    let snapshots_total = "synod_snapshots_total{group=\"0\"}";
    let page = scrape_until(
        cluster.nodes[leader_now as usize - 1].metrics,
        snapshots_total,
        1.0,
    );
    let snapshots = sample(&page, snapshots_total);
    assert!(snapshots.is_some_and(|n| n >= 1.0), "{page}");
    let fsyncs = sample(&page, "synod_fsync_seconds_count{group=\"0\"}");
    assert!(fsyncs.is_some_and(|n| n > 0.0), "{page}");
    assert!(page.contains("synod_peer_queue_bytes{peer="), "{page}");
    let page = scrape_until(cluster.nodes[lagging].metrics, snapshots_total, 1.0);
    let installed = sample(&page, snapshots_total);
    assert!(installed.is_some_and(|n| n >= 1.0), "{page}");
}

#[test]
fn a_node_whose_disk_was_lost_rejoins_by_state_transfer_and_votes_again() {
    let mut cluster =
        TestCluster::with_flags(3, &["--snapshot-every", "10", "--snapshot-keep", "2"]);
    let first = leader(&cluster);
    let lost = (first % 3) as usize; // a follower's index
    let id = lost as u64 + 1;
    let mut acked = appends(&cluster, "before", 40);
    cluster.kill(lost);
    let dir = cluster.dir.path().join(format!("node-{id}"));
    std::fs::remove_dir_all(&dir).unwrap();
    acked.extend(appends(&cluster, "while-lost", 60));
    cluster.start_with(lost, "secret", &["--rejoin"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.log(id).contains("rebuilt and rejoined") {
        assert!(
            Instant::now() < deadline,
            "node {id} did not rejoin:\n{}",
            cluster.log(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.log(id);
    assert!(log.contains("rebuilding from the peers"), "{log}");
    // The leader compacted what it lost: the transfer was a snapshot.
    assert!(log.contains("installed a snapshot from a peer"), "{log}");
    assert!(!dir.join("group-0").join("REBUILDING").exists());
    assert_log_holds(&cluster, lost, &acked);
    // It votes again: with the other follower down, nothing commits
    // without it.
    let other = (0..3)
        .find(|i| *i != lost && *i as u64 + 1 != first)
        .unwrap();
    cluster.kill(other);
    acked.extend(appends(&cluster, "after-rejoin", 20));
    assert_log_holds(&cluster, lost, &acked);
}

/// `synod leader transfer` hands leadership to the named follower between
/// two runs of appends: it answers `{"ok":true,"leader":ID,...}`, the
/// follower leads, and every replica holds every append in order. A node
/// that is no member is refused with a clear error and exit status 1.
#[test]
fn leadership_moves_to_the_named_node_and_nothing_is_lost() {
    let cluster = TestCluster::new(3);
    let first = leader(&cluster);
    let to = first % 3 + 1;
    let mut acked = appends(&cluster, "before", 20);
    let synod = |args: &[&str]| {
        std::process::Command::new(support::SYNOD)
            .args(args)
            .args(["--cluster", &cluster.cluster_arg()])
            .output()
            .unwrap()
    };
    let transfer = |to: u64| synod(&["leader", "transfer", "--to", &to.to_string()]);
    let moved = transfer(to);
    let reply: serde_json::Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert!(moved.status.success(), "{reply}");
    assert_eq!(
        (reply["ok"].clone(), reply["leader"].as_u64()),
        (true.into(), Some(to))
    );
    assert_eq!(leader(&cluster), to);
    let listed = synod(&["member", "list"]);
    let members: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed.status.success(), "{members}");
    assert_eq!(members["leader"].as_u64(), Some(to), "{members}");
    let ids: Vec<u64> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter" && m["addr"].is_string())
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3], "{members}");
    acked.extend(appends(&cluster, "after", 20));
    for i in 0..3 {
        assert_log_holds(&cluster, i, &acked);
    }
    let refused = transfer(9);
    let reply: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(!refused.status.success());
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("not a member"),
        "{reply}"
    );
}

/// Runs `synod ARGS --cluster <every node's client address>` and parses
/// its one line of JSON.
fn admin(cluster: &TestCluster, args: &[&str]) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(support::SYNOD)
        .args(args)
        .args(["--cluster", &cluster.cluster_arg()])
        .output()
        .unwrap();
    let reply = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), reply)
}

/// The voters a `member ...` answer lists.
fn voters(reply: &serde_json::Value) -> Vec<u64> {
    reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

/// Each node of three is replaced in turn by a new node at a new address,
/// started with `--join`: `member add` returns once it votes, `member
/// remove` once the old one is out, and the old one is killed for good.
/// Appends go on between the steps through clients given every address,
/// dead ones included; at the end nodes 4, 5 and 6 hold every append.
#[test]
fn every_node_is_replaced_by_a_new_one_and_nothing_is_lost() {
    let mut cluster = TestCluster::new(3);
    let mut acked = appends(&cluster, "before", 20);
    for old in 0..3 {
        let running: Vec<usize> = (old..cluster.nodes.len()).collect();
        let new = cluster.join(&running);
        let (id, addr) = (cluster.nodes[new].id.to_string(), cluster.peer_arg(new));
        let (ok, added) = admin(&cluster, &["member", "add", "--id", &id, "--addr", &addr]);
        assert!(ok, "{added}");
        assert!(voters(&added).contains(&cluster.nodes[new].id), "{added}");
        acked.extend(appends(&cluster, &format!("with-{id}"), 10));

        let old_id = cluster.nodes[old].id;
        let (ok, removed) = admin(&cluster, &["member", "remove", "--id", &old_id.to_string()]);
        assert!(ok, "{removed}");
        assert!(!voters(&removed).contains(&old_id), "{removed}");
        cluster.kill(old);
        acked.extend(appends(&cluster, &format!("without-{old_id}"), 10));
    }
    let (ok, listed) = admin(&cluster, &["member", "list"]);
    assert!(ok, "{listed}");
    assert_eq!(voters(&listed), [4, 5, 6], "{listed}");
    for i in 3..6 {
        assert_log_holds(&cluster, i, &acked);
    }
    // A bad address changes nothing, and says why.
    let (ok, refused) = admin(
        &cluster,
        &["member", "add", "--id", "9", "--addr", "nowhere"],
    );
    assert!(!ok && refused["ok"] == false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("addr"),
        "{refused}"
    );
}

/// A node whose disk is lost comes back under a new id with only a
/// majority of the group up: node 1 is killed and its directory deleted,
/// the machine returns as node 4 (`--join`), is added, and node 1 is
/// removed; nodes 2, 3 and 4 then hold every acknowledged append. With
/// `--rejoin` instead, node 1 would wait for every other member.
#[test]
fn a_node_that_lost_its_disk_returns_under_a_new_id_with_a_majority_up() {
    let mut cluster = TestCluster::new(3);
    let mut acked = appends(&cluster, "before", 20);
    cluster.kill(0);
    std::fs::remove_dir_all(cluster.dir.path().join("node-1")).unwrap();
    acked.extend(appends(&cluster, "while-down", 10));
    let new = cluster.join(&[1, 2]);
    let addr = cluster.peer_arg(new);
    let (ok, added) = admin(&cluster, &["member", "add", "--id", "4", "--addr", &addr]);
    assert!(ok, "{added}");
    let (ok, removed) = admin(&cluster, &["member", "remove", "--id", "1"]);
    assert!(ok, "{removed}");
    assert_eq!(voters(&removed), [2, 3, 4], "{removed}");
    acked.extend(appends(&cluster, "after", 10));
    for i in 1..4 {
        assert_log_holds(&cluster, i, &acked);
    }
    // Removing it again while the removal comes into force changes nothing.
    let (ok, again) = admin(&cluster, &["member", "remove", "--id", "1"]);
    assert!(ok && voters(&again) == [2, 3, 4], "{again}");
    // The whole cluster stops; node 4 starts first, with no one to ask:
    // it reads the members it recorded when it joined.
    for i in 1..4 {
        cluster.kill(i);
    }
    cluster.start_joined(3, &[1, 2]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    cluster.start(1, "secret");
    cluster.start(2, "secret");
    acked.extend(appends(&cluster, "after-restart", 10));
    for i in 1..4 {
        assert_log_holds(&cluster, i, &acked);
    }
}

/// Groups on subsets of nodes: three nodes carry two groups; two nodes
/// join, and group 1 moves onto nodes 3, 4 and 5 (added there, then
/// removed from 1 and 2) while group 0 stays on 1, 2 and 3. With nodes 1
/// and 2 stopped, group 1 still takes writes, a majority of its members
/// being up, and holds every append acknowledged before and after the
/// move; group 0, with one of its three, takes none.
#[test]
fn a_group_moves_onto_new_nodes_and_lives_on_without_its_old_ones() {
    let mut cluster = TestCluster::with_flags(3, &["--groups", "2"]);
    let mut acked = appends_in_group(&cluster.cluster_arg(), 1, "before", 10);
    for _ in 0..2 {
        let new = cluster.join(&[0, 1, 2]);
        let (id, addr) = (cluster.nodes[new].id.to_string(), cluster.peer_arg(new));
        let add = [
            "member", "add", "--group", "1", "--id", &id, "--addr", &addr,
        ];
        let (ok, added) = admin(&cluster, &add);
        assert!(ok, "{added}");
    }
    for old in ["1", "2"] {
        let (ok, removed) = admin(&cluster, &["member", "remove", "--group", "1", "--id", old]);
        assert!(ok, "{removed}");
    }
    let (ok, group_1) = admin(&cluster, &["member", "list", "--group", "1"]);
    assert!(ok && voters(&group_1) == [3, 4, 5], "{group_1}");
    let (ok, group_0) = admin(&cluster, &["member", "list", "--group", "0"]);
    assert!(ok && voters(&group_0) == [1, 2, 3], "{group_0}");
    acked.extend(appends_in_group(&cluster.cluster_arg(), 1, "moved", 10));

    cluster.kill(0);
    cluster.kill(1);
    acked.extend(appends_in_group(
        &cluster.cluster_arg(),
        1,
        "without-1-and-2",
        10,
    ));
    for i in 2..5 {
        assert_group_log_holds(&cluster, i, 1, &acked);
    }
    let group = client(
        &[
            "--cluster",
            &cluster.cluster_arg(),
            "--group",
            "0",
            "--timeout",
            "2",
        ],
        &["append lost".into()],
    );
    assert_eq!(
        group[0]["ok"], false,
        "group 0 has one of its three: {group:?}"
    );
}

/// Flips a byte in the body of the last frame of a stopped node's WAL:
/// recovery finds bad bytes at the very end and cuts them as a torn write.
fn damage_last_frame(wal_dir: &std::path::Path) {
    let out = std::process::Command::new(support::SYNOD)
        .args(["wal", "inspect", "--json"])
        .arg(wal_dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let segment = wal_dir.join(last["segment"].as_str().unwrap());
    let at = last["offset"].as_u64().unwrap() + 32; // its body's first byte
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[at as usize] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
}

/// A follower of five whose WAL's last frame was damaged rebuilds from a
/// majority of its peers with one of them down: its promise record gives
/// it the floor, so it does not wait for every peer.
#[test]
fn a_damaged_wal_tail_rebuilds_with_a_peer_down() {
    let mut cluster = TestCluster::new(5);
    let first = leader(&cluster);
    let followers: Vec<usize> = (0..5).filter(|i| *i as u64 + 1 != first).collect();
    let (damaged, down) = (followers[0], followers[1]);
    let id = damaged as u64 + 1;
    let acked = appends(&cluster, "before", 20);
    cluster.terminate(damaged);
    let dir = cluster
        .dir
        .path()
        .join(format!("node-{id}"))
        .join("group-0");
    assert!(dir.join("PROMISE").exists(), "no promise record");
    damage_last_frame(&dir);
    cluster.kill(down);
    cluster.start(damaged, "secret");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.log(id).contains("rebuilt and rejoined") {
        assert!(
            Instant::now() < deadline,
            "node {id} did not rejoin with a peer down:\n{}",
            cluster.log(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.log(id);
    assert!(log.contains("damaged tail"), "{log}");
    assert!(log.contains("known_floor=true"), "{log}");
    assert!(!dir.join("REBUILDING").exists());
    assert_log_holds(&cluster, damaged, &acked);
}

/// With 128 descriptors, a flood of idle client connections is cut off
/// short of the node's reserve: the WAL and the snapshots (every 20 slots
/// here) keep the descriptors they need, and a client connected before
/// the flood keeps writing.
#[test]
fn a_flood_of_connections_never_takes_the_descriptors_the_wal_needs() {
    use std::io::{BufRead, BufReader, Write as _};
    use std::process::{Command, Stdio};

    let mut cluster = TestCluster::with_limit(1, &["--snapshot-every", "20"], Some(128));
    leader(&cluster);
    let mut writer = Command::new(support::SYNOD)
        .args(["client", "--cluster", &cluster.cluster_arg()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_client = writer.stdin.take().unwrap();
    let mut from_client = BufReader::new(writer.stdout.take().unwrap());
    let mut put = |i: u32| {
        writeln!(to_client, "put key-{i} value-{i}").unwrap();
        let mut line = String::new();
        from_client.read_line(&mut line).unwrap();
        line
    };
    assert!(put(0).contains("\"ok\":true"));
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(cluster.nodes[0].client).ok())
        .collect();
    for i in 1..=100 {
        let reply = put(i);
        assert!(reply.contains("\"ok\":true"), "put {i}: {reply}");
    }
    assert!(
        cluster.nodes[0]
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the node died:\n{}",
        cluster.log(1)
    );
    let log = cluster.log(1);
    assert!(log.contains("too few file descriptors"), "{log}");
    assert!(log.contains("snapshot durable"), "{log}");
    drop(flood);
    drop(to_client);
    writer.wait().unwrap();
}

/// The resident memory of a process, from /proc (kB → bytes).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// 500 idle client connections and 500 unauthenticated peer connections
/// cost a node little memory (a small read buffer each, or nothing for
/// those closed at accept), and it goes on serving.
#[test]
fn a_flood_of_idle_connections_keeps_the_node_small_and_serving() {
    let mut cluster = TestCluster::new(1);
    leader(&cluster);
    assert_eq!(
        client(&["--cluster", &cluster.cluster_arg()], &["put a 1".into()])[0]["ok"],
        true
    );
    let pid = cluster.nodes[0].child.as_ref().unwrap().id();
    let before = rss_bytes(pid);
    let (client_addr, peer_addr) = (cluster.nodes[0].client, cluster.nodes[0].peer);
    let mut flood = Vec::new();
    for _ in 0..500 {
        flood.extend(TcpStream::connect(client_addr).ok());
        flood.extend(TcpStream::connect(peer_addr).ok());
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_bytes(pid);
    let replies = client(
        &["--cluster", &cluster.cluster_arg()],
        &["put b 2".into(), "get a".into()],
    );
    assert_eq!(replies[1]["value"], "1", "{replies:?}");
    let grown = during.saturating_sub(before);
    eprintln!(
        "RSS {before} -> {during} bytes with {} connections",
        flood.len()
    );
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
    assert!(cluster.nodes[0]
        .child
        .as_mut()
        .unwrap()
        .try_wait()
        .unwrap()
        .is_none());
}
