//! `synod cluster`: a local cluster of `synod node` processes on loopback.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use synod_bench::local::{LocalCluster, Stopped};

/// How long the nodes get to stop cleanly before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `synod cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Replicas to run.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Directory for the nodes' data, secret and logs (default: a new
    /// directory under the system's temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Groups (log shards) per node.
    #[arg(long, default_value_t = 1)]
    pub groups: u32,
}

/// Runs `synod cluster` until Ctrl-C or SIGTERM (or until a node exits),
/// then stops every node cleanly.
pub fn run(args: ClusterArgs) -> ExitCode {
    let data_dir = args.data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("synod-cluster-{}", std::process::id()))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(error) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("synod cluster: cannot handle Ctrl-C: {error}");
        return ExitCode::FAILURE;
    }
    let started = std::env::current_exe()
        .map_err(|e| e.to_string())
        .and_then(|exe| LocalCluster::start(&exe, args.nodes, args.groups, &data_dir));
    let mut cluster = match started {
        Ok(cluster) => cluster,
        Err(message) => {
            eprintln!("synod cluster: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "synod cluster: {} nodes, data in {}",
        args.nodes,
        data_dir.display()
    );
    for (i, (addr, log)) in cluster.client_addrs.iter().zip(&cluster.logs).enumerate() {
        println!("  node {}: clients {addr}, log {}", i + 1, log.display());
    }
    let list: Vec<String> = cluster
        .client_addrs
        .iter()
        .map(ToString::to_string)
        .collect();
    println!("try: synod client --cluster {}", list.join(","));
    println!("Ctrl-C stops the cluster.");
    let mut code = ExitCode::SUCCESS;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some((id, status)) = cluster.exited() {
            cluster.reap(id);
            eprintln!("synod cluster: node {id} exited ({status}); see its log");
            code = ExitCode::FAILURE;
            break;
        }
    }
    println!("stopping");
    // Ctrl-C in a terminal reaches the nodes too; a signal to this process
    // alone does not. Either way each node gets SIGTERM and is waited for,
    // so every one of them stops its groups rather than being killed.
    for (id, stopped) in cluster.stop(STOP_GRACE) {
        match stopped {
            Stopped::Exited(status) if status.success() => {}
            Stopped::Exited(status) => {
                eprintln!("synod cluster: node {id} exited ({status}); see its log");
                code = ExitCode::FAILURE;
            }
            Stopped::Killed => {
                eprintln!(
                    "synod cluster: node {id} still running {STOP_GRACE:?} after SIGTERM; killed"
                );
                code = ExitCode::FAILURE;
            }
            Stopped::Lost(error) => {
                eprintln!("synod cluster: node {id}: waiting for it: {error}");
                code = ExitCode::FAILURE;
            }
        }
    }
    println!("stopped");
    code
}
