//! `synod bench` as a user runs it: against a running cluster and its own,
//! with every option that changes the workload, and refusing what cannot run.

use std::process::{Command, Stdio};

#[path = "support/cluster.rs"]
mod local_cluster;
#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use local_cluster::{applied, leader, TestCluster};
use serde_json::Value;
use support::SYNOD;

/// Runs `synod bench` with `args` and `--json`; every line it printed,
/// the results object last.
fn bench_lines(args: &[&str]) -> Vec<Value> {
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
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "no results line");
    lines
}

/// Runs `synod bench` with `args` and `--json`; its results object.
fn bench(args: &[&str]) -> Value {
    bench_lines(args).pop().expect("a results line")
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
    // A local run says what each command cost the nodes and the generator,
    // and what the machine allows, measured in the same run.
    let cpu = &results["cpu_us_per_command"];
    assert!(cpu["nodes"].as_f64().unwrap() > 0.0, "{results}");
    assert!(cpu["generator"].as_f64().unwrap() > 0.0, "{results}");
    let floor = &results["floor_us"];
    assert!(floor["durable_write"].as_f64().unwrap() > 0.0, "{results}");
    assert!(floor["loopback_rtt"].as_f64().unwrap() > 0.0, "{results}");
    assert!(
        results["p50_over_floor"].as_f64().unwrap() > 0.0,
        "{results}"
    );
    let logs: String = (1..=3)
        .map(|id| std::fs::read_to_string(data.join(format!("node-{id}.log"))).unwrap_or_default())
        .collect();
    assert_eq!(logs.matches("UNSAFE: fsync is off").count(), 3, "{logs}");
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

/// `--transfers N` hands leadership on N times during the run and reports
/// each pause: one JSON line per transfer, then the results, which saw the
/// leaders change.
#[test]
fn bench_hands_leadership_on_and_reports_each_pause() {
    let lines = bench_lines(&["--local", "3", "--transfers", "2"]);
    let transfers: Vec<&Value> = lines.iter().filter(|l| l["transfer"].is_u64()).collect();
    assert_eq!(transfers.len(), 2, "{lines:?}");
    for t in &transfers {
        let (from, to) = (t["from"].as_u64().unwrap(), t["to"].as_u64().unwrap());
        assert_eq!(to, from % 3 + 1, "{t}");
        assert!(t["outage_ms"].is_u64(), "{t}");
    }
    let results = lines.last().unwrap();
    assert!(results["leaders_seen"].as_u64().unwrap() >= 3, "{results}");
}

/// `--stages` reads the leader's stage histograms over the measured
/// window: every stage timed, and the parts of a request's time at the
/// leader no longer than what the client saw in all.
#[test]
fn bench_reports_where_a_request_spends_its_time_at_the_leader() {
    let out = bench(&["--local", "3", "--stages", "--inflight", "32"]);
    let stages = &out["stages"];
    for stage in ["queue", "wal", "round"] {
        let timed = stages[stage]["timed"].as_u64().unwrap_or(0);
        assert!(timed > 0, "{stage} never timed: {stages}");
    }
    let mean = |stage: &str| stages[stage]["mean_us"].as_f64().unwrap();
    let p99 = |stage: &str| stages[stage]["p99_us"].as_f64().unwrap();
    assert!(
        mean("round") > 0.0 && p99("round") >= mean("round") * 0.5,
        "{stages}"
    );
    let client_max = out["latency_us"]["max"].as_f64().unwrap();
    assert!(
        mean("queue") + mean("round") <= client_max,
        "{stages} against the client's max {client_max} µs"
    );
}
