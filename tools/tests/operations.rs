//! Operating a node with the real binary: health and metrics, status as
//! JSON, secrets, the locked-memory limit, JSON logs and WAL records.
//! Bounded in time: every wait has a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
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

/// An HTTP GET on the metrics port: the status line, the headers, the body.
fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(error) => assert!(Instant::now() < deadline, "{addr}: {error}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: synod\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Asks `path` until the status line starts with `status`; the last body.
fn get_until(addr: SocketAddr, path: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (line, _, body) = get(addr, path);
        if line.starts_with(status) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {status}: {line} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lines promtool's linter insists on: HELP and TYPE for every family,
/// `_total` on every counter, every sample under a declared family.
fn lint(page: &str) -> Vec<(String, String)> {
    let mut families: Vec<(String, String)> = Vec::new();
    let mut helped: Option<String> = None;
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped = rest.split(' ').next().map(String::from);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(helped.as_deref(), Some(name), "no HELP for {name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            families.push((name.to_string(), kind.to_string()));
        } else {
            assert!(!line.starts_with('#'), "{line}");
            let name = line.split(['{', ' ']).next().unwrap();
            let (family, _) = families.last().expect("a sample after its TYPE");
            assert!(name.starts_with(family.as_str()), "{name} under {family}");
        }
    }
    families
}

#[test]
fn health_and_metrics_follow_the_groups_and_pass_the_linter() {
    let mut cluster = TestCluster::new(3);
    leader(&cluster);
    let replies = client(
        &["--cluster", &cluster.cluster_arg()],
        &["put k v".to_string()],
    );
    assert_eq!(replies[0]["ok"], true);
    let metrics = cluster.nodes[0].metrics;
    let body = get_until(metrics, "/health", "HTTP/1.1 200");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["groups"][0]["leader_known"], true, "{health}");

    let (status, headers, page) = get(metrics, "/metrics");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let families: Vec<String> = lint(&page).into_iter().map(|(n, _)| n).collect();
    for needed in [
        "synod_is_leader",
        "synod_commit_index",
        "synod_applied_index",
        "synod_peer_connected",
        "synod_fsync_seconds",
    ] {
        assert!(families.iter().any(|f| f == needed), "{needed}: {page}");
    }
    let fsyncs = page
        .lines()
        .find_map(|l| l.strip_prefix("synod_fsync_seconds_count{group=\"0\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("an fsync count");
    assert!(fsyncs > 0, "{page}");
    // promtool itself, where it is installed.
    if let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let output = promtool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Two of three gone: the last one cannot have a leader.
    cluster.kill(1);
    cluster.kill(2);
    let body = get_until(metrics, "/health", "HTTP/1.1 503");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ok"], false, "{health}");
    assert_eq!(health["groups"][0]["problem"], "no leader", "{health}");
}

#[test]
fn status_as_json_names_every_node_and_fails_on_an_unreachable_one() {
    let cluster = TestCluster::new(3);
    let leader_id = leader(&cluster);
    let run = |cluster_arg: &str| {
        let output = Command::new(SYNOD)
            .args(["status", "--json", "--cluster", cluster_arg])
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let line: Value = serde_json::from_str(&stdout).unwrap();
        (output.status.success(), line)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let (ok, line) = run(&cluster.cluster_arg());
        let nodes = line["nodes"].as_array().unwrap().clone();
        // A node still starting is unreachable for a moment; followers
        // learn the leader from its first heartbeat, and the leader leads
        // once its first phase is done.
        let settled = ok
            && nodes.iter().all(|n| {
                n["leader"] == leader_id && (n["role"] == "leader") == (n["id"] == leader_id)
            });
        if settled {
            break line;
        }
        assert!(Instant::now() < deadline, "{line}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line["ok"], true);
    assert_eq!(line["group"], 0);
    let nodes = line["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for (node, expected) in nodes.iter().zip(&cluster.nodes) {
        assert_eq!(node["id"], expected.id, "{line}");
        assert_eq!(node["addr"], expected.client.to_string(), "{line}");
        let role = if expected.id == leader_id {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(node["role"], role, "{line}");
        let (applied, commit) = (node["applied"].as_u64(), node["commit"].as_u64());
        assert!(applied.is_some() && commit.is_some(), "{line}");
    }

    let dead = free_port().to_string();
    let (ok, line) = run(&format!("{},{dead}", cluster.cluster_arg()));
    assert!(!ok, "{line}");
    assert_eq!(line["ok"], false, "{line}");
    assert!(line["error"].as_str().unwrap().contains(&dead), "{line}");
    assert_eq!(line["nodes"][3]["role"], "unreachable", "{line}");
}

/// `synod node` with the given flags beside a one-node cluster's own.
fn node_command(dir: &std::path::Path, secret: &std::path::Path) -> Command {
    let (peer, client) = (free_port_run(), free_port());
    let mut command = Command::new(SYNOD);
    command
        .args(["node", "--id", "1", "--listen", &peer.to_string()])
        .args(["--client-listen", &client.to_string()])
        .args(["--peers", &format!("1={peer}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--secret-file")
        .arg(secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for a child that must exit by itself; kills it and fails if it
/// hangs.
fn exits_by_itself(mut child: std::process::Child) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn secrets_are_generated_private_and_a_public_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let generate = || {
        Command::new(SYNOD)
            .args(["secret", "generate"])
            .arg(&secret)
            .output()
            .unwrap()
    };
    assert!(generate().status.success());
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read(&secret).unwrap();
    let again = generate();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&secret).unwrap(), first);

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = exits_by_itself(node_command(dir.path(), &secret).spawn().unwrap());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

/// On a fresh machine `/etc/synod` is not there yet: generating a secret
/// creates the missing directories, private to their owner.
#[test]
fn a_secret_is_generated_into_directories_not_there_yet() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let secret = etc.join("synod").join("secret");
    let output = Command::new(SYNOD)
        .args(["secret", "generate"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode(&secret) & 0o777, 0o600);
    for made in [etc.clone(), etc.join("synod")] {
        assert!(made.is_dir());
        assert_eq!(
            mode(&made) & 0o077,
            0,
            "{}: {:o}",
            made.display(),
            mode(&made)
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap().trim().len(), 64);
}

#[test]
fn a_memlock_limit_too_low_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    generate_secret(&secret);
    let node = node_command(dir.path(), &secret);
    let args: Vec<String> = node
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The limit is lowered for the node's process alone, as a shell would.
    let child = Command::new("sh")
        .args(["-c", "ulimit -l 64 && exec \"$0\" \"$@\"", SYNOD])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = exits_by_itself(child);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RLIMIT_MEMLOCK"), "{stderr}");
    assert!(stderr.contains("is 64 KiB"), "{stderr}");
    assert!(stderr.contains("ulimit -l"), "{stderr}");
}

#[test]
fn a_node_logs_json_lines_when_asked() {
    let cluster = TestCluster::with_flags(1, &["--log-format", "json"]);
    leader(&cluster);
    // The leader is named a moment before its first phase ends.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = cluster.log(1);
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(lines.iter().all(|l| l["level"].is_string()), "{log}");
        if lines.iter().any(|l| l["message"] == "elected: leading") {
            return;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node whose stderr is a pipe nobody reads any more (`synod node 2>&1 |
/// head -1`) drops its log lines: it goes on serving, and SIGTERM still
/// stops it cleanly.
#[test]
fn a_node_whose_stderr_closed_goes_on_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    generate_secret(&secret);
    let mut command = node_command(dir.path(), &secret);
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let at = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    let (peer, client_addr) = (at("--listen"), at("--client-listen"));
    let mut node = command.spawn().unwrap();
    let mut stderr = std::io::BufReader::new(node.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    assert!(!first.is_empty(), "the node logs as it starts");
    drop(stderr);
    // A stranger on the peer port is refused, and the refusal logged.
    let mut stranger = TcpStream::connect(&peer).unwrap();
    stranger.write_all(&[0xde; 64]).unwrap();
    drop(stranger);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replies = client(
            &["--cluster", &client_addr, "--timeout", "2"],
            &["put k v".into(), "get k".into()],
        );
        if replies.get(1).is_some_and(|r| r["value"] == "v") {
            break;
        }
        assert!(node.try_wait().unwrap().is_none(), "the node died");
        if Instant::now() > deadline {
            // Not left running behind a failed test.
            node.kill().unwrap();
            panic!("{replies:?}");
        }
    }
    // SAFETY: kill(2) on a child process of ours; no memory involved.
    let sent = unsafe { libc::kill(node.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let output = exits_by_itself(node);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn wal_inspect_decodes_promises_accepts_and_commits() {
    let mut cluster = TestCluster::new(1);
    leader(&cluster);
    let lines: Vec<String> = (0..5).map(|i| format!("put k{i} value-{i}")).collect();
    client(&["--cluster", &cluster.cluster_arg()], &lines);
    cluster.kill(0);
    let wal = cluster.dir.path().join("node-1").join("group-0");
    let output = Command::new(SYNOD)
        .args(["wal", "inspect", "--json"])
        .arg(&wal)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let records: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].clone())
        .collect();
    let of_type = |t: &str| records.iter().filter(|r| r["type"] == t).count();
    assert!(of_type("promise") >= 1, "{records:?}");
    assert!(of_type("commit") >= 1, "{records:?}");
    let accepts: Vec<&Value> = records.iter().filter(|r| r["type"] == "accept").collect();
    assert!(accepts.len() >= 5, "{records:?}");
    for accept in accepts {
        assert!(accept["commands"].as_u64().unwrap() >= 1, "{accept}");
        assert!(accept["bytes"].as_u64().unwrap() > 0, "{accept}");
        assert_eq!(accept["ballot"].as_array().unwrap().len(), 2, "{accept}");
    }
}
