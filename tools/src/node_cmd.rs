//! `synod node`: runs one replica (all of its groups).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use synod_engine::protocol::NodeId;
use synod_engine::runtime::node::{NodeOptions, PeerAddr};
use synod_engine::runtime::snapshot::SnapshotPolicy;

mod error;
mod join;
mod memlock;

pub use error::{PeersError, SettingsError};

use crate::secret_cmd::read_secret;

/// glommio registers I/O memory per executor and the kernel pins it against
/// `RLIMIT_MEMLOCK` (8 MiB here): a node's executors share this much.
pub const IO_MEMORY_NODE_BYTES: usize = 6 << 20;
/// Per executor at most (room for the WAL's 256 KiB writes many times over)
/// and at least (one write plus recovery reads); past 6 cores the node needs
/// a memlock limit above 8 MiB.
pub const IO_MEMORY_CORE_BYTES: (usize, usize) = (1 << 20, 4 << 20);

/// The I/O memory each of `cores` executors registers.
pub fn io_memory_per_core(cores: u32) -> usize {
    let (least, most) = IO_MEMORY_CORE_BYTES;
    (IO_MEMORY_NODE_BYTES / cores.max(1) as usize).clamp(least, most)
}

/// Arguments of `synod node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A TOML file with any of the settings below (flags given as well win;
    /// addresses are HOST:PORT, as in the flags):
    /// id, listen, client_listen, peers = { "1" = "HOST:PORT", ... },
    /// data_dir, secret_file, insecure, cores, pin, groups, cluster_id, tick_ms,
    /// snapshot_every, snapshot_keep, snapshot_write_pace, snapshot_write_floor,
    /// metrics, fsync ("on" or "off"), rejoin.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer, listed in --peers).
    #[arg(long)]
    pub id: Option<u64>,
    /// Address peers connect to (a name is resolved at start: the node
    /// binds it).
    #[arg(long)]
    pub listen: Option<String>,
    /// Address clients connect to.
    #[arg(long, value_parser = crate::address::resolve)]
    pub client_listen: Option<SocketAddr>,
    /// Every member as ID=HOST:PORT, comma-separated, this node included.
    /// A host name is looked up each time the node dials that peer, so a
    /// peer's name need not resolve yet when the node starts.
    #[arg(long, value_parser = parse_peers, conflicts_with = "join")]
    pub peers: Option<Peers>,
    /// Join a running cluster instead of naming --peers: the client
    /// addresses of some of its nodes, comma-separated. The node learns
    /// the members from them and waits, in no group's quorum, until
    /// `synod member add` adds it (with --client-secret-file if the
    /// cluster's client ports need one).
    #[arg(long, value_delimiter = ',', value_parser = crate::address::resolve)]
    pub join: Option<Vec<SocketAddr>>,
    /// Directory for this node's write-ahead logs.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File holding the shared cluster secret (at least 16 bytes; refused
    /// if other users can read it: `synod secret generate FILE` makes one).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Run without a secret: any process on the network can join.
    #[arg(long)]
    pub insecure: bool,
    /// File holding the client secret (at least 16 bytes): clients must
    /// prove they know it (`synod client --client-secret-file`). Without
    /// it the client port is open to anyone who reaches it.
    #[arg(long)]
    pub client_secret_file: Option<PathBuf>,
    /// Encrypt what replicas send each other (ChaCha20; frames are
    /// authenticated either way). Every node of the cluster must agree:
    /// a peer that does not is refused at the handshake.
    #[arg(long)]
    pub encrypt_peers: bool,
    /// Executors to run, one per core; group g runs on core g mod cores,
    /// and core i listens for peers on the --listen port plus i [default: 1].
    #[arg(long)]
    pub cores: Option<u32>,
    /// Pin core i's executor to CPU i (leave off when replicas share a machine).
    #[arg(long)]
    pub pin: bool,
    /// Independent Multi-Paxos groups (log shards) this node hosts [default: 1].
    #[arg(long)]
    pub groups: Option<u32>,
    /// Peers from another cluster id are refused [default: 1].
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Length of a protocol tick, in milliseconds [default: 5].
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Snapshot each group every this many applied slots and drop the log
    /// and WAL below; 0 never compacts [default: 10000].
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Slots kept in memory below a snapshot for followers a little behind
    /// [default: 1000].
    #[arg(long)]
    pub snapshot_keep: Option<u64>,
    /// Write each snapshot no faster than this many times the rate commands
    /// were applied since the last one, so it does not crowd out the WAL's
    /// fsyncs on a shared disk; 0 writes at full speed [default: 4].
    #[arg(long)]
    pub snapshot_write_pace: Option<u64>,
    /// The slowest a paced snapshot is written, in bytes per second
    /// [default: 4194304].
    #[arg(long)]
    pub snapshot_write_floor: Option<u64>,
    /// Serve Prometheus metrics (GET /metrics) and GET /health on this address.
    #[arg(long, value_parser = crate::address::resolve)]
    pub metrics: Option<SocketAddr>,
    /// `off` skips the WAL's fdatasync: UNSAFE, acknowledged commands can be
    /// lost in a power cut or kernel crash. For measuring what fsync costs
    /// [default: on].
    #[arg(long)]
    pub fsync: Option<Fsync>,
    /// This node's disk was lost (its data directory is new or empty):
    /// rebuild every group from the peers before voting again. Needs every
    /// other member up. Ignored by a node whose data is intact; never give
    /// it to the nodes of a new cluster (they would all wait). Starting a
    /// node whose disk was lost WITHOUT it can overwrite chosen commands.
    #[arg(long)]
    pub rejoin: bool,
}

/// Whether the WAL fdatasyncs (`--fsync on|off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Every acknowledged command is on a majority of disks.
    On,
    /// UNSAFE: acknowledged commands may be only in device caches.
    Off,
}

/// The `--config` file; every field optional, unknown fields refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: Option<u64>,
    listen: Option<String>,
    client_listen: Option<String>,
    peers: Option<std::collections::BTreeMap<String, String>>,
    data_dir: Option<PathBuf>,
    secret_file: Option<PathBuf>,
    client_secret_file: Option<PathBuf>,
    encrypt_peers: Option<bool>,
    insecure: Option<bool>,
    cores: Option<u32>,
    pin: Option<bool>,
    groups: Option<u32>,
    cluster_id: Option<u64>,
    tick_ms: Option<u64>,
    snapshot_every: Option<u64>,
    snapshot_keep: Option<u64>,
    snapshot_write_pace: Option<u64>,
    snapshot_write_floor: Option<u64>,
    metrics: Option<String>,
    fsync: Option<Fsync>,
    rejoin: Option<bool>,
}

/// Whether the node will run without a secret (flag or config file), so
/// logging can mark every line before the node starts.
pub fn wants_insecure(args: &NodeArgs) -> bool {
    let from_file = || {
        args.config
            .as_deref()
            .and_then(|p| read_file(p).ok())
            .and_then(|f| f.insecure)
    };
    args.insecure || from_file().unwrap_or(false)
}

fn read_file(path: &std::path::Path) -> Result<NodeFile, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| SettingsError::ParseConfig {
        path: path.to_path_buf(),
        source,
    })
}

fn file_peers(peers: std::collections::BTreeMap<String, String>) -> Result<Peers, SettingsError> {
    let text: Vec<String> = peers
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect();
    parse_peers(&text.join(",")).map_err(SettingsError::FilePeers)
}

fn required<T>(flag: Option<T>, file: Option<T>, name: &'static str) -> Result<T, SettingsError> {
    flag.or(file).ok_or(SettingsError::Missing { name })
}

/// `--peers` parsed (names not looked up).
#[derive(Clone, Debug)]
pub struct Peers(pub Vec<(NodeId, PeerAddr)>);

fn parse_peers(text: &str) -> Result<Peers, PeersError> {
    let mut peers = Vec::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| PeersError::NotIdAndAddress(item.to_string()))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| PeersError::NotAnId(id.to_string()))?;
        if id == 0 {
            return Err(PeersError::ReservedId);
        }
        let addr = crate::address::peer(addr).map_err(PeersError::NotAnAddress)?;
        peers.push((NodeId(id), addr));
    }
    if peers.is_empty() {
        return Err(PeersError::Empty);
    }
    Ok(Peers(peers))
}

/// What `synod node` runs: the engine's options and the client port.
#[derive(Debug)]
pub struct NodeSettings {
    /// The node's options.
    pub options: NodeOptions,
    /// Where clients connect.
    pub client_listen: SocketAddr,
}

/// Runs `synod node`.
pub fn run(args: NodeArgs) -> ExitCode {
    match settings(args) {
        Ok(settings) => {
            let options = &settings.options;
            if let Err(error) = memlock::ensure(options.cores, options.io_memory_bytes) {
                tracing::error!(%error, "cannot start");
                crate::logging::say(format_args!("synod node: {error}"));
                return ExitCode::FAILURE;
            }
            start(settings)
        }
        Err(message) => {
            crate::logging::say(format_args!("synod node: {message}"));
            ExitCode::from(2)
        }
    }
}

fn start(settings: NodeSettings) -> ExitCode {
    let open_port = settings.options.client_secret.is_none();
    if open_port && !settings.client_listen.ip().is_loopback() {
        tracing::warn!(
            client_listen = %settings.client_listen,
            "the client port listens beyond loopback without a client secret: anyone who \
             reaches it can write and read (--client-secret-file)"
        );
    }
    match crate::node::run(settings.options, settings.client_listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "node stopped");
            crate::logging::say(format_args!("synod node: {error}"));
            ExitCode::FAILURE
        }
    }
}

fn settings(args: NodeArgs) -> Result<NodeSettings, SettingsError> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => NodeFile::default(),
    };
    let file_peers = file.peers.map(file_peers).transpose()?;
    let id = required(args.id, file.id, "id")?;
    let listen_text = required(args.listen, file.listen, "listen")?;
    let listen = address("listen", &listen_text)?;
    let client_listen = match (args.client_listen, file.client_listen) {
        (Some(addr), _) => addr,
        (None, Some(text)) => address("client_listen", &text)?,
        (None, None) => {
            return Err(SettingsError::Missing {
                name: "client_listen",
            })
        }
    };
    let metrics = match (args.metrics, file.metrics) {
        (Some(addr), _) => Some(addr),
        (None, Some(text)) => Some(address("metrics", &text)?),
        (None, None) => None,
    };
    let client_secret_file = args.client_secret_file.or(file.client_secret_file);
    let client_secret = client_secret_file.map(read_secret).transpose()?;
    let cores = args.cores.or(file.cores).unwrap_or(1);
    let groups = args.groups.or(file.groups).unwrap_or(1);
    let data_dir = required(args.data_dir, file.data_dir, "data_dir")?;
    let mut learned = false;
    let joining = args.join.is_some();
    let peers = match args.join {
        Some(cluster) => {
            let secret = client_secret.clone().map(synod_net::Secret::new);
            let asked = join::Ask {
                cluster,
                groups,
                secret,
            };
            let (peers, newly) = join::peers(asked, id, &listen_text, &data_dir)?;
            learned = newly;
            peers
        }
        None => required(args.peers, file_peers, "peers")?,
    };
    let secret_file = args.secret_file.or(file.secret_file);
    let insecure = args.insecure || file.insecure.unwrap_or(false);
    let cluster_id = args.cluster_id.or(file.cluster_id).unwrap_or(1);
    let tick_ms = args.tick_ms.or(file.tick_ms).unwrap_or(5);
    let defaults = SnapshotPolicy::default();
    let snapshot = SnapshotPolicy {
        every_slots: args
            .snapshot_every
            .or(file.snapshot_every)
            .unwrap_or(defaults.every_slots),
        keep_slots: args
            .snapshot_keep
            .or(file.snapshot_keep)
            .unwrap_or(defaults.keep_slots),
        write_pace: args
            .snapshot_write_pace
            .or(file.snapshot_write_pace)
            .unwrap_or(defaults.write_pace),
        write_floor_bytes_per_sec: args
            .snapshot_write_floor
            .or(file.snapshot_write_floor)
            .unwrap_or(defaults.write_floor_bytes_per_sec),
        ..defaults
    };

    let Some((_, listed)) = peers.0.iter().find(|(peer, _)| peer.0 == id) else {
        return Err(SettingsError::NotAPeer { id });
    };
    check_listed(listen, &listen_text, listed)?;
    if tick_ms == 0 {
        return Err(SettingsError::ZeroTick);
    }
    let secret = match (secret_file, insecure) {
        (Some(path), _) => Some(read_secret(path)?),
        (None, true) => None,
        (None, false) => return Err(SettingsError::NoSecret),
    };
    let options = NodeOptions {
        // The node machine keeps the KV's changes for watches itself.
        commit_history_bytes: 0,
        id: NodeId(id),
        listen,
        peers: peers.0,
        data_dir,
        groups,
        cores,
        pin: args.pin || file.pin.unwrap_or(false),
        secret,
        cluster_id,
        tick: Duration::from_millis(tick_ms),
        io_memory_bytes: io_memory_per_core(cores),
        snapshot,
        metrics,
        fsync: args.fsync.or(file.fsync).unwrap_or(Fsync::On) == Fsync::On,
        rejoin: args.rejoin || file.rejoin.unwrap_or(false),
        client_secret,
        encrypt_peer_frames: args.encrypt_peers || file.encrypt_peers.unwrap_or(false),
        join: joining,
    };
    options.validate()?;
    if learned {
        join::record(&options)?;
    }
    Ok(NodeSettings {
        options,
        client_listen,
    })
}

/// A setting's address, resolved now.
fn address(name: &'static str, text: &str) -> Result<SocketAddr, SettingsError> {
    crate::address::resolve(text).map_err(|source| SettingsError::Address { name, source })
}

/// This node's own entry in the peers against where it listens, when the
/// entry is a name that does not resolve yet (the engine compares resolved
/// addresses otherwise): the two must be written alike, unless the node
/// listens on every interface (0.0.0.0 or ::), which any name may reach.
fn check_listed(listen: SocketAddr, text: &str, listed: &PeerAddr) -> Result<(), SettingsError> {
    if listen.ip().is_unspecified() || listed.ip_addr().is_some() || listed.resolve_all().is_ok() {
        return Ok(());
    }
    if text.trim() == listed.to_string() {
        return Ok(());
    }
    Err(SettingsError::ListedNameUnresolved {
        listen: text.trim().to_string(),
        listed: listed.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_cmd::SecretFileError;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn options_from(flags: &[&str], file: Option<&str>) -> Result<NodeOptions, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec!["synod".to_string()];
        argv.extend(flags.iter().map(ToString::to_string));
        if let Some(text) = file {
            let path = dir.path().join("node.toml");
            std::fs::write(&path, text).unwrap();
            argv.push("--config".into());
            argv.push(path.display().to_string());
        }
        settings(Wrapper::parse_from(argv).node)
            .map(|settings| settings.options)
            .map_err(|error| error.to_string())
    }

    const FILE: &str = r#"
        id = 2
        listen = "127.0.0.1:7002"
        client_listen = "127.0.0.1:8002"
        peers = { "1" = "127.0.0.1:7001", "2" = "127.0.0.1:7002", "3" = "127.0.0.1:7003" }
        data_dir = "/tmp/synod-test-node-2"
        insecure = true
        groups = 4
    "#;

    #[test]
    fn a_config_file_can_replace_the_flags_and_flags_win() {
        let options = options_from(&[], Some(FILE)).unwrap();
        assert_eq!(
            (options.id, options.groups, options.secret.is_none()),
            (NodeId(2), 4, true)
        );
        let options = options_from(&["--groups", "2"], Some(FILE)).unwrap();
        assert_eq!(options.groups, 2);
    }

    #[test]
    fn fsync_is_on_unless_turned_off_by_flag_or_file() {
        assert!(options_from(&[], Some(FILE)).unwrap().fsync);
        assert!(!options_from(&["--fsync", "off"], Some(FILE)).unwrap().fsync);
        let off = format!("{FILE}\nfsync = \"off\"\n");
        assert!(!options_from(&[], Some(&off)).unwrap().fsync);
        assert!(options_from(&["--fsync", "on"], Some(&off)).unwrap().fsync);
        let bad = format!("{FILE}\nfsync = \"maybe\"\n");
        let error = options_from(&[], Some(&bad)).unwrap_err();
        assert!(error.contains("fsync"), "{error}");
    }

    #[test]
    fn bad_settings_name_the_field_and_the_reason() {
        let cases: [(&[&str], Option<&str>, &str); 6] = [
            (&[], Some("id = 1\nbogus = 3\n"), "bogus"),
            (&[], Some("id = \"one\"\n"), "id"),
            (&[], Some(&FILE.replace("id = 2", "")), "missing `id`"),
            (
                &[],
                Some(&FILE.replace("\"2\" = \"127.0.0.1:7002\", ", "")),
                "not listed in peers",
            ),
            (&["--cores", "5"], Some(FILE), "cores must be"),
            (
                &["--snapshot-write-floor", "0"],
                Some(FILE),
                "snapshot_write_floor must be positive",
            ),
        ];
        for (flags, file, expected) in cases {
            let error = options_from(flags, file).unwrap_err();
            assert!(
                error.contains(expected),
                "`{error}` should mention `{expected}`"
            );
        }
    }

    #[test]
    fn a_refused_setting_keeps_its_cause() {
        let missing = FILE.replace("insecure = true", "secret_file = \"/nonexistent/secret\"");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, missing).unwrap();
        let argv = ["synod", "--config", path.to_str().unwrap()];
        let error = settings(Wrapper::parse_from(argv).node).unwrap_err();
        let SettingsError::Secret(SecretFileError::Read { path, source }) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(path, std::path::Path::new("/nonexistent/secret"));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(std::error::Error::source(&error).is_some());
        let error = parse_peers("1=127.0.0.1:7001,2=nowhere").unwrap_err();
        assert!(matches!(error, PeersError::NotAnAddress { .. }), "{error}");
        assert!(std::error::Error::source(&error).is_some());
    }

    /// Host names work in the file as in the flags; a peer's name need not
    /// resolve at start, but this node's own entry must match `listen`.
    #[test]
    fn addresses_in_the_file_may_be_host_names() {
        let named = r#"
            id = 1
            listen = "localhost:7001"
            client_listen = "localhost:8001"
            metrics = "localhost:9001"
            peers = { "1" = "localhost:7001", "2" = "notyet.invalid:7002" }
            data_dir = "/tmp/synod-test-node-1"
            insecure = true
        "#;
        let options = options_from(&[], Some(named)).unwrap();
        assert!(options.listen.ip().is_loopback(), "{options:?}");
        assert_eq!(options.metrics.map(|m| m.port()), Some(9001));
        let names: Vec<String> = options.peers.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(names, ["localhost:7001", "notyet.invalid:7002"]);

        let unresolved_self =
            named.replace("\"1\" = \"localhost:7001\"", "\"1\" = \"me.invalid:7001\"");
        let error = options_from(&[], Some(&unresolved_self)).unwrap_err();
        assert!(error.contains("does not resolve yet"), "{error}");
        let everywhere = ["--listen", "0.0.0.0:7001"];
        options_from(&everywhere, Some(&unresolved_self)).unwrap();
        let elsewhere = named.replace("\"1\" = \"localhost:7001\"", "\"1\" = \"localhost:7005\"");
        let error = options_from(&[], Some(&elsewhere)).unwrap_err();
        assert!(error.contains("the peer list names it at"), "{error}");
        let error = options_from(
            &[],
            Some(&named.replace("localhost:8001", "nowhere.invalid:8001")),
        )
        .unwrap_err();
        assert!(
            error.starts_with("client_listen: `nowhere.invalid:8001` does not resolve"),
            "{error}"
        );
    }

    #[test]
    fn a_node_without_a_secret_refuses_to_start_unless_insecure() {
        let secure = FILE.replace("insecure = true", "");
        let error = options_from(&[], Some(&secure)).unwrap_err();
        assert!(error.contains("--insecure"), "{error}");
    }
}
