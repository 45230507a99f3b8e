//! synod-engine: the Multi-Paxos replicated log.
//!
//! - [`protocol`]: the sans-IO core, a deterministic function of its inputs.
//! - [`group`]: the sans-IO group core around it (sessions, apply, waiters,
//!   snapshots, the WAL cut), which the simulator and the runtime both run.
//! - [`sim`]: the deterministic simulator and its safety checkers.
//! - [`runtime`]: drives replicas on glommio with the WAL and the transport,
//!   thread-per-core; [`runtime::node::Node`] is the embedding API (start a
//!   node with your own [`runtime::StateMachine`], propose and read through a
//!   [`runtime::node::NodeHandle`] from any thread). See
//!   `examples/embed.rs`.
//! - [`archive`]: the engine's rkyv format, for embedders' own bodies.
#![deny(missing_docs)]

pub mod archive;
pub mod group;
pub mod protocol;
pub mod runtime;
pub mod sim;
