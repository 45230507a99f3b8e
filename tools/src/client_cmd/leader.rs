//! `leader`: the node that leads now, found by asking the nodes. A node
//! only says whom it last heard from, and after a leader dies its
//! followers name it until they notice: so only a node that answers and
//! says it leads is ever printed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synod_client_proto::{ClientOp, ClientResponse};

use super::{Heard, Session, TRY_LIMIT};
use crate::wire::Answer;

/// Asks the nodes until one that leads answers, following the leader each
/// one names, or the session's timeout passes (then failing as other lines
/// do: unreachable, no quorum, no leader).
pub(super) fn find(session: &mut Session) -> Value {
    let deadline = Instant::now() + session.timeout;
    session.heard.fill(Heard::Nothing);
    let mut last_error = String::from("no node answered");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return json!({"ok": false, "error": session.why_failed(&last_error)});
        }
        let target = session.target;
        let addr = session.conns[target].addr();
        let asked = session.conns[target].ask(session.group, ClientOp::Status, left.min(TRY_LIMIT));
        match asked {
            Ok(Answer::Reply(ClientResponse::Status {
                node,
                leader,
                leading,
                ..
            })) => {
                session.ids.insert(node, target);
                if leading {
                    session.heard[target] = Heard::Answered;
                    return json!({"ok": true, "leader": node, "addr": addr.to_string()});
                }
                session.heard[target] = match leader {
                    Some(_) => Heard::Answered,
                    None => Heard::NoLeader,
                };
                last_error = match leader {
                    Some(id) => format!("{addr} does not lead (it names node {id})"),
                    None => format!("{addr} knows no leader"),
                };
                // A node naming itself without leading is still in its
                // first phase: ask it again after the pause.
                match leader.filter(|id| *id != node) {
                    Some(id) => session.follow(Some(id)),
                    None => {
                        session.follow(None);
                        std::thread::sleep(Duration::from_millis(30));
                    }
                }
            }
            Ok(Answer::Reply(ClientResponse::Busy)) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Answer::Reply(other)) => return session.render(other),
            Ok(Answer::Redirect { node, addr }) => session.redirected(node, addr),
            Err(error) => match session.failed_try(target, error) {
                Ok(error) => last_error = error,
                Err(fatal) => return fatal,
            },
        }
    }
}
