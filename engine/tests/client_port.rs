//! The client port with an embedder's own protocol: the engine carries its
//! frames opaquely, answers a group of the core that took a request in
//! place and forwards the others to their group's core.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "support/ports.rs"]
mod ports;
#[path = "support/sum.rs"]
mod sum;

use bytes::Bytes;
use ports::free_ports;
use sum::Sum;
use synod_engine::protocol::{ClientId, NodeId};
use synod_engine::runtime::client_port::{
    ClientGroups, ClientReply, ClientService, ForwardError, LocalGroup,
};
use synod_engine::runtime::node::{Node, NodeOptions};
use synod_engine::runtime::ProposeOutcome;

const KIND_ADD: u16 = 7;
const KIND_SUM: u16 = 8;
const KIND_REFUSED: u16 = 9;

/// The protocol: a request is a group (u32) and an amount (u64); the reply
/// is the group's sum after it, and whether the request was forwarded.
struct SumPort;

impl SumPort {
    async fn add(group: LocalGroup<'_>, amount: u64, forwarded: bool) -> ClientReply {
        let data = Bytes::copy_from_slice(&amount.to_le_bytes());
        match group.propose(ClientId(0), 0, data).await {
            ProposeOutcome::Applied { reply, .. } => {
                let mut body = reply.to_vec();
                body.push(u8::from(forwarded));
                ClientReply {
                    kind: KIND_SUM,
                    body,
                }
            }
            other => refused(format!("{other:?}")),
        }
    }
}

fn refused(reason: String) -> ClientReply {
    ClientReply {
        kind: KIND_REFUSED,
        body: reason.into_bytes(),
    }
}

impl ClientService for SumPort {
    type Forwarded = (u32, u64);

    async fn answer(
        &self,
        groups: &ClientGroups<'_, (u32, u64)>,
        kind: u16,
        body: &[u8],
    ) -> ClientReply {
        let Some((group, amount)) = body.split_first_chunk::<4>().and_then(|(group, amount)| {
            Some((
                u32::from_le_bytes(*group),
                u64::from_le_bytes(amount.try_into().ok()?),
            ))
        }) else {
            return refused(format!("kind {kind}: not a group and an amount"));
        };
        if kind != KIND_ADD {
            return refused(format!("kind {kind}"));
        }
        match groups.local(group) {
            Some(local) => SumPort::add(local, amount, false).await,
            None => groups
                .forward(group, (group, amount))
                .await
                .unwrap_or_else(|error: ForwardError| refused(error.to_string())),
        }
    }

    async fn answer_forwarded(
        &self,
        group: LocalGroup<'_>,
        (_, amount): (u32, u64),
    ) -> ClientReply {
        SumPort::add(group, amount, true).await
    }
}

fn request(group: u32, amount: u64) -> Vec<u8> {
    [&group.to_le_bytes()[..], &amount.to_le_bytes()].concat()
}

/// Sends `body` as `kind` to each node in turn until one answers other
/// than with a refused proposal (not the leader, or no leader yet), for up
/// to 20 s; returns that reply.
fn ask(addrs: &[SocketAddr], kind: u16, body: Vec<u8>) -> (u16, Vec<u8>) {
    let addrs = addrs.to_vec();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                for addr in &addrs {
                    let config = synod_net::ClientConfig::new(vec![*addr]);
                    let client = synod_net::Client::new(config).unwrap();
                    let reply = client.request(kind, &body).await.expect("the node answers");
                    let not_led = reply.kind == KIND_REFUSED && reply.body.starts_with(b"Refused");
                    if !not_led || Instant::now() > deadline {
                        return (reply.kind, reply.body.to_vec());
                    }
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Three nodes of four groups on two cores each, with their client ports.
fn start(dir: &Path) -> (Vec<Node>, Vec<SocketAddr>) {
    let peers: Vec<(NodeId, SocketAddr)> = (1..=3).map(|id| (NodeId(id), free_ports(2))).collect();
    let clients: Vec<SocketAddr> = peers.iter().map(|_| free_ports(1)).collect();
    let nodes = peers
        .iter()
        .zip(&clients)
        .map(|((id, listen), client)| {
            let options = NodeOptions {
                groups: 4,
                cores: 2,
                tick: Duration::from_millis(2),
                io_memory_bytes: 512 << 10,
                secret: Some(b"a test secret of 16 bytes or more".to_vec()),
                ..NodeOptions::new(
                    *id,
                    *listen,
                    peers.clone(),
                    dir.join(format!("node-{}", id.0)),
                )
            };
            Node::start_with_client_port(options, |_| Sum::default(), *client, SumPort).unwrap()
        })
        .collect();
    (nodes, clients)
}

#[test]
fn an_embedders_protocol_reaches_every_group_in_place_or_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, clients) = start(dir.path());
    let mut forwarded = [false; 4];
    // Each request is a new connection, which SO_REUSEPORT gives to either
    // core: over 20 of them, some land on the core of another group.
    for round in 1..=5u64 {
        for group in 0..4u32 {
            let (kind, body) = ask(&clients, KIND_ADD, request(group, u64::from(group) + 1));
            assert_eq!(kind, KIND_SUM, "{}", String::from_utf8_lossy(&body));
            let sum = u64::from_le_bytes(body[..8].try_into().unwrap());
            assert_eq!(sum, round * (u64::from(group) + 1), "group {group}");
            forwarded[group as usize] |= body[8] == 1;
        }
    }
    assert!(
        forwarded.iter().any(|f| *f),
        "nothing crossed between cores"
    );

    // What the embedder refuses is its reply; a group the node does not
    // host is the engine's refusal, in the embedder's words.
    let (kind, body) = ask(&clients, KIND_ADD, b"short".to_vec());
    assert_eq!(kind, KIND_REFUSED);
    assert!(
        body.starts_with(b"kind 7"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (kind, body) = ask(&clients, KIND_ADD, request(9, 1));
    assert_eq!(kind, KIND_REFUSED);
    let expected = ForwardError::NoGroup {
        group: 9,
        groups: 4,
    }
    .to_string();
    assert_eq!(String::from_utf8_lossy(&body), expected);
    for node in nodes {
        node.shutdown().unwrap();
    }
}
