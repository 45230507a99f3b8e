//! synod-engine: the Multi-Paxos replicated log.
//!
//! - [`protocol`]: the sans-IO core, a deterministic function of its inputs.
//! - [`sim`]: the deterministic simulator and its safety checkers.
//! - [`runtime`]: drives replicas with the WAL and the transport (being
//!   built: the frame codec is here; the glommio driver and the embedding
//!   API come next).
#![deny(missing_docs)]

pub mod protocol;
pub mod runtime;
pub mod sim;
