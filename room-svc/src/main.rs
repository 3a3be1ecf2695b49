//! `room-svc`: one room service of a cluster (ZooKeeper for membership,
//! Redis for room state), or `room-svc admin …`, the operators' CLI.

use std::process::ExitCode;

use chatroom_cluster::telemetry::{self, LogArgs};
use clap::{Parser, Subcommand};
use room_svc::admin::cli::AdminArgs;
use room_svc::server::{self, ServeArgs};

/// Exit status for a configuration that cannot work (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "room-svc",
    version,
    about = "chatroom room service (one node of a cluster)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operate rooms through the admin API (of a room service or the
    /// embedded server).
    Admin(AdminArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Admin(admin)) = cli.command {
        return room_svc::admin::cli::run(admin);
    }
    if let Err(error) = telemetry::init(&cli.log) {
        eprintln!("room-svc: bad log settings: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // Checked before anything is bound.
    let config = match cli.serve.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("room-svc: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                let listeners = cli.serve.bind().await?;
                let shutdown = chatroom_cluster::serve::shutdown_signal();
                server::run(config, listeners, shutdown).await?;
                Ok(())
            })
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("room-svc: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
