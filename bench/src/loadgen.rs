//! The load generator behind `synod bench`: closed loop (a fixed number of
//! commands outstanding) or open loop (a fixed arrival rate, latency
//! measured from each command's intended send time so queueing cannot hide:
//! no coordinated omission), latencies in an HdrHistogram.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use synod_engine::runtime::client_proto::{
    ClientOp, ClientRequest, ClientResponse, APPEND_BATCH_MAX, KIND_CLIENT_REQUEST,
};
use synod_net::{Client, ClientConfig};

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Client addresses of the nodes.
    pub cluster: Vec<SocketAddr>,
    /// Closed loop: commands outstanding at once (also the cap in open loop).
    pub inflight: usize,
    /// Open loop: commands per second; `None` is closed loop.
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
    /// Connections to each node.
    pub connections: usize,
    /// The group (log shard) written.
    pub group: u32,
    /// Commands per request (closed loop only): each is its own command,
    /// with its own sequence number, applied exactly once.
    pub batch: usize,
    /// Where the generator publishes the leader it is writing to (node id,
    /// 0 while unknown), for `--failover` to know whom to kill.
    pub leader: Arc<AtomicU64>,
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
    /// Leaders seen during the run.
    pub leaders_seen: usize,
    /// When the run started (warm-up included).
    pub started: Instant,
    /// Commands acknowledged in each millisecond since `started`.
    pub acks_per_ms: Vec<u32>,
}

/// How one leader kill went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outage {
    /// The longest stretch without any acknowledgement from the kill until
    /// the next kill (or the end of the run).
    pub gap_ms: u64,
    /// From the kill until, after that silence, a 100 ms window again
    /// carries 90 % of the rate of the second before the kill.
    pub recovery_ms: Option<u64>,
}

/// Measures the outage after a kill at `kill_ms` (since the run started),
/// looking no further than the next kill at `until_ms`, if any: a later
/// kill's silence is that kill's outage, not this one's.
pub fn outage(acks_per_ms: &[u32], kill_ms: usize, until_ms: Option<usize>) -> Outage {
    let before = &acks_per_ms[kill_ms.saturating_sub(1000)..kill_ms.min(acks_per_ms.len())];
    let rate_before =
        before.iter().map(|n| u64::from(*n)).sum::<u64>() as f64 / before.len().max(1) as f64;
    let end = until_ms.unwrap_or(usize::MAX).min(acks_per_ms.len());
    let after = acks_per_ms.get(kill_ms..end).unwrap_or(&[]);
    // The longest run of silent milliseconds, and where it ends.
    let (mut gap_ms, mut gap_end, mut run) = (0, 0, 0);
    for (i, n) in after.iter().enumerate() {
        run = if *n == 0 { run + 1 } else { 0 };
        if run > gap_ms {
            (gap_ms, gap_end) = (run, i + 1);
        }
    }
    let window = 100;
    let recovery_ms = after
        .get(gap_end..)
        .unwrap_or(&[])
        .windows(window)
        .position(|w| {
            w.iter().map(|n| u64::from(*n)).sum::<u64>() as f64 >= 0.9 * rate_before * window as f64
        })
        .map(|start| (gap_end + start + window) as u64);
    Outage {
        gap_ms: gap_ms as u64,
        recovery_ms,
    }
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

struct Shared {
    clients: Vec<Vec<Client>>,
    ids: RefCell<HashMap<u64, usize>>,
    /// Node id at each position of `clients`, once known.
    node_at: RefCell<Vec<Option<u64>>>,
    target: Cell<usize>,
    histogram: RefCell<Histogram<u64>>,
    measuring: Cell<bool>,
    stop: Cell<bool>,
    acked: Cell<u64>,
    measured: Cell<u64>,
    errors: Cell<u64>,
    redirects: Cell<u64>,
    leaders: RefCell<Vec<u64>>,
    leader: Arc<AtomicU64>,
    started: Instant,
    acks_per_ms: RefCell<Vec<u32>>,
    group: u32,
    payload: Vec<u8>,
    batch: usize,
}

/// Runs the load on its own executor; `progress` is called about four
/// times a second.
pub fn run_load(
    options: LoadOptions,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<LoadReport, String> {
    if options.cluster.is_empty() || options.inflight == 0 || options.connections == 0 {
        return Err("need at least one node, one command in flight and one connection".into());
    }
    if options.batch == 0 || options.batch > APPEND_BATCH_MAX {
        return Err(format!("--batch must be 1 to {APPEND_BATCH_MAX}"));
    }
    if options.batch > 1 && options.rate.is_some() {
        return Err("--batch needs the closed loop (no --rate)".into());
    }
    if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("synod-loadgen")
        .io_memory(512 << 10)
        .spawn(move || async move { generate(options, progress).await })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())?
}

async fn generate(
    options: LoadOptions,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<LoadReport, String> {
    let mut clients = Vec::new();
    for addr in &options.cluster {
        let mut per_node = Vec::new();
        for _ in 0..options.connections {
            let mut config = ClientConfig::new(vec![*addr]);
            config.redirects_max = 0;
            config.request_timeout = Duration::from_secs(2);
            per_node.push(Client::new(config).map_err(|e| e.to_string())?);
        }
        clients.push(per_node);
    }
    let shared = Rc::new(Shared {
        clients,
        ids: RefCell::new(HashMap::new()),
        node_at: RefCell::new(vec![None; options.cluster.len()]),
        target: Cell::new(0),
        histogram: RefCell::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        ),
        measuring: Cell::new(false),
        stop: Cell::new(false),
        acked: Cell::new(0),
        measured: Cell::new(0),
        errors: Cell::new(0),
        redirects: Cell::new(0),
        leaders: RefCell::new(Vec::new()),
        leader: options.leader.clone(),
        started: Instant::now(),
        acks_per_ms: RefCell::new(Vec::new()),
        group: options.group,
        payload: vec![b'x'; options.size],
        batch: options.batch,
    });
    learn_ids(&shared).await;
    let start = shared.started;
    let workers = match options.rate {
        None => closed_loop(&shared, options.inflight),
        Some(rate) => vec![open_loop(&shared, rate, options.poisson, options.inflight)],
    };
    let mut measured_from = start;
    loop {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        let elapsed = start.elapsed();
        if !shared.measuring.get() && elapsed >= options.warmup {
            shared.measuring.set(true);
            measured_from = Instant::now();
        }
        progress(Progress {
            elapsed,
            acked: shared.acked.get(),
            measuring: shared.measuring.get(),
        });
        if shared.measuring.get() && measured_from.elapsed() >= options.duration {
            break;
        }
    }
    shared.stop.set(true);
    let seconds = measured_from.elapsed().as_secs_f64();
    for worker in workers {
        worker.await;
    }
    let histogram = shared.histogram.borrow();
    let leaders_seen = shared.leaders.borrow().len();
    Ok(LoadReport {
        commands: shared.measured.get(),
        seconds,
        size: options.size,
        latency_us: [
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.9),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max(),
        ],
        errors: shared.errors.get(),
        redirects: shared.redirects.get(),
        leaders_seen,
        started: shared.started,
        acks_per_ms: shared.acks_per_ms.take(),
    })
}

/// Asks every node who it is and who leads.
async fn learn_ids(shared: &Shared) {
    let body = ClientRequest {
        group: shared.group,
        op: ClientOp::Status,
    }
    .encode();
    for (position, per_node) in shared.clients.iter().enumerate() {
        if let Ok(reply) = per_node[0].request(KIND_CLIENT_REQUEST, &body).await {
            if let Ok(ClientResponse::Status { node, leader, .. }) =
                ClientResponse::decode(&reply.body)
            {
                shared.ids.borrow_mut().insert(node, position);
                shared.node_at.borrow_mut()[position] = Some(node);
                if let Some(leader) = leader {
                    note_leader(shared, leader);
                }
            }
        }
    }
}

fn note_leader(shared: &Shared, leader: u64) {
    if let Some(position) = shared.ids.borrow().get(&leader) {
        shared.target.set(*position);
    }
    shared.leader.store(leader, Ordering::Relaxed);
    let mut leaders = shared.leaders.borrow_mut();
    if leaders.last() != Some(&leader) {
        leaders.push(leader);
    }
}

fn closed_loop(shared: &Rc<Shared>, inflight: usize) -> Vec<glommio::Task<()>> {
    (0..inflight)
        .map(|worker| {
            let shared = shared.clone();
            glommio::spawn_local(async move {
                let mut seq = 1;
                while !shared.stop.get() {
                    append(&shared, worker as u64 + 1, seq, Instant::now(), worker).await;
                    seq += shared.batch as u64;
                }
            })
        })
        .collect()
}

/// Sends at evenly spaced intended times; each command's latency counts
/// from its intended time, whether or not a slot to send it was free.
fn open_loop(shared: &Rc<Shared>, rate: f64, poisson: bool, cap: usize) -> glommio::Task<()> {
    let shared = shared.clone();
    glommio::spawn_local(async move {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut arrivals = rand::rngs::StdRng::seed_from_u64(0x5E0D);
        let mut intended = Instant::now();
        let outstanding = Rc::new(Cell::new(0usize));
        let mut k: u64 = 0;
        while !shared.stop.get() {
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
            while outstanding.get() >= cap && !shared.stop.get() {
                glommio::timer::sleep(Duration::from_micros(100)).await;
            }
            k += 1;
            let (shared, outstanding) = (shared.clone(), outstanding.clone());
            outstanding.set(outstanding.get() + 1);
            glommio::spawn_local(async move {
                // One session per command: open loop has no per-client order.
                append(&shared, 1_000_000 + k, 1, intended, k as usize).await;
                outstanding.set(outstanding.get() - 1);
            })
            .detach();
        }
    })
}

/// Counts `count` commands acknowledged by the node at `target`, sent at
/// `intended`.
fn note_acks(shared: &Shared, target: usize, count: u64, intended: Instant) {
    shared.acked.set(shared.acked.get() + count);
    // Whoever acknowledged it leads now.
    if let Some(node) = shared.node_at.borrow()[target] {
        if shared.leader.load(Ordering::Relaxed) != node {
            note_leader(shared, node);
        }
    }
    let ms = shared.started.elapsed().as_millis() as usize;
    let mut timeline = shared.acks_per_ms.borrow_mut();
    if timeline.len() <= ms {
        timeline.resize(ms + 1, 0);
    }
    timeline[ms] += count as u32;
    drop(timeline);
    if shared.measuring.get() {
        // Every command of a batch waited as long as the batch.
        let micros = intended.elapsed().as_micros().max(1) as u64;
        let _ = shared.histogram.borrow_mut().record_n(micros, count);
        shared.measured.set(shared.measured.get() + count);
    }
}

/// Appends one command until it is acknowledged (retries keep its sequence
/// number, so it applies once) or the run stops.
async fn append(shared: &Shared, client: u64, seq: u64, intended: Instant, worker: usize) {
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
    let body = ClientRequest {
        group: shared.group,
        op,
    }
    .encode();
    while !shared.stop.get() {
        let target = shared.target.get();
        let per_node = &shared.clients[target];
        let reply = per_node[worker % per_node.len()]
            .request(KIND_CLIENT_REQUEST, &body)
            .await;
        match reply.map(|r| ClientResponse::decode(&r.body)) {
            Ok(Ok(ClientResponse::Appended { .. })) => {
                note_acks(shared, target, 1, intended);
                return;
            }
            Ok(Ok(ClientResponse::AppendedBatch { indexes })) => {
                note_acks(shared, target, indexes.len() as u64, intended);
                return;
            }
            Ok(Ok(ClientResponse::NotLeader { leader })) => {
                shared.redirects.set(shared.redirects.get() + 1);
                match leader {
                    Some(leader) if shared.ids.borrow().contains_key(&leader) => {
                        note_leader(shared, leader)
                    }
                    _ => {
                        shared.target.set((target + 1) % shared.clients.len());
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Ok(Ok(ClientResponse::Busy)) => glommio::timer::sleep(Duration::from_millis(1)).await,
            _ => {
                shared.errors.set(shared.errors.get() + 1);
                if shared.target.get() == target {
                    shared.target.set((target + 1) % shared.clients.len());
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_the_longest_silence_and_recovery_the_return_to_90_percent() {
        // 10 acks/ms for 1 s, killed at 1000, silent 150 ms, 5/ms for 200 ms,
        // then back to 10/ms.
        let mut timeline = vec![10u32; 1000];
        timeline.extend(vec![0; 150]);
        timeline.extend(vec![5; 200]);
        timeline.extend(vec![10; 500]);
        let o = outage(&timeline, 1000, None);
        assert_eq!(o.gap_ms, 150);
        // The first window with 900 acks starts 330 ms after the kill:
        // 20 ms of 5/ms and 80 ms of 10/ms.
        assert_eq!(o.recovery_ms, Some(330 + 100));
        assert_eq!(outage(&[1, 1, 0, 0], 4, None).recovery_ms, None);
        // A second kill at 1500 with a longer silence is its own outage.
        timeline.truncate(1500);
        timeline.extend(vec![0; 400]);
        timeline.extend(vec![10; 500]);
        assert_eq!(outage(&timeline, 1000, Some(1500)).gap_ms, 150);
        assert_eq!(outage(&timeline, 1500, None).gap_ms, 400);
    }
}
