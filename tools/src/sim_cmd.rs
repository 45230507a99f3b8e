//! `synod sim`: seed sweeps and single-seed replays of the simulator.

use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use synod_engine::sim::{run_seed, run_seed_changing_members, SimReport};

/// Violations printed per failing seed; the replay shows the rest.
const VIOLATIONS_SHOWN: usize = 3;

/// Arguments of `synod sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Run this one seed (with --trace, print every event).
    #[arg(long, conflicts_with_all = ["seeds", "from"])]
    seed: Option<u64>,
    /// Print the event trace of a single seed.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// How many seeds to sweep.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed of the sweep (default: drawn from the clock, and printed).
    #[arg(long)]
    from: Option<u64>,
    /// Also draw configuration changes (nodes added, removed, made
    /// learners) in most seeds.
    #[arg(long)]
    change_members: bool,
}

/// Runs `synod sim`; exit status 1 if any seed broke a property.
pub fn run(args: SimArgs) -> ExitCode {
    if let Some(seed) = args.seed {
        let report = seed_run(args.change_members)(seed, args.trace);
        for line in &report.trace {
            println!("{line}");
        }
        print_table(std::slice::from_ref(&report));
        return verdict(std::slice::from_ref(&report));
    }
    let from = args.from.unwrap_or_else(clock_seed);
    let to = from.saturating_add(args.seeds);
    println!("sweeping seeds {from}..{to} (replay one with: synod sim --seed S --trace)");
    let bar = progress(args.seeds);
    let mut reports = Vec::with_capacity(args.seeds as usize);
    for seed in from..to {
        let report = seed_run(args.change_members)(seed, false);
        if !report.violations.is_empty() {
            bar.println(format!("seed {seed} FAILED: {:?}", report.violations[0]));
        }
        reports.push(report);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_table(&reports);
    verdict(&reports)
}

fn seed_run(change_members: bool) -> fn(u64, bool) -> SimReport {
    if change_members {
        run_seed_changing_members
    } else {
        run_seed
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn progress(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} seeds  {per_sec}  eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn print_table(reports: &[SimReport]) {
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let violations = reports
        .iter()
        .map(|r| r.violations.len() as u64)
        .sum::<u64>();
    let converge_max = reports.iter().map(|r| r.converge_ticks).max().unwrap_or(0);
    let rows = [
        ("seeds", reports.len() as u64),
        ("slots committed", sum(|r| r.commits)),
        ("commands acknowledged", sum(|r| r.acked)),
        ("elections", sum(|r| r.elections)),
        ("reads checked", sum(|r| r.reads)),
        ("faults injected", sum(|r| r.faults)),
        ("disks lost and rebuilt", sum(|r| r.disk_losses)),
        ("damaged WAL tails cut", sum(|r| r.tails_cut)),
        ("leadership transfers", sum(|r| r.transfers)),
        ("configuration changes", sum(|r| r.reconfigurations)),
        ("nodes replaced (lost disk)", sum(|r| r.retirements)),
        ("snapshots taken", sum(|r| r.snapshots_taken)),
        ("snapshots installed", sum(|r| r.snapshots_installed)),
        ("snapshot chunk asks", sum(|r| r.snapshot_asks)),
        ("slowest convergence (ticks)", converge_max),
        ("violations", violations),
    ];
    println!("+------------------------------+--------------+");
    for (name, value) in rows {
        println!("| {name:<28} | {value:>12} |");
    }
    println!("+------------------------------+--------------+");
}

fn verdict(reports: &[SimReport]) -> ExitCode {
    let failed: Vec<&SimReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for report in failed {
        for violation in report.violations.iter().take(VIOLATIONS_SHOWN) {
            let (seed, property) = (report.seed, violation.property);
            eprintln!("seed {seed}: {property}: {}", violation.detail);
        }
        if report.violations.len() > VIOLATIONS_SHOWN {
            let more = report.violations.len() - VIOLATIONS_SHOWN;
            eprintln!("seed {}: ... and {more} more", report.seed);
        }
        eprintln!("replay: synod sim --seed {} --trace", report.seed);
    }
    ExitCode::FAILURE
}
