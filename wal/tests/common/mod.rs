//! Helpers shared by the WAL integration tests.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};
use glommio::{LocalExecutorBuilder, Placement};
use rkyv::util::AlignedVec;
use synod_wal::{DmaStorage, Storage, WalConfig};

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

/// A storage wrapper for tests: counts fdatasyncs and fails the chosen one
/// or every write, on request.
#[derive(Clone, Default)]
pub struct Faulty {
    pub fdatasyncs: Rc<Cell<u32>>,
    pub fail_fdatasync_number: Rc<Cell<Option<u32>>>,
    pub fail_writes: Rc<Cell<bool>>,
}

impl Storage for Faulty {
    type File = DmaFile;

    async fn create(&self, path: &Path, size_bytes: u64) -> io::Result<DmaFile> {
        DmaStorage.create(path, size_bytes).await
    }
    async fn open(&self, path: &Path) -> io::Result<DmaFile> {
        DmaStorage.open(path).await
    }
    async fn read_all(&self, path: &Path) -> io::Result<AlignedVec<16>> {
        DmaStorage.read_all(path).await
    }
    fn alloc_buffer(&self, file: &DmaFile, len_bytes: usize) -> DmaBuffer {
        DmaStorage.alloc_buffer(file, len_bytes)
    }
    async fn write_at(
        &self,
        file: &DmaFile,
        buf: DmaBuffer,
        offset_bytes: u64,
    ) -> io::Result<usize> {
        if self.fail_writes.get() {
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        DmaStorage.write_at(file, buf, offset_bytes).await
    }
    async fn fdatasync(&self, file: &DmaFile) -> io::Result<()> {
        let number = self.fdatasyncs.get() + 1;
        self.fdatasyncs.set(number);
        if self.fail_fdatasync_number.get() == Some(number) {
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        DmaStorage.fdatasync(file).await
    }
    async fn truncate(&self, file: &DmaFile, len_bytes: u64, size_bytes: u64) -> io::Result<()> {
        DmaStorage.truncate(file, len_bytes, size_bytes).await
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        DmaStorage.remove(path).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        DmaStorage.sync_dir(dir).await
    }
    async fn close(&self, file: DmaFile) -> io::Result<()> {
        DmaStorage.close(file).await
    }
}

/// EIO, the error a failing disk reports.
pub fn libc_eio() -> i32 {
    5
}
