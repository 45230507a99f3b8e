//! The runtime: drives protocol replicas with the WAL and the transport.

pub mod codec;
