//! Socket plumbing shared by peer and client connections: timeouts, reading
//! frames, and the coalescing writer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use synod_wal::frame::{encode_frame, FrameError};

use crate::queue::SendQueue;
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

/// Writes whatever the queue holds, all of it per call (coalescing), until
/// the socket fails. Frames in a failed write are the caller's to count
/// (`SendQueue::lost_inflight`).
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    queue: &SendQueue,
    on_written: impl Fn(u64, usize),
) -> ConnError {
    loop {
        let epoch = queue.data.epoch();
        let Some(buf) = queue.take() else {
            queue.data.changed_since(epoch).await;
            continue;
        };
        if let Err(e) = w.write_all(&buf).await {
            return ConnError::Io(e);
        }
        let bytes = buf.len();
        let frames = queue.written(buf);
        on_written(frames, bytes);
    }
}
