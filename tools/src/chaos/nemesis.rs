//! The nemesis: faults on a seeded schedule, one at a time, each injected,
//! held for a while and healed.
//!
//! | fault | does |
//! |---|---|
//! | `kill` | SIGKILL one node, restart it |
//! | `pause` | SIGSTOP one node, SIGCONT it |
//! | `isolate` | cut every link of one node both ways |
//! | `cut-link` | cut the link between two nodes both ways (each still reaches the others) |
//! | `one-way` | drop one node's outgoing (or incoming) bytes only |
//! | `crash-majority` | SIGKILL a majority at once, restart them |
//! | `crash-all` | SIGKILL every node at once, restart them |
//! | `torn-tail` | while one node is down, tear its WAL's tail; it must come back (or refuse with a clear error, and then rebuild on a new disk) |
//! | `bit-flip` | while one node is down, flip a bit in a frame valid frames follow; it must refuse to start with a clear error |
//! | `lose-disk` | SIGKILL one node, delete its data directory, restart it with `--rejoin`; it must rebuild from its peers and rejoin |
//! | `replace` | SIGKILL one node for good, wipe it, start a new node (the next id) at a new address with `--join`, `member add` it, `member remove` the old one |
//!
//! Once a node has been replaced, `--rejoin` (which asks the cluster's
//! first members) cannot work, so a lost disk, or a torn tail that makes a
//! node rebuild, is answered the way an operator would from then on: the
//! machine comes back under a new id (`replace`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::Serialize;
use synod_bench::local::{node_dir, LocalCluster};

use super::corrupt;
use super::proxy::Links;
use super::workload::micros;
use super::Proxies;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL one node and restart it.
    Kill,
    /// SIGSTOP one node and SIGCONT it.
    Pause,
    /// Cut all of one node's links both ways.
    Isolate,
    /// Cut one pair's link both ways.
    CutLink,
    /// Drop one direction of one node's links.
    OneWay,
    /// SIGKILL a majority at once.
    CrashMajority,
    /// SIGKILL every node at once.
    CrashAll,
    /// Tear a stopped node's WAL tail.
    TornTail,
    /// Flip a bit inside a stopped node's WAL.
    BitFlip,
    /// Delete a stopped node's data directory.
    LoseDisk,
    /// Replace a node by a new one at a new address.
    Replace,
}

impl Fault {
    /// Parses a fault or a named mix (`process`, `network`, `crash`,
    /// `disk`, `all`).
    pub fn parse_mix(text: &str) -> Result<Vec<Fault>, String> {
        use Fault::*;
        let mut faults = Vec::new();
        for word in text.split(',').map(str::trim) {
            faults.extend_from_slice(match word {
                "kill" => &[Kill],
                "pause" => &[Pause],
                "isolate" => &[Isolate],
                "cut-link" => &[CutLink],
                "one-way" => &[OneWay],
                "crash-majority" => &[CrashMajority],
                "crash-all" => &[CrashAll],
                "torn-tail" => &[TornTail],
                "bit-flip" => &[BitFlip],
                "lose-disk" => &[LoseDisk],
                "replace" => &[Replace],
                "process" => &[Kill, Pause],
                "network" => &[Isolate, CutLink, OneWay],
                "crash" => &[CrashMajority, CrashAll],
                "disk" => &[TornTail, BitFlip, LoseDisk],
                "membership" => &[Replace],
                "all" => &[Kill, Pause, Isolate, CutLink, OneWay, CrashMajority, CrashAll, TornTail, BitFlip, LoseDisk, Replace],
                other => return Err(format!("unknown fault `{other}`; try process, network, crash, disk, membership, all, or one of kill, pause, isolate, cut-link, one-way, crash-majority, crash-all, torn-tail, bit-flip, lose-disk, replace")),
            });
        }
        faults.sort();
        faults.dedup();
        Ok(faults)
    }
}

/// A fault as injected.
#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    /// What.
    pub fault: Fault,
    /// On which nodes.
    pub nodes: Vec<usize>,
    /// Microseconds since the run started, when injected and healed.
    pub start_us: u64,
    /// When healed.
    pub end_us: u64,
    /// What was seen (a damaged offset, a refusal message).
    pub note: String,
}

/// The faults a run injects, and the cluster and links it injects them into.
pub struct Nemesis {
    /// The nodes.
    pub cluster: LocalCluster,
    /// One proxy per pair `(low, high)`, 1-based ids.
    pub proxies: Proxies,
    /// The cluster's data directory.
    pub data_dir: PathBuf,
    /// The cluster's members (node ids, which are the cluster's indices
    /// plus one): the first nodes, then those replaced in.
    pub members: Vec<usize>,
    /// Peer and client addresses for nodes yet to replace others.
    pub spares: Vec<(SocketAddr, SocketAddr)>,
    /// How many nodes the cluster started with (ids 1 to this).
    pub first_members: usize,
    /// The schedule's randomness.
    pub rng: StdRng,
    /// The run's clock.
    pub epoch: Instant,
    /// Every fault injected.
    pub injected: Vec<Injected>,
    /// Safety findings of the nemesis itself (a corrupt WAL served, a torn
    /// tail not repaired, a node that exited by itself).
    pub findings: Vec<String>,
}

const SIGKILL: i32 = libc::SIGKILL;

impl Nemesis {
    /// Injects one fault of `fault`'s kind, holds it and heals it.
    pub fn inject(&mut self, fault: Fault) {
        let start_us = micros(self.epoch);
        let (nodes, note) = match fault {
            Fault::Kill => self.kill_some(1),
            Fault::Pause => self.pause_one(),
            Fault::Isolate => self.isolate_one(),
            Fault::CutLink => self.cut_link(),
            Fault::OneWay => self.one_way(),
            Fault::CrashMajority => self.kill_some(self.members.len() / 2 + 1),
            Fault::CrashAll => self.kill_some(self.members.len()),
            Fault::TornTail if self.replaced() => self.replace(),
            Fault::TornTail => self.torn_tail(),
            Fault::BitFlip => self.bit_flip(),
            Fault::LoseDisk if self.replaced() => self.replace(),
            Fault::LoseDisk => self.lose_disk(),
            Fault::Replace => self.replace(),
        };
        self.injected.push(Injected {
            fault,
            nodes,
            start_us,
            end_us: micros(self.epoch),
            note,
        });
        self.reap_unexpected();
    }

    fn hold(&mut self, from_ms: u64, to_ms: u64) {
        sleep(Duration::from_millis(
            self.rng.random_range(from_ms..=to_ms),
        ));
    }

    pub(super) fn pick(&mut self, count: usize) -> Vec<usize> {
        let mut chosen: Vec<usize> = self
            .members
            .choose_multiple(&mut self.rng, count)
            .copied()
            .collect();
        chosen.sort();
        chosen
    }

    fn signal(&self, id: usize, signal: i32) {
        if let Some(pid) = self.cluster.pid(id) {
            // SAFETY: kill(2) on our own child's pid; no memory involved.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    pub(super) fn restart(&mut self, id: usize) -> String {
        match self.cluster.restart(id) {
            Ok(()) => String::new(),
            Err(e) => {
                self.findings
                    .push(format!("node {id} could not be restarted: {e}"));
                e
            }
        }
    }

    /// SIGKILLs `count` nodes at once (signals first, then reaping), holds,
    /// restarts them.
    fn kill_some(&mut self, count: usize) -> (Vec<usize>, String) {
        let victims = self.pick(count);
        for &id in &victims {
            self.signal(id, SIGKILL);
        }
        for &id in &victims {
            self.cluster.kill(id);
        }
        self.hold(200, 1500);
        for &id in &victims {
            self.restart(id);
        }
        (victims, String::new())
    }

    fn pause_one(&mut self) -> (Vec<usize>, String) {
        let victim = self.pick(1);
        self.signal(victim[0], libc::SIGSTOP);
        self.hold(500, 3000);
        self.signal(victim[0], libc::SIGCONT);
        (victim, String::new())
    }

    fn set_links(&self, node: usize, outgoing_cut: bool, incoming_cut: bool) {
        for (&(low, high), proxy) in &self.proxies {
            let links = if low == node {
                Links {
                    low_to_high_cut: outgoing_cut,
                    high_to_low_cut: incoming_cut,
                }
            } else if high == node {
                Links {
                    low_to_high_cut: incoming_cut,
                    high_to_low_cut: outgoing_cut,
                }
            } else {
                continue;
            };
            proxy.set(links);
        }
    }

    /// Opens every link.
    pub fn heal_links(&self) {
        for proxy in self.proxies.values() {
            proxy.set(Links::default());
        }
    }

    fn isolate_one(&mut self) -> (Vec<usize>, String) {
        let victim = self.pick(1);
        self.set_links(victim[0], true, true);
        self.hold(1000, 4000);
        self.heal_links();
        (victim, "both ways".into())
    }

    fn cut_link(&mut self) -> (Vec<usize>, String) {
        let pair = self.pick(2);
        if let Some(proxy) = self.proxies.get(&(pair[0], pair[1])) {
            proxy.set(Links {
                low_to_high_cut: true,
                high_to_low_cut: true,
            });
        }
        self.hold(1000, 4000);
        self.heal_links();
        (pair, "both ways".into())
    }

    fn one_way(&mut self) -> (Vec<usize>, String) {
        let victim = self.pick(1);
        let outgoing = self.rng.random_bool(0.5);
        self.set_links(victim[0], outgoing, !outgoing);
        self.hold(1000, 4000);
        self.heal_links();
        let note = if outgoing {
            "its outgoing bytes dropped"
        } else {
            "its incoming bytes dropped"
        };
        (victim, note.into())
    }

    fn wal_dir(&self, id: usize) -> PathBuf {
        node_dir(&self.data_dir, id).join("group-0")
    }

    /// SIGKILLs node `id` and waits out the writes it had in flight: the
    /// kernel finishes a dead process's io_uring writes after it is reaped,
    /// and one landing after the damage would make a different fault
    /// (frames after the garbage) than the one meant.
    pub(super) fn kill_and_settle(&mut self, id: usize) {
        self.cluster.kill(id);
        sleep(Duration::from_millis(200));
    }

    fn torn_tail(&mut self) -> (Vec<usize>, String) {
        let victim = self.pick(1);
        let id = victim[0];
        self.kill_and_settle(id);
        let note = match corrupt::tear_tail(&self.wal_dir(id), &mut self.rng) {
            Ok(damage) => format!(
                "garbage at {} offset {}",
                damage.path.display(),
                damage.offset_bytes
            ),
            Err(e) => format!("not torn: {e}"),
        };
        let seen = self.log_len(id);
        self.restart(id);
        self.hold(1000, 2000);
        let Some(status) = self.cluster.reap(id) else {
            let said = self
                .log_line_since(id, seen, "damaged tail")
                .unwrap_or_else(|| "no damaged tail logged".into());
            // A cut tail may have held votes that counted: the node
            // rebuilds from its peers (all up now) before it votes again.
            if said.contains("rebuilds from its peers") {
                let rebuilt = self.wait_rebuilt(id, seen);
                return (victim, format!("{note}; {said}; {rebuilt}"));
            }
            return (victim, format!("{note}; {said}"));
        };
        // Refusing with a clear error is allowed (never serving corrupt
        // data is the rule); the disk is then replaced and the node must
        // rebuild from its peers.
        let Some(reason) = self.log_line_since(id, seen, "corrupt") else {
            self.findings.push(format!(
                "node {id} exited ({status}) after a torn tail without naming a corruption; {note}"
            ));
            self.restart(id);
            return (victim, note);
        };
        let rebuilt = self.replace_disk(id);
        (victim, format!("{note}; refused: {reason}; {rebuilt}"))
    }

    fn bit_flip(&mut self) -> (Vec<usize>, String) {
        let victim = self.pick(1);
        let id = victim[0];
        self.kill_and_settle(id);
        let dir = node_dir(&self.data_dir, id);
        let backup = self.data_dir.join(format!("node-{id}.before-bit-flip"));
        let _ = std::fs::remove_dir_all(&backup);
        if let Err(e) = corrupt::copy_dir(&dir, &backup) {
            self.restart(id);
            return (victim, format!("not flipped: {e}"));
        }
        let damage = match corrupt::flip_bit(&self.wal_dir(id), &mut self.rng) {
            Ok(damage) => damage,
            Err(e) => {
                self.restart(id);
                return (victim, format!("not flipped: {e}"));
            }
        };
        let note = self.expect_refusal(id, &damage);
        // Put the undamaged directory back (a repaired disk); a disk that
        // is gone altogether is `lose-disk`.
        let restored = std::fs::remove_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| corrupt::copy_dir(&backup, &dir));
        if let Err(e) = restored {
            self.findings
                .push(format!("node {id}: restoring its directory failed: {e}"));
        }
        let _ = std::fs::remove_dir_all(&backup);
        self.restart(id);
        (victim, note)
    }

    /// The whole data directory goes; the node, restarted with `--rejoin`,
    /// must rebuild and rejoin (every other node is up).
    fn lose_disk(&mut self) -> (Vec<usize>, String) {
        let victim = self.pick(1);
        let id = victim[0];
        self.kill_and_settle(id);
        let note = self.replace_disk(id);
        (victim, note)
    }

    /// Node `id` (stopped) gets an empty disk and is restarted with
    /// `--rejoin`; it must rebuild from its peers within 30 s.
    fn replace_disk(&mut self, id: usize) -> String {
        if let Err(e) = std::fs::remove_dir_all(node_dir(&self.data_dir, id)) {
            self.restart(id);
            return format!("disk not replaced: {e}");
        }
        let seen = self.log_len(id);
        if let Err(e) = self.cluster.restart_with(id, &["--rejoin"]) {
            self.findings.push(format!("node {id}: {e}"));
        }
        self.wait_rebuilt(id, seen)
    }

    /// Waits for node `id` to say it rebuilt and rejoined (after log byte
    /// `seen`), 30 s at most; a finding if it does not.
    fn wait_rebuilt(&mut self, id: usize, seen: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(line) = self.log_line_since(id, seen, "rebuilt and rejoined") {
                return line;
            }
            sleep(Duration::from_millis(50));
        }
        self.findings
            .push(format!("node {id} did not rebuild within 30 s"));
        "not rebuilt within 30 s".into()
    }

    fn log_len(&self, id: usize) -> u64 {
        std::fs::metadata(&self.cluster.logs[id - 1]).map_or(0, |m| m.len())
    }

    /// The first line of node `id`'s log after byte `from` that mentions
    /// `word` (case-insensitive).
    fn log_line_since(&self, id: usize, from: u64, word: &str) -> Option<String> {
        let text = std::fs::read(&self.cluster.logs[id - 1]).ok()?;
        let fresh = String::from_utf8_lossy(text.get(from as usize..)?).to_string();
        fresh
            .lines()
            .find(|l| l.to_lowercase().contains(word))
            .map(|l| l.trim().to_string())
    }

    /// Starts node `id` on a damaged WAL and waits for it to refuse.
    fn expect_refusal(&mut self, id: usize, damage: &corrupt::Damage) -> String {
        let seen = self.log_len(id);
        self.restart(id);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.cluster.reap(id) {
                let reason = self.log_line_since(id, seen, "corrupt");
                return match (status.success(), reason) {
                    (false, Some(line)) => format!("refused ({status}): {line}"),
                    (_, reason) => {
                        self.findings.push(format!("node {id} exited ({status}) on a flipped bit at {} offset {} without naming the corruption: {reason:?}", damage.path.display(), damage.offset_bytes));
                        "exited without a clear error".into()
                    }
                };
            }
            sleep(Duration::from_millis(50));
        }
        self.cluster.kill(id);
        self.findings.push(format!(
            "node {id} kept running on a WAL with a flipped bit at {} offset {}",
            damage.path.display(),
            damage.offset_bytes
        ));
        "kept running on corrupt data".into()
    }

    /// A node that exited by itself is a finding; it is restarted.
    fn reap_unexpected(&mut self) {
        for id in self.members.clone() {
            if let Some(status) = self.cluster.reap(id) {
                self.findings.push(format!(
                    "node {id} exited by itself ({status}); see its log"
                ));
                self.restart(id);
            }
        }
    }

    /// Ends every fault: links open, paused nodes continued, stopped nodes
    /// started.
    pub fn heal_all(&mut self) {
        self.heal_links();
        for &id in &self.members {
            self.signal(id, libc::SIGCONT);
        }
        self.reap_unexpected();
        for id in self.members.clone() {
            if !self.cluster.is_up(id) {
                self.restart(id);
            }
        }
    }
}
