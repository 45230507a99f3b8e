//! `synod client` as scripts use it, and the command line's own surface
//! (duration flags, completions), with the real binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/cluster.rs"]
mod local_cluster;
#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use local_cluster::{free_port, leader, TestCluster};
use serde_json::Value;
use support::{client, SYNOD};

/// Runs `synod client` under a locked-memory limit of 64 KiB (as a shell
/// would set it), `lines` on stdin; its replies and exit status.
fn client_under_low_memlock(args: &[&str], lines: &[&str]) -> (Vec<Value>, bool) {
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -l 64 && exec \"$0\" client \"$@\"", SYNOD])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = lines.join("\n") + "\n";
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("MemLock"), "{stderr}");
    let replies = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (replies, output.status.success())
}

/// No io_uring or locked memory is needed to be a client; keys and values
/// are quoted as in a shell; `leader` names the leader's id and address.
#[test]
fn a_client_needs_no_locked_memory_and_takes_quoted_words() {
    let cluster = TestCluster::new(3);
    let leader_id = leader(&cluster);
    let (replies, ok) = client_under_low_memlock(
        &["--cluster", &cluster.cluster_arg()],
        &[
            r#"put "my key" "hello world""#,
            r#"get "my key""#,
            r#"put plain "it's" here"#,
            "get plain",
            r"cas 'my key' 'hello world' goodbye\ world",
            r#"get "my key""#,
            "leader",
        ],
    );
    assert!(ok, "{replies:?}");
    assert_eq!(replies[1]["value"], "hello world", "{replies:?}");
    assert_eq!(replies[3]["value"], "it's here", "{replies:?}");
    assert_eq!(replies[4]["swapped"], true, "{replies:?}");
    assert_eq!(replies[5]["value"], "goodbye world", "{replies:?}");
    assert_eq!(replies[6]["leader"], leader_id, "{replies:?}");
    let addr = cluster.nodes[leader_id as usize - 1].client.to_string();
    assert_eq!(replies[6]["addr"], addr, "{replies:?}");

    let (replies, ok) =
        client_under_low_memlock(&["--cluster", &cluster.cluster_arg()], &[r#"put k "open"#]);
    assert!(!ok);
    assert!(
        replies[0]["error"].as_str().unwrap().contains("quote"),
        "{replies:?}"
    );
}

#[test]
fn an_unreachable_cluster_is_said_to_be_unreachable() {
    let dead = format!("{},{}", free_port(), free_port());
    let replies = client(
        &["--cluster", &dead, "--timeout", "1"],
        &["get k".to_string()],
    );
    let error = replies[0]["error"].as_str().unwrap();
    assert!(error.starts_with("cluster unreachable"), "{error}");
    assert!(error.contains(&dead.replace(',', ", ")), "{error}");
}

/// With two of three nodes gone the last cannot lead or reach a leader:
/// the client says there is no quorum, not merely "does not lead".
#[test]
fn a_lost_majority_is_said_to_be_no_quorum() {
    let mut cluster = TestCluster::new(3);
    leader(&cluster);
    cluster.kill(1);
    cluster.kill(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replies = client(
            &["--cluster", &cluster.cluster_arg(), "--timeout", "2"],
            &["put k v".to_string()],
        );
        let error = replies[0]["error"].as_str().unwrap_or_default().to_string();
        // Until it notices its leader is gone, the survivor names it.
        if error.starts_with("no quorum") {
            assert!(error.contains("1 of 3 nodes reachable"), "{error}");
            return;
        }
        assert!(Instant::now() < deadline, "{replies:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `leader` names only a node that answers and leads: right after the
/// leader is killed it names the next one (never the dead one, whom the
/// followers still name for a moment), and with no quorum left it says so.
#[test]
fn leader_names_a_live_leader_and_says_when_there_is_no_quorum() {
    let mut cluster = TestCluster::new(3);
    let first = leader(&cluster);
    cluster.kill(first as usize - 1);
    let replies = client(
        &["--cluster", &cluster.cluster_arg(), "--timeout", "15"],
        &["leader".to_string()],
    );
    let next = replies[0]["leader"].as_u64().expect("a leader");
    assert_ne!(next, first, "{replies:?}");
    let addr = cluster.nodes[next as usize - 1].client.to_string();
    assert_eq!(replies[0]["addr"], addr, "{replies:?}");

    cluster.kill(next as usize - 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replies = client(
            &["--cluster", &cluster.cluster_arg(), "--timeout", "2"],
            &["leader".to_string()],
        );
        assert_ne!(replies[0]["ok"], true, "a dead node named: {replies:?}");
        let error = replies[0]["error"].as_str().unwrap_or_default();
        // Until it notices its leader is gone, the survivor names it.
        if error.starts_with("no quorum") {
            assert!(error.contains("1 of 3 nodes reachable"), "{error}");
            return;
        }
        assert!(Instant::now() < deadline, "{replies:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn synod(args: &[&str]) -> std::process::Output {
    Command::new(SYNOD).args(args).output().unwrap()
}

/// Durations are `--duration SECONDS` / `--timeout SECONDS` everywhere;
/// the old spellings still parse.
#[test]
fn durations_have_one_spelling_and_the_old_ones_still_parse() {
    for (command, flag) in [
        ("bench", "--duration"),
        ("chaos", "--duration"),
        ("client", "--timeout"),
        ("status", "--timeout"),
    ] {
        let help = String::from_utf8(synod(&[command, "--help"]).stdout).unwrap();
        assert!(
            help.contains(&format!("{flag} <SECONDS>")),
            "{command}: {help}"
        );
        assert!(!help.contains("-s <"), "{command}: {help}");
    }
    let old = client(
        &["--node", &free_port().to_string(), "--timeout-s", "1"],
        &[],
    );
    assert!(old.is_empty());
    // Parsed, then refused for the missing file, not for the flag.
    let output = synod(&[
        "chaos",
        "--duration-s",
        "5",
        "--client-timeout-s",
        "1",
        "--check",
        "/nonexistent/history.json",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    assert_ne!(output.status.code(), Some(0));
}

/// `synod client --help` lists every line command with its answer's shape.
#[test]
fn client_help_lists_the_line_commands() {
    let output = synod(&["client", "--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    for command in [
        "append TEXT",
        "read FROM [COUNT]",
        "put K V",
        "get K",
        "cas K OLD NEW",
        "cas K --absent NEW",
        "put K V --lease ID",
        "put K V --ttl MS",
        "get --prefix P",
        "delete K",
        "lease grant TTL_MS",
        "lease keepalive ID",
        "lease revoke ID",
        "watch [PREFIX] [--from INDEX] [--count N]",
        "leader transfer ID",
    ] {
        let listed = help.lines().any(|l| l.trim_start().starts_with(command));
        assert!(listed, "`{command}` not listed:\n{help}");
    }
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("leader ")),
        "{help}"
    );
    assert!(help.contains(r#"{"ok":false,"error":...}"#), "{help}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, mark) in [
        ("bash", "complete -F _synod"),
        ("zsh", "#compdef synod"),
        ("fish", "complete -c synod"),
    ] {
        let output = synod(&["completions", shell]);
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("status"), "{shell}");
    }
    let bash = synod(&["completions", "bash"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synod.bash");
    std::fs::write(&path, bash).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(checked.success(), "bash -n on the completion script");
    assert!(!synod(&["completions", "tcsh"]).status.success());
}

/// A node started with `--client-secret-file` serves only clients that
/// prove they know it: `synod client`, `status` and `bench` with the file
/// are served, without it they are told the node asks for a secret.
#[test]
fn a_client_secret_keeps_out_clients_without_it() {
    // Made before the node starts, so that it starts once with it.
    let secrets = tempfile::tempdir().unwrap();
    let client_secret = secrets.path().join("client-secret");
    let made = synod(&["secret", "generate", client_secret.to_str().unwrap()]);
    assert!(made.status.success(), "{made:?}");
    let flag = client_secret.to_str().unwrap();
    let cluster = TestCluster::with_flags(1, &["--client-secret-file", flag]);
    let with = [
        "--cluster",
        &cluster.cluster_arg(),
        "--client-secret-file",
        flag,
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replies = client(&with, &["put k v".into(), "get k".into()]);
        if replies.iter().all(|r| r["ok"] == true) {
            assert_eq!(replies[1]["value"], "v");
            break;
        }
        assert!(Instant::now() < deadline, "{replies:?}\n{}", cluster.log(1));
        std::thread::sleep(Duration::from_millis(200));
    }
    let without = client(&["--cluster", &cluster.cluster_arg()], &["get k".into()]);
    let error = without[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("client secret"), "{without:?}");

    let status = synod(&[
        "status",
        "--json",
        "--client-secret-file",
        flag,
        "--cluster",
        &cluster.cluster_arg(),
    ]);
    assert!(status.status.success(), "{status:?}");
    let refused = synod(&["status", "--json", "--cluster", &cluster.cluster_arg()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("client secret"),
        "{refused:?}"
    );

    let bench = synod(&[
        "bench",
        "--cluster",
        &cluster.cluster_arg(),
        "--client-secret-file",
        flag,
        "--duration",
        "1",
        "--warmup",
        "0",
        "--inflight",
        "8",
        "--json",
    ]);
    assert!(bench.status.success(), "{bench:?}");
    let report: Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert!(report["commands"].as_u64().unwrap_or(0) > 0, "{report}");
}
