//! The `loadtest` binary: one subcommand per load scenario, `faults` (the
//! fault suite) and `cluster` (a local cluster on loopback).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use chatroom_cluster::telemetry::{self, LogArgs};
use clap::{Parser, Subcommand};
use loadtest::faults::FaultArgs;
use loadtest::harness::coordinator::{self, Target};
use loadtest::harness::report::Report;
use loadtest::harness::scenario::{RunArgs, Scenario};
use loadtest::harness::simulate::{self, SimSpec};
use loadtest::harness::worker;
use loadtest::local::{self, ClusterSpec, LocalCluster};

/// Exit status for a configuration that cannot work (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// chatroom load harness.
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
    /// A local cluster on loopback: ZooKeeper, Redis, room-svc and msg-svc
    /// processes (what `scripts/cluster` runs).
    Cluster(ClusterArgs),
    /// One room, many users, a few senders, a trickle of priority notices.
    GiantRoom(RunArgs),
    /// Many rooms with Zipf-distributed sizes.
    ManyRooms {
        #[command(flatten)]
        run: RunArgs,
        /// Rooms.
        #[arg(long, default_value_t = 100)]
        rooms: u64,
        /// Zipf exponent of the room sizes.
        #[arg(long, default_value_t = 1.0)]
        zipf_s: f64,
    },
    /// Every user joins one room as fast as possible.
    JoinStorm(RunArgs),
    /// Senders at ten times the room limit, priority notices mixed in.
    Flood(RunArgs),
    /// A share of the users drop and resume by cursor, over and over.
    ReconnectStorm {
        #[command(flatten)]
        run: RunArgs,
        /// Share of the users that reconnect.
        #[arg(long, default_value_t = 0.1)]
        reconnect_fraction: f64,
        /// How often each of them does, ms.
        #[arg(long, default_value_t = 2_000)]
        reconnect_every_ms: u64,
    },
    /// The giant room at a modest rate for a long time.
    Soak(RunArgs),
    /// A local cluster under load while each kind of process fails in turn
    /// (kill -9, ZooKeeper frozen, Redis restarted, a msg-svc cut off);
    /// fails unless no PRIORITY message was lost, every delivery is
    /// accounted for and every fault recovered in time.
    Faults(FaultArgs),
    /// (internal) A worker process of a scenario run.
    #[command(hide = true)]
    Worker,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init(&cli.log) {
        eprintln!("loadtest: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Cluster(args) => cluster(args),
        // A worker runs its own single-threaded runtime.
        Command::Worker => match worker::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("loadtest worker: {error:#}");
                ExitCode::FAILURE
            }
        },
        command => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(command)),
            Err(error) => {
                eprintln!("loadtest: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Cluster(_) | Command::Worker => unreachable!("handled before the runtime starts"),
        Command::GiantRoom(run) => scenario(Scenario::GiantRoom, run).await,
        Command::ManyRooms { run, rooms, zipf_s } => {
            scenario(Scenario::ManyRooms { rooms, zipf_s }, run).await
        }
        Command::JoinStorm(run) => scenario(Scenario::JoinStorm, run).await,
        Command::Flood(run) => scenario(Scenario::Flood, run).await,
        Command::ReconnectStorm {
            run,
            reconnect_fraction,
            reconnect_every_ms,
        } => {
            let storm = Scenario::ReconnectStorm {
                fraction: reconnect_fraction,
                every_ms: reconnect_every_ms,
            };
            scenario(storm, run).await
        }
        Command::Soak(run) => scenario(Scenario::Soak, run).await,
        Command::Faults(args) => match faults(&args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("loadtest faults: {error:#}");
                ExitCode::FAILURE
            }
        },
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
                    let quic = node
                        .quic_url
                        .as_deref()
                        .map_or(String::new(), |url| format!(" {url}"));
                    println!(
                        "  {:<10} {at}{quic}  (http {}, log {})",
                        node.id, node.http_addr, node.log
                    );
                }
                println!("  secret     {}", state.token_secret_file);
                println!("  admin      {}", state.admin_token_file);
                println!("  quic cert  {}", state.quic_cert_file);
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

async fn scenario(scenario: Scenario, args: RunArgs) -> ExitCode {
    match run_scenario(&scenario, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadtest {}: {error:#}", scenario.name());
            ExitCode::FAILURE
        }
    }
}

async fn run_scenario(scenario: &Scenario, args: &RunArgs) -> anyhow::Result<()> {
    if args.peer.is_some() && !matches!(scenario, Scenario::GiantRoom) {
        anyhow::bail!("--peer runs with giant-room only");
    }
    std::fs::create_dir_all(&args.out)?;
    if args.simulate {
        let spec = SimSpec::of(scenario, args)?;
        let report = tokio::task::spawn_blocking(move || simulate::run(&spec)).await?;
        return write_report(&report, &args.out);
    }
    let mut reports = Vec::new();
    for &transport in &args.transport {
        let target_args = args.clone();
        let target =
            tokio::task::spawn_blocking(move || Target::prepare(&target_args, transport)).await??;
        reports.push(coordinator::run(scenario, args, &target).await?);
        // Stopped before the next run, so no two share the machine.
        drop(target);
    }
    let mut others = reports.split_off(1);
    let mut report = reports.pop().context("--transport names at least one")?;
    report.other_transports.append(&mut others);
    if let Some(peer) = &args.peer {
        let nats = Target::nats(peer, &args.out)?;
        report.peer = Some(Box::new(coordinator::run(scenario, args, &nats).await?));
    }
    write_report(&report, &args.out)
}

/// Runs the fault suite; prints its table and writes `faults.json`.
/// Whether it passed.
async fn faults(args: &FaultArgs) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.out)?;
    let report = loadtest::faults::run(args).await?;
    let path = args.out.join("faults.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    print!("{}", report.summary());
    println!("written {}", path.display());
    Ok(report.failures.is_empty())
}

/// Writes `report.json` and `chart.svg` to `out` and prints the summary.
fn write_report(report: &Report, out: &Path) -> anyhow::Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("chart.svg"), report.chart())?;
    print!("{}", report.summary());
    println!(
        "  written            {}/report.json, {}/chart.svg",
        out.display(),
        out.display()
    );
    Ok(())
}
