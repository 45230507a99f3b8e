//! The client port's server side: accepts client connections, yields their
//! requests, and carries each reply back on its connection, with bounds on
//! connections, idle time, requests and reply memory.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::ReadHalf;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::{spawn_local, Task};
use tracing::{debug, warn};

use crate::client_auth::{verify_client_proof, KIND_CLIENT_CHALLENGE, KIND_CLIENT_PROOF};
use crate::config::Secret;
use crate::config::{validate_frame_limits, ConfigError};
use crate::handshake::{MAC_BYTES, NONCE_BYTES};
use crate::listen::{Listener, Sharing};
use crate::log_limit::OncePerSecond;
use crate::notify::Notify;
use crate::queue::{Body, SendError, SendQueue};
use crate::reader::FrameReader;
use crate::reply_budget::ReplyBudget;
use crate::stream::{read_one, read_some, with_timeout, write_loop, ConnError, SocketFd};
use crate::transport::TransportError;
use crate::{NodeId, KIND_REDIRECT, KIND_REPLY_REFUSED, KIND_RESERVED_MIN};
use synod_wal::frame::frame_bytes;

/// Limits of the client port.
#[derive(Clone, Debug)]
pub struct ClientListenerConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Largest request or reply body.
    pub frame_body_bytes_max: u32,
    /// Reply bytes queued per client connection; a reply beyond waits for
    /// room (the client reads), and the connection's requests are not read
    /// meanwhile.
    pub reply_queue_bytes_max: usize,
    /// Reply bytes in memory (queued or waiting) on this port at once,
    /// across its connections: past it, no connection's requests are read
    /// until replies drain.
    pub reply_budget_bytes: usize,
    /// Requests of one connection handed out and not yet answered, at
    /// most: past it, that connection's requests are not read.
    pub requests_per_connection_max: usize,
    /// Requests buffered for `next` before connections stop being read.
    pub requests_max: usize,
    /// How long the port, still in use, is waited for (see
    /// [`crate::BIND_BUSY_WAIT`]).
    pub bind_busy_wait: Duration,
    /// Client connections open at once, at most; one more is closed as soon
    /// as it is accepted (its client sees the connection close), counted
    /// and logged.
    pub connections_max: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// If set, clients must prove they know this secret before their
    /// first request (`client_auth.rs`); else the port is open.
    pub secret: Option<Secret>,
    /// A connection whose queued replies have not reached its socket for
    /// this long (its client does not read) is closed: their memory goes
    /// back to the port's budget, so a few such clients cannot stall the
    /// others for longer.
    pub reply_stall_timeout: Duration,
}

impl ClientListenerConfig {
    /// Defaults: 1 MiB frames, 4 MiB of replies per connection and 64 MiB
    /// per port, 1024 requests buffered and 64 unanswered per connection,
    /// 1024 connections, closed after 5 minutes of silence.
    pub fn new(listen: SocketAddr) -> ClientListenerConfig {
        ClientListenerConfig {
            listen,
            frame_body_bytes_max: 1 << 20,
            reply_queue_bytes_max: 4 << 20,
            reply_budget_bytes: 64 << 20,
            requests_per_connection_max: 64,
            requests_max: 1024,
            bind_busy_wait: crate::listen::BIND_BUSY_WAIT,
            connections_max: 1024,
            idle_timeout: Duration::from_secs(300),
            reply_stall_timeout: Duration::from_secs(10),
            secret: None,
        }
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_frame_limits(self.frame_body_bytes_max, self.reply_queue_bytes_max)?;
        if self.requests_max == 0 {
            return Err(ConfigError::Invalid {
                field: "requests_max",
                reason: "must be at least 1".into(),
            });
        }
        if self.reply_budget_bytes < self.reply_queue_bytes_max {
            return Err(ConfigError::Invalid {
                field: "reply_budget_bytes",
                reason: "below one connection's reply queue".into(),
            });
        }
        if self.requests_per_connection_max == 0 {
            return Err(ConfigError::Invalid {
                field: "requests_per_connection_max",
                reason: "must be at least 1".into(),
            });
        }
        if self.connections_max == 0 {
            return Err(ConfigError::Invalid {
                field: "connections_max",
                reason: "must be at least 1".into(),
            });
        }
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.bytes().len() < Secret::BYTES_MIN)
        {
            return Err(ConfigError::Invalid {
                field: "secret",
                reason: format!("shorter than {} bytes", Secret::BYTES_MIN),
            });
        }
        if self.reply_stall_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: "reply_stall_timeout",
                reason: "must be positive".into(),
            });
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: "idle_timeout",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}

/// Encodes a redirect body: node id, then the node's client address.
pub fn encode_redirect(node: NodeId, addr: SocketAddr) -> Vec<u8> {
    let mut body = node.0.to_le_bytes().to_vec();
    body.extend_from_slice(addr.to_string().as_bytes());
    body
}

/// Decodes a redirect body; `None` if malformed.
pub fn decode_redirect(body: &[u8]) -> Option<(NodeId, SocketAddr)> {
    let (id, addr) = body.split_at_checked(8)?;
    let id = u64::from_le_bytes(id.try_into().ok()?);
    let addr = std::str::from_utf8(addr).ok()?.parse().ok()?;
    Some((NodeId(id), addr))
}

struct ClientConn {
    peer_addr: Option<SocketAddr>,
    queue: SendQueue,
    /// The port's reply memory, shared by its connections.
    budget: Rc<ReplyBudget>,
    /// Requests handed out and not yet dropped (answered or not).
    outstanding: Cell<usize>,
    /// Moves when a request is dropped.
    answered: Notify,
    /// The connection is gone: replies to it are dropped.
    closed: Cell<bool>,
    /// How long queued replies may go without reaching the socket before
    /// the connection is closed.
    stall_timeout: Duration,
}

impl ClientConn {
    /// Waits until everything queued has been written to the socket.
    async fn drained(&self) {
        loop {
            let epoch = self.queue.space.epoch();
            if self.queue.queued_bytes() == 0 {
                return;
            }
            self.queue.space.changed_since(epoch).await;
        }
    }

    /// Waits until fewer than `max` of this connection's requests are
    /// unanswered.
    async fn unanswered_below(&self, max: usize) {
        loop {
            let epoch = self.answered.epoch();
            if self.outstanding.get() < max {
                return;
            }
            self.answered.changed_since(epoch).await;
        }
    }

    /// Waits until `frame` fits the queue, counting it against the budget
    /// meanwhile; fails only if the connection closes.
    async fn push_when_room(&self, kind: u16, seq: u64, body: &[u8]) -> Result<(), SendError> {
        let bytes = frame_bytes(body.len());
        self.budget.take(bytes);
        loop {
            if self.closed.get() {
                self.budget.give_back(bytes);
                return Err(SendError::Closed);
            }
            let epoch = self.queue.space.epoch();
            match self.queue.push_with_seq(kind, seq, Body::Slice(body)) {
                // Woken by the writer, or by the close (a stalled
                // connection is closed by `serve_connection`).
                Err(SendError::QueueFull { .. }) => self.queue.space.changed_since(epoch).await,
                Err(other) => {
                    self.budget.give_back(bytes);
                    return Err(other);
                }
                Ok(()) => return Ok(()),
            }
        }
    }
}

/// Where replies to one client connection go. Cheap to clone; outlives the
/// request so the runtime can answer after consensus.
#[derive(Clone)]
pub struct Replier {
    conn: Rc<ClientConn>,
}

impl Replier {
    /// Queues a reply to request `request_id`, waiting for room while the
    /// client's queue is full (a client that does not read its replies is
    /// not read from either, so the wait is bounded by what it sent).
    /// A reply larger than a frame is replaced by a refusal the client
    /// sees ([`KIND_REPLY_REFUSED`]): no reply is dropped unannounced.
    /// Fails if the kind is reserved or the connection has closed.
    pub async fn reply(&self, request_id: u64, kind: u16, body: &[u8]) -> Result<(), SendError> {
        if kind >= KIND_RESERVED_MIN {
            return Err(SendError::ReservedKind(kind));
        }
        match self.conn.push_when_room(kind, request_id, body).await {
            Err(SendError::TooLarge {
                body_bytes,
                limit_bytes,
            }) => {
                let refusal = format!(
                    "the reply of {body_bytes} bytes is larger than a frame ({limit_bytes} bytes)"
                );
                let refused =
                    self.conn
                        .push_when_room(KIND_REPLY_REFUSED, request_id, refusal.as_bytes());
                refused.await
            }
            other => other,
        }
    }

    /// Tells the client to send request `request_id` to `node` at `addr`.
    pub async fn redirect(
        &self,
        request_id: u64,
        node: NodeId,
        addr: SocketAddr,
    ) -> Result<(), SendError> {
        let body = encode_redirect(node, addr);
        self.conn
            .push_when_room(KIND_REDIRECT, request_id, &body)
            .await
    }

    /// The client's address, if the socket knew it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.peer_addr
    }
}

/// One request from a client.
pub struct ClientRequest {
    /// The request's kind.
    pub kind: u16,
    /// The client's id for it (the frame's `seq`); echo it in the reply.
    pub request_id: u64,
    /// The body, opaque here.
    pub body: Bytes,
    /// Where the reply goes.
    pub replier: Replier,
    /// Counts the request as unanswered until it is dropped.
    _outstanding: Outstanding,
}

impl ClientRequest {
    /// Replies to this request (see [`Replier::reply`]).
    pub async fn reply(&self, kind: u16, body: &[u8]) -> Result<(), SendError> {
        self.replier.reply(self.request_id, kind, body).await
    }

    /// Redirects this request to another node.
    pub async fn redirect(&self, node: NodeId, addr: SocketAddr) -> Result<(), SendError> {
        self.replier.redirect(self.request_id, node, addr).await
    }
}

/// One request of a connection handed out: counted until dropped, so a
/// connection's unanswered requests are bounded.
struct Outstanding(Rc<ClientConn>);

impl Outstanding {
    fn new(conn: &Rc<ClientConn>) -> Outstanding {
        conn.outstanding.set(conn.outstanding.get() + 1);
        Outstanding(conn.clone())
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.set(self.0.outstanding.get() - 1);
        self.0.answered.notify();
    }
}

struct ListenerShared {
    config: ClientListenerConfig,
    requests: LocalSender<ClientRequest>,
    closed: Cell<bool>,
    shutdown: Notify,
    bad_frame_closes: Cell<u64>,
    /// Client connections open, and a signal each time one closes.
    connections: Cell<usize>,
    connection_closed: Notify,
    /// Connections closed at accept because `connections_max` were open.
    refused_connections: Cell<u64>,
    /// Refusals are logged a line a second at most.
    refusal_log: OncePerSecond,
    /// Reply memory of this port's connections.
    budget: Rc<ReplyBudget>,
    /// Connections closed because their first frame was no valid proof.
    unauthenticated: Cell<u64>,
}

/// Accepts client connections and yields their requests.
pub struct ClientListener {
    shared: Rc<ListenerShared>,
    requests: LocalReceiver<ClientRequest>,
    local_addr: SocketAddr,
    task: Option<Task<()>>,
}

impl ClientListener {
    /// Validates the config and binds, with `SO_REUSEPORT` so that every
    /// core can bind the same port. Must run inside a glommio executor.
    pub fn bind(config: ClientListenerConfig) -> Result<ClientListener, TransportError> {
        config.validate()?;
        let bind_error = |source: std::io::Error| TransportError::Bind {
            addr: config.listen,
            source,
        };
        let listener =
            crate::listen::bind(config.listen, Sharing::AcrossCores, config.bind_busy_wait)
                .map(Listener::new)
                .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let (tx, rx) = local_channel::new_bounded(config.requests_max);
        let budget = Rc::new(ReplyBudget::new(config.reply_budget_bytes));
        let shared = Rc::new(ListenerShared {
            config,
            requests: tx,
            closed: Cell::new(false),
            shutdown: Notify::default(),
            bad_frame_closes: Cell::new(0),
            connections: Cell::new(0),
            connection_closed: Notify::default(),
            refused_connections: Cell::new(0),
            refusal_log: OncePerSecond::default(),
            budget,
            unauthenticated: Cell::new(0),
        });
        let task = spawn_local(client_accept_loop(shared.clone(), listener));
        Ok(ClientListener {
            shared,
            requests: rx,
            local_addr,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next request from any client.
    pub async fn next(&self) -> Option<ClientRequest> {
        self.requests.recv().await
    }

    /// Client connections closed because of bytes that are not frames.
    pub fn bad_frame_closes(&self) -> u64 {
        self.shared.bad_frame_closes.get()
    }

    /// Reply bytes in memory now (queued or waiting for room), across
    /// this port's connections.
    pub fn reply_bytes(&self) -> usize {
        self.shared.budget.used()
    }

    /// Client connections closed because they did not prove they know
    /// the client secret.
    pub fn unauthenticated_closes(&self) -> u64 {
        self.shared.unauthenticated.get()
    }

    /// Client connections closed at accept: `connections_max` were open.
    pub fn refused_connections(&self) -> u64 {
        self.shared.refused_connections.get()
    }

    /// Stops accepting, closes every client connection, waits for the
    /// listener to be gone.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            task.cancel().await;
        }
        // Every connection has seen the stop and closed its socket: an
        // executor that exits next would never run them again.
        loop {
            let epoch = self.shared.connection_closed.epoch();
            if self.shared.connections.get() == 0 {
                return;
            }
            self.shared.connection_closed.changed_since(epoch).await;
        }
    }

    fn stop(&self) {
        self.shared.closed.set(true);
        self.shared.shutdown.notify();
    }
}

impl Drop for ClientListener {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn listener_closed(shared: &ListenerShared) {
    loop {
        let epoch = shared.shutdown.epoch();
        if shared.closed.get() {
            return;
        }
        shared.shutdown.changed_since(epoch).await;
    }
}

async fn client_accept_loop(shared: Rc<ListenerShared>, listener: Listener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            listener_closed(&shared).await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) if shared.connections.get() >= shared.config.connections_max => {
                refuse_connection(&shared, stream);
            }
            Some(Ok(stream)) => {
                spawn_local(serve_client(shared.clone(), stream)).detach();
            }
            Some(Err(e)) => {
                warn!(error = %e, "client accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Closes a connection beyond the bound at once: it costs no reader, no
/// queue and no task.
fn refuse_connection(shared: &ListenerShared, stream: TcpStream) {
    let refused = shared.refused_connections.get() + 1;
    shared.refused_connections.set(refused);
    if shared.refusal_log.due() {
        warn!(
            client = ?stream.peer_addr().ok(),
            open = shared.connections.get(),
            refused_so_far = refused,
            "client connection refused: too many open"
        );
    }
    drop(stream);
}

async fn serve_client(shared: Rc<ListenerShared>, stream: TcpStream) {
    shared.connections.set(shared.connections.get() + 1);
    serve_connection(&shared, stream).await;
    shared.connections.set(shared.connections.get() - 1);
    shared.connection_closed.notify();
}

async fn serve_connection(shared: &Rc<ListenerShared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr().ok();
    let config = &shared.config;
    let conn = Rc::new(ClientConn {
        peer_addr,
        queue: SendQueue::new(
            NodeId(0),
            config.reply_queue_bytes_max,
            config.frame_body_bytes_max,
        ),
        budget: shared.budget.clone(),
        outstanding: Cell::new(0),
        answered: Notify::default(),
        closed: Cell::new(false),
        stall_timeout: config.reply_stall_timeout,
    });
    let socket = SocketFd::of(&stream);
    let (mut r, mut w) = futures_lite::io::split(stream);
    let reading = client_read_loop(shared, &conn, &mut r);
    let budget = &shared.budget;
    let written = |_frames, bytes| budget.give_back(bytes);
    let writing = write_loop(&mut w, socket, &conn.queue, |_| {}, written);
    let stopped = async {
        listener_closed(shared).await;
        ConnError::Shutdown
    };
    // Replies queued that have not moved for the stall timeout: the client
    // does not read. Closing gives their memory back to the budget.
    let stalled = async {
        let every = (conn.stall_timeout / 4).max(Duration::from_millis(10));
        loop {
            glommio::timer::sleep(every).await;
            let stuck = conn.queue.stuck_for();
            if stuck >= conn.stall_timeout {
                return ConnError::Protocol(format!(
                    "replies went {stuck:?} without reaching a client that does not read"
                ));
            }
        }
    };
    let ended = futures_lite::future::or(writing, futures_lite::future::or(stopped, stalled));
    let error = futures_lite::future::or(reading, ended).await;
    // Replies still queued or on their way will never be written: their
    // memory goes back, and replies made from now on are dropped.
    conn.closed.set(true);
    shared.budget.give_back(conn.queue.queued_bytes());
    conn.queue.space.notify();
    if matches!(error, ConnError::Frame(_) | ConnError::ReservedKind(_)) {
        shared
            .bad_frame_closes
            .set(shared.bad_frame_closes.get() + 1);
        warn!(client = ?peer_addr, reason = %error, "client connection closed");
    } else {
        debug!(client = ?peer_addr, reason = %error, "client connection closed");
    }
}

async fn client_read_loop(
    shared: &ListenerShared,
    conn: &Rc<ClientConn>,
    r: &mut ReadHalf<TcpStream>,
) -> ConnError {
    let idle = shared.config.idle_timeout;
    let mut reader = FrameReader::new(shared.config.frame_body_bytes_max);
    if let Some(secret) = &shared.config.secret {
        if let Err(refused) = authenticate(shared, conn, r, &mut reader, secret).await {
            return refused;
        }
    }
    loop {
        let mut frames = Vec::new();
        // Frames that came behind the proof are buffered already.
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return ConnError::Frame(e),
            }
        }
        let read = match frames.is_empty() {
            true => match with_timeout(idle, read_some(r, &mut reader, &mut frames)).await {
                Some(read) => read,
                None => return ConnError::Protocol(format!("idle for {idle:?}")),
            },
            false => Ok(()),
        };
        for frame in frames {
            if frame.kind >= KIND_RESERVED_MIN {
                return ConnError::ReservedKind(frame.kind);
            }
            // Backpressure: neither this connection's unanswered requests
            // nor the port's reply memory grow while the client sends
            // more; its socket is not read meanwhile (one read's frames,
            // a chunk at most, wait here).
            conn.unanswered_below(shared.config.requests_per_connection_max)
                .await;
            shared.budget.below().await;
            let request = ClientRequest {
                kind: frame.kind,
                request_id: frame.seq,
                body: frame.body,
                replier: Replier { conn: conn.clone() },
                _outstanding: Outstanding::new(conn),
            };
            if shared.requests.send(request).await.is_err() {
                return ConnError::Shutdown;
            }
        }
        if let Err(e) = read {
            return e;
        }
    }
}

/// Sends the challenge and reads the proof: one small frame, read alone
/// (what came behind it stays in `reader` for the requests).
async fn authenticate(
    shared: &ListenerShared,
    conn: &ClientConn,
    r: &mut ReadHalf<TcpStream>,
    reader: &mut FrameReader,
    secret: &Secret,
) -> Result<(), ConnError> {
    let nonce = challenge_client(conn);
    // The challenge goes out before anything is read, so that a client
    // without the secret learns why it is refused before the close.
    if with_timeout(AUTH_TIMEOUT, conn.drained()).await.is_none() {
        return Err(ConnError::Protocol(
            "the challenge could not be sent".into(),
        ));
    }
    // Until the client has proved it knows the secret, its frames are small.
    reader.set_body_bytes_max(MAC_BYTES as u32);
    let proof = match with_timeout(AUTH_TIMEOUT, read_one(r, reader)).await {
        Some(Ok(proof)) => proof,
        Some(Err(ConnError::Frame(_))) => return Err(refuse_unauthenticated(shared, conn)),
        Some(Err(e)) => return Err(e),
        None => {
            return Err(ConnError::Protocol(format!(
                "no proof within {AUTH_TIMEOUT:?}"
            )))
        }
    };
    if proof.kind != KIND_CLIENT_PROOF || !verify_client_proof(secret, &nonce, &proof.body) {
        return Err(refuse_unauthenticated(shared, conn));
    }
    reader.set_body_bytes_max(shared.config.frame_body_bytes_max);
    Ok(())
}

/// How long a client has to prove it knows the secret.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Queues the node's challenge on a new connection; its nonce.
fn challenge_client(conn: &ClientConn) -> [u8; NONCE_BYTES] {
    let nonce = crate::handshake::nonce();
    // Counted like any reply: its bytes are given back once written.
    conn.budget.take(frame_bytes(nonce.len()));
    // The queue is empty and holds at least one largest frame: this fits.
    let _ = conn
        .queue
        .push_with_seq(KIND_CLIENT_CHALLENGE, 0, Body::Slice(&nonce));
    nonce
}

/// Closes a connection whose first frame was no valid proof, counted and
/// logged a line a second at most.
fn refuse_unauthenticated(shared: &ListenerShared, conn: &ClientConn) -> ConnError {
    let refused = shared.unauthenticated.get() + 1;
    shared.unauthenticated.set(refused);
    if shared.refusal_log.due() {
        warn!(client = ?conn.peer_addr, refused_so_far = refused, "client connection closed: no valid proof of the client secret");
    }
    ConnError::Protocol("the client did not prove it knows the client secret".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_body_round_trips_and_garbage_is_refused() {
        let addr: SocketAddr = "127.0.0.1:8002".parse().unwrap();
        let body = encode_redirect(NodeId(2), addr);
        assert_eq!(decode_redirect(&body), Some((NodeId(2), addr)));
        assert_eq!(decode_redirect(&body[..5]), None);
        assert_eq!(decode_redirect(&[0; 12]), None);
    }
}
