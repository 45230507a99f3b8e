//! `synod client`: one command a line on stdin, one JSON object a line on
//! stdout, in order; failures are `{"ok":false,"error":...}`, never a crash.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use serde_json::{json, Value};
use synod_client_proto::{ClientOp, ClientResponse, KvOp, KvReply};

use crate::node::machine::PREFIX_KEYS_MAX;
use crate::wire::{Answer, Connection, WireError};
use synod_net::Secret;

mod leader;
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
  leader                  the node leading now           {\"ok\":true,\"leader\":ID,\"addr\":A}
  leader transfer ID      hand leadership to node ID     {\"ok\":true,\"leader\":ID,\"addr\":A}
Words are split as a shell splits them: put \"my key\" 'hello world'. An
unquoted value is the rest of the line as typed.
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
    #[arg(long, alias = "timeout-s", value_name = "SECONDS", default_value_t = 5)]
    pub timeout: u64,
    /// File holding the nodes' client secret, for nodes started with
    /// `--client-secret-file`.
    #[arg(long)]
    pub client_secret_file: Option<std::path::PathBuf>,
}

/// Runs `synod client`.
pub fn run(args: ClientArgs) -> ExitCode {
    match serve(args) {
        Ok(0) => ExitCode::SUCCESS,
        // Every line was answered; scripts learn from the status that some
        // answers are failures.
        Ok(_failed) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("synod client: reading stdin: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The longest one sending waits, so that a dead node is left in time to
/// try the others before the command's timeout.
const TRY_LIMIT: Duration = Duration::from_secs(2);

/// What a node last told this client, to say why a command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Nothing,
    Unreachable,
    NoLeader,
    Answered,
}

/// One connection per node; the leader is found by asking and by redirects.
struct Session {
    group: u32,
    /// The nodes' client secret, if they ask for one.
    secret: Option<Secret>,
    conns: Vec<Connection>,
    heard: Vec<Heard>,
    /// Which node id answers at which position in `conns`.
    ids: HashMap<u64, usize>,
    target: usize,
    client_id: u64,
    seq: u64,
    timeout: Duration,
}

/// Sends one `op` to the cluster at `addrs` (following the leader) and
/// renders its answer, as `synod client` would for one line.
pub fn one_op(
    addrs: Vec<SocketAddr>,
    group: u32,
    secret: Option<Secret>,
    timeout: Duration,
    op: ClientOp,
) -> Value {
    Session::new(addrs, group, secret, timeout).execute(op)
}

/// Answers every line of stdin; returns how many answers were failures.
fn serve(args: ClientArgs) -> Result<usize, std::io::Error> {
    let addrs = match args.node {
        Some(node) => vec![node],
        None => args.cluster.clone(),
    };
    let secret = crate::wire::client_secret(args.client_secret_file.clone())?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut session = Session::new(addrs, args.group, secret, timeout);
    let stdin = std::io::stdin();
    let mut failed = 0;
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(parsed) = watch::parse(&line) {
            let ended = match parsed {
                Ok(request) => watch::run(&mut session, request),
                Err(message) => Err(json!({"ok": false, "error": message})),
            };
            if let Err(reply) = ended {
                failed += 1;
                println!("{reply}");
            }
            continue;
        }
        let reply = match parse(&line, &session) {
            Ok(op @ ClientOp::GetPrefix { .. }) => session.every_page(op),
            Ok(ClientOp::Status) => leader::find(&mut session),
            Ok(op) => session.execute(op),
            Err(message) => json!({"ok": false, "error": message}),
        };
        if reply["ok"] != json!(true) {
            failed += 1;
        }
        println!("{reply}");
    }
    Ok(failed)
}

/// The words of a line: split as a shell would when it holds quotes or
/// backslashes, else at whitespace; and the text after the first `skip`
/// words, as typed (unquoted) or as the words joined by one space (quoted).
fn words(line: &str, skip: usize) -> Result<(Vec<String>, String), String> {
    if line.contains(['"', '\'', '\\']) {
        let words = shell_words::split(line).map_err(|e| format!("{e}: `{line}`"))?;
        let rest = words.get(skip..).unwrap_or_default().join(" ");
        return Ok((words, rest));
    }
    let words: Vec<String> = line.split_whitespace().map(String::from).collect();
    let mut rest = line.trim_start();
    for _ in 0..skip {
        rest = rest
            .trim_start_matches(|c: char| !c.is_whitespace())
            .trim_start();
    }
    Ok((words, rest.to_string()))
}

fn parse(line: &str, session: &Session) -> Result<ClientOp, String> {
    let (all, _) = words(line, 0)?;
    let verb = all.first().map(String::as_str).unwrap_or_default();
    let args: Vec<&str> = all.iter().skip(1).map(String::as_str).collect();
    let bytes = |s: &str| s.as_bytes().to_vec();
    match (verb, args.as_slice()) {
        ("append", [_, ..]) => {
            let (_, text) = words(line, 1)?;
            Ok(ClientOp::Append { client: session.client_id, seq: session.seq + 1, data: text.into_bytes() })
        }
        ("read", [from]) => Ok(ClientOp::ReadLog { from: number(from)?, count: 100 }),
        ("read", [from, count]) => Ok(ClientOp::ReadLog { from: number(from)?, count: u32::try_from(number(count)?).map_err(|_| format!("`{count}` is too many to read at once"))? }),
        ("put", [key, .., "--lease", id]) if args.len() > 3 => {
            let value = &args[1..args.len() - 2];
            Ok(kv(session, KvOp::PutLease { key: bytes(key), value: value.join(" ").into_bytes(), lease: number(id)? }))
        }
        ("put", [key, .., "--ttl", ms]) if args.len() > 3 => {
            let value = &args[1..args.len() - 2];
            Ok(kv(session, KvOp::Put { key: bytes(key), value: value.join(" ").into_bytes(), ttl_ms: Some(number(ms)?) }))
        }
        // The value is the rest of the line: it may hold spaces.
        ("put", [key, _, ..]) => {
            let (_, value) = words(line, 2)?;
            Ok(kv(session, KvOp::Put { key: bytes(key), value: value.into_bytes(), ttl_ms: None }))
        }
        ("get", ["--prefix"]) => Ok(ClientOp::GetPrefix { prefix: Vec::new(), after: None, limit: PREFIX_KEYS_MAX }),
        ("get", ["--prefix", prefix]) => Ok(ClientOp::GetPrefix { prefix: bytes(prefix), after: None, limit: PREFIX_KEYS_MAX }),
        ("get", [key]) => Ok(ClientOp::Get { key: bytes(key) }),
        ("lease", ["grant", ttl]) => Ok(kv(session, KvOp::LeaseGrant { ttl_ms: number(ttl)? })),
        ("lease", ["keepalive", id]) => Ok(kv(session, KvOp::LeaseKeepAlive { id: number(id)? })),
        ("lease", ["revoke", id]) => Ok(kv(session, KvOp::LeaseRevoke { id: number(id)? })),
        ("cas", [key, "--absent", new]) => Ok(kv(session, KvOp::Cas { key: bytes(key), old: None, new: bytes(new) })),
        ("cas", [key, old, new]) => Ok(kv(session, KvOp::Cas { key: bytes(key), old: Some(bytes(old)), new: bytes(new) })),
        ("delete", [key]) => Ok(kv(session, KvOp::Delete { key: bytes(key) })),
        ("leader", []) => Ok(ClientOp::Status),
        ("leader", ["transfer", to]) => Ok(ClientOp::TransferLeader { to: number(to)? }),
        _ => Err(format!("unknown command `{line}`; try append TEXT, read FROM [COUNT], put K V [--lease ID|--ttl MS], get K, get --prefix P, cas K OLD NEW, cas K --absent NEW, delete K, lease grant|keepalive|revoke, watch [PREFIX], leader, leader transfer ID")),
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
        | ClientOp::NodeStatus
        | ClientOp::TransferLeader { .. }
        | ClientOp::Members
        | ClientOp::AddMember { .. }
        | ClientOp::RemoveMember { .. }
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
    fn new(
        addrs: Vec<SocketAddr>,
        group: u32,
        secret: Option<Secret>,
        timeout: Duration,
    ) -> Session {
        Session {
            group,
            heard: vec![Heard::Nothing; addrs.len()],
            conns: addrs
                .into_iter()
                .map(|addr| Connection::new(addr, secret.clone()))
                .collect(),
            secret,
            ids: HashMap::new(),
            target: 0,
            client_id: new_client_id(),
            seq: 0,
            timeout,
        }
    }

    /// A prefix read page after page (each one read linearizably), as one
    /// answer; `more` is always false.
    fn every_page(&mut self, mut op: ClientOp) -> Value {
        let mut kvs = Vec::new();
        loop {
            let page = self.execute(op.clone());
            if page["ok"] != json!(true) {
                return page;
            }
            let got = page["kvs"].as_array().cloned().unwrap_or_default();
            let last = got
                .last()
                .and_then(|kv| kv["key"].as_str())
                .map(str::to_string);
            kvs.extend(got);
            match (page["more"] == json!(true), last, &mut op) {
                (true, Some(last), ClientOp::GetPrefix { after, .. }) => {
                    *after = Some(last.into_bytes())
                }
                _ => return json!({"ok": true, "kvs": kvs, "more": false}),
            }
        }
    }

    /// Sends `op` and renders the answer. A write's sequence number is the
    /// session's next only once it was applied: after a write given up on
    /// or answered otherwise (in doubt, or refused) the session starts
    /// anew. The nodes require one request outstanding per session and
    /// sequence numbers without gaps, and an unanswered write may still be
    /// in flight.
    fn execute(&mut self, mut op: ClientOp) -> Value {
        let (reply, applied) = self.send(&mut op);
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
    fn send(&mut self, op: &mut ClientOp) -> (Value, bool) {
        let wants_leader = !matches!(op, ClientOp::ReadLog { .. });
        let deadline = Instant::now() + self.timeout;
        self.heard.fill(Heard::Nothing);
        let mut last_error = String::from("no node answered");
        let mut sent_before = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (
                    json!({"ok": false, "error": self.why_failed(&last_error)}),
                    false,
                );
            }
            let target = self.target;
            // A membership change is answered once done, which takes the
            // leader longer than any other answer; it bounds its own wait.
            let changes = matches!(
                op,
                ClientOp::AddMember { .. } | ClientOp::RemoveMember { .. }
            );
            let limit = if changes { left } else { left.min(TRY_LIMIT) };
            let answer = self.conns[target].ask(self.group, op.clone(), limit);
            let first_sending = !std::mem::replace(&mut sent_before, true);
            let addr = self.conns[target].addr();
            match answer {
                Ok(Answer::Reply(reply)) => {
                    self.heard[target] = Heard::Answered;
                    match reply {
                        // The session was evicted; sent once, none of it
                        // was applied: again as a new session from
                        // `resume_at`.
                        ClientResponse::SessionExpired { resume_at } if first_sending => {
                            if let Some(seq) = seq_of(op) {
                                *seq = resume_at;
                            }
                            sent_before = false;
                        }
                        // Sent before: an earlier sending may have been applied.
                        ClientResponse::SessionExpired { .. } => {
                            return (
                                json!({"ok": false, "error": "session expired: the command may or may not have been applied"}),
                                false,
                            );
                        }
                        ClientResponse::NotLeader { leader } if wants_leader => {
                            if leader.is_none() {
                                self.heard[target] = Heard::NoLeader;
                            }
                            last_error = format!("{addr} does not lead");
                            self.follow(leader);
                        }
                        ClientResponse::Busy => std::thread::sleep(Duration::from_millis(20)),
                        response => {
                            let applied = matches!(
                                response,
                                ClientResponse::Appended { .. }
                                    | ClientResponse::AppendedBatch { .. }
                                    | ClientResponse::Kv { .. }
                            );
                            return (self.render(response), applied);
                        }
                    }
                }
                Ok(Answer::Redirect { node, addr }) => self.redirected(node, addr),
                Err(error) => match self.failed_try(target, error) {
                    Ok(error) => last_error = error,
                    Err(fatal) => return (fatal, false),
                },
            }
        }
    }

    /// Goes to the node a redirect names, learning its id.
    fn redirected(&mut self, node: u64, addr: SocketAddr) {
        let position = self.position_of(addr);
        self.ids.insert(node, position);
        self.target = position;
    }

    /// A try at node `target` failed with `error`. One no other node would
    /// answer differently (a bad reply, a refusal, authentication) ends
    /// the line: its JSON. Otherwise what was heard is noted, the next
    /// node is tried after a pause, and the error is kept as the last one.
    fn failed_try(&mut self, target: usize, error: WireError) -> Result<String, Value> {
        if matches!(
            error,
            WireError::BadReply { .. }
                | WireError::Refused { .. }
                | WireError::SecretRequired(_)
                | WireError::NoChallenge(_)
        ) {
            return Err(json!({"ok": false, "error": error.to_string()}));
        }
        self.heard[target] = if error.unreachable() {
            Heard::Unreachable
        } else {
            Heard::Answered
        };
        self.target = (target + 1) % self.conns.len();
        std::thread::sleep(Duration::from_millis(50));
        Ok(error.to_string())
    }

    /// Why a command got no answer in time, from what the nodes said: none
    /// reachable; fewer than a majority reachable and none leading (no
    /// quorum); or the last error.
    fn why_failed(&self, last_error: &str) -> String {
        let total = self.heard.len();
        let unreachable = self
            .heard
            .iter()
            .filter(|h| **h == Heard::Unreachable)
            .count();
        let leaderless = self.heard.iter().filter(|h| **h == Heard::NoLeader).count();
        let timeout = self.timeout;
        if unreachable == total {
            let addrs: Vec<String> = self.conns.iter().map(|c| c.addr().to_string()).collect();
            format!(
                "cluster unreachable: no connection to {} within {timeout:?} (last: {last_error})",
                addrs.join(", ")
            )
        } else if leaderless > 0 && total - unreachable <= total / 2 {
            format!(
                "no quorum: {} of {total} nodes reachable, and none leads (last: {last_error})",
                total - unreachable
            )
        } else if leaderless > 0 {
            format!("no leader within {timeout:?} (last: {last_error})")
        } else {
            last_error.to_string()
        }
    }

    /// The position of the node at `addr`, added if it is new.
    fn position_of(&mut self, addr: SocketAddr) -> usize {
        if let Some(position) = self.conns.iter().position(|c| c.addr() == addr) {
            return position;
        }
        self.conns.push(Connection::new(addr, self.secret.clone()));
        self.heard.push(Heard::Nothing);
        self.conns.len() - 1
    }

    /// Goes to the hinted leader if its address is known, else the next node.
    fn follow(&mut self, leader: Option<u64>) {
        if let Some(id) = leader {
            if !self.ids.contains_key(&id) {
                self.learn_ids();
            }
            if let Some(position) = self.ids.get(&id) {
                self.target = *position;
                return;
            }
        }
        self.target = (self.target + 1) % self.conns.len();
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Asks each node its id.
    fn learn_ids(&mut self) {
        for (position, conn) in self.conns.iter_mut().enumerate() {
            if let Ok(Answer::Reply(ClientResponse::Status { node, .. })) =
                conn.ask(self.group, ClientOp::Status, TRY_LIMIT)
            {
                self.ids.insert(node, position);
            }
        }
    }

    /// The client address of node `id`, if one of the known nodes is it.
    fn addr_of(&mut self, id: u64) -> Option<SocketAddr> {
        if !self.ids.contains_key(&id) {
            self.learn_ids();
        }
        self.ids.get(&id).map(|p| self.conns[*p].addr())
    }

    fn render(&mut self, response: ClientResponse) -> Value {
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
                KvReply::Revoked => json!({"ok": true, "index": index}),
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
            ClientResponse::Events { events, next, .. } => {
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
                Some(id) => {
                    let addr = self.addr_of(id).map(|a| a.to_string());
                    json!({"ok": true, "leader": id, "addr": addr})
                }
                None => json!({"ok": false, "error": "no leader known yet"}),
            },
            ClientResponse::NodeStatus(status) => json!({"ok": true, "leader": status.leader}),
            ClientResponse::Members { leader, members } => {
                let members: Vec<Value> = members
                    .iter()
                    .map(|m| {
                        let role = if m.voter { "voter" } else { "learner" };
                        json!({"id": m.id, "addr": m.addr, "role": role})
                    })
                    .collect();
                json!({"ok": true, "group": self.group, "leader": leader, "members": members})
            }
            ClientResponse::LeaderMoved { leader } => {
                let addr = self.addr_of(leader).map(|a| a.to_string());
                json!({"ok": true, "leader": leader, "addr": addr})
            }
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
