//! `synod client`: one command a line on stdin, one JSON object a line on
//! stdout, in order; failures are `{"ok":false,"error":...}`, never a crash.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};
use rand::Rng;
use serde_json::{json, Value};
use synod_client_proto::{
    ClientOp, ClientRequest, ClientResponse, KvOp, KvReply, KIND_CLIENT_REQUEST,
};

use crate::node::machine::PREFIX_KEYS_MAX;
use synod_net::{Client, ClientConfig};

mod watch;

/// Arguments of `synod client`.
#[derive(Debug, Args)]
#[command(after_help = "\
Lines on stdin, one command each; one JSON object a line on stdout, in order:
  append TEXT             append TEXT to the log          {\"ok\":true,\"group\":G,\"index\":N}
  read FROM [COUNT]       read the log from index FROM    {\"ok\":true,\"entries\":[...]}
  put K V                 set K to V (V: the rest of the line)
  get K                   the value of K
  cas K OLD NEW           set K to NEW if it holds OLD
  cas K --absent NEW      set K to NEW if it is absent
  put K V --lease ID      set K to V until lease ID ends
  put K V --ttl MS        set K to V for MS milliseconds (by the leader's clock)
  get --prefix P          the live keys starting with P   {\"ok\":true,\"kvs\":[{\"key\":K,\"value\":V}],\"more\":false}
  delete K                remove K
  lease grant TTL_MS      a lease of TTL_MS                {\"ok\":true,\"lease\":ID,\"ttl_ms\":TTL}
  lease keepalive ID      restart lease ID's lifetime     {\"ok\":true,\"lease\":ID,\"ttl_ms\":TTL}
  lease revoke ID         end lease ID now, deleting its keys
  watch [PREFIX] [--from INDEX] [--count N]
                          one line per change under PREFIX, in log order:
                          {\"ok\":true,\"index\":N,\"op\":\"put\"|\"delete\"|\"expire\",\"key\":K,\"value\":V|null}
  leader                  the node that leads the group
A failure is {\"ok\":false,\"error\":...}; the exit status is 1 if any line failed.")]
pub struct ClientArgs {
    /// Client addresses of the nodes, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "node", value_parser = crate::address::resolve)]
    pub cluster: Vec<SocketAddr>,
    /// Ask only this node, about its own applied log (stale reads allowed).
    #[arg(long, value_parser = crate::address::resolve)]
    pub node: Option<SocketAddr>,
    /// The group (log shard) commands go to.
    #[arg(long, default_value_t = 0)]
    pub group: u32,
    /// Give up on a command after this many seconds of retrying.
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
}

/// Runs `synod client`.
pub fn run(args: ClientArgs) -> ExitCode {
    let result = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(move || async move { serve(args).await })
        .map(|handle| handle.join());
    match result {
        Ok(Ok(Ok(0))) => ExitCode::SUCCESS,
        // Every line was answered; scripts learn from the status that some
        // answers are failures.
        Ok(Ok(Ok(_failed))) => ExitCode::FAILURE,
        Ok(Ok(Err(error))) => {
            eprintln!("synod client: {error}");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("synod client: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("synod client: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One connection per node; the leader is found by asking and by redirects.
struct Session {
    group: u32,
    clients: Vec<(SocketAddr, Client)>,
    /// Which node id answers at which position in `clients`.
    ids: HashMap<u64, usize>,
    target: usize,
    client_id: u64,
    seq: u64,
    timeout: Duration,
}

/// Answers every line of stdin; returns how many answers were failures.
async fn serve(args: ClientArgs) -> Result<usize, String> {
    let addrs = match args.node {
        Some(node) => vec![node],
        None => args.cluster.clone(),
    };
    let mut clients = Vec::new();
    for addr in addrs {
        let mut config = ClientConfig::new(vec![addr]);
        // One unanswered sending may not outlast the whole command's time.
        config.request_timeout = Duration::from_secs(args.timeout_s.clamp(1, 2));
        config.redirects_max = 0;
        clients.push((addr, Client::new(config).map_err(|e| e.to_string())?));
    }
    let mut session = Session {
        group: args.group,
        clients,
        ids: HashMap::new(),
        target: 0,
        client_id: new_client_id(),
        seq: 0,
        timeout: Duration::from_secs(args.timeout_s),
    };
    let stdin = std::io::stdin();
    let mut failed = 0;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(parsed) = watch::parse(&line) {
            let ended = match parsed {
                Ok(request) => watch::run(&mut session, request).await,
                Err(message) => Err(json!({"ok": false, "error": message})),
            };
            if let Err(reply) = ended {
                failed += 1;
                println!("{reply}");
            }
            continue;
        }
        let reply = match parse(&line, &session) {
            Ok(op) => session.execute(op).await,
            Err(message) => json!({"ok": false, "error": message}),
        };
        if reply["ok"] != json!(true) {
            failed += 1;
        }
        println!("{reply}");
    }
    Ok(failed)
}

fn parse(line: &str, session: &Session) -> Result<ClientOp, String> {
    let mut words = line.trim().splitn(2, ' ');
    let verb = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default();
    let args: Vec<&str> = rest.split_whitespace().collect();
    match (verb, args.as_slice()) {
        ("append", _) if !rest.is_empty() => {
            Ok(ClientOp::Append { client: session.client_id, seq: session.seq + 1, data: rest.as_bytes().to_vec() })
        }
        ("read", [from]) => Ok(ClientOp::ReadLog { from: number(from)?, count: 100 }),
        ("read", [from, count]) => Ok(ClientOp::ReadLog { from: number(from)?, count: u32::try_from(number(count)?).map_err(|_| format!("`{count}` is too many to read at once"))? }),
        ("put", [key, .., "--lease", id]) if args.len() > 3 => {
            let value = &args[1..args.len() - 2];
            Ok(kv(session, KvOp::PutLease { key: key.as_bytes().to_vec(), value: value.join(" ").into_bytes(), lease: number(id)? }))
        }
        ("put", [key, .., "--ttl", ms]) if args.len() > 3 => {
            let value = &args[1..args.len() - 2];
            Ok(kv(session, KvOp::Put { key: key.as_bytes().to_vec(), value: value.join(" ").into_bytes(), ttl_ms: Some(number(ms)?) }))
        }
        // The value is the rest of the line: it may hold spaces.
        ("put", [key, _, ..]) => {
            let value = rest.trim_start()[key.len()..].trim_start();
            Ok(kv(session, KvOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec(), ttl_ms: None }))
        }
        ("get", ["--prefix"]) => Ok(ClientOp::GetPrefix { prefix: Vec::new(), limit: PREFIX_KEYS_MAX }),
        ("get", ["--prefix", prefix]) => Ok(ClientOp::GetPrefix { prefix: prefix.as_bytes().to_vec(), limit: PREFIX_KEYS_MAX }),
        ("get", [key]) => Ok(ClientOp::Get { key: key.as_bytes().to_vec() }),
        ("lease", ["grant", ttl]) => Ok(kv(session, KvOp::LeaseGrant { ttl_ms: number(ttl)? })),
        ("lease", ["keepalive", id]) => Ok(kv(session, KvOp::LeaseKeepAlive { id: number(id)? })),
        ("lease", ["revoke", id]) => Ok(kv(session, KvOp::LeaseRevoke { id: number(id)? })),
        ("cas", [key, "--absent", new]) => Ok(kv(
            session,
            KvOp::Cas { key: key.as_bytes().to_vec(), old: None, new: new.as_bytes().to_vec() },
        )),
        ("cas", [key, old, new]) => Ok(kv(
            session,
            KvOp::Cas { key: key.as_bytes().to_vec(), old: Some(old.as_bytes().to_vec()), new: new.as_bytes().to_vec() },
        )),
        ("delete", [key]) => Ok(kv(session, KvOp::Delete { key: key.as_bytes().to_vec() })),
        ("leader", []) => Ok(ClientOp::Status),
        _ => Err(format!("unknown command `{line}`; try append TEXT, read FROM [COUNT], put K V [--lease ID|--ttl MS], get K, get --prefix P, cas K OLD NEW, cas K --absent NEW, delete K, lease grant|keepalive|revoke, watch [PREFIX], leader")),
    }
}

fn kv(session: &Session, op: KvOp) -> ClientOp {
    ClientOp::Kv {
        client: session.client_id,
        seq: session.seq + 1,
        op,
    }
}

/// The sequence number of a session's command; `None` for a read.
fn seq_of(op: &mut ClientOp) -> Option<&mut u64> {
    match op {
        ClientOp::Append { seq, .. }
        | ClientOp::AppendBatch { seq, .. }
        | ClientOp::Kv { seq, .. } => Some(seq),
        ClientOp::Get { .. }
        | ClientOp::ReadLog { .. }
        | ClientOp::Status
        | ClientOp::GetPrefix { .. }
        | ClientOp::Watch { .. } => None,
    }
}

/// A new session id: random, so that no two clients share one.
fn new_client_id() -> u64 {
    rand::rng().random_range(1..u64::MAX / 2)
}

fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a number"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Session {
    /// Sends `op` and renders the answer. A write's sequence number is the
    /// session's next only once it was applied: after a write given up on
    /// or answered otherwise (in doubt, or refused) the session starts
    /// anew. The nodes require one request outstanding per session and
    /// sequence numbers without gaps, and an unanswered write may still be
    /// in flight.
    async fn execute(&mut self, mut op: ClientOp) -> Value {
        let (reply, applied) = self.send(&mut op).await;
        if let Some(seq) = seq_of(&mut op) {
            if applied {
                self.seq = *seq;
            } else {
                self.client_id = new_client_id();
                self.seq = 0;
            }
        }
        reply
    }

    /// Sends `op` until a node answers it or the timeout passes; the
    /// rendered answer, and whether it says `op` was applied. A write is
    /// retried with the same sequence number, so it applies once.
    async fn send(&mut self, op: &mut ClientOp) -> (Value, bool) {
        let wants_leader = !matches!(op, ClientOp::ReadLog { .. });
        let group = self.group;
        let encode = |op: &ClientOp| {
            ClientRequest {
                group,
                op: op.clone(),
            }
            .encode()
        };
        let mut body = encode(op);
        let deadline = Instant::now() + self.timeout;
        let mut last_error = String::from("no node answered");
        let mut sent_before = false;
        while Instant::now() < deadline {
            let (addr, client) = &self.clients[self.target];
            let answer = client.request(KIND_CLIENT_REQUEST, &body).await;
            let first_sending = !std::mem::replace(&mut sent_before, true);
            match answer {
                Ok(reply) => match ClientResponse::decode(&reply.body) {
                    // The session was evicted; sent once, none of it was
                    // applied: again as a new session from `resume_at`.
                    Ok(ClientResponse::SessionExpired { resume_at }) if first_sending => {
                        if let Some(seq) = seq_of(op) {
                            *seq = resume_at;
                        }
                        body = encode(op);
                        sent_before = false;
                    }
                    // Sent before: an earlier sending may have been applied.
                    Ok(ClientResponse::SessionExpired { .. }) => {
                        return (
                            json!({"ok": false, "error": "session expired: the command may or may not have been applied"}),
                            false,
                        );
                    }
                    Ok(ClientResponse::NotLeader { leader }) if wants_leader => {
                        last_error = format!("{addr} does not lead");
                        self.follow(leader).await;
                    }
                    Ok(ClientResponse::Busy) => {
                        glommio::timer::sleep(Duration::from_millis(20)).await
                    }
                    Ok(response) => {
                        let applied = matches!(
                            response,
                            ClientResponse::Appended { .. }
                                | ClientResponse::AppendedBatch { .. }
                                | ClientResponse::Kv { .. }
                        );
                        return (self.render(response), applied);
                    }
                    Err(reason) => {
                        return (
                            json!({"ok": false, "error": format!("bad reply: {reason}")}),
                            false,
                        )
                    }
                },
                Err(error) => {
                    last_error = format!("{addr}: {error}");
                    self.target = (self.target + 1) % self.clients.len();
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        (json!({"ok": false, "error": last_error}), false)
    }

    /// Goes to the hinted leader if its address is known, else the next node.
    async fn follow(&mut self, leader: Option<u64>) {
        if let Some(id) = leader {
            if !self.ids.contains_key(&id) {
                self.learn_ids().await;
            }
            if let Some(position) = self.ids.get(&id) {
                self.target = *position;
                return;
            }
        }
        self.target = (self.target + 1) % self.clients.len();
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }

    async fn learn_ids(&mut self) {
        let body = ClientRequest {
            group: self.group,
            op: ClientOp::Status,
        }
        .encode();
        for (position, (_, client)) in self.clients.iter().enumerate() {
            if let Ok(reply) = client.request(KIND_CLIENT_REQUEST, &body).await {
                if let Ok(ClientResponse::Status { node, .. }) = ClientResponse::decode(&reply.body)
                {
                    self.ids.insert(node, position);
                }
            }
        }
    }

    fn render(&self, response: ClientResponse) -> Value {
        match response {
            ClientResponse::Appended { index } => {
                json!({"ok": true, "group": self.group, "index": index})
            }
            ClientResponse::AppendedBatch { indexes } => {
                json!({"ok": true, "group": self.group, "indexes": indexes})
            }
            ClientResponse::Kv { index, reply } => match reply {
                KvReply::Done(previous) => {
                    json!({"ok": true, "index": index, "previous": previous.as_deref().map(text)})
                }
                KvReply::Cas { swapped, current } => {
                    json!({"ok": true, "index": index, "swapped": swapped, "value": current.as_deref().map(text)})
                }
                KvReply::Invalid(reason) => json!({"ok": false, "error": reason}),
                KvReply::Value(value) => {
                    json!({"ok": true, "value": value.as_deref().map(text)})
                }
                KvReply::Lease { id, ttl_ms } => {
                    json!({"ok": true, "index": index, "lease": id, "ttl_ms": ttl_ms})
                }
                KvReply::NoLease { id } => {
                    json!({"ok": false, "error": format!("no lease {id}: never granted, expired or revoked")})
                }
            },
            ClientResponse::Pairs { pairs, more } => {
                let kvs: Vec<Value> = pairs
                    .iter()
                    .map(|p| json!({"key": text(&p.key), "value": text(&p.value)}))
                    .collect();
                json!({"ok": true, "kvs": kvs, "more": more})
            }
            ClientResponse::Events { events, next } => {
                json!({"ok": true, "events": events.len(), "next": next})
            }
            ClientResponse::Compacted { first } => {
                json!({"ok": false, "error": format!("compacted before index {first}"), "first": first})
            }
            ClientResponse::Value(value) => {
                json!({"ok": true, "value": value.as_deref().map(text)})
            }
            ClientResponse::Entries(entries) => {
                let entries: Vec<Value> = entries
                    .iter()
                    .map(|e| json!({"index": e.index, "data": text(&e.data)}))
                    .collect();
                json!({"ok": true, "entries": entries})
            }
            ClientResponse::Status { leader, .. } => match leader {
                Some(id) => json!({"ok": true, "leader": id}),
                None => json!({"ok": false, "error": "no leader known yet"}),
            },
            ClientResponse::NotLeader { leader } => {
                json!({"ok": false, "error": "not the leader", "leader": leader})
            }
            ClientResponse::Busy => json!({"ok": false, "error": "busy"}),
            // Handled by `send`, which never renders it.
            ClientResponse::SessionExpired { .. } => {
                json!({"ok": false, "error": "session expired"})
            }
            ClientResponse::Error(reason) => json!({"ok": false, "error": reason}),
        }
    }
}
