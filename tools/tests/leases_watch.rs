//! Leases, watches and prefix reads on real `synod node` processes through
//! `synod client`. Expiry is checked never to come early (a safety bound,
//! whatever the machine's load) and to come within a generous bound.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/cluster.rs"]
mod local_cluster;
#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use local_cluster::{leader, leader_other_than, raw_request, TestCluster};
use serde_json::Value;
use support::{client, SYNOD};
use synod_client_proto::{ClientOp, ClientRequest, ClientResponse, KvOp};

fn one(cluster: &TestCluster, line: &str) -> Value {
    client(&["--cluster", &cluster.cluster_arg()], &[line.to_string()]).remove(0)
}

/// Polls `get key` until it answers null; the time that took.
fn gone_after(cluster: &TestCluster, key: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if one(cluster, &format!("get {key}"))["value"].is_null() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{key} still there after {limit:?}");
}

#[test]
fn a_lease_expires_on_an_idle_cluster_and_takes_its_keys() {
    let cluster = TestCluster::new(3);
    leader(&cluster);
    let sent = Instant::now();
    let granted = one(&cluster, "lease grant 1500");
    assert_eq!(granted["ok"], true, "{granted}");
    assert_eq!(granted["ttl_ms"], 1500, "{granted}");
    let id = granted["lease"].as_u64().expect("a lease id");
    let lines = [
        format!("put svc/a up --lease {id}"),
        "put svc/b for a while --ttl 1000".to_string(),
        "put svc/c stays".to_string(),
        "get --prefix svc/".to_string(),
        "put svc/d x --lease 987654".to_string(),
    ];
    let replies = client(&["--cluster", &cluster.cluster_arg()], &lines);
    let kvs = replies[3]["kvs"].as_array().expect("kvs");
    let keys: Vec<&str> = kvs.iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["svc/a", "svc/b", "svc/c"], "{replies:?}");
    assert_eq!(replies[3]["kvs"][1]["value"], "for a while");
    assert_eq!(replies[4]["ok"], false, "no such lease: {replies:?}");
    // Nothing else is written: the leader's clock alone expires them.
    gone_after(&cluster, "svc/a", Duration::from_secs(10));
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "expired before its TTL"
    );
    assert!(one(&cluster, "get svc/b")["value"].is_null());
    assert_eq!(one(&cluster, "get svc/c")["value"], "stays");
    let again = one(&cluster, &format!("lease keepalive {id}"));
    assert_eq!(again["ok"], false, "{again}");
    // A client cannot move the leader's clock (a renewing tick would keep
    // every lease alive for ever).
    let leader = leader(&cluster) as usize;
    let tick = ClientRequest {
        group: 0,
        op: ClientOp::Kv {
            client: 77,
            seq: 1,
            op: KvOp::Tick { renew: true },
        },
    };
    let answer = raw_request(cluster.nodes[leader - 1].client, tick);
    assert!(
        matches!(&answer, ClientResponse::Error(e) if e.contains("only the leader")),
        "{answer:?}"
    );
}

#[test]
fn a_lease_kept_alive_outlives_its_ttl_and_a_failover_and_revoke_ends_it() {
    let mut cluster = TestCluster::new(3);
    let first = leader(&cluster);
    let id = one(&cluster, "lease grant 3000")["lease"]
        .as_u64()
        .expect("granted");
    assert_eq!(
        one(&cluster, &format!("put lock/holder me --lease {id}"))["ok"],
        true
    );
    // Kept alive past its TTL, across the leader's death.
    let until = Instant::now() + Duration::from_millis(4000);
    cluster.kill(first as usize - 1);
    leader_other_than(&cluster, first);
    while Instant::now() < until {
        let kept = one(&cluster, &format!("lease keepalive {id}"));
        assert_eq!(kept["ok"], true, "{kept}");
        assert_eq!(one(&cluster, "get lock/holder")["value"], "me");
        std::thread::sleep(Duration::from_millis(300));
    }
    let revoked = one(&cluster, &format!("lease revoke {id}"));
    assert_eq!(revoked["ok"], true, "{revoked}");
    assert!(revoked.get("previous").is_none(), "{revoked}");
    assert!(one(&cluster, "get lock/holder")["value"].is_null());
}

/// `synod client` running `watch` lines, its output read once it exits.
fn watcher(cluster: &TestCluster, line: &str) -> Child {
    let mut child = Command::new(SYNOD)
        .args(["client", "--cluster", &cluster.cluster_arg()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{line}").unwrap();
    child
}

fn lines_of(mut child: Child) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the watch did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_watch_streams_changes_under_its_prefix_and_resumes_from_an_index() {
    let cluster = TestCluster::new(3);
    leader(&cluster);
    // From just past a mark, so that the watch sees the writes below
    // however late it starts.
    let mark = one(&cluster, "put mark 0")["index"].as_u64().unwrap();
    let live = watcher(
        &cluster,
        &format!("watch app/ --from {} --count 4", mark + 1),
    );
    let lines = [
        "put app/x 1",
        "put elsewhere 2",
        "put app/y 3 --ttl 200",
        "delete app/x",
    ]
    .map(String::from);
    let replies = client(&["--cluster", &cluster.cluster_arg()], &lines);
    let first_index = replies[0]["index"].as_u64().unwrap();
    let events = lines_of(live);
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap().into(),
                e["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("put", "app/x"),
        ("put", "app/y"),
        ("delete", "app/x"),
        ("expire", "app/y"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(o, k)| (o.to_string(), k.to_string()))
        .collect();
    assert_eq!(seen, expected, "{events:?}");
    assert_eq!(events[0]["value"], "1");
    assert!(events[2]["value"].is_null());
    assert!(events
        .windows(2)
        .all(|w| w[0]["index"].as_u64() <= w[1]["index"].as_u64()));
    // The same changes again, replayed from the first one's index.
    let replayed = lines_of(watcher(
        &cluster,
        &format!("watch app/ --from {first_index} --count 4"),
    ));
    assert_eq!(replayed, events);
}

/// A watch from an index whose changes the node no longer keeps (it
/// restored from a snapshot taken after it) is told where to start
/// instead: one failure line with `first`, and exit status 1.
#[test]
fn a_watch_from_a_compacted_index_says_where_changes_start() {
    let mut cluster =
        TestCluster::with_flags(1, &["--snapshot-every", "10", "--snapshot-keep", "2"]);
    leader(&cluster);
    let lines: Vec<String> = (0..30).map(|i| format!("put app/k{i} {i}")).collect();
    client(&["--cluster", &cluster.cluster_arg()], &lines);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.log(1).contains("snapshot durable") {
        assert!(
            Instant::now() < deadline,
            "no snapshot:\n{}",
            cluster.log(1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cluster.terminate(0).success());
    cluster.start(0, "secret");
    leader(&cluster);
    let mut watch = watcher(&cluster, "watch app/ --from 1");
    drop(watch.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    while watch.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the watch did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = watch.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 1, "{stdout}");
    let reply = &replies[0];
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.starts_with("compacted: "), "{reply}");
    let first = reply["first"].as_u64().unwrap();
    assert!(first > 1, "{reply}");
    assert!(error.contains(&format!("watch from {first}")), "{reply}");
}
