//! Host names instead of IP addresses, as containers and orchestrators
//! name their nodes: a node looks a peer's name up each time it dials it
//! (a name that does not resolve yet is a failed dial, retried, not a
//! reason not to start). Bounded in time: every wait has a deadline.

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/cluster.rs"]
mod local_cluster;
#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use local_cluster::{leader, TestCluster};
use serde_json::Value;
use support::{client, SYNOD};

/// `put k v` and `get k` through `cluster_arg`, once they are answered.
fn put_and_get(cluster_arg: &str, logs: impl Fn() -> String) -> Vec<Value> {
    let lines = ["put k v".to_string(), "get k".to_string()];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replies = client(&["--cluster", cluster_arg, "--timeout", "2"], &lines);
        if replies.iter().all(|r| r["ok"] == true) {
            return replies;
        }
        assert!(Instant::now() < deadline, "{replies:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cluster_named_by_host_names_elects_a_leader_and_serves() {
    let mut cluster = TestCluster::unstarted(3, &[], None);
    cluster.hosts = vec!["localhost".to_string(); 3];
    for i in 0..3 {
        cluster.start(i, "secret");
    }
    let named: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("localhost:{}", n.client.port()))
        .collect();
    let replies = put_and_get(&named.join(","), || cluster.log(1));
    assert_eq!(replies[1]["value"], "v", "{replies:?}");
    let id = leader(&cluster);
    let listed = client(&["--cluster", &named.join(",")], &["leader".to_string()]);
    assert_eq!(listed[0]["leader"], id, "{listed:?}");
    // Members are listed by their peer addresses as configured.
    let members = Command::new(SYNOD)
        .args(["member", "list", "--cluster", &named.join(",")])
        .output()
        .unwrap();
    let members: Value = serde_json::from_slice(&members.stdout).unwrap();
    let addrs: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["addr"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..3).map(|i| cluster.peer_arg(i)).collect();
    assert_eq!(addrs, expected, "{members}");
}

/// Node 3's name does not resolve (yet): nodes 1 and 2 start anyway, make
/// a majority and serve, and go on dialing node 3, saying why they fail.
#[test]
fn nodes_start_and_serve_while_a_peer_name_does_not_resolve() {
    let mut cluster = TestCluster::unstarted(3, &[], None);
    cluster.hosts = ["localhost", "localhost", "notyet.invalid"]
        .map(String::from)
        .to_vec();
    cluster.start(0, "secret");
    cluster.start(1, "secret");
    let replies = put_and_get(&cluster.cluster_arg(), || cluster.log(1));
    assert_eq!(replies[1]["value"], "v", "{replies:?}");
    assert_ne!(leader(&cluster), 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.log(1).contains("resolve notyet.invalid") {
        assert!(Instant::now() < deadline, "{}", cluster.log(1));
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..2 {
        let node = cluster.nodes[i].child.as_mut().unwrap();
        assert!(
            node.try_wait().unwrap().is_none(),
            "{}",
            cluster.log(i as u64 + 1)
        );
    }
    assert!(cluster.terminate(0).success(), "{}", cluster.log(1));
}
