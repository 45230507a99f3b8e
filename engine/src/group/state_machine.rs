//! What an embedder implements: the state machine the log drives.

use bytes::Bytes;

use crate::protocol::{ClientId, LogIndex};

/// One command being applied: its place in the log, its session and its
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applying<'a> {
    /// The command's log index.
    pub index: LogIndex,
    /// The session that proposed it (0: none).
    pub client: ClientId,
    /// Its sequence number in that session.
    pub seq: u64,
    /// The command as proposed.
    pub data: &'a [u8],
}

/// A deterministic state machine. Every replica applies the same commands in
/// the same order and must reach the same state; retries are filtered out
/// before `apply` (client sessions), so each command is applied once.
pub trait StateMachine: 'static {
    /// Applies a batch of commands, in order; returns one reply per command.
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes>;
    /// Answers a read-only query against the current state.
    fn query(&self, query: &[u8]) -> Bytes;
    /// Captures the whole state, for a lagging replica or for compaction.
    ///
    /// Called on the group's core in step with apply, so every command
    /// behind it waits: capture only (clone shared handles, copy what is
    /// small) and leave the encoding to the returned [`Capture`], which runs
    /// on a thread of its own while the group goes on applying (on the
    /// same CPU when the node pins its cores: the thread inherits the pin).
    fn snapshot(&self) -> Capture;
    /// Replaces the state with a snapshot; an invalid one is refused and
    /// changes nothing.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// A state captured for a snapshot and not yet encoded.
pub struct Capture(Box<dyn FnOnce() -> Bytes + Send>);

impl Capture {
    /// A state already encoded (a small one, or one that cannot be shared).
    pub fn encoded(bytes: Bytes) -> Capture {
        Capture(Box::new(move || bytes))
    }

    /// A state encoded later, off the group's core, by `encode`.
    pub fn deferred(encode: impl FnOnce() -> Bytes + Send + 'static) -> Capture {
        Capture(Box::new(encode))
    }

    /// The snapshot's bytes, as `StateMachine::restore` takes them.
    pub fn encode(self) -> Bytes {
        (self.0)()
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capture")
    }
}
