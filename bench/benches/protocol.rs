//! The protocol core alone: a 3-replica in-memory cluster in one thread, no
//! I/O, 16-byte commands proposed in chunks until every replica applied them.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use synod_bench::inmem::InMemoryCluster;
use synod_engine::protocol::{ClientId, Command};

const COMMANDS_PER_ITER: u64 = 65_536;

fn commands(n: u64) -> Vec<Command> {
    (0..n)
        .map(|i| Command {
            client: ClientId(0),
            seq: i,
            data: Bytes::copy_from_slice(&i.to_le_bytes().repeat(2)),
        })
        .collect()
}

fn synod_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_16b_3_replicas");
    group.throughput(Throughput::Elements(COMMANDS_PER_ITER));
    group.sample_size(10);
    for chunk in [1u64, 64, 1024] {
        let per_iter = if chunk == 1 {
            COMMANDS_PER_ITER / 16
        } else {
            COMMANDS_PER_ITER
        };
        group.throughput(Throughput::Elements(per_iter));
        let all = commands(per_iter);
        group.bench_with_input(BenchmarkId::new("synod", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut cluster = InMemoryCluster::new(3, |_| {});
                for slice in all.chunks(chunk as usize) {
                    cluster.propose(slice);
                }
                cluster.wait_applied(per_iter);
                assert!(cluster.logs_agree(), "replica logs differ");
                assert_eq!(cluster.applied(), [per_iter; 3]);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, synod_commit);
criterion_main!(benches);
