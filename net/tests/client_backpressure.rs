//! The client port against clients that do not read their replies: the
//! port stops reading their requests, holds its reply memory to the
//! budget, closes a connection whose replies stall, and keeps serving the
//! others; and a reply too large to send is refused to the client, not
//! dropped.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use glommio::spawn_local;
use socket2::{Domain, Socket, Type};
use synod_net::{Client, ClientConfig, ClientError, ClientListener, ClientListenerConfig};

const REPLY_BYTES: usize = 64 << 10;

/// Answers every request at once, each in a task of its own (as the
/// engine answers many at a time), with `reply_bytes` bytes.
async fn serve(
    listener: Rc<ClientListener>,
    reply_bytes: usize,
    received: Rc<std::cell::Cell<u64>>,
) {
    while let Some(request) = listener.next().await {
        received.set(received.get() + 1);
        spawn_local(async move {
            let _ = request.reply(1, &vec![7; reply_bytes]).await;
        })
        .detach();
    }
}

/// A client with a tiny receive window that sends `requests` requests and
/// does not read for 1.5 s; then it reads to the end, and reports when it
/// saw the node close the connection.
fn flood_without_reading(addr: SocketAddr, requests: u64) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        let started = Instant::now();
        for seq in 0..requests {
            if stream.write_all(&frame(1, seq, b"give me a lot")).is_err() {
                break;
            }
        }
        // Not reading for well past the stall timeout; then read what the
        // node sent before it closed the connection, up to the close.
        std::thread::sleep(Duration::from_millis(1_500));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut sink = vec![0; 1 << 16];
        loop {
            match std::io::Read::read(&mut stream, &mut sink) {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
}

#[test]
fn a_client_that_never_reads_is_not_read_is_held_to_the_budget_and_is_closed() {
    run(|| async {
        let mut config = ClientListenerConfig::new("127.0.0.1:0".parse().unwrap());
        config.frame_body_bytes_max = 128 << 10;
        config.reply_queue_bytes_max = 256 << 10;
        config.reply_budget_bytes = 1 << 20;
        config.requests_per_connection_max = 8;
        config.reply_stall_timeout = Duration::from_millis(500);
        let budget = config.reply_budget_bytes;
        let server = Rc::new(ClientListener::bind(config).unwrap());
        let received = Rc::new(std::cell::Cell::new(0));
        let _serving = spawn_local(serve(server.clone(), REPLY_BYTES, received.clone()));
        let flood = flood_without_reading(server.local_addr(), 1_000);

        // While it stalls: the port's reply memory stays within the budget,
        // most requests stay unread, and another client is served.
        wait_until("the stalled queue filled", || {
            server.reply_bytes() >= 256 << 10
        })
        .await;
        let mut most = 0;
        let watch_until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < watch_until {
            most = most.max(server.reply_bytes());
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(most <= budget, "{most} bytes of replies held");
        assert!(received.get() < 100, "{} requests read", received.get());
        let mut good = ClientConfig::new(vec![server.local_addr()]);
        good.request_timeout = Duration::from_secs(5);
        let good = Client::new(good).unwrap();
        let reply = good.request(1, b"hi").await.unwrap();
        assert_eq!(reply.body.len(), REPLY_BYTES);

        // The stall closes the connection, and its memory goes back.
        // Joined without blocking the executor, which must go on serving.
        while !flood.is_finished() {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        let closed_after = flood.join().unwrap();
        assert!(
            closed_after < Duration::from_secs(10),
            "{closed_after:?}: not closed"
        );
        wait_until("reply memory returned", || server.reply_bytes() == 0).await;
    });
}

#[test]
fn a_reply_larger_than_a_frame_is_refused_to_the_client() {
    run(|| async {
        let mut config = ClientListenerConfig::new("127.0.0.1:0".parse().unwrap());
        config.frame_body_bytes_max = 64 << 10;
        config.reply_queue_bytes_max = 256 << 10;
        let server = Rc::new(ClientListener::bind(config).unwrap());
        let received = Rc::new(std::cell::Cell::new(0));
        let _serving = spawn_local(serve(server.clone(), 100 << 10, received));
        let client = Client::new(ClientConfig::new(vec![server.local_addr()])).unwrap();
        for _ in 0..2 {
            match client.request(1, b"too much").await {
                Err(ClientError::Refused(reason)) => assert!(reason.contains("102400"), "{reason}"),
                other => panic!("not refused: {other:?}"),
            }
        }
    });
}

/// Enough clients that stop reading to hold the whole reply budget stall
/// every connection's reads on the port, but only until their replies have
/// gone the stall timeout without moving: they are closed, and a client
/// that reads is served.
#[test]
fn clients_holding_the_whole_budget_are_closed_and_the_port_serves_again() {
    run(|| async {
        let mut config = ClientListenerConfig::new("127.0.0.1:0".parse().unwrap());
        config.frame_body_bytes_max = 128 << 10;
        config.reply_queue_bytes_max = 256 << 10;
        config.reply_budget_bytes = 1 << 20;
        config.requests_per_connection_max = 8;
        config.reply_stall_timeout = Duration::from_millis(500);
        let server = Rc::new(ClientListener::bind(config).unwrap());
        let received = Rc::new(std::cell::Cell::new(0));
        let _serving = spawn_local(serve(server.clone(), REPLY_BYTES, received));
        let floods: Vec<_> = (0..6)
            .map(|_| flood_without_reading(server.local_addr(), 200))
            .collect();
        wait_until("the budget is held", || server.reply_bytes() >= 1 << 20).await;
        let mut good = ClientConfig::new(vec![server.local_addr()]);
        good.request_timeout = Duration::from_secs(10);
        let good = Client::new(good).unwrap();
        // Served at all: the port's reads were frozen until the stalled
        // connections were closed.
        let reply = good.request(1, b"hi").await.unwrap();
        assert_eq!(reply.body.len(), REPLY_BYTES);
        for flood in floods {
            while !flood.is_finished() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                flood.join().unwrap() < Duration::from_secs(10),
                "not closed"
            );
        }
    });
}
