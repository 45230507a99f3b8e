//! `synod cluster` as a person runs it: the addresses it prints serve
//! clients, and Ctrl-C stops every node through its clean path. Bounded
//! in time: every wait has a deadline.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/client.rs"]
mod support;

use support::{client, SYNOD};

/// A running `synod cluster`: SIGINT and then SIGKILL when dropped, so a
/// failed test leaves no node behind.
struct RunningCluster {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The client addresses it printed, comma-separated.
    cluster_arg: String,
}

impl RunningCluster {
    fn start(nodes: u64, dir: &Path) -> RunningCluster {
        let mut child = Command::new(SYNOD)
            .args(["cluster", "--nodes", &nodes.to_string(), "--data-dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addrs = Vec::new();
        loop {
            let mut line = String::new();
            assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{addrs:?}");
            if line.starts_with("Ctrl-C") {
                break;
            }
            // "  node 1: clients 127.0.0.1:PORT, log PATH"
            if let Some(rest) = line.trim().strip_prefix("node ") {
                let addr = rest.split("clients ").nth(1).unwrap();
                addrs.push(addr.split(',').next().unwrap().to_string());
            }
        }
        assert_eq!(addrs.len() as u64, nodes);
        RunningCluster {
            child,
            stdout,
            cluster_arg: addrs.join(","),
        }
    }

    /// `lines` once every one of them is answered `"ok":true`.
    fn answered(&self, lines: &[&str]) -> Vec<serde_json::Value> {
        let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let replies = client(&["--cluster", &self.cluster_arg, "--timeout", "2"], &lines);
            if replies.iter().all(|r| r["ok"] == true) {
                return replies;
            }
            assert!(Instant::now() < deadline, "{replies:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGINT to `synod cluster` alone (not its nodes, as a terminal's
    /// Ctrl-C would), then its exit status and the rest of what it printed.
    fn interrupt(&mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on a child process of ours; no memory involved.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(sent, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "synod cluster still running");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on a child process of ours; no memory involved.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            std::thread::sleep(Duration::from_secs(2));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[test]
fn a_cluster_of_one_node_serves_a_put_and_a_get() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RunningCluster::start(1, dir.path());
    let replies = cluster.answered(&["put greeting hello", "get greeting"]);
    assert_eq!(replies[1]["value"], "hello", "{replies:?}");
    let (status, _) = cluster.interrupt();
    assert!(status.success(), "{status:?}");
}

/// Each node is sent SIGTERM and waited for: it stops its groups, says so
/// in its log and exits 0, and `synod cluster` exits 0 after them.
#[test]
fn sigint_stops_every_node_of_a_cluster_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RunningCluster::start(3, dir.path());
    cluster.answered(&["put k v"]);
    let (status, printed) = cluster.interrupt();
    assert!(status.success(), "{status:?}: {printed}");
    assert!(printed.contains("stopped"), "{printed}");
    for id in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("node-{id}.log"))).unwrap();
        assert!(
            log.contains("stopping: SIGTERM or SIGINT received"),
            "node {id}: {log}"
        );
        assert!(log.contains("stopped"), "node {id}: {log}");
    }
}
