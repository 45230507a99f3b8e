//! A client of the client port (its server side is `client_port.rs`): the
//! same frames, a request id in `seq`, replies matched by that id, and a
//! reserved redirect kind.
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
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use glommio::{spawn_local, Task};
use tracing::{debug, warn};

use crate::client_auth::{client_proof, KIND_CLIENT_CHALLENGE, KIND_CLIENT_PROOF};
use crate::client_port::decode_redirect;
use crate::config::Secret;
use crate::config::{validate_frame_limits, ConfigError};
use crate::notify::Notify;
use crate::queue::{Body, SendError, SendQueue};
use crate::reader::{Frame, FrameReader};
use crate::stream::{self, read_some, with_timeout, write_loop, ConnError, SocketFd};
use crate::{NodeId, KIND_REDIRECT, KIND_REPLY_REFUSED, KIND_RESERVED_MIN};
use futures_lite::AsyncWriteExt;
use synod_wal::frame::encode_frame;

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
    /// The nodes' client secret, if they ask for one (`client_auth.rs`).
    pub secret: Option<Secret>,
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
            secret: None,
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
    /// The node could not send its reply (larger than a frame); why.
    #[error("the node refused to send its reply: {0}")]
    Refused(String),
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
            if reply.kind == KIND_REPLY_REFUSED {
                let reason = String::from_utf8_lossy(&reply.body).into_owned();
                return Err(ClientError::Refused(reason));
            }
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
                Ok(mut stream) => {
                    let mut reader = FrameReader::new(self.config.frame_body_bytes_max);
                    if let Some(secret) = &self.config.secret {
                        let timeout = self.config.connect_timeout;
                        let answered = answer_challenge(&mut stream, &mut reader, secret);
                        match with_timeout(timeout, answered).await {
                            Some(Ok(())) => {}
                            Some(Err(e)) => {
                                warn!(%addr, error = %e, "client authentication failed");
                                continue;
                            }
                            None => {
                                warn!(%addr, "the node did not ask for the client secret");
                                continue;
                            }
                        }
                    }
                    return Ok(self.start_connection(addr, stream, reader));
                }
                Err(e) => {
                    warn!(%addr, error = %e, "client connect failed");
                    self.next_addr.set(self.next_addr.get() + 1);
                }
            }
        }
        Err(ClientError::Unreachable(addrs.clone()))
    }

    fn start_connection(
        &self,
        addr: SocketAddr,
        stream: TcpStream,
        reader: FrameReader,
    ) -> Rc<Connection> {
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
            if frame.kind == KIND_CLIENT_CHALLENGE {
                return ConnError::Protocol(
                    "the node asks for a client secret, and this client has none".into(),
                );
            }
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

/// Reads the node's challenge and sends the proof, before any request.
async fn answer_challenge(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    secret: &Secret,
) -> Result<(), ConnError> {
    let mut frames = Vec::new();
    while frames.is_empty() {
        read_some(stream, reader, &mut frames).await?;
    }
    let challenge = &frames[0];
    if challenge.kind != KIND_CLIENT_CHALLENGE {
        return Err(ConnError::Protocol(format!(
            "expected the node's challenge, got a frame of kind {:#06x}",
            challenge.kind
        )));
    }
    let proof = client_proof(secret, &challenge.body);
    let mut frame = Vec::new();
    encode_frame(KIND_CLIENT_PROOF, 0, &proof, &mut frame)
        .map_err(|e| ConnError::Protocol(e.to_string()))?;
    stream.write_all(&frame).await.map_err(ConnError::Io)
}
