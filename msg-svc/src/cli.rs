//! The command line of the binaries that serve a msg-svc node (`msg-svc`, a
//! node of a cluster, and the embedded server `chatroom`): the flags they
//! share, each also a `CHATROOM_*` environment variable, and what they
//! turn into. The binaries' `main` parses them and calls `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatroom_cluster::auth::{
    AuthError, DisplayInfo, KeyError, PemKey, Roles, RoomRoles, SecretError, SecretSource,
    TokenAlgorithm, TokenClaims, TokenKey, Verifier, VerifierConfig, default_secret_file,
};
use chatroom_cluster::link::tls::LinkTlsError;
use chatroom_cluster::membership::{JoinArgs, JoinArgsError};
use chatroom_cluster::quic::{self, TlsError, TlsIdentity};
use clap::Args;
use tokio::net::TcpListener;

use crate::cluster::ClusterConfig;
use crate::{IpLimits, Listeners, NodeConfig, QuicListener, Rate};

/// Exit status for a configuration that cannot work (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// How often an identity provider's key files are checked for changes.
pub const KEYS_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Where the client-token secret comes from.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// HS256 secret for client tokens (at least 16 bytes).
    #[arg(
        long,
        env = "CHATROOM_TOKEN_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub token_secret: Option<String>,
    /// File holding the secret. The embedded server creates it with a
    /// random secret when absent. Default: $XDG_STATE_HOME/chatroom/token-secret.
    #[arg(long, env = "CHATROOM_TOKEN_SECRET_FILE", global = true)]
    pub token_secret_file: Option<PathBuf>,
    /// An identity provider's public key for client tokens, as
    /// `ALG=PATH` or `ALG:KID=PATH` (ALG one of RS256, ES256, EdDSA; the
    /// PEM file reloaded when it changes). Repeatable.
    #[arg(long = "token-public-key", env = "CHATROOM_TOKEN_PUBLIC_KEYS", value_delimiter = ',', value_parser = parse_pem_key, global = true)]
    pub token_public_keys: Vec<PemKey>,
    /// An identity provider's JWKS file (RFC 7517): keys chosen by the
    /// token's `kid`, each pinned to its algorithm; reloaded when it changes.
    #[arg(long, env = "CHATROOM_TOKEN_JWKS", global = true)]
    pub token_jwks: Option<PathBuf>,
    /// Tokens must name this audience (`aud`); without it `aud` is ignored.
    #[arg(long, env = "CHATROOM_TOKEN_AUDIENCE", global = true)]
    pub token_audience: Option<String>,
    /// Tokens must name this issuer (`iss`); without it `iss` is ignored.
    #[arg(long, env = "CHATROOM_TOKEN_ISSUER", global = true)]
    pub token_issuer: Option<String>,
}

impl SecretArgs {
    /// The flag, else the file.
    pub fn source(&self) -> SecretSource {
        match (&self.token_secret, &self.token_secret_file) {
            (Some(secret), _) => SecretSource::Inline(secret.clone()),
            (None, Some(file)) => SecretSource::File(file.clone()),
            (None, None) => SecretSource::File(default_secret_file()),
        }
    }

    /// Whether an identity provider's keys are given: then the shared
    /// secret is used only if it is given too.
    pub fn has_public_keys(&self) -> bool {
        !self.token_public_keys.is_empty() || self.token_jwks.is_some()
    }

    /// Whether the HS256 secret was named by a flag.
    pub fn names_secret(&self) -> bool {
        self.token_secret.is_some() || self.token_secret_file.is_some()
    }

    /// The verifier of client tokens: `secret` (if any) and the identity
    /// provider's keys, with the audience and issuer checks asked for.
    pub fn verifier(&self, secret: Option<TokenKey>) -> Result<Verifier, KeyError> {
        Verifier::new(VerifierConfig {
            secret,
            pem_keys: self.token_public_keys.clone(),
            jwks: self.token_jwks.clone(),
            audience: self.token_audience.clone(),
            issuer: self.token_issuer.clone(),
        })
    }
}

/// `ALG=PATH` or `ALG:KID=PATH`.
fn parse_pem_key(text: &str) -> Result<PemKey, String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ALG=PATH or ALG:KID=PATH"))?;
    let (alg, kid) = match name.split_once(':') {
        Some((alg, kid)) => (alg, Some(kid.to_owned())),
        None => (name, None),
    };
    let algorithm = TokenAlgorithm::from_name(alg)
        .filter(|alg| *alg != TokenAlgorithm::Hs256)
        .ok_or_else(|| format!("{alg:?} is not RS256, ES256 or EdDSA"))?;
    if path.is_empty() {
        return Err(format!("{text:?} names no file"));
    }
    Ok(PemKey {
        path: PathBuf::from(path),
        algorithm,
        kid,
    })
}

/// `token`: mint a client token with the node's secret.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long)]
    pub user: String,
    /// A role to grant: admin or system (repeatable).
    #[arg(long = "role", value_parser = ["admin", "system"])]
    pub roles: Vec<String>,
    /// A room the token grants (an id, or a prefix ending in `*` such as
    /// `vip:*`); private rooms need one. Repeatable.
    #[arg(long = "room")]
    pub rooms: Vec<String>,
    /// A room role, as `ROOM=moderator` or `ROOM=streamer` (ROOM may be a
    /// prefix pattern). Repeatable.
    #[arg(long = "room-role", value_parser = parse_room_role)]
    pub room_roles: Vec<(String, RoomRoles)>,
    /// The display name shown with the user's messages.
    #[arg(long)]
    pub name: Option<String>,
    /// A badge shown with the user's messages. Repeatable.
    #[arg(long = "badge")]
    pub badges: Vec<String>,
    /// The user's colour, `#rrggbb`.
    #[arg(long)]
    pub color: Option<String>,
    /// How long the token is valid, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// There is no secret to sign with.
    #[error("no token secret ({0}); start the embedded server once, or pass --token-secret")]
    Secret(#[from] SecretError),
    /// The secret refused the claims.
    #[error(transparent)]
    Token(#[from] AuthError),
}

impl TokenArgs {
    /// A token signed with `secret`'s key.
    pub fn mint(&self, secret: &SecretArgs) -> Result<String, MintError> {
        let (key, _) = secret.source().load(false)?;
        let mut claims = TokenClaims::new(&self.user).roles(Roles::from_names(&self.roles));
        for grant in &self.rooms {
            claims = claims.room(grant);
        }
        for (pattern, roles) in &self.room_roles {
            claims = claims.room_roles(pattern, *roles);
        }
        if self.name.is_some() || !self.badges.is_empty() || self.color.is_some() {
            claims = claims.info(DisplayInfo {
                name: self.name.clone(),
                badges: self.badges.clone(),
                color: self.color.clone(),
            });
        }
        Ok(key.mint_claims(&claims, self.ttl)?)
    }
}

/// `ROOM=moderator` or `ROOM=streamer`.
fn parse_room_role(text: &str) -> Result<(String, RoomRoles), String> {
    let (room, role) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ROOM=ROLE"))?;
    let roles = RoomRoles::from_names(&[role]);
    if roles.is_empty() {
        return Err(format!("{role:?} is not moderator or streamer"));
    }
    Ok((room.to_owned(), roles))
}

/// Where the node listens for clients and probes.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// WebSocket listen address (clients connect to ws://ADDR/ws).
    #[arg(long, env = "CHATROOM_WS_LISTEN", default_value = "127.0.0.1:7400")]
    pub ws_listen: SocketAddr,
    /// QUIC listen address, UDP (clients connect to quic://ADDR).
    #[arg(long, env = "CHATROOM_QUIC_LISTEN", default_value = quic::DEFAULT_ADDR)]
    pub quic_listen: SocketAddr,
    /// Serve WebSocket only.
    #[arg(long, env = "CHATROOM_NO_QUIC")]
    pub no_quic: bool,
    /// PEM certificate chain QUIC presents. Without it the embedded server
    /// generates a self-signed certificate, and a cluster node serves no QUIC.
    #[arg(long, env = "CHATROOM_QUIC_CERT", requires = "quic_key")]
    pub quic_cert: Option<PathBuf>,
    /// PEM private key of --quic-cert.
    #[arg(long, env = "CHATROOM_QUIC_KEY", requires = "quic_cert")]
    pub quic_key: Option<PathBuf>,
    /// The WebSocket URL other nodes redirect this node's users to (and, in
    /// the embedded server, the one the demo page connects to); default:
    /// ws://WS_LISTEN/ws.
    #[arg(long, env = "CHATROOM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// HTTP listen address (/healthz, /readyz, /metrics).
    #[arg(long, env = "CHATROOM_HTTP_LISTEN", default_value = "127.0.0.1:7401")]
    pub http_listen: SocketAddr,
}

/// Why the node could not listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A TCP listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The QUIC endpoint could not be bound.
    #[error("cannot listen for quic on {addr}: {source}")]
    Quic {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// QUIC's certificate or key could not be used.
    #[error(transparent)]
    TlsIdentity(#[from] TlsError),
}

impl ListenArgs {
    /// The identity QUIC presents from --quic-cert and --quic-key: `None`
    /// when they are not given (or QUIC is off).
    pub fn quic_identity(&self) -> Result<Option<TlsIdentity>, TlsError> {
        match (&self.quic_cert, &self.quic_key, self.no_quic) {
            (Some(cert), Some(key), false) => TlsIdentity::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// Binds the listeners, QUIC with `quic` if given.
    pub async fn bind(&self, quic: Option<TlsIdentity>) -> Result<Listeners, ListenError> {
        let quic = match quic {
            Some(identity) => Some(QuicListener::bind(self.quic_listen, identity).map_err(
                |source| ListenError::Quic {
                    addr: self.quic_listen,
                    source,
                },
            )?),
            None => None,
        };
        Ok(Listeners {
            ws: bind(self.ws_listen, "websocket").await?,
            quic,
            http: bind(self.http_listen, "http").await?,
        })
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { what, addr, source })
}

/// The node's own settings.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Client connections per transport; past it new ones are refused.
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Connections one source address may hold open, per transport; 0 is
    /// unlimited.
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Connections one source address may open per second, per transport;
    /// 0 is unlimited.
    #[arg(long, env = "CHATROOM_CONNECT_RATE_PER_IP", default_value_t = 20)]
    pub connect_rate_per_ip: u32,
    /// Connections one source address may open at once before
    /// --connect-rate-per-ip applies.
    #[arg(long, env = "CHATROOM_CONNECT_BURST_PER_IP", default_value_t = 100)]
    pub connect_burst_per_ip: u32,
    /// Apply the per-address limits to loopback too (by default loopback is
    /// exempt: the load harness runs thousands of bots from 127.x.y.z).
    #[arg(long, env = "CHATROOM_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,
    /// Browser origins allowed to open a WebSocket, comma-separated exact
    /// origins (`https://example.com`) or `*`; default: any. An upgrade
    /// without an Origin header (not a browser) is always allowed.
    #[arg(long, env = "CHATROOM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Sends one session may make per second, on top of the room's limits
    /// (admin and system sessions are exempt); 0 is unlimited.
    #[arg(long, env = "CHATROOM_SESSION_SEND_PER_S", default_value_t = 20)]
    pub session_send_per_s: u32,
    /// Sends one session may make at once before --session-send-per-s applies.
    #[arg(long, env = "CHATROOM_SESSION_SEND_BURST", default_value_t = 40)]
    pub session_send_burst: u32,
    /// Clients ping at least this often; three silent intervals end a session.
    #[arg(long, env = "CHATROOM_HEARTBEAT_MS", default_value_t = 10_000)]
    pub heartbeat_ms: u64,
    /// Largest client frame, bytes.
    #[arg(long, env = "CHATROOM_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Rooms one session may join.
    #[arg(long, env = "CHATROOM_MAX_ROOMS_PER_SESSION", default_value_t = 16)]
    pub max_rooms_per_session: usize,
    /// Sessions (devices) one user may hold on a node.
    #[arg(long, env = "CHATROOM_MAX_SESSIONS_PER_USER", default_value_t = 16)]
    pub max_sessions_per_user: usize,
    /// Fan-out shards; default: one per CPU.
    #[arg(long, env = "CHATROOM_SHARDS")]
    pub shards: Option<usize>,
    /// How long shutdown waits for clients to leave, ms.
    #[arg(long, env = "CHATROOM_DRAIN_GRACE_MS", default_value_t = 5_000)]
    pub drain_grace_ms: u64,
}

impl NodeArgs {
    /// The node's settings these flags give.
    pub fn config(&self) -> NodeConfig {
        NodeConfig {
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(100)),
            max_frame_bytes: self.max_frame_bytes,
            max_connections: self.max_connections,
            ip_limits: IpLimits {
                max_connections: self.max_connections_per_ip,
                connect_rate: Rate {
                    per_s: self.connect_rate_per_ip,
                    burst: self.connect_burst_per_ip.max(1),
                },
                exempt_loopback: !self.limit_loopback,
            },
            allowed_origins: self.allowed_origins.clone().map(|origins| {
                origins
                    .into_iter()
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            }),
            session_send_rate: Rate {
                per_s: self.session_send_per_s,
                burst: self.session_send_burst.max(1),
            },
            max_rooms_per_session: self.max_rooms_per_session,
            max_sessions_per_user: self.max_sessions_per_user,
            shards: self.shards.unwrap_or(cpus()),
            ..NodeConfig::default()
        }
    }

    /// How long shutdown waits for clients to leave.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }
}

/// The CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A node of a cluster: where it joins, and what it serves.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub join: JoinArgs,
    /// The QUIC URL other nodes redirect this node's QUIC users to;
    /// default: quic://QUIC_LISTEN.
    #[arg(long, env = "CHATROOM_PUBLIC_QUIC_URL")]
    pub public_quic_url: Option<String>,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Why the flags cannot make a node of a cluster.
#[derive(Debug, thiserror::Error)]
pub enum NotACluster {
    /// Where to join, or as whom, is missing or unusable.
    #[error("{0} (the embedded server, both roles in one process, is `chatroom`)")]
    Join(#[from] JoinArgsError),
    /// Node links can be neither secured nor, by explicit choice, plaintext.
    #[error(transparent)]
    LinkTls(#[from] LinkTlsError),
}

impl ClusterArgs {
    /// The node's settings these flags give.
    pub fn config(&self) -> Result<ClusterConfig, NotACluster> {
        let (zookeeper, node_id) = self.join.config()?;
        Ok(ClusterConfig {
            node: self.node.config(),
            node_id,
            zookeeper,
            public_url: self.listen.public_url.clone(),
            public_quic_url: self.public_quic_url.clone(),
            drain_grace: self.node.drain_grace(),
            link_tls: self.join.link.client_config()?,
        })
    }
}
