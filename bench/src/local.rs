//! A local cluster of `synod node` processes on loopback, for `synod
//! cluster` and `synod bench --local N`.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;

/// Running replicas; they are killed when this is dropped, unless
/// [`LocalCluster::stop`] stopped them first.
pub struct LocalCluster {
    exe: PathBuf,
    /// Each node's `synod node` arguments, to restart it the same way.
    args: Vec<Vec<String>>,
    children: Vec<Option<Child>>,
    /// Client addresses, in node id order.
    pub client_addrs: Vec<SocketAddr>,
    /// Each node's log file, in node id order.
    pub logs: Vec<PathBuf>,
    /// Where each node serves its metrics (none unless the layout says).
    pub metrics_addrs: Vec<SocketAddr>,
}

impl LocalCluster {
    /// Starts `nodes` replicas of `groups` groups, running `exe node ...`,
    /// with a fresh random secret, data and logs under `data_dir`.
    pub fn start(
        exe: &Path,
        nodes: u64,
        groups: u32,
        data_dir: &Path,
    ) -> Result<LocalCluster, String> {
        LocalCluster::start_laid_out(exe, &Layout::loopback(nodes)?, groups, data_dir, &[])
    }

    /// Starts the nodes of `layout` like [`LocalCluster::start`], each told
    /// its own view of the peers' addresses, with `extra` flags appended.
    pub fn start_laid_out(
        exe: &Path,
        layout: &Layout,
        groups: u32,
        data_dir: &Path,
        extra: &[String],
    ) -> Result<LocalCluster, String> {
        let nodes = layout.listen.len();
        if !(1..=9).contains(&nodes) {
            return Err("a local cluster has 1 to 9 nodes".into());
        }
        fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        let secret_path = data_dir.join("secret");
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        write_secret(&secret_path, hex.as_bytes())
            .map_err(|e| format!("{}: {e}", secret_path.display()))?;
        let mut cluster = LocalCluster {
            exe: exe.to_path_buf(),
            args: Vec::new(),
            children: Vec::new(),
            client_addrs: layout.client.clone(),
            logs: Vec::new(),
            metrics_addrs: layout.metrics.clone(),
        };
        for i in 0..nodes {
            let id = i + 1;
            let peers: Vec<String> = layout.dialed[i]
                .iter()
                .enumerate()
                .map(|(j, a)| format!("{}={a}", j + 1))
                .collect();
            let mut args = vec![
                "node".to_string(),
                format!("--id={id}"),
                format!("--listen={}", layout.listen[i]),
                format!("--client-listen={}", layout.client[i]),
                format!("--peers={}", peers.join(",")),
                format!("--data-dir={}", node_dir(data_dir, id).display()),
                format!("--secret-file={}", secret_path.display()),
                format!("--groups={groups}"),
            ];
            if let Some(metrics) = layout.metrics.get(i) {
                args.push(format!("--metrics={metrics}"));
            }
            args.extend_from_slice(extra);
            cluster.args.push(args);
            cluster.logs.push(data_dir.join(format!("node-{id}.log")));
            cluster.children.push(None);
            cluster.restart(id)?;
        }
        Ok(cluster)
    }

    /// Starts a new node, id one above the last, listening for peers on
    /// `listen` and for clients on `client`, that joins the running cluster
    /// through the client ports `via` (`synod node --join`) with node 1's
    /// other settings; returns its id. It takes part once a leader adds it.
    pub fn join(
        &mut self,
        listen: SocketAddr,
        client: SocketAddr,
        via: &[SocketAddr],
    ) -> Result<usize, String> {
        let id = self.args.len() + 1;
        let via: Vec<String> = via.iter().map(ToString::to_string).collect();
        let first = self.args.first().ok_or("the cluster has no node to copy")?;
        let mut args = Vec::new();
        for arg in first {
            let (flag, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
            args.push(match flag {
                "--id" => format!("--id={id}"),
                "--listen" => format!("--listen={listen}"),
                "--client-listen" => format!("--client-listen={client}"),
                "--peers" => format!("--join={}", via.join(",")),
                "--data-dir" => {
                    let parent = Path::new(value).parent().unwrap_or(Path::new("."));
                    format!("--data-dir={}", node_dir(parent, id).display())
                }
                // Its own metrics port is not in the layout.
                "--metrics" => continue,
                _ => arg.clone(),
            });
        }
        let log = self.logs[0].with_file_name(format!("node-{id}.log"));
        self.args.push(args);
        self.logs.push(log);
        self.children.push(None);
        self.client_addrs.push(client);
        self.restart(id)?;
        Ok(id)
    }

    /// Starts node `id` (1-based) again with the same arguments and data.
    pub fn restart(&mut self, id: usize) -> Result<(), String> {
        self.restart_with(id, &[])
    }

    /// Starts node `id` (1-based) again with `extra` flags added this once.
    pub fn restart_with(&mut self, id: usize, extra: &[&str]) -> Result<(), String> {
        let i = id - 1;
        let log_path = &self.logs[i];
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let stderr = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
            .args(&self.args[i])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting node {id}: {e}"))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Kills node `id` (1-based) with SIGKILL: no shutdown path runs.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children.get_mut(id - 1).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops every node through its clean path (SIGTERM: it stops its
    /// groups, says so in its log and exits 0), waiting up to `grace` for
    /// all of them; one still running then is killed. Each node that was
    /// running, with how it ended, in id order.
    pub fn stop(&mut self, grace: Duration) -> Vec<(usize, Stopped)> {
        for child in self.children.iter().flatten() {
            // SAFETY: kill(2) on a child process of ours; no memory involved.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        let mut stopped = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            let Some(mut child) = slot.take() else {
                continue;
            };
            let ended = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Stopped::Exited(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Stopped::Killed;
                    }
                    Err(error) => break Stopped::Lost(error),
                }
            };
            stopped.push((i + 1, ended));
        }
        stopped
    }

    /// The process id of node `id` (1-based), if it is running.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.children.get(id - 1)?.as_ref().map(Child::id)
    }

    /// Whether node `id` (1-based) has a process (running or stopped).
    pub fn is_up(&self, id: usize) -> bool {
        self.pid(id).is_some()
    }

    /// Node `id`'s exit status if it has exited; it is then no longer up.
    pub fn reap(&mut self, id: usize) -> Option<std::process::ExitStatus> {
        let slot = self.children.get_mut(id - 1)?;
        let status = slot.as_mut()?.try_wait().ok().flatten()?;
        *slot = None;
        Some(status)
    }

    /// The first running node found exited, with its status.
    pub fn exited(&mut self) -> Option<(usize, std::process::ExitStatus)> {
        self.children.iter_mut().enumerate().find_map(|(i, child)| {
            let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
            Some((i + 1, status))
        })
    }
}

/// How a node ended when its cluster was stopped.
#[derive(Debug)]
pub enum Stopped {
    /// It exited by itself, with this status.
    Exited(ExitStatus),
    /// It was still running after the grace period, and was killed.
    Killed,
    /// Waiting for it failed.
    Lost(std::io::Error),
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for id in 1..=self.children.len() {
            self.kill(id);
        }
    }
}

/// Where the nodes of a local cluster listen, and which address each one
/// dials for each peer (a fault proxy may stand between them).
#[derive(Clone, Debug)]
pub struct Layout {
    /// Peer listen address of each node, in node id order.
    pub listen: Vec<SocketAddr>,
    /// Client listen address of each node.
    pub client: Vec<SocketAddr>,
    /// `dialed[i][j]`: the address node `i + 1` is told for node `j + 1`.
    pub dialed: Vec<Vec<SocketAddr>>,
    /// Where each node serves its metrics (empty: nowhere).
    pub metrics: Vec<SocketAddr>,
}

impl Layout {
    /// Free loopback ports for `nodes` nodes that dial each other directly.
    pub fn loopback(nodes: u64) -> Result<Layout, String> {
        let listen = free_ports(nodes)?;
        let client = free_ports(nodes)?;
        let dialed = vec![listen.clone(); listen.len()];
        Ok(Layout {
            listen,
            client,
            dialed,
            metrics: Vec::new(),
        })
    }

    /// This layout with each node serving its metrics on a free port.
    pub fn with_metrics(self) -> Result<Layout, String> {
        let metrics = free_ports(self.listen.len() as u64)?;
        Ok(Layout { metrics, ..self })
    }
}

impl Layout {
    /// Like [`Layout::loopback`], but with ports below the kernel's
    /// ephemeral range, so that a node restarted many times never finds
    /// its port taken by some outgoing connection's ephemeral port.
    pub fn loopback_stable(nodes: u64) -> Result<Layout, String> {
        let ports = stable_ports(2 * nodes)?;
        let (listen, client) = ports.split_at(nodes as usize);
        Ok(Layout {
            listen: listen.to_vec(),
            client: client.to_vec(),
            dialed: vec![listen.to_vec(); nodes as usize],
            metrics: Vec::new(),
        })
    }
}

/// Free loopback ports from 10000 up to the ephemeral range's start,
/// from a random place on.
fn stable_ports(n: u64) -> Result<Vec<SocketAddr>, String> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_min: u16 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_min.max(10_001));
    let start = low + (rand::random::<u16>() % (high - low));
    let mut found = Vec::new();
    for offset in 0..(high - low) {
        let port = low + (start - low + offset) % (high - low);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            found.push(listener.local_addr().map_err(|e| e.to_string())?);
            if found.len() as u64 == n {
                return Ok(found);
            }
        }
    }
    Err("no free loopback ports below the ephemeral range".into())
}

/// The data directory of node `id` under a cluster's `data_dir`.
pub fn node_dir(data_dir: &Path, id: usize) -> PathBuf {
    data_dir.join(format!("node-{id}"))
}

/// Free loopback ports (the listeners are closed again; a race with another
/// process is possible but harmless on a test machine: the node then fails
/// to bind and says so).
fn free_ports(n: u64) -> Result<Vec<SocketAddr>, String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    listeners
        .iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect()
}

/// Writes a secret readable by its owner only (0600 from its creation, so
/// it is never readable by others even for a moment).
fn write_secret(path: &Path, secret: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // A directory used before holds the previous run's secret.
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_is_readable_by_its_owner_only_and_replaces_the_last() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        super::write_secret(&path, b"one").unwrap();
        super::write_secret(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
