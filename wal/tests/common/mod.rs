//! Helpers shared by the WAL integration tests.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::path::Path;
use std::rc::Rc;

use glommio::io::DmaBuffer;
use glommio::{LocalExecutorBuilder, Placement};
use rkyv::util::AlignedVec;
use synod_wal::{DmaStorage, SegmentFile, Storage, WalConfig};

/// glommio registers `io_memory` with io_uring, which counts against the
/// 8 MiB memlock limit; tests run several executors at once, so 1 MiB each.
pub const TEST_IO_MEMORY_BYTES: usize = 1 << 20;

/// Runs `make()` to completion on a fresh glommio executor thread.
pub fn run<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(TEST_IO_MEMORY_BYTES)
        .spawn(make)
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

/// Small segments so tests roll over often.
pub fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes_max: 64 << 10,
        write_bytes_max: 16 << 10,
        frame_body_bytes_max: 8 << 10,
        fsync: true,
    }
}

/// A body whose bytes say which frame it is.
pub fn body(i: u64, len_bytes: usize) -> Vec<u8> {
    (0..len_bytes)
        .map(|j| (i as usize * 31 + j) as u8)
        .collect()
}

/// All durable frames of `wal` as (position, kind, body).
pub async fn frames_of<S: Storage>(wal: &synod_wal::Wal<S>) -> Vec<(u64, u16, Vec<u8>)> {
    let mut out = Vec::new();
    wal.read_frames(wal.first_position(), |p, k, b| {
        out.push((p.0, k, b.to_vec()))
    })
    .await
    .expect("read frames");
    out
}

/// The `Storage` methods a test wrapper leaves to `DmaStorage`: all but
/// `write_at` and `fdatasync`, which each wrapper defines.
macro_rules! dma_passthrough {
    () => {
        async fn create(&self, path: &Path, size_bytes: u64) -> io::Result<SegmentFile> {
            DmaStorage.create(path, size_bytes).await
        }
        async fn open(&self, path: &Path) -> io::Result<SegmentFile> {
            DmaStorage.open(path).await
        }
        async fn read_all(&self, path: &Path) -> io::Result<AlignedVec<16>> {
            DmaStorage.read_all(path).await
        }
        fn alloc_buffer(&self, file: &SegmentFile, len_bytes: usize) -> DmaBuffer {
            DmaStorage.alloc_buffer(file, len_bytes)
        }
        async fn truncate(
            &self,
            file: &SegmentFile,
            len_bytes: u64,
            size_bytes: u64,
        ) -> io::Result<()> {
            DmaStorage.truncate(file, len_bytes, size_bytes).await
        }
        async fn remove(&self, path: &Path) -> io::Result<()> {
            DmaStorage.remove(path).await
        }
        async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            DmaStorage.sync_dir(dir).await
        }
        async fn close(&self, file: SegmentFile) -> io::Result<()> {
            DmaStorage.close(file).await
        }
    };
}

/// A storage wrapper for tests: counts fdatasyncs and durable writes (each
/// a write and an fdatasync here, so injected failures reach both) and
/// fails the chosen fdatasync or every write, on request.
#[derive(Clone, Default)]
pub struct Faulty {
    pub fdatasyncs: Rc<Cell<u32>>,
    pub durable_writes: Rc<Cell<u32>>,
    pub fail_fdatasync_number: Rc<Cell<Option<u32>>>,
    pub fail_writes: Rc<Cell<bool>>,
}

impl Storage for Faulty {
    type File = SegmentFile;

    dma_passthrough!();
    async fn write_at(
        &self,
        file: &SegmentFile,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        if self.fail_writes.get() {
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        DmaStorage.write_at(file, buf, offset_bytes).await
    }
    async fn write_durable_at(
        &self,
        file: &SegmentFile,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        self.durable_writes.set(self.durable_writes.get() + 1);
        synod_wal::storage::write_then_fdatasync(self, file, buf, offset_bytes).await
    }
    async fn fdatasync(&self, file: &SegmentFile) -> io::Result<()> {
        let number = self.fdatasyncs.get() + 1;
        self.fdatasyncs.set(number);
        if self.fail_fdatasync_number.get() == Some(number) {
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        DmaStorage.fdatasync(file).await
    }
}

/// EIO, the error a failing disk reports.
pub fn libc_eio() -> i32 {
    5
}

/// A storage that remembers which writes an fdatasync made durable: a
/// write counts only once an fdatasync issued after it completed has
/// returned, as a disk's volatile cache would have it. `crash_image`
/// builds the directory a power cut at this instant would leave.
#[derive(Clone, Default)]
pub struct VolatileCache {
    state: Rc<std::cell::RefCell<CacheState>>,
    /// How long each fdatasync takes (on top of the real one).
    pub fdatasync_delay: std::time::Duration,
}

#[derive(Default)]
struct CacheState {
    writes: Vec<CachedWrite>,
    fdatasyncs: u64,
}

struct CachedWrite {
    path: std::path::PathBuf,
    offset_bytes: u64,
    bytes: Vec<u8>,
    completed: bool,
    covered_by: Option<u64>,
    durable: bool,
}

fn path_of(file: &SegmentFile) -> std::path::PathBuf {
    file.path().expect("segment files have paths")
}

impl VolatileCache {
    /// A cache whose fdatasyncs each take `fdatasync_delay` longer.
    pub fn with_fdatasync_delay(fdatasync_delay: std::time::Duration) -> VolatileCache {
        VolatileCache {
            state: Rc::default(),
            fdatasync_delay,
        }
    }

    /// Copies `dir` to `into` as a power cut now would leave it: every
    /// segment holds zeros except the writes made durable. Synchronous, so
    /// no task runs between the look and the copy.
    pub fn crash_image(&self, dir: &Path, into: &Path) {
        let state = self.state.borrow();
        std::fs::create_dir_all(into).unwrap();
        let meta = synod_wal::layout::META_FILE_NAME;
        std::fs::copy(dir.join(meta), into.join(meta)).unwrap();
        for (_, path) in synod_wal::layout::list_segments(dir).unwrap() {
            let size = std::fs::metadata(&path).unwrap().len() as usize;
            let mut image = vec![0u8; size];
            for write in state.writes.iter().filter(|w| w.durable && w.path == path) {
                let start = write.offset_bytes as usize;
                image[start..start + write.bytes.len()].copy_from_slice(&write.bytes);
            }
            std::fs::write(into.join(path.file_name().unwrap()), image).unwrap();
        }
    }
}

impl Storage for VolatileCache {
    type File = SegmentFile;

    dma_passthrough!();
    async fn write_at(
        &self,
        file: &SegmentFile,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        let index = {
            let mut state = self.state.borrow_mut();
            state.writes.push(CachedWrite {
                path: path_of(file),
                offset_bytes,
                bytes: buf.as_bytes().to_vec(),
                completed: false,
                covered_by: None,
                durable: false,
            });
            state.writes.len() - 1
        };
        let written = DmaStorage.write_at(file, buf, offset_bytes).await?;
        self.state.borrow_mut().writes[index].completed = true;
        Ok(written)
    }
    async fn fdatasync(&self, file: &SegmentFile) -> io::Result<()> {
        let (path, id) = {
            let mut state = self.state.borrow_mut();
            state.fdatasyncs += 1;
            let (path, id) = (path_of(file), state.fdatasyncs);
            for write in state.writes.iter_mut() {
                if write.path == path && write.completed && write.covered_by.is_none() {
                    write.covered_by = Some(id);
                }
            }
            (path, id)
        };
        glommio::timer::sleep(self.fdatasync_delay).await;
        let result = DmaStorage.fdatasync(file).await;
        let mut state = self.state.borrow_mut();
        if result.is_ok() {
            for write in state.writes.iter_mut() {
                if write.path == path && write.covered_by == Some(id) {
                    write.durable = true;
                }
            }
        }
        result
    }
}
