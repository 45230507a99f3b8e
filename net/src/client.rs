//! The client port: the same frames, a request id in `seq`, replies matched
//! by that id, and a reserved redirect kind.
//!
//! No handshake here: client authentication, sessions and retries belong
//! to the client protocol of the runtime. What this layer guarantees is
//! framing, bounds, and that a bad client only loses its own connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::ReadHalf;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::{spawn_local, Task};
use tracing::{debug, warn};

use crate::config::{validate_frame_limits, ConfigError};
use crate::listen::{Listener, Sharing};
use crate::log_limit::OncePerSecond;
use crate::notify::Notify;
use crate::queue::{Body, SendError, SendQueue};
use crate::reader::{Frame, FrameReader};
use crate::stream::{self, read_some, with_timeout, write_loop, ConnError, SocketFd};
use crate::transport::TransportError;
use crate::{NodeId, KIND_REDIRECT, KIND_RESERVED_MIN};

/// Limits of the client port.
#[derive(Clone, Debug)]
pub struct ClientListenerConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Largest request or reply body.
    pub frame_body_bytes_max: u32,
    /// Reply bytes queued per client connection before `reply` refuses.
    pub reply_queue_bytes_max: usize,
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
}

impl ClientListenerConfig {
    /// Defaults: 1 MiB frames, 4 MiB of replies per connection, 1024
    /// requests, 1024 connections, closed after 5 minutes of silence.
    pub fn new(listen: SocketAddr) -> ClientListenerConfig {
        ClientListenerConfig {
            listen,
            frame_body_bytes_max: 1 << 20,
            reply_queue_bytes_max: 4 << 20,
            requests_max: 1024,
            bind_busy_wait: crate::listen::BIND_BUSY_WAIT,
            connections_max: 1024,
            idle_timeout: Duration::from_secs(300),
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
        if self.connections_max == 0 {
            return Err(ConfigError::Invalid {
                field: "connections_max",
                reason: "must be at least 1".into(),
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
}

/// Where replies to one client connection go. Cheap to clone; outlives the
/// request so the runtime can answer after consensus.
#[derive(Clone)]
pub struct Replier {
    conn: Rc<ClientConn>,
}

impl Replier {
    /// Queues a reply to request `request_id`. Fails if the client's reply
    /// queue is full (a client that does not read) or the kind is reserved.
    pub fn reply(&self, request_id: u64, kind: u16, body: &[u8]) -> Result<(), SendError> {
        if kind >= KIND_RESERVED_MIN {
            return Err(SendError::ReservedKind(kind));
        }
        self.conn
            .queue
            .push_with_seq(kind, request_id, Body::Slice(body))
    }

    /// Tells the client to send request `request_id` to `node` at `addr`.
    pub fn redirect(
        &self,
        request_id: u64,
        node: NodeId,
        addr: SocketAddr,
    ) -> Result<(), SendError> {
        let body = encode_redirect(node, addr);
        self.conn
            .queue
            .push_with_seq(KIND_REDIRECT, request_id, Body::Slice(&body))
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
}

impl ClientRequest {
    /// Replies to this request.
    pub fn reply(&self, kind: u16, body: &[u8]) -> Result<(), SendError> {
        self.replier.reply(self.request_id, kind, body)
    }

    /// Redirects this request to another node.
    pub fn redirect(&self, node: NodeId, addr: SocketAddr) -> Result<(), SendError> {
        self.replier.redirect(self.request_id, node, addr)
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
    });
    let socket = SocketFd::of(&stream);
    let (mut r, mut w) = futures_lite::io::split(stream);
    let reading = client_read_loop(shared, &conn, &mut r);
    let writing = write_loop(&mut w, socket, &conn.queue, |_| {}, |_, _| {});
    let stopped = async {
        listener_closed(shared).await;
        ConnError::Shutdown
    };
    let error = futures_lite::future::or(reading, futures_lite::future::or(writing, stopped)).await;
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
    let mut reader = FrameReader::new(shared.config.frame_body_bytes_max);
    let idle = shared.config.idle_timeout;
    loop {
        let mut frames = Vec::new();
        let Some(read) = with_timeout(idle, read_some(r, &mut reader, &mut frames)).await else {
            return ConnError::Protocol(format!("idle for {idle:?}"));
        };
        for frame in frames {
            if frame.kind >= KIND_RESERVED_MIN {
                return ConnError::ReservedKind(frame.kind);
            }
            let request = ClientRequest {
                kind: frame.kind,
                request_id: frame.seq,
                body: frame.body,
                replier: Replier { conn: conn.clone() },
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

/// What a client needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Client addresses of the nodes, tried in turn.
    pub addrs: Vec<SocketAddr>,
    /// Largest request or reply body.
    pub frame_body_bytes_max: u32,
    /// Request bytes queued before `request` waits.
    pub queue_bytes_max: usize,
    /// TCP connect limit per address.
    pub connect_timeout: Duration,
    /// Limit on one request, from queueing to reply.
    pub request_timeout: Duration,
    /// Redirects followed per request before giving up.
    pub redirects_max: u32,
}

impl ClientConfig {
    /// Defaults: 1 MiB frames, 4 MiB queued, 1 s connect, 5 s per request,
    /// 3 redirects.
    pub fn new(addrs: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            addrs,
            frame_body_bytes_max: 1 << 20,
            queue_bytes_max: 4 << 20,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            redirects_max: 3,
        }
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.addrs.is_empty() {
            return Err(ConfigError::Invalid {
                field: "addrs",
                reason: "no address".into(),
            });
        }
        validate_frame_limits(self.frame_body_bytes_max, self.queue_bytes_max)?;
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be above zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// A reply to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The reply's kind.
    pub kind: u16,
    /// The reply's body.
    pub body: Bytes,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The config does not validate.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// No address accepted a connection.
    #[error("could not connect to any of {0:?}")]
    Unreachable(Vec<SocketAddr>),
    /// The connection died with the request outstanding: it may or may not
    /// have been executed (the runtime's sessions make a retry safe).
    #[error("connection lost with the request outstanding")]
    ConnectionLost,
    /// No reply within `request_timeout`.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// More redirects than `redirects_max`.
    #[error("redirected more than {0} times")]
    TooManyRedirects(u32),
    /// A redirect whose body is not a node id and an address.
    #[error("malformed redirect")]
    BadRedirect,
    /// The request could not be queued.
    #[error("send: {0}")]
    Send(#[from] SendError),
}

struct Connection {
    addr: SocketAddr,
    queue: SendQueue,
    pending: RefCell<HashMap<u64, LocalSender<Reply>>>,
    dead: Cell<bool>,
    task: RefCell<Option<Task<()>>>,
}

/// A client of the cluster: one connection at a time, many requests in
/// flight on it, replies matched by request id, redirects followed.
/// Lives in one glommio executor.
pub struct Client {
    config: ClientConfig,
    conn: RefCell<Option<Rc<Connection>>>,
    /// Where the last redirect pointed; tried first.
    hinted: Cell<Option<SocketAddr>>,
    next_addr: Cell<usize>,
    next_id: Cell<u64>,
    connecting: Cell<bool>,
    connected: Notify,
}

impl Client {
    /// A client of `config.addrs`; connects on the first request.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        Ok(Client {
            config,
            conn: RefCell::new(None),
            hinted: Cell::new(None),
            next_addr: Cell::new(0),
            next_id: Cell::new(1),
            connecting: Cell::new(false),
            connected: Notify::default(),
        })
    }

    /// The address of the current connection, if any.
    pub fn connected_to(&self) -> Option<SocketAddr> {
        let conn = self.conn.borrow();
        conn.as_ref().filter(|c| !c.dead.get()).map(|c| c.addr)
    }

    /// Sends one request and waits for its reply, following redirects.
    pub async fn request(&self, kind: u16, body: &[u8]) -> Result<Reply, ClientError> {
        if kind >= KIND_RESERVED_MIN {
            return Err(SendError::ReservedKind(kind).into());
        }
        for _ in 0..=self.config.redirects_max {
            let conn = self.connection().await?;
            let reply = self.request_on(&conn, kind, body).await?;
            if reply.kind != KIND_REDIRECT {
                return Ok(reply);
            }
            let (node, addr) = decode_redirect(&reply.body).ok_or(ClientError::BadRedirect)?;
            debug!(%node, %addr, "redirected");
            self.hinted.set(Some(addr));
            if conn.addr != addr {
                close(&conn);
            }
        }
        Err(ClientError::TooManyRedirects(self.config.redirects_max))
    }

    async fn request_on(
        &self,
        conn: &Connection,
        kind: u16,
        body: &[u8],
    ) -> Result<Reply, ClientError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        conn.pending.borrow_mut().insert(id, tx);
        let timeout = self.config.request_timeout;
        let outcome = with_timeout(timeout, async {
            push_wait_with_seq(&conn.queue, kind, id, body).await?;
            rx.recv().await.ok_or(ClientError::ConnectionLost)
        })
        .await;
        conn.pending.borrow_mut().remove(&id);
        outcome.unwrap_or(Err(ClientError::Timeout(timeout)))
    }

    /// The live connection, or a new one (one connect at a time).
    async fn connection(&self) -> Result<Rc<Connection>, ClientError> {
        loop {
            if let Some(conn) = self.conn.borrow().as_ref().filter(|c| !c.dead.get()) {
                return Ok(conn.clone());
            }
            if !self.connecting.get() {
                break;
            }
            let epoch = self.connected.epoch();
            self.connected.changed_since(epoch).await;
        }
        self.connecting.set(true);
        let result = self.connect_any().await;
        self.connecting.set(false);
        self.connected.notify();
        let conn = result?;
        *self.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    async fn connect_any(&self) -> Result<Rc<Connection>, ClientError> {
        let addrs = &self.config.addrs;
        let start = self.next_addr.get();
        let rotated = (0..addrs.len()).map(|i| addrs[(start + i) % addrs.len()]);
        let candidates: Vec<SocketAddr> = self.hinted.take().into_iter().chain(rotated).collect();
        for addr in candidates {
            match stream::connect(addr, self.config.connect_timeout).await {
                Ok(stream) => return Ok(self.start_connection(addr, stream)),
                Err(e) => {
                    warn!(%addr, error = %e, "client connect failed");
                    self.next_addr.set(self.next_addr.get() + 1);
                }
            }
        }
        Err(ClientError::Unreachable(addrs.clone()))
    }

    fn start_connection(&self, addr: SocketAddr, stream: TcpStream) -> Rc<Connection> {
        let config = &self.config;
        let conn = Rc::new(Connection {
            addr,
            queue: SendQueue::new(
                NodeId(0),
                config.queue_bytes_max,
                config.frame_body_bytes_max,
            ),
            pending: RefCell::new(HashMap::new()),
            dead: Cell::new(false),
            task: RefCell::new(None),
        });
        let reader = FrameReader::new(config.frame_body_bytes_max);
        let task = spawn_local(run_client_connection(conn.clone(), stream, reader));
        *conn.task.borrow_mut() = Some(task);
        conn
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            close(&conn);
        }
    }
}

/// Marks the connection dead, fails its outstanding requests, and cancels
/// its task (which breaks the Rc cycle task ↔ connection).
fn close(conn: &Connection) {
    conn.dead.set(true);
    conn.pending.borrow_mut().clear();
    drop(conn.task.borrow_mut().take());
}

async fn push_wait_with_seq(
    queue: &SendQueue,
    kind: u16,
    seq: u64,
    body: &[u8],
) -> Result<(), SendError> {
    loop {
        let epoch = queue.space.epoch();
        match queue.push_with_seq(kind, seq, Body::Slice(body)) {
            Err(SendError::QueueFull { .. }) => queue.space.changed_since(epoch).await,
            other => return other,
        }
    }
}

async fn run_client_connection(conn: Rc<Connection>, stream: TcpStream, reader: FrameReader) {
    let socket = SocketFd::of(&stream);
    let (mut r, mut w) = futures_lite::io::split(stream);
    let reading = dispatch_replies(&conn, &mut r, reader);
    let writing = write_loop(&mut w, socket, &conn.queue, |_| {}, |_, _| {});
    let error = futures_lite::future::or(reading, writing).await;
    warn!(addr = %conn.addr, reason = %error, "client connection closed");
    conn.dead.set(true);
    conn.pending.borrow_mut().clear();
}

async fn dispatch_replies(
    conn: &Connection,
    r: &mut ReadHalf<TcpStream>,
    mut reader: FrameReader,
) -> ConnError {
    loop {
        let mut frames: Vec<Frame> = Vec::new();
        let read = read_some(r, &mut reader, &mut frames).await;
        for frame in frames {
            // A reply nobody waits for (timed out) is dropped.
            if let Some(tx) = conn.pending.borrow_mut().remove(&frame.seq) {
                let _ = tx.try_send(Reply {
                    kind: frame.kind,
                    body: frame.body,
                });
            }
        }
        if let Err(e) = read {
            return e;
        }
    }
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
