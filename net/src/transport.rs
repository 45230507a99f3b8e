//! Peer connections of one core: a listener, one dialer per higher-id peer,
//! one bounded send queue per peer, and the inbox.
//!
//! Exactly one connection per peer pair: the lower id dials, the higher id
//! accepts. A newer authenticated connection from a peer replaces the older
//! one (the peer restarted). Frames queued while a peer is away stay queued
//! (up to the bound) and go out on the next connection; frames that were in
//! a write when a connection died are counted as dropped, never resent
//! (delivery is at most once, in order, per connection).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::ReadHalf;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::{spawn_local, Task};
use tracing::{debug, info, warn};

use crate::auth::{Opener, Sealer, KIND_BATCH_MAC};
use crate::config::{ConfigError, PeerConfig};
use crate::handshake::RefuseReason;
use crate::listen::{Listener, Sharing};
use crate::log_limit::OncePerSecond;
use crate::notify::Notify;
use crate::peer_handshake::{accept_handshake, dial_handshake, FrameKeys, Refusal};
use crate::queue::Batch;
use crate::queue::{Body, SendError, SendQueue};
use crate::reader::FrameReader;
use crate::stream::{self, read_some, with_timeout, write_loop, ConnError, SocketFd};
use crate::{NodeId, PeerAddr, KIND_RESERVED_MIN};

/// Bodies during the handshake are tiny; an unauthenticated stranger gets no
/// larger buffer than this.
const HANDSHAKE_BODY_BYTES_MAX: u32 = 256;

/// One inbound frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The authenticated sender.
    pub from: NodeId,
    /// The frame's kind.
    pub kind: u16,
    /// The sender's per-connection sequence number (diagnostics).
    pub seq: u64,
    /// The body; shares the read buffer.
    pub body: Bytes,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The config does not validate.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
}

/// A snapshot of the transport's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Handshakes completed (either side).
    pub handshakes_ok: u64,
    /// Handshakes refused or failed, by `RefuseReason::index` (either side).
    pub refused: [u64; RefuseReason::ALL.len()],
    /// Connections closed because a peer sent bytes that are not a frame
    /// (bad magic, version, checksum, length, reserved kind).
    pub bad_frame_closes: u64,
    /// Frames written to sockets.
    pub frames_sent: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Frames delivered to the inbox.
    pub frames_received: u64,
    /// Frames given up: in a write when their connection died.
    pub frames_dropped: u64,
    /// `send` calls refused with `QueueFull`.
    pub queue_full: u64,
}

impl Counters {
    /// Refusals for one reason.
    pub fn refused(&self, reason: RefuseReason) -> u64 {
        self.refused[reason.index()]
    }
}

#[derive(Default)]
struct CounterCells {
    handshakes_ok: Cell<u64>,
    refused: [Cell<u64>; RefuseReason::ALL.len()],
    bad_frame_closes: Cell<u64>,
    frames_sent: Cell<u64>,
    bytes_sent: Cell<u64>,
    frames_received: Cell<u64>,
    frames_dropped: Cell<u64>,
    queue_full: Cell<u64>,
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get() + by);
}

struct Peer {
    addr: PeerAddr,
    queue: SendQueue,
    /// Moves each time a connection to this peer is installed; the older
    /// connection sees it and ends.
    generation: Cell<u64>,
    replaced: Notify,
}

struct Shared {
    config: PeerConfig,
    /// Grows when a peer is added at run time (`Transport::add_peer`).
    peers: RefCell<BTreeMap<NodeId, Rc<Peer>>>,
    inbox: LocalSender<Vec<Message>>,
    counters: CounterCells,
    closed: Cell<bool>,
    shutdown: Notify,
    /// Accepted connections whose handshake has not ended.
    handshakes: Cell<usize>,
    /// Refusals are logged a line a second at most.
    refusal_log: OncePerSecond,
}

/// Accepted connections in their handshake at once, at most: a few per
/// peer is all the cluster needs (a peer dials one at a time); strangers
/// opening connections beyond it are closed at accept, before any buffer.
const HANDSHAKES_PER_PEER_MAX: usize = 4;

/// The receiving end: every peer's frames, each peer's in order.
pub struct Inbox {
    rx: LocalReceiver<Vec<Message>>,
    current: std::vec::IntoIter<Message>,
}

impl Inbox {
    /// The next frame; `None` once the transport is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.current.next() {
                return Some(m);
            }
            self.current = self.rx.recv().await?.into_iter();
        }
    }

    /// The frames of one socket read (all from one peer), or what is left
    /// of the current one: cheaper than `recv` per frame.
    pub async fn recv_batch(&mut self) -> Option<Vec<Message>> {
        let rest: Vec<Message> = self.current.by_ref().collect();
        if !rest.is_empty() {
            return Some(rest);
        }
        self.rx.recv().await
    }
}

/// The transport of one core. Dropping it stops its listener and dialers;
/// [`Transport::shutdown`] also waits for them.
pub struct Transport {
    shared: Rc<Shared>,
    local_addr: SocketAddr,
    tasks: RefCell<Vec<Task<()>>>,
}

/// Why a peer could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddPeerError {
    /// The transport knows this many peers already.
    #[error("{0} peers known already")]
    TooMany(usize),
    /// The id is this node's own.
    #[error("{0} is this node")]
    Myself(NodeId),
}

/// Peers one transport knows at most, added ones included.
pub const PEERS_MAX: usize = 1024;

impl Transport {
    /// Validates `config`, binds its listen address, and starts dialing the
    /// peers with higher ids. Must run inside a glommio executor.
    pub fn start(config: PeerConfig) -> Result<(Transport, Inbox), TransportError> {
        config.validate()?;
        // Exclusive: two processes on one peer port would split its peers.
        let listener = crate::listen::bind(config.listen, Sharing::Alone, config.bind_busy_wait)
            .map(Listener::new)
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let (tx, rx) = local_channel::new_bounded(config.inbox_batches_max);
        let shared = Rc::new(Shared {
            peers: RefCell::new(peers(&config)),
            config,
            inbox: tx,
            counters: CounterCells::default(),
            closed: Cell::new(false),
            shutdown: Notify::default(),
            handshakes: Cell::new(0),
            refusal_log: OncePerSecond::default(),
        });
        let mut tasks = vec![spawn_local(accept_loop(shared.clone(), listener))];
        let me = shared.config.node_id;
        let higher: Vec<NodeId> = shared
            .peers
            .borrow()
            .range(NodeId(me.0.saturating_add(1))..)
            .map(|(id, _)| *id)
            .collect();
        for id in higher {
            tasks.push(spawn_local(dial_loop(shared.clone(), id)));
        }
        info!(node = %me, core = shared.config.core, %local_addr, "transport started");
        let inbox = Inbox {
            rx,
            current: Vec::new().into_iter(),
        };
        Ok((
            Transport {
                shared,
                local_addr,
                tasks: RefCell::new(tasks),
            },
            inbox,
        ))
    }

    /// The bound listen address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes `id` at `addr` a peer from now on (a member added to the
    /// cluster while it runs): its connections are accepted, frames to it
    /// are queued, and it is dialed if its id is higher. A peer known
    /// already keeps its address and connection. Returns whether it is new.
    pub fn add_peer(&self, id: NodeId, addr: PeerAddr) -> Result<bool, AddPeerError> {
        let me = self.shared.config.node_id;
        if id == me {
            return Err(AddPeerError::Myself(id));
        }
        let mut peers = self.shared.peers.borrow_mut();
        if peers.contains_key(&id) {
            return Ok(false);
        }
        if peers.len() >= PEERS_MAX {
            return Err(AddPeerError::TooMany(peers.len()));
        }
        peers.insert(id, Rc::new(new_peer(&self.shared.config, id, addr)));
        drop(peers);
        info!(node = %me, peer = %id, "peer added");
        if id > me && !self.shared.closed.get() {
            let dialer = spawn_local(dial_loop(self.shared.clone(), id));
            self.tasks.borrow_mut().push(dialer);
        }
        Ok(true)
    }

    /// Queues one frame for `to` without waiting. `QueueFull` means slow
    /// down: nothing was queued. The body is copied into the queue; large
    /// bodies go cheaper through [`Transport::send_bytes`].
    pub fn send(&self, to: NodeId, kind: u16, body: &[u8]) -> Result<(), SendError> {
        self.push(to, kind, Body::Slice(body))
    }

    /// Queues one frame for `to`, waiting for room.
    pub async fn send_wait(&self, to: NodeId, kind: u16, body: &[u8]) -> Result<(), SendError> {
        self.queue(to, kind)?
            .queue
            .push_wait(kind, Body::Slice(body))
            .await
    }

    /// Like [`Transport::send`], but a body of 4 KiB or more is not copied:
    /// the queue keeps a reference and the socket write sends it from the
    /// caller's buffer (which stays alive until written). It counts against
    /// the queue bound like a copied one. On an error the body is dropped;
    /// clone it first (a reference count) to try again.
    pub fn send_bytes(&self, to: NodeId, kind: u16, body: Bytes) -> Result<(), SendError> {
        self.push(to, kind, Body::Bytes(&body))
    }

    /// Like [`Transport::send_wait`], without copying a large body (see
    /// [`Transport::send_bytes`]).
    pub async fn send_bytes_wait(
        &self,
        to: NodeId,
        kind: u16,
        body: Bytes,
    ) -> Result<(), SendError> {
        self.queue(to, kind)?
            .queue
            .push_wait(kind, Body::Bytes(&body))
            .await
    }

    /// Bytes queued for `to` (pending plus being written); `None` for an
    /// unknown peer.
    pub fn queued_bytes(&self, to: NodeId) -> Option<usize> {
        self.shared.peer(to).map(|p| p.queue.queued_bytes())
    }

    /// Whether an authenticated connection to `to` is up now.
    pub fn is_connected(&self, to: NodeId) -> bool {
        self.shared
            .peer(to)
            .is_some_and(|p| p.generation.get() % 2 == 1)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let c = &self.shared.counters;
        Counters {
            handshakes_ok: c.handshakes_ok.get(),
            refused: std::array::from_fn(|i| c.refused[i].get()),
            bad_frame_closes: c.bad_frame_closes.get(),
            frames_sent: c.frames_sent.get(),
            bytes_sent: c.bytes_sent.get(),
            frames_received: c.frames_received.get(),
            frames_dropped: c.frames_dropped.get(),
            queue_full: c.queue_full.get(),
        }
    }

    /// Stops listening and dialing, closes every connection, and waits for
    /// the listener and dialers to be gone (so the port can be bound again).
    pub async fn shutdown(mut self) {
        self.shared.closed.set(true);
        self.shared.shutdown.notify();
        for task in std::mem::take(self.tasks.get_mut()) {
            task.cancel().await;
        }
    }

    fn push(&self, to: NodeId, kind: u16, body: Body<'_>) -> Result<(), SendError> {
        let peer = self.queue(to, kind)?;
        let result = peer.queue.push(kind, body);
        if matches!(result, Err(SendError::QueueFull { .. })) {
            bump(&self.shared.counters.queue_full, 1);
        }
        result
    }

    fn queue(&self, to: NodeId, kind: u16) -> Result<Rc<Peer>, SendError> {
        if kind >= KIND_RESERVED_MIN {
            return Err(SendError::ReservedKind(kind));
        }
        if self.shared.closed.get() {
            return Err(SendError::Closed);
        }
        self.shared.peer(to).ok_or(SendError::UnknownPeer(to))
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shared.closed.set(true);
        self.shared.shutdown.notify();
    }
}

fn peers(config: &PeerConfig) -> BTreeMap<NodeId, Rc<Peer>> {
    config
        .remote_peers()
        .into_iter()
        .map(|(id, addr)| (id, Rc::new(new_peer(config, id, addr))))
        .collect()
}

fn new_peer(config: &PeerConfig, id: NodeId, addr: PeerAddr) -> Peer {
    Peer {
        addr,
        queue: SendQueue::new(id, config.peer_queue_bytes_max, config.frame_body_bytes_max),
        generation: Cell::new(0),
        replaced: Notify::default(),
    }
}

impl Shared {
    fn peer(&self, id: NodeId) -> Option<Rc<Peer>> {
        self.peers.borrow().get(&id).cloned()
    }
}

/// Completes when the transport shuts down.
async fn shut_down(shared: &Shared) {
    loop {
        let epoch = shared.shutdown.epoch();
        if shared.closed.get() {
            return;
        }
        shared.shutdown.changed_since(epoch).await;
    }
}

async fn accept_loop(shared: Rc<Shared>, listener: Listener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shut_down(&shared).await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let limit = HANDSHAKES_PER_PEER_MAX * shared.peers.borrow().len().max(1);
                if shared.handshakes.get() >= limit {
                    let remote = stream.peer_addr().ok().map(|a| a.to_string());
                    drop(stream);
                    let detail = format!("{limit} handshakes in progress already");
                    refuse(&shared, remote, None, RefuseReason::Busy, &detail);
                    continue;
                }
                shared.handshakes.set(shared.handshakes.get() + 1);
                spawn_local(accept_one(shared.clone(), stream)).detach();
            }
            Some(Err(e)) => {
                // Out of file descriptors and the like: pause rather than spin.
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn accept_one(shared: Rc<Shared>, mut stream: TcpStream) {
    let remote = stream.peer_addr().ok().map(|a| a.to_string());
    let _ = stream.set_nodelay(true);
    let mut reader = FrameReader::new(HANDSHAKE_BODY_BYTES_MAX);
    let timeout = shared.config.handshake_timeout;
    let is_peer = |id| shared.peers.borrow().contains_key(&id);
    let handshake = accept_handshake(&shared.config, is_peer, &mut stream, &mut reader);
    let outcome = with_timeout(timeout, handshake).await;
    shared.handshakes.set(shared.handshakes.get() - 1);
    match outcome.unwrap_or(Err((RefuseReason::Timeout, "handshake timed out".into()))) {
        Ok((peer, keys)) => {
            reader.set_body_bytes_max(shared.config.frame_body_bytes_max);
            run_exclusive(&shared, peer, stream, reader, keys).await;
        }
        Err((reason, detail)) => refuse(&shared, remote, None, reason, &detail),
    }
}

/// `remote`: the address a connection came from, or the peer's address as
/// configured for a dial.
fn refuse(
    shared: &Shared,
    remote: Option<String>,
    peer: Option<NodeId>,
    reason: RefuseReason,
    detail: &str,
) {
    bump(&shared.counters.refused[reason.index()], 1);
    // Counted always, logged a line a second at most: strangers knocking
    // must not fill the log.
    if shared.refusal_log.due() {
        let refused: u64 = shared.counters.refused.iter().map(Cell::get).sum();
        let remote = remote.as_deref().unwrap_or("unknown");
        warn!(remote, ?peer, %reason, detail, refused_so_far = refused, "handshake refused");
    }
}

/// Connect, handshake, run; on any failure wait with exponential backoff
/// and jitter, forever (until the transport stops).
async fn dial_loop(shared: Rc<Shared>, peer: NodeId) {
    let (min, max) = (shared.config.backoff_min, shared.config.backoff_max);
    let mut backoff = min;
    while !shared.closed.get() {
        match dial_once(&shared, peer).await {
            Ok((stream, reader, keys)) => {
                backoff = min;
                run_exclusive(&shared, peer, stream, reader, keys).await;
            }
            Err((reason, detail)) => {
                let remote = shared.peer(peer).map(|p| p.addr.to_string());
                refuse(&shared, remote, Some(peer), reason, &detail);
            }
        }
        glommio::timer::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(max);
    }
}

/// Uniform in [d/2, d]: peers that failed together do not retry together.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

async fn dial_once(
    shared: &Shared,
    peer: NodeId,
) -> Result<(TcpStream, FrameReader, FrameKeys), Refusal> {
    let Some(known) = shared.peer(peer) else {
        return Err((RefuseReason::UnknownNode, format!("{peer} is no peer")));
    };
    let configured = &known.addr;
    let addr = resolve(configured)
        .await
        .map_err(|e| (RefuseReason::Io, format!("resolve {configured}: {e}")))?;
    let mut stream = stream::connect(addr, shared.config.connect_timeout)
        .await
        .map_err(|e| (RefuseReason::Io, format!("connect {addr}: {e}")))?;
    let mut reader = FrameReader::new(HANDSHAKE_BODY_BYTES_MAX);
    let timeout = shared.config.handshake_timeout;
    let keys = with_timeout(
        timeout,
        dial_handshake(&shared.config, peer, &mut stream, &mut reader),
    )
    .await
    .unwrap_or(Err((RefuseReason::Timeout, "handshake timed out".into())))?;
    reader.set_body_bytes_max(shared.config.frame_body_bytes_max);
    Ok((stream, reader, keys))
}

/// The address to dial for `addr` now. A name is looked up on a thread of
/// its own: the resolver blocks (for seconds when DNS is slow), and this
/// executor runs the groups. A lookup abandoned by a transport shutting
/// down ends by itself.
async fn resolve(addr: &PeerAddr) -> std::io::Result<SocketAddr> {
    if let Some(ip) = addr.ip_addr() {
        return Ok(ip);
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    let name = addr.clone();
    std::thread::Builder::new()
        .name("synod-resolve".into())
        .spawn(move || {
            let _ = tx.send(name.resolve());
        })?;
    rx.await.unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "the lookup thread ended without an answer",
        ))
    })
}

/// Installs an authenticated connection as the peer's only one and runs it
/// until it fails, a newer one replaces it, or the transport stops.
async fn run_exclusive(
    shared: &Shared,
    peer: NodeId,
    stream: TcpStream,
    reader: FrameReader,
    keys: FrameKeys,
) {
    let Some(slot) = shared.peer(peer) else {
        return;
    };
    let slot = &*slot;
    bump(&shared.counters.handshakes_ok, 1);
    // Odd generations mean "connected"; installing bumps to the next odd one.
    let generation = (slot.generation.get() | 1) + 2;
    slot.generation.set(generation);
    slot.replaced.notify();
    info!(%peer, "peer connected");
    let replaced = async {
        loop {
            let epoch = slot.replaced.epoch();
            if slot.generation.get() != generation {
                return ConnError::Protocol("replaced by a newer connection".into());
            }
            slot.replaced.changed_since(epoch).await;
        }
    };
    let stopped = async {
        shut_down(shared).await;
        ConnError::Shutdown
    };
    let running = run_connection(shared, peer, slot, stream, reader, keys);
    let ending = futures_lite::future::or(running, futures_lite::future::or(replaced, stopped));
    let error = ending.await;
    end_connection(shared, peer, slot, generation, error);
}

fn end_connection(shared: &Shared, peer: NodeId, slot: &Peer, generation: u64, error: ConnError) {
    let lost = slot.queue.lost_inflight();
    bump(&shared.counters.frames_dropped, lost);
    if slot.generation.get() == generation {
        slot.generation.set(generation + 1);
    }
    if matches!(
        error,
        ConnError::Frame(_) | ConnError::ReservedKind(_) | ConnError::Unauthenticated(_)
    ) {
        bump(&shared.counters.bad_frame_closes, 1);
    }
    warn!(%peer, reason = %error, lost_frames = lost, "peer connection closed");
}

async fn run_connection(
    shared: &Shared,
    peer: NodeId,
    slot: &Peer,
    stream: TcpStream,
    reader: FrameReader,
    keys: FrameKeys,
) -> ConnError {
    let socket = SocketFd::of(&stream);
    let (mut r, mut w) = futures_lite::io::split(stream);
    let counters = &shared.counters;
    // A writer's batch is at most its queue's bound plus one frame.
    let batch_bytes_max =
        shared.config.peer_queue_bytes_max + shared.config.frame_body_bytes_max as usize;
    let encrypt = shared.config.encrypt;
    let opener = Opener::new(&keys.receive, encrypt, batch_bytes_max);
    let reading = read_loop(shared, peer, &mut r, reader, opener);
    let mut sealer = Sealer::new(&keys.send, encrypt);
    let seal = |batch: &mut Batch| sealer.seal(batch);
    let writing = write_loop(&mut w, socket, &slot.queue, seal, |frames, bytes| {
        bump(&counters.frames_sent, frames);
        bump(&counters.bytes_sent, bytes as u64);
    });
    futures_lite::future::or(reading, writing).await
}

async fn read_loop(
    shared: &Shared,
    peer: NodeId,
    r: &mut ReadHalf<TcpStream>,
    mut reader: FrameReader,
    mut opener: Opener,
) -> ConnError {
    loop {
        let mut frames = Vec::new();
        let read = read_some(r, &mut reader, &mut frames).await;
        let mut messages = Vec::new();
        let mut failed = None;
        for frame in frames {
            let opened = match frame.kind {
                KIND_BATCH_MAC => opener.open(frame.seq, &frame.body).map(|frames| {
                    messages.extend(frames.into_iter().map(|frame| Message {
                        from: peer,
                        kind: frame.kind,
                        seq: frame.seq,
                        body: frame.body,
                    }))
                }),
                kind if kind >= KIND_RESERVED_MIN => Err(ConnError::ReservedKind(kind)),
                _ => opener.hold(frame),
            };
            if let Err(error) = opened {
                failed = Some(error);
                break;
            }
        }
        // Frames a verified MAC covered, before a bad one, are good:
        // deliver them, then close.
        if !messages.is_empty() {
            bump(&shared.counters.frames_received, messages.len() as u64);
            if shared.inbox.send(messages).await.is_err() {
                return ConnError::Shutdown;
            }
            // Let the consumer take the batch before the next read: otherwise
            // a busy socket fills the whole inbox first, and the bodies of
            // that many large frames are out of the reader's buffer pool at once.
            futures_lite::future::yield_now().await;
        }
        if let Some(error) = failed {
            return error;
        }
        if let Err(e) = read {
            debug!(%peer, error = %e, "read ended");
            return e;
        }
    }
}
