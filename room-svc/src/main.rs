//! `room-svc`: one room service of a cluster (ZooKeeper for membership,
//! Redis for room state), or `room-svc admin …`, the operators' CLI.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chatroom_cluster::auth::{AdminToken, SecretError};
use chatroom_cluster::registry::ZkConfig;
use chatroom_cluster::telemetry::{self, LogArgs};
use chatroom_proto::cluster::v1::RoomConfig;
use clap::{Parser, Subcommand};
use room_svc::RoomServiceConfig;
use room_svc::admin::cli::AdminArgs;
use room_svc::server::{self, Listeners, OpsArgs, ServerConfig};
use tokio::net::TcpListener;

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
    serve: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operate rooms through the admin API (of a room service or the
    /// embedded server).
    Admin(AdminArgs),
}

#[derive(Debug, clap::Args)]
struct Args {
    /// ZooKeeper to register in (host:port[,host:port...]); required to
    /// serve.
    #[arg(long, env = "CHATROOM_ZK")]
    zk: Option<String>,
    /// The cluster's name: its nodes register under /chatroom/NAME and its
    /// rooms live under chatroom:NAME: in Redis.
    #[arg(long, env = "CHATROOM_CLUSTER", default_value = "default")]
    cluster: String,
    /// This node's id, unique in the cluster; required to serve.
    #[arg(long, env = "CHATROOM_NODE_ID")]
    node_id: Option<String>,
    /// Redis URL, the second-level store.
    #[arg(long, env = "CHATROOM_REDIS", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Where msg-svc nodes open their links.
    #[arg(long, env = "CHATROOM_LINK_LISTEN", default_value = "127.0.0.1:7500")]
    link_listen: SocketAddr,
    /// The link address registered for other nodes; default: --link-listen.
    #[arg(long, env = "CHATROOM_PUBLIC_LINK_ADDR")]
    public_link_addr: Option<String>,
    /// HTTP listen address (/healthz, /readyz).
    #[arg(long, env = "CHATROOM_HTTP_LISTEN", default_value = "127.0.0.1:7501")]
    http_listen: SocketAddr,
    /// How long ZooKeeper keeps this node registered without hearing from it,
    /// ms: how soon its rooms move if it dies.
    #[arg(long, env = "CHATROOM_ZK_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    zk_session_timeout_ms: u64,
    /// Room workers; default: one per CPU.
    #[arg(long, env = "CHATROOM_ROOM_WORKERS")]
    room_workers: Option<usize>,
    #[command(flatten)]
    ops: OpsArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Admin(admin)) => return room_svc::admin::cli::run(admin),
        None => cli.serve,
    };
    if let Err(error) = telemetry::init(&args.log) {
        eprintln!("room-svc: bad log settings: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let (Some(zk), Some(node_id)) = (args.zk.clone(), args.node_id.clone()) else {
        eprintln!("room-svc: serving needs --zk and --node-id (or run `room-svc admin ...`)");
        return ExitCode::from(EXIT_CONFIG);
    };
    if let Err(error) = chatroom_proto::ids::check_id(&node_id) {
        eprintln!("room-svc: node id {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let admin_token = match admin_token(&args) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("room-svc: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let room_defaults = match args.ops.room_defaults() {
        Ok(defaults) => defaults,
        Err(error) => {
            eprintln!("room-svc: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let node = Node {
        zk,
        node_id,
        admin_token,
        room_defaults,
    };
    match serve(args, node) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("room-svc: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The admin token from the flags; `None` (with a warning) when none is
/// given.
fn admin_token(args: &Args) -> Result<Option<AdminToken>, SecretError> {
    let Some(source) = args.ops.admin_token_source() else {
        tracing::warn!(
            "no admin token (--admin-token or --admin-token-file): the admin API refuses every request"
        );
        return Ok(None);
    };
    source.load_admin(false).map(|(token, _)| Some(token))
}

/// What the flags say about this node, checked.
struct Node {
    zk: String,
    node_id: String,
    admin_token: Option<AdminToken>,
    room_defaults: RoomConfig,
}

fn serve(args: Args, node: Node) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = ServerConfig {
        node_id: node.node_id,
        cluster: args.cluster.clone(),
        zookeeper: ZkConfig {
            connect: node.zk,
            root: format!("/chatroom/{}", args.cluster),
            session_timeout: Duration::from_millis(args.zk_session_timeout_ms),
        },
        redis: args.redis,
        rooms: RoomServiceConfig {
            workers: args.room_workers.unwrap_or(cpus),
            room_defaults: node.room_defaults,
            ..RoomServiceConfig::default()
        },
        public_link_addr: args.public_link_addr,
        admin_token: node.admin_token,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listeners = Listeners {
            links: TcpListener::bind(args.link_listen)
                .await
                .with_context(|| format!("cannot listen for links on {}", args.link_listen))?,
            http: TcpListener::bind(args.http_listen)
                .await
                .with_context(|| format!("cannot listen for http on {}", args.http_listen))?,
        };
        server::run(
            config,
            listeners,
            chatroom_cluster::serve::shutdown_signal(),
        )
        .await?;
        Ok(())
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
