//! The `chatroom` binary's flags (the message service's and the room
//! service's, shared with their own binaries) and the banner it prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chatroom_cluster::auth::{SecretError, SecretSource, default_admin_token_file};
use chatroom_cluster::quic::{self, TlsError, TlsIdentity};
use chatroom_cluster::reload::ReloadError;
use clap::Args;
use msg_svc::Listeners;
use msg_svc::cli::{ListenArgs, NodeArgs, cpus};
use room_svc::RoomServiceConfig;
use room_svc::server::{BackendArgsError, DefaultsError, OpsArgs};

use crate::EmbeddedConfig;

/// What the embedded server serves with.
#[derive(Debug, Args)]
pub struct EmbeddedArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Where the certificate the server generates for QUIC is written, for
    /// clients to trust. Default: $XDG_STATE_HOME/chatroom/quic-cert.pem.
    #[arg(long, env = "CHATROOM_QUIC_CERT_OUT", conflicts_with = "quic_cert")]
    pub quic_cert_out: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Room-service workers; default: one per CPU.
    #[arg(long, env = "CHATROOM_ROOM_WORKERS")]
    pub room_workers: Option<usize>,
    /// The room defaults and the admin token.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Why the embedded server cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--room-defaults` cannot be used.
    #[error(transparent)]
    Defaults(#[from] DefaultsError),
    /// The admin token cannot be read or created.
    #[error("admin token: {0}")]
    AdminToken(#[from] SecretError),
    /// The admin keys file cannot be read or is refused.
    #[error("admin keys {0}")]
    AdminKeys(#[from] ReloadError),
    /// The moderation hook, webhook or word lists flags cannot be used.
    #[error(transparent)]
    Backend(#[from] BackendArgsError),
    /// QUIC's certificate cannot be loaded, made or written.
    #[error("quic certificate: {0}")]
    Tls(#[from] TlsError),
}

/// Where a secret came from, and whether this start created it.
#[derive(Debug)]
pub struct Secret {
    pub source: SecretSource,
    pub created: bool,
}

/// The identity QUIC presents, and where a generated one was written.
#[derive(Debug)]
pub struct QuicIdentity {
    pub identity: TlsIdentity,
    pub written_to: Option<PathBuf>,
}

impl EmbeddedArgs {
    /// The server's settings: its room defaults and its admin token (the
    /// token file is created when absent), and where the token came from.
    pub fn config(&self) -> Result<(EmbeddedConfig, Secret), ConfigError> {
        let room_defaults = self.ops.room_defaults()?;
        let source = self
            .ops
            .admin_token_source()
            .unwrap_or_else(|| SecretSource::File(default_admin_token_file()));
        let (admin_token, created) = source.load_admin(true)?;
        let config = EmbeddedConfig {
            node: self.node.config(),
            rooms: RoomServiceConfig {
                workers: self.room_workers.unwrap_or(cpus()),
                room_defaults,
                backend: self.ops.backend.backend()?,
                ..RoomServiceConfig::default()
            },
            drain_grace: self.node.drain_grace(),
            admin_token: Some(admin_token),
            admin_keys: self.ops.admin_keys()?,
            public_url: self.listen.public_url.clone(),
            verifier: None,
        };
        Ok((config, Secret { source, created }))
    }

    /// QUIC's identity: from --quic-cert and --quic-key, else self-signed
    /// and written where clients find it; `None` with --no-quic.
    pub fn quic_identity(&self) -> Result<Option<QuicIdentity>, ConfigError> {
        if self.listen.no_quic {
            return Ok(None);
        }
        if let Some(identity) = self.listen.quic_identity()? {
            return Ok(Some(QuicIdentity {
                identity,
                written_to: None,
            }));
        }
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let ip = self.listen.quic_listen.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            names.push(ip.to_string());
        }
        let identity = TlsIdentity::self_signed(&names)?;
        let path = self
            .quic_cert_out
            .clone()
            .unwrap_or_else(quic::default_cert_file);
        identity.write_cert(&path)?;
        Ok(Some(QuicIdentity {
            identity,
            written_to: Some(path),
        }))
    }
}

/// The terminal chat client, the Rust client library's example.
const CHAT: &str = "cargo run -p chatroom-client --example chat --";

/// A secret's origin as the banner shows it.
fn describe(secret: &Secret, flag: &str) -> String {
    match &secret.source {
        SecretSource::Inline(_) => format!("given by {flag}"),
        SecretSource::File(path) if secret.created => format!("{} (created)", path.display()),
        SecretSource::File(path) => path.display().to_string(),
    }
}

/// What the server prints when it is up: where it listens, where its
/// secrets are, and what to run next.
pub fn banner(
    listeners: &Listeners,
    tokens: &Secret,
    admin: &Secret,
    cert_file: Option<&Path>,
) -> std::io::Result<String> {
    let ws = listeners.ws.local_addr()?;
    let http = listeners.http.local_addr()?;
    let mut lines = vec![
        "chatroom embedded server".to_owned(),
        format!("  websocket  ws://{ws}/ws"),
    ];
    if let Some(quic) = &listeners.quic {
        lines.push(format!("  quic       quic://{}", quic.local_addr()?));
        if let Some(path) = cert_file {
            lines.push(format!("  cert       {} (self-signed)", path.display()));
        }
        lines.push(format!("  sha256     {}", quic.identity().fingerprint()));
    }
    lines.extend([
        format!("  http       http://{http}  (/healthz, /readyz, /metrics, /admin/v1, /widget.js)"),
        format!("  demo       http://{http}/demo?room=demo"),
        format!("  secret     {}", describe(tokens, "--token-secret")),
        format!("  admin      {}", describe(admin, "--admin-token")),
        "  token      cargo run -p chatroom-embedded -- token --user alice".to_owned(),
        format!("  chat       {CHAT} --room demo --user alice"),
    ]);
    if listeners.quic.is_some() {
        lines.push(format!(
            "  over quic  {CHAT} --room demo --user bob --transport quic"
        ));
    }
    let default_http: SocketAddr = ([127, 0, 0, 1], 7401).into();
    let url = if http == default_http {
        String::new()
    } else {
        format!("--url http://{http} ")
    };
    lines.push(format!(
        "  ops        cargo run -p room-svc -- admin {url}stats demo"
    ));
    Ok(lines.join("\n"))
}
