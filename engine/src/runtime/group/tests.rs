//! The group task's own plumbing.

use std::time::Instant;

use glommio::channels::local_channel;
use glommio::{LocalExecutorBuilder, Placement};

use super::*;

fn chunk(offset: u64) -> SnapshotChunk {
    SnapshotChunk {
        upto: Slot(9),
        offset,
        total: 2,
        data: Bytes::from_static(b"x"),
    }
}

/// A chunk that meets a full queue waits for room rather than being
/// dropped (a dropped one restarts the whole transfer), but not for
/// longer than it is told.
#[test]
fn a_chunk_waits_for_room_in_a_full_queue_within_its_patience() {
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(|| async {
            let (tx, rx) = local_channel::new_bounded(1);
            let handle = GroupHandle {
                inputs: Rc::new(tx),
            };
            assert!(
                handle.try_deliver_chunk(NodeId(2), chunk(0)),
                "room for one"
            );
            assert!(!handle.try_deliver_chunk(NodeId(2), chunk(1)), "full");
            let patience = Duration::from_millis(200);
            let started = Instant::now();
            assert!(
                !handle
                    .deliver_chunk(NodeId(2), chunk(1), Duration::from_millis(20))
                    .await,
                "nobody drains the queue: given up"
            );
            assert!(started.elapsed() < patience);
            let drain = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(10)).await;
                let mut taken = Vec::new();
                while let Some(input) = rx.recv().await {
                    taken.push(input);
                    if taken.len() == 2 {
                        break;
                    }
                }
                taken
            });
            assert!(handle.deliver_chunk(NodeId(2), chunk(1), patience).await);
            let taken = drain.await;
            assert!(matches!(
                taken[1],
                Inbound::SnapshotChunk(NodeId(2), SnapshotChunk { offset: 1, .. })
            ));
        })
        .unwrap()
        .join()
        .unwrap();
}
