//! The `synod` command line: parses, calls the libraries, prints.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod sim_cmd;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim_cmd::run(args),
    }
}
