//! What a run cost the machine and what the machine allows: CPU per command
//! of the local nodes and of the generator, over the measured window, and
//! the floor of a commit measured before the load.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};
use synod_bench::loadgen::{LoadReport, Progress};
use synod_bench::machine::{CpuSample, Floor};

/// CPU samples at the first and the latest progress of the measured window
/// (the generator reports one as it starts measuring and one as it ends).
pub struct CpuWindow {
    /// The local nodes' processes (none for a remote cluster).
    pids: Vec<u32>,
    first: Mutex<Option<(Instant, CpuSample)>>,
    last: Mutex<Option<(Instant, CpuSample)>>,
}

/// CPU µs per command: the nodes' (if local) and the generator's.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuPerCommand {
    pub nodes_us: Option<f64>,
    pub generator_us: Option<f64>,
}

impl CpuWindow {
    pub fn new(pids: Vec<u32>) -> CpuWindow {
        CpuWindow {
            pids,
            first: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// Samples at each progress report of the measured window.
    pub fn observe(&self, progress: &Progress) {
        if !progress.measuring {
            return;
        }
        let sample = (Instant::now(), CpuSample::now(&self.pids));
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(sample);
        } else {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(sample);
        }
    }

    /// CPU per command at the run's throughput, from the CPU rate between
    /// the first and the last sample.
    pub fn per_command(&self, report: &LoadReport) -> CpuPerCommand {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (Some((t0, s0)), Some((t1, s1))) = (first, last) else {
            return CpuPerCommand::default();
        };
        let seconds = t1.duration_since(t0).as_secs_f64();
        let per_sec = report.per_sec();
        if seconds <= 0.0 || per_sec <= 0.0 {
            return CpuPerCommand::default();
        }
        let (nodes, generator) = s1.since(&s0);
        let per_command = |cpu: f64| cpu / seconds / per_sec * 1e6;
        CpuPerCommand {
            nodes_us: nodes.filter(|_| !self.pids.is_empty()).map(per_command),
            generator_us: generator.map(per_command),
        }
    }
}

/// The CPUs the machine has (all shared by the nodes and the generator of
/// a local run).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The table's rows for the cost and the floor.
pub fn rows(
    cpu: &CpuPerCommand,
    floor: Option<&Floor>,
    p50_us: u64,
) -> Vec<(&'static str, String)> {
    let us = |v: Option<f64>| v.map_or("unknown".to_string(), |v| format!("{v:.1} µs"));
    let mut rows = vec![(
        "CPU per command",
        format!(
            "nodes {}, generator {} ({} CPUs, shared)",
            us(cpu.nodes_us),
            us(cpu.generator_us),
            cpus()
        ),
    )];
    if let Some(floor) = floor {
        rows.push((
            "floor (same run)",
            format!(
                "4 KiB O_DSYNC write, 3 writers {:.0} µs + loopback RTT {:.0} µs",
                floor.durable_write_us, floor.loopback_rtt_us
            ),
        ));
        rows.push((
            "p50 over floor",
            format!("{:.1}×", p50_us as f64 / floor.commit_us()),
        ));
    }
    rows
}

/// The JSON fields for the cost and the floor.
pub fn json(cpu: &CpuPerCommand, floor: Option<&Floor>, p50_us: u64) -> Value {
    json!({
        "cpu_us_per_command": {"nodes": cpu.nodes_us, "generator": cpu.generator_us, "cpus": cpus()},
        "floor_us": floor.map(|f| json!({
            "durable_write": f.durable_write_us, "loopback_rtt": f.loopback_rtt_us, "commit": f.commit_us(),
        })),
        "p50_over_floor": floor.map(|f| p50_us as f64 / f.commit_us()),
    })
}
