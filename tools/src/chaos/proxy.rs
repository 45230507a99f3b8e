//! The fault proxy: one TCP forwarder per node pair, placed between them.
//!
//! synod opens exactly one connection per pair (the lower id dials), so the
//! runner tells the lower node the proxy's address as the higher node's
//! address, and the proxy forwards to the real one. Both directions of the
//! pair then pass through it and can be cut apart:
//!
//! ```text
//! node 1 --dial--> proxy(1,2) --> node 2
//!          1→2 bytes: forwarded, or dropped when 1→2 is cut
//!          2→1 bytes: forwarded, or dropped when 2→1 is cut
//! ```
//!
//! A dropped direction swallows bytes (the sender's writes succeed, nothing
//! arrives), as a one-way partition does. Cutting both ways closes every
//! connection and refuses new ones. Healing closes the connections that
//! lost bytes, so the next one starts on a frame boundary.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What passes between the pair `(low, high)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Links {
    /// Bytes from the lower id to the higher are dropped.
    pub low_to_high_cut: bool,
    /// Bytes from the higher id to the lower are dropped.
    pub high_to_low_cut: bool,
}

struct Shared {
    links: Mutex<Links>,
    streams: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

/// One pair's forwarder; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> Result<Proxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            links: Mutex::new(Links::default()),
            streams: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        thread::spawn(move || accept_loop(listener, target, accepting));
        Ok(Proxy { addr, shared })
    }

    /// The address the lower node dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what passes; connections that lost bytes, or that a full cut
    /// forbids, are closed.
    pub fn set(&self, links: Links) {
        let before = std::mem::replace(&mut *self.shared.links.lock().expect("links"), links);
        let healed = (before.low_to_high_cut && !links.low_to_high_cut)
            || (before.high_to_low_cut && !links.high_to_low_cut);
        if healed || (links.low_to_high_cut && links.high_to_low_cut) {
            close_all(&self.shared);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        close_all(&self.shared);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn close_all(shared: &Shared) {
    for stream in shared.streams.lock().expect("streams").drain(..) {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(low) = incoming else { continue };
        let links = *shared.links.lock().expect("links");
        if links.low_to_high_cut && links.high_to_low_cut {
            continue; // dropped: the dialer sees the connection close
        }
        let Ok(high) = TcpStream::connect(target) else {
            continue;
        };
        let _ = low.set_nodelay(true);
        let _ = high.set_nodelay(true);
        if let Err(e) = forward(low, high, &shared) {
            tracing::debug!(error = %e, "proxy connection not forwarded");
        }
    }
}

fn forward(low: TcpStream, high: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    {
        let mut streams = shared.streams.lock().expect("streams");
        streams.push(low.try_clone()?);
        streams.push(high.try_clone()?);
    }
    let (low_in, high_out) = (low.try_clone()?, high.try_clone()?);
    let up = shared.clone();
    thread::spawn(move || pump(low_in, high_out, &up, |l| l.low_to_high_cut));
    let down = shared.clone();
    thread::spawn(move || pump(high, low, &down, |l| l.high_to_low_cut));
    Ok(())
}

/// Copies `from` to `to` until either closes, dropping bytes while `cut`.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, cut: fn(&Links) -> bool) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut(&shared.links.lock().expect("links")) {
            continue;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
