//! `synod status`: leader, ballot, commit point and lag of each node, as a
//! table or (`--json`) one JSON line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use synod_client_proto::{ClientOp, ClientResponse};
use synod_net::Secret;

use crate::wire::{Answer, Connection};

/// Arguments of `synod status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Client addresses of the nodes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = crate::address::resolve)]
    cluster: Vec<SocketAddr>,
    /// The group to report on.
    #[arg(long, default_value_t = 0)]
    group: u32,
    /// One JSON line: {"ok":true,"group":G,"nodes":[{"id","addr","role",
    /// "leader","applied","commit"}]}, or {"ok":false,"error":...}.
    #[arg(long)]
    json: bool,
    /// Give up on a node after this many seconds.
    #[arg(long, alias = "timeout-s", value_name = "SECONDS", default_value_t = 2)]
    timeout: u64,
    /// File holding the nodes' client secret, for nodes started with
    /// `--client-secret-file`.
    #[arg(long)]
    client_secret_file: Option<std::path::PathBuf>,
}

/// One node's answer.
struct NodeStatus {
    node: u64,
    leader: Option<u64>,
    leading: bool,
    applied: u64,
    /// `None` from a node that predates the commit point in its reply.
    commit: Option<u64>,
    ballot: (u64, u64),
}

impl NodeStatus {
    fn role(&self) -> &'static str {
        match (self.leading, self.leader) {
            (true, _) => "leader",
            (false, Some(_)) => "follower",
            (false, None) => "looking",
        }
    }
}

struct Row {
    addr: SocketAddr,
    answer: Result<NodeStatus, String>,
}

/// Runs `synod status`; exit status 1 if a node did not answer.
pub fn run(args: StatusArgs) -> ExitCode {
    let limit = Duration::from_secs(args.timeout.max(1));
    let secret = match crate::wire::client_secret(args.client_secret_file.clone()) {
        Ok(secret) => secret,
        Err(error) => {
            eprintln!("synod status: {error}");
            return ExitCode::from(2);
        }
    };
    let rows: Vec<Row> = args
        .cluster
        .iter()
        .map(|addr| Row {
            addr: *addr,
            answer: ask(*addr, args.group, limit, secret.clone()),
        })
        .collect();
    let ok = rows.iter().all(|r| r.answer.is_ok());
    if args.json {
        print_json(&rows, args.group);
    } else {
        print_table(&rows);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ask(
    addr: SocketAddr,
    group: u32,
    limit: Duration,
    secret: Option<Secret>,
) -> Result<NodeStatus, String> {
    let mut conn = Connection::new(addr, secret);
    let answer = conn
        .ask(group, ClientOp::NodeStatus, limit)
        .map_err(|e| e.to_string())?;
    match answer {
        Answer::Reply(ClientResponse::NodeStatus(status)) => Ok(NodeStatus {
            node: status.node,
            leader: status.leader,
            leading: status.leading,
            applied: status.applied,
            commit: Some(status.commit),
            ballot: status.ballot,
        }),
        // A node that does not know the op refuses it; its older reply has
        // no commit point.
        Answer::Reply(ClientResponse::Error(_)) => {
            match conn
                .ask(group, ClientOp::Status, limit)
                .map_err(|e| e.to_string())?
            {
                Answer::Reply(ClientResponse::Status {
                    node,
                    leader,
                    leading,
                    applied,
                    ballot,
                }) => Ok(NodeStatus {
                    node,
                    leader,
                    leading,
                    applied,
                    commit: None,
                    ballot,
                }),
                Answer::Reply(ClientResponse::Error(reason)) => Err(reason),
                other => Err(format!("unexpected reply {other:?}")),
            }
        }
        other => Err(format!("unexpected reply {other:?}")),
    }
}

fn print_json(rows: &[Row], group: u32) {
    let nodes: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| match &row.answer {
            Ok(s) => json!({
                "id": s.node,
                "addr": row.addr.to_string(),
                "role": s.role(),
                "leader": s.leader,
                "applied": s.applied,
                "commit": s.commit,
                "ballot": [s.ballot.0, s.ballot.1],
            }),
            Err(error) => json!({
                "id": null,
                "addr": row.addr.to_string(),
                "role": "unreachable",
                "error": error,
            }),
        })
        .collect();
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|r| r.answer.as_ref().err().map(|e| format!("{}: {e}", r.addr)))
        .collect();
    let line = if failures.is_empty() {
        json!({"ok": true, "group": group, "nodes": nodes})
    } else {
        json!({"ok": false, "error": failures.join("; "), "group": group, "nodes": nodes})
    };
    println!("{line}");
}

fn print_table(rows: &[Row]) {
    let applied_max = rows
        .iter()
        .filter_map(|r| r.answer.as_ref().ok().map(|a| a.applied))
        .max()
        .unwrap_or(0);
    println!(
        "{:<6} {:<22} {:<9} {:<7} {:<9} {:>10} {:>10} {:>8}",
        "node", "address", "role", "leader", "ballot", "commit", "applied", "lag"
    );
    for row in rows {
        match &row.answer {
            Ok(status) => {
                let leader = status.leader.map_or("-".to_string(), |l| l.to_string());
                let commit = status.commit.map_or("-".to_string(), |c| c.to_string());
                let (round, owner) = status.ballot;
                println!(
                    "{:<6} {:<22} {:<9} {leader:<7} {:<9} {commit:>10} {:>10} {:>8}",
                    status.node,
                    row.addr.to_string(),
                    status.role(),
                    format!("{round}.{owner}"),
                    status.applied,
                    applied_max - status.applied
                );
            }
            Err(error) => println!(
                "{:<6} {:<22} unreachable: {error}",
                "?",
                row.addr.to_string()
            ),
        }
    }
}
