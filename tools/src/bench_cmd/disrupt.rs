//! What `--failover` and `--transfers` do to a local cluster during a run,
//! evenly spaced over the measured window, and the outage each caused,
//! read off the acknowledgements per millisecond.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::json;
use synod_bench::loadgen::{outage, LoadReport};
use synod_bench::local::{Layout, LocalCluster};
use synod_client_proto::ClientOp;
use synod_net::Secret;

use super::BenchArgs;
use crate::admin_cmd::Replacement;

/// One disruption: when, and what.
pub(super) struct Disruption {
    at: Instant,
    what: What,
}

enum What {
    /// The leader, killed (and restarted a second later).
    Kill { leader: u64 },
    /// Leadership handed from one node to another.
    Transfer { from: u64, to: u64 },
    /// A node replaced by a new one at a new address.
    Replace { old: u64, new: u64 },
}

/// When disruption `k` of `count` falls in a run that started at `start`.
fn due(start: Instant, args: &BenchArgs, k: u32, count: u32) -> (Instant, Duration) {
    let spacing = Duration::from_secs(args.duration) / (count + 1);
    (
        start + Duration::from_secs(args.warmup) + spacing * k,
        spacing,
    )
}

/// Waits until disruption `k` of `count` is due; then the leader and the
/// spacing between disruptions, or nothing (said on the bar) if no leader
/// is known.
fn leader_when_due(
    start: Instant,
    args: &BenchArgs,
    (k, count): (u32, u32),
    leader: &AtomicU64,
    bar: &ProgressBar,
) -> Option<(u64, Duration)> {
    let (at, spacing) = due(start, args, k, count);
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    match leader.load(Ordering::Relaxed) {
        0 => {
            bar.println(format!("no leader known at disruption {k}; skipped"));
            None
        }
        leader => Some((leader, spacing)),
    }
}

/// Kills the leader `--failover` times, restarting each victim a second
/// later.
pub(super) fn kill_leaders(
    cluster: &mut LocalCluster,
    leader: &AtomicU64,
    args: &BenchArgs,
    bar: &ProgressBar,
) -> Vec<Disruption> {
    let start = Instant::now();
    let mut kills = Vec::new();
    for k in 1..=args.failover {
        let Some((victim, spacing)) = leader_when_due(start, args, (k, args.failover), leader, bar)
        else {
            continue;
        };
        cluster.kill(victim as usize);
        kills.push(Disruption {
            at: Instant::now(),
            what: What::Kill { leader: victim },
        });
        std::thread::sleep(Duration::from_secs(1).min(spacing / 2));
        if let Err(message) = cluster.restart(victim as usize) {
            bar.println(format!("restarting node {victim}: {message}"));
        }
    }
    kills
}

/// Hands leadership to the next node `--transfers` times, through the
/// client port as `synod leader transfer` does.
pub(super) fn transfer_leaders(
    (addrs, group, secret): (Vec<SocketAddr>, u32, Option<Secret>),
    leader: &AtomicU64,
    args: &BenchArgs,
    bar: &ProgressBar,
) -> Vec<Disruption> {
    let start = Instant::now();
    let nodes = addrs.len() as u64;
    let mut transfers = Vec::new();
    for k in 1..=args.transfers {
        let Some((from, _)) = leader_when_due(start, args, (k, args.transfers), leader, bar) else {
            continue;
        };
        let to = from % nodes + 1;
        let began = Instant::now();
        let op = ClientOp::TransferLeader { to };
        let reply = crate::client_cmd::one_op(
            addrs.clone(),
            group,
            secret.clone(),
            Duration::from_secs(5),
            op,
        );
        if reply["ok"] != json!(true) {
            bar.println(format!("transfer to node {to}: {reply}"));
            continue;
        }
        transfers.push(Disruption {
            at: began,
            what: What::Transfer { from, to },
        });
    }
    transfers
}

/// How long a replacement may take: the new node catches up first.
const REPLACE_WAIT: Duration = Duration::from_secs(60);

/// Replaces each node of `cluster` in turn by a new one at the next of
/// `spares`' addresses, evenly spaced over the measured window: the new
/// node joins, is added to every group as a voter (`synod member add`),
/// the old one is removed (`synod member remove`) and killed for good.
pub(super) fn replace_each(
    cluster: &mut LocalCluster,
    spares: &Layout,
    secret: Option<Secret>,
    args: &BenchArgs,
    bar: &ProgressBar,
) -> Vec<Disruption> {
    let start = Instant::now();
    let count = spares.listen.len() as u32;
    let groups = args.group..args.group + args.groups;
    let mut replaced = Vec::new();
    for k in 1..=count {
        let (at, _) = due(start, args, k, count);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let began = Instant::now();
        let old = k as usize;
        let (listen, client) = (spares.listen[old - 1], spares.client[old - 1]);
        let via: Vec<SocketAddr> = cluster.client_addrs[old - 1..].to_vec();
        let new = match cluster.join(listen, client, &via) {
            Ok(new) => new,
            Err(message) => {
                bar.println(format!("starting a node to replace n{old}: {message}"));
                return replaced;
            }
        };
        let replacement = Replacement {
            old: old as u64,
            new: new as u64,
            addr: listen,
            wait: REPLACE_WAIT,
            leader_wait_ms: (REPLACE_WAIT - Duration::from_secs(1)).as_millis() as u32,
        };
        let reach = [via.clone(), vec![client]].concat();
        for group in groups.clone() {
            if let Err((step, reply)) = replacement.run(&reach, group, secret.clone()) {
                bar.println(format!(
                    "replacing n{old} by n{new} in group {group}: {step}: {reply}"
                ));
                return replaced;
            }
        }
        cluster.kill(old);
        bar.println(format!(
            "n{old} replaced by n{new} in {} ms",
            began.elapsed().as_millis()
        ));
        replaced.push(Disruption {
            at: began,
            what: What::Replace {
                old: old as u64,
                new: new as u64,
            },
        });
    }
    replaced
}

/// Prints each disruption's outage (JSON lines with `--json`) and, as a
/// table, their median and worst.
pub(super) fn print_outages(report: &LoadReport, disruptions: &[Disruption], json: bool) {
    if disruptions.is_empty() {
        return;
    }
    let since_start = |at: &Instant| at.saturating_duration_since(report.started).as_millis();
    let mut gaps = Vec::new();
    for (i, d) in disruptions.iter().enumerate() {
        let at_ms = since_start(&d.at) as usize;
        let next_ms = disruptions.get(i + 1).map(|n| since_start(&n.at) as usize);
        let o = outage(&report.acks_per_ms, at_ms, next_ms);
        gaps.push(o.gap_ms);
        let recovery = o
            .recovery_ms
            .map_or("not within the run".to_string(), |ms| format!("{ms} ms"));
        let n = i + 1;
        match (&d.what, json) {
            (What::Kill { leader }, true) => println!(
                "{}",
                json!({"kill": n, "leader": leader, "outage_ms": o.gap_ms, "recovery_90_ms": o.recovery_ms})
            ),
            (What::Kill { leader }, false) => println!(
                "kill {n}: leader n{leader}, outage {} ms, back to 90 % throughput after {recovery}",
                o.gap_ms
            ),
            (What::Transfer { from, to }, true) => println!(
                "{}",
                json!({"transfer": n, "from": from, "to": to, "outage_ms": o.gap_ms, "recovery_90_ms": o.recovery_ms})
            ),
            (What::Transfer { from, to }, false) => println!(
                "transfer {n}: n{from} to n{to}, outage {} ms, back to 90 % throughput after {recovery}",
                o.gap_ms
            ),
            (What::Replace { old, new }, true) => println!(
                "{}",
                json!({"replace": n, "old": old, "new": new, "outage_ms": o.gap_ms, "recovery_90_ms": o.recovery_ms})
            ),
            (What::Replace { old, new }, false) => println!(
                "replace {n}: n{old} by n{new}, longest pause in acknowledgements {} ms, back to 90 % throughput after {recovery}",
                o.gap_ms
            ),
        }
    }
    gaps.sort_unstable();
    if !json {
        let (p50, max) = (gaps[gaps.len() / 2], gaps[gaps.len() - 1]);
        println!(
            "outages over {} disruptions: p50 {p50} ms, max {max} ms",
            gaps.len()
        );
    }
}
