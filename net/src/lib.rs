//! synod-net: the transport (DESIGN.md §6). It moves frames; it knows
//! nothing of Paxos, bodies are opaque bytes.
//!
//! ```text
//!  core i of node A                               core i of node B
//!  ┌──────────────────────────┐  one TCP conn.   ┌──────────────────────────┐
//!  │ send(B, kind, body) ─┐   │  (lower id dials)│                          │
//!  │   encode_frame into  │   │                  │   FrameReader: bound the │
//!  │   B's queue (bounded:│   │  HELLO/CHALLENGE │   length, then checksum  │
//!  │   QueueFull = slow   │   │  /PROOF/WELCOME  │   ─▶ Inbox: (from, kind, │
//!  │   down)              ▼   │ ───────────────▶ │      seq, body: Bytes)   │
//!  │   writer: whole queue in │  frames, many    │                          │
//!  │   one write (coalesced)  │  per write       │                          │
//!  └──────────────────────────┘                  └──────────────────────────┘
//! ```
//!
//! - [`Transport`]: one per glommio executor (core). Peer connections carry
//!   [`synod_wal::frame`] frames; the wire's length prefix is the frame
//!   header's `body_len`. Per peer, a send queue bounded in bytes: `send`
//!   never blocks and returns [`SendError::QueueFull`] so the caller can slow
//!   down; `send_wait` waits for room.
//! - Handshake ([`handshake`]): cluster id, node ids, core, and a mutual
//!   HMAC-SHA256 proof of the shared secret over fresh nonces from both
//!   sides. Refusals are logged and counted by [`RefuseReason`].
//! - [`ClientListener`] / [`Client`]: the client port, same framing, request
//!   id in the frame's `seq`, and a reserved redirect kind.
//! - [`FrameReader`]: the pure stream decoder (fuzzed), bounded before it
//!   allocates.
#![deny(missing_docs)]

mod auth;
mod client;
mod client_auth;
mod client_port;
mod config;
pub mod handshake;
mod listen;
mod log_limit;
mod notify;
mod peer_addr;
mod peer_handshake;
mod queue;
mod reader;
mod reply_budget;
mod stream;
mod transport;

pub use client::{Client, ClientConfig, ClientError, Reply};
pub use client_auth::{client_proof, KIND_CLIENT_CHALLENGE, KIND_CLIENT_PROOF};
pub use client_port::{
    decode_redirect, encode_redirect, ClientListener, ClientListenerConfig, ClientRequest, Replier,
};
pub use config::{ConfigError, PeerConfig, Secret};
pub use handshake::RefuseReason;
pub use listen::{check_unclaimed, claim_shared_port, PortClaim, BIND_BUSY_WAIT};
pub use peer_addr::{NotHostAndPort, PeerAddr};
pub use queue::SendError;
pub use reader::{Frame, FrameReader};
pub use transport::{AddPeerError, Counters, Inbox, Message, Transport, TransportError, PEERS_MAX};

/// A node of the cluster. The transport never interprets it beyond equality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Frame kinds at or above this are the transport's own (handshake,
/// redirect); callers use kinds below it.
pub const KIND_RESERVED_MIN: u16 = 0xff00;
/// Handshake: dialer's hello (cluster, ids, core, nonce).
pub const KIND_HELLO: u16 = 0xff01;
/// Handshake: acceptor's challenge (its nonce and proof).
pub const KIND_CHALLENGE: u16 = 0xff02;
/// Handshake: dialer's proof.
pub const KIND_PROOF: u16 = 0xff03;
/// Handshake: acceptor's acceptance; data frames follow.
pub const KIND_WELCOME: u16 = 0xff04;
/// The MAC of the batch of data frames before it (see `auth.rs`).
pub const KIND_BATCH_MAC: u16 = auth::KIND_BATCH_MAC;
/// Client reply: "ask this node instead". Body: node id u64 little endian,
/// then the node's client address as UTF-8 (`"127.0.0.1:8002"`).
pub const KIND_REDIRECT: u16 = 0xff10;
/// Client reply: the node made a reply it cannot send (larger than a
/// frame); the body says why, as text. `Client::request` answers it with
/// [`ClientError::Refused`].
pub const KIND_REPLY_REFUSED: u16 = 0xff11;
