//! The deployment examples in docs/deploy, as far as this machine can run
//! them without systemd or a container engine: the unit passes
//! `systemd-analyze verify` (where installed), and the command lines the
//! unit and the Containerfile run, with the example settings file, start
//! a node that leads, answers, and stops cleanly on SIGTERM. Building the
//! image and running systemd itself are not covered.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use support::{client, generate_secret, SYNOD};

const INSTALLED: &str = "/usr/local/bin/synod";
const CONFIG: &str = "/etc/synod/node.toml";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(name)).unwrap()
}

/// The example settings with this machine's addresses and paths: a
/// cluster of one on loopback. Every other setting is kept as written.
fn local_config(dir: &Path) -> (PathBuf, String) {
    let mut table: toml::Table = read("node.toml").parse().unwrap();
    // Core i listens for peers on the listen port plus i.
    let cores = table.get("cores").and_then(|c| c.as_integer()).unwrap_or(1);
    let peer = ports::free_ports(u16::try_from(cores).unwrap());
    let (client_port, metrics) = (ports::free_ports(1), ports::free_ports(1));
    let secret = dir.join("secret");
    generate_secret(&secret);
    let id = table["id"].as_integer().unwrap();
    let mut peers = toml::Table::new();
    peers.insert(id.to_string(), peer.to_string().into());
    table.insert("listen".into(), peer.to_string().into());
    table.insert("client_listen".into(), client_port.to_string().into());
    table.insert("metrics".into(), metrics.to_string().into());
    table.insert("peers".into(), peers.into());
    let data = dir.join("data").display().to_string();
    table.insert("data_dir".into(), data.into());
    table.insert("secret_file".into(), secret.display().to_string().into());
    let path = dir.join("node.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    (path, client_port.to_string())
}

/// Runs `argv` (as the unit or the image would, with the installed paths
/// replaced by this build and `config`), waits for the node to lead and
/// take a write, then stops it with SIGTERM: it must exit 0.
fn run_node(argv: &[String], config: &Path, client_addr: &str, log: &Path) {
    assert_eq!(argv[0], INSTALLED, "{argv:?}");
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| match a.as_str() {
            CONFIG => config.display().to_string(),
            other => other.to_string(),
        })
        .collect();
    let mut child = Command::new(SYNOD)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replies = client(
            &["--cluster", client_addr, "--timeout", "2"],
            &["put deployed yes".to_string()],
        );
        if replies[0]["ok"] == true {
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{replies:?}\n{}", std::fs::read_to_string(log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on our own child; no memory involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "{status:?}\n{text}");
    // The unit and the image ask for JSON logs.
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

/// The value of `key=` in a unit file.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn the_systemd_unit_verifies_and_its_command_runs_a_node() {
    let unit = read("synod.service");
    let dir = tempfile::tempdir().unwrap();
    let exec = unit_value(&unit, "ExecStart");
    let argv = shell_words::split(exec).unwrap();
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
    let memlock = unit_value(&unit, "LimitMEMLOCK");
    assert!(memlock.ends_with('M'), "{memlock}");
    let verify = Command::new("systemd-analyze").arg("--version").output();
    if verify.is_ok_and(|o| o.status.success()) {
        // verify wants the command to exist: this build stands in for it.
        let local = dir.path().join("synod.service");
        std::fs::write(&local, unit.replace(INSTALLED, SYNOD)).unwrap();
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&local)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        // A value it ignores is only a warning: there must be none.
        assert!(stderr.trim().is_empty(), "{stderr}");
    }
    let (config, client_addr) = local_config(dir.path());
    run_node(&argv, &config, &client_addr, &dir.path().join("log"));
}

/// A JSON-array instruction (`ENTRYPOINT [...]`) of a Containerfile.
fn exec_form(file: &str, instruction: &str) -> Vec<String> {
    let line = file
        .lines()
        .find_map(|l| l.strip_prefix(instruction)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {instruction}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn the_container_runs_a_valid_node_command_of_this_build() {
    let file = read("Containerfile");
    // It builds this package's binary and copies that binary in.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let package: toml::Table = manifest.parse().unwrap();
    let name = package["package"]["name"].as_str().unwrap();
    assert!(
        file.contains(&format!("cargo build --release -p {name}")),
        "{file}"
    );
    let binary = package["bin"][0]["name"].as_str().unwrap();
    assert!(
        file.contains(&format!("target/release/{binary} {INSTALLED}")),
        "{file}"
    );
    assert!(file.contains("STOPSIGNAL SIGTERM"), "{file}");
    let mut argv = exec_form(&file, "ENTRYPOINT");
    argv.extend(exec_form(&file, "CMD"));
    let dir = tempfile::tempdir().unwrap();
    let (config, client_addr) = local_config(dir.path());
    run_node(&argv, &config, &client_addr, &dir.path().join("log"));
}
