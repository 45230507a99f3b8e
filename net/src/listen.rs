//! Listening sockets that no other process can share.
//!
//! glommio's `TcpListener::bind` sets `SO_REUSEPORT`, so that every core can
//! bind the same port. It also lets a second process bind that port without
//! an error, and the kernel then splits incoming connections between the
//! two: a node started twice by mistake, or another cluster's node that was
//! handed the same port, would silently receive some of this node's peer
//! traffic. A peer port belongs to one core of one node, so it is bound
//! without `SO_REUSEPORT`: the second bind fails with `EADDRINUSE`. The
//! client port, which every core binds, keeps `SO_REUSEPORT`; a node claims
//! it for its lifetime and checks that nobody else holds it
//! ([`claim_shared_port`]).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::log_limit::OncePerSecond;

/// Accept backlog, as glommio's own bind uses.
const BACKLOG: i32 = 1024;

/// Whether the cores of one node bind the port together.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// One core owns the port (a peer port): any other bind fails.
    Alone,
    /// Every core binds it, with `SO_REUSEPORT` (the client port).
    AcrossCores,
}

/// How long a port still in use is waited for by default. A process that
/// was just killed keeps its listening sockets open until the kernel has
/// torn down its io_uring, in the background after the process is gone
/// (the accepts in the ring hold them): a restart right after a crash
/// would otherwise fail with `EADDRINUSE`. A port that stays in use this
/// long belongs to a live process.
pub const BIND_BUSY_WAIT: Duration = Duration::from_secs(5);

/// Binds and listens on `addr`, waiting up to `busy_wait` while the port is
/// in use. `SO_REUSEADDR` is always set: connections of an earlier run
/// still closing (`TIME_WAIT`) do not hold up a restart, the connections
/// this socket accepts inherit it, so that [`check_unclaimed`] can tell
/// them from a listener, and on Linux it never lets two listeners share a
/// port.
pub(crate) fn bind(
    addr: SocketAddr,
    sharing: Sharing,
    busy_wait: Duration,
) -> std::io::Result<std::net::TcpListener> {
    while_busy(addr, busy_wait, || {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if sharing == Sharing::AcrossCores {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    })
}

/// Refuses `addr` if, after waiting up to `busy_wait`, a socket still
/// listens on it, `SO_REUSEPORT` or not (or any socket without
/// `SO_REUSEADDR` is bound to it). For a port the cores of one node then
/// share (the client port): a second node started on it fails here instead
/// of taking a share of its connections. The probe only binds, never
/// listens, so no connection can land on it. Two nodes starting on the
/// same port at the same instant can both pass.
pub fn check_unclaimed(addr: SocketAddr, busy_wait: Duration) -> std::io::Result<()> {
    while_busy(addr, busy_wait, || {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(addr))
    })
}

/// A port claimed by this process ([`claim_shared_port`]): an abstract
/// Unix socket named after it, which the kernel releases when the process
/// exits, however it exits.
#[derive(Debug)]
pub struct PortClaim {
    _socket: std::os::unix::net::UnixListener,
}

/// Claims `addr` for the cores of this process to share, then checks that
/// nobody else listens on it ([`check_unclaimed`]). The claim is an
/// abstract Unix socket `synod-port/<addr>` in this network namespace:
/// only one process can bind it, so of two nodes started on the same port
/// at the same instant, which the check alone lets both through, the
/// second fails with `EADDRINUSE` (after waiting up to `busy_wait`, as for
/// a port). Hold the claim as long as the port is bound.
pub fn claim_shared_port(addr: SocketAddr, busy_wait: Duration) -> std::io::Result<PortClaim> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("synod-port/{addr}");
    let unix_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let socket = while_busy(addr, busy_wait, || {
        std::os::unix::net::UnixListener::bind_addr(&unix_addr)
    })?;
    check_unclaimed(addr, busy_wait)?;
    Ok(PortClaim { _socket: socket })
}

/// `attempt` again every 20 ms while it fails with `EADDRINUSE`, for up to
/// `busy_wait`. It blocks the thread: only ever at start.
fn while_busy<T>(
    addr: SocketAddr,
    busy_wait: Duration,
    mut attempt: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let deadline = Instant::now() + busy_wait;
    let mut warned = false;
    loop {
        match attempt() {
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !warned {
                    tracing::warn!(%addr, wait = ?busy_wait, "port in use; waiting for it (a process that just died can hold it a moment longer)");
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// A listening socket of the calling executor that leaves the listening
/// state as soon as it is dropped. glommio closes the descriptor on drop,
/// but an accept still in the ring keeps the socket listening until its
/// cancellation is reaped, and until then the port could not be bound again
/// (a transport restarted on the same executor, say).
pub(crate) struct Listener {
    inner: glommio::net::TcpListener,
    fd: RawFd,
    /// Refusals for want of descriptors are logged a line a second at most.
    reserve_log: OncePerSecond,
}

/// File descriptors an accept leaves free for the rest of the process (the
/// WAL's next segment, a snapshot file, a metrics scrape): a connection
/// that would leave fewer is closed at once. Running out would fail a WAL
/// write, which is fatal; running short of connections is not.
pub const FD_RESERVE: u64 = 64;

/// Whether descriptor `fd`, just handed out, eats into the reserve. The
/// kernel hands out the lowest free descriptor, so `fd` open means every
/// descriptor below it is open too.
fn in_reserve(fd: RawFd) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return false;
    }
    let soft = limit.rlim_cur;
    soft != libc::RLIM_INFINITY && (fd as u64).saturating_add(FD_RESERVE) >= soft
}

impl Listener {
    /// Takes over `listener`; must run inside a glommio executor.
    pub(crate) fn new(listener: std::net::TcpListener) -> Listener {
        let fd = listener.into_raw_fd();
        // SAFETY: `fd` is a bound, listening TCP socket whose ownership
        // `into_raw_fd` handed over; the glommio listener closes it once.
        let inner = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
        Listener {
            inner,
            fd,
            reserve_log: OncePerSecond::default(),
        }
    }

    /// The next connection; one that would eat into the descriptor reserve
    /// ([`FD_RESERVE`]) is closed at once (its client sees the close).
    pub(crate) async fn accept(&self) -> glommio::Result<glommio::net::TcpStream, ()> {
        loop {
            let stream = self.inner.accept().await?;
            let fd = stream.as_raw_fd();
            if !in_reserve(fd) {
                return Ok(stream);
            }
            if self.reserve_log.due() {
                tracing::warn!(
                    fd,
                    reserve = FD_RESERVE,
                    "connection closed at accept: it would leave too few file descriptors \
                     for the WAL (raise the limit with ulimit -n or LimitNOFILE=)"
                );
            }
            drop(stream);
            // Let the other tasks (a closing connection, say) run first.
            glommio::yield_if_needed().await;
        }
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
