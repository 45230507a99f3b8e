//! A small key-value state machine for the runtime's tests: enough to tell
//! commands, replies, reads and snapshots apart, nothing more (the node's
//! own KV store lives in the `synod` application).
//!
//! A command is a key's length (u32, little-endian), the key, then the
//! value. A reply, and a read's answer, is a value that may be absent: 0,
//! or 1 and the value.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use synod_engine::runtime::{Applying, Capture, StateMachine};

/// The store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestKv(BTreeMap<Vec<u8>, Vec<u8>>);

/// The command that sets `key` to `value`.
pub fn put(key: &str, value: &str) -> Bytes {
    let mut command = BytesMut::new();
    command.put_u32_le(key.len() as u32);
    command.put_slice(key.as_bytes());
    command.put_slice(value.as_bytes());
    command.freeze()
}

/// A reply or read answer: the value, if any.
pub fn value_of(reply: &[u8]) -> Option<Vec<u8>> {
    match reply.split_first() {
        Some((1, value)) => Some(value.to_vec()),
        Some((0, [])) => None,
        _ => panic!("not a value: {reply:?}"),
    }
}

/// The bytes [`value_of`] reads.
pub fn encode_value(value: Option<&[u8]>) -> Bytes {
    match value {
        Some(value) => [&[1u8][..], value].concat().into(),
        None => Bytes::from_static(&[0]),
    }
}

fn split_command(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    rest.split_at_checked(u32::from_le_bytes(*len) as usize)
}

impl StateMachine for TestKv {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        commands
            .iter()
            .map(|command| match split_command(command.data) {
                Some((key, value)) => {
                    let old = self.0.insert(key.to_vec(), value.to_vec());
                    encode_value(old.as_deref())
                }
                None => Bytes::from_static(b"invalid"),
            })
            .collect()
    }

    /// A query is a key.
    fn query(&self, query: &[u8]) -> Bytes {
        encode_value(self.0.get(query).map(Vec::as_slice))
    }

    fn snapshot(&self) -> Capture {
        let entries = self.0.clone();
        Capture::deferred(move || {
            let mut out = BytesMut::new();
            for (key, value) in &entries {
                out.put_u32_le(key.len() as u32);
                out.put_slice(key);
                out.put_u32_le(value.len() as u32);
                out.put_slice(value);
            }
            out.freeze()
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let mut entries = BTreeMap::new();
        let mut rest = snapshot;
        while !rest.is_empty() {
            let (key, after) = split_command(rest).ok_or("a key cut short")?;
            let (value, after) = split_command(after).ok_or("a value cut short")?;
            entries.insert(key.to_vec(), value.to_vec());
            rest = after;
        }
        self.0 = entries;
        Ok(())
    }
}
