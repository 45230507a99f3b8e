//! The clients of a chaos run: each is a `synod client` child process (the
//! client library with leader redirects and session retries) driven over
//! its line protocol, one operation at a time, every call and reply stamped
//! with the run's clock.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::history::{Call, Op, ReplicaLog, Ret};

/// A `synod client` child process; its replies arrive on a thread, so a
/// client that hangs cannot hang the run.
pub struct LineClient {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
}

/// What came back for one line.
pub enum Answer {
    /// The JSON reply.
    Reply(Value),
    /// Nothing within the wait: the client hangs.
    Hung,
    /// The client process is gone or wrote something that is not JSON.
    Gone,
}

impl LineClient {
    /// Starts `exe client ARGS...`.
    pub fn start(exe: &Path, args: &[String]) -> Result<LineClient, String> {
        let mut child = Command::new(exe)
            .arg("client")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting a client: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(LineClient {
            child,
            stdin,
            replies,
        })
    }

    /// Sends one line and waits up to `wait` for its JSON reply.
    pub fn ask(&mut self, line: &str, wait: Duration) -> Answer {
        if writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            return Answer::Gone;
        }
        match self.replies.recv_timeout(wait) {
            Ok(reply) => serde_json::from_str(&reply).map_or(Answer::Gone, Answer::Reply),
            Err(RecvTimeoutError::Timeout) => Answer::Hung,
            Err(RecvTimeoutError::Disconnected) => Answer::Gone,
        }
    }

    /// Sends one line and waits up to a minute for its reply; `None` if
    /// none came.
    pub fn call(&mut self, line: &str) -> Option<Value> {
        match self.ask(line, Duration::from_secs(60)) {
            Answer::Reply(value) => Some(value),
            Answer::Hung | Answer::Gone => None,
        }
    }
}

impl Drop for LineClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the workload needs to run.
#[derive(Clone)]
pub struct Workload {
    /// The `synod` binary.
    pub exe: PathBuf,
    /// The nodes' client addresses.
    pub cluster: Vec<SocketAddr>,
    /// KV keys to spread operations over.
    pub keys: u32,
    /// The client's per-operation give-up time.
    pub timeout_s: u64,
    /// The run's clock.
    pub epoch: Instant,
    /// Set to stop the clients after their current operation.
    pub stop: Arc<AtomicBool>,
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientRun {
    /// Its operations.
    pub ops: Vec<Op>,
    /// Each time its `synod client` process hung and was replaced.
    pub hung: Vec<String>,
}

/// Microseconds since `epoch`.
pub fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

impl Workload {
    /// Starts `clients` clients, each seeded from `seed`; join them for
    /// their operations.
    pub fn spawn(&self, clients: u32, seed: u64) -> Vec<JoinHandle<Result<ClientRun, String>>> {
        let last_values: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        (1..=clients)
            .map(|client| {
                let (workload, values) = (self.clone(), last_values.clone());
                std::thread::spawn(move || workload.run_client(client, seed, &values))
            })
            .collect()
    }

    fn cluster_arg(&self) -> String {
        let list: Vec<String> = self.cluster.iter().map(ToString::to_string).collect();
        format!("--cluster={}", list.join(","))
    }

    fn run_client(
        &self,
        client: u32,
        seed: u64,
        values: &Mutex<HashMap<String, String>>,
    ) -> Result<ClientRun, String> {
        let args = [self.cluster_arg(), format!("--timeout={}", self.timeout_s)];
        // The client gives up by itself after its timeout; past twice that
        // plus slack it hangs, and is replaced.
        let wait = Duration::from_secs(2 * self.timeout_s + 10);
        let mut line_client = LineClient::start(&self.exe, &args)?;
        let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(client) << 32));
        let mut run = ClientRun::default();
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            let call = self.pick(&mut rng, client, n, values);
            let invoke_us = micros(self.epoch);
            let answer = line_client.ask(&line(&call), wait);
            let complete_us = micros(self.epoch);
            let reply = match answer {
                Answer::Reply(reply) => reply,
                Answer::Hung => {
                    run.hung.push(format!(
                        "client {client} hung on `{}` at {invoke_us} us; replaced",
                        line(&call)
                    ));
                    run.ops.push(Op::unknown(client, invoke_us, call));
                    line_client = LineClient::start(&self.exe, &args)?;
                    continue;
                }
                Answer::Gone => return Err(format!("client {client} exited")),
            };
            let op = match parse_ret(&call, &reply) {
                Some(ret) => {
                    remember(values, &call, &ret);
                    Op::ok(client, invoke_us, complete_us, call, ret)
                }
                None => Op::unknown(client, invoke_us, call),
            };
            run.ops.push(op);
        }
        Ok(run)
    }

    fn pick(
        &self,
        rng: &mut StdRng,
        client: u32,
        n: u64,
        values: &Mutex<HashMap<String, String>>,
    ) -> Call {
        let key = format!("k{}", rng.random_range(0..self.keys.max(1)));
        let value = format!("v{client}.{n}");
        match rng.random_range(0..100) {
            0..40 => Call::Append {
                data: format!("a:{client}:{n}"),
            },
            40..60 => Call::Put { key, value },
            60..85 => Call::Get { key },
            _ => {
                let old = values.lock().expect("values").get(&key).cloned();
                Call::Cas {
                    key,
                    old: old.unwrap_or_else(|| "none".into()),
                    new: value,
                }
            }
        }
    }
}

/// The client line for a call.
fn line(call: &Call) -> String {
    match call {
        Call::Append { data } => format!("append {data}"),
        Call::Put { key, value } => format!("put {key} {value}"),
        Call::Get { key } => format!("get {key}"),
        Call::Cas { key, old, new } => format!("cas {key} {old} {new}"),
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

/// The result of an acknowledged call; `None` for a failure, whose outcome
/// is unknown.
fn parse_ret(call: &Call, reply: &Value) -> Option<Ret> {
    if reply["ok"] != Value::Bool(true) {
        return None;
    }
    Some(match call {
        Call::Append { .. } => Ret::Appended {
            index: reply["index"].as_u64()?,
        },
        Call::Put { .. } => Ret::Put {
            previous: text(&reply["previous"]),
        },
        Call::Get { .. } => Ret::Get {
            value: text(&reply["value"]),
        },
        Call::Cas { .. } => Ret::Cas {
            swapped: reply["swapped"].as_bool()?,
            value: text(&reply["value"]),
        },
    })
}

/// Keeps the latest value seen per key, so that some cas calls succeed.
fn remember(values: &Mutex<HashMap<String, String>>, call: &Call, ret: &Ret) {
    let seen = match (call, ret) {
        (Call::Put { value, .. }, _) => Some(value.clone()),
        (_, Ret::Get { value }) | (_, Ret::Cas { value, .. }) => value.clone(),
        _ => None,
    };
    if let (Some(key), Some(value)) = (call.key(), seen) {
        values
            .lock()
            .expect("values")
            .insert(key.to_string(), value);
    }
}

/// One node's whole applied log, read page by page through
/// `synod client --node`; `None` if the node does not answer.
pub fn read_log(exe: &Path, node: u64, addr: SocketAddr) -> Option<ReplicaLog> {
    const PAGE: u64 = 1000;
    let mut client =
        LineClient::start(exe, &[format!("--node={addr}"), "--timeout=5".into()]).ok()?;
    let mut entries = Vec::new();
    loop {
        let from = entries.last().map_or(0, |(index, _)| index + 1);
        let reply = client.call(&format!("read {from} {PAGE}"))?;
        let page = reply["entries"].as_array()?;
        for entry in page {
            entries.push((entry["index"].as_u64()?, text(&entry["data"])?));
        }
        if (page.len() as u64) < PAGE {
            return Some(ReplicaLog { node, entries });
        }
    }
}
