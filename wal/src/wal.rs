//! The log itself: append, group commit, recovery, truncation.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::frame::{encode_frame_header, frame_bytes, FRAME_HEADER_BYTES};
use crate::layout::{self, segment_file_name, META_FILE_NAME};
use crate::pending::PendingBytes;
use crate::scan::{scan_segment, SegmentEnd};
use crate::storage::{DmaStorage, Storage};
use crate::{Position, WalConfig, WalError, BLOCK_BYTES};

/// What recovery found when the WAL was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: usize,
    /// Valid frames found.
    pub frames: u64,
    /// Position of the oldest frame kept (after prefix removal).
    pub first_position: Position,
    /// Position the next `append` returns: one past the last frame.
    pub next_position: Position,
    /// The torn write cut off the end of the last segment, if any.
    pub torn: Option<TornTail>,
}

/// A torn write found and truncated at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the valid frames ended and the file was cut.
    pub offset_bytes: u64,
    /// Nonzero bytes discarded after that offset.
    pub bytes_discarded: u64,
    /// Why the bytes there were not a frame.
    pub reason: String,
}

/// A write-ahead log in one directory, used from one glommio executor.
/// Cloning gives another handle to the same log (for several appending
/// tasks); it is not `Send`.
pub struct Wal<S: Storage = DmaStorage> {
    inner: Rc<Inner<S>>,
}

impl<S: Storage> Clone for Wal<S> {
    fn clone(&self) -> Self {
        Wal {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: WalConfig,
    state: RefCell<State<S::File>>,
}

struct Segment {
    first: Position,
    path: PathBuf,
}

/// Bytes of one segment that are not durable yet, from a block boundary.
struct Chunk {
    segment_first: Position,
    /// Segment offset of `bytes[0]`; a multiple of `BLOCK_BYTES`.
    base_offset_bytes: u64,
    /// `bytes[..written_bytes]` are on disk already: the partial last block,
    /// rewritten identically so durable frames in it never change.
    written_bytes: usize,
    bytes: PendingBytes,
    /// One past the last frame in `bytes`.
    end: Position,
    /// The segment file does not exist yet.
    new_segment: bool,
}

impl Chunk {
    fn new_segment(first: Position, piece_bytes: usize) -> Chunk {
        Chunk {
            segment_first: first,
            base_offset_bytes: 0,
            written_bytes: 0,
            bytes: PendingBytes::new(piece_bytes),
            end: first,
            new_segment: true,
        }
    }

    /// The tail of an existing segment whose frames end at `data.len()`.
    fn tail_of(segment_first: Position, data: &[u8], end: Position, piece_bytes: usize) -> Chunk {
        let base = data.len() / BLOCK_BYTES * BLOCK_BYTES;
        Chunk {
            segment_first,
            base_offset_bytes: base as u64,
            written_bytes: data.len() - base,
            bytes: PendingBytes::from_slice(piece_bytes, &data[base..]),
            end,
            new_segment: false,
        }
    }

    fn end_offset_bytes(&self) -> u64 {
        self.base_offset_bytes + self.bytes.len() as u64
    }

    /// What is left to append into once this chunk has been written.
    fn continuation(&self) -> Chunk {
        let base = self.end_offset_bytes() / BLOCK_BYTES as u64 * BLOCK_BYTES as u64;
        let keep_from = (base - self.base_offset_bytes) as usize;
        Chunk {
            segment_first: self.segment_first,
            base_offset_bytes: base,
            written_bytes: self.bytes.len() - keep_from,
            bytes: self.bytes.tail(keep_from),
            end: self.end,
            new_segment: false,
        }
    }
}

struct State<F> {
    /// Segment files on disk, oldest first; the last one is being written.
    segments: Vec<Segment>,
    active: Option<Rc<F>>,
    /// Never empty: appends go to the last chunk.
    pending: Vec<Chunk>,
    next: Position,
    durable_end: Position,
    /// A commit, truncation, removal or read owns the files.
    busy: bool,
    truncating: bool,
    /// Bumped each time `busy` is released, to wake waiters.
    round: u64,
    waiters: Vec<Waker>,
    fatal: Option<String>,
    /// How long the last commit's writes and fdatasync took.
    last_commit_time: Option<Duration>,
}

impl<F> State<F> {
    fn first_position(&self) -> Position {
        self.segments
            .first()
            .map_or(self.pending[0].segment_first, |s| s.first)
    }

    fn check_fatal(&self) -> Result<(), WalError> {
        match &self.fatal {
            Some(cause) => Err(WalError::Fatal(cause.clone())),
            None => Ok(()),
        }
    }
}

/// Resolves once the round counter moves past `round` or the WAL fails.
struct WaitRound<'a, F> {
    state: &'a RefCell<State<F>>,
    round: u64,
}

impl<F> Future for WaitRound<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.state.borrow_mut();
        if st.round != self.round || st.fatal.is_some() {
            return Poll::Ready(());
        }
        st.waiters.push(cx.waker().clone());
        Poll::Pending
    }
}

impl Wal<DmaStorage> {
    /// Opens (or creates) the WAL in `dir` with glommio `DmaFile`s, runs
    /// recovery and reports what it found. Must run inside a glommio executor.
    pub async fn open(
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Self, RecoveryReport), WalError> {
        Self::open_with(DmaStorage, dir.as_ref(), config).await
    }
}

fn io_error<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Creates `dir` and its `wal.meta` if the directory holds no WAL yet, then
/// checks the meta file. Blocking std calls: this runs once, at open.
fn prepare_dir(dir: &Path) -> Result<(), WalError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir, "creating the directory"))?;
    let meta_path = dir.join(META_FILE_NAME);
    if !meta_path.exists() {
        if !layout::list_segments(dir)?.is_empty() {
            return Err(WalError::NotAWal {
                path: dir.to_path_buf(),
                reason: format!("segments without {META_FILE_NAME}"),
            });
        }
        let write = || -> io::Result<()> {
            let mut file = std::fs::File::create(&meta_path)?;
            io::Write::write_all(&mut file, &layout::meta_contents())?;
            file.sync_all()?;
            std::fs::File::open(dir)?.sync_all()?;
            // The directory itself is new too: its entry in the parent
            // must survive a power cut, or the WAL goes with it.
            match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => std::fs::File::open(parent)?.sync_all(),
                None => Ok(()),
            }
        };
        write().map_err(io_error(&meta_path, "creating the meta file"))?;
    }
    layout::check_meta(dir)
}

/// What recovery hands to the new `Wal`.
struct Recovered<F> {
    segments: Vec<Segment>,
    active: Option<F>,
    tail: Chunk,
    report: RecoveryReport,
}

impl<S: Storage> Wal<S> {
    /// [`Wal::open`] with another storage backend (tests inject faults so).
    pub async fn open_with(
        storage: S,
        dir: &Path,
        config: WalConfig,
    ) -> Result<(Self, RecoveryReport), WalError> {
        config.validate()?;
        prepare_dir(dir)?;
        // Open a full-block file before any segment: glommio probes the
        // device's io_uring poll support on the first file it opens (see
        // `DmaStorage`), and an empty segment would mislead the probe.
        let meta_path = dir.join(META_FILE_NAME);
        let meta = storage
            .open(&meta_path)
            .await
            .map_err(io_error(&meta_path, "opening"))?;
        storage
            .close(meta)
            .await
            .map_err(io_error(&meta_path, "closing"))?;
        let recovered = recover(&storage, dir, &config).await?;
        let next = recovered.tail.end;
        let state = State {
            segments: recovered.segments,
            active: recovered.active.map(Rc::new),
            pending: vec![recovered.tail],
            next,
            durable_end: next,
            busy: false,
            truncating: false,
            round: 0,
            waiters: Vec::new(),
            fatal: None,
            last_commit_time: None,
        };
        let inner = Inner {
            storage,
            dir: dir.to_path_buf(),
            config,
            state: RefCell::new(state),
        };
        Ok((
            Wal {
                inner: Rc::new(inner),
            },
            recovered.report,
        ))
    }

    /// Adds a frame holding `body` (already-encoded bytes, e.g. an rkyv
    /// archive) and returns its position at once. It is durable once
    /// [`Wal::durable`] has passed it, e.g. after [`Wal::sync`].
    pub fn append(&self, kind: u16, body: &[u8]) -> Result<Position, WalError> {
        let mut st = self.inner.state.borrow_mut();
        st.check_fatal()?;
        if st.truncating {
            return Err(WalError::Truncating);
        }
        let limit_bytes = self.inner.config.frame_body_bytes_max;
        if body.len() > limit_bytes as usize {
            return Err(WalError::FrameTooLarge {
                body_len: body.len(),
                limit_bytes,
            });
        }
        let position = st.next;
        let tail_end = st.pending.last().map_or(0, Chunk::end_offset_bytes);
        if tail_end > 0
            && tail_end + frame_bytes(body.len()) as u64 > self.inner.config.segment_bytes_max
        {
            let piece_bytes = self.inner.config.write_bytes_max;
            st.pending.push(Chunk::new_segment(position, piece_bytes));
        }
        let tail = st.pending.last_mut().expect("pending is never empty");
        let header = encode_frame_header(kind, position.0, body).expect("the length was checked");
        tail.bytes.extend_from_slice(&header);
        tail.bytes.extend_from_slice(body);
        tail.bytes
            .extend_zeros(frame_bytes(body.len()) - FRAME_HEADER_BYTES - body.len());
        tail.end = Position(position.0 + 1);
        st.next = tail.end;
        Ok(position)
    }

    /// All frames before this position are durable.
    pub fn durable(&self) -> Position {
        self.inner.state.borrow().durable_end
    }

    /// The position the next `append` returns.
    pub fn next_position(&self) -> Position {
        self.inner.state.borrow().next
    }

    /// How long the last commit took on the disk: its writes and
    /// fdatasync, without the time a [`Wal::sync`] spent waiting for the
    /// commit before it. `None` before the first.
    pub fn last_commit_time(&self) -> Option<Duration> {
        self.inner.state.borrow().last_commit_time
    }

    /// The oldest position kept.
    pub fn first_position(&self) -> Position {
        self.inner.state.borrow().first_position()
    }

    /// Makes every frame appended before this call durable and returns the
    /// new [`Wal::durable`] watermark. Callers that arrive while a commit is
    /// in flight wait for it, then one of them commits everything appended
    /// meanwhile in a single write + fdatasync (group commit).
    pub async fn sync(&self) -> Result<Position, WalError> {
        let target = self.inner.state.borrow().next;
        loop {
            let wait_round = {
                let mut st = self.inner.state.borrow_mut();
                st.check_fatal()?;
                if st.durable_end >= target.min(st.next) {
                    return Ok(st.durable_end);
                }
                if st.busy {
                    Some(st.round)
                } else {
                    st.busy = true;
                    None
                }
            };
            match wait_round {
                Some(round) => self.wait_round(round).await,
                None => {
                    let result = self.commit_locked().await;
                    self.unlock();
                    result?;
                }
            }
        }
    }

    fn wait_round(&self, round: u64) -> WaitRound<'_, S::File> {
        WaitRound {
            state: &self.inner.state,
            round,
        }
    }

    async fn lock(&self) -> Result<(), WalError> {
        loop {
            let round = {
                let mut st = self.inner.state.borrow_mut();
                st.check_fatal()?;
                if !st.busy {
                    st.busy = true;
                    return Ok(());
                }
                st.round
            };
            self.wait_round(round).await;
        }
    }

    fn unlock(&self) {
        let waiters = {
            let mut st = self.inner.state.borrow_mut();
            st.busy = false;
            st.round += 1;
            std::mem::take(&mut st.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Records the first fatal error; every later call fails with it.
    fn fail(&self, cause: io::Error) -> WalError {
        let mut st = self.inner.state.borrow_mut();
        let message = st.fatal.get_or_insert_with(|| cause.to_string()).clone();
        WalError::Fatal(message)
    }

    /// Writes and fdatasyncs everything pending. Caller holds the lock.
    async fn commit_locked(&self) -> Result<(), WalError> {
        let chunks = {
            let mut st = self.inner.state.borrow_mut();
            let continuation = st
                .pending
                .last()
                .expect("pending is never empty")
                .continuation();
            std::mem::replace(&mut st.pending, vec![continuation])
        };
        let started = Instant::now();
        let end = chunks.last().expect("at least one chunk").end;
        for chunk in chunks {
            self.write_chunk(chunk).await.map_err(|e| self.fail(e))?;
        }
        let mut st = self.inner.state.borrow_mut();
        st.durable_end = st.durable_end.max(end);
        st.last_commit_time = Some(started.elapsed());
        Ok(())
    }

    async fn write_chunk(&self, chunk: Chunk) -> io::Result<()> {
        if chunk.new_segment {
            self.start_segment(chunk.segment_first).await?;
        }
        if chunk.bytes.len() == chunk.written_bytes {
            return Ok(());
        }
        let file = self.active_file()?;
        let storage = &self.inner.storage;
        let config = &self.inner.config;
        let padded_bytes = chunk.bytes.len().next_multiple_of(BLOCK_BYTES);
        // A commit of one write makes it durable in the same operation; one
        // of several writes them all, then covers them with one fdatasync.
        let one_durable_write = config.fsync && padded_bytes <= config.write_bytes_max;
        // The pieces are the buffers the frames were built in: each goes
        // to the disk from where it is.
        for (offset, buf) in chunk.bytes.into_writes(BLOCK_BYTES) {
            let piece_bytes = buf.len();
            let at = chunk.base_offset_bytes + offset as u64;
            let written = if one_durable_write {
                storage.write_durable_at(&file, buf, at).await?
            } else {
                storage.write_at(&file, buf, at).await?
            };
            if written != piece_bytes {
                return Err(io::Error::other(format!(
                    "short write: {written} of {piece_bytes} bytes"
                )));
            }
        }
        if !config.fsync || one_durable_write {
            return Ok(());
        }
        storage.fdatasync(&file).await
    }

    fn active_file(&self) -> io::Result<Rc<S::File>> {
        let st = self.inner.state.borrow();
        st.active
            .clone()
            .ok_or_else(|| io::Error::other("no active segment file"))
    }

    /// Creates the next segment (its predecessor is complete and synced).
    async fn start_segment(&self, first: Position) -> io::Result<()> {
        let inner = &self.inner;
        let path = inner.dir.join(segment_file_name(first));
        let file = inner
            .storage
            .create(&path, inner.config.segment_bytes_max)
            .await?;
        inner.storage.sync_dir(&inner.dir).await?;
        let previous = {
            let mut st = inner.state.borrow_mut();
            st.segments.push(Segment { first, path });
            st.active.replace(Rc::new(file))
        };
        self.close_file(previous).await
    }

    async fn close_file(&self, file: Option<Rc<S::File>>) -> io::Result<()> {
        match file.map(Rc::try_unwrap) {
            Some(Ok(file)) => self.inner.storage.close(file).await,
            // Still borrowed by nobody in practice; dropping closes it.
            Some(Err(_)) | None => Ok(()),
        }
    }

    /// Removes every frame after `last_kept` (a higher ballot replaces
    /// accepted slots): later segments are unlinked newest first, then the
    /// segment holding `last_kept + 1` is cut there, each step durable before
    /// the next, so a crash leaves a prefix of the log. Pending frames are
    /// committed first (so on return every kept frame is durable); appends
    /// during the truncation are refused.
    pub async fn truncate_after(&self, last_kept: Position) -> Result<(), WalError> {
        let cut = Position(last_kept.0.saturating_add(1));
        self.lock().await?;
        self.inner.state.borrow_mut().truncating = true;
        let result = self.truncate_locked(cut).await;
        self.inner.state.borrow_mut().truncating = false;
        self.unlock();
        result
    }

    async fn truncate_locked(&self, cut: Position) -> Result<(), WalError> {
        {
            let st = self.inner.state.borrow();
            if cut < st.first_position() {
                return Err(WalError::OutOfRange {
                    position: cut,
                    first: st.first_position(),
                    next: st.next,
                });
            }
        }
        self.commit_locked().await?;
        if cut >= self.inner.state.borrow().next {
            return Ok(());
        }
        self.cut_files(cut).await.map_err(|e| self.fail(e))
    }

    async fn cut_files(&self, cut: Position) -> io::Result<()> {
        let inner = &self.inner;
        while let Some(path) = self.pop_segment_from(cut) {
            let active = inner.state.borrow_mut().active.take();
            self.close_file(active).await?;
            inner.storage.remove(&path).await?;
            inner.storage.sync_dir(&inner.dir).await?;
        }
        let (first, path) = {
            let st = inner.state.borrow();
            let last = st
                .segments
                .last()
                .ok_or_else(|| io::Error::other("no segment to truncate"))?;
            (last.first, last.path.clone())
        };
        let image = inner.storage.read_all(&path).await?;
        let scan = scan_segment(&image, first, true)
            .map_err(|c| io::Error::other(format!("{}: {c}", path.display())))?;
        let offset_bytes = scan
            .frames
            .get((cut.0 - first.0) as usize)
            .map_or(scan.data_end_bytes, |f| f.offset_bytes);
        let file = match self.active_file() {
            Ok(file) => file,
            Err(_) => Rc::new(inner.storage.open(&path).await?),
        };
        inner
            .storage
            .truncate(&file, offset_bytes, inner.config.segment_bytes_max)
            .await?;
        let mut st = inner.state.borrow_mut();
        st.active = Some(file);
        let piece_bytes = inner.config.write_bytes_max;
        st.pending = vec![Chunk::tail_of(
            first,
            &image[..offset_bytes as usize],
            cut,
            piece_bytes,
        )];
        st.next = cut;
        st.durable_end = cut;
        Ok(())
    }

    /// Takes the newest segment off the list if it starts at or after `cut`
    /// and is not the only one (the first segment's name keeps the numbering).
    fn pop_segment_from(&self, cut: Position) -> Option<PathBuf> {
        let mut st = self.inner.state.borrow_mut();
        let newest = st.segments.last()?;
        if st.segments.len() > 1 && newest.first >= cut {
            return st.segments.pop().map(|s| s.path);
        }
        None
    }

    /// Unlinks whole segments whose frames are all below `keep_from` (a
    /// snapshot covers them), oldest first with a directory fsync after each,
    /// so a crash never leaves a hole. Never removes the segment being
    /// written. Returns the new first position.
    pub async fn remove_before(&self, keep_from: Position) -> Result<Position, WalError> {
        self.lock().await?;
        let result = self.remove_locked(keep_from).await;
        self.unlock();
        result
    }

    async fn remove_locked(&self, keep_from: Position) -> Result<Position, WalError> {
        let inner = &self.inner;
        loop {
            let victim = {
                let mut st = inner.state.borrow_mut();
                if st.segments.len() > 1 && st.segments[1].first <= keep_from {
                    Some(st.segments.remove(0).path)
                } else {
                    None
                }
            };
            let Some(path) = victim else {
                return Ok(self.first_position());
            };
            let removed = async {
                inner.storage.remove(&path).await?;
                inner.storage.sync_dir(&inner.dir).await
            };
            removed.await.map_err(|e| self.fail(e))?;
        }
    }

    /// Calls `visit(position, kind, body)` for every durable frame at or
    /// after `from`, in order, reading the segments back from disk. Bodies
    /// are 16-byte aligned, ready for [`crate::frame::access_body`].
    pub async fn read_frames(
        &self,
        from: Position,
        visit: impl FnMut(Position, u16, &[u8]),
    ) -> Result<(), WalError> {
        self.lock().await?;
        let result = self.read_locked(from, visit).await;
        self.unlock();
        result
    }

    async fn read_locked(
        &self,
        from: Position,
        mut visit: impl FnMut(Position, u16, &[u8]),
    ) -> Result<(), WalError> {
        let (segments, durable_end) = {
            let st = self.inner.state.borrow();
            let segments: Vec<(Position, PathBuf)> = st
                .segments
                .iter()
                .map(|s| (s.first, s.path.clone()))
                .collect();
            (segments, st.durable_end)
        };
        for (i, (first, path)) in segments.iter().enumerate() {
            if segments
                .get(i + 1)
                .is_some_and(|(next_first, _)| *next_first <= from)
            {
                continue;
            }
            let image = self
                .inner
                .storage
                .read_all(path)
                .await
                .map_err(io_error(path, "reading a segment"))?;
            let scan = scan_segment(&image, *first, i + 1 == segments.len())
                .map_err(|c| corrupt(path, c))?;
            for frame in scan
                .frames
                .iter()
                .filter(|f| f.position >= from && f.position < durable_end)
            {
                let body_start = frame.offset_bytes as usize + FRAME_HEADER_BYTES;
                visit(
                    frame.position,
                    frame.kind,
                    &image[body_start..body_start + frame.body_len as usize],
                );
            }
        }
        Ok(())
    }

    /// Commits what is pending and closes the active segment.
    pub async fn close(self) -> Result<(), WalError> {
        self.sync().await?;
        self.lock().await?;
        let active = self.inner.state.borrow_mut().active.take();
        let result = self.close_file(active).await.map_err(|e| self.fail(e));
        self.unlock();
        result
    }
}

fn corrupt(path: &Path, c: crate::scan::Corruption) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset_bytes: c.offset_bytes,
        reason: c.reason,
    }
}

/// Scans every segment, checks they follow each other, and cuts a torn tail
/// off the last one.
async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &WalConfig,
) -> Result<Recovered<S::File>, WalError> {
    let listed = layout::list_segments(dir)?;
    let mut segments = Vec::with_capacity(listed.len());
    let mut frames = 0u64;
    let mut tail = Chunk::new_segment(Position(0), config.write_bytes_max);
    let mut torn = None;
    let mut active = None;
    for (i, (first, path)) in listed.iter().enumerate() {
        if i > 0 && *first != tail.end {
            return Err(WalError::Gap {
                path: path.clone(),
                found: *first,
                expected: tail.end,
            });
        }
        let is_last = i + 1 == listed.len();
        let image = storage
            .read_all(path)
            .await
            .map_err(io_error(path, "reading a segment"))?;
        let scan = scan_segment(&image, *first, is_last).map_err(|c| corrupt(path, c))?;
        frames += scan.frames.len() as u64;
        let end = Position(first.0 + scan.frames.len() as u64);
        let data = &image[..scan.data_end_bytes as usize];
        tail = Chunk::tail_of(*first, data, end, config.write_bytes_max);
        segments.push(Segment {
            first: *first,
            path: path.clone(),
        });
        if is_last {
            let file = storage
                .open(path)
                .await
                .map_err(io_error(path, "opening a segment"))?;
            if let SegmentEnd::Torn {
                offset_bytes,
                bytes,
                reason,
            } = scan.end
            {
                torn = Some(TornTail {
                    path: path.clone(),
                    offset_bytes,
                    bytes_discarded: bytes,
                    reason: reason.to_string(),
                });
            }
            // Zero the torn bytes for good (a later scan must not meet them
            // behind new frames) and restore a short file's preallocation.
            if torn.is_some() || image.len() as u64 != config.segment_bytes_max {
                storage
                    .truncate(&file, scan.data_end_bytes, config.segment_bytes_max)
                    .await
                    .map_err(io_error(path, "truncating a torn tail"))?;
            }
            active = Some(file);
        }
    }
    let report = RecoveryReport {
        segments: segments.len(),
        frames,
        first_position: segments.first().map_or(Position(0), |s| s.first),
        next_position: tail.end,
        torn,
    };
    Ok(Recovered {
        segments,
        active,
        tail,
        report,
    })
}
