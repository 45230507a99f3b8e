//! The client port's framing (synod_wal frames, the request id in the
//! frame's `seq`) over a plain blocking TCP socket. The command line's
//! clients use this rather than `synod_net::Client`, which runs on glommio:
//! a client then needs neither io_uring nor locked memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use synod_client_proto::{ClientOp, ClientRequest, ClientResponse, KIND_CLIENT_REQUEST};
use synod_net::{
    client_proof, decode_redirect, Frame, FrameReader, Secret, KIND_CLIENT_CHALLENGE,
    KIND_CLIENT_PROOF, KIND_REDIRECT, KIND_REPLY_REFUSED,
};
use synod_wal::frame::{encode_frame, FrameError};

/// The largest reply body read (the nodes' own limit on client frames).
const REPLY_BODY_BYTES_MAX: u32 = 1 << 20;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The TCP connect failed or timed out.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The node's client address.
        addr: SocketAddr,
        /// The socket's error.
        source: std::io::Error,
    },
    /// The connection failed while sending or waiting.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The node's client address.
        addr: SocketAddr,
        /// The socket's error.
        source: std::io::Error,
    },
    /// The node closed the connection before answering.
    #[error("{0} closed the connection")]
    Closed(SocketAddr),
    /// No answer in time.
    #[error("{addr} did not answer within {waited:?}")]
    Timeout {
        /// The node's client address.
        addr: SocketAddr,
        /// How long it was given.
        waited: Duration,
    },
    /// The node sent bytes that are not a frame.
    #[error("{addr} sent a bad frame: {source}")]
    Frame {
        /// The node's client address.
        addr: SocketAddr,
        /// What is wrong with it.
        source: FrameError,
    },
    /// The request does not fit a frame.
    #[error("request too large: {0}")]
    TooLarge(#[source] FrameError),
    /// The node could not send its reply (larger than a frame); why.
    #[error("{addr} could not send its reply: {reason}")]
    Refused {
        /// The node's client address.
        addr: SocketAddr,
        /// The node's words.
        reason: String,
    },
    /// The node asks for a client secret and none was given.
    #[error("{0} asks for a client secret (--client-secret-file)")]
    SecretRequired(SocketAddr),
    /// A client secret was given, and the node did not ask for it first.
    #[error(
        "{0} did not ask for the client secret (is it a synod node with --client-secret-file?)"
    )]
    NoChallenge(SocketAddr),
    /// The reply body is not a client reply.
    #[error("bad reply from {addr}: {reason}")]
    BadReply {
        /// The node's client address.
        addr: SocketAddr,
        /// The decoder's words.
        reason: String,
    },
}

impl WireError {
    /// Whether the node was never reached (nothing was sent).
    pub fn unreachable(&self) -> bool {
        matches!(self, WireError::Connect { .. })
    }
}

/// What a node answered.
#[derive(Debug)]
pub enum Answer {
    /// A client reply.
    Reply(ClientResponse),
    /// "Ask this node instead", with its client address.
    Redirect {
        /// Its id.
        node: u64,
        /// Its client address.
        addr: SocketAddr,
    },
}

/// One connection to one node's client port, made on first use and made
/// again after a failure.
pub struct Connection {
    addr: SocketAddr,
    /// The nodes' client secret, proved on each new connection.
    secret: Option<Secret>,
    stream: Option<(TcpStream, FrameReader)>,
    next_id: u64,
}

impl Connection {
    /// A connection to `addr`, proving `secret` if the node asks for one;
    /// nothing is dialled yet.
    pub fn new(addr: SocketAddr, secret: Option<Secret>) -> Connection {
        Connection {
            addr,
            secret,
            stream: None,
            next_id: 1,
        }
    }

    /// The node's client address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `op` for `group` and waits at most `limit` for its answer.
    pub fn ask(&mut self, group: u32, op: ClientOp, limit: Duration) -> Result<Answer, WireError> {
        let body = ClientRequest { group, op }.encode();
        let result = self.request(&body, limit);
        if result.is_err() {
            // A late answer on this stream would be taken for the next one.
            self.stream = None;
        }
        result
    }

    fn request(&mut self, body: &[u8], limit: Duration) -> Result<Answer, WireError> {
        let addr = self.addr;
        let deadline = Instant::now() + limit;
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        encode_frame(KIND_CLIENT_REQUEST, id, body, &mut frame).map_err(WireError::TooLarge)?;
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&addr, limit)
                .map_err(|source| WireError::Connect { addr, source })?;
            let _ = stream.set_nodelay(true);
            let mut reader = FrameReader::new(REPLY_BODY_BYTES_MAX);
            if let Some(secret) = &self.secret {
                prove(&stream, &mut reader, secret, addr, deadline)?;
            }
            self.stream = Some((stream, reader));
        }
        let (stream, reader) = self.stream.as_mut().expect("connected above");
        let io = |source| WireError::Io { addr, source };
        stream.set_write_timeout(Some(limit)).map_err(io)?;
        stream.write_all(&frame).map_err(io)?;
        loop {
            let Some(frame) = read_frame(stream, reader, addr, deadline)? else {
                return Err(WireError::Timeout {
                    addr,
                    waited: limit,
                });
            };
            if frame.kind == KIND_CLIENT_CHALLENGE {
                return Err(WireError::SecretRequired(addr));
            }
            // A reply to a request given up on earlier is skipped.
            if frame.seq != id {
                continue;
            }
            if frame.kind == KIND_REPLY_REFUSED {
                let reason = String::from_utf8_lossy(&frame.body).into_owned();
                return Err(WireError::Refused { addr, reason });
            }
            if frame.kind == KIND_REDIRECT {
                return match decode_redirect(&frame.body) {
                    Some((node, addr)) => Ok(Answer::Redirect { node: node.0, addr }),
                    None => Err(WireError::BadReply {
                        addr,
                        reason: "malformed redirect".into(),
                    }),
                };
            }
            return ClientResponse::decode(&frame.body)
                .map(Answer::Reply)
                .map_err(|reason| WireError::BadReply { addr, reason });
        }
    }
}

/// The next whole frame from `stream`, waiting until `deadline`; `None`
/// if none came in time.
fn read_frame(
    mut stream: &TcpStream,
    reader: &mut FrameReader,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<Option<Frame>, WireError> {
    loop {
        if let Some(frame) = reader
            .next_frame()
            .map_err(|source| WireError::Frame { addr, source })?
        {
            return Ok(Some(frame));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let io = |source| WireError::Io { addr, source };
        stream.set_read_timeout(Some(left)).map_err(io)?;
        match stream.read(reader.read_space()) {
            Ok(0) => return Err(WireError::Closed(addr)),
            Ok(n) => reader.filled(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(WireError::Io { addr, source }),
        }
    }
}

/// Reads the node's challenge and sends the proof of `secret`.
fn prove(
    mut stream: &TcpStream,
    reader: &mut FrameReader,
    secret: &Secret,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<(), WireError> {
    let io = |source| WireError::Io { addr, source };
    let Some(challenge) = read_frame(stream, reader, addr, deadline)? else {
        return Err(WireError::NoChallenge(addr));
    };
    if challenge.kind != KIND_CLIENT_CHALLENGE {
        return Err(WireError::NoChallenge(addr));
    }
    let mut frame = Vec::new();
    let proof = client_proof(secret, &challenge.body);
    encode_frame(KIND_CLIENT_PROOF, 0, &proof, &mut frame).map_err(WireError::TooLarge)?;
    stream.write_all(&frame).map_err(io)
}

/// The client secret in `path`, if given (the same file the nodes read).
pub fn client_secret(path: Option<std::path::PathBuf>) -> Result<Option<Secret>, std::io::Error> {
    path.map(|path| {
        crate::secret_cmd::read_secret(path)
            .map(Secret::new)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
    })
    .transpose()
}
