//! Helpers for the loopback tests: an executor per test, free ports,
//! configs with short timeouts, and a hand-driven dialer handshake.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use synod_net::handshake::{Challenge, Hello, Role, Transcript};
use synod_net::{
    FrameReader, NodeId, PeerConfig, Secret, KIND_CHALLENGE, KIND_HELLO, KIND_PROOF, KIND_WELCOME,
};
use synod_wal::frame::encode_frame;

/// io_memory per test executor: tests run in parallel threads under an
/// 8 MiB memlock limit (docs/wal.md).
pub const TEST_IO_MEMORY_BYTES: usize = 1 << 20;
/// No test may take longer than this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `make()` in a fresh glommio executor on its own thread; panics if
/// it takes longer than `TEST_TIMEOUT`.
pub fn run<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(TEST_IO_MEMORY_BYTES)
        .spawn(move || async move {
            let finished = async {
                make().await;
                true
            };
            let timed_out = async {
                glommio::timer::sleep(TEST_TIMEOUT).await;
                false
            };
            assert!(
                futures_lite::future::or(finished, timed_out).await,
                "test timed out"
            );
        })
        .expect("executor")
        .join()
        .expect("test thread");
}

/// A loopback port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn secret() -> Secret {
    Secret::new(*b"0123456789abcdef0123456789abcdef")
}

/// A config for `me` among `nodes`, with test-sized timeouts.
pub fn config(me: u64, nodes: &[(u64, SocketAddr)]) -> PeerConfig {
    let listen = nodes.iter().find(|(id, _)| *id == me).unwrap().1;
    let peers = nodes.iter().map(|(id, a)| (NodeId(*id), *a)).collect();
    let mut c = PeerConfig::new(7, NodeId(me), secret(), listen, peers);
    c.connect_timeout = Duration::from_millis(500);
    c.handshake_timeout = Duration::from_millis(500);
    c.backoff_min = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(100);
    c.frame_body_bytes_max = 64 << 10;
    c.peer_queue_bytes_max = 1 << 20;
    c
}

/// Polls `cond` every 5 ms until it holds; panics after 10 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waited too long for {what}"
        );
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

pub fn frame(kind: u16, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(kind, seq, body, &mut out).unwrap();
    out
}

pub async fn read_frame(stream: &mut TcpStream, reader: &mut FrameReader) -> synod_net::Frame {
    loop {
        if let Some(f) = reader.next_frame().unwrap() {
            return f;
        }
        let n = stream.read(reader.read_space()).await.unwrap();
        reader.filled(n);
        assert!(n > 0, "closed during handshake");
    }
}

/// A connection whose handshake a test ran by hand, with the key of the
/// data frames it sends.
pub struct RawPeer {
    pub stream: TcpStream,
    key: [u8; synod_net::handshake::MAC_BYTES],
    batches: u64,
}

impl RawPeer {
    /// `frames` as a writer sends them: each frame, then the MAC of the
    /// batch (the next batch number of this connection).
    pub fn sealed(&mut self, frames: &[(u16, u64, &[u8])]) -> Vec<u8> {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(&self.batches.to_le_bytes());
        let mut out = Vec::new();
        for (kind, seq, body) in frames {
            out.extend(frame(*kind, *seq, body));
            mac.update(&kind.to_le_bytes());
            mac.update(&seq.to_le_bytes());
            mac.update(&(body.len() as u64).to_le_bytes());
            mac.update(body);
        }
        let tag = mac.finalize();
        out.extend(frame(
            synod_net::KIND_BATCH_MAC,
            self.batches,
            tag.as_bytes(),
        ));
        self.batches += 1;
        out
    }
}

/// Connects to `addr` as node `me` and runs the dialer's handshake by hand,
/// so a test can then write arbitrary bytes as an authenticated peer.
pub async fn raw_dial(addr: SocketAddr, me: u64, to: u64) -> RawPeer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut reader = FrameReader::new(256);
    let hello = Hello {
        cluster_id: 7,
        compat: 0,
        encrypt: false,
        dialer: NodeId(me),
        acceptor: NodeId(to),
        core: 0,
        nonce: synod_net::handshake::nonce(),
    };
    stream
        .write_all(&frame(KIND_HELLO, 0, &hello.encode()))
        .await
        .unwrap();
    let challenge = read_frame(&mut stream, &mut reader).await;
    assert_eq!(challenge.kind, KIND_CHALLENGE);
    let challenge = Challenge::decode(&challenge.body).unwrap();
    let transcript = Transcript {
        cluster_id: 7,
        compat: 0,
        encrypt: false,
        dialer: NodeId(me),
        acceptor: NodeId(to),
        core: 0,
        nonce_dialer: hello.nonce,
        nonce_acceptor: challenge.nonce,
    };
    let proof = transcript.prove(&secret(), Role::Dialer);
    stream
        .write_all(&frame(KIND_PROOF, 0, &proof))
        .await
        .unwrap();
    let welcome = read_frame(&mut stream, &mut reader).await;
    assert_eq!(welcome.kind, KIND_WELCOME);
    assert!(transcript.verify(&secret(), Role::Acceptor, &welcome.body));
    RawPeer {
        stream,
        key: transcript.frame_key(&secret(), Role::Dialer),
        batches: 0,
    }
}
