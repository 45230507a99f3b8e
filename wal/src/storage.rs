//! The file operations the WAL performs, behind a trait so that tests can
//! inject faults (a failing fdatasync) with a wrapper while the production
//! path, [`DmaStorage`], has no test branches.

use std::io;
use std::path::Path;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use rkyv::util::AlignedVec;

use crate::frame::FRAME_ALIGN_BYTES;

/// Reads are issued in pieces of this size so that one read buffer never
/// needs more than a small slice of glommio's `io_memory`.
const READ_BYTES_MAX: usize = 256 << 10;

/// File operations of the WAL. All run on the current glommio executor;
/// nothing is `Send`, hence the plain `async fn`s.
#[allow(async_fn_in_trait)]
pub trait Storage {
    /// An open segment file.
    type File;
    /// Creates a new file (it must not exist), preallocated to `size_bytes`,
    /// with its size made durable. The caller syncs the directory.
    async fn create(&self, path: &Path, size_bytes: u64) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Reads a whole file into a 16-byte aligned buffer.
    async fn read_all(&self, path: &Path) -> io::Result<AlignedVec<FRAME_ALIGN_BYTES>>;
    /// A buffer suitable for [`Storage::write_at`] on `file`.
    fn alloc_buffer(&self, file: &Self::File, len_bytes: usize) -> DmaBuffer;
    /// Writes `buf` at `offset_bytes` (both block aligned); returns bytes written.
    async fn write_at(
        &self,
        file: &Self::File,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize>;
    /// fdatasync.
    async fn fdatasync(&self, file: &Self::File) -> io::Result<()>;
    /// Cuts the file at `len_bytes` (what follows reads as zeros), preallocates
    /// it again to `size_bytes` and makes both durable.
    async fn truncate(&self, file: &Self::File, len_bytes: u64, size_bytes: u64) -> io::Result<()>;
    /// Unlinks a file. The caller syncs the directory.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory, making creations and removals in it durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Closes a file.
    async fn close(&self, file: Self::File) -> io::Result<()>;
}

/// The production backend: glommio `DmaFile`s, O_DIRECT through io_uring.
///
/// glommio decides per device and per thread, at the first `DmaFile` opened,
/// whether to use its io_uring poll ring, by reading the first block of that
/// file; a read of an empty file "succeeds" and enables the poll ring even on
/// devices without poll queues, after which reads fail with EOPNOTSUPP. The
/// WAL therefore opens `wal.meta` (a full block) first, see `Wal::open`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage;

fn io_err(e: glommio::GlommioError<()>) -> io::Error {
    e.into()
}

impl Storage for DmaStorage {
    type File = DmaFile;

    async fn create(&self, path: &Path, size_bytes: u64) -> io::Result<DmaFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(io_err)?;
        // keep_size = false: the size is the preallocated size, so later
        // writes change no metadata and fdatasync stays a pure data flush.
        file.pre_allocate(size_bytes, false).await.map_err(io_err)?;
        file.fdatasync().await.map_err(io_err)?;
        Ok(file)
    }

    async fn open(&self, path: &Path) -> io::Result<DmaFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(io_err)
    }

    async fn read_all(&self, path: &Path) -> io::Result<AlignedVec<FRAME_ALIGN_BYTES>> {
        let file = DmaFile::open(path).await.map_err(io_err)?;
        let size_bytes = file.file_size().await.map_err(io_err)?;
        let mut out = AlignedVec::with_capacity(size_bytes as usize);
        while (out.len() as u64) < size_bytes {
            let chunk = file
                .read_at_aligned(out.len() as u64, READ_BYTES_MAX)
                .await
                .map_err(io_err)?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        file.close().await.map_err(io_err)?;
        Ok(out)
    }

    fn alloc_buffer(&self, file: &DmaFile, len_bytes: usize) -> DmaBuffer {
        file.alloc_dma_buffer(len_bytes)
    }

    async fn write_at(
        &self,
        file: &DmaFile,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        file.write_at(buf, offset_bytes).await.map_err(io_err)
    }

    async fn fdatasync(&self, file: &DmaFile) -> io::Result<()> {
        file.fdatasync().await.map_err(io_err)
    }

    async fn truncate(&self, file: &DmaFile, len_bytes: u64, size_bytes: u64) -> io::Result<()> {
        file.truncate(len_bytes).await.map_err(io_err)?;
        file.pre_allocate(size_bytes, false).await.map_err(io_err)?;
        // A full fsync, not fdatasync: the extent map changed. Rare (torn
        // tail at open, suffix truncation), so the blocking call is fine.
        sync_path(file.path().as_deref())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(io_err)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = glommio::io::Directory::open(dir).await.map_err(io_err)?;
        dir.sync().await.map_err(io_err)?;
        dir.close().await.map_err(io_err)
    }

    async fn close(&self, file: DmaFile) -> io::Result<()> {
        file.close().await.map_err(io_err)
    }
}

fn sync_path(path: Option<&Path>) -> io::Result<()> {
    let path = path.ok_or_else(|| io::Error::other("file has no path to fsync"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .sync_all()
}
