//! Running `synod client`, shared by the tests that drive it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The `synod` binary under test.
pub const SYNOD: &str = env!("CARGO_BIN_EXE_synod");

/// Runs `synod client` with `lines` on stdin; one JSON value per line out.
pub fn client(args: &[&str], lines: &[String]) -> Vec<Value> {
    let mut child = Command::new(SYNOD)
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let input = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    // It exits 0 exactly when every line was answered `"ok":true`.
    let all_ok = replies.iter().all(|r| r["ok"] == true);
    assert_eq!(
        output.status.success(),
        all_ok && replies.len() == lines.len(),
        "exit {:?} for {replies:?}",
        output.status
    );
    replies
}

/// Writes a new secret file at `path` with `synod secret generate`.
#[allow(dead_code)] // not every test binary that shares this file starts a node
pub fn generate_secret(path: &std::path::Path) {
    let generated = Command::new(SYNOD)
        .args(["secret", "generate"])
        .arg(path)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
}
