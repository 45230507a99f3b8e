//! synod-wal: the write-ahead log.
//!
//! The frame format shared by the wire and the disk ([`frame`]: fixed header,
//! CRC32C, 16-byte aligned rkyv body), preallocated O_DIRECT segments written
//! through glommio's `DmaFile`, group commit, and crash recovery. It knows
//! nothing of Paxos: it stores and returns frames.
//!
//! ```text
//!  append(kind, body) -> Position      (in memory, returns at once)
//!        |
//!        v
//!  pending bytes --sync()--> one write of whole 4 KiB blocks + fdatasync
//!        ^                     (frames appended meanwhile wait for the next)
//!        |                               |
//!  the last partial block is kept       v
//!  and rewritten by the next commit   durable() watermark advances
//! ```
//!
//! Directory layout: `wal.meta` (identifies the directory, 4096 bytes) and
//! segments `<first position, 20 digits>.wal`, each preallocated to
//! `segment_bytes_max`. See `docs/wal.md`.
#![deny(missing_docs)]

pub mod frame;
pub mod inspect;
pub mod layout;
mod pending;
pub mod scan;
pub mod storage;
mod wal;

use std::path::PathBuf;

pub use storage::{DmaStorage, SegmentFile, Storage};
pub use wal::{RecoveryReport, TornTail, Wal};

/// The position of a frame in the log: frames are numbered 0, 1, 2, ... in
/// append order, across segments, and keep their number for ever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Block size every write is aligned to, whatever the device reports: 4096
/// covers 512-byte and 4Kn devices alike.
pub const BLOCK_BYTES: usize = 4096;

/// Tunables of a [`Wal`]; checked by [`WalConfig::validate`] at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// Size each segment file is preallocated to; a multiple of 4096.
    pub segment_bytes_max: u64,
    /// Largest single write; a commit larger than this is issued as several
    /// writes (then one fdatasync). Each write's buffer comes from glommio's
    /// `io_memory`, so keep it well under that.
    pub write_bytes_max: usize,
    /// Largest body `append` accepts.
    pub frame_body_bytes_max: u32,
    /// Whether [`Wal::sync`] ends with an fdatasync. Off is unsafe: a
    /// "durable" frame then sits in the device's volatile cache (segments
    /// are opened for direct I/O, so a process crash loses nothing, but a
    /// power cut or a kernel crash can). Only for measuring what fsync
    /// costs; never for data anyone needs.
    pub fsync: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes_max: 16 << 20,
            write_bytes_max: 256 << 10,
            frame_body_bytes_max: 1 << 20,
            fsync: true,
        }
    }
}

impl WalConfig {
    /// Rejects configurations the WAL cannot honour.
    pub fn validate(&self) -> Result<(), WalError> {
        let block = BLOCK_BYTES as u64;
        if self.segment_bytes_max < 16 * block || self.segment_bytes_max % block != 0 {
            return Err(WalError::Config(
                "segment_bytes_max must be a multiple of 4096 and at least 64 KiB",
            ));
        }
        if self.write_bytes_max < BLOCK_BYTES || self.write_bytes_max % BLOCK_BYTES != 0 {
            return Err(WalError::Config(
                "write_bytes_max must be a positive multiple of 4096",
            ));
        }
        let frame_max = frame::frame_bytes(self.frame_body_bytes_max as usize) as u64;
        if self.frame_body_bytes_max > frame::FRAME_BODY_BYTES_MAX
            || frame_max > self.segment_bytes_max
        {
            return Err(WalError::Config(
                "frame_body_bytes_max must fit a segment and the frame format",
            ));
        }
        Ok(())
    }
}

/// Everything that can go wrong in the WAL. Bad bytes on disk are values,
/// never panics.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The configuration was rejected.
    #[error("invalid WAL configuration: {0}")]
    Config(&'static str),
    /// An I/O error outside the write path (open, recovery, listing).
    #[error("{path}: {op} failed: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A frame that is not a torn tail is invalid: the replica must be
    /// repaired; nothing is dropped silently.
    #[error("{path}: corrupt WAL at byte offset {offset_bytes}: {reason}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Offset of the first invalid frame.
        offset_bytes: u64,
        /// Why.
        reason: String,
    },
    /// Segments do not follow each other (one is missing or misnamed).
    #[error(
        "{path}: segment starts at position {found}, but the log before it ends at {expected}"
    )]
    Gap {
        /// The segment that does not continue the log.
        path: PathBuf,
        /// Its first position.
        found: Position,
        /// Where the previous segment ends.
        expected: Position,
    },
    /// The directory is not a synod WAL.
    #[error("{path}: not a synod WAL directory: {reason}")]
    NotAWal {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A write, fsync or file operation of the log failed earlier; the WAL
    /// refuses all further work. It never retries an fsync: after a failed
    /// fsync the kernel may have dropped the dirty data, so a retry that
    /// succeeds would prove nothing.
    #[error("WAL stopped after a fatal I/O error: {0}")]
    Fatal(String),
    /// `append` was given a body over `frame_body_bytes_max`.
    #[error("frame body of {body_len} bytes exceeds frame_body_bytes_max {limit_bytes}")]
    FrameTooLarge {
        /// The body length.
        body_len: usize,
        /// The limit.
        limit_bytes: u32,
    },
    /// A position outside what the log holds.
    #[error("position {position} is outside the log [{first}, {next})")]
    OutOfRange {
        /// The position asked for.
        position: Position,
        /// First position kept.
        first: Position,
        /// Next position to be appended.
        next: Position,
    },
    /// `append` during `truncate_after`, whose positions would be ambiguous.
    #[error("append refused while a suffix truncation is in progress")]
    Truncating,
}
