//! The runtime end to end on one glommio executor: three replicas of one
//! group, each with its own WAL on disk, linked in-process through the wire
//! codec; the KV store on top.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use rkyv::util::AlignedVec;
use synod_engine::protocol::{ClientId, Config, GroupId, NodeId, Refusal};
use synod_engine::runtime::codec::{decode_envelope, BatchLimits};
use synod_engine::runtime::group::start_group;
use synod_engine::runtime::kv::{Kv, KvCommand, KvOp, KvReply};
use synod_engine::runtime::{
    GroupHandle, GroupOptions, GroupStatus, PeerLink, ProposeOutcome, ReadOutcome,
};
use synod_wal::WalConfig;

/// Within the 8 MiB memlock limit even with test binaries running in parallel.
const IO_MEMORY_BYTES: usize = 1 << 20;

type Handles = Rc<RefCell<HashMap<NodeId, GroupHandle>>>;

/// Decodes every message as the transport would, then hands it over.
struct Loopback {
    handles: Handles,
}

impl PeerLink for Loopback {
    fn send(&self, to: NodeId, body: AlignedVec) -> bool {
        let frame = Bytes::from_owner(body);
        let limits = BatchLimits {
            batch_bytes_max: 256 << 10,
            command_bytes_max: 64 << 10,
        };
        let (_, envelope) =
            decode_envelope(&frame, &frame, limits).expect("peers send valid frames");
        match self.handles.borrow().get(&to) {
            Some(handle) => handle.try_deliver(envelope),
            None => false,
        }
    }
}

struct Cluster {
    handles: Handles,
    statuses: HashMap<NodeId, Rc<GroupStatus>>,
}

async fn start(dir: &Path) -> Cluster {
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let handles: Handles = Rc::default();
    let mut statuses = HashMap::new();
    for id in &members {
        let mut config = Config::new(*id, members.clone());
        config.batch_bytes_max = 256 << 10;
        config.command_bytes_max = 64 << 10;
        let options = GroupOptions {
            config,
            wal_dir: dir.join(format!("n{}", id.0)),
            wal: WalConfig {
                write_bytes_max: 64 << 10,
                segment_bytes_max: 4 << 20,
                frame_body_bytes_max: 512 << 10,
            },
            tick: Duration::from_millis(2),
        };
        let link = Rc::new(Loopback {
            handles: handles.clone(),
        });
        let (handle, status, task) = start_group(options, GroupId(0), Kv::default(), link)
            .await
            .expect("group starts");
        glommio::spawn_local(async move {
            if let Err(error) = task.await {
                panic!("group stopped: {error}");
            }
        })
        .detach();
        handles.borrow_mut().insert(*id, handle);
        statuses.insert(*id, status);
    }
    Cluster { handles, statuses }
}

impl Cluster {
    async fn leader(&self) -> NodeId {
        for _ in 0..2_000 {
            let leaders: Vec<NodeId> = self
                .statuses
                .iter()
                .filter(|(_, s)| s.leading.get())
                .map(|(id, _)| *id)
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        panic!("no leader within 10 s");
    }

    fn handle(&self, id: NodeId) -> GroupHandle {
        self.handles.borrow()[&id].clone()
    }

    async fn stop(self) {
        let handles: Vec<GroupHandle> = self.handles.borrow().values().cloned().collect();
        for handle in handles {
            handle.stop().await;
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

fn put(key: &str, value: &str) -> Bytes {
    KvCommand {
        now_ms: 0,
        op: KvOp::Put {
            key: key.into(),
            value: value.into(),
            ttl_ms: None,
        },
    }
    .encode()
}

fn run<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .spawn(test)
        .expect("executor starts")
        .join()
        .expect("test panicked");
}

#[test]
fn three_replicas_commit_serve_reads_and_recover_from_their_wals() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = start(dir.path()).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        let mut last = None;
        for i in 0..100u64 {
            let outcome = handle
                .propose(ClientId(1), i + 1, put(&format!("k{i}"), &format!("v{i}")))
                .await;
            let ProposeOutcome::Applied { index, reply } = outcome else {
                panic!("proposal {i}: {outcome:?}")
            };
            assert_eq!(KvReply::decode(&reply).unwrap(), KvReply::Done(None));
            assert!(last.is_none_or(|l| index > l), "indexes rise");
            last = Some(index);
        }
        // A retry of the last command is answered from the session, not re-applied.
        let retry = handle.propose(ClientId(1), 100, put("k99", "v99")).await;
        assert!(
            matches!(retry, ProposeOutcome::Applied { index, .. } if Some(index) == last),
            "{retry:?}"
        );

        let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
        let refused = cluster
            .handle(follower)
            .propose(ClientId(2), 1, put("x", "y"))
            .await;
        assert_eq!(
            refused,
            ProposeOutcome::Refused(Refusal::NotLeader(Some(leader)))
        );

        let read = handle.read(Bytes::from_static(b"k42")).await;
        assert_eq!(
            read,
            ReadOutcome::Value(KvReply::Value(Some(b"v42".to_vec())).encode())
        );
        cluster.stop().await;

        // Everything acknowledged survives a restart of every replica.
        let cluster = start(dir.path()).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        for key in ["k0", "k42", "k99"] {
            let read = handle.read(Bytes::copy_from_slice(key.as_bytes())).await;
            let expected = format!("v{}", &key[1..]).into_bytes();
            assert_eq!(
                read,
                ReadOutcome::Value(KvReply::Value(Some(expected)).encode()),
                "{key}"
            );
        }
        cluster.stop().await;
    });
}
