//! Bytes appended and not yet written, built where the write sends them
//! from: DMA buffers, so a frame body is copied once on its way to the
//! disk (into the buffer), not twice (into a pending `Vec`, then into a
//! buffer at commit).

use glommio::io::DmaBuffer;

/// The pieces of one chunk, each at most `piece_bytes` (a multiple of the
/// block size, so every piece but the last is written whole).
pub(crate) struct PendingBytes {
    piece_bytes: usize,
    /// Full pieces, then the one being filled; `filled` bytes of the last
    /// are in use.
    pieces: Vec<DmaBuffer>,
    filled: usize,
    len: usize,
}

impl PendingBytes {
    pub(crate) fn new(piece_bytes: usize) -> PendingBytes {
        PendingBytes {
            piece_bytes,
            pieces: Vec::new(),
            filled: 0,
            len: 0,
        }
    }

    /// `data`, as the start of a new chunk (a block already on disk that
    /// is rewritten identically).
    pub(crate) fn from_slice(piece_bytes: usize, data: &[u8]) -> PendingBytes {
        let mut bytes = PendingBytes::new(piece_bytes);
        bytes.extend_from_slice(data);
        bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `data`, across pieces if it must.
    pub(crate) fn extend_from_slice(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.room();
            let taken = room.min(data.len());
            let last = self.pieces.last_mut().expect("room made one");
            last.as_bytes_mut()[self.filled..self.filled + taken].copy_from_slice(&data[..taken]);
            self.filled += taken;
            self.len += taken;
            data = &data[taken..];
        }
    }

    /// Appends `count` zero bytes.
    pub(crate) fn extend_zeros(&mut self, mut count: usize) {
        while count > 0 {
            let room = self.room();
            let taken = room.min(count);
            let last = self.pieces.last_mut().expect("room made one");
            last.as_bytes_mut()[self.filled..self.filled + taken].fill(0);
            self.filled += taken;
            self.len += taken;
            count -= taken;
        }
    }

    /// Free bytes in the last piece, after starting a new one if it is full.
    fn room(&mut self) -> usize {
        if self.pieces.is_empty() || self.filled == self.piece_bytes {
            self.pieces
                .push(glommio::allocate_dma_buffer(self.piece_bytes));
            self.filled = 0;
        }
        self.piece_bytes - self.filled
    }

    /// The bytes from `from` to the end, piece by piece.
    fn slices_from(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        let count = self.pieces.len();
        self.pieces
            .iter()
            .enumerate()
            .filter_map(move |(i, piece)| {
                let start = i * self.piece_bytes;
                let used = if i + 1 == count {
                    self.filled
                } else {
                    self.piece_bytes
                };
                (start + used > from).then(|| &piece.as_bytes()[from.max(start) - start..used])
            })
    }

    /// The bytes from `from` to the end (the partial last block that the
    /// next chunk rewrites), as the start of new pending bytes: copied once.
    pub(crate) fn tail(&self, from: usize) -> PendingBytes {
        let mut tail = PendingBytes::new(self.piece_bytes);
        for slice in self.slices_from(from) {
            tail.extend_from_slice(slice);
        }
        tail
    }

    /// The pieces, each with its bytes in use zero-padded to a whole number
    /// of blocks and trimmed to them, with its offset in the chunk.
    pub(crate) fn into_writes(
        self,
        block_bytes: usize,
    ) -> impl Iterator<Item = (usize, DmaBuffer)> {
        let (count, filled, piece_bytes) = (self.pieces.len(), self.filled, self.piece_bytes);
        self.pieces
            .into_iter()
            .enumerate()
            .map(move |(i, mut piece)| {
                let used = if i + 1 == count { filled } else { piece_bytes };
                let padded = used.next_multiple_of(block_bytes);
                // DMA buffers come from a pool: the padding must be zeroed, as
                // recovery reads zeros as the end of the log.
                piece.as_bytes_mut()[used..padded].fill(0);
                piece.trim_to_size(padded);
                (i * piece_bytes, piece)
            })
    }
}

#[cfg(test)]
mod tests {
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    #[test]
    fn bytes_span_pieces_and_come_back_whole_and_padded() {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(|| async {
                let mut bytes = PendingBytes::from_slice(8192, &[7; 100]);
                let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
                bytes.extend_from_slice(&data);
                bytes.extend_zeros(5000);
                bytes.extend_from_slice(b"end");
                assert_eq!(bytes.len(), 15_103);
                let mut whole = vec![7; 100];
                whole.extend_from_slice(&data);
                whole.extend(std::iter::repeat_n(0, 5000));
                whole.extend_from_slice(b"end");
                let read = |bytes: &PendingBytes, from| -> Vec<u8> {
                    bytes.slices_from(from).flatten().copied().collect()
                };
                assert_eq!(read(&bytes, 0), whole);
                assert_eq!(read(&bytes, 15_000), whole[15_000..]);
                let tail = bytes.tail(15_000);
                assert_eq!(
                    (tail.len(), read(&tail, 0)),
                    (103, whole[15_000..].to_vec())
                );
                let writes: Vec<(usize, Vec<u8>)> = bytes
                    .into_writes(4096)
                    .map(|(at, piece)| (at, piece.as_bytes().to_vec()))
                    .collect();
                assert_eq!(writes.len(), 2);
                assert_eq!((writes[0].0, writes[0].1.len()), (0, 8192));
                assert_eq!((writes[1].0, writes[1].1.len()), (8192, 8192));
                let written: Vec<u8> = writes.into_iter().flat_map(|(_, w)| w).collect();
                assert_eq!(written[..whole.len()], whole[..]);
                assert!(written[whole.len()..].iter().all(|b| *b == 0));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
