//! The flags of the binaries that serve a room service (`room-svc`, and
//! the embedded server for its room side), each also a `CHATROOM_*`
//! environment variable, and what they turn into.

use std::net::SocketAddr;
use std::path::PathBuf;

use chatroom_cluster::auth::{AdminToken, SecretError, SecretSource};
use chatroom_cluster::membership::{JoinArgs, JoinArgsError};
use chatroom_proto::cluster::v1::RoomConfig;
use tokio::net::TcpListener;

use super::{DefaultsError, Listeners, ServerConfig, load_room_defaults};
use crate::core::default_room_config;
use crate::service::RoomServiceConfig;

/// The flags of what operators set, taken by both binaries that run a room
/// service (a room service of a cluster, and the embedded server).
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// JSON object of room settings every room follows unless overridden
    /// (the fields of the admin API's config PATCH); unset fields keep the
    /// built-in defaults.
    #[arg(long, env = "CHATROOM_ROOM_DEFAULTS")]
    pub room_defaults: Option<PathBuf>,
    /// The admin API's bearer token (at least 16 bytes).
    #[arg(long, env = "CHATROOM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token. The embedded server creates it when
    /// absent (default: $XDG_STATE_HOME/chatroom/admin-token); a room
    /// service without a token refuses every admin request.
    #[arg(
        long,
        env = "CHATROOM_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
}

impl OpsArgs {
    /// The room defaults: the built-in ones, or `--room-defaults` laid over
    /// them.
    pub fn room_defaults(&self) -> Result<RoomConfig, DefaultsError> {
        match &self.room_defaults {
            Some(path) => load_room_defaults(path),
            None => Ok(default_room_config()),
        }
    }

    /// Where the admin token comes from: the flag or the file; `None` when
    /// neither is given.
    pub fn admin_token_source(&self) -> Option<SecretSource> {
        match (&self.admin_token, &self.admin_token_file) {
            (Some(token), _) => Some(SecretSource::Inline(token.clone())),
            (None, Some(file)) => Some(SecretSource::File(file.clone())),
            (None, None) => None,
        }
    }
}

/// One room service of a cluster.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub join: JoinArgs,
    /// Redis URL, the second-level store.
    #[arg(long, env = "CHATROOM_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Where msg-svc nodes open their links.
    #[arg(long, env = "CHATROOM_LINK_LISTEN", default_value = "127.0.0.1:7500")]
    pub link_listen: SocketAddr,
    /// The link address registered for other nodes; default: --link-listen.
    #[arg(long, env = "CHATROOM_PUBLIC_LINK_ADDR")]
    pub public_link_addr: Option<String>,
    /// HTTP listen address (/healthz, /readyz).
    #[arg(long, env = "CHATROOM_HTTP_LISTEN", default_value = "127.0.0.1:7501")]
    pub http_listen: SocketAddr,
    /// Room workers; default: one per CPU.
    #[arg(long, env = "CHATROOM_ROOM_WORKERS")]
    pub room_workers: Option<usize>,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Why the flags cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// Where to join the cluster, or as whom, is missing or unusable.
    #[error("{0} (or run `room-svc admin ...`)")]
    Join(#[from] JoinArgsError),
    /// The admin token cannot be read.
    #[error(transparent)]
    AdminToken(#[from] SecretError),
    /// `--room-defaults` cannot be used.
    #[error(transparent)]
    Defaults(#[from] DefaultsError),
    /// A listener cannot be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl ServeArgs {
    /// The node's settings, checked.
    pub fn config(&self) -> Result<ServerConfig, ArgsError> {
        let (zookeeper, node_id) = self.join.config()?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(ServerConfig {
            node_id,
            cluster: self.join.cluster.clone(),
            zookeeper,
            redis: self.redis.clone(),
            rooms: RoomServiceConfig {
                workers: self.room_workers.unwrap_or(cpus),
                room_defaults: self.ops.room_defaults()?,
                ..RoomServiceConfig::default()
            },
            public_link_addr: self.public_link_addr.clone(),
            admin_token: self.admin_token()?,
        })
    }

    /// The admin token from the flags; `None` (with a warning) when none is
    /// given.
    fn admin_token(&self) -> Result<Option<AdminToken>, SecretError> {
        let Some(source) = self.ops.admin_token_source() else {
            tracing::warn!(
                "no admin token (--admin-token or --admin-token-file): the admin API refuses every request"
            );
            return Ok(None);
        };
        source.load_admin(false).map(|(token, _)| Some(token))
    }

    /// Binds the link and HTTP listeners.
    pub async fn bind(&self) -> Result<Listeners, ArgsError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ArgsError::Bind { what, addr, source })
        };
        Ok(Listeners {
            links: bind("links", self.link_listen).await?,
            http: bind("http", self.http_listen).await?,
        })
    }
}
