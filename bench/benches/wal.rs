//! WAL benches: one 64-byte frame append + sync at a time (latency), and
//! many appenders sharing commits (group-commit throughput). Run by
//! `bench/wal-baseline.sh` beside fio; CI runs them once in test mode.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use synod_wal::{Wal, WalConfig};

/// One executor per bench process: 4 MiB of io_memory, under the 8 MiB
/// memlock limit, room for a 1 MiB commit write and its successor.
fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(4 << 20)
        .make()
        .expect("glommio executor")
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes_max: 64 << 20,
        write_bytes_max: 1 << 20,
        frame_body_bytes_max: 1 << 20,
        fsync: true,
    }
}

/// Where the WAL under test lives: `SYNOD_WAL_BENCH_DIR` or the system temp dir.
fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SYNOD_WAL_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).expect("bench dir"),
        None => tempfile::tempdir().expect("bench dir"),
    }
}

fn append_sync_latency(c: &mut Criterion) {
    let ex = executor();
    let mut group = c.benchmark_group("wal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_sync_64B", |b| {
        b.iter_custom(|iters| {
            ex.run(async move {
                let dir = bench_dir();
                let (wal, _) = Wal::open(dir.path(), config()).await.expect("open");
                let body = [7u8; 64];
                let start = Instant::now();
                for _ in 0..iters {
                    wal.append(1, &body).expect("append");
                    wal.sync().await.expect("sync");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

const APPENDERS: usize = 64;
const GROUP_BODY_BYTES: usize = 16 << 10;

fn group_commit_throughput(c: &mut Criterion) {
    let ex = executor();
    let mut group = c.benchmark_group("wal");
    group.throughput(Throughput::Bytes((APPENDERS * GROUP_BODY_BYTES) as u64));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("group_commit_64x16KiB", |b| {
        b.iter_custom(|iters| ex.run(group_commit_round(iters)))
    });
    group.finish();
}

/// `APPENDERS` tasks each append and sync `iters` frames; one iteration is
/// one frame from every appender.
async fn group_commit_round(iters: u64) -> Duration {
    let dir = bench_dir();
    let (wal, _) = Wal::open(dir.path(), config()).await.expect("open");
    let start = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|_| {
            let wal = wal.clone();
            glommio::spawn_local(async move {
                let body = vec![3u8; GROUP_BODY_BYTES];
                for _ in 0..iters {
                    wal.append(2, &body).expect("append");
                    wal.sync().await.expect("sync");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    start.elapsed()
}

criterion_group!(benches, append_sync_latency, group_commit_throughput);
criterion_main!(benches);
