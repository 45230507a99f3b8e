//! synod-engine: the Multi-Paxos replicated log.
//!
//! - [`protocol`]: the sans-IO core, a deterministic function of its inputs.
//! - [`sim`]: the deterministic simulator and its safety checkers.
//! - `runtime` (to come): drives replicas on glommio executors with the WAL
//!   and the transport, and holds the embedding API.
#![deny(missing_docs)]

pub mod protocol;
pub mod sim;
