//! `synod wal` as a shell pipeline uses it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use glommio::{LocalExecutorBuilder, Placement};
use synod_wal::{Wal, WalConfig};

/// A WAL of `frames` small frames in `dir`.
fn fill(dir: std::path::PathBuf, frames: u64) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (wal, _) = Wal::open(&dir, WalConfig::default()).await.unwrap();
            for i in 0..frames {
                wal.append(1, format!("frame {i}").as_bytes()).unwrap();
            }
            wal.sync().await.unwrap();
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

/// `synod wal inspect DIR | head -1`: the reader goes after one line, and
/// the command ends quietly, as a Unix tool does, not with a panic.
#[test]
fn inspect_into_a_reader_that_stops_early_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    fill(wal.clone(), 50_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["wal", "inspect"])
        .arg(&wal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("position"), "{first}");
    // The reader is gone now; the command is still printing.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
}
