//! `synod bench`: the load generator, against a running cluster or a local
//! one it starts itself.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use synod_bench::loadgen::{run_load, validate_workload, LoadOptions, LoadReport, Progress};
use synod_bench::local::{Layout, LocalCluster};
use synod_bench::machine::{measure_floor, Floor};

use crate::node_cmd::Fsync;
use cost::{CpuPerCommand, CpuWindow};
use stages::{StageReport, StageWindow};

mod cost;
mod disrupt;
mod stages;

/// How long each part of the machine's floor is measured.
const FLOOR_TIME: Duration = Duration::from_millis(500);

/// Arguments of `synod bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Start a local cluster of this many replicas on loopback.
    #[arg(long, conflicts_with = "cluster")]
    local: Option<u64>,
    /// File holding the nodes' client secret, for nodes started with
    /// `--client-secret-file` (with `--local`, the local nodes are started
    /// with it too).
    #[arg(long)]
    client_secret_file: Option<std::path::PathBuf>,
    /// Client addresses of a running cluster, comma-separated.
    #[cfg_attr(
        not(feature = "etcd"),
        arg(
            long,
            value_delimiter = ',',
            required_unless_present = "local",
            value_parser = crate::address::resolve
        )
    )]
    #[cfg_attr(
        feature = "etcd",
        arg(
            long,
            value_delimiter = ',',
            required_unless_present_any = ["local", "etcd"],
            value_parser = crate::address::resolve
        )
    )]
    cluster: Vec<SocketAddr>,
    /// Drive an etcd cluster instead (client URLs, comma-separated) with the
    /// same closed-loop workload, for bench/compare-etcd.sh.
    #[cfg(feature = "etcd")]
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["local", "cluster", "rate", "failover"])]
    etcd: Vec<String>,
    /// Commands outstanding at once (closed loop; the cap in open loop).
    #[arg(long, default_value_t = 256)]
    inflight: usize,
    /// Open loop: commands per second, evenly spaced (or see --poisson).
    /// Latency counts from each command's intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop with Poisson arrivals: exponential gaps of mean 1/rate.
    #[arg(long, requires = "rate")]
    poisson: bool,
    /// Bytes per command.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Measured seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds first.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    warmup: u64,
    /// Connections from each client thread to each node.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Client threads, each its own executor with its own connections and
    /// an equal share of --inflight (or of --rate).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// The first group written.
    #[arg(long, default_value_t = 0)]
    group: u32,
    /// Groups written, from --group on, commands spread over them in turn
    /// (with --local, the cluster hosts this many groups).
    #[arg(long, default_value_t = 1)]
    groups: u32,
    /// With --local: `off` starts the replicas without the WAL's fdatasync.
    /// UNSAFE (acknowledged commands may be only in device caches), and
    /// every output says so; for measuring what fsync costs.
    #[arg(long, value_enum, default_value = "on", requires = "local")]
    fsync: Fsync,
    /// With --local: start the replicas with `--encrypt-peers`.
    #[arg(long, requires = "local")]
    encrypt_peers: bool,
    /// Commands per request (closed loop): each is its own command with its
    /// own sequence number, counted once, applied exactly once.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Kill the leader this many times (SIGKILL, evenly spaced over the
    /// measured window; each victim restarts a second later) and report
    /// every outage. Needs --local.
    #[arg(long, default_value_t = 0, requires = "local")]
    failover: u32,
    /// Hand leadership from the leader to the next node this many times
    /// (`synod leader transfer`, evenly spaced over the measured window)
    /// and report the pause each caused. Needs --local.
    #[arg(
        long,
        default_value_t = 0,
        requires = "local",
        conflicts_with = "failover"
    )]
    transfers: u32,
    /// With --local: replace every node, one at a time and evenly spaced
    /// over the measured window, by a new node at a new address (ids N+1
    /// on): it joins (`synod node --join`), is added as a voter in every
    /// group, the old node is removed and killed for good. Reports the
    /// longest pause in acknowledgements each replacement caused.
    #[arg(
        long,
        requires = "local",
        conflicts_with_all = ["failover", "transfers", "stages"]
    )]
    replace: bool,
    /// With --local: report where a request's time goes at the leader
    /// (queue, its own WAL, the round until chosen and answered), from the
    /// nodes' stage histograms over the measured window.
    #[arg(long, requires = "local", conflicts_with = "failover")]
    stages: bool,
    /// With --local: keep the replicas' data and logs here (default: a
    /// temporary directory, removed at the end).
    #[arg(long, requires = "local")]
    data_dir: Option<std::path::PathBuf>,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `synod bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    #[cfg(feature = "etcd")]
    if !args.etcd.is_empty() {
        return run_etcd(&args);
    }
    let keep = args.data_dir.is_some();
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("synod-bench-{}", std::process::id()))
    });
    if args.groups == 0 || args.group.checked_add(args.groups).is_none() {
        return fail("--groups must be at least 1");
    }
    let leader = Arc::new(AtomicU64::new(0));
    let mut options = LoadOptions {
        cluster: args.cluster.clone(),
        inflight: args.inflight,
        rate: args.rate,
        poisson: args.poisson,
        size: args.size,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        connections: args.connections,
        groups: (args.group..args.group + args.groups).collect(),
        clients: args.clients,
        batch: args.batch,
        leader: leader.clone(),
        secret: None,
    };
    options.secret = match crate::wire::client_secret(args.client_secret_file.clone()) {
        Ok(secret) => secret,
        Err(error) => return fail(&error.to_string()),
    };
    if let Err(message) = validate_workload(&options) {
        return fail(&message);
    }
    // The machine's floor, measured before the load on the disk it uses.
    let floor = match args.local {
        Some(_) => match measure_floor(&data_dir.join("floor"), FLOOR_TIME) {
            Ok(floor) => Some(floor),
            Err(error) => return fail(&format!("measuring the machine's floor: {error}")),
        },
        None => None,
    };
    let mut local = match args.local.map(|n| start_local(n, &args, &data_dir)) {
        Some(Ok(cluster)) => Some(cluster),
        Some(Err(message)) => return fail(&message),
        None => None,
    };
    // The nodes that replace the first ones, their addresses known to the
    // load from the start (it skips those not up yet).
    let spares = match (&local, args.replace) {
        (Some(local), true) => match Layout::loopback(local.client_addrs.len() as u64) {
            Ok(spares) => Some(spares),
            Err(message) => return fail(&message),
        },
        _ => None,
    };
    if let Some(local) = &local {
        options.cluster = local.client_addrs.clone();
        options
            .cluster
            .extend(spares.iter().flat_map(|s| s.client.iter().copied()));
    }
    let total = args.warmup + args.duration;
    let bar = progress_bar(total, args.json);
    // Nodes restarted by --failover or replaced change processes: their CPU
    // is not summed.
    let pids = match &local {
        Some(cluster) if args.failover == 0 && !args.replace => (1..=options.cluster.len())
            .filter_map(|id| cluster.pid(id))
            .collect(),
        _ => Vec::new(),
    };
    let window = Arc::new(CpuWindow::new(pids));
    let metrics = match &local {
        Some(cluster) if args.stages => cluster.metrics_addrs.clone(),
        _ => Vec::new(),
    };
    let stage_window = Arc::new(StageWindow::new(metrics));
    let shown = progress_callback(bar.clone());
    let (sampled, scraped) = (window.clone(), stage_window.clone());
    let callback: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(move |p: Progress| {
        sampled.observe(&p);
        scraped.observe(&p);
        shown(p);
    });
    let secret = options.secret.clone();
    let load = std::thread::spawn(move || run_load(options, callback));
    let disruptions = match local.as_mut() {
        Some(cluster) if args.failover > 0 => disrupt::kill_leaders(cluster, &leader, &args, &bar),
        Some(cluster) if args.transfers > 0 => {
            let reach = (cluster.client_addrs.clone(), args.group, secret);
            disrupt::transfer_leaders(reach, &leader, &args, &bar)
        }
        Some(cluster) if args.replace => {
            let spares = spares.as_ref().expect("laid out with --replace");
            disrupt::replace_each(cluster, spares, secret, &args, &bar)
        }
        _ => Vec::new(),
    };
    let report = load
        .join()
        .unwrap_or_else(|_| Err("the load generator panicked".into()));
    bar.finish_and_clear();
    if let Ok(report) = &report {
        disrupt::print_outages(report, &disruptions, args.json);
    }
    drop(local);
    if args.local.is_some() && !keep {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    let cpu = report
        .as_ref()
        .map(|r| window.per_command(r))
        .unwrap_or_default();
    let stages = args.stages.then(|| stage_window.figures());
    show(
        report,
        &args,
        "synod",
        "no command was acknowledged in the measured window",
        (cpu, floor, stages),
    )
}

/// Prints a run's results as a table or JSON; an empty run is a failure.
fn show(
    report: Result<LoadReport, String>,
    args: &BenchArgs,
    system: &str,
    empty: &str,
    (cpu, floor, stages): (CpuPerCommand, Option<Floor>, Option<StageReport>),
) -> ExitCode {
    match report {
        Ok(report) if report.commands == 0 => fail(empty),
        Ok(report) if args.json => {
            let mut out = to_json(&report, args, system);
            let p50 = report.latency_us[0];
            if let (Some(out), Value::Object(cost)) =
                (out.as_object_mut(), cost::json(&cpu, floor.as_ref(), p50))
            {
                out.extend(cost);
            }
            if let (Some(out), Some(stages)) = (out.as_object_mut(), &stages) {
                out.insert("stages".into(), stages::json(stages));
            }
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print_table(&report, args, system, &cpu, floor.as_ref());
            if let Some(stages) = &stages {
                print_rows(stages::rows(stages));
            }
            ExitCode::SUCCESS
        }
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("synod bench: {message}");
    ExitCode::FAILURE
}

fn start_local(
    nodes: u64,
    args: &BenchArgs,
    data_dir: &std::path::Path,
) -> Result<LocalCluster, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let groups = args.group + args.groups;
    let mut extra = match args.fsync {
        Fsync::On => vec![],
        Fsync::Off => vec!["--fsync".to_string(), "off".to_string()],
    };
    if args.encrypt_peers {
        extra.push("--encrypt-peers".to_string());
    }
    if let Some(path) = &args.client_secret_file {
        extra.push("--client-secret-file".to_string());
        extra.push(path.display().to_string());
    }
    let mut layout = Layout::loopback(nodes)?;
    if args.stages {
        layout = layout.with_metrics()?;
    }
    let cluster = LocalCluster::start_laid_out(&exe, &layout, groups, data_dir, &extra)?;
    eprintln!(
        "started {nodes} local replicas of {groups} group(s){} (data and logs in {})",
        if args.fsync == Fsync::Off {
            ", UNSAFE: fsync off"
        } else {
            ""
        },
        data_dir.display()
    );
    // Let them elect a leader before the clock starts.
    std::thread::sleep(Duration::from_millis(500));
    Ok(cluster)
}

fn progress_bar(seconds: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(seconds * 4);
    let style = ProgressStyle::with_template("{bar:40} {elapsed:>4} / {len_secs}  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "len_secs",
            move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{seconds}s");
            },
        );
    bar.set_style(style);
    bar
}

fn progress_callback(bar: ProgressBar) -> Arc<dyn Fn(Progress) + Send + Sync> {
    let last = Mutex::new((Duration::ZERO, 0u64));
    Arc::new(move |p: Progress| {
        let mut last = last.lock().expect("progress lock");
        let dt = (p.elapsed - last.0).as_secs_f64().max(1e-3);
        let rate = (p.acked - last.1) as f64 / dt;
        *last = (p.elapsed, p.acked);
        let phase = if p.measuring {
            "measuring"
        } else {
            "warming up"
        };
        bar.set_position((p.elapsed.as_millis() / 250) as u64);
        bar.set_message(format!("{phase}  {rate:>10.0} commands/s"));
    })
}

fn print_table(
    report: &LoadReport,
    args: &BenchArgs,
    system: &str,
    cpu: &CpuPerCommand,
    floor: Option<&Floor>,
) {
    let mode = match args.rate {
        Some(rate) if args.poisson => format!("open loop, Poisson arrivals, {rate} commands/s"),
        Some(rate) => format!("open loop, {rate} commands/s"),
        None if args.batch > 1 => format!(
            "closed loop, {} requests of {} commands in flight",
            args.inflight, args.batch
        ),
        None => format!("closed loop, {} in flight", args.inflight),
    };
    let [p50, p90, p99, p999, max] = report.latency_us;
    let mut rows = vec![
        ("system", system.to_string()),
        ("mode", mode),
        ("command size", format!("{} B", report.size)),
        ("fsync", fsync_label(args).to_string()),
        ("peer frames", peer_frames_label(args).to_string()),
        (
            "clients / groups",
            format!("{} / {}", args.clients, args.groups),
        ),
        ("commands acknowledged", report.commands.to_string()),
        ("throughput", format!("{:.0} commands/s", report.per_sec())),
        ("payload", format!("{:.2} MB/s", report.mb_per_sec())),
        ("latency p50", format!("{p50} µs")),
        ("latency p90", format!("{p90} µs")),
        ("latency p99", format!("{p99} µs")),
        ("latency p99.9", format!("{p999} µs")),
        ("latency max", format!("{max} µs")),
        (
            "mean batch",
            report
                .commands_per_slot
                .map_or("unknown".into(), |b| format!("{b:.1} commands per slot")),
        ),
        (
            "elections seen",
            report.elections.map_or("unknown".into(), |n| n.to_string()),
        ),
        ("leaders seen", report.leaders_seen.to_string()),
        (
            "redirects / errors",
            format!("{} / {}", report.redirects, report.errors),
        ),
    ];
    rows.extend(cost::rows(cpu, floor, p50));
    print_rows(rows);
}

/// Rows as a two-column table.
fn print_rows<N: std::fmt::Display>(rows: Vec<(N, String)>) {
    println!(
        "+------------------------+------------------------------------------------------------+"
    );
    for (name, value) in rows {
        println!("| {name:<22} | {value:<58} |");
    }
    println!(
        "+------------------------+------------------------------------------------------------+"
    );
}

/// How the replicas' frames travel, when this run started them.
fn peer_frames_label(args: &BenchArgs) -> &'static str {
    match (args.encrypt_peers, args.local.is_some()) {
        (true, _) => "authenticated, encrypted",
        (false, true) => "authenticated",
        (false, false) => "as the cluster is set",
    }
}

/// What a run's output says about fsync; off is marked unsafe everywhere.
fn fsync_label(args: &BenchArgs) -> &'static str {
    match (args.fsync, args.local.is_some()) {
        (Fsync::Off, _) => "OFF: UNSAFE, acknowledged commands may be lost in a power cut",
        (Fsync::On, true) => "on (every acknowledged command is on a majority of disks)",
        (Fsync::On, false) => "as the nodes were started (on unless given --fsync off)",
    }
}

fn to_json(report: &LoadReport, args: &BenchArgs, system: &str) -> serde_json::Value {
    let [p50, p90, p99, p999, max] = report.latency_us;
    json!({
        "system": system, "inflight": args.inflight, "batch": args.batch, "rate": args.rate, "poisson": args.poisson, "size": report.size, "fsync": fsync_label(args), "peer_frames": peer_frames_label(args),
        "clients": args.clients, "groups": args.groups,
        "seconds": report.seconds, "commands": report.commands,
        "commands_per_sec": report.per_sec(), "mb_per_sec": report.mb_per_sec(),
        "latency_us": {"p50": p50, "p90": p90, "p99": p99, "p99_9": p999, "max": max},
        "commands_per_slot": report.commands_per_slot, "elections": report.elections,
        "leaders_seen": report.leaders_seen, "redirects": report.redirects, "errors": report.errors,
    })
}

/// `synod bench --etcd`: the same closed loop against etcd.
#[cfg(feature = "etcd")]
fn run_etcd(args: &BenchArgs) -> ExitCode {
    use synod_bench::etcd::{run_etcd_load, EtcdOptions};
    let options = EtcdOptions {
        endpoints: args.etcd.clone(),
        inflight: args.inflight,
        size: args.size,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
    };
    let bar = progress_bar(args.warmup + args.duration, args.json);
    let report = run_etcd_load(options, progress_callback(bar.clone()));
    bar.finish_and_clear();
    show(
        report,
        args,
        "etcd",
        "etcd acknowledged no put in the measured window",
        Default::default(),
    )
}
