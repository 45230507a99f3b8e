//! `watch [PREFIX] [--from INDEX] [--count N]`: one JSON line per change
//! to a key under PREFIX, in log order, from whichever node answers (each
//! answers from the changes it applied; on a node's failure the next one
//! goes on from the same index).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synod_client_proto::{ClientOp, ClientResponse, EventKind, WatchEvent};

use super::{number, text, Session};
use crate::wire::Answer;

/// What one request waits for a change.
const WAIT_MS: u32 = 500;
/// What an answer may take beyond that.
const ANSWER_SLACK: Duration = Duration::from_secs(2);

/// A parsed `watch` line.
pub(super) struct Watch {
    prefix: Vec<u8>,
    /// `None`: from the next change.
    from: Option<u64>,
    /// Stop after this many changes (`None`: never).
    count: Option<u64>,
}

/// The watch a line asks for, if it is a `watch` line.
pub(super) fn parse(line: &str) -> Option<Result<Watch, String>> {
    let mut words = line.split_whitespace();
    if words.next() != Some("watch") {
        return None;
    }
    let mut watch = Watch {
        prefix: Vec::new(),
        from: None,
        count: None,
    };
    let mut prefix = None;
    while let Some(word) = words.next() {
        let mut value = |flag: &str| {
            words
                .next()
                .ok_or_else(|| format!("{flag} needs a number"))
                .and_then(number)
        };
        let parsed = match word {
            "--from" => value("--from").map(|from| watch.from = Some(from)),
            "--count" => value("--count").map(|count| watch.count = Some(count)),
            _ if prefix.is_none() => {
                prefix = Some(word);
                Ok(())
            }
            _ => Err(format!(
                "unexpected `{word}`; try watch [PREFIX] [--from INDEX] [--count N]"
            )),
        };
        if let Err(message) = parsed {
            return Some(Err(message));
        }
    }
    watch.prefix = prefix.unwrap_or_default().as_bytes().to_vec();
    Some(Ok(watch))
}

/// Prints each change as it comes; the last line's answer is `Err` (a
/// failure line, printed by the caller) if the watch ended on a failure.
pub(super) fn run(session: &mut Session, watch: Watch) -> Result<(), Value> {
    // u64::MAX asks a node for its next change on.
    let mut from = watch.from.unwrap_or(u64::MAX);
    let mut skip = 0;
    let mut seen = 0;
    let mut last_answer = Instant::now();
    while watch.count.is_none_or(|count| seen < count) {
        let op = ClientOp::Watch {
            prefix: watch.prefix.clone(),
            from,
            skip,
            wait_ms: WAIT_MS,
        };
        let target = session.target;
        let limit = Duration::from_millis(u64::from(WAIT_MS)) + ANSWER_SLACK;
        let response = match session.conns[target].ask(session.group, op, limit) {
            Ok(Answer::Reply(response)) => response,
            // A watch reads the node it asks: a redirect only moves it on.
            Ok(Answer::Redirect { .. }) | Err(_) if last_answer.elapsed() <= session.timeout => {
                session.target = (target + 1) % session.conns.len();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Ok(Answer::Redirect { addr, .. }) => {
                return Err(json!({"ok": false, "error": format!("redirected to {addr}")}));
            }
            Err(error) => return Err(json!({"ok": false, "error": error.to_string()})),
        };
        last_answer = Instant::now();
        match response {
            ClientResponse::Events {
                events,
                next,
                next_skip,
            } => {
                for event in events {
                    if watch.count.is_some_and(|count| seen >= count) {
                        return Ok(());
                    }
                    println!("{}", render(&event));
                    seen += 1;
                }
                (from, skip) = (next, next_skip);
            }
            ClientResponse::Compacted { first } => {
                return Err(json!({
                    "ok": false,
                    "error": format!("compacted: changes before index {first} are no longer kept; read the keys (get --prefix) and watch from {first} or later"),
                    "first": first,
                }));
            }
            ClientResponse::Busy => std::thread::sleep(Duration::from_millis(20)),
            other => return Err(session.render(other)),
        }
    }
    Ok(())
}

fn render(event: &WatchEvent) -> Value {
    let op = match event.kind {
        EventKind::Put => "put",
        EventKind::Delete => "delete",
        EventKind::Expire => "expire",
    };
    json!({
        "ok": true,
        "index": event.index,
        "op": op,
        "key": text(&event.key),
        "value": event.value.as_deref().map(text),
    })
}
