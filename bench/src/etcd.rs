//! The same closed-loop workload against etcd, for `bench/compare-etcd.sh`:
//! `inflight` threads, each with one keep-alive HTTP connection to etcd's
//! v3 JSON gateway, each putting `size`-byte values one after another.
//! Latency runs from send to answer; etcd answers a put once its Raft log
//! entry is committed on a majority (fsynced), as synod answers an append.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;

use crate::loadgen::{LoadReport, Progress};

/// What to run against etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs of the members, like `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Puts outstanding at once: one thread each.
    pub inflight: usize,
    /// Bytes per value.
    pub size: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
}

/// What every worker shares.
struct Shared {
    started: Instant,
    warmup: Duration,
    stop: AtomicBool,
    acked: AtomicU64,
    errors: AtomicU64,
    acks_per_ms: Vec<AtomicU32>,
}

/// Runs the load; `progress` is called about four times a second.
pub fn run_etcd_load(
    options: EtcdOptions,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<LoadReport, String> {
    if options.endpoints.is_empty() || options.inflight == 0 {
        return Err("need at least one endpoint and one put in flight".into());
    }
    let total = options.warmup + options.duration;
    let shared = Arc::new(Shared {
        started: Instant::now(),
        warmup: options.warmup,
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        acks_per_ms: (0..total.as_millis() + 1_000)
            .map(|_| AtomicU32::new(0))
            .collect(),
    });
    let workers: Vec<_> = (0..options.inflight)
        .map(|worker| {
            let (shared, options) = (shared.clone(), options.clone());
            std::thread::spawn(move || put_loop(worker, &options, &shared))
        })
        .collect();
    while shared.started.elapsed() < total {
        std::thread::sleep(Duration::from_millis(250));
        progress(Progress {
            elapsed: shared.started.elapsed(),
            acked: shared.acked.load(Ordering::Relaxed),
            measuring: shared.started.elapsed() >= options.warmup,
        });
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    for worker in workers {
        let histogram = worker.join().map_err(|_| "an etcd worker panicked")?;
        latency.add(histogram).map_err(|e| e.to_string())?;
    }
    let percentile = |q: f64| latency.value_at_quantile(q);
    Ok(LoadReport {
        commands: latency.len(),
        seconds: options.duration.as_secs_f64(),
        size: options.size,
        latency_us: [
            percentile(0.5),
            percentile(0.9),
            percentile(0.99),
            percentile(0.999),
            latency.max(),
        ],
        errors: shared.errors.load(Ordering::Relaxed),
        redirects: 0,
        leaders_seen: 0,
        elections: None,
        commands_per_slot: None,
        started: shared.started,
        acks_per_ms: shared
            .acks_per_ms
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
    })
}

/// One worker: puts until told to stop; returns its measured latencies.
fn put_loop(worker: usize, options: &EtcdOptions, shared: &Shared) -> Histogram<u64> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let endpoint = &options.endpoints[worker % options.endpoints.len()];
    let url = format!("{endpoint}/v3/kv/put");
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = b64.encode(vec![b'x'; options.size]);
    let mut latency = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let measured_from = shared.started + shared.warmup;
    let measured_until = measured_from + options.duration;
    for i in 0u64.. {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let key = b64.encode(format!("bench-{worker}-{}", i % 1_000));
        let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
        let sent = Instant::now();
        match agent.post(&url).send_string(&body) {
            Ok(_) => {
                let done = Instant::now();
                shared.acked.fetch_add(1, Ordering::Relaxed);
                let ms = done.duration_since(shared.started).as_millis() as usize;
                if let Some(slot) = shared.acks_per_ms.get(ms) {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
                if sent >= measured_from && done <= measured_until {
                    let _ = latency.record(done.duration_since(sent).as_micros() as u64);
                }
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    latency
}
