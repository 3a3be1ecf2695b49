//! The flags of the binaries that serve a room service (`room-svc`, and
//! the embedded server for its room side), each also a `CHATROOM_*`
//! environment variable, and what they turn into.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;

use chatroom_cluster::auth::{AdminToken, SecretError, SecretSource};
use chatroom_cluster::link::tls::LinkTlsError;
use chatroom_cluster::membership::{JoinArgs, JoinArgsError};
use chatroom_cluster::reload::{ReloadError, Reloaded};
use chatroom_proto::cluster::v1::RoomConfig;
use tokio::net::TcpListener;

use super::{DefaultsError, Listeners, ServerConfig, load_room_defaults};
use crate::admin::keys::{self, AdminKeys};
use crate::core::{default_room_config, parse_lists_file};
use crate::hooks::{HookConfig, HookUrlError, ShortSecret, SigningSecret, WebhookConfig};
use crate::service::{Backend, RoomServiceConfig};
use crate::store::RedisTarget;

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
    /// JSON file of named admin keys, each a SHA-256 hash with scopes
    /// (read, moderate, configure, publish), reread every 2 s while the
    /// node runs; beside the admin token or instead of it. `room-svc admin
    /// new-key` makes an entry.
    #[arg(long, env = "CHATROOM_ADMIN_KEYS")]
    pub admin_keys: Option<PathBuf>,
    /// The app's backend: moderation hook, webhooks, default word lists.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// The flags that plug the app's backend in.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// The app's moderation hook: messages of each room's hook kinds (by
    /// default chat) are POSTed here, signed, and wait for its verdict
    /// (accept, reject, or replace the payload).
    #[arg(long, env = "CHATROOM_MODERATION_HOOK")]
    pub moderation_hook: Option<Uri>,
    /// Most messages in one request to the hook.
    #[arg(long, env = "CHATROOM_MODERATION_HOOK_BATCH", default_value_t = 32)]
    pub moderation_hook_batch: usize,
    /// How long a message waits for its batch to fill, e.g. 2ms.
    #[arg(long, env = "CHATROOM_MODERATION_HOOK_DELAY", default_value = "2ms", value_parser = humantime::parse_duration)]
    pub moderation_hook_delay: Duration,
    /// How long the hook has to answer; past it each room's policy applies
    /// (hook_failure: open or closed).
    #[arg(long, env = "CHATROOM_MODERATION_HOOK_TIMEOUT", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub moderation_hook_timeout: Duration,
    /// Most requests to the hook at once (over keep-alive connections).
    #[arg(
        long,
        env = "CHATROOM_MODERATION_HOOK_CONCURRENCY",
        default_value_t = 16
    )]
    pub moderation_hook_concurrency: usize,
    /// Where room events go (occupancy, joins, messages, moderation,
    /// closes, admin audit), as signed JSON batches, at least once.
    #[arg(long, env = "CHATROOM_WEBHOOK")]
    pub webhook: Option<Uri>,
    /// File holding the secret (at least 16 bytes) the hook's and the
    /// webhook's requests are signed with (X-Chatroom-Signature).
    #[arg(long, env = "CHATROOM_HOOK_SECRET_FILE")]
    pub hook_secret_file: Option<PathBuf>,
    /// JSON file of the word lists every room follows ({"lists": [...]});
    /// reread every 2 s while the node runs.
    #[arg(long, env = "CHATROOM_WORD_LISTS")]
    pub word_lists: Option<PathBuf>,
}

/// Why the backend's flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendArgsError {
    /// A hook or webhook is given without a secret to sign with.
    #[error("--moderation-hook and --webhook need --hook-secret-file")]
    NoSecret,
    /// The secret file cannot be read.
    #[error("{path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The secret is too short.
    #[error("the hook secret must be at least {} bytes", .0.0)]
    ShortSecret(ShortSecret),
    /// A hook URL cannot be used.
    #[error(transparent)]
    Url(#[from] HookUrlError),
    /// The default word lists file cannot be used.
    #[error("word lists {0}")]
    WordLists(#[from] ReloadError),
}

impl BackendArgs {
    /// The backend these flags describe (its tasks start with the room
    /// service).
    pub fn backend(&self) -> Result<Backend, BackendArgsError> {
        let secret = if self.moderation_hook.is_some() || self.webhook.is_some() {
            let path = self
                .hook_secret_file
                .as_ref()
                .ok_or(BackendArgsError::NoSecret)?;
            let text = std::fs::read(path).map_err(|source| BackendArgsError::SecretFile {
                path: path.clone(),
                source,
            })?;
            let trimmed = text.trim_ascii();
            Some(SigningSecret::new(trimmed).map_err(BackendArgsError::ShortSecret)?)
        } else {
            None
        };
        let hook = match (&self.moderation_hook, &secret) {
            (Some(url), Some(secret)) => {
                let mut config = HookConfig::new(url.clone(), secret.clone())?;
                config.batch_max = self.moderation_hook_batch.max(1);
                config.batch_delay = self.moderation_hook_delay;
                config.timeout = self.moderation_hook_timeout;
                config.max_in_flight = self.moderation_hook_concurrency.max(1);
                Some(config)
            }
            _ => None,
        };
        let webhook = match (&self.webhook, &secret) {
            (Some(url), Some(secret)) => Some(WebhookConfig::new(url.clone(), secret.clone())?),
            _ => None,
        };
        let word_lists = self
            .word_lists
            .as_ref()
            .map(|path| Reloaded::load(path, parse_lists_file))
            .transpose()?;
        Ok(Backend {
            hook,
            webhook,
            word_lists,
        })
    }
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

    /// The keys of `--admin-keys`, to be watched; `None` without the flag.
    /// The file must be good at start.
    pub fn admin_keys(&self) -> Result<Option<Reloaded<AdminKeys>>, ReloadError> {
        self.admin_keys.as_ref().map(keys::load).transpose()
    }
}

/// One room service of a cluster.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub join: JoinArgs,
    /// Redis URL, the second-level store: redis://[USER@]HOST:PORT[/DB],
    /// or rediss://… for TLS.
    #[arg(long, env = "CHATROOM_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// A file holding Redis' AUTH password (for the URL's user, if it names
    /// one), so that it is in no URL or command line.
    #[arg(long, env = "CHATROOM_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM certificates to trust for a rediss:// Redis instead of the
    /// system's.
    #[arg(long, env = "CHATROOM_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// A client certificate (PEM) for a Redis that requires one
    /// (tls-auth-clients); with --redis-key.
    #[arg(long, env = "CHATROOM_REDIS_CERT", requires = "redis_key")]
    pub redis_cert: Option<PathBuf>,
    /// The key of --redis-cert (PEM).
    #[arg(long, env = "CHATROOM_REDIS_KEY", requires = "redis_cert")]
    pub redis_key: Option<PathBuf>,
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
    /// The admin keys file cannot be read or is refused.
    #[error("admin keys {0}")]
    AdminKeys(#[from] ReloadError),
    /// A Redis password, CA or client certificate file cannot be read.
    #[error("{path}: {source}")]
    RedisFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The Redis password file holds no single-line UTF-8 password.
    #[error("--redis-password-file must hold one line of UTF-8, the password")]
    RedisPassword,
    /// Node links can be neither secured nor, by explicit choice, plaintext.
    #[error(transparent)]
    LinkTls(#[from] LinkTlsError),
    /// `--room-defaults` cannot be used.
    #[error(transparent)]
    Defaults(#[from] DefaultsError),
    /// The backend's flags cannot be used.
    #[error(transparent)]
    Backend(#[from] BackendArgsError),
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
            redis: self.redis_target()?,
            rooms: RoomServiceConfig {
                workers: self.room_workers.unwrap_or(cpus),
                room_defaults: self.ops.room_defaults()?,
                backend: self.ops.backend.backend()?,
                ..RoomServiceConfig::default()
            },
            public_link_addr: self.public_link_addr.clone(),
            admin_token: self.admin_token()?,
            admin_keys: self.ops.admin_keys()?,
            link_tls: self.join.link.server_config()?,
        })
    }

    /// Where Redis is, with the secrets the files hold.
    fn redis_target(&self) -> Result<RedisTarget, ArgsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ArgsError::RedisFile {
                path: path.clone(),
                source,
            })
        };
        let password = match &self.redis_password_file {
            None => None,
            Some(path) => {
                let bytes = read(path)?;
                let text = String::from_utf8(bytes).map_err(|_| ArgsError::RedisPassword)?;
                let password = text.strip_suffix('\n').unwrap_or(&text);
                let password = password.strip_suffix('\r').unwrap_or(password);
                if password.is_empty() || password.contains(['\n', '\r']) {
                    return Err(ArgsError::RedisPassword);
                }
                Some(password.to_owned())
            }
        };
        let client_cert = match (&self.redis_cert, &self.redis_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(RedisTarget {
            url: self.redis.clone(),
            password,
            ca: self.redis_ca.as_ref().map(read).transpose()?,
            client_cert,
        })
    }

    /// The admin token from the flags; `None` when none is given (with a
    /// warning when there are no admin keys either).
    fn admin_token(&self) -> Result<Option<AdminToken>, SecretError> {
        let Some(source) = self.ops.admin_token_source() else {
            if self.ops.admin_keys.is_none() {
                tracing::warn!(
                    "no admin token or keys (--admin-token, --admin-token-file or --admin-keys): the admin API refuses every request"
                );
            }
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
