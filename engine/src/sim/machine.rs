//! The simulated replicas' state machine: the list of commands applied,
//! which the end-of-run checks compare across replicas.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::group::{Applying, Capture, StateMachine};
use crate::protocol::{ClientId, LogIndex};

/// A command as a replica's state machine applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its log index.
    pub index: LogIndex,
    /// Its session.
    pub client: ClientId,
    /// Its sequence.
    pub seq: u64,
    /// Its bytes.
    pub data: Bytes,
}

/// The most filler a snapshot carries.
const BALLAST_MAX: usize = 2 << 20;

/// Remembers every command applied, in order; replies with its index.
#[derive(Clone, Debug, Default)]
pub struct SimMachine {
    applied: Vec<Applied>,
    /// Filler bytes every snapshot carries ahead of the commands.
    ballast: usize,
    /// Test-only: snapshots lose the last command applied.
    #[cfg(test)]
    pub(crate) snapshots_short: bool,
}

impl SimMachine {
    /// One whose snapshots carry `ballast` bytes of filler, so that they
    /// span several chunks on their way to a peer; restore checks it.
    pub fn with_ballast(ballast: usize) -> SimMachine {
        SimMachine {
            ballast,
            ..SimMachine::default()
        }
    }

    /// Every command applied, in order.
    pub fn applied(&self) -> &[Applied] {
        &self.applied
    }

    /// The filler: the same bytes for every snapshot, made once.
    fn filler(len: usize) -> &'static [u8] {
        static FILLER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let filler = FILLER.get_or_init(|| (0..BALLAST_MAX).map(|at| (at % 251) as u8).collect());
        &filler[..len.min(BALLAST_MAX)]
    }

    fn encode(applied: &[Applied], ballast: usize) -> Bytes {
        let mut out = BytesMut::new();
        let filler = SimMachine::filler(ballast);
        out.put_u32_le(filler.len() as u32);
        out.put_slice(filler);
        for a in applied {
            out.put_u64_le(a.index.0);
            out.put_u64_le(a.client.0);
            out.put_u64_le(a.seq);
            out.put_u32_le(a.data.len() as u32);
            out.put_slice(&a.data);
        }
        out.freeze()
    }

    fn decode(mut bytes: &[u8]) -> Result<Vec<Applied>, String> {
        if bytes.remaining() < 4 {
            return Err("no ballast length".into());
        }
        let ballast = bytes.get_u32_le() as usize;
        let filler = bytes.get(..ballast).ok_or("ballast cut short")?;
        if ballast > BALLAST_MAX || filler != SimMachine::filler(ballast) {
            return Err("ballast damaged".into());
        }
        bytes.advance(ballast);
        let mut applied = Vec::new();
        while bytes.has_remaining() {
            if bytes.remaining() < 28 {
                return Err("a record cut short".into());
            }
            let (index, client, seq) = (bytes.get_u64_le(), bytes.get_u64_le(), bytes.get_u64_le());
            let len = bytes.get_u32_le() as usize;
            if bytes.remaining() < len {
                return Err("a command cut short".into());
            }
            applied.push(Applied {
                index: LogIndex(index),
                client: ClientId(client),
                seq,
                data: Bytes::copy_from_slice(&bytes[..len]),
            });
            bytes.advance(len);
        }
        Ok(applied)
    }
}

impl StateMachine for SimMachine {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        commands
            .iter()
            .map(|c| {
                self.applied.push(Applied {
                    index: c.index,
                    client: c.client,
                    seq: c.seq,
                    data: Bytes::copy_from_slice(c.data),
                });
                Bytes::copy_from_slice(&c.index.0.to_le_bytes())
            })
            .collect()
    }

    fn query(&self, _: &[u8]) -> Bytes {
        Bytes::new()
    }

    fn snapshot(&self) -> Capture {
        #[allow(unused_mut)]
        let mut applied = &self.applied[..];
        #[cfg(test)]
        if self.snapshots_short && !applied.is_empty() {
            applied = &applied[..applied.len() - 1];
        }
        Capture::encoded(SimMachine::encode(applied, self.ballast))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.applied = SimMachine::decode(snapshot)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_snapshot_restores_what_it_applied() {
        let mut machine = SimMachine::with_ballast(1000);
        let data = [&b"a"[..], b"", b"ccc"];
        let commands: Vec<Applying<'_>> = (0..3)
            .map(|i| Applying {
                index: LogIndex(10 + i),
                client: ClientId(i),
                seq: i + 1,
                data: data[i as usize],
            })
            .collect();
        machine.apply(&commands);
        let mut restored = SimMachine::default();
        let snapshot = machine.snapshot().encode();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored.applied(), machine.applied());
        assert!(restored.restore(&[1, 2, 3]).is_err());
        assert_eq!(restored.applied(), machine.applied(), "refused: unchanged");
        let mut damaged = snapshot.to_vec();
        damaged[500] ^= 1;
        assert!(restored.restore(&damaged).is_err(), "ballast checked");
    }
}
