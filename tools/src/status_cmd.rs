//! `synod status`: leader, ballot, commit point and lag of each node.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};
use synod_client_proto::{ClientOp, ClientRequest, ClientResponse, KIND_CLIENT_REQUEST};
use synod_net::{Client, ClientConfig};

/// Arguments of `synod status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Client addresses of the nodes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = crate::address::resolve)]
    cluster: Vec<SocketAddr>,
    /// The group to report on.
    #[arg(long, default_value_t = 0)]
    group: u32,
}

struct NodeStatus {
    node: u64,
    leader: Option<u64>,
    leading: bool,
    applied: u64,
    ballot: (u64, u64),
}

struct Row {
    addr: SocketAddr,
    answer: Result<NodeStatus, String>,
}

/// Runs `synod status`; exit status 1 if a node did not answer.
pub fn run(args: StatusArgs) -> ExitCode {
    let rows = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(move || async move { ask_all(&args.cluster, args.group).await })
        .map_err(|e| e.to_string())
        .and_then(|handle| handle.join().map_err(|e| e.to_string()));
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            eprintln!("synod status: {error}");
            return ExitCode::FAILURE;
        }
    };
    let applied_max = rows
        .iter()
        .filter_map(|r| r.answer.as_ref().ok().map(|a| a.applied))
        .max()
        .unwrap_or(0);
    println!(
        "{:<6} {:<22} {:<9} {:<7} {:<9} {:>10} {:>8}",
        "node", "address", "role", "leader", "ballot", "applied", "lag"
    );
    for row in &rows {
        match &row.answer {
            Ok(NodeStatus {
                node,
                leader,
                leading,
                applied,
                ballot: (round, owner),
            }) => {
                let role = if *leading { "leader" } else { "follower" };
                let leader = leader.map_or("-".to_string(), |l| l.to_string());
                let ballot = format!("{round}.{owner}");
                let lag = applied_max - applied;
                println!(
                    "{node:<6} {:<22} {role:<9} {leader:<7} {ballot:<9} {applied:>10} {lag:>8}",
                    row.addr.to_string()
                );
            }
            Err(error) => println!(
                "{:<6} {:<22} unreachable: {error}",
                "?",
                row.addr.to_string()
            ),
        }
    }
    if rows.iter().all(|r| r.answer.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn ask_all(addrs: &[SocketAddr], group: u32) -> Vec<Row> {
    let body = ClientRequest {
        group,
        op: ClientOp::Status,
    }
    .encode();
    let mut rows = Vec::new();
    for addr in addrs {
        let mut config = ClientConfig::new(vec![*addr]);
        config.request_timeout = Duration::from_secs(2);
        let answer = match Client::new(config) {
            Ok(client) => match client.request(KIND_CLIENT_REQUEST, &body).await {
                Ok(reply) => match ClientResponse::decode(&reply.body) {
                    Ok(ClientResponse::Status {
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
                        ballot,
                    }),
                    Ok(other) => Err(format!("unexpected reply {other:?}")),
                    Err(reason) => Err(reason),
                },
                Err(error) => Err(error.to_string()),
            },
            Err(error) => Err(error.to_string()),
        };
        rows.push(Row {
            addr: *addr,
            answer,
        });
    }
    rows
}
