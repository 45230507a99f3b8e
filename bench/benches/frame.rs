//! Frame encode + validate: the acceptor's WAL frame for one Accept of a
//! batch of 64 16-byte commands (and of 16 1 KiB ones), encoded as the
//! runtime writes it (rkyv body, checksummed frame) and decoded as recovery
//! and the peer reader do (header, CRC32C, bytecheck, semantic checks, the
//! batch's records), the batch bytes sliced out of the frame, not copied.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use synod_engine::protocol::{Ballot, BatchBuilder, ClientId, Command, Entry, NodeId, Slot, Write};
use synod_engine::runtime::codec::{decode_write, encode_write, BatchLimits, KIND_WAL_WRITE};
use synod_wal::frame::{decode_frame, encode_frame};

const LIMITS: BatchLimits = BatchLimits {
    batch_bytes_max: 1 << 20,
    command_bytes_max: 64 << 10,
};

fn accept(commands: u64, size: usize) -> Write {
    let mut batch = BatchBuilder::with_capacity(commands as usize * (size + 20));
    for seq in 0..commands {
        batch.push(&Command {
            client: ClientId(7),
            seq,
            data: Bytes::from(vec![seq as u8; size]),
        });
    }
    Write::Accept {
        slot: Slot(1_000),
        entry: Entry {
            ballot: Ballot {
                round: 3,
                node: NodeId(1),
            },
            batch: batch.finish(),
        },
    }
}

fn frame_encode_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (commands, size) in [(64u64, 16usize), (16, 1024)] {
        let write = accept(commands, size);
        let id = format!("{commands}x{size}B");
        group.throughput(Throughput::Elements(commands));
        group.bench_with_input(BenchmarkId::new("encode", &id), &write, |b, write| {
            let mut out = Vec::with_capacity(64 << 10);
            b.iter(|| {
                out.clear();
                let body = encode_write(write);
                encode_frame(KIND_WAL_WRITE, 1, &body, &mut out).expect("encodes")
            })
        });
        let mut out = Vec::new();
        encode_frame(KIND_WAL_WRITE, 1, &encode_write(&write), &mut out).expect("encodes");
        // Bodies must sit 16-byte aligned, as in the WAL's and the reader's
        // buffers: copy the frame into an aligned buffer once.
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&out);
        let frame = Bytes::from_owner(aligned);
        group.bench_with_input(BenchmarkId::new("validate", &id), &frame, |b, frame| {
            b.iter(|| {
                let (_, body, _) = decode_frame(frame).expect("valid frame");
                match decode_write(frame, body, LIMITS).expect("valid write") {
                    Write::Accept { entry, .. } => {
                        assert_eq!(entry.batch.iter().count() as u64, commands)
                    }
                    _ => unreachable!("encoded an Accept"),
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, frame_encode_validate);
criterion_main!(benches);
