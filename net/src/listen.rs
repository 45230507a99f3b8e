//! Listening sockets this process owns alone.
//!
//! glommio's `TcpListener::bind` sets `SO_REUSEPORT`, so that every core can
//! bind the same port. It also lets a second process bind that port without
//! an error, and the kernel then splits incoming connections between the
//! two: a node started twice by mistake, or another cluster's node that was
//! handed the same port, would silently receive some of this node's peer
//! traffic. A peer port belongs to one core of one node, so it is bound
//! without `SO_REUSEPORT`: the second bind fails with `EADDRINUSE`.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Accept backlog, as glommio's own bind uses.
const BACKLOG: i32 = 1024;

/// Binds and listens on `addr`, refusing an address any other socket is
/// bound to. `SO_REUSEADDR` is set, so connections of an earlier run still
/// in `TIME_WAIT` do not hold up a restart (on Linux it never lets two
/// listeners share a port).
pub fn bind_exclusive(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds and listens on `addr` with `SO_REUSEPORT`, for a port that every
/// core of one node binds (the client port). `SO_REUSEADDR` as well: the
/// connections it accepts inherit it, and [`check_unclaimed`]'s probe can
/// then tell them, still closing after a crash, from a listener.
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Refuses `addr` if a socket listens on it, `SO_REUSEPORT` or not, or
/// any socket without `SO_REUSEADDR` is bound to it; the probe is closed
/// again. For a port the cores of one node then share with
/// [`bind_shared`] (the client port): a second node started on it fails
/// here instead of taking half the connections. Two nodes starting at
/// the same instant can both pass; the peer ports, bound exclusively, still
/// stop the second of them.
pub fn check_unclaimed(addr: SocketAddr) -> std::io::Result<()> {
    bind_exclusive(addr).map(drop)
}

/// A listening socket of the calling executor that leaves the listening
/// state as soon as it is dropped. glommio closes the descriptor on drop,
/// but an accept still in the ring keeps the socket listening until its
/// cancellation is reaped, and until then the port could not be bound again
/// (a transport restarted on the same executor, say).
pub(crate) struct Listener {
    inner: glommio::net::TcpListener,
    fd: RawFd,
}

impl Listener {
    /// Takes over `listener`; must run inside a glommio executor.
    pub(crate) fn new(listener: std::net::TcpListener) -> Listener {
        let fd = listener.into_raw_fd();
        // SAFETY: `fd` is a bound, listening TCP socket whose ownership
        // `into_raw_fd` handed over; the glommio listener closes it once.
        let inner = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
        Listener { inner, fd }
    }

    pub(crate) async fn accept(&self) -> glommio::Result<glommio::net::TcpStream, ()> {
        self.inner.accept().await
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr().map_err(Into::into)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: `fd` is still open (`inner`, which closes it, is dropped
        // after this); shutdown only changes the socket's state.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }
}
