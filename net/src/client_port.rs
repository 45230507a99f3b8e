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

use crate::config::{validate_frame_limits, ConfigError};
use crate::listen::{Listener, Sharing};
use crate::log_limit::OncePerSecond;
use crate::notify::Notify;
use crate::queue::{Body, SendError, SendQueue};
use crate::reader::FrameReader;
use crate::stream::{read_some, with_timeout, write_loop, ConnError, SocketFd};
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
