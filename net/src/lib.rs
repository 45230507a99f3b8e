//! synod-net: the transport.
//!
//! Will hold: one TCP connection per peer per core carrying length-prefixed
//! frames from `synod_wal::frame`, coalesced writes, bounded per-peer send
//! queues, reconnect with backoff, an authenticated handshake (cluster id,
//! node id, proof of the shared secret), and the client listener. It knows
//! nothing of Paxos: it moves frames.
#![deny(missing_docs)]
