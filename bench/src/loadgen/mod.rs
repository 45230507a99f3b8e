//! The load generator behind `synod bench`: closed loop (a fixed number of
//! commands outstanding) or open loop (a fixed arrival rate, latency
//! measured from each command's intended send time so queueing cannot hide:
//! no coordinated omission), latencies in an HdrHistogram.
//!
//! `clients` threads each run a glommio executor with their own connections
//! and their share of the commands in flight (or of the rate); commands are
//! spread over the groups written. The calling thread keeps the clock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use synod_client_proto::{
    append_batch_bytes, ClientOp, ClientRequest, ClientResponse, APPEND_BATCH_MAX,
    KIND_CLIENT_REQUEST,
};
use synod_engine::runtime::node::BATCH_BYTES_MAX;
use synod_net::{Client, ClientConfig};

mod outage;

pub use outage::{outage, Outage};

/// Client threads at most.
pub const CLIENTS_MAX: usize = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Client addresses of the nodes.
    pub cluster: Vec<SocketAddr>,
    /// Closed loop: commands outstanding at once (also the cap in open loop),
    /// over all client threads.
    pub inflight: usize,
    /// Open loop: commands per second over all client threads; `None` is
    /// closed loop.
    pub rate: Option<f64>,
    /// Open loop: Poisson arrivals (exponential gaps, seeded) instead of
    /// evenly spaced ones.
    pub poisson: bool,
    /// Bytes per command.
    pub size: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Connections from each client thread to each node.
    pub connections: usize,
    /// The groups (log shards) written; commands go to them in turn.
    pub groups: Vec<u32>,
    /// Client threads, each its own executor with its own connections.
    pub clients: usize,
    /// Commands per request (closed loop only): each is its own command,
    /// with its own sequence number, applied exactly once.
    pub batch: usize,
    /// Where the generator publishes the leader of the first group written
    /// (node id, 0 while unknown), for `--failover` to know whom to kill.
    pub leader: Arc<AtomicU64>,
    /// The nodes' client secret, if they ask for one.
    pub secret: Option<synod_net::Secret>,
}

/// Progress while running.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time since the start, warm-up included.
    pub elapsed: Duration,
    /// Commands acknowledged so far (warm-up included).
    pub acked: u64,
    /// Whether the warm-up is over.
    pub measuring: bool,
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Commands acknowledged in the measured window.
    pub commands: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Payload bytes per command.
    pub size: usize,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub latency_us: [u64; 5],
    /// Requests that failed and were retried (timeouts, lost connections).
    pub errors: u64,
    /// Times the generator was told to go to another leader.
    pub redirects: u64,
    /// Leaders seen during the run, summed over the groups written.
    pub leaders_seen: usize,
    /// Ballots raised (elections started) during the measured window,
    /// summed over the groups, from the nodes' own status; `None` if the
    /// nodes could not be asked.
    pub elections: Option<u64>,
    /// Commands acknowledged per log slot the groups applied in the
    /// measured window: the mean batch size the leaders formed.
    pub commands_per_slot: Option<f64>,
    /// When the run started (warm-up included).
    pub started: Instant,
    /// Commands acknowledged in each millisecond since `started`.
    pub acks_per_ms: Vec<u32>,
}

impl LoadReport {
    /// Commands per second.
    pub fn per_sec(&self) -> f64 {
        self.commands as f64 / self.seconds
    }

    /// Payload megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.per_sec() * self.size as f64 / 1e6
    }
}

/// The clock and the totals every client thread shares.
struct Control {
    started: Instant,
    measuring: AtomicBool,
    stop: AtomicBool,
    acked: AtomicU64,
}

/// One client thread's part of the run.
#[derive(Clone, Debug)]
struct Part {
    index: usize,
    inflight: usize,
    rate: Option<f64>,
    /// Session ids of this part start here (distinct per thread and per run,
    /// so a second run against the same cluster is not deduplicated).
    sessions_from: u64,
}

/// What one client thread measured.
struct PartReport {
    histogram: Histogram<u64>,
    measured: u64,
    errors: u64,
    redirects: u64,
    /// Per group written: leaders in the order seen.
    leaders: Vec<Vec<u64>>,
    acks_per_ms: Vec<u32>,
    /// Thread 0 only: the groups' status at the start and end of the
    /// measured window.
    window: Option<(GroupsStatus, GroupsStatus)>,
}

/// Per group written: the most slots applied and the highest ballot round
/// any node reported.
type GroupsStatus = Vec<Option<(u64, u64)>>;

struct Shared {
    control: Arc<Control>,
    clients: Vec<Vec<Client>>,
    ids: RefCell<HashMap<u64, usize>>,
    /// Node id at each position of `clients`, once known.
    node_at: RefCell<Vec<Option<u64>>>,
    groups: Vec<u32>,
    /// Per group written: position in `clients` of the node believed to lead.
    targets: Vec<Cell<usize>>,
    leaders: Vec<RefCell<Vec<u64>>>,
    histogram: RefCell<Histogram<u64>>,
    measured: Cell<u64>,
    errors: Cell<u64>,
    redirects: Cell<u64>,
    leader: Arc<AtomicU64>,
    acks_per_ms: RefCell<Vec<u32>>,
    payload: Vec<u8>,
    batch: usize,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.control.stop.load(Ordering::Relaxed)
    }
}

/// Runs the load on `clients` executor threads; `progress` is called about
/// four times a second.
pub fn run_load(
    options: LoadOptions,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<LoadReport, String> {
    validate(&options)?;
    let control = Arc::new(Control {
        started: Instant::now(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
    });
    let run_sessions = (rand::random::<u64>() >> 24) << 24;
    let mut threads = Vec::new();
    for index in 0..options.clients {
        let share =
            |total: usize| total / options.clients + usize::from(index < total % options.clients);
        let part = Part {
            index,
            inflight: share(options.inflight),
            rate: options.rate.map(|r| r / options.clients as f64),
            sessions_from: run_sessions + ((index as u64) << 40),
        };
        let (part_options, part_control) = (options.clone(), control.clone());
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("synod-loadgen-{index}"))
            .io_memory(512 << 10)
            .spawn(move || async move { generate(part_options, part, part_control).await });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                control.stop.store(true, Ordering::Relaxed);
                return Err(format!("client thread {index}: {error}"));
            }
        }
    }
    // The clock: warm-up, then the measured window.
    let mut measured_from = control.started;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let elapsed = control.started.elapsed();
        let measuring = control.measuring.load(Ordering::Relaxed);
        if !measuring && elapsed >= options.warmup {
            measured_from = Instant::now();
            control.measuring.store(true, Ordering::Relaxed);
        }
        progress(Progress {
            elapsed,
            acked: control.acked.load(Ordering::Relaxed),
            measuring: control.measuring.load(Ordering::Relaxed),
        });
        if control.measuring.load(Ordering::Relaxed) && measured_from.elapsed() >= options.duration
        {
            break;
        }
    }
    let seconds = measured_from.elapsed().as_secs_f64();
    control.stop.store(true, Ordering::Relaxed);
    let mut parts = Vec::new();
    for thread in threads {
        parts.push(thread.join().map_err(|e| e.to_string())??);
    }
    merge(parts, seconds, &options, control.started)
}

fn validate(options: &LoadOptions) -> Result<(), String> {
    if options.cluster.is_empty() {
        return Err("need at least one node".into());
    }
    validate_workload(options)
}

/// Checks everything in `options` but the cluster, so that a command line
/// that cannot run fails before a local cluster is started for it.
pub fn validate_workload(options: &LoadOptions) -> Result<(), String> {
    if options.inflight == 0 || options.connections == 0 {
        return Err("need at least one command in flight and one connection".into());
    }
    if options.duration.is_zero() {
        return Err("--duration must be at least one second".into());
    }
    if options.groups.is_empty() {
        return Err("need at least one group to write".into());
    }
    if options.clients == 0 || options.clients > CLIENTS_MAX {
        return Err(format!("--clients must be 1 to {CLIENTS_MAX}"));
    }
    if options.inflight < options.clients {
        return Err("--inflight must be at least --clients (each client needs one)".into());
    }
    if options.batch == 0 || options.batch > APPEND_BATCH_MAX {
        return Err(format!("--batch must be 1 to {APPEND_BATCH_MAX}"));
    }
    let batch_bytes = append_batch_bytes(options.size, options.batch);
    if batch_bytes > BATCH_BYTES_MAX as usize {
        return Err(format!(
            "--size {} --batch {} takes {batch_bytes} bytes of commands; one slot holds {BATCH_BYTES_MAX}",
            options.size, options.batch
        ));
    }
    if options.batch > 1 && options.rate.is_some() {
        return Err("--batch needs the closed loop (no --rate)".into());
    }
    if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    Ok(())
}

/// Adds the client threads' measurements up.
fn merge(
    parts: Vec<PartReport>,
    seconds: f64,
    options: &LoadOptions,
    started: Instant,
) -> Result<LoadReport, String> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut measured, mut errors, mut redirects) = (0, 0, 0);
    let mut leaders_seen = vec![0; options.groups.len()];
    let mut acks_per_ms: Vec<u32> = Vec::new();
    let mut window = None;
    for part in parts {
        histogram.add(&part.histogram).map_err(|e| e.to_string())?;
        measured += part.measured;
        errors += part.errors;
        redirects += part.redirects;
        for (seen, leaders) in leaders_seen.iter_mut().zip(&part.leaders) {
            *seen = (*seen).max(leaders.len());
        }
        if acks_per_ms.len() < part.acks_per_ms.len() {
            acks_per_ms.resize(part.acks_per_ms.len(), 0);
        }
        for (total, n) in acks_per_ms.iter_mut().zip(&part.acks_per_ms) {
            *total += n;
        }
        window = window.or(part.window);
    }
    // Elections and slots from the groups' status at both ends of the window.
    let deltas: Option<Vec<(u64, u64)>> = window.and_then(|(from, to)| {
        from.iter()
            .zip(&to)
            .map(|(a, b)| {
                Some((
                    b.as_ref()?.0.saturating_sub(a.as_ref()?.0),
                    b.as_ref()?.1.saturating_sub(a.as_ref()?.1),
                ))
            })
            .collect()
    });
    let elections = deltas
        .as_ref()
        .map(|d| d.iter().map(|(_, rounds)| rounds).sum());
    let slots: Option<u64> = deltas
        .as_ref()
        .map(|d| d.iter().map(|(slots, _)| slots).sum());
    Ok(LoadReport {
        commands: measured,
        seconds,
        size: options.size,
        latency_us: [
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.9),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max(),
        ],
        errors,
        redirects,
        leaders_seen: leaders_seen.iter().sum(),
        elections,
        commands_per_slot: slots.filter(|s| *s > 0).map(|s| measured as f64 / s as f64),
        started,
        acks_per_ms,
    })
}

async fn generate(
    options: LoadOptions,
    part: Part,
    control: Arc<Control>,
) -> Result<PartReport, String> {
    let mut clients = Vec::new();
    for addr in &options.cluster {
        let mut per_node = Vec::new();
        for _ in 0..options.connections {
            let mut config = ClientConfig::new(vec![*addr]);
            config.secret = options.secret.clone();
            config.redirects_max = 0;
            config.request_timeout = Duration::from_secs(2);
            per_node.push(Client::new(config).map_err(|e| e.to_string())?);
        }
        clients.push(per_node);
    }
    let groups = options.groups.len();
    let shared = Rc::new(Shared {
        control,
        clients,
        ids: RefCell::new(HashMap::new()),
        node_at: RefCell::new(vec![None; options.cluster.len()]),
        groups: options.groups.clone(),
        targets: (0..groups).map(|_| Cell::new(0)).collect(),
        leaders: (0..groups).map(|_| RefCell::new(Vec::new())).collect(),
        histogram: RefCell::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        ),
        measured: Cell::new(0),
        errors: Cell::new(0),
        redirects: Cell::new(0),
        leader: options.leader.clone(),
        acks_per_ms: RefCell::new(Vec::new()),
        payload: vec![b'x'; options.size],
        batch: options.batch,
    });
    learn_ids(&shared).await;
    let observer = (part.index == 0).then(|| glommio::spawn_local(observe(shared.clone())));
    let workers = match part.rate {
        None => closed_loop(&shared, &part),
        Some(rate) => vec![open_loop(&shared, rate, options.poisson, &part)],
    };
    for worker in workers {
        worker.await;
    }
    let window = match observer {
        Some(observer) => observer.await,
        None => None,
    };
    let histogram = shared.histogram.borrow().clone();
    Ok(PartReport {
        histogram,
        measured: shared.measured.get(),
        errors: shared.errors.get(),
        redirects: shared.redirects.get(),
        leaders: shared.leaders.iter().map(|l| l.borrow().clone()).collect(),
        acks_per_ms: shared.acks_per_ms.take(),
        window,
    })
}

/// Asks every node who it is and who leads each group written.
async fn learn_ids(shared: &Shared) {
    for (position, per_node) in shared.clients.iter().enumerate() {
        for (g, group) in shared.groups.iter().enumerate() {
            if let Some((node, leader, _)) = status(&per_node[0], *group).await {
                shared.ids.borrow_mut().insert(node, position);
                shared.node_at.borrow_mut()[position] = Some(node);
                if let Some(leader) = leader {
                    note_leader(shared, g, leader);
                }
            }
        }
    }
}

/// A node's id, the leader it knows of and (slots applied, ballot round)
/// for `group`.
async fn status(client: &Client, group: u32) -> Option<(u64, Option<u64>, (u64, u64))> {
    let body = ClientRequest {
        group,
        op: ClientOp::Status,
    }
    .encode();
    let reply = client.request(KIND_CLIENT_REQUEST, &body).await.ok()?;
    match ClientResponse::decode(&reply.body).ok()? {
        ClientResponse::Status {
            node,
            leader,
            applied,
            ballot,
            ..
        } => Some((node, leader, (applied, ballot.0))),
        _ => None,
    }
}

/// Every group's status at the start and at the end of the measured window.
async fn observe(shared: Rc<Shared>) -> Option<(GroupsStatus, GroupsStatus)> {
    while !shared.control.measuring.load(Ordering::Relaxed) {
        if shared.stopping() {
            return None;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let from = groups_status(&shared).await;
    while !shared.stopping() {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    Some((from, groups_status(&shared).await))
}

async fn groups_status(shared: &Shared) -> GroupsStatus {
    let mut found = Vec::new();
    for group in &shared.groups {
        let mut best: Option<(u64, u64)> = None;
        for per_node in &shared.clients {
            if let Some((_, _, (applied, round))) = status(&per_node[0], *group).await {
                let (a, r) = best.unwrap_or((0, 0));
                best = Some((a.max(applied), r.max(round)));
            }
        }
        found.push(best);
    }
    found
}

fn note_leader(shared: &Shared, g: usize, leader: u64) {
    if let Some(position) = shared.ids.borrow().get(&leader) {
        shared.targets[g].set(*position);
    }
    if g == 0 {
        shared.leader.store(leader, Ordering::Relaxed);
    }
    let mut leaders = shared.leaders[g].borrow_mut();
    if leaders.last() != Some(&leader) {
        leaders.push(leader);
    }
}

fn closed_loop(shared: &Rc<Shared>, part: &Part) -> Vec<glommio::Task<()>> {
    (0..part.inflight)
        .map(|worker| {
            let shared = shared.clone();
            let session = part.sessions_from + worker as u64 + 1;
            glommio::spawn_local(async move {
                let mut seq = 1;
                while !shared.stopping() {
                    let g = worker % shared.groups.len();
                    seq = append(&shared, session, seq, Instant::now(), g, worker).await;
                }
            })
        })
        .collect()
}

/// Sends at evenly spaced intended times; each command's latency counts
/// from its intended time, whether or not a session to send it was free.
/// Commands take turns on a fixed set of sessions (each has one command
/// outstanding at a time, as the nodes require), so the nodes see a fixed
/// set of sessions rather than one more per command. Each session writes
/// one group only: a group's session table knows nothing of another's, so
/// a session that moved between groups would restart its sequence numbers
/// where the new group last saw them and could have a command applied
/// twice.
fn open_loop(shared: &Rc<Shared>, rate: f64, poisson: bool, part: &Part) -> glommio::Task<()> {
    let shared = shared.clone();
    let idle = Rc::new(open_loop_sessions(
        part.sessions_from + (1 << 32),
        part.inflight,
        shared.groups.len(),
    ));
    let seed = 0x5E0D + part.index as u64;
    glommio::spawn_local(async move {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut arrivals = rand::rngs::StdRng::seed_from_u64(seed);
        let mut intended = Instant::now();
        let mut k: usize = 0;
        while !shared.stopping() {
            // The gap to the next arrival: fixed, or exponential with the
            // same mean (inverse transform of a uniform in (0, 1]).
            intended += if poisson {
                let uniform: f64 = 1.0 - arrivals.random::<f64>();
                interval.mul_f64(-uniform.ln())
            } else {
                interval
            };
            if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                glommio::timer::sleep(wait).await;
            }
            // Arrivals go to the groups in turn, each on a free session of
            // its group.
            let g = k % shared.groups.len();
            k += 1;
            let session = loop {
                if let Some(free) = idle[g].borrow_mut().pop() {
                    break free;
                }
                if shared.stopping() {
                    return;
                }
                glommio::timer::sleep(Duration::from_micros(100)).await;
            };
            let (shared, idle) = (shared.clone(), idle.clone());
            glommio::spawn_local(async move {
                let next = append(
                    &shared,
                    session.client,
                    session.seq,
                    intended,
                    g,
                    session.lane,
                )
                .await;
                idle[g].borrow_mut().push(OpenLoopSession {
                    seq: next,
                    ..session
                });
            })
            .detach();
        }
    })
}

/// A session of the open loop, idle between commands.
#[derive(Clone, Copy, Debug, PartialEq)]
struct OpenLoopSession {
    client: u64,
    /// Its next sequence number.
    seq: u64,
    /// Picks its connection, so sessions spread over the connections.
    lane: usize,
}

/// Per group index: the open loop's idle sessions, `cap` in all split
/// evenly, and at least one per group so that no group's arrivals wait
/// forever.
fn open_loop_sessions(first: u64, cap: usize, groups: usize) -> Vec<RefCell<Vec<OpenLoopSession>>> {
    let total = cap.max(groups);
    let idle: Vec<RefCell<Vec<OpenLoopSession>>> =
        (0..groups).map(|_| RefCell::new(Vec::new())).collect();
    for lane in 0..total {
        idle[lane % groups].borrow_mut().push(OpenLoopSession {
            client: first + lane as u64,
            seq: 1,
            lane,
        });
    }
    idle
}

/// Counts `count` commands of group index `g` acknowledged by the node at
/// `target`, sent at `intended`.
fn note_acks(shared: &Shared, g: usize, target: usize, count: u64, intended: Instant) {
    shared.control.acked.fetch_add(count, Ordering::Relaxed);
    // Whoever acknowledged it leads now.
    if let Some(node) = shared.node_at.borrow()[target] {
        if shared.leaders[g].borrow().last() != Some(&node) {
            note_leader(shared, g, node);
        }
    }
    let ms = shared.control.started.elapsed().as_millis() as usize;
    let mut timeline = shared.acks_per_ms.borrow_mut();
    if timeline.len() <= ms {
        timeline.resize(ms + 1, 0);
    }
    timeline[ms] += count as u32;
    drop(timeline);
    if shared.control.measuring.load(Ordering::Relaxed) {
        // Every command of a batch waited as long as the batch.
        let micros = intended.elapsed().as_micros().max(1) as u64;
        let _ = shared.histogram.borrow_mut().record_n(micros, count);
        shared.measured.set(shared.measured.get() + count);
    }
}

/// Appends one command to group index `g` until it is acknowledged
/// (retries keep its sequence number, so it applies once) or the run stops;
/// returns the session's next sequence number. A session must always write
/// the same group: sequence numbers are per group. `lane` picks the
/// connection.
async fn append(
    shared: &Shared,
    client: u64,
    seq: u64,
    intended: Instant,
    g: usize,
    lane: usize,
) -> u64 {
    let request = |seq| {
        let op = match shared.batch {
            1 => ClientOp::Append {
                client,
                seq,
                data: shared.payload.clone(),
            },
            items => ClientOp::AppendBatch {
                client,
                seq,
                items: vec![shared.payload.clone(); items],
            },
        };
        ClientRequest {
            group: shared.groups[g],
            op,
        }
        .encode()
    };
    let (mut seq, mut body) = (seq, request(seq));
    let mut sent_before = false;
    let nodes = shared.clients.len();
    while !shared.stopping() {
        let target = shared.targets[g].get();
        let per_node = &shared.clients[target];
        let reply = per_node[lane % per_node.len()]
            .request(KIND_CLIENT_REQUEST, &body)
            .await;
        let first_sending = !std::mem::replace(&mut sent_before, true);
        match reply.map(|r| ClientResponse::decode(&r.body)) {
            Ok(Ok(ClientResponse::Appended { .. })) => {
                note_acks(shared, g, target, 1, intended);
                return seq + 1;
            }
            Ok(Ok(ClientResponse::AppendedBatch { indexes })) => {
                note_acks(shared, g, target, indexes.len() as u64, intended);
                return seq + indexes.len() as u64;
            }
            // The session was evicted. Sent once, none of it was applied:
            // again from `resume_at`. Sent before: in doubt, an error.
            Ok(Ok(ClientResponse::SessionExpired { resume_at })) if first_sending => {
                (seq, body) = (resume_at, request(resume_at));
                sent_before = false;
            }
            Ok(Ok(ClientResponse::SessionExpired { resume_at })) => {
                shared.errors.set(shared.errors.get() + 1);
                return resume_at;
            }
            Ok(Ok(ClientResponse::NotLeader { leader })) => {
                shared.redirects.set(shared.redirects.get() + 1);
                match leader {
                    Some(leader) if shared.ids.borrow().contains_key(&leader) => {
                        note_leader(shared, g, leader)
                    }
                    _ => {
                        shared.targets[g].set((target + 1) % nodes);
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Ok(Ok(ClientResponse::Busy)) => glommio::timer::sleep(Duration::from_millis(1)).await,
            _ => {
                shared.errors.set(shared.errors.get() + 1);
                if shared.targets[g].get() == target {
                    shared.targets[g].set((target + 1) % nodes);
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_open_loop_session_belongs_to_one_group_and_every_group_has_one() {
        for (cap, groups) in [(1, 1), (8, 1), (2, 3), (7, 3), (64, 4)] {
            let idle = open_loop_sessions(100, cap, groups);
            assert_eq!(idle.len(), groups);
            let mut clients: Vec<u64> = Vec::new();
            for per_group in &idle {
                let per_group = per_group.borrow();
                assert!(!per_group.is_empty(), "{cap} sessions over {groups} groups");
                clients.extend(per_group.iter().map(|s| s.client));
                assert!(per_group.iter().all(|s| s.seq == 1));
            }
            let total = clients.len();
            clients.sort_unstable();
            clients.dedup();
            assert_eq!(clients.len(), total, "a session in two groups");
            assert_eq!(total, cap.max(groups));
            // Split evenly: no group has two more than another.
            let sizes: Vec<usize> = idle.iter().map(|g| g.borrow().len()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }
}
