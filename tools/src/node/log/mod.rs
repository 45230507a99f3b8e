//! The node machine's readable log: the latest applied entries, bounded in
//! bytes. Entries are packed into chunks; a full chunk is sealed and shared
//! by reference, so a snapshot captures the log on the group's core with a
//! pointer copy per chunk (and a copy of the one open chunk), and copies the
//! bytes off the core.

use std::collections::VecDeque;
use std::sync::Arc;

#[cfg(test)]
mod tests;

/// Bytes (counted as by `ReadableLog`) after which a chunk is sealed.
const CHUNK_BYTES: usize = 256 << 10;

/// Bytes an entry is counted for beside its data.
const ENTRY_OVERHEAD_BYTES: usize = 16;

/// Entries end to end, with their indexes and where each ends.
#[derive(Clone, Debug, Default)]
struct Chunk {
    indexes: Vec<u64>,
    ends: Vec<usize>,
    data: Vec<u8>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.indexes.len()
    }

    fn counted(&self) -> usize {
        self.data.len() + self.len() * ENTRY_OVERHEAD_BYTES
    }

    fn start_of(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    fn entry(&self, i: usize) -> (u64, &[u8]) {
        (self.indexes[i], &self.data[self.start_of(i)..self.ends[i]])
    }

    fn push(&mut self, index: u64, data: &[u8]) {
        self.data.extend_from_slice(data);
        self.indexes.push(index);
        self.ends.push(self.data.len());
    }
}

/// The latest applied entries, about `retain_bytes` of them (each counted
/// with a fixed overhead), readable by index. The latest entry is always
/// kept, however large.
#[derive(Debug)]
pub struct ReadableLog {
    sealed: VecDeque<Arc<Chunk>>,
    open: Chunk,
    /// Entries of the first chunk (the front sealed one, or else the open
    /// one) already dropped: a shared chunk cannot shrink.
    skip: usize,
    /// Live entries.
    entries: usize,
    /// Their bytes, each with `ENTRY_OVERHEAD_BYTES`.
    counted: usize,
    retain_bytes: usize,
}

/// The readable log as it was at a snapshot, to be copied off the core.
#[derive(Debug)]
pub struct LogCapture {
    sealed: Vec<Arc<Chunk>>,
    open: Chunk,
    skip: usize,
}

/// A log's entries as columns: indexes, lengths, and the bytes end to end.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogColumns {
    /// Each entry's log index, increasing.
    pub indexes: Vec<u64>,
    /// Each entry's length.
    pub lens: Vec<u32>,
    /// All entries' bytes, in order.
    pub data: Vec<u8>,
}

impl ReadableLog {
    /// An empty log that keeps about `retain_bytes`.
    pub fn retaining(retain_bytes: usize) -> ReadableLog {
        ReadableLog {
            sealed: VecDeque::new(),
            open: Chunk::default(),
            skip: 0,
            entries: 0,
            counted: 0,
            retain_bytes,
        }
    }

    /// The first index still readable (0 if the log is empty). Only the
    /// tests ask: readers are told what they read, from where it starts.
    #[cfg(test)]
    pub fn start(&self) -> u64 {
        self.chunks()
            .next()
            .map_or(0, |(chunk, from)| chunk.indexes[from])
    }

    /// Appends an entry (indexes must increase) and drops the oldest beyond
    /// the bound.
    pub fn push(&mut self, index: u64, data: &[u8]) {
        self.open.push(index, data);
        self.entries += 1;
        self.counted += data.len() + ENTRY_OVERHEAD_BYTES;
        if self.open.counted() >= CHUNK_BYTES {
            let full = std::mem::take(&mut self.open);
            self.sealed.push_back(Arc::new(full));
        }
        while self.counted > self.retain_bytes && self.entries > 1 {
            self.drop_oldest();
        }
    }

    /// Up to `count` entries from index `from` on.
    pub fn read(&self, from: u64, count: usize) -> Vec<(u64, &[u8])> {
        let mut out = Vec::new();
        for (chunk, first) in self.chunks() {
            if out.len() >= count {
                break;
            }
            if chunk.indexes.last().is_none_or(|last| *last < from) {
                continue;
            }
            let at = first.max(chunk.indexes.partition_point(|i| *i < from));
            let take = (chunk.len() - at).min(count - out.len());
            out.extend((at..at + take).map(|i| chunk.entry(i)));
        }
        out
    }

    /// The log now, cheaply: the sealed chunks by reference, the open one
    /// copied (at most one chunk's bytes).
    pub fn capture(&self) -> LogCapture {
        LogCapture {
            sealed: self.sealed.iter().cloned().collect(),
            open: self.open.clone(),
            skip: self.skip,
        }
    }

    fn drop_oldest(&mut self) {
        let first = self.sealed.front().map_or(&self.open, |c| &**c);
        let (_, data) = first.entry(self.skip);
        self.counted -= data.len() + ENTRY_OVERHEAD_BYTES;
        self.entries -= 1;
        self.skip += 1;
        if self.skip == first.len() && !self.sealed.is_empty() {
            self.sealed.pop_front();
            self.skip = 0;
        }
    }

    /// Each chunk with the position of its first live entry.
    fn chunks(&self) -> impl Iterator<Item = (&Chunk, usize)> {
        live_chunks(self.sealed.iter().map(|c| &**c), &self.open, self.skip)
    }
}

impl LogCapture {
    /// The captured entries as columns (this is the copy: run it off the
    /// group's core).
    pub fn columns(&self) -> LogColumns {
        let mut columns = LogColumns::default();
        for (chunk, first) in live_chunks(self.sealed.iter().map(|c| &**c), &self.open, self.skip) {
            columns.indexes.extend_from_slice(&chunk.indexes[first..]);
            columns
                .lens
                .extend((first..chunk.len()).map(|i| chunk.entry(i).1.len() as u32));
            columns
                .data
                .extend_from_slice(&chunk.data[chunk.start_of(first)..]);
        }
        columns
    }
}

fn live_chunks<'a>(
    sealed: impl Iterator<Item = &'a Chunk>,
    open: &'a Chunk,
    skip: usize,
) -> impl Iterator<Item = (&'a Chunk, usize)> {
    sealed
        .chain(std::iter::once(open))
        .enumerate()
        .map(move |(i, chunk)| (chunk, if i == 0 { skip } else { 0 }))
        .filter(|(chunk, first)| *first < chunk.len())
}
