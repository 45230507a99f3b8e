//! `synod cluster`: a local cluster of `synod node` processes on loopback.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rand::RngCore;

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

/// A running local cluster: its children are killed when it is dropped.
pub struct LocalCluster {
    children: Vec<Child>,
    /// Client addresses, in node id order.
    pub client_addrs: Vec<SocketAddr>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts `nodes` replicas as child processes of this binary.
pub fn start_local(nodes: u64, groups: u32, data_dir: &Path) -> Result<LocalCluster, String> {
    if !(1..=9).contains(&nodes) {
        return Err("--nodes must be 1 to 9".into());
    }
    fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret_path = data_dir.join("secret");
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(&secret_path, hex).map_err(|e| format!("{}: {e}", secret_path.display()))?;
    let peer_addrs: Vec<SocketAddr> = (0..nodes)
        .map(|_| free_port())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let client_addrs: Vec<SocketAddr> = (0..nodes)
        .map(|_| free_port())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let peers: Vec<String> = peer_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cluster = LocalCluster {
        children: Vec::new(),
        client_addrs: client_addrs.clone(),
    };
    for i in 0..nodes as usize {
        let log_path = data_dir.join(format!("node-{}.log", i + 1));
        let log =
            fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("node")
            .args(["--id", &(i + 1).to_string()])
            .args(["--listen", &peer_addrs[i].to_string()])
            .args(["--client-listen", &client_addrs[i].to_string()])
            .args(["--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(data_dir.join(format!("node-{}", i + 1)))
            .arg("--secret-file")
            .arg(&secret_path)
            .args(["--groups", &groups.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting node {}: {e}", i + 1))?;
        cluster.children.push(child);
    }
    Ok(cluster)
}

/// Runs `synod cluster` until Ctrl-C.
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
    let mut cluster = match start_local(args.nodes, args.groups, &data_dir) {
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
    for (i, addr) in cluster.client_addrs.iter().enumerate() {
        println!(
            "  node {}: clients {addr}, log {}",
            i + 1,
            data_dir.join(format!("node-{}.log", i + 1)).display()
        );
    }
    let list: Vec<String> = cluster
        .client_addrs
        .iter()
        .map(ToString::to_string)
        .collect();
    println!("try: synod client --cluster {}", list.join(","));
    println!("Ctrl-C stops the cluster.");
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        for (i, child) in cluster.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!(
                    "synod cluster: node {} exited ({status}); see its log",
                    i + 1
                );
                stop.store(true, Ordering::SeqCst);
            }
        }
    }
    println!("stopping");
    ExitCode::SUCCESS
}
