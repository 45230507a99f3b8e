//! The run's report: operations, faults, outages and the verdict, printed
//! and saved as `report.json` beside `history.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::checker::Verdict;
use super::history::{Call, History};
use super::nemesis::Injected;
use super::ChaosArgs;

/// Operations of one kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpCounts {
    /// Issued.
    pub issued: u64,
    /// Acknowledged.
    pub ok: u64,
    /// Given up (outcome unknown).
    pub unknown: u64,
}

/// A stretch with no acknowledged operation.
#[derive(Clone, Debug, Serialize)]
pub struct Outage {
    /// Microseconds since the run started.
    pub from_us: u64,
    /// Until.
    pub to_us: u64,
}

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed that drove the schedule and the workload.
    pub seed: u64,
    /// The binary under test.
    pub binary: String,
    /// Nodes.
    pub nodes: u64,
    /// Nemesis seconds.
    pub duration_s: u64,
    /// Operations by kind.
    pub ops: BTreeMap<&'static str, OpCounts>,
    /// Faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Every fault.
    pub injected: Vec<Injected>,
    /// Gaps of more than a second without an acknowledgement.
    pub outages: Vec<Outage>,
    /// `synod client` processes that stopped answering and were replaced
    /// (their operation counts as unknown): a liveness problem of the
    /// client, not a safety violation.
    pub clients_hung: Vec<String>,
    /// Entries in each node's final log.
    pub log_lengths: BTreeMap<u64, usize>,
    /// The verdict.
    pub verdict: Verdict,
}

const OUTAGE_US_MIN: u64 = 1_000_000;

impl Report {
    /// Sums up a run.
    pub fn new(
        seed: u64,
        binary: &Path,
        args: &ChaosArgs,
        history: &History,
        injected: &[Injected],
        settled_us: u64,
        verdict: &Verdict,
    ) -> Report {
        let mut ops: BTreeMap<&'static str, OpCounts> = BTreeMap::new();
        for op in &history.ops {
            let kind = match op.call {
                Call::Append { .. } => "append",
                Call::Put { .. } => "put",
                Call::Get { .. } => "get",
                Call::Cas { .. } => "cas",
            };
            let counts = ops.entry(kind).or_default();
            counts.issued += 1;
            if op.ret.is_some() {
                counts.ok += 1;
            } else {
                counts.unknown += 1;
            }
        }
        let mut faults = BTreeMap::new();
        for fault in injected {
            let name = serde_json::to_value(fault.fault)
                .map(|v| v.as_str().unwrap_or("?").to_string())
                .unwrap_or_default();
            *faults.entry(name).or_default() += 1;
        }
        Report {
            seed,
            binary: binary.display().to_string(),
            nodes: args.nodes,
            duration_s: args.duration,
            ops,
            faults,
            injected: injected.to_vec(),
            outages: outages(history, settled_us),
            clients_hung: Vec::new(),
            log_lengths: history
                .logs
                .iter()
                .map(|l| (l.node, l.entries.len()))
                .collect(),
            verdict: verdict.clone(),
        }
    }

    /// Saves `report.json` in `out`.
    pub fn write(&self, out: &Path) -> Result<(), String> {
        let path = out.join("report.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Prints the summary.
    pub fn print(&self) {
        println!("operations (issued / acknowledged / unknown):");
        for (kind, c) in &self.ops {
            println!("  {kind:<7} {:>7} {:>7} {:>7}", c.issued, c.ok, c.unknown);
        }
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("faults: {} ({})", self.injected.len(), faults.join(", "));
        let longest = self
            .outages
            .iter()
            .map(|o| o.to_us - o.from_us)
            .max()
            .unwrap_or(0);
        println!(
            "outages over 1 s: {} (longest {:.1} s)",
            self.outages.len(),
            longest as f64 / 1e6
        );
        println!("final log lengths: {:?}", self.log_lengths);
        println!(
            "clients that hung and were replaced: {}",
            self.clients_hung.len()
        );
        for hung in &self.clients_hung {
            println!("  {hung}");
        }
        print_verdict(&self.verdict);
    }
}

/// Prints the verdict and its findings.
pub fn print_verdict(verdict: &Verdict) {
    let (word, findings) = match verdict {
        Verdict::Pass => ("PASS", &Vec::new()),
        Verdict::Violation(found) => ("VIOLATION", found),
        Verdict::Unknown(found) => ("UNKNOWN", found),
    };
    println!("verdict: {word}");
    for finding in findings.iter().take(20) {
        println!("  {finding}");
    }
    if findings.len() > 20 {
        println!("  ... {} more in report.json", findings.len() - 20);
    }
}

/// Gaps between acknowledgements (from the first invoke to the end of the
/// nemesis) longer than a second.
fn outages(history: &History, settled_us: u64) -> Vec<Outage> {
    let mut done: Vec<u64> = history
        .ops
        .iter()
        .filter(|op| op.ret.is_some())
        .filter_map(|op| op.complete_us)
        .collect();
    done.sort_unstable();
    let start = history.ops.first().map_or(0, |op| op.invoke_us);
    let mut last = start;
    let mut found = Vec::new();
    for t in done.into_iter().chain([settled_us]) {
        if t > last + OUTAGE_US_MIN {
            found.push(Outage {
                from_us: last,
                to_us: t,
            });
        }
        last = last.max(t);
    }
    found
}
