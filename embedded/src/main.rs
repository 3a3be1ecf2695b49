//! `chatroom`: the embedded server, both roles in one process with nothing
//! else to install; or `chatroom token --user alice` to mint a client token
//! with its secret.

use std::fmt::Display;
use std::process::ExitCode;

use chatroom_cluster::telemetry::{self, LogArgs};
use chatroom_embedded::cli::{EmbeddedArgs, Secret, banner};
use clap::{Parser, Subcommand};
use msg_svc::cli::{EXIT_CONFIG, KEYS_RELOAD_EVERY, SecretArgs, TokenArgs};

#[derive(Debug, Parser)]
#[command(
    name = "chatroom",
    version,
    about = "chatroom's embedded server: both roles in one process, no ZooKeeper or Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: EmbeddedArgs,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a client token signed with the server's secret.
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
        eprintln!("chatroom: {error:#}");
        ExitCode::FAILURE
    })
}

/// Checks the configuration before binding anything (exit 64 when it
/// cannot work), then serves until SIGTERM or SIGINT.
fn serve(cli: Cli) -> anyhow::Result<ExitCode> {
    let unusable = |error: &dyn Display| {
        eprintln!("chatroom: {error}");
        Ok(ExitCode::from(EXIT_CONFIG))
    };
    if let Err(error) = telemetry::init(&cli.log) {
        return unusable(&format!("bad log settings: {error}"));
    }
    let (config, admin) = match cli.serve.config() {
        Ok(config) => config,
        Err(error) => return unusable(&error),
    };
    // The embedded server makes its own secret when it has none.
    let source = cli.secret.source();
    let (tokens, created) = match source.load(true) {
        Ok(loaded) => loaded,
        Err(error) => return unusable(&error),
    };
    let verifier = match cli.secret.verifier(Some(tokens.clone())) {
        Ok(verifier) => verifier,
        Err(error) => return unusable(&format!("token keys: {error}")),
    };
    let quic = match cli.serve.quic_identity() {
        Ok(quic) => quic,
        Err(error) => return unusable(&error),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (identity, cert_file) = match quic {
            Some(quic) => (Some(quic.identity), quic.written_to),
            None => (None, None),
        };
        let listeners = cli.serve.listen.bind(identity).await?;
        let secret = Secret { source, created };
        println!(
            "{}",
            banner(&listeners, &secret, &admin, cert_file.as_deref())?
        );
        let shutdown = chatroom_cluster::serve::shutdown_signal();
        let _reload = cli
            .secret
            .has_public_keys()
            .then(|| verifier.spawn_reload(KEYS_RELOAD_EVERY));
        let config = chatroom_embedded::EmbeddedConfig {
            verifier: Some(verifier),
            ..config
        };
        chatroom_embedded::run(config, tokens, listeners, shutdown).await?;
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
