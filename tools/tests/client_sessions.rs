//! `synod client`'s sessions against a scripted node: which `(client, seq)`
//! each write goes out with after an answer that applied it, one that did
//! not, and none at all. The nodes' exactly-once rests on these numbers
//! (see `protocol::sessions`), which a real cluster would not show.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;

use serde_json::Value;
use support::client;
use synod_client_proto::{ClientOp, ClientRequest, ClientResponse, KIND_CLIENT_REPLY};
use synod_net::{ClientListener, ClientListenerConfig};

#[path = "support/client.rs"]
mod support;

/// One write as the scripted node received it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    client: u64,
    seq: u64,
    data: String,
}

/// Answers each append by its text: `refuse` is refused, `ignore` never
/// answered, `expire` answered `SessionExpired { resume_at: 50 }` on its
/// first sending; any other is applied at the next index. Every write
/// received goes to the returned channel.
fn scripted_node() -> (SocketAddr, mpsc::Receiver<Sent>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (sent_tx, sent_rx) = mpsc::channel();
    thread::spawn(move || {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(move || async move {
                let listener =
                    ClientListener::bind(ClientListenerConfig::new("127.0.0.1:0".parse().unwrap()))
                        .unwrap();
                addr_tx.send(listener.local_addr()).unwrap();
                let (mut index, mut expired_once) = (0, false);
                while let Some(request) = listener.next().await {
                    let Ok(ClientRequest { op, .. }) = ClientRequest::decode(&request.body) else {
                        continue;
                    };
                    let response = match op {
                        ClientOp::Append { client, seq, data } => {
                            let data = String::from_utf8(data).unwrap();
                            let response = match data.as_str() {
                                "refuse" => Some(ClientResponse::Error("refused".into())),
                                "ignore" => None,
                                "expire" if !expired_once => {
                                    expired_once = true;
                                    Some(ClientResponse::SessionExpired { resume_at: 50 })
                                }
                                _ => {
                                    index += 1;
                                    Some(ClientResponse::Appended { index })
                                }
                            };
                            let _ = sent_tx.send(Sent { client, seq, data });
                            response
                        }
                        _ => Some(ClientResponse::Error("not scripted".into())),
                    };
                    if let Some(response) = response {
                        let _ = request.reply(KIND_CLIENT_REPLY, &response.encode()).await;
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
    (addr_rx.recv().unwrap(), sent_rx)
}

/// Runs `synod client` against `addr` with one append per word of `texts`.
fn appends(addr: SocketAddr, texts: &[&str]) -> Vec<Value> {
    let lines: Vec<String> = texts.iter().map(|t| format!("append {t}")).collect();
    client(&["--node", &addr.to_string(), "--timeout", "1"], &lines)
}

/// The last sending of each write, in the order first sent.
fn last_sendings(sent: &mpsc::Receiver<Sent>) -> Vec<Sent> {
    let mut out: Vec<Sent> = Vec::new();
    for s in sent.try_iter() {
        match out.last_mut() {
            Some(last) if last.data == s.data => *last = s,
            _ => out.push(s),
        }
    }
    out
}

#[test]
fn a_write_takes_the_next_sequence_number_only_once_applied() {
    let (addr, sent) = scripted_node();
    let replies = appends(
        addr,
        &["a", "b", "refuse", "c", "ignore", "d", "e", "expire", "f"],
    );
    let ok: Vec<bool> = replies.iter().map(|r| r["ok"] == true).collect();
    assert_eq!(
        ok,
        [true, true, false, true, false, true, true, true, true],
        "{replies:?}"
    );
    let sent = last_sendings(&sent);
    let of = |data: &str| sent.iter().find(|s| s.data == data).unwrap().clone();
    let (a, b, refused, c) = (of("a"), of("b"), of("refuse"), of("c"));
    assert_eq!((a.seq, b.seq, b.client), (1, 2, a.client), "{sent:?}");
    // Refused: not applied, so its number is not the session's; whatever
    // follows must not skip one (a new session starts at 1).
    assert_eq!(refused.seq, 3, "{sent:?}");
    assert_ne!(c.client, a.client, "{sent:?}");
    assert_eq!(c.seq, 1, "{sent:?}");
    // Never answered: it may yet apply, so the session cannot go on after it.
    let (ignored, d, e) = (of("ignore"), of("d"), of("e"));
    assert_eq!((ignored.client, ignored.seq), (c.client, 2), "{sent:?}");
    assert_ne!(d.client, c.client, "{sent:?}");
    assert_eq!((d.seq, e.client, e.seq), (1, d.client, 2), "{sent:?}");
    // Expired on its first sending: again from `resume_at`, and on from there.
    let (expired, f) = (of("expire"), of("f"));
    assert_eq!((expired.client, expired.seq), (d.client, 50), "{sent:?}");
    assert_eq!((f.client, f.seq), (d.client, 51), "{sent:?}");
}
