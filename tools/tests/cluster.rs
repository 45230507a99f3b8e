//! Real processes on loopback: `synod node` binaries with their own data
//! directories, driven through `synod client`'s line protocol. Bounded in
//! time: every wait has a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use ports::free_ports;
use serde_json::Value;
use support::{client, SYNOD};
use synod_client_proto::{ClientOp, ClientRequest, ClientResponse, KIND_CLIENT_REQUEST};

struct Node {
    id: u64,
    peer: SocketAddr,
    client: SocketAddr,
    metrics: SocketAddr,
    child: Option<Child>,
}

struct TestCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// Flags every node is started with, beside the usual ones.
    extra: Vec<String>,
}

fn free_port() -> SocketAddr {
    free_ports(1)
}

/// A port with the next `CORES_MAX_HERE - 1` free as well: core i of a node
/// listens for peers on its port plus i.
fn free_port_run() -> SocketAddr {
    const CORES_MAX_HERE: u16 = 4;
    free_ports(CORES_MAX_HERE)
}

impl TestCluster {
    fn new(n: u64) -> TestCluster {
        TestCluster::with_flags(n, &[])
    }

    fn with_flags(n: u64, extra: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secret"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("wrong-secret"),
            "fedcba9876543210fedcba9876543210",
        )
        .unwrap();
        let nodes = (1..=n)
            .map(|id| Node {
                id,
                peer: free_port_run(),
                client: free_port(),
                metrics: free_port(),
                child: None,
            })
            .collect();
        let extra = extra.iter().map(ToString::to_string).collect();
        let mut cluster = TestCluster { dir, nodes, extra };
        for i in 0..n as usize {
            cluster.start(i, "secret");
        }
        cluster
    }

    fn start(&mut self, i: usize, secret: &str) {
        self.start_with(i, secret, &[]);
    }

    /// Starts node `i` with `flags` beside the cluster's own.
    fn start_with(&mut self, i: usize, secret: &str, flags: &[&str]) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer))
            .collect();
        let dir: &Path = self.dir.path();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("node-{}.log", self.nodes[i].id)))
            .unwrap();
        let node = &mut self.nodes[i];
        let child = Command::new(SYNOD)
            .arg("node")
            .args([
                "--id",
                &node.id.to_string(),
                "--listen",
                &node.peer.to_string(),
            ])
            .args([
                "--client-listen",
                &node.client.to_string(),
                "--peers",
                &peers.join(","),
            ])
            .arg("--data-dir")
            .arg(dir.join(format!("node-{}", node.id)))
            .arg("--secret-file")
            .arg(dir.join(secret))
            .args(["--metrics", &node.metrics.to_string()])
            .args(&self.extra)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then the node's exit status once it has stopped.
    fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.nodes[i].child.take().expect("running");
        // SAFETY: kill(2) on a child process of ours; no memory involved.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM sent");
        child.wait().unwrap()
    }

    fn cluster_arg(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn leader(cluster: &TestCluster) -> u64 {
    leader_other_than(cluster, 0)
}

/// The leader the cluster reports, once it is not `old` (followers keep
/// naming a dead leader until they notice its silence).
fn leader_other_than(cluster: &TestCluster, old: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let reply = client(
            &["--cluster", &cluster.cluster_arg(), "--timeout-s", "2"],
            &["leader".into()],
        );
        if let Some(id) = reply[0]["leader"].as_u64().filter(|id| *id != old) {
            return id;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every node's latest log lines, so a failure here can be read later.
    let logs: Vec<String> = (1..=cluster.nodes.len() as u64)
        .map(|id| {
            let log = cluster.log(id);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- node {id}\n{}", tail.join("\n"))
        })
        .collect();
    panic!("no leader within 20 s\n{}", logs.join("\n"));
}

fn appends(cluster: &TestCluster, tag: &str, count: usize) -> Vec<(String, u64)> {
    appends_to(&cluster.cluster_arg(), tag, count)
}

/// `count` appends through one `synod client` process (its own session).
fn appends_to(cluster_arg: &str, tag: &str, count: usize) -> Vec<(String, u64)> {
    let lines: Vec<String> = (0..count).map(|i| format!("append {tag}-{i}")).collect();
    let replies = client(&["--cluster", cluster_arg], &lines);
    assert_eq!(replies.len(), count);
    replies
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r["ok"], true, "append {tag}-{i}: {r}");
            (format!("{tag}-{i}"), r["index"].as_u64().unwrap())
        })
        .collect()
}

/// Every acknowledged append is in node `i`'s applied log exactly once, at
/// the index it was acknowledged with.
fn assert_log_holds(cluster: &TestCluster, i: usize, acked: &[(String, u64)]) {
    let addr = cluster.nodes[i].client.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = client(&["--node", &addr], &["read 0 10000".into()]);
        let entries = reply[0]["entries"].as_array().cloned().unwrap_or_default();
        let found = |(data, index): &(String, u64)| {
            let at: Vec<u64> = entries
                .iter()
                .filter(|e| e["data"] == data.as_str())
                .map(|e| e["index"].as_u64().unwrap())
                .collect();
            at == vec![*index]
        };
        if acked.iter().all(found) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} lacks acknowledged appends (or holds one twice): {reply:?}\n{}",
            i + 1,
            cluster.log(cluster.nodes[i].id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

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
    let mut cluster = TestCluster::new(1);
    leader(&cluster);
    let acked = appends(&cluster, "before-term", 10);
    let status = cluster.terminate(0);
    assert!(status.success(), "{status:?}");
    let log = cluster.log(1);
    assert!(log.contains("SIGTERM"), "{log}");
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
fn groups_spread_over_cores_each_keep_their_own_log() {
    let cluster = TestCluster::with_flags(3, &["--cores", "2", "--groups", "4"]);
    leader(&cluster);
    let mut acked = Vec::new();
    for group in 0..4 {
        let lines: Vec<String> = (0..20).map(|i| format!("append g{group}-{i}")).collect();
        let g = group.to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let replies = loop {
            let replies = client(
                &["--cluster", &cluster.cluster_arg(), "--group", &g],
                &lines,
            );
            if replies.iter().all(|r| r["ok"] == true) || Instant::now() > deadline {
                break replies;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(reply["ok"], true, "group {group}: {reply}");
            assert_eq!(reply["group"], group, "{reply}");
            acked.push((
                group,
                format!("g{group}-{i}"),
                reply["index"].as_u64().unwrap(),
            ));
        }
    }
    // Each group's log holds its own appends only, on every node.
    for node in &cluster.nodes {
        for group in 0..4u64 {
            let addr = node.client.to_string();
            let g = group.to_string();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let reply = client(&["--node", &addr, "--group", &g], &["read 0 1000".into()]);
                let entries = reply[0]["entries"].as_array().cloned().unwrap_or_default();
                let data: Vec<String> = entries
                    .iter()
                    .map(|e| e["data"].as_str().unwrap_or_default().to_string())
                    .collect();
                let mine: Vec<String> = acked
                    .iter()
                    .filter(|(gr, _, _)| *gr == group)
                    .map(|(_, d, _)| d.clone())
                    .collect();
                if data == mine {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} group {group}: {data:?}",
                    node.id
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Sends one client request from a glommio executor of its own.
fn raw_request(addr: SocketAddr, request: ClientRequest) -> ClientResponse {
    raw_body(addr, request.encode())
}

/// Sends one client request body, whatever its bytes.
fn raw_body(addr: SocketAddr, body: Vec<u8>) -> ClientResponse {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move {
            let client = synod_net::Client::new(synod_net::ClientConfig::new(vec![addr])).unwrap();
            let reply = client
                .request(KIND_CLIENT_REQUEST, &body)
                .await
                .expect("the node answers");
            ClientResponse::decode(&reply.body).expect("a reply")
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn a_batch_of_appends_applies_each_once_even_when_retried() {
    let cluster = TestCluster::new(3);
    let batch = ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client: 77,
            seq: 10,
            items: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        },
    };
    // The node first reported as leader may not lead yet (on a loaded
    // machine its Phase 1 can still be running), so ask again, the current
    // leader. A leader that steps down with the batch in flight answers
    // NotLeader too, and the batch may still be applied: the session then
    // answers the next try with the last item's index alone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (addr, indexes) = loop {
        let addr = cluster.nodes[leader(&cluster) as usize - 1].client;
        match raw_request(addr, batch.clone()) {
            ClientResponse::AppendedBatch { indexes } => break (addr, indexes),
            refused @ (ClientResponse::NotLeader { .. } | ClientResponse::Busy) => {
                assert!(Instant::now() < deadline, "still refused: {refused:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("not a batch answer: {other:?}"),
        }
    };
    if indexes.iter().all(Option::is_some) {
        let at: Vec<u64> = indexes.iter().flatten().copied().collect();
        assert!(at.windows(2).all(|w| w[1] == w[0] + 1), "{at:?}");
    } else {
        assert_eq!(indexes[..2], [None, None], "an earlier try applied all");
    }
    // One input, so one slot: the items sit at consecutive indexes.
    let last = indexes[2].expect("the session answers its last command");
    let first = vec![last - 2, last - 1, last];
    // A retry (the answer was lost, say) applies nothing again: the session
    // answers its last command, and the earlier ones as applied before.
    let answer = raw_request(addr, batch);
    let ClientResponse::AppendedBatch { indexes } = answer else {
        panic!("not a batch answer: {answer:?}")
    };
    assert_eq!(indexes, vec![None, None, Some(first[2])]);
    let acked: Vec<(String, u64)> = ["a", "b", "c"]
        .iter()
        .zip(&first)
        .map(|(data, index)| (data.to_string(), *index))
        .collect();
    for i in 0..3 {
        assert_log_holds(&cluster, i, &acked);
    }
    let empty = ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client: 78,
            seq: 1,
            items: Vec::new(),
        },
    };
    assert!(matches!(raw_request(addr, empty), ClientResponse::Error(_)));
    // A batch cut short, or bytes that are no request, are refused with a
    // reason; nothing is appended and the node goes on serving.
    let whole = ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client: 79,
            seq: 1,
            items: vec![b"never".to_vec(); 8],
        },
    }
    .encode();
    for body in [
        whole[..whole.len() - 3].to_vec(),
        vec![0xa5; 64],
        Vec::new(),
    ] {
        let answer = raw_body(addr, body);
        assert!(
            matches!(&answer, ClientResponse::Error(reason) if reason.starts_with("malformed")),
            "{answer:?}"
        );
    }
    let ClientResponse::AppendedBatch { indexes } = raw_request(addr, batch_of(80, &["after"]))
    else {
        panic!("the node stopped serving batches");
    };
    // The retry's three commands took the three indexes after the first
    // batch (chosen, though not applied again); tries that were in doubt
    // may have taken more.
    assert!(indexes[0].expect("applied") >= first[2] + 4, "{indexes:?}");
    for i in 0..3 {
        assert_log_holds(&cluster, i, &acked);
        let log = client(
            &["--node", &cluster.nodes[i].client.to_string()],
            &["read 0 10000".into()],
        );
        let entries = log[0]["entries"].as_array().cloned().unwrap_or_default();
        assert!(
            entries.iter().all(|e| e["data"] != "never"),
            "a malformed request was appended: {log:?}"
        );
    }
}

fn batch_of(client: u64, items: &[&str]) -> ClientRequest {
    ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client,
            seq: 1,
            items: items.iter().map(|item| item.as_bytes().to_vec()).collect(),
        },
    }
}

/// Slots applied in `group` on the node at `addr`.
fn applied(addr: SocketAddr, group: u32) -> u64 {
    match raw_request(
        addr,
        ClientRequest {
            group,
            op: ClientOp::Status,
        },
    ) {
        ClientResponse::Status { applied, .. } => applied,
        other => panic!("status of group {group}: {other:?}"),
    }
}

/// Runs `synod bench` with `args` and `--json`; its results object.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(SYNOD)
        .arg("bench")
        .args(args)
        .args(["--json", "--duration", "2", "--warmup", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "synod bench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("a results line");
    serde_json::from_str(last).unwrap()
}

#[test]
fn bench_spreads_its_load_over_groups_and_client_threads_and_runs_again() {
    let cluster = TestCluster::with_flags(3, &["--groups", "2"]);
    let leader = leader(&cluster);
    let addr = cluster.nodes[leader as usize - 1].client;
    let flags = [
        "--cluster",
        &cluster.cluster_arg(),
        "--groups",
        "2",
        "--clients",
        "2",
        "--inflight",
        "8",
    ];
    let mut before = [applied(addr, 0), applied(addr, 1)];
    // A second run against the same cluster must append anew: its sessions
    // are not the first run's, so nothing is taken as a retry.
    for run in 0..2 {
        // The second run is open loop: commands take turns on sessions.
        let open_loop = ["--rate", "3000"];
        let extra: &[&str] = if run == 0 { &[] } else { &open_loop };
        let results = bench(&[&flags[..], extra].concat());
        assert_eq!(
            (results["groups"].as_u64(), results["clients"].as_u64()),
            (Some(2), Some(2))
        );
        assert!(results["commands"].as_u64().unwrap() > 0, "{results}");
        assert!(
            results["commands_per_slot"].as_f64().unwrap() >= 1.0,
            "{results}"
        );
        assert_eq!(results["elections"].as_u64(), Some(0), "{results}");
        for group in 0..2 {
            let now = applied(addr, group);
            assert!(
                now > before[group as usize],
                "run {run}: group {group} got nothing"
            );
            before[group as usize] = now;
        }
    }
}

#[test]
fn bench_with_fsync_off_says_unsafe_and_starts_the_nodes_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench");
    let results = bench(&[
        "--local",
        "3",
        "--fsync",
        "off",
        "--inflight",
        "4",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        results["fsync"].as_str().unwrap().contains("UNSAFE"),
        "{results}"
    );
    assert!(results["commands"].as_u64().unwrap() > 0, "{results}");
    let logs: String = (1..=3)
        .map(|id| std::fs::read_to_string(data.join(format!("node-{id}.log"))).unwrap_or_default())
        .collect();
    assert_eq!(logs.matches("UNSAFE: fsync is off").count(), 3, "{logs}");
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

/// A workload that cannot run is refused before any local replica starts,
/// with the flag named; nothing is left behind in the data directory.
#[test]
fn bench_refuses_a_workload_that_cannot_run_before_starting_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench");
    let refused = [
        (&["--duration", "0"][..], "--duration"),
        (&["--inflight", "0"][..], "in flight"),
        (&["--batch", "0"][..], "--batch"),
        (&["--clients", "0"][..], "--clients"),
        (&["--rate", "0"][..], "--rate"),
        (&["--size", "300000"][..], "one slot holds"),
    ];
    for (flags, named) in refused {
        let output = Command::new(SYNOD)
            .args([
                "bench",
                "--local",
                "3",
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} ran");
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
        assert!(
            !stderr.contains("started"),
            "{flags:?} started a cluster: {stderr}"
        );
        assert!(!data.exists(), "{flags:?} left {}", data.display());
    }
}
