//! `synod leader transfer`: hand a group's leadership to a named node.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use synod_client_proto::ClientOp;

/// What `synod leader` does.
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand the group's leadership to node --to, which takes it at once
    /// (before removing the leader, or to move load). Prints
    /// {"ok":true,"leader":ID,"addr":A}, or {"ok":false,"error":...} and
    /// exits 1.
    Transfer(TransferArgs),
}

/// Arguments of `synod leader transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Client addresses of the nodes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = crate::address::resolve)]
    cluster: Vec<SocketAddr>,
    /// The node to lead.
    #[arg(long)]
    to: u64,
    /// The group.
    #[arg(long, default_value_t = 0)]
    group: u32,
    /// Give up after this many seconds.
    #[arg(
        long,
        alias = "timeout-s",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    timeout: u64,
    /// File holding the nodes' client secret, for nodes started with
    /// `--client-secret-file`.
    #[arg(long)]
    client_secret_file: Option<std::path::PathBuf>,
}

/// Runs `synod leader ...`.
pub fn run(command: LeaderCommand) -> ExitCode {
    let LeaderCommand::Transfer(args) = command;
    let reply = match crate::wire::client_secret(args.client_secret_file) {
        Ok(secret) => crate::client_cmd::one_op(
            args.cluster,
            args.group,
            secret,
            Duration::from_secs(args.timeout.max(1)),
            ClientOp::TransferLeader { to: args.to },
        ),
        Err(error) => json!({"ok": false, "error": format!("client secret: {error}")}),
    };
    println!("{reply}");
    if reply["ok"] == json!(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
