//! The client port with a client secret: a client that proves it knows the
//! secret is served; one without it, with another secret, or replaying a
//! proof recorded on another connection is closed and counted.

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::spawn_local;
use synod_net::{
    client_proof, Client, ClientConfig, ClientListener, ClientListenerConfig, FrameReader, Secret,
    KIND_CLIENT_CHALLENGE, KIND_CLIENT_PROOF,
};

fn secret(byte: u8) -> Secret {
    Secret::new(vec![byte; 32])
}

async fn echo(listener: Rc<ClientListener>) {
    while let Some(request) = listener.next().await {
        let body = request.body.to_vec();
        let _ = request.reply(request.kind, &body).await;
    }
}

fn client(addr: std::net::SocketAddr, secret: Option<Secret>) -> Client {
    let mut config = ClientConfig::new(vec![addr]);
    config.request_timeout = Duration::from_secs(2);
    config.secret = secret;
    Client::new(config).unwrap()
}

#[test]
fn only_clients_that_prove_the_secret_are_served() {
    run(|| async {
        let mut config = ClientListenerConfig::new("127.0.0.1:0".parse().unwrap());
        config.secret = Some(secret(7));
        let server = Rc::new(ClientListener::bind(config).unwrap());
        let _serving = spawn_local(echo(server.clone()));
        let addr = server.local_addr();

        let good = client(addr, Some(secret(7)));
        assert_eq!(
            good.request(1, b"hello").await.unwrap().body.as_ref(),
            b"hello"
        );
        assert_eq!(server.unauthenticated_closes(), 0);

        // No secret: the node's challenge ends the connection, the request fails.
        assert!(client(addr, None).request(1, b"x").await.is_err());
        // Another secret: the proof is refused.
        assert!(client(addr, Some(secret(8)))
            .request(1, b"x")
            .await
            .is_err());
        wait_until("the wrong proof counted", || {
            server.unauthenticated_closes() >= 1
        })
        .await;

        // A proof recorded on one connection opens no other: each
        // challenge is a fresh nonce.
        let (mut first, nonce) = challenged(addr).await;
        let recorded = client_proof(&secret(7), &nonce);
        first
            .write_all(&frame(KIND_CLIENT_PROOF, 0, &recorded))
            .await
            .unwrap();
        let (mut second, _) = challenged(addr).await;
        let before = server.unauthenticated_closes();
        second
            .write_all(&frame(KIND_CLIENT_PROOF, 0, &recorded))
            .await
            .unwrap();
        second.write_all(&frame(1, 1, b"let me in")).await.unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(second.read(&mut buf).await, Ok(0) | Err(_)),
            "closed"
        );
        wait_until("the replayed proof counted", || {
            server.unauthenticated_closes() == before + 1
        })
        .await;
    });
}

/// A raw connection and the node's challenge nonce on it.
async fn challenged(addr: std::net::SocketAddr) -> (glommio::net::TcpStream, Vec<u8>) {
    let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
    let mut reader = FrameReader::new(1 << 10);
    let challenge = read_frame(&mut stream, &mut reader).await;
    assert_eq!(challenge.kind, KIND_CLIENT_CHALLENGE);
    (stream, challenge.body.to_vec())
}
