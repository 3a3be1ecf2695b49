//! `room-svc`: one room service of a cluster (ZooKeeper for membership,
//! Redis for room state), or `room-svc admin …`, the operators' CLI, or
//! `room-svc link-certs DIR`, which makes a cluster's link certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Make a new cluster CA and a node link certificate per role in DIR:
    /// DIR/room-svc/ and DIR/msg-svc/ each hold ca.crt, tls.crt and tls.key
    /// (the files of a Kubernetes TLS secret with its CA); DIR/ca.key is the
    /// CA's key, to keep offline.
    LinkCerts(LinkCertsArgs),
}

#[derive(Debug, clap::Args)]
struct LinkCertsArgs {
    /// Where to write the files; refused if it already holds a CA.
    dir: PathBuf,
    /// The cluster's name, written into the certificates' subjects.
    #[arg(long, env = "CHATROOM_CLUSTER", default_value = "default")]
    cluster: String,
    /// Days the certificates stay valid.
    #[arg(long, default_value_t = 365)]
    days: u64,
}

fn link_certs(args: &LinkCertsArgs) -> ExitCode {
    if args.dir.join("ca.crt").exists() {
        eprintln!(
            "room-svc: {} already holds a cluster CA; choose another directory",
            args.dir.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let valid_for = Duration::from_secs(args.days.saturating_mul(24 * 3600));
    match chatroom_cluster::link::tls::generate(&args.dir, &args.cluster, valid_for) {
        Ok(()) => {
            println!(
                "link certificates for cluster {} in {} (valid {} days)",
                args.cluster,
                args.dir.display(),
                args.days
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("room-svc: {error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Admin(admin)) => return room_svc::admin::cli::run(admin),
        Some(Command::LinkCerts(args)) => return link_certs(&args),
        None => {}
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
