//! The client port on loopback: replies matched by id, redirects followed,
//! bad bytes closing only that client's connection.

mod common;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::spawn_local;
use synod_net::{Client, ClientConfig, ClientError, ClientListener, ClientListenerConfig, NodeId};

fn listener() -> ClientListener {
    ClientListener::bind(ClientListenerConfig::new("127.0.0.1:0".parse().unwrap())).unwrap()
}

fn client(addrs: Vec<SocketAddr>) -> Client {
    let mut c = ClientConfig::new(addrs);
    c.connect_timeout = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(5);
    Client::new(c).unwrap()
}

/// Answers every request with its body reversed, kind + 1, once `batch`
/// requests have arrived, newest first (replies out of order).
async fn serve_reversed(listener: Rc<ClientListener>, batch: usize) {
    loop {
        let mut held = Vec::new();
        while held.len() < batch {
            match listener.next().await {
                Some(r) => held.push(r),
                None => return,
            }
        }
        for r in held.into_iter().rev() {
            let mut body = r.body.to_vec();
            body.reverse();
            r.reply(r.kind + 1, &body).await.unwrap();
        }
    }
}

#[test]
fn concurrent_requests_get_their_own_replies() {
    run(|| async {
        let server = Rc::new(listener());
        let _serving = spawn_local(serve_reversed(server.clone(), 8));
        let client = Rc::new(client(vec![server.local_addr()]));
        let requests: Vec<_> = (0..64u8)
            .map(|i| {
                let client = client.clone();
                spawn_local(async move {
                    let reply = client.request(10, &[i, 0, 1]).await.unwrap();
                    assert_eq!((reply.kind, reply.body.as_ref()), (11, &[1, 0, i][..]));
                })
            })
            .collect();
        for r in requests {
            r.await;
        }
        assert_eq!(client.connected_to(), Some(server.local_addr()));
    });
}

#[test]
fn redirects_are_followed() {
    run(|| async {
        let follower = Rc::new(listener());
        let leader = Rc::new(listener());
        let leader_addr = leader.local_addr();
        let _serving = spawn_local(serve_reversed(leader.clone(), 1));
        let f = follower.clone();
        let _redirecting = spawn_local(async move {
            while let Some(r) = f.next().await {
                r.redirect(NodeId(2), leader_addr).await.unwrap();
            }
        });
        let client = client(vec![follower.local_addr()]);
        let reply = client.request(10, b"abc").await.unwrap();
        assert_eq!(reply.body.as_ref(), b"cba");
        assert_eq!(client.connected_to(), Some(leader_addr));
        // Redirect loops end.
        let looping = client_redirecting_to_itself().await;
        assert!(matches!(looping, Err(ClientError::TooManyRedirects(3))));
    });
}

async fn client_redirecting_to_itself() -> Result<synod_net::Reply, ClientError> {
    let server = Rc::new(listener());
    let addr = server.local_addr();
    let s = server.clone();
    let _redirecting = spawn_local(async move {
        while let Some(r) = s.next().await {
            r.redirect(NodeId(1), addr).await.unwrap();
        }
    });
    client(vec![addr]).request(10, b"x").await
}

/// Connections beyond the bound are closed as soon as they are accepted,
/// and counted; those already open keep working, and once one closes a
/// new one is served again.
#[test]
fn connections_beyond_the_bound_are_refused_and_the_rest_served() {
    run(|| async {
        let mut config = ClientListenerConfig::new("127.0.0.1:0".parse().unwrap());
        config.connections_max = 3;
        let server = Rc::new(ClientListener::bind(config).unwrap());
        let _serving = spawn_local(serve_reversed(server.clone(), 1));
        let addr = server.local_addr();
        let mut open = Vec::new();
        for _ in 0..3 {
            let c = client(vec![addr]);
            assert!(c.request(1, b"ab").await.is_ok());
            open.push(c);
        }
        let mut extra = glommio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        assert!(
            matches!(extra.read(&mut buf).await, Ok(0) | Err(_)),
            "closed"
        );
        assert_eq!(server.refused_connections(), 1);
        assert_eq!(
            open[0].request(1, b"cd").await.unwrap().body.as_ref(),
            b"dc"
        );
        drop(open.pop());
        let fresh = client(vec![addr]);
        let served = async {
            loop {
                if let Ok(reply) = fresh.request(1, b"ef").await {
                    return reply;
                }
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        };
        assert_eq!(served.await.body.as_ref(), b"fe");
    });
}

/// A connection that sends nothing is closed once it has been idle for
/// the configured time.
#[test]
fn an_idle_connection_is_closed() {
    run(|| async {
        let mut config = ClientListenerConfig::new("127.0.0.1:0".parse().unwrap());
        config.idle_timeout = Duration::from_millis(200);
        let server = Rc::new(ClientListener::bind(config).unwrap());
        let mut idle = glommio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        assert!(
            matches!(idle.read(&mut buf).await, Ok(0) | Err(_)),
            "closed"
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
    });
}

#[test]
fn bad_bytes_close_only_that_client() {
    run(|| async {
        let server = Rc::new(listener());
        let _serving = spawn_local(serve_reversed(server.clone(), 1));
        let good = client(vec![server.local_addr()]);
        assert!(good.request(1, b"ab").await.is_ok());
        let mut bad_checksum = frame(1, 1, b"hello");
        bad_checksum[33] ^= 1;
        let mut oversized = frame(1, 1, b"x");
        oversized[8..12].copy_from_slice(&(2u32 << 20).to_le_bytes());
        for (i, bytes) in [vec![0xee; 50], bad_checksum, oversized]
            .into_iter()
            .enumerate()
        {
            let mut raw = glommio::net::TcpStream::connect(server.local_addr())
                .await
                .unwrap();
            raw.write_all(&bytes).await.unwrap();
            let mut buf = [0u8; 16];
            // The server closes the connection: read sees the end (or a reset).
            assert!(matches!(raw.read(&mut buf).await, Ok(0) | Err(_)));
            wait_until("counted", || server.bad_frame_closes() == i as u64 + 1).await;
            assert_eq!(good.request(1, b"cd").await.unwrap().body.as_ref(), b"dc");
        }
    });
}

#[test]
fn unreachable_and_timeouts_are_errors() {
    run(|| async {
        let nobody = free_addr();
        let c = client(vec![nobody]);
        assert!(matches!(
            c.request(1, b"").await,
            Err(ClientError::Unreachable(_))
        ));
        let silent = listener();
        let mut config = ClientConfig::new(vec![silent.local_addr()]);
        config.request_timeout = Duration::from_millis(50);
        let c = Client::new(config).unwrap();
        assert!(matches!(
            c.request(1, b"").await,
            Err(ClientError::Timeout(_))
        ));
        assert!(Client::new(ClientConfig::new(vec![])).is_err());
    });
}

#[test]
fn a_lost_connection_fails_outstanding_requests() {
    run(|| async {
        let server = listener();
        let addr = server.local_addr();
        let c = client(vec![addr]);
        let stopping = async {
            let request = server.next().await.unwrap();
            drop(request);
            server.shutdown().await;
        };
        let (result, ()) = futures_lite::future::zip(c.request(1, b"q"), stopping).await;
        assert!(matches!(result, Err(ClientError::ConnectionLost)));
    });
}

#[test]
fn the_port_is_free_for_a_restart_while_the_old_connections_still_close() {
    run(|| async {
        let server = listener();
        let addr = server.local_addr();
        let mut connection = std::net::TcpStream::connect(addr).unwrap();
        connection
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::io::Write::write_all(&mut connection, &frame(10, 1, b"hi")).unwrap();
        let request = server.next().await.expect("the connection was accepted");
        drop(request);
        // Held by a listener: refused.
        assert!(synod_net::check_unclaimed(addr, Duration::ZERO).is_err());
        server.shutdown().await;
        // The listener closed the connection it accepted first (the client
        // reads its end), so that side lingers in TIME_WAIT. A restarted
        // node's check and bind must not take it for a listener.
        // (Read on a thread of its own: glommio closes sockets through its
        // ring, so this executor must keep running.)
        let reader = std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            loop {
                match std::io::Read::read(&mut connection, &mut byte) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    read => break read.map_err(|e| e.to_string()),
                }
            }
        });
        while !reader.is_finished() {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(reader.join().unwrap(), Ok(0), "the listener closed its end");
        synod_net::check_unclaimed(addr, Duration::ZERO).expect("free once the listener is gone");
        let again = ClientListener::bind(ClientListenerConfig::new(addr)).unwrap();
        assert_eq!(again.local_addr(), addr);
    });
}

/// Two nodes started on one client port at the same instant both pass a
/// check that only looks for listeners; the claim lets exactly one through,
/// before either has bound the port, and frees the port when dropped.
#[test]
fn one_process_at_a_time_claims_a_shared_port() {
    let addr = free_addr();
    let racers: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || synod_net::claim_shared_port(addr, Duration::ZERO)))
        .collect();
    let mut claims: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let won = claims.iter().filter(|c| c.is_ok()).count();
    assert_eq!(won, 1, "{claims:?}");
    for lost in claims.iter().filter_map(|c| c.as_ref().err()) {
        assert_eq!(lost.kind(), std::io::ErrorKind::AddrInUse);
    }
    claims.clear();
    synod_net::claim_shared_port(addr, Duration::ZERO).expect("free once the claim is dropped");
}
