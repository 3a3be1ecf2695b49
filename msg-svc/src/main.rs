//! `msg-svc`: one message service of a cluster (ZooKeeper for membership,
//! links to every room service), or `msg-svc token` to mint a client token
//! with the cluster's secret. The embedded server is `chatroom`.

use std::fmt::Display;
use std::process::ExitCode;

use chatroom_cluster::telemetry::{self, LogArgs};
use clap::{Parser, Subcommand};
use msg_svc::cli::{ClusterArgs, EXIT_CONFIG, KEYS_RELOAD_EVERY, SecretArgs, TokenArgs};
use msg_svc::cluster;

#[derive(Debug, Parser)]
#[command(
    name = "msg-svc",
    version,
    about = "chatroom message service (one node of a cluster)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ClusterArgs,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a client token signed with the cluster's secret.
    Token(TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Token(args)) => args
            .mint(&cli.secret)
            .map(|token| {
                println!("{token}");
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        None => serve(cli),
    };
    result.unwrap_or_else(|error| {
        eprintln!("msg-svc: {error:#}");
        ExitCode::FAILURE
    })
}

/// Checks the configuration before binding anything (exit 64 when it
/// cannot work), then serves until SIGTERM or SIGINT.
fn serve(cli: Cli) -> anyhow::Result<ExitCode> {
    let unusable = |error: &dyn Display| {
        eprintln!("msg-svc: {error}");
        Ok(ExitCode::from(EXIT_CONFIG))
    };
    if let Err(error) = telemetry::init(&cli.log) {
        return unusable(&format!("bad log settings: {error}"));
    }
    let config = match cli.serve.config() {
        Ok(config) => config,
        Err(error) => return unusable(&error),
    };
    // Every node of a cluster must verify the same tokens: the secret is
    // given, never made here; with an identity provider's keys it is
    // optional.
    let secret = if cli.secret.names_secret() || !cli.secret.has_public_keys() {
        match cli.secret.source().load(false) {
            Ok((secret, _)) => Some(secret),
            Err(error) => return unusable(&error),
        }
    } else {
        None
    };
    let tokens = match cli.secret.verifier(secret) {
        Ok(tokens) => tokens,
        Err(error) => return unusable(&format!("token keys: {error}")),
    };
    let quic = match cli.serve.listen.quic_identity() {
        Ok(quic) => quic,
        Err(error) => return unusable(&error),
    };
    if quic.is_none() && !cli.serve.listen.no_quic {
        tracing::warn!(
            "QUIC is off: a cluster node needs --quic-cert and --quic-key (one certificate \
             clients trust on every node)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listeners = cli.serve.listen.bind(quic).await?;
        let shutdown = chatroom_cluster::serve::shutdown_signal();
        let _reload = cli
            .secret
            .has_public_keys()
            .then(|| tokens.spawn_reload(KEYS_RELOAD_EVERY));
        cluster::run(config, tokens, listeners, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
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
