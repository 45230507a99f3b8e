//! The `synod` command line: parses, calls the libraries, prints.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod sim_cmd;
mod wal_cmd;

/// synod: a Multi-Paxos replicated log.
#[derive(Debug, Parser)]
#[command(name = "synod", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The deterministic simulator: seed sweeps and single-seed replays.
    Sim(sim_cmd::SimArgs),
    /// Offline inspection of a write-ahead log directory.
    #[command(subcommand)]
    Wal(wal_cmd::WalCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim_cmd::run(args),
        Command::Wal(command) => wal_cmd::run(command),
    }
}
