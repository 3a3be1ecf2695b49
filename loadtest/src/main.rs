//! The `loadtest` binary: one subcommand per scenario. For now only `chat`,
//! a human in a room; the load scenarios come next.

use std::process::ExitCode;

use chatroom_cluster::telemetry::{self, LogArgs};
use clap::{Parser, Subcommand};
use loadtest::chat::{self, ChatArgs};

/// Exit status for a configuration that cannot work (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// chatroom terminal client and load harness.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chat in a room from the terminal: prints messages as they arrive and
    /// sends each line typed; Ctrl-D or Ctrl-C leaves.
    Chat(ChatArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init(&cli.log) {
        eprintln!("loadtest: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Chat(args) => {
            let token = match chat::token(&args) {
                Ok(token) => token,
                Err(error) => {
                    eprintln!("loadtest: {error:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match chat::run(&args, token).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("loadtest: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
