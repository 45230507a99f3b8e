//! synod-wal: the write-ahead log.
//!
//! Will hold: the frame format shared by the wire and the disk (fixed header,
//! CRC32C, 16-byte aligned rkyv body), preallocated O_DIRECT segments written
//! through glommio's `DmaFile`, group commit, and crash recovery. It knows
//! nothing of Paxos: it stores and returns frames.
#![deny(missing_docs)]
