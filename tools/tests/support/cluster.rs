//! A local cluster of real `synod node` processes for the tests, and the
//! ways they ask it things. Each test binary uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synod_client_proto::{ClientOp, ClientRequest, ClientResponse, KIND_CLIENT_REQUEST};

use crate::ports::free_ports;
use crate::support::{client, SYNOD};

pub struct Node {
    pub id: u64,
    pub peer: SocketAddr,
    pub client: SocketAddr,
    pub metrics: SocketAddr,
    pub child: Option<Child>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    /// Flags every node is started with, beside the usual ones.
    pub extra: Vec<String>,
    /// The open-files limit nodes are started under, if not inherited.
    pub nofile: Option<u64>,
    /// The host each node is named by in `--peers` and its own `--listen`
    /// (an IP address, or a host name).
    pub hosts: Vec<String>,
    /// The nodes the cluster started with (the first configuration, in
    /// every `--peers`); those after joined it.
    pub founders: usize,
}

impl TestCluster {
    pub fn new(n: u64) -> TestCluster {
        TestCluster::with_flags(n, &[])
    }

    pub fn with_flags(n: u64, extra: &[&str]) -> TestCluster {
        TestCluster::with_limit(n, extra, None)
    }

    /// Nodes started with `extra` flags and, if given, that open-files
    /// limit (from their first start: no restart frees their ports).
    pub fn with_limit(n: u64, extra: &[&str], nofile: Option<u64>) -> TestCluster {
        let mut cluster = TestCluster::unstarted(n, extra, nofile);
        for i in 0..n as usize {
            cluster.start(i, "secret");
        }
        cluster
    }

    /// The cluster of [`TestCluster::with_limit`], no node started yet.
    pub fn unstarted(n: u64, extra: &[&str], nofile: Option<u64>) -> TestCluster {
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
        // A node refuses a secret file other users can read.
        for name in ["secret", "wrong-secret"] {
            let path = dir.path().join(name);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
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
        TestCluster {
            dir,
            nodes,
            extra,
            nofile,
            hosts: vec!["127.0.0.1".to_string(); n as usize],
            founders: n as usize,
        }
    }

    /// Node `i`'s peer address as the others and itself are told it.
    pub fn peer_arg(&self, i: usize) -> String {
        format!("{}:{}", self.hosts[i], self.nodes[i].peer.port())
    }

    pub fn start(&mut self, i: usize, secret: &str) {
        self.start_with(i, secret, &[]);
    }

    /// Starts node `i` with `flags` beside the cluster's own.
    pub fn start_with(&mut self, i: usize, secret: &str, flags: &[&str]) {
        let peers: Vec<String> = (0..self.founders)
            .map(|j| format!("{}={}", self.nodes[j].id, self.peer_arg(j)))
            .collect();
        self.spawn(i, secret, &["--peers", &peers.join(",")], flags);
    }

    /// A new node, id one above the highest, started with `--join` and the
    /// client addresses of `via`; returns its index.
    pub fn join(&mut self, via: &[usize]) -> usize {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        self.nodes.push(Node {
            id,
            peer: free_port_run(),
            client: free_port(),
            metrics: free_port(),
            child: None,
        });
        self.hosts.push("127.0.0.1".to_string());
        let i = self.nodes.len() - 1;
        self.start_joined(i, via);
        i
    }

    /// Starts node `i` (again) with `--join` and the client addresses of
    /// `via`.
    pub fn start_joined(&mut self, i: usize, via: &[usize]) {
        let cluster: Vec<String> = via
            .iter()
            .map(|j| self.nodes[*j].client.to_string())
            .collect();
        self.spawn(i, "secret", &["--join", &cluster.join(",")], &[]);
    }

    /// Starts node `i` knowing its peers by `membership` flags.
    fn spawn(&mut self, i: usize, secret: &str, membership: &[&str], flags: &[&str]) {
        let listen = self.peer_arg(i);
        let dir: &Path = self.dir.path();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("node-{}.log", self.nodes[i].id)))
            .unwrap();
        let node = &mut self.nodes[i];
        let mut command = Command::new(SYNOD);
        if let Some(nofile) = self.nofile {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            // SAFETY: setrlimit is async-signal-safe, and the child only
            // sets its own limit between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = command
            .arg("node")
            .args(["--id", &node.id.to_string(), "--listen", &listen])
            .args(["--client-listen", &node.client.to_string()])
            .args(membership)
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
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then the node's exit status once it has stopped.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        self.signal(i, libc::SIGTERM)
    }

    /// Sends `signal`, then the node's exit status once it has stopped.
    pub fn signal(&mut self, i: usize, signal: libc::c_int) -> std::process::ExitStatus {
        let mut child = self.nodes[i].child.take().expect("running");
        // SAFETY: kill(2) on a child process of ours; no memory involved.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signal {signal} sent");
        child.wait().unwrap()
    }

    pub fn cluster_arg(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn log(&self, id: u64) -> String {
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

pub fn free_port() -> SocketAddr {
    free_ports(1)
}

/// A port with the next `CORES_MAX_HERE - 1` free as well: core i of a node
/// listens for peers on its port plus i.
pub fn free_port_run() -> SocketAddr {
    const CORES_MAX_HERE: u16 = 4;
    free_ports(CORES_MAX_HERE)
}

pub fn leader(cluster: &TestCluster) -> u64 {
    leader_other_than(cluster, 0)
}

/// The leader the cluster reports, once it is not `old` (followers keep
/// naming a dead leader until they notice its silence).
pub fn leader_other_than(cluster: &TestCluster, old: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let reply = client(
            &["--cluster", &cluster.cluster_arg(), "--timeout", "2"],
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

pub fn appends(cluster: &TestCluster, tag: &str, count: usize) -> Vec<(String, u64)> {
    appends_to(&cluster.cluster_arg(), tag, count)
}

/// `count` appends through one `synod client` process (its own session).
pub fn appends_to(cluster_arg: &str, tag: &str, count: usize) -> Vec<(String, u64)> {
    appends_in_group(cluster_arg, 0, tag, count)
}

/// [`appends_to`], to group `group`.
pub fn appends_in_group(
    cluster_arg: &str,
    group: u32,
    tag: &str,
    count: usize,
) -> Vec<(String, u64)> {
    let lines: Vec<String> = (0..count).map(|i| format!("append {tag}-{i}")).collect();
    let group = group.to_string();
    let replies = client(&["--cluster", cluster_arg, "--group", &group], &lines);
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
pub fn assert_log_holds(cluster: &TestCluster, i: usize, acked: &[(String, u64)]) {
    assert_group_log_holds(cluster, i, 0, acked);
}

/// [`assert_log_holds`], for group `group`'s log.
pub fn assert_group_log_holds(
    cluster: &TestCluster,
    i: usize,
    group: u32,
    acked: &[(String, u64)],
) {
    let addr = cluster.nodes[i].client.to_string();
    let group = group.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = client(
            &["--node", &addr, "--group", &group],
            &["read 0 10000".into()],
        );
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

/// Sends one client request from a glommio executor of its own.
pub fn raw_request(addr: SocketAddr, request: ClientRequest) -> ClientResponse {
    raw_body(addr, request.encode())
}

/// Sends one client request body, whatever its bytes.
pub fn raw_body(addr: SocketAddr, body: Vec<u8>) -> ClientResponse {
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

/// Slots applied in `group` on the node at `addr`.
pub fn applied(addr: SocketAddr, group: u32) -> u64 {
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
