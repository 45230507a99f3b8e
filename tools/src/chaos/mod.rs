//! `synod chaos`: a local cluster of `synod node` processes behind fault
//! proxies, concurrent clients, a seeded nemesis, then a history check.
//!
//! ```text
//!   clients (synod client) --ops--> nodes <--proxy(i,j)--> nodes
//!        |  invoke/complete times, results          ^ kill, pause, cut, WAL damage
//!        v                                          | nemesis (seeded)
//!   history.json --> checker (log + per-key linearizability) --> report
//! ```
//!
//! The run stops by itself: the nemesis runs for `--duration` or
//! `--faults-max` faults, then every fault is healed, the cluster settles,
//! each node's log is read, and the checker gives the verdict. Exit status:
//! 0 pass, 1 violation, 3 unknown (the search ran out of budget), 2 the run
//! itself failed.

pub mod checker;
pub mod corrupt;
pub mod history;
pub mod nemesis;
pub mod proxy;
mod replace;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod_bench::local::{Layout, LocalCluster};

use self::checker::Verdict;
use self::history::{History, ReplicaLog};
use self::nemesis::{Fault, Nemesis};
use self::proxy::Proxy;
use self::workload::{micros, read_log, LineClient, Workload};

/// Arguments of `synod chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Replicas to run.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// How long the nemesis runs, in seconds.
    #[arg(
        long,
        alias = "duration-s",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    pub duration: u64,
    /// At most this many faults.
    #[arg(long, default_value_t = 10_000)]
    pub faults_max: u32,
    /// Faults to draw from: kinds or mixes (process, network, crash, disk,
    /// all), comma-separated.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// Seed of the schedule and the workload (default: the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// KV keys the clients spread over.
    #[arg(long, default_value_t = 8)]
    pub keys: u32,
    /// The `synod` binary whose nodes are tested (default: this one).
    #[arg(long)]
    pub synod_bin: Option<PathBuf>,
    /// Where data, logs, the history and the report go (default: a new
    /// directory under the system's temp dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A client gives up on an operation after this many seconds (its
    /// outcome is then unknown).
    #[arg(
        long,
        alias = "client-timeout-s",
        value_name = "SECONDS",
        default_value_t = 5
    )]
    pub client_timeout: u64,
    /// Step budget of each key's linearizability search.
    #[arg(long, default_value_t = 20_000_000)]
    pub steps_max: u64,
    /// Only check a saved history (`history.json` of an earlier run).
    #[arg(long)]
    pub check: Option<PathBuf>,
}

/// Runs `synod chaos`.
pub fn run(args: ChaosArgs) -> ExitCode {
    if let Some(path) = &args.check {
        return check_saved(path, args.steps_max);
    }
    match run_cluster(&args) {
        Ok(verdict) => exit_code(&verdict),
        Err(message) => {
            eprintln!("synod chaos: {message}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(verdict: &Verdict) -> ExitCode {
    match verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Violation(_) => ExitCode::from(1),
        Verdict::Unknown(_) => ExitCode::from(3),
    }
}

fn check_saved(path: &std::path::Path, steps_max: u64) -> ExitCode {
    let loaded = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<History>(&bytes).map_err(|e| e.to_string()));
    match loaded {
        Ok(history) => {
            let verdict = checker::check(&history, steps_max);
            report::print_verdict(&verdict);
            exit_code(&verdict)
        }
        Err(e) => {
            eprintln!("synod chaos: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

/// One fault proxy per node pair `(low, high)`.
type Proxies = BTreeMap<(usize, usize), Proxy>;

/// Proxies for every pair and the layout that routes the lower id through
/// them.
/// Nodes `replace` can start in one run, at most.
const SPARE_NODES: u64 = 16;

fn proxied_layout(nodes: u64) -> Result<(Layout, Proxies), String> {
    let mut layout = Layout::loopback_stable(nodes)?;
    let mut proxies = BTreeMap::new();
    let n = nodes as usize;
    for low in 1..=n {
        for high in low + 1..=n {
            let proxy = Proxy::start(layout.listen[high - 1])?;
            layout.dialed[low - 1][high - 1] = proxy.addr();
            proxies.insert((low, high), proxy);
        }
    }
    Ok((layout, proxies))
}

fn run_cluster(args: &ChaosArgs) -> Result<Verdict, String> {
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let mix = Fault::parse_mix(&args.faults)?;
    let exe = match &args.synod_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("synod-chaos-{}-{seed}", std::process::id()))
    });
    let data_dir = out.join("cluster");
    println!(
        "synod chaos: seed {seed}, {} nodes, {} s, faults {mix:?}",
        args.nodes, args.duration
    );
    println!("  binary {}, output in {}", exe.display(), out.display());
    let (layout, proxies) = proxied_layout(args.nodes)?;
    // Addresses for the nodes `replace` starts, known to the clients from
    // the start (they skip those not up); a replaced-in node's links are
    // direct, not through the fault proxies.
    let spares = if mix.contains(&Fault::Replace) {
        Layout::loopback_stable(SPARE_NODES)?
    } else {
        Layout {
            listen: Vec::new(),
            client: Vec::new(),
            dialed: Vec::new(),
            metrics: Vec::new(),
        }
    };
    let cluster = LocalCluster::start_laid_out(&exe, &layout, 1, &data_dir, &[])?;
    let epoch = Instant::now();
    let mut nemesis = Nemesis {
        cluster,
        proxies,
        data_dir: data_dir.clone(),
        members: (1..=args.nodes as usize).collect(),
        spares: spares
            .listen
            .iter()
            .copied()
            .zip(spares.client.iter().copied())
            .collect(),
        first_members: args.nodes as usize,
        rng: StdRng::seed_from_u64(seed),
        epoch,
        injected: Vec::new(),
        findings: Vec::new(),
    };
    wait_for_leader(&exe, &layout)?;
    let stop = Arc::new(AtomicBool::new(false));
    let workload = Workload {
        exe: exe.clone(),
        cluster: [layout.client.clone(), spares.client.clone()].concat(),
        keys: args.keys,
        timeout_s: args.client_timeout,
        epoch,
        stop: stop.clone(),
    };
    let clients = workload.spawn(args.clients, seed);
    run_nemesis(&mut nemesis, &mix, args);
    nemesis.heal_all();
    stop.store(true, Ordering::SeqCst);
    let mut ops = Vec::new();
    let mut hung = Vec::new();
    for client in clients {
        let run = client.join().map_err(|_| "a client thread panicked")??;
        ops.extend(run.ops);
        hung.extend(run.hung);
    }
    ops.sort_by_key(|op| op.invoke_us);
    let settled_us = micros(epoch);
    let members: Vec<(u64, std::net::SocketAddr)> = nemesis
        .members
        .iter()
        .map(|&id| (id as u64, nemesis.cluster.client_addrs[id - 1]))
        .collect();
    let (logs, lagging) = settle_and_read(&exe, &members);
    nemesis.findings.extend(lagging);
    let history = History { ops, logs };
    let history_path = out.join("history.json");
    let json = serde_json::to_vec(&history).map_err(|e| e.to_string())?;
    std::fs::write(&history_path, json).map_err(|e| format!("{}: {e}", history_path.display()))?;
    let verdict = checker::check(&history, args.steps_max);
    let verdict = merge(verdict, std::mem::take(&mut nemesis.findings));
    let mut summary = report::Report::new(
        seed,
        &exe,
        args,
        &history,
        &nemesis.injected,
        settled_us,
        &verdict,
    );
    summary.clients_hung = hung;
    summary.write(&out)?;
    summary.print();
    drop(nemesis);
    if verdict == Verdict::Pass {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!(
            "history kept: synod chaos --check {}",
            history_path.display()
        );
    }
    Ok(verdict)
}

/// The nemesis' own findings (a corrupt WAL served, a node that exited by
/// itself) are violations too.
fn merge(verdict: Verdict, findings: Vec<String>) -> Verdict {
    if findings.is_empty() {
        return verdict;
    }
    match verdict {
        Verdict::Violation(mut found) => {
            found.extend(findings);
            Verdict::Violation(found)
        }
        _ => Verdict::Violation(findings),
    }
}

fn run_nemesis(nemesis: &mut Nemesis, mix: &[Fault], args: &ChaosArgs) {
    let deadline = nemesis.epoch + Duration::from_secs(args.duration);
    let mut count = 0;
    while count < args.faults_max && Instant::now() < deadline {
        let quiet = Duration::from_millis(nemesis.rng.random_range(500..=2000));
        sleep(quiet.min(deadline.saturating_duration_since(Instant::now())));
        if Instant::now() >= deadline {
            break;
        }
        let fault = mix[nemesis.rng.random_range(0..mix.len())];
        nemesis.inject(fault);
        count += 1;
        if let Some(last) = nemesis.injected.last() {
            println!(
                "  [{:7.1} s] {:?} on {:?} for {:.1} s {}",
                last.start_us as f64 / 1e6,
                last.fault,
                last.nodes,
                (last.end_us - last.start_us) as f64 / 1e6,
                last.note
            );
        }
    }
}

fn wait_for_leader(exe: &std::path::Path, layout: &Layout) -> Result<(), String> {
    let list: Vec<String> = layout.client.iter().map(ToString::to_string).collect();
    let mut client = LineClient::start(
        exe,
        &[
            format!("--cluster={}", list.join(",")),
            "--timeout=30".into(),
        ],
    )?;
    let reply = client
        .call("append chaos-start")
        .ok_or("the client exited")?;
    if reply["ok"] == serde_json::Value::Bool(true) {
        Ok(())
    } else {
        Err(format!(
            "the cluster did not take a first append within 30 s: {reply}"
        ))
    }
}

/// After healing: one more append through the cluster, then every
/// member's log (`(id, client address)`) until it reaches that append (or
/// 60 s pass). Members that did not reach it are findings.
fn settle_and_read(
    exe: &std::path::Path,
    members: &[(u64, std::net::SocketAddr)],
) -> (Vec<ReplicaLog>, Vec<String>) {
    let list: Vec<String> = members.iter().map(|(_, addr)| addr.to_string()).collect();
    let barrier = LineClient::start(
        exe,
        &[
            format!("--cluster={}", list.join(",")),
            "--timeout=30".into(),
        ],
    )
    .ok()
    .and_then(|mut client| client.call("append chaos-end"))
    .and_then(|reply| reply["index"].as_u64());
    let mut findings = Vec::new();
    if barrier.is_none() {
        findings.push("the healed cluster did not take an append within 30 s".to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut logs = Vec::new();
    for &(node, addr) in members {
        let log = loop {
            let log = read_log(exe, node, addr);
            let reached = match (&log, barrier) {
                (Some(log), Some(b)) => log.entries.last().is_some_and(|(index, _)| *index >= b),
                _ => false,
            };
            if reached || Instant::now() >= deadline {
                break log;
            }
            sleep(Duration::from_millis(200));
        };
        match log {
            Some(log) => {
                if let Some(b) =
                    barrier.filter(|b| log.entries.last().is_none_or(|(index, _)| index < b))
                {
                    findings.push(format!(
                        "node {node} did not catch up to index {b} within 60 s of healing"
                    ));
                }
                logs.push(log);
            }
            None => findings.push(format!(
                "node {node} did not answer a log read after healing"
            )),
        }
    }
    (logs, findings)
}
