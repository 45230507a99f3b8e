//! Host names instead of IP addresses, as containers and orchestrators
//! name their nodes: a node looks a peer's name up each time it dials it
//! (a name that does not resolve yet is a failed dial, retried, not a
//! reason not to start), and every address of a config file may be a
//! name. Bounded in time: every wait has a deadline.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/cluster.rs"]
mod local_cluster;
#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use local_cluster::{free_port, free_port_run, leader, TestCluster};
use serde_json::Value;
use support::{client, generate_secret, SYNOD};

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

/// Kills the node if the test fails before it is stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `listen`, `client_listen`, `metrics` and `peers` of a `--config` file
/// may be host names, as in the flags.
#[test]
fn a_config_file_may_name_every_address_by_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    generate_secret(&secret);
    let (peer, client_port, metrics) = (free_port_run(), free_port(), free_port());
    let config = format!(
        "id = 1\n\
         listen = \"localhost:{}\"\n\
         client_listen = \"localhost:{}\"\n\
         metrics = \"localhost:{}\"\n\
         peers = {{ \"1\" = \"localhost:{}\" }}\n\
         data_dir = \"{}\"\n\
         secret_file = \"{}\"\n",
        peer.port(),
        client_port.port(),
        metrics.port(),
        peer.port(),
        dir.path().join("data").display(),
        secret.display(),
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let log_path = dir.path().join("node.log");
    let mut node = Running(
        Command::new(SYNOD)
            .args(["node", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let named = format!("localhost:{}", client_port.port());
    let replies = put_and_get(&named, log);
    assert_eq!(replies[1]["value"], "v", "{replies:?}");
    let scraped = std::net::TcpStream::connect(("localhost", metrics.port()));
    assert!(
        scraped.is_ok(),
        "no metrics on localhost:{}",
        metrics.port()
    );
    // SAFETY: kill(2) on a child process of ours; no memory involved.
    assert_eq!(
        unsafe { libc::kill(node.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = node.0.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", log());
}
