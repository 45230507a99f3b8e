//! Model-based test: random append / sync / crash / truncate / remove
//! sequences against a `Vec` model. A crash keeps a random prefix of the
//! unsynced frames' bytes (as if the write had partly reached the disk) and
//! may tear the last byte kept. Every frame reported durable must survive;
//! nothing that was not appended, or is damaged, may come back.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::{frames_of, run, small_config};
use proptest::prelude::*;
use synod_wal::frame::{encode_frame, frame_bytes};
use synod_wal::scan::scan_segment;
use synod_wal::{Position, Wal};

#[derive(Clone, Debug)]
enum Op {
    Append {
        kind: u16,
        len_bytes: usize,
        fill: u8,
    },
    Sync,
    Crash {
        keep_permille: u32,
        tear: bool,
    },
    TruncateAfter(usize),
    RemoveBefore(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u16>(), 0usize..3000, any::<u8>()).prop_map(|(kind, len_bytes, fill)| Op::Append { kind, len_bytes, fill }),
        3 => Just(Op::Sync),
        2 => (0u32..=1000, any::<bool>()).prop_map(|(keep_permille, tear)| Op::Crash { keep_permille, tear }),
        1 => any::<usize>().prop_map(Op::TruncateAfter),
        1 => any::<usize>().prop_map(Op::RemoveBefore),
    ]
}

#[derive(Debug, Default)]
struct Model {
    first: u64,
    frames: Vec<(u16, Vec<u8>)>,
    /// frames[..durable] were reported durable.
    durable: usize,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.frames.len() as u64
    }
}

/// Lands a prefix of the unsynced frames in the last segment, as a write
/// that reached the disk only in part; returns how many whole, undamaged
/// frames that leaves.
fn land_partial_write(dir: &Path, model: &Model, keep_permille: u32, tear: bool) -> usize {
    let Some((first, path)) = synod_wal::layout::list_segments(dir).unwrap().pop() else {
        return 0;
    };
    let image = std::fs::read(&path).unwrap();
    let scan = scan_segment(&image, first, true).unwrap();
    let data_end = scan.data_end_bytes as usize;
    let seq_start = first.0 + scan.frames.len() as u64;
    assert_eq!(
        seq_start,
        model.first + model.durable as u64,
        "disk holds exactly the durable frames"
    );
    let segment_bytes_max = small_config().segment_bytes_max as usize;
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for (seq, (kind, body)) in (seq_start..).zip(&model.frames[model.durable..]) {
        if data_end + bytes.len() + frame_bytes(body.len()) > segment_bytes_max
            && data_end + bytes.len() > 0
        {
            break; // would start a new segment, whose file does not exist yet
        }
        encode_frame(*kind, seq, body, &mut bytes).unwrap();
        ends.push(bytes.len());
    }
    let keep = bytes.len() * keep_permille as usize / 1000;
    // A frame survives if its bytes past `keep` are zeros anyway (the disk
    // holds zeros there), unless the tear flipped one of its bytes.
    let torn_at = (tear && keep > 0).then(|| keep - 1);
    let mut start = 0;
    let mut whole = 0;
    for end in ends {
        let missing_are_zero = bytes[keep.max(start).min(end)..end].iter().all(|b| *b == 0);
        if !missing_are_zero || torn_at.is_some_and(|t| (start..end).contains(&t)) {
            break;
        }
        whole += 1;
        start = end;
    }
    bytes.truncate(keep);
    if let Some(t) = torn_at {
        bytes[t] ^= 0xa5;
    }
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(data_end as u64)).unwrap();
    file.write_all(&bytes).unwrap();
    whole
}

async fn check(wal: &Wal, model: &Model) {
    assert_eq!(wal.first_position(), Position(model.first));
    let frames = frames_of(wal).await;
    assert_eq!(frames.len(), model.durable);
    for (i, (p, k, b)) in frames.iter().enumerate() {
        assert_eq!(*p, model.first + i as u64);
        assert_eq!(
            (*k, b),
            (model.frames[i].0, &model.frames[i].1),
            "frame {p}"
        );
    }
}

async fn apply(dir: &Path, mut wal: Wal, model: &mut Model, op: Op) -> Wal {
    match op {
        Op::Append {
            kind,
            len_bytes,
            fill,
        } => {
            let body = vec![fill; len_bytes];
            assert_eq!(wal.append(kind, &body).unwrap(), Position(model.next()));
            model.frames.push((kind, body));
        }
        Op::Sync => {
            assert_eq!(wal.sync().await.unwrap(), Position(model.next()));
            model.durable = model.frames.len();
        }
        Op::Crash {
            keep_permille,
            tear,
        } => {
            drop(wal);
            let landed = land_partial_write(dir, model, keep_permille, tear);
            let (reopened, report) = Wal::open(dir, small_config()).await.unwrap();
            model.durable += landed;
            model.frames.truncate(model.durable);
            assert_eq!(report.next_position, Position(model.next()), "{report:?}");
            check(&reopened, model).await;
            wal = reopened;
        }
        Op::TruncateAfter(pick) if !model.frames.is_empty() => {
            let keep = 1 + pick % model.frames.len();
            wal.truncate_after(Position(model.first + keep as u64 - 1))
                .await
                .unwrap();
            model.frames.truncate(keep);
            model.durable = keep;
        }
        Op::TruncateAfter(_) => {}
        Op::RemoveBefore(pick) => {
            let keep_from = model.first + (pick % (model.frames.len() + 1)) as u64;
            let first = wal.remove_before(Position(keep_from)).await.unwrap().0;
            assert!(first >= model.first && first <= keep_from);
            let removed = (first - model.first) as usize;
            assert!(
                removed <= model.durable,
                "removed frames that were not durable"
            );
            model.frames.drain(..removed);
            model.durable -= removed;
            model.first = first;
        }
    }
    check_durable_prefix(&wal, model).await;
    wal
}

async fn check_durable_prefix(wal: &Wal, model: &Model) {
    assert!(wal.durable() >= Position(model.first + model.durable as u64));
    assert_eq!(wal.next_position(), Position(model.next()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_vec_model_across_crashes(ops in proptest::collection::vec(op(), 1..60)) {
        run(move || async move {
            let dir = tempfile::tempdir().unwrap();
            let (mut wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
            let mut model = Model::default();
            for op in ops {
                wal = apply(dir.path(), wal, &mut model, op).await;
            }
            // A final sync and reopen must return exactly the model.
            wal.sync().await.unwrap();
            model.durable = model.frames.len();
            drop(wal);
            let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
            check(&wal, &model).await;
        });
    }
}

#[test]
fn regression_truncate_noop_then_crash() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let mut model = Model::default();
        let ops = vec![
            Op::Append {
                kind: 0,
                len_bytes: 0,
                fill: 0,
            },
            Op::TruncateAfter(0),
            Op::Append {
                kind: 0,
                len_bytes: 0,
                fill: 0,
            },
            Op::Crash {
                keep_permille: 532,
                tear: false,
            },
        ];
        for op in ops {
            wal = apply(dir.path(), wal, &mut model, op).await;
        }
    });
}
