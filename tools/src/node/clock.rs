//! The node's wall clock, as KV commands are stamped with it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds on this node's clock, stamped into KV commands it proposes.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
