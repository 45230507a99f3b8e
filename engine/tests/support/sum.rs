//! The embedder's state machine the engine's integration tests run.

use bytes::Bytes;
use synod_engine::runtime::{Applying, Capture, StateMachine};

/// Sums every command (a little-endian u64); replies with the new sum.
#[derive(Default)]
pub struct Sum(u64);

impl StateMachine for Sum {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        commands
            .iter()
            .map(|c| {
                self.0 += c.data.try_into().map(u64::from_le_bytes).unwrap_or(0);
                Bytes::copy_from_slice(&self.0.to_le_bytes())
            })
            .collect()
    }
    fn query(&self, _: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }
    fn snapshot(&self) -> Capture {
        let sum = self.0;
        Capture::deferred(move || Bytes::copy_from_slice(&sum.to_le_bytes()))
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.0 = u64::from_le_bytes(snapshot.try_into().map_err(|_| "not 8 bytes")?);
        Ok(())
    }
}
