//! The leader's clock for leases and TTL keys: on each group this node
//! leads, a `Tick` is proposed when a key or a lease comes due, so expiry
//! happens on time on an idle store, by the leader's clock, through the
//! log (every replica expires the same keys at the same index).
//!
//! A new leader's clock may run ahead of the old one's. So that no lease
//! ends early for it, the first thing a new leader commits is a `Tick`
//! that renews every lease (as etcd does on promotion), and until that is
//! applied its port answers KV writes `Busy`: no write stamped by the new
//! clock reaches the store before the renewal.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_executor::block_on;
use futures_util::future::join_all;
use synod_client_proto::KvOp;
use synod_engine::protocol::{Ballot, GroupId};
use synod_engine::runtime::node::NodeHandle;
use synod_engine::runtime::{ProposeOutcome, ReadOutcome};

use super::clock::now_ms;
use super::kv::KvCommand;
use super::machine::{kv_command, next_due_query, parse_next_due};

/// How often each led group is looked at.
pub const TICK_EVERY: Duration = Duration::from_millis(25);

/// Per group, the leadership (ballot) whose lease renewal is applied.
#[derive(Debug)]
pub struct Renewals {
    by_group: Vec<Mutex<Option<Ballot>>>,
}

impl Renewals {
    /// For `groups` groups, none renewed yet.
    pub fn new(groups: u32) -> Arc<Renewals> {
        let by_group = (0..groups).map(|_| Mutex::new(None)).collect();
        Arc::new(Renewals { by_group })
    }

    /// Whether the leases of `group` were renewed under `ballot`.
    pub fn renewed(&self, group: u32, ballot: Ballot) -> bool {
        self.by_group
            .get(group as usize)
            .and_then(|renewed| *renewed.lock().unwrap_or_else(|e| e.into_inner()))
            == Some(ballot)
    }

    fn set(&self, group: u32, ballot: Ballot) {
        if let Some(renewed) = self.by_group.get(group as usize) {
            *renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(ballot);
        }
    }
}

/// Starts the clock's thread; it ends when the node's groups stop.
pub fn start(
    handle: NodeHandle,
    groups: u32,
    renewals: Arc<Renewals>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("lease-clock".into())
        .spawn(move || {
            while tick(&handle, groups, &renewals) {
                std::thread::sleep(TICK_EVERY);
            }
        })
}

/// Looks at every group once, all at the same time (a group that cannot
/// commit holds back only itself, until its leader steps down); false once
/// the node has stopped.
fn tick(handle: &NodeHandle, groups: u32, renewals: &Renewals) -> bool {
    let statuses = block_on(join_all(
        (0..groups).map(|group| handle.status(GroupId(group))),
    ));
    if statuses.iter().any(Option::is_none) {
        return false;
    }
    let led = statuses
        .into_iter()
        .enumerate()
        .filter_map(|(group, status)| status.filter(|s| s.leading).map(|s| (group as u32, s)));
    block_on(join_all(led.map(|(group, status)| async move {
        let id = GroupId(group);
        if !renewals.renewed(group, status.promised) {
            if propose_tick(handle, id, true).await {
                renewals.set(group, status.promised);
            }
            return;
        }
        let due = match handle.read_local(id, next_due_query()).await {
            ReadOutcome::Value(answer) => parse_next_due(&answer),
            _ => None,
        };
        if due.is_some_and(|at| at <= now_ms()) {
            propose_tick(handle, id, false).await;
        }
    })));
    true
}

/// Proposes a tick stamped with this node's clock; whether it was applied.
async fn propose_tick(handle: &NodeHandle, group: GroupId, renew: bool) -> bool {
    let command = kv_command(&KvCommand {
        now_ms: now_ms(),
        op: KvOp::Tick { renew },
    });
    let outcome = handle.propose(group, command).await;
    matches!(outcome, ProposeOutcome::Applied { .. })
}
