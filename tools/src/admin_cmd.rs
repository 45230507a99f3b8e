//! `synod leader` and `synod member`: one request to the group's leader,
//! one JSON line out, exit status 1 on failure.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use synod_client_proto::ClientOp;

/// What `synod leader` does.
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand the group's leadership to node --to, which takes it at once
    /// (before removing the leader, or to move load). Prints
    /// {"ok":true,"leader":ID,"addr":A}, or {"ok":false,"error":...} and
    /// exits 1.
    Transfer {
        #[command(flatten)]
        target: Target,
        /// The node to lead.
        #[arg(long)]
        to: u64,
    },
}

/// What `synod member` does.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// The group's members, as its leader knows them: {"ok":true,"group":G,
    /// "leader":ID,"members":[{"id":1,"addr":"HOST:PORT","role":"voter"},...]}.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Make node --id, reached by its peers at --addr, a member of the
    /// group: a voter (it joins as a learner and is promoted once it has
    /// caught up), or a learner with --learner. Returns once it is in force,
    /// printing the configuration as `list` does. Start the node first
    /// (`synod node --join ...`); give a large state a longer --timeout.
    Add {
        #[command(flatten)]
        target: Target,
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// Where its peers reach it: its `--listen`, as HOST:PORT.
        #[arg(long)]
        addr: String,
        /// Add it as a learner: it receives the log and never votes.
        #[arg(long)]
        learner: bool,
    },
    /// Remove node --id from the group; returns once the new configuration
    /// is in force at a majority of its voters (the node may then be
    /// stopped at once), printing it. A removed leader hands leadership to
    /// a remaining voter.
    Remove {
        #[command(flatten)]
        target: Target,
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
}

/// Which cluster and group a request goes to, and how.
#[derive(Debug, Args)]
pub struct Target {
    /// Client addresses of the nodes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = crate::address::resolve)]
    cluster: Vec<SocketAddr>,
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

impl Target {
    /// How long the leader may wait for a change: a second less than the
    /// client waits for its answer, so that an answer comes back.
    fn change_wait_ms(&self) -> u32 {
        let ms = self.timeout.max(2).saturating_sub(1).saturating_mul(1000);
        u32::try_from(ms).unwrap_or(u32::MAX)
    }

    /// Sends `op` to the group's leader and renders the answer.
    fn ask(self, op: ClientOp) -> Value {
        match crate::wire::client_secret(self.client_secret_file) {
            Ok(secret) => crate::client_cmd::one_op(
                self.cluster,
                self.group,
                secret,
                Duration::from_secs(self.timeout.max(1)),
                op,
            ),
            Err(error) => json!({"ok": false, "error": format!("client secret: {error}")}),
        }
    }
}

/// Runs `synod leader ...`.
pub fn leader(command: LeaderCommand) -> ExitCode {
    let LeaderCommand::Transfer { target, to } = command;
    print(target.ask(ClientOp::TransferLeader { to }))
}

/// Runs `synod member ...`.
pub fn member(command: MemberCommand) -> ExitCode {
    match command {
        MemberCommand::List { target } => print(target.ask(ClientOp::Members)),
        MemberCommand::Add {
            target,
            id,
            addr,
            learner,
        } => {
            let wait_ms = target.change_wait_ms();
            print(target.ask(ClientOp::AddMember {
                id,
                addr,
                voter: !learner,
                wait_ms,
            }))
        }
        MemberCommand::Remove { target, id } => {
            let wait_ms = target.change_wait_ms();
            print(target.ask(ClientOp::RemoveMember { id, wait_ms }))
        }
    }
}

fn print(reply: Value) -> ExitCode {
    println!("{reply}");
    if reply["ok"] == json!(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One node put in place of another in `group`, as `synod member add` then
/// `synod member remove` would: `new`, reached by its peers at `addr`,
/// added as a voter, then `old` removed, each asked of the client ports
/// `reach` within `wait` (the leader waiting up to `leader_wait_ms` of it).
pub struct Replacement {
    pub old: u64,
    pub new: u64,
    pub addr: SocketAddr,
    pub wait: Duration,
    pub leader_wait_ms: u32,
}

impl Replacement {
    /// Makes the two changes in `group`; on a failure, which step failed
    /// (`member add` or `member remove`) and the answer.
    pub fn run(
        &self,
        reach: &[SocketAddr],
        group: u32,
        secret: Option<synod_net::Secret>,
    ) -> Result<(), (&'static str, Value)> {
        let add = ClientOp::AddMember {
            id: self.new,
            addr: self.addr.to_string(),
            voter: true,
            wait_ms: self.leader_wait_ms,
        };
        let remove = ClientOp::RemoveMember {
            id: self.old,
            wait_ms: self.leader_wait_ms,
        };
        for (step, op) in [("member add", add), ("member remove", remove)] {
            let reply =
                crate::client_cmd::one_op(reach.to_vec(), group, secret.clone(), self.wait, op);
            if reply["ok"] != json!(true) {
                return Err((step, reply));
            }
        }
        Ok(())
    }
}
