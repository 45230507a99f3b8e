//! The `synod` command line: parses, calls the libraries, prints.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod address;
mod admin_cmd;
mod bench_cmd;
mod chaos;
mod client_cmd;
mod cluster_cmd;
mod logging;
mod node;
mod node_cmd;
mod secret_cmd;
mod sim_cmd;
mod status_cmd;
mod wal_cmd;
mod wire;

/// synod: a Multi-Paxos replicated log.
#[derive(Debug, Parser)]
#[command(name = "synod", version, about)]
struct Cli {
    /// How log lines on stderr look: `text` for people, `json` (one
    /// object a line) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one replica.
    Node(node_cmd::NodeArgs),
    /// Run a local cluster on loopback until Ctrl-C.
    Cluster(cluster_cmd::ClusterArgs),
    /// Scripted client: one command a line on stdin, one JSON line out.
    Client(client_cmd::ClientArgs),
    /// Leader, ballot, commit point and lag of each node.
    Status(status_cmd::StatusArgs),
    /// Leadership: hand it to a named node.
    #[command(subcommand)]
    Leader(admin_cmd::LeaderCommand),
    /// Members of a group.
    #[command(subcommand)]
    Member(admin_cmd::MemberCommand),
    /// The load generator (--local N starts its own cluster).
    Bench(bench_cmd::BenchArgs),
    /// The deterministic simulator: seed sweeps and single-seed replays.
    Sim(sim_cmd::SimArgs),
    /// Fault runner on real processes with a history checker.
    Chaos(chaos::ChaosArgs),
    /// Offline inspection of a write-ahead log directory.
    #[command(subcommand)]
    Wal(wal_cmd::WalCommand),
    /// Cluster secrets.
    #[command(subcommand)]
    Secret(secret_cmd::SecretCommand),
    /// Print a shell completion script: `synod completions bash > /etc/bash_completion.d/synod`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let insecure = matches!(&cli.command, Command::Node(args) if node_cmd::wants_insecure(args));
    // Servers log what they do; tools that print results keep stderr for
    // errors (a client retrying a dead node is not news).
    let default = match &cli.command {
        Command::Node(_) | Command::Cluster(_) => "info",
        _ => "error",
    };
    logging::init(insecure, default, cli.log_format);
    match cli.command {
        Command::Node(args) => node_cmd::run(args),
        Command::Cluster(args) => cluster_cmd::run(args),
        Command::Client(args) => client_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Status(args) => status_cmd::run(args),
        Command::Leader(command) => admin_cmd::leader(command),
        Command::Member(command) => admin_cmd::member(command),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Wal(command) => wal_cmd::run(command),
        Command::Secret(command) => secret_cmd::run(command),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "synod", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
