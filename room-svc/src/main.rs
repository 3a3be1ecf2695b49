//! `room-svc`: one room service of a cluster (ZooKeeper for membership,
//! Redis for room state).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chatroom_cluster::registry::ZkConfig;
use chatroom_cluster::telemetry::{self, LogArgs};
use clap::Parser;
use room_svc::RoomServiceConfig;
use room_svc::server::{self, Listeners, ServerConfig};
use tokio::net::TcpListener;

/// Exit status for a configuration that cannot work (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "room-svc",
    version,
    about = "chatroom room service (one node of a cluster)"
)]
struct Args {
    /// ZooKeeper to register in (host:port[,host:port...]).
    #[arg(long, env = "CHATROOM_ZK")]
    zk: String,
    /// The cluster's name: its nodes register under /chatroom/NAME and its
    /// rooms live under chatroom:NAME: in Redis.
    #[arg(long, env = "CHATROOM_CLUSTER", default_value = "default")]
    cluster: String,
    /// This node's id, unique in the cluster.
    #[arg(long, env = "CHATROOM_NODE_ID")]
    node_id: String,
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
    log: LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = telemetry::init(&args.log) {
        eprintln!("room-svc: bad log settings: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Err(error) = chatroom_proto::ids::check_id(&args.node_id) {
        eprintln!("room-svc: node id {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("room-svc: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = ServerConfig {
        node_id: args.node_id,
        cluster: args.cluster.clone(),
        zookeeper: ZkConfig {
            connect: args.zk,
            root: format!("/chatroom/{}", args.cluster),
            session_timeout: Duration::from_millis(args.zk_session_timeout_ms),
        },
        redis: args.redis,
        rooms: RoomServiceConfig {
            workers: args.room_workers.unwrap_or(cpus),
            ..RoomServiceConfig::default()
        },
        public_link_addr: args.public_link_addr,
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
        Args::command().debug_assert();
    }
}
