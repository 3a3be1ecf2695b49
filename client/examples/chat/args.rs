//! The chat client's flags, and the token and the server address they make.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chatroom_client::token::{Roles, SecretSource};
use chatroom_client::{Fingerprint, Transport, dev_token};
use chatroom_cluster::auth::default_secret_file;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// Lifetime of a minted token: a long chat session outlives an hour.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The chat client's flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChatArgs {
    /// msg-svc address, ws://HOST:PORT/ws or quic://HOST:PORT; default: the
    /// embedded server's, for --transport.
    #[arg(long, env = "CHATROOM_SERVER")]
    pub(crate) server: Option<String>,
    /// How to connect; default: what --server names, else ws.
    #[arg(long, env = "CHATROOM_TRANSPORT", value_parser = transport_flag())]
    pub(crate) transport: Option<Transport>,
    /// QUIC: trust the server certificate in this PEM file (a CA or the
    /// server's own). Default: the embedded server's, for a server on this
    /// machine.
    #[arg(long, env = "CHATROOM_QUIC_CERT_FILE", conflicts_with = "fingerprint")]
    pub(crate) cert: Option<PathBuf>,
    /// QUIC: trust the server certificate with this SHA-256 fingerprint
    /// (as the embedded server prints it).
    #[arg(long, env = "CHATROOM_QUIC_FINGERPRINT")]
    pub(crate) fingerprint: Option<Fingerprint>,
    /// Room to join.
    #[arg(long, env = "CHATROOM_ROOM")]
    pub(crate) room: String,
    /// User to mint a token for (ignored with --token: the token names the user).
    #[arg(long, env = "CHATROOM_USER", required_unless_present = "token")]
    user: Option<String>,
    /// Token to connect with; minted from the secret file when absent.
    #[arg(long, env = "CHATROOM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Secret to mint tokens with: the embedded server's (`chatroom`) by default.
    #[arg(long, env = "CHATROOM_TOKEN_SECRET_FILE", default_value_os_t = default_secret_file())]
    token_secret_file: PathBuf,
    /// Role to put in a minted token; repeat it or separate with commas.
    #[arg(
        long = "role",
        env = "CHATROOM_ROLE",
        value_enum,
        value_delimiter = ','
    )]
    roles: Vec<Role>,
    /// Device id; random by default, so two terminals never replace each other.
    #[arg(long, env = "CHATROOM_DEVICE")]
    pub(crate) device: Option<String>,
    /// Recent messages to show on joining; 0 takes the server's default.
    #[arg(long, env = "CHATROOM_BACKFILL", default_value_t = 0)]
    pub(crate) backfill: u32,
}

/// A role to mint into the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    /// Platform operator: messages go to the PRIORITY lane.
    Admin,
    /// Trusted backend: may post notices, PRIORITY lane.
    System,
}

/// `--transport`: a [`Transport`] by name, the names listed in `--help`.
fn transport_flag() -> impl TypedValueParser<Value = Transport> {
    PossibleValuesParser::new(Transport::ALL.map(Transport::name)).try_map(|name| name.parse())
}

/// The token to connect with: `--token`, else one minted for `--user`.
pub(crate) fn token(args: &ChatArgs) -> anyhow::Result<String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    let user = args
        .user
        .as_deref()
        .context("give --user (or CHATROOM_USER) to mint a token, or --token")?;
    let roles = Roles {
        admin: args.roles.contains(&Role::Admin),
        system: args.roles.contains(&Role::System),
    };
    let secret = SecretSource::File(args.token_secret_file.clone());
    // One line: the secret error already names the file and the cause.
    dev_token(&secret, user, roles, TOKEN_TTL).map_err(|error| {
        anyhow!(
            "cannot mint a token: {error} (start the embedded server, `chatroom`, to \
             create its secret, or pass --token)"
        )
    })
}

/// The server address `--server` and `--transport` name together.
pub(crate) fn server_url(args: &ChatArgs) -> anyhow::Result<String> {
    match (&args.server, args.transport) {
        (None, transport) => Ok(transport.unwrap_or_default().default_url().to_owned()),
        (Some(url), None) => Ok(url.clone()),
        (Some(url), Some(transport)) => {
            let named = Transport::of(url)?;
            if named != transport {
                anyhow::bail!(
                    "--server {url} is {} but --transport says {}",
                    named.name(),
                    transport.name()
                );
            }
            Ok(url.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        chat: ChatArgs,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let args = Wrapper::try_parse_from([
            "chat", "--room", "demo", "--user", "alice", "--role", "admin", "--role", "system",
        ])
        .unwrap()
        .chat;
        assert_eq!(server_url(&args).unwrap(), chatroom_client::DEFAULT_URL);
        assert_eq!(args.roles, [Role::Admin, Role::System]);
        assert_eq!(args.token_secret_file, default_secret_file());
        assert!(Wrapper::try_parse_from(["chat", "--room", "demo"]).is_err());
        let with_token =
            Wrapper::try_parse_from(["chat", "--room", "demo", "--token", "t"]).unwrap();
        assert_eq!(token(&with_token.chat).unwrap(), "t");
    }

    #[test]
    fn transport_and_server_agree_or_are_refused() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["chat", "--room", "demo", "--token", "t"];
            argv.extend_from_slice(extra);
            Wrapper::try_parse_from(argv).map(|w| w.chat)
        };
        let quic = parse(&["--transport", "quic"]).unwrap();
        assert_eq!(
            server_url(&quic).unwrap(),
            chatroom_client::DEFAULT_QUIC_URL
        );
        let named = parse(&["--server", "quic://127.0.0.1:9"]).unwrap();
        assert_eq!(server_url(&named).unwrap(), "quic://127.0.0.1:9");
        let mismatch = parse(&["--server", "ws://127.0.0.1:9/ws", "--transport", "quic"]).unwrap();
        let error = server_url(&mismatch).unwrap_err().to_string();
        assert!(error.contains("--transport says quic"), "{error}");
        let pinned = parse(&["--transport", "quic", "--fingerprint", &"ab".repeat(32)]).unwrap();
        assert_eq!(pinned.fingerprint, Some(Fingerprint([0xab; 32])));
        assert!(parse(&["--fingerprint", "nope"]).is_err());
        assert!(parse(&["--cert", "c.pem", "--fingerprint", &"ab".repeat(32)]).is_err());
    }

    #[test]
    fn minting_without_the_secret_file_says_what_to_do() {
        let args = Wrapper::try_parse_from([
            "chat",
            "--room",
            "demo",
            "--user",
            "alice",
            "--token-secret-file",
            "/nonexistent/chatroom/secret",
        ])
        .unwrap()
        .chat;
        let error = format!("{:#}", token(&args).unwrap_err());
        assert!(error.contains("`chatroom`"), "{error}");
    }
}
