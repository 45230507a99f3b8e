//! The node machine's commands and queries as bytes: a tag byte, then the
//! append's bytes as written, or a KV command, or a query's arguments.
//! The client port builds them; the machine reads them back.

use bytes::Bytes;
use synod_client_proto::APPEND_TAG_BYTES;

use crate::node::kv::KvCommand;

/// Entries returned by one log read at most.
pub const READ_ENTRIES_MAX: u32 = 10_000;

pub(super) const TAG_APPEND: u8 = 0;
pub(super) const TAG_KV: u8 = 1;
pub(super) const QUERY_GET: u8 = 0;
pub(super) const QUERY_LOG: u8 = 1;
pub(super) const QUERY_PREFIX: u8 = 2;
pub(super) const QUERY_WATCH: u8 = 3;
pub(super) const QUERY_NEXT_DUE: u8 = 4;

/// Keys returned by one prefix read at most.
pub const PREFIX_KEYS_MAX: u32 = 10_000;

/// A log query's arguments after its tag: `from` (u64) and `count` (u32),
/// little-endian.
pub(super) const LOG_QUERY_BYTES: usize = 12;

// Clients size their batches by the tag's length (synod_client_proto).
const _: () = assert!(APPEND_TAG_BYTES == std::mem::size_of_val(&TAG_APPEND));

/// Tags a raw append for the log.
pub fn append_command(data: &[u8]) -> Bytes {
    tagged(TAG_APPEND, data)
}

/// Tags raw appends for the log, all in one buffer that the commands
/// share (one allocation for a client batch, not one per item).
pub fn append_commands<T: AsRef<[u8]>>(items: &[T]) -> Vec<Bytes> {
    let total = items.iter().map(|item| item.as_ref().len() + 1).sum();
    let mut buffer = Vec::with_capacity(total);
    for item in items {
        buffer.push(TAG_APPEND);
        buffer.extend_from_slice(item.as_ref());
    }
    let buffer = Bytes::from(buffer);
    let mut start = 0;
    items
        .iter()
        .map(|item| {
            let end = start + 1 + item.as_ref().len();
            let command = buffer.slice(start..end);
            start = end;
            command
        })
        .collect()
}

/// Tags a KV command for the log.
pub fn kv_command(command: &KvCommand) -> Bytes {
    tagged(TAG_KV, &command.encode())
}

/// A query for a key's value.
pub fn get_query(key: &[u8]) -> Bytes {
    tagged(QUERY_GET, key)
}

/// A query for applied entries `from..from + count`.
pub fn log_query(from: u64, count: u32) -> Bytes {
    let mut query = Vec::with_capacity(1 + LOG_QUERY_BYTES);
    query.push(QUERY_LOG);
    query.extend_from_slice(&from.to_le_bytes());
    query.extend_from_slice(&count.min(READ_ENTRIES_MAX).to_le_bytes());
    Bytes::from(query)
}

/// A log query's `(from, count)`, if `arguments` are one's.
pub(super) fn parse_log_query(arguments: &[u8]) -> Option<(u64, u32)> {
    let arguments: &[u8; LOG_QUERY_BYTES] = arguments.try_into().ok()?;
    let (from, count) = arguments.split_at(8);
    let from = u64::from_le_bytes(from.try_into().ok()?);
    let count = u32::from_le_bytes(count.try_into().ok()?);
    Some((from, count))
}

/// Bytes of keys and values one prefix read answers with, about (a client
/// frame holds 1 MiB).
pub const PREFIX_BYTES_MAX: usize = 512 << 10;

/// A query for the live keys starting with `prefix` after `after`, `limit`
/// at most: the limit, `after`'s length (u32::MAX: none), `after`, then
/// the prefix.
pub fn prefix_query(prefix: &[u8], after: Option<&[u8]>, limit: u32) -> Bytes {
    let mut arguments = limit.min(PREFIX_KEYS_MAX).to_le_bytes().to_vec();
    let after_len = after.map_or(u32::MAX, |a| a.len() as u32);
    arguments.extend_from_slice(&after_len.to_le_bytes());
    arguments.extend_from_slice(after.unwrap_or_default());
    arguments.extend_from_slice(prefix);
    tagged(QUERY_PREFIX, &arguments)
}

/// A prefix query's arguments.
pub(super) struct PrefixQuery<'a> {
    pub limit: u32,
    pub after: Option<&'a [u8]>,
    pub prefix: &'a [u8],
}

/// A prefix query's arguments, if `arguments` are one's.
pub(super) fn parse_prefix_query(arguments: &[u8]) -> Option<PrefixQuery<'_>> {
    let (limit, rest) = arguments.split_first_chunk::<4>()?;
    let (after_len, rest) = rest.split_first_chunk::<4>()?;
    let limit = u32::from_le_bytes(*limit).min(PREFIX_KEYS_MAX);
    let (after, prefix) = match u32::from_le_bytes(*after_len) {
        u32::MAX => (None, rest),
        len => {
            let (after, prefix) = rest.split_at_checked(len as usize)?;
            (Some(after), prefix)
        }
    };
    Some(PrefixQuery {
        limit,
        after,
        prefix,
    })
}

/// A query for the store's changes to keys starting with `prefix` from
/// log index `from`.
/// The changes under `prefix` at log index `from`, the first `skip` of
/// them already seen, and after.
pub fn watch_query(prefix: &[u8], from: u64, skip: u32) -> Bytes {
    let mut arguments = from.to_le_bytes().to_vec();
    arguments.extend_from_slice(&skip.to_le_bytes());
    arguments.extend_from_slice(prefix);
    tagged(QUERY_WATCH, &arguments)
}

/// A watch query's `(from, skip, prefix)`.
pub(super) fn parse_watch_query(arguments: &[u8]) -> Option<(u64, u32, &[u8])> {
    let (from, rest) = arguments.split_first_chunk::<8>()?;
    let (skip, prefix) = rest.split_first_chunk::<4>()?;
    Some((u64::from_le_bytes(*from), u32::from_le_bytes(*skip), prefix))
}

/// A query for the earliest time a key or a lease comes due.
pub fn next_due_query() -> Bytes {
    Bytes::from_static(&[QUERY_NEXT_DUE])
}

/// The answer to [`next_due_query`]: leader ms, or `None` if nothing
/// is due ever.
pub fn parse_next_due(answer: &[u8]) -> Option<u64> {
    answer.try_into().ok().map(u64::from_le_bytes)
}

fn tagged(tag: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(tag);
    out.extend_from_slice(data);
    Bytes::from(out)
}
