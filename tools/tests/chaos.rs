//! `synod chaos` on real processes, bounded in time: a short run of every
//! fault kind must pass on this build, and a saved history with a violation
//! must fail `--check` with exit status 1.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SYNOD: &str = env!("CARGO_BIN_EXE_synod");

/// Runs `synod ARGS` and returns its exit code and stdout, killing it if it
/// outlives `limit`. Stdout is drained on a thread so a full pipe cannot
/// stall the run.
fn run(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(SYNOD)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("synod starts");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader.join().expect("reader");
    let status =
        status.unwrap_or_else(|| panic!("synod {args:?} ran longer than {limit:?}: {text}"));
    (status.code(), text)
}

/// A seeded run of three clients with `settings` beside them, into `out`,
/// that must pass; its output.
fn passing_run(settings: &[&str], out: &std::path::Path) -> String {
    let out_arg = format!("--out={}", out.display());
    let args = [&["chaos", "--clients=3", &out_arg], settings].concat();
    let (code, stdout) = run(&args, Duration::from_secs(240));
    println!("{stdout}");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    stdout
}

#[test]
fn a_short_run_of_every_fault_passes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    passing_run(&["--duration=12", "--faults=all", "--seed=7"], &out);
    assert!(out.join("report.json").is_file());
    let history = std::fs::read_to_string(out.join("history.json")).unwrap();
    let (code, again) = run(
        &[
            "chaos",
            &format!("--check={}", out.join("history.json").display()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{again}");
    assert!(history.contains("\"op\":\"append\""));
}

/// Nodes replaced by new ones (new ids, new addresses, `--join`, `member
/// add`, `member remove`) between kills: the history and the final logs,
/// read from the members as they then are, check out.
#[test]
fn a_run_that_replaces_nodes_passes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let settings = ["--duration=15", "--faults=replace,kill", "--seed=3"];
    let stdout = passing_run(&settings, &out);
    assert!(
        stdout.contains("replaced by n4"),
        "no node was replaced: {stdout}"
    );
}

#[test]
fn a_saved_history_with_a_lost_append_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.json");
    let history = r#"{
      "ops": [
        {"client": 1, "invoke_us": 0, "complete_us": 10,
         "call": {"op": "append", "data": "a:1:1"}, "ret": {"ret": "appended", "index": 0}},
        {"client": 1, "invoke_us": 20, "complete_us": 30,
         "call": {"op": "put", "key": "k", "value": "x"}, "ret": {"ret": "put", "previous": null}},
        {"client": 2, "invoke_us": 40, "complete_us": 50,
         "call": {"op": "get", "key": "k"}, "ret": {"ret": "get", "value": null}}
      ],
      "logs": [{"node": 1, "entries": [[0, "put k x"]]}]
    }"#;
    std::fs::write(&path, history).unwrap();
    let (code, stdout) = run(
        &["chaos", &format!("--check={}", path.display())],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("verdict: VIOLATION"), "{stdout}");
    assert!(stdout.contains("missing"), "{stdout}");
    assert!(stdout.contains("not linearizable"), "{stdout}");
}
