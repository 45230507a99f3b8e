//! The locked-memory limit a node needs: glommio registers each core's I/O
//! memory with io_uring, which the kernel pins against `RLIMIT_MEMLOCK`.
//! Checked before any core starts, so a low limit is one clear error
//! instead of an executor failing on its own thread.

use rlimit::Resource;

/// Room above the registered buffers for the rings (older kernels count
/// them too), and glommio's own floor of 512 KiB.
const MARGIN_BYTES: u64 = 512 << 10;

/// Why the node cannot lock the memory it needs.
#[derive(Debug, thiserror::Error)]
pub enum MemlockError {
    /// The limit could not be read.
    #[error("reading the locked-memory limit (RLIMIT_MEMLOCK): {0}")]
    Read(#[source] std::io::Error),
    /// The limit is below what the cores register, and the hard limit
    /// does not allow raising it.
    #[error(
        "the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {} KiB; {cores} core(s) need {} KiB. \
         Raise it: `ulimit -l {}` in the shell that starts the node (as root, or after raising the hard limit \
         in /etc/security/limits.conf), LimitMEMLOCK={}K in its systemd unit, or `--ulimit memlock={}` \
         for a container",
        limit / 1024, needed / 1024, needed.div_ceil(1024), needed.div_ceil(1024), needed
    )]
    TooLow {
        /// The soft limit, in bytes.
        limit: u64,
        /// What the node needs, in bytes.
        needed: u64,
        /// Executors the node would run.
        cores: u32,
    },
}

/// The bytes of locked memory `cores` executors of `io_memory_bytes` each need.
pub fn needed(cores: u32, io_memory_bytes: usize) -> u64 {
    u64::from(cores) * io_memory_bytes as u64 + MARGIN_BYTES
}

/// Makes sure the node can lock what it needs: raises the soft limit up to
/// the hard one if that is enough, else says what to change.
pub fn ensure(cores: u32, io_memory_bytes: usize) -> Result<(), MemlockError> {
    let needed = needed(cores, io_memory_bytes);
    let (soft, hard) = Resource::MEMLOCK.get().map_err(MemlockError::Read)?;
    if soft >= needed {
        return Ok(());
    }
    if hard >= needed && Resource::MEMLOCK.set(needed, hard).is_ok() {
        tracing::info!(
            from = soft,
            to = needed,
            "raised the locked-memory soft limit"
        );
        return Ok(());
    }
    Err(MemlockError::TooLow {
        limit: soft,
        needed,
        cores,
    })
}
