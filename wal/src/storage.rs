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
    /// [`Storage::write_at`], returning only once the written bytes are as
    /// durable as an [`Storage::fdatasync`] after it would make them. The
    /// default is exactly that pair; a backend may do it in one operation.
    async fn write_durable_at(
        &self,
        file: &Self::File,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        write_then_fdatasync(self, file, buf, offset_bytes).await
    }
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

/// [`Storage::write_at`] then [`Storage::fdatasync`]: what a durable write
/// is unless a backend does it in one operation.
pub async fn write_then_fdatasync<S: Storage + ?Sized>(
    storage: &S,
    file: &S::File,
    buf: DmaBuffer,
    offset_bytes: u64,
) -> io::Result<usize> {
    let written = storage.write_at(file, buf, offset_bytes).await?;
    storage.fdatasync(file).await?;
    Ok(written)
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

/// A segment opened by [`DmaStorage`]: twice, once plain and once with
/// `O_DSYNC`, so that a commit of one write is durable when that write
/// completes (one io_uring operation instead of a write and then an
/// fdatasync, with no return to the executor between them), while a
/// commit of several writes still pays one fdatasync for all of them
/// rather than a cache flush for each.
#[derive(Debug)]
pub struct SegmentFile {
    plain: DmaFile,
    dsync: DmaFile,
}

impl SegmentFile {
    async fn open(path: &Path, create_new: bool) -> io::Result<SegmentFile> {
        let plain = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create_new)
            .dma_open(path)
            .await
            .map_err(io_err)?;
        let dsync = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .dma_open(path)
            .await
            .map_err(io_err)?;
        Ok(SegmentFile { plain, dsync })
    }

    /// The file's path.
    pub fn path(&self) -> Option<std::path::PathBuf> {
        self.plain.path().map(|p| p.to_path_buf())
    }
}

fn io_err(e: glommio::GlommioError<()>) -> io::Error {
    e.into()
}

impl Storage for DmaStorage {
    type File = SegmentFile;

    async fn create(&self, path: &Path, size_bytes: u64) -> io::Result<SegmentFile> {
        let file = SegmentFile::open(path, true).await?;
        // keep_size = false: the size is the preallocated size, so later
        // writes change no metadata and fdatasync stays a pure data flush.
        file.plain
            .pre_allocate(size_bytes, false)
            .await
            .map_err(io_err)?;
        file.plain.fdatasync().await.map_err(io_err)?;
        Ok(file)
    }

    async fn open(&self, path: &Path) -> io::Result<SegmentFile> {
        SegmentFile::open(path, false).await
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

    fn alloc_buffer(&self, file: &SegmentFile, len_bytes: usize) -> DmaBuffer {
        file.plain.alloc_dma_buffer(len_bytes)
    }

    async fn write_at(
        &self,
        file: &SegmentFile,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        file.plain.write_at(buf, offset_bytes).await.map_err(io_err)
    }

    async fn write_durable_at(
        &self,
        file: &SegmentFile,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        file.dsync.write_at(buf, offset_bytes).await.map_err(io_err)
    }

    async fn fdatasync(&self, file: &SegmentFile) -> io::Result<()> {
        file.plain.fdatasync().await.map_err(io_err)
    }

    async fn truncate(
        &self,
        file: &SegmentFile,
        len_bytes: u64,
        size_bytes: u64,
    ) -> io::Result<()> {
        file.plain.truncate(len_bytes).await.map_err(io_err)?;
        file.plain
            .pre_allocate(size_bytes, false)
            .await
            .map_err(io_err)?;
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

    async fn close(&self, file: SegmentFile) -> io::Result<()> {
        let plain = file.plain.close().await.map_err(io_err);
        let dsync = file.dsync.close().await.map_err(io_err);
        plain.and(dsync)
    }
}

fn sync_path(path: Option<&Path>) -> io::Result<()> {
    let path = path.ok_or_else(|| io::Error::other("file has no path to fsync"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    fn status_flags(file: &DmaFile) -> libc::c_int {
        // SAFETY: F_GETFL on a descriptor the file owns reads its flags.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) }
    }

    /// A durable write without `O_DSYNC` would be acknowledged from the
    /// disk's volatile cache: nothing else in the tests could see that.
    #[test]
    fn durable_writes_go_through_an_o_dsync_descriptor_and_plain_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                for file in [
                    DmaStorage.create(&path, 1 << 20).await.unwrap(),
                    DmaStorage.open(&path).await.unwrap(),
                ] {
                    assert_ne!(status_flags(&file.dsync) & libc::O_DSYNC, 0);
                    assert_eq!(status_flags(&file.plain) & libc::O_DSYNC, 0);
                    let mut buf = DmaStorage.alloc_buffer(&file, 4096);
                    buf.as_bytes_mut().fill(7);
                    assert_eq!(
                        DmaStorage.write_durable_at(&file, buf, 4096).await.unwrap(),
                        4096
                    );
                    DmaStorage.close(file).await.unwrap();
                }
                let bytes = DmaStorage.read_all(&path).await.unwrap();
                assert!(bytes[4096..8192].iter().all(|&b| b == 7));
                assert!(bytes[..4096].iter().all(|&b| b == 0));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
