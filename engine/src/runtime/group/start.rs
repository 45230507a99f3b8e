//! Starting a group: its files read and checked, its core recovered.

use std::rc::Rc;

use bytes::Bytes;
use glommio::channels::local_channel;
use rkyv::util::AlignedVec;
use synod_wal::{Position, Wal};

use super::driver::GroupDriver;
use super::marker::write_marker;
use super::promise_record::PromiseRecord;
use super::{
    GroupError, GroupHandle, GroupOptions, GroupStatus, PartialState, PeerLink, PROMISE_FILE,
    REBUILDING_FILE, WRITE_OVERHEAD_BYTES,
};
use crate::group::{CoreError, CoreOptions, GroupAction, GroupCore, Recovery, StateMachine};
use crate::protocol::{ConfigError, GroupId, Write};
use crate::runtime::codec::{
    decode_wal_accept, decode_write, BatchLimits, KIND_WAL_ACCEPT, KIND_WAL_WRITE,
};
use crate::runtime::snapshot_file;

/// Opens the WAL, recovers the group's core and returns the task's future
/// with the group's handle. Spawn the future on the executor that owns the
/// group.
pub async fn start_group<S: StateMachine>(
    options: GroupOptions,
    group: GroupId,
    machine: S,
    link: Rc<dyn PeerLink>,
) -> Result<
    (
        GroupHandle,
        Rc<GroupStatus>,
        impl std::future::Future<Output = Result<(), GroupError>>,
    ),
    GroupError,
> {
    options.config.validate()?;
    if (options.wal.frame_body_bytes_max as u64)
        < u64::from(options.config.batch_bytes_max) + WRITE_OVERHEAD_BYTES
    {
        return Err(GroupError::Config(ConfigError::Invalid {
            field: "wal.frame_body_bytes_max",
            reason: format!("must hold a full batch plus {WRITE_OVERHEAD_BYTES} bytes of record"),
        }));
    }
    let limits = BatchLimits {
        batch_bytes_max: options.config.batch_bytes_max as usize,
        command_bytes_max: options.config.command_bytes_max as usize,
    };
    let snapshot_path = snapshot_file::snapshot_path(&options.wal_dir);
    let snapshot = snapshot_file::read(&snapshot_path)?;
    let wal_existed = options
        .wal_dir
        .join(synod_wal::layout::META_FILE_NAME)
        .exists();
    if snapshot.is_some() && !wal_existed {
        return Err(GroupError::PartialState(PartialState::SnapshotWithoutWal {
            snapshot: snapshot_path,
            wal_dir: options.wal_dir,
        }));
    }
    let (wal, report) = Wal::open(&options.wal_dir, options.wal.clone()).await?;
    if snapshot.is_none() && wal.first_position() > Position(0) {
        return Err(GroupError::PartialState(PartialState::WalWithoutSnapshot {
            wal_dir: options.wal_dir,
            first: wal.first_position(),
            snapshot: snapshot_path,
        }));
    }
    if let Some(torn) = &report.torn {
        tracing::warn!(
            group = group.0,
            ?torn,
            "WAL had a damaged tail; truncated. What it held may have been acknowledged: \
             this replica rebuilds from its peers before it votes again"
        );
    }
    let writes = read_writes(&wal, group, limits).await?;
    tracing::info!(
        group = group.0,
        frames = writes.len(),
        snapshot = snapshot.is_some(),
        "recovering from the snapshot and the WAL"
    );
    let marker = options.wal_dir.join(REBUILDING_FILE);
    let (mut promise_record, recorded) = PromiseRecord::read(&options.wal_dir.join(PROMISE_FILE))?;
    let recovery = Recovery {
        snapshot,
        writes,
        wal_next: wal.next_position(),
        marked_rebuilding: marker.exists(),
        rejoin_if_empty: options.rejoin,
        tail_cut: report.torn.is_some(),
        promise_record: recorded,
    };
    let pipeline_max = options.config.pipeline_max;
    let core_options = CoreOptions::new(options.config, options.snapshot, rand::random());
    let mut first = Vec::new();
    let core = GroupCore::recover(core_options, machine, recovery, &mut first).map_err(
        |error| match error {
            CoreError::Config(error) => GroupError::Config(error),
            CoreError::Snapshot(error) => GroupError::Snapshot(error),
            CoreError::Restore { reason } => GroupError::Restore {
                path: snapshot_path.clone(),
                reason,
            },
        },
    )?;
    if first
        .iter()
        .any(|a| matches!(a, GroupAction::MarkRebuilding))
    {
        write_marker(&marker)?;
        tracing::warn!(
            group = group.0,
            known_floor = recorded.is_some(),
            "rebuilding from the peers (this replica's disk was lost, or its WAL's tail was damaged): it votes for nothing until a leader above the highest ballot it may have promised (from its promise record if it has one, else from every peer) has shared what it recovered"
        );
    }
    // A data directory older than the record starts one from its intact WAL.
    for action in &first {
        if let GroupAction::RecordPromise(ballot) = action {
            promise_record.write(*ballot)?;
        }
    }
    first.retain(|a| !matches!(a, GroupAction::RecordPromise(_)));
    let (tx, rx) = local_channel::new_bounded(1024);
    let inputs = Rc::new(tx);
    let status = Rc::new(GroupStatus::default());
    let mut driver = GroupDriver::new(
        group,
        core,
        Rc::new(wal),
        link,
        inputs.clone(),
        status.clone(),
        options.metrics,
        pipeline_max,
        options.commit_history_bytes,
        snapshot_path,
        marker,
        promise_record,
    );
    // The recovered slots were applied; their actions only count.
    driver.carry_out_recovered(first);
    let handle = GroupHandle { inputs };
    Ok((handle, status, driver.run(rx, options.tick)))
}

async fn read_writes(
    wal: &Wal,
    group: GroupId,
    limits: BatchLimits,
) -> Result<Vec<(Position, Write)>, GroupError> {
    let mut writes = Vec::new();
    let mut failure = None;
    wal.read_frames(wal.first_position(), |position, kind, body| {
        if failure.is_some() || ![KIND_WAL_WRITE, KIND_WAL_ACCEPT].contains(&kind) {
            return;
        }
        // Recovery copies each body once into an aligned buffer it owns, so
        // the batches can keep slices of it.
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(body);
        let frame = Bytes::from_owner(aligned);
        let write = if kind == KIND_WAL_ACCEPT {
            decode_wal_accept(&frame, group, limits)
        } else {
            decode_write(&frame, &frame, limits)
        };
        match write {
            Ok(write) => writes.push((position, write)),
            Err(source) => failure = Some(GroupError::Corrupt { position, source }),
        }
    })
    .await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(writes),
    }
}
