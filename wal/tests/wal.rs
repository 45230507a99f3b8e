//! Append, group commit, rollover, truncation and fault handling of the WAL.

mod common;

use common::{body, frames_of, run, small_config, Faulty};
use synod_wal::{Position, Wal, WalConfig, WalError};

#[test]
fn append_sync_reopen_reads_back() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(
            (report.frames, report.next_position, report.torn),
            (0, Position(0), None)
        );
        for i in 0..10u64 {
            assert_eq!(
                wal.append(i as u16, &body(i, i as usize * 7)).unwrap(),
                Position(i)
            );
        }
        assert_eq!(wal.durable(), Position(0));
        assert_eq!(wal.sync().await.unwrap(), Position(10));
        wal.close().await.unwrap();

        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(
            (report.frames, report.next_position, report.torn),
            (10, Position(10), None)
        );
        let frames = frames_of(&wal).await;
        for (i, (p, k, b)) in frames.iter().enumerate() {
            assert_eq!((*p, *k, b), (i as u64, i as u16, &body(i as u64, i * 7)));
        }
        assert_eq!(wal.append(0, b"more").unwrap(), Position(10));
    });
}

#[test]
fn partial_block_rewrite_keeps_durable_frames() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        // Many small commits share the first block; each rewrites it.
        for i in 0..200u64 {
            wal.append(1, &body(i, 5)).unwrap();
            wal.sync().await.unwrap();
        }
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.frames, 200);
        let frames = frames_of(&wal).await;
        assert!(frames
            .iter()
            .enumerate()
            .all(|(i, f)| f.2 == body(i as u64, 5)));
    });
}

#[test]
fn rollover_creates_segments_and_recovers_across_them() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for i in 0..100u64 {
            wal.append(2, &body(i, 3000)).unwrap();
        }
        wal.sync().await.unwrap();
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert!(report.segments >= 4, "{report:?}");
        assert_eq!(report.frames, 100);
        assert_eq!(frames_of(&wal).await.len(), 100);
    });
}

#[test]
fn with_fsync_off_sync_writes_but_never_fdatasyncs() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Faulty::default();
        let config = WalConfig {
            fsync: false,
            ..small_config()
        };
        let (wal, _) = Wal::open_with(storage.clone(), dir.path(), config.clone())
            .await
            .unwrap();
        for i in 0..40 {
            let position = wal.append(1, &body(i, 1000)).unwrap();
            assert!(wal.sync().await.unwrap() > position);
        }
        assert_eq!(storage.fdatasyncs.get(), 0);
        assert_eq!(storage.durable_writes.get(), 0);
        drop(wal);
        // The frames were written all the same (segments roll over too).
        let (wal, _) = Wal::open_with(storage.clone(), dir.path(), config)
            .await
            .unwrap();
        assert_eq!(frames_of(&wal).await.len(), 40);
    });
}

#[test]
fn a_commit_of_one_write_makes_it_durable_in_it_and_one_of_several_pays_one_fdatasync() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Faulty::default();
        let config = small_config();
        let (wal, _) = Wal::open_with(storage.clone(), dir.path(), config.clone())
            .await
            .unwrap();
        wal.append(1, &body(0, 100)).unwrap();
        wal.sync().await.unwrap();
        assert_eq!(storage.durable_writes.get(), 1);
        assert_eq!(storage.fdatasyncs.get(), 1, "the durable write's own");
        // Three writes' worth in one commit, within one segment.
        let frames = 3 * config.write_bytes_max / 5000;
        for i in 0..frames as u64 {
            wal.append(1, &body(i, 5000)).unwrap();
        }
        wal.sync().await.unwrap();
        assert_eq!(storage.durable_writes.get(), 1);
        assert_eq!(storage.fdatasyncs.get(), 2);
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), config).await.unwrap();
        assert_eq!(frames_of(&wal).await.len(), frames + 1);
    });
}

/// What a sync waits for is up to two commits; what the WAL reports as its
/// commit time is one (the pipeline window sizes itself by it).
#[test]
fn the_commit_time_is_the_disk_cycle_not_the_wait_of_a_sync() {
    use std::time::{Duration, Instant};
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let delay = Duration::from_millis(50);
        let storage = common::VolatileCache::with_fdatasync_delay(delay);
        let (wal, _) = Wal::open_with(storage, dir.path(), small_config())
            .await
            .unwrap();
        assert_eq!(wal.last_commit_time(), None);
        wal.append(1, &body(0, 100)).unwrap();
        let first = {
            let wal = wal.clone();
            glommio::spawn_local(async move { wal.sync().await.unwrap() })
        };
        // The first commit is now in its fdatasync; this sync waits for it,
        // then for its own.
        glommio::timer::sleep(Duration::from_millis(1)).await;
        wal.append(1, &body(1, 100)).unwrap();
        let started = Instant::now();
        wal.sync().await.unwrap();
        let waited = started.elapsed();
        first.await;
        let commit = wal.last_commit_time().expect("two commits ran");
        assert!(commit >= delay, "commit {commit:?}");
        assert!(
            waited >= commit + delay / 2,
            "waited {waited:?}, commit {commit:?}"
        );
    });
}

#[test]
fn group_commit_shares_fdatasyncs_between_appenders() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Faulty::default();
        let (wal, _) = Wal::open_with(storage.clone(), dir.path(), small_config())
            .await
            .unwrap();
        let appenders = 64u64;
        let tasks: Vec<_> = (0..appenders)
            .map(|i| {
                let wal = wal.clone();
                glommio::spawn_local(async move {
                    let position = wal.append(1, &body(i, 100)).unwrap();
                    let durable = wal.sync().await.unwrap();
                    assert!(durable > position);
                    assert!(wal.durable() > position);
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        assert!(
            storage.fdatasyncs.get() < appenders as u32 / 2,
            "{} fdatasyncs",
            storage.fdatasyncs.get()
        );
        assert_eq!(frames_of(&wal).await.len(), appenders as usize);
    });
}

#[test]
fn failed_fdatasync_is_fatal_and_never_retried() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Faulty::default();
        storage.fail_fdatasync_number.set(Some(2));
        let (wal, _) = Wal::open_with(storage.clone(), dir.path(), small_config())
            .await
            .unwrap();
        wal.append(1, b"acknowledged").unwrap();
        wal.sync().await.unwrap();
        wal.append(1, b"lost").unwrap();
        assert!(matches!(wal.sync().await, Err(WalError::Fatal(_))));
        assert!(matches!(wal.append(1, b"refused"), Err(WalError::Fatal(_))));
        assert!(matches!(wal.sync().await, Err(WalError::Fatal(_))));
        assert!(matches!(
            wal.truncate_after(Position(0)).await,
            Err(WalError::Fatal(_))
        ));
        assert_eq!(wal.durable(), Position(1));
        assert_eq!(
            storage.fdatasyncs.get(),
            2,
            "the failed fdatasync was retried"
        );
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(frames_of(&wal).await[0].2, b"acknowledged");
    });
}

#[test]
fn failed_write_is_fatal() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Faulty::default();
        let (wal, _) = Wal::open_with(storage.clone(), dir.path(), small_config())
            .await
            .unwrap();
        storage.fail_writes.set(true);
        wal.append(1, b"x").unwrap();
        assert!(matches!(wal.sync().await, Err(WalError::Fatal(_))));
        assert_eq!(storage.fdatasyncs.get(), 0);
        assert!(matches!(wal.append(1, b"y"), Err(WalError::Fatal(_))));
    });
}

#[test]
fn truncate_after_replaces_the_suffix_durably() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for i in 0..60u64 {
            wal.append(1, &body(i, 2000)).unwrap();
        }
        wal.sync().await.unwrap();
        wal.truncate_after(Position(9)).await.unwrap();
        assert_eq!(
            (wal.next_position(), wal.durable()),
            (Position(10), Position(10))
        );
        assert_eq!(wal.append(7, b"higher ballot").unwrap(), Position(10));
        wal.sync().await.unwrap();
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!((report.frames, report.segments, report.torn), (11, 1, None));
        let frames = frames_of(&wal).await;
        assert_eq!(frames[10], (10, 7, b"higher ballot".to_vec()));
        assert!(frames[..10]
            .iter()
            .enumerate()
            .all(|(i, f)| f.2 == body(i as u64, 2000)));
        // Pending frames are cut too, and the truncation can cross segments.
        for i in 11..40u64 {
            wal.append(1, &body(i, 2000)).unwrap();
        }
        wal.truncate_after(Position(0)).await.unwrap();
        assert_eq!(frames_of(&wal).await.len(), 1);
        assert!(matches!(wal.truncate_after(Position(5)).await, Ok(())));
    });
}

#[test]
fn remove_before_drops_whole_old_segments_only() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for i in 0..100u64 {
            wal.append(1, &body(i, 3000)).unwrap();
        }
        wal.sync().await.unwrap();
        let first = wal.remove_before(Position(50)).await.unwrap();
        assert!(first > Position(0) && first <= Position(50), "{first}");
        assert_eq!(wal.first_position(), first);
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(
            (report.first_position, report.next_position),
            (first, Position(100))
        );
        let frames = frames_of(&wal).await;
        assert_eq!(frames[0].0, first.0);
        assert!(frames.iter().all(|f| f.2 == body(f.0, 3000)));
        assert!(matches!(
            wal.truncate_after(Position(first.0 - 2)).await,
            Err(WalError::OutOfRange { .. })
        ));
        // Removing everything below the end keeps the segment being written.
        wal.remove_before(Position(100)).await.unwrap();
        assert_eq!(wal.append(1, b"x").unwrap(), Position(100));
    });
}

#[test]
fn oversized_frames_and_bad_config_are_refused() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config();
        config.segment_bytes_max = 1000;
        assert!(matches!(
            Wal::open(dir.path(), config).await,
            Err(WalError::Config(_))
        ));
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert!(matches!(
            wal.append(1, &vec![0; 9000]),
            Err(WalError::FrameTooLarge { .. })
        ));
    });
}

/// Many appenders, a slow fdatasync, and a power cut at some instant:
/// every frame `sync` had reported durable by then is in what the disk
/// kept, which holds only the writes an fdatasync had covered.
#[test]
#[allow(clippy::type_complexity)]
fn a_sync_reports_durable_only_what_an_fdatasync_covered() {
    use std::cell::RefCell;
    use std::rc::Rc;
    for cut_after in [5usize, 40, 150] {
        run(move || async move {
            let dir = tempfile::tempdir().unwrap();
            let storage =
                common::VolatileCache::with_fdatasync_delay(std::time::Duration::from_millis(2));
            let (wal, _) = Wal::open_with(storage.clone(), dir.path(), small_config())
                .await
                .unwrap();
            // (position, body) of every frame reported durable, in order.
            let acked: Rc<RefCell<Vec<(u64, Vec<u8>)>>> = Rc::default();
            let tasks: Vec<_> = (0..16u64)
                .map(|task| {
                    let (wal, acked) = (wal.clone(), acked.clone());
                    glommio::spawn_local(async move {
                        for i in 0..20u64 {
                            let n = task * 100 + i;
                            let data = body(n, 100 + (n as usize * 37) % 2000);
                            let position = wal.append(1, &data).unwrap();
                            let durable = wal.sync().await.unwrap();
                            assert!(durable > position);
                            acked.borrow_mut().push((position.0, data));
                        }
                    })
                })
                .collect();
            let crashed = tempfile::tempdir().unwrap();
            let watcher = {
                let (acked, storage) = (acked.clone(), storage.clone());
                let (from, into) = (dir.path().to_path_buf(), crashed.path().to_path_buf());
                glommio::spawn_local(async move {
                    while acked.borrow().len() < cut_after {
                        glommio::yield_if_needed().await;
                        glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
                    }
                    storage.crash_image(&from, &into);
                    acked.borrow().clone()
                })
            };
            for task in tasks {
                task.await;
            }
            let acked_at_cut = watcher.await;
            drop(wal);
            let (wal, _) = Wal::open(crashed.path(), small_config()).await.unwrap();
            let kept: std::collections::BTreeMap<u64, Vec<u8>> = frames_of(&wal)
                .await
                .into_iter()
                .map(|(p, _, b)| (p, b))
                .collect();
            for (position, data) in &acked_at_cut {
                assert_eq!(
                    kept.get(position),
                    Some(data),
                    "frame {position} was reported durable before the cut and is gone"
                );
            }
        });
    }
}
