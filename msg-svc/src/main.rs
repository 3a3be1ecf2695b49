//! `msg-svc`: serve (`--standalone` runs both roles in one process) or mint a
//! client token (`msg-svc token --user alice`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chatroom_cluster::auth::{Roles, SecretSource, default_admin_token_file, default_secret_file};
use chatroom_cluster::quic::{self, Identity};
use chatroom_cluster::registry::ZkConfig;
use chatroom_cluster::telemetry::{self, LogArgs};
use clap::{Args, Parser, Subcommand};
use msg_svc::cluster::{self, ClusterConfig};
use msg_svc::standalone::{self, StandaloneConfig};
use msg_svc::{IpLimits, Listeners, NodeConfig, QuicListener, Rate};
use room_svc::RoomServiceConfig;
use room_svc::server::OpsArgs;
use tokio::net::TcpListener;

/// Exit status for a configuration that cannot work (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "msg-svc", version, about = "chatroom message service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a client token signed with this node's secret.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct SecretArgs {
    /// HS256 secret for client tokens (at least 16 bytes).
    #[arg(
        long,
        env = "CHATROOM_TOKEN_SECRET",
        hide_env_values = true,
        global = true
    )]
    token_secret: Option<String>,
    /// File holding the secret. Standalone mode creates it with a random
    /// secret when absent. Default: $XDG_STATE_HOME/chatroom/token-secret.
    #[arg(long, env = "CHATROOM_TOKEN_SECRET_FILE", global = true)]
    token_secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn source(&self) -> SecretSource {
        match (&self.token_secret, &self.token_secret_file) {
            (Some(secret), _) => SecretSource::Inline(secret.clone()),
            (None, Some(file)) => SecretSource::File(file.clone()),
            (None, None) => SecretSource::File(default_secret_file()),
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Run the room service and the message service in this one process,
    /// with in-memory state and no ZooKeeper or Redis.
    #[arg(long, env = "CHATROOM_STANDALONE", conflicts_with = "zk")]
    standalone: bool,
    /// Join a cluster through this ZooKeeper (host:port[,host:port...]).
    #[arg(long, env = "CHATROOM_ZK")]
    zk: Option<String>,
    /// The cluster's name: its nodes register under /chatroom/NAME.
    #[arg(long, env = "CHATROOM_CLUSTER", default_value = "default")]
    cluster: String,
    /// This node's id, unique in the cluster (required with --zk).
    #[arg(long, env = "CHATROOM_NODE_ID")]
    node_id: Option<String>,
    /// How long ZooKeeper keeps this node registered without hearing from it, ms.
    #[arg(long, env = "CHATROOM_ZK_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    zk_session_timeout_ms: u64,
    /// The WebSocket URL other nodes redirect this node's users to (and, in
    /// standalone, the one the demo page connects to); default:
    /// ws://WS_LISTEN/ws.
    #[arg(long, env = "CHATROOM_PUBLIC_URL")]
    public_url: Option<String>,
    /// WebSocket listen address (clients connect to ws://ADDR/ws).
    #[arg(long, env = "CHATROOM_WS_LISTEN", default_value = "127.0.0.1:7400")]
    ws_listen: SocketAddr,
    /// QUIC listen address, UDP (clients connect to quic://ADDR).
    #[arg(long, env = "CHATROOM_QUIC_LISTEN", default_value = quic::DEFAULT_ADDR)]
    quic_listen: SocketAddr,
    /// Serve WebSocket only.
    #[arg(long, env = "CHATROOM_NO_QUIC")]
    no_quic: bool,
    /// PEM certificate chain QUIC presents. Without it the embedded server
    /// generates a self-signed certificate, and a cluster node serves no QUIC.
    #[arg(long, env = "CHATROOM_QUIC_CERT", requires = "quic_key")]
    quic_cert: Option<PathBuf>,
    /// PEM private key of --quic-cert.
    #[arg(long, env = "CHATROOM_QUIC_KEY", requires = "quic_cert")]
    quic_key: Option<PathBuf>,
    /// Where the embedded server writes the certificate it generates, for
    /// clients to trust. Default: $XDG_STATE_HOME/chatroom/quic-cert.pem.
    #[arg(long, env = "CHATROOM_QUIC_CERT_OUT", conflicts_with = "quic_cert")]
    quic_cert_out: Option<PathBuf>,
    /// The QUIC URL other nodes redirect this node's QUIC users to;
    /// default: quic://QUIC_LISTEN.
    #[arg(long, env = "CHATROOM_PUBLIC_QUIC_URL")]
    public_quic_url: Option<String>,
    /// Client connections per transport; past it new ones are refused.
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,
    /// Connections one source address may hold open, per transport; 0 is
    /// unlimited.
    #[arg(long, env = "CHATROOM_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    max_connections_per_ip: usize,
    /// Connections one source address may open per second, per transport;
    /// 0 is unlimited.
    #[arg(long, env = "CHATROOM_CONNECT_RATE_PER_IP", default_value_t = 20)]
    connect_rate_per_ip: u32,
    /// Connections one source address may open at once before
    /// --connect-rate-per-ip applies.
    #[arg(long, env = "CHATROOM_CONNECT_BURST_PER_IP", default_value_t = 100)]
    connect_burst_per_ip: u32,
    /// Apply the per-address limits to loopback too (by default loopback is
    /// exempt: the load harness runs thousands of bots from 127.x.y.z).
    #[arg(long, env = "CHATROOM_LIMIT_LOOPBACK")]
    limit_loopback: bool,
    /// Browser origins allowed to open a WebSocket, comma-separated exact
    /// origins (`https://example.com`) or `*`; default: any. An upgrade
    /// without an Origin header (not a browser) is always allowed.
    #[arg(long, env = "CHATROOM_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Sends one session may make per second, on top of the room's limits
    /// (admin and system sessions are exempt); 0 is unlimited.
    #[arg(long, env = "CHATROOM_SESSION_SEND_PER_S", default_value_t = 20)]
    session_send_per_s: u32,
    /// Sends one session may make at once before --session-send-per-s applies.
    #[arg(long, env = "CHATROOM_SESSION_SEND_BURST", default_value_t = 40)]
    session_send_burst: u32,
    /// HTTP listen address (/healthz, /readyz).
    #[arg(long, env = "CHATROOM_HTTP_LISTEN", default_value = "127.0.0.1:7401")]
    http_listen: SocketAddr,
    /// Clients ping at least this often; three silent intervals end a session.
    #[arg(long, env = "CHATROOM_HEARTBEAT_MS", default_value_t = 10_000)]
    heartbeat_ms: u64,
    /// Largest client frame, bytes.
    #[arg(long, env = "CHATROOM_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    max_frame_bytes: usize,
    /// Rooms one session may join.
    #[arg(long, env = "CHATROOM_MAX_ROOMS_PER_SESSION", default_value_t = 16)]
    max_rooms_per_session: usize,
    /// Sessions (devices) one user may hold on a node.
    #[arg(long, env = "CHATROOM_MAX_SESSIONS_PER_USER", default_value_t = 16)]
    max_sessions_per_user: usize,
    /// Fan-out shards; default: one per CPU.
    #[arg(long, env = "CHATROOM_SHARDS")]
    shards: Option<usize>,
    /// Room-service workers; default: one per CPU.
    #[arg(long, env = "CHATROOM_ROOM_WORKERS")]
    room_workers: Option<usize>,
    /// How long shutdown waits for clients to leave, ms.
    #[arg(long, env = "CHATROOM_DRAIN_GRACE_MS", default_value_t = 5_000)]
    drain_grace_ms: u64,
    /// Standalone: the room defaults and the admin token.
    #[command(flatten)]
    ops: OpsArgs,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long)]
    user: String,
    /// A role to grant: admin or system (repeatable).
    #[arg(long = "role", value_parser = ["admin", "system"])]
    roles: Vec<String>,
    /// How long the token is valid, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Token(args)) => mint(args, &cli.serve.secret),
        None => serve(cli.serve),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("msg-svc: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn mint(args: &TokenArgs, secret: &SecretArgs) -> anyhow::Result<ExitCode> {
    let (key, _) = secret
        .source()
        .load(false)
        .context("no token secret (start `msg-svc --standalone` once, or pass --token-secret)")?;
    let token = key.mint(&args.user, Roles::from_names(&args.roles), args.ttl)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Err(error) = telemetry::init(&args.log) {
        eprintln!("msg-svc: bad log settings: {error}");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let mode = match (&args.zk, args.standalone) {
        (Some(zk), _) => {
            let Some(node_id) = args.node_id.clone() else {
                eprintln!("msg-svc: --zk needs --node-id (unique in the cluster)");
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            Mode::Cluster {
                zk: zk.clone(),
                node_id,
            }
        }
        (None, true) => match standalone_config(&args) {
            Ok((config, admin)) => Mode::Standalone(Box::new(config), admin),
            Err(error) => {
                eprintln!("msg-svc: {error:#}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        },
        (None, false) => {
            eprintln!(
                "msg-svc: give --standalone (everything in this process) or --zk (join a cluster)"
            );
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    // The embedded server makes its own secret; cluster nodes must share one.
    let source = args.secret.source();
    let (tokens, created) = match source.load(matches!(mode, Mode::Standalone(..))) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("msg-svc: {error}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let quic = match quic_identity(&args, &mode) {
        Ok(quic) => quic,
        Err(error) => {
            eprintln!("msg-svc: {error:#}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    runtime.block_on(async move {
        let cert_file = quic.as_ref().and_then(|q| q.written_to.clone());
        let quic = match quic {
            Some(quic) => Some(
                QuicListener::bind(args.quic_listen, quic.identity)
                    .with_context(|| format!("cannot listen for quic on {}", args.quic_listen))?,
            ),
            None => None,
        };
        let listeners = Listeners {
            ws: bind(args.ws_listen, "websocket").await?,
            quic,
            http: bind(args.http_listen, "http").await?,
        };
        match mode {
            Mode::Standalone(config, admin) => {
                let secrets = Secrets {
                    tokens: &source,
                    tokens_created: created,
                    admin: &admin,
                };
                banner(&listeners, &secrets, cert_file.as_deref())?;
                standalone::run(
                    *config,
                    tokens,
                    listeners,
                    chatroom_cluster::serve::shutdown_signal(),
                )
                .await?;
            }
            Mode::Cluster { zk, node_id } => {
                let config = ClusterConfig {
                    node: node_config(&args),
                    node_id,
                    zookeeper: ZkConfig {
                        connect: zk,
                        root: format!("/chatroom/{}", args.cluster),
                        session_timeout: Duration::from_millis(args.zk_session_timeout_ms),
                    },
                    public_url: args.public_url.clone(),
                    public_quic_url: args.public_quic_url.clone(),
                    drain_grace: Duration::from_millis(args.drain_grace_ms),
                };
                cluster::run(
                    config,
                    tokens,
                    listeners,
                    chatroom_cluster::serve::shutdown_signal(),
                )
                .await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The identity QUIC presents, and where a generated one was written.
struct QuicIdentity {
    identity: Identity,
    written_to: Option<PathBuf>,
}

/// QUIC's identity: from --quic-cert and --quic-key; else, for the
/// embedded server, self-signed and written where clients find it; else
/// (a cluster node) none, and the node serves WebSocket only.
fn quic_identity(args: &ServeArgs, mode: &Mode) -> anyhow::Result<Option<QuicIdentity>> {
    if args.no_quic {
        return Ok(None);
    }
    if let (Some(cert), Some(key)) = (&args.quic_cert, &args.quic_key) {
        let identity = Identity::load(cert, key)?;
        return Ok(Some(QuicIdentity {
            identity,
            written_to: None,
        }));
    }
    if !matches!(mode, Mode::Standalone(..)) {
        tracing::warn!(
            "QUIC is off: a cluster node needs --quic-cert and --quic-key (one certificate \
             clients trust on every node)"
        );
        return Ok(None);
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let ip = args.quic_listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let identity = Identity::self_signed(&names)?;
    let path = args
        .quic_cert_out
        .clone()
        .unwrap_or_else(quic::default_cert_file);
    identity.write_cert(&path)?;
    Ok(Some(QuicIdentity {
        identity,
        written_to: Some(path),
    }))
}

/// How this process serves.
enum Mode {
    Standalone(Box<StandaloneConfig>, AdminSecret),
    Cluster { zk: String, node_id: String },
}

fn node_config(args: &ServeArgs) -> NodeConfig {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    NodeConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(100)),
        max_frame_bytes: args.max_frame_bytes,
        max_connections: args.max_connections,
        ip_limits: IpLimits {
            max_connections: args.max_connections_per_ip,
            connect_rate: Rate {
                per_s: args.connect_rate_per_ip,
                burst: args.connect_burst_per_ip.max(1),
            },
            exempt_loopback: !args.limit_loopback,
        },
        allowed_origins: args.allowed_origins.clone().map(|origins| {
            origins
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect()
        }),
        session_send_rate: Rate {
            per_s: args.session_send_per_s,
            burst: args.session_send_burst.max(1),
        },
        max_rooms_per_session: args.max_rooms_per_session,
        max_sessions_per_user: args.max_sessions_per_user,
        shards: args.shards.unwrap_or(cpus),
        ..NodeConfig::default()
    }
}

/// The embedded server's settings: its room defaults and its admin token
/// (the token file is created when absent); where the token came from and
/// whether it was created.
fn standalone_config(args: &ServeArgs) -> anyhow::Result<(StandaloneConfig, AdminSecret)> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let room_defaults = args.ops.room_defaults()?;
    let source = args
        .ops
        .admin_token_source()
        .unwrap_or_else(|| SecretSource::File(default_admin_token_file()));
    let (admin_token, created) = source.load_admin(true)?;
    let config = StandaloneConfig {
        node: node_config(args),
        rooms: RoomServiceConfig {
            workers: args.room_workers.unwrap_or(cpus),
            room_defaults,
            ..RoomServiceConfig::default()
        },
        drain_grace: Duration::from_millis(args.drain_grace_ms),
        admin_token: Some(admin_token),
        public_url: args.public_url.clone(),
    };
    Ok((config, AdminSecret { source, created }))
}

/// Where the embedded server's admin token came from.
struct AdminSecret {
    source: SecretSource,
    created: bool,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// A secret's origin as the banner shows it.
fn describe(source: &SecretSource, created: bool, flag: &str) -> String {
    match source {
        SecretSource::Inline(_) => format!("given by {flag}"),
        SecretSource::File(path) if created => format!("{} (created)", path.display()),
        SecretSource::File(path) => path.display().to_string(),
    }
}

/// Where the embedded server's secrets are, for the banner.
struct Secrets<'a> {
    tokens: &'a SecretSource,
    tokens_created: bool,
    admin: &'a AdminSecret,
}

fn banner(
    listeners: &Listeners,
    secrets: &Secrets<'_>,
    cert_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let ws = listeners.ws.local_addr()?;
    let http = listeners.http.local_addr()?;
    let secret = describe(secrets.tokens, secrets.tokens_created, "--token-secret");
    let admin = describe(
        &secrets.admin.source,
        secrets.admin.created,
        "--admin-token",
    );
    println!("chatroom standalone server");
    println!("  websocket  ws://{ws}/ws");
    if let Some(quic) = &listeners.quic {
        println!("  quic       quic://{}", quic.local_addr()?);
        if let Some(path) = cert_file {
            println!("  cert       {} (self-signed)", path.display());
        }
        println!("  sha256     {}", quic.identity().fingerprint());
    }
    println!("  http       http://{http}  (/healthz, /readyz, /metrics, /admin/v1, /widget.js)");
    println!("  demo       http://{http}/demo?room=demo");
    println!("  secret     {secret}");
    println!("  admin      {admin}");
    println!("  token      cargo run -p msg-svc -- token --user alice");
    println!(
        "  chat       cargo run -p chatroom-client --example chat -- --room demo --user alice"
    );
    if listeners.quic.is_some() {
        println!(
            "  over quic  cargo run -p chatroom-client --example chat -- --room demo --user bob --transport quic"
        );
    }
    let url = if http.to_string() == "127.0.0.1:7401" {
        String::new()
    } else {
        format!("--url http://{http} ")
    };
    println!("  ops        cargo run -p room-svc -- admin {url}stats demo");
    Ok(())
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
