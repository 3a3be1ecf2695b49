//! The `loadtest` binary: one subcommand per load scenario, `faults` (the
//! fault suite) and `cluster` (a local cluster on loopback).

use std::process::ExitCode;

use chatroom_cluster::telemetry::{self, LogArgs};
use clap::{Parser, Subcommand};
use loadtest::faults::{self, FaultArgs};
use loadtest::harness::scenario::{RunArgs, Scenario};
use loadtest::harness::{self, worker};
use loadtest::local::ClusterCommand;

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
    Cluster(ClusterCommand),
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
    /// A local cluster under load, with admin notices through every room
    /// service, while each kind of fault happens in turn (kill -9,
    /// ZooKeeper frozen, Redis restarted, partitions from ZooKeeper, Redis
    /// or the room services, a stall, flapping links); fails unless no
    /// PRIORITY message was lost, every delivery is accounted for, the
    /// history checker found nothing and every fault recovered in time.
    Faults(FaultArgs),
    /// (internal) A worker process of a scenario run.
    #[command(hide = true)]
    Worker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init(&cli.log) {
        eprintln!("loadtest: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Cluster(command) => cluster(&command),
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
        Command::Faults(args) => match faults::run_suite(&args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("loadtest faults: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn cluster(command: &ClusterCommand) -> ExitCode {
    match command.run() {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadtest cluster: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn scenario(scenario: Scenario, args: RunArgs) -> ExitCode {
    match harness::run(&scenario, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadtest {}: {error:#}", scenario.name());
            ExitCode::FAILURE
        }
    }
}
