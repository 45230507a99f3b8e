//! synod-engine: the Multi-Paxos replicated log.
#![deny(missing_docs)]
