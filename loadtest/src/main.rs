//! The `loadtest` binary: `chat` (a human in a room) and `cluster` (a local
//! cluster on loopback); the load scenarios come next.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chatroom_cluster::telemetry::{self, LogArgs};
use clap::{Parser, Subcommand};
use loadtest::chat::{self, ChatArgs};
use loadtest::local::{self, ClusterSpec, LocalCluster};

/// Exit status for a configuration that cannot work (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// chatroom terminal client and load harness.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chat in a room from the terminal: prints messages as they arrive and
    /// sends each line typed; Ctrl-D or Ctrl-C leaves.
    Chat(ChatArgs),
    /// A local cluster on loopback: ZooKeeper, Redis, room-svc and msg-svc
    /// processes (what `scripts/cluster` runs).
    Cluster(ClusterArgs),
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    #[command(subcommand)]
    action: ClusterAction,
    /// Where the cluster keeps its logs, data and state.
    #[arg(
        long,
        env = "CHATROOM_CLUSTER_DIR",
        default_value = ".chatroom/cluster",
        global = true
    )]
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Start a cluster and leave it running.
    Up {
        /// Room services to start.
        #[arg(long, default_value_t = 2)]
        room_svcs: usize,
        /// Message services to start.
        #[arg(long, default_value_t = 3)]
        msg_svcs: usize,
        /// ZooKeeper session timeout of every node, ms.
        #[arg(long, default_value_t = 4_000)]
        zk_session_timeout_ms: u64,
    },
    /// Stop the cluster started in --dir.
    Down,
    /// Show what runs in --dir and whether it is ready.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init(&cli.log) {
        eprintln!("loadtest: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Cluster(args) => cluster(args),
        Command::Chat(args) => {
            let token = match chat::token(&args) {
                Ok(token) => token,
                Err(error) => {
                    eprintln!("loadtest: {error:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match chat::run(&args, token).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("loadtest: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn cluster(args: ClusterArgs) -> ExitCode {
    let result = match args.action {
        ClusterAction::Up {
            room_svcs,
            msg_svcs,
            zk_session_timeout_ms,
        } => {
            let spec = ClusterSpec {
                room_svcs,
                msg_svcs,
                zk_session_timeout: Duration::from_millis(zk_session_timeout_ms),
                ..ClusterSpec::default()
            };
            LocalCluster::start(&spec, &args.dir).map(|cluster| {
                let state = cluster.detach();
                println!("cluster up in {}", args.dir.display());
                println!("  zookeeper  {}", state.zookeeper.addr);
                println!("  redis      {}", state.redis.addr);
                for node in &state.nodes {
                    let at = node.ws_url.as_deref().unwrap_or(&node.http_addr);
                    println!(
                        "  {:<10} {at}  (http {}, log {})",
                        node.id, node.http_addr, node.log
                    );
                }
                println!("  secret     {}", state.token_secret_file);
            })
        }
        ClusterAction::Down => local::stop_detached(&args.dir).map(|stopped| {
            println!("stopped: {}", stopped.join(", "));
        }),
        ClusterAction::Status => local::status(&args.dir).map(|lines| {
            for line in lines {
                println!("{line}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadtest cluster: {error}");
            ExitCode::FAILURE
        }
    }
}
