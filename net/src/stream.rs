//! Socket plumbing shared by peer and client connections: timeouts, reading
//! frames, and the coalescing writer.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use socket2::SockRef;
use synod_wal::frame::{encode_frame, FrameError};

use crate::queue::{Batch, SendQueue};

/// Pieces handed to one `sendmsg` (well below the kernel's IOV_MAX of 1024;
/// more than a socket buffer's worth of large frames).
const WRITE_SEGMENTS_MAX: usize = 64;
use crate::reader::{Frame, FrameReader};

/// Why a connection ended. Every one is logged by the owner of the
/// connection; none is a panic.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("closed by the other side")]
    Eof,
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("frame kind {0:#06x} is reserved for the transport")]
    ReservedKind(u16),
    #[error("timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(String),
    /// Frames that fail their MAC (`auth.rs`): altered, replayed,
    /// reordered or cut by someone without the key, or more of them than
    /// a batch holds.
    #[error("unauthenticated frames: {0}")]
    Unauthenticated(String),
    #[error("transport closing")]
    Shutdown,
}

/// `None` if `d` passes first.
pub(crate) async fn with_timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(d).await;
        None
    })
    .await
}

/// TCP connect within `timeout`, Nagle off (the queue coalesces already).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnError> {
    let stream = with_timeout(timeout, TcpStream::connect(addr))
        .await
        .ok_or(ConnError::Timeout)?
        .map_err(|e| ConnError::Io(e.into()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| ConnError::Io(e.into()))?;
    Ok(stream)
}

/// Reads once from the socket and appends every whole frame to `out`.
pub(crate) async fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    reader: &mut FrameReader,
    out: &mut Vec<Frame>,
) -> Result<(), ConnError> {
    let n = r.read(reader.read_space()).await?;
    reader.filled(n);
    if n == 0 {
        return Err(ConnError::Eof);
    }
    while let Some(frame) = reader.next_frame()? {
        out.push(frame);
    }
    Ok(())
}

/// Reads until one frame is there (handshakes, where frames come singly).
pub(crate) async fn read_one<R: AsyncRead + Unpin>(
    r: &mut R,
    reader: &mut FrameReader,
) -> Result<Frame, ConnError> {
    loop {
        if let Some(frame) = reader.next_frame()? {
            return Ok(frame);
        }
        let n = r.read(reader.read_space()).await?;
        reader.filled(n);
        if n == 0 {
            return Err(ConnError::Eof);
        }
    }
}

/// Writes one frame directly (handshake messages, before any queue runs).
pub(crate) async fn write_one<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u16,
    body: &[u8],
) -> Result<(), ConnError> {
    let mut buf = Vec::with_capacity(64 + body.len());
    encode_frame(kind, 0, body, &mut buf)?;
    w.write_all(&buf).await?;
    Ok(())
}

/// The descriptor of a connection's socket, taken before the stream is
/// split in halves, for the vectored sends glommio does not offer. Valid
/// while the connection's stream lives (the connection task owns both).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SocketFd(RawFd);

impl SocketFd {
    pub(crate) fn of(stream: &TcpStream) -> SocketFd {
        SocketFd(stream.as_raw_fd())
    }
}

/// Writes whatever the queue holds, all of it per batch (coalescing), until
/// the socket fails. Frames in a failed write are the caller's to count
/// (`SendQueue::lost_inflight`).
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    socket: SocketFd,
    queue: &SendQueue,
    mut seal: impl FnMut(&mut Batch),
    on_written: impl Fn(u64, usize),
) -> ConnError {
    loop {
        let epoch = queue.data.epoch();
        let Some(mut batch) = queue.take() else {
            queue.data.changed_since(epoch).await;
            continue;
        };
        seal(&mut batch);
        if let Err(e) = write_batch(w, socket, &batch, queue).await {
            return ConnError::Io(e);
        }
        let bytes = batch.bytes();
        let frames = queue.written(batch);
        on_written(frames, bytes);
    }
}

/// Writes every byte of `batch`: a non-blocking vectored send of up to
/// [`WRITE_SEGMENTS_MAX`] pieces at a time; when the socket buffer is full,
/// glommio's own write of the next piece waits for room (no spinning).
async fn write_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    socket: SocketFd,
    batch: &Batch,
    queue: &SendQueue,
) -> io::Result<()> {
    // The next byte to write: piece `part`, offset `offset` into it.
    let (mut part, mut offset) = (0, 0);
    let segments = batch.segments();
    while part < segments {
        let end = segments.min(part + WRITE_SEGMENTS_MAX);
        let slices: Vec<IoSlice<'_>> = (part..end)
            .map(|i| IoSlice::new(&batch.segment(i)[if i == part { offset } else { 0 }..]))
            .collect();
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let sent = match SockRef::from(&socket.0).send_vectored_with_flags(&slices, flags) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.write(&slices[0]).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if sent == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        queue.moved();
        // Step over what was sent.
        let mut left = sent;
        while left > 0 {
            let rest = batch.segment(part).len() - offset;
            if left < rest {
                offset += left;
                left = 0;
            } else {
                left -= rest;
                part += 1;
                offset = 0;
            }
        }
    }
    Ok(())
}
