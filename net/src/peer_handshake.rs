//! The peer handshake as each side runs it on a connection (the messages
//! and proofs are `handshake.rs`): who is on the other end, whether it
//! knows the secret and agrees on everything it must, and the keys of the
//! connection's data frames.

use glommio::net::TcpStream;

use crate::config::PeerConfig;
use crate::handshake::{self, Challenge, Hello, RefuseReason, Role, Transcript, MAC_BYTES};
use crate::reader::{Frame, FrameReader};
use crate::stream::{read_one, write_one, ConnError};
use crate::{NodeId, KIND_CHALLENGE, KIND_HELLO, KIND_PROOF, KIND_WELCOME};

/// Why a handshake failed, and the detail to log.
pub(crate) type Refusal = (RefuseReason, String);

pub(crate) fn io_refusal(e: ConnError) -> Refusal {
    match e {
        ConnError::Frame(e) => (RefuseReason::Malformed, e.to_string()),
        e => (RefuseReason::Io, e.to_string()),
    }
}

fn expect_kind(frame: &Frame, kind: u16) -> Result<(), Refusal> {
    if frame.kind != kind {
        let detail = format!("expected kind {kind:#06x}, got {:#06x}", frame.kind);
        return Err((RefuseReason::Malformed, detail));
    }
    Ok(())
}

/// The keys of one connection's data frames, by direction.
pub(crate) struct FrameKeys {
    pub(crate) send: [u8; MAC_BYTES],
    pub(crate) receive: [u8; MAC_BYTES],
}

impl FrameKeys {
    fn of(transcript: &Transcript, secret: &crate::Secret, me: Role, peer: Role) -> FrameKeys {
        FrameKeys {
            send: transcript.frame_key(secret, me),
            receive: transcript.frame_key(secret, peer),
        }
    }
}

/// The acceptor's side: returns the authenticated peer and the keys of
/// the connection's data frames.
pub(crate) async fn accept_handshake(
    config: &PeerConfig,
    is_peer: impl Fn(NodeId) -> bool,
    stream: &mut TcpStream,
    reader: &mut FrameReader,
) -> Result<(NodeId, FrameKeys), Refusal> {
    let frame = read_one(stream, reader).await.map_err(io_refusal)?;
    expect_kind(&frame, KIND_HELLO)?;
    let hello = Hello::decode(&frame.body).ok_or((RefuseReason::Malformed, "bad hello".into()))?;
    check_hello(config, is_peer, &hello)?;
    let challenge = Challenge {
        cluster_id: config.cluster_id,
        compat: config.compat,
        encrypt: config.encrypt,
        acceptor: config.node_id,
        core: config.core,
        nonce: handshake::nonce(),
    };
    write_one(stream, KIND_CHALLENGE, &challenge.encode())
        .await
        .map_err(io_refusal)?;
    let transcript = transcript(&hello, &challenge);
    let proof = read_one(stream, reader).await.map_err(io_refusal)?;
    expect_kind(&proof, KIND_PROOF)?;
    if !transcript.verify(&config.secret, Role::Dialer, &proof.body) {
        let detail = format!("{}'s proof does not verify: another secret", hello.dialer);
        return Err((RefuseReason::BadProof, detail));
    }
    let secret = &config.secret;
    let welcome = transcript.prove(secret, Role::Acceptor);
    write_one(stream, KIND_WELCOME, &welcome)
        .await
        .map_err(io_refusal)?;
    let keys = FrameKeys::of(&transcript, secret, Role::Acceptor, Role::Dialer);
    Ok((hello.dialer, keys))
}

fn check_hello(
    config: &PeerConfig,
    is_peer: impl Fn(NodeId) -> bool,
    hello: &Hello,
) -> Result<(), Refusal> {
    if hello.cluster_id != config.cluster_id {
        let detail = format!(
            "cluster {} is not ours ({})",
            hello.cluster_id, config.cluster_id
        );
        return Err((RefuseReason::WrongCluster, detail));
    }
    if (hello.compat, hello.encrypt) != (config.compat, config.encrypt) {
        return Err(incompatible(
            hello.dialer,
            (hello.compat, hello.encrypt),
            config,
        ));
    }
    if hello.acceptor != config.node_id {
        let detail = format!("dialed {}, this is {}", hello.acceptor, config.node_id);
        return Err((RefuseReason::UnknownNode, detail));
    }
    // Only lower ids dial higher ones; anything else is not a peer of ours.
    if !is_peer(hello.dialer) || hello.dialer >= config.node_id {
        let detail = format!(
            "{} is not a peer that dials {}",
            hello.dialer, config.node_id
        );
        return Err((RefuseReason::UnknownNode, detail));
    }
    if hello.core != config.core {
        let detail = format!("core {} talks only to core {}", config.core, hello.core);
        return Err((RefuseReason::WrongCore, detail));
    }
    Ok(())
}

fn incompatible(peer: NodeId, (compat, encrypt): (u64, bool), ours: &PeerConfig) -> Refusal {
    let detail = if encrypt != ours.encrypt {
        let says = |e| if e { "encrypts" } else { "does not encrypt" };
        let (theirs, mine) = (says(encrypt), says(ours.encrypt));
        format!("{peer} {theirs} frame bodies, this node {mine}: set both alike")
    } else {
        format!(
            "{peer} declares compat {compat:#018x}, this node {:#018x}: \
             a build whose replicas would not agree with ours",
            ours.compat
        )
    };
    (RefuseReason::Incompatible, detail)
}

fn transcript(hello: &Hello, challenge: &Challenge) -> Transcript {
    Transcript {
        cluster_id: hello.cluster_id,
        compat: hello.compat,
        encrypt: hello.encrypt,
        dialer: hello.dialer,
        acceptor: hello.acceptor,
        core: hello.core,
        nonce_dialer: hello.nonce,
        nonce_acceptor: challenge.nonce,
    }
}

/// The dialer's side, after the TCP connect.
pub(crate) async fn dial_handshake(
    config: &PeerConfig,
    peer: NodeId,
    stream: &mut TcpStream,
    reader: &mut FrameReader,
) -> Result<FrameKeys, Refusal> {
    let hello = Hello {
        cluster_id: config.cluster_id,
        compat: config.compat,
        encrypt: config.encrypt,
        dialer: config.node_id,
        acceptor: peer,
        core: config.core,
        nonce: handshake::nonce(),
    };
    write_one(stream, KIND_HELLO, &hello.encode())
        .await
        .map_err(io_refusal)?;
    let frame = read_one(stream, reader).await.map_err(io_refusal)?;
    expect_kind(&frame, KIND_CHALLENGE)?;
    let challenge =
        Challenge::decode(&frame.body).ok_or((RefuseReason::Malformed, "bad challenge".into()))?;
    check_challenge(config, peer, &challenge)?;
    let transcript = transcript(&hello, &challenge);
    let proof = transcript.prove(&config.secret, Role::Dialer);
    write_one(stream, KIND_PROOF, &proof)
        .await
        .map_err(io_refusal)?;
    let welcome = read_one(stream, reader).await.map_err(io_refusal)?;
    expect_kind(&welcome, KIND_WELCOME)?;
    if welcome.body.len() != MAC_BYTES
        || !transcript.verify(&config.secret, Role::Acceptor, &welcome.body)
    {
        let detail = format!("{peer}'s proof does not verify: another secret");
        return Err((RefuseReason::BadProof, detail));
    }
    Ok(FrameKeys::of(
        &transcript,
        &config.secret,
        Role::Dialer,
        Role::Acceptor,
    ))
}

fn check_challenge(config: &PeerConfig, peer: NodeId, c: &Challenge) -> Result<(), Refusal> {
    if c.cluster_id != config.cluster_id {
        let detail = format!(
            "cluster {} is not ours ({})",
            c.cluster_id, config.cluster_id
        );
        return Err((RefuseReason::WrongCluster, detail));
    }
    if (c.compat, c.encrypt) != (config.compat, config.encrypt) {
        return Err(incompatible(peer, (c.compat, c.encrypt), config));
    }
    if c.acceptor != peer {
        let detail = format!("dialed {peer}, answered by {}", c.acceptor);
        return Err((RefuseReason::UnknownNode, detail));
    }
    if c.core != config.core {
        let detail = format!("core {} talks only to core {}", config.core, c.core);
        return Err((RefuseReason::WrongCore, detail));
    }
    Ok(())
}
