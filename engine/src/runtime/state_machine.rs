//! What an embedder implements: the state machine the log drives.

use bytes::Bytes;

use crate::protocol::LogIndex;

/// One command being applied: its place in the log and its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applying<'a> {
    /// The command's log index.
    pub index: LogIndex,
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
    /// The whole state, for a lagging replica or for compaction.
    fn snapshot(&self) -> Bytes;
    /// Replaces the state with a snapshot; an invalid one is refused and
    /// changes nothing.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}
