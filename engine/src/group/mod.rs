//! The group core: everything deterministic about one Multi-Paxos group,
//! sans-IO like the protocol it wraps. The runtime (`runtime/`) and the
//! simulator (`sim/`) both execute it; neither holds a copy of its logic.
//!
//! ```text
//!                 ┌──────────────────── GroupCore ─────────────────────┐
//!  Message ──────►│ Replica (protocol/)                                │──► Append {position, write}
//!  Propose ──────►│   Commit ─► sessions ─► StateMachine ─► waiters ───│──► Sync, Send
//!  Read/ReadLocal►│   Reply  ─► waiters / reads ───────────────────────│──► Answer, AnswerMany, AnswerRead
//!  Persisted ────►│ snapshot policy ─► capture ────────────────────────│──► SaveSnapshot (encode off-core)
//!  Tick ─────────►│ SnapshotSaved ─► compact log, cut WAL ─────────────│──► RemoveWalBefore(position)
//!  SnapshotChunk ►│ transfers ─► decode ─► restore ─► install ─────────│──► SnapshotInstalled, SaveSnapshot
//!  Snapshot{Saved,│ rebuild mark, promise record ──────────────────────│──► MarkRebuilding, EndRebuild, RecordPromise
//!   Skipped} ────►│                                                    │──► Applied, Entry, SendSnapshot
//!                 └────────────────────────────────────────────────────┘
//! ```
//!
//! The executor carries the actions out in order. It owns what is not
//! deterministic: the clock (it feeds `Tick`), the disk (it reports
//! `Persisted` after a sync, `SnapshotSaved` after a file is durable), the
//! network, and the callers waiting for answers (opaque [`Callers`]).
//! The core counts the WAL's frames itself, so it knows which position each
//! write lands at and can name the cut without asking the disk.

mod action;
pub(crate) mod apply;
pub(crate) mod archive;
mod compaction;
mod core;
pub mod snapshot;
pub mod state_machine;
mod waiters;

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) use self::core::CoreFaults;
pub use self::core::{CoreError, CoreOptions, GroupCore, Recovery};
pub use action::{
    Callers, GroupAction, GroupInput, Proposal, ProposeOutcome, ReadOutcome, SnapshotJob,
    SnapshotStart,
};
pub use state_machine::{Applying, Capture, StateMachine};
