//! `synod node`: runs one replica (all of its groups).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use synod_engine::protocol::NodeId;
use synod_engine::runtime::node::{run_node, NodeOptions};

/// glommio registers this much I/O memory per executor; memlock-limited
/// machines (8 MiB here) fit it with room for the WAL's writes.
pub const IO_MEMORY_BYTES: usize = 4 << 20;

/// Arguments of `synod node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// This node's id (a positive integer, listed in --peers).
    #[arg(long)]
    pub id: u64,
    /// Address peers connect to.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address clients connect to.
    #[arg(long)]
    pub client_listen: SocketAddr,
    /// Every member as ID=HOST:PORT, comma-separated, this node included.
    #[arg(long, value_parser = parse_peers)]
    pub peers: Peers,
    /// Directory for this node's write-ahead logs.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// File holding the shared cluster secret (at least 16 bytes).
    #[arg(long, required_unless_present = "insecure")]
    pub secret_file: Option<PathBuf>,
    /// Run without a secret: any process on the network can join.
    #[arg(long)]
    pub insecure: bool,
    /// Executors to run (one per core); only 1 is supported so far.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Independent Multi-Paxos groups (log shards) this node hosts.
    #[arg(long, default_value_t = 1)]
    pub groups: u32,
    /// Peers from another cluster id are refused.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Length of a protocol tick, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub tick_ms: u64,
}

/// `--peers` parsed.
#[derive(Clone, Debug)]
pub struct Peers(pub Vec<(NodeId, SocketAddr)>);

fn parse_peers(text: &str) -> Result<Peers, String> {
    let mut peers = Vec::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` is not a node id"))?;
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        let addr: SocketAddr = addr.trim().parse().map_err(|e| format!("`{addr}`: {e}"))?;
        peers.push((NodeId(id), addr));
    }
    if peers.is_empty() {
        return Err("no peers".into());
    }
    Ok(Peers(peers))
}

/// Runs `synod node`.
pub fn run(args: NodeArgs) -> ExitCode {
    match options(args) {
        Ok(options) => match run_node(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "node stopped");
                eprintln!("synod node: {error}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("synod node: {message}");
            ExitCode::from(2)
        }
    }
}

fn options(args: NodeArgs) -> Result<NodeOptions, String> {
    if args.cores != 1 {
        return Err("--cores above 1 is not supported yet; run one group per node process".into());
    }
    if !args.peers.0.iter().any(|(id, _)| id.0 == args.id) {
        return Err(format!("--id {} is not listed in --peers", args.id));
    }
    if args.groups == 0 || args.groups > 1024 {
        return Err("--groups must be 1 to 1024".into());
    }
    if args.tick_ms == 0 {
        return Err("--tick-ms must be positive".into());
    }
    let secret = match (&args.secret_file, args.insecure) {
        (Some(path), _) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("--secret-file {}: {e}", path.display()))?;
            let secret = trim_newline(bytes);
            if secret.len() < 16 {
                return Err(format!(
                    "--secret-file {}: the secret must be at least 16 bytes",
                    path.display()
                ));
            }
            Some(secret)
        }
        (None, true) => None,
        (None, false) => {
            return Err("no --secret-file given; pass --insecure to run without one".into())
        }
    };
    Ok(NodeOptions {
        id: NodeId(args.id),
        listen: args.listen,
        client_listen: args.client_listen,
        peers: args.peers.0,
        data_dir: args.data_dir,
        groups: args.groups,
        secret,
        cluster_id: args.cluster_id,
        tick: Duration::from_millis(args.tick_ms),
        io_memory_bytes: IO_MEMORY_BYTES,
    })
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}
