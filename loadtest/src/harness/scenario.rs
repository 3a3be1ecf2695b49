//! The scenarios and their flags, and how each becomes rooms of users.

use std::path::PathBuf;

use chatroom_client::Transport;
use chatroom_cluster::quic::Fingerprint;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use super::plan::{ClientKind, PlanRoom};

/// The default room limit (NORMAL lane, msg/s): the flood sends ten times it.
pub const ROOM_LIMIT: f64 = 200.0;

/// The reference broker a run is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Debian's nats-server, started here for the run.
    LocalNats,
    /// A NATS server already running, `HOST:PORT`.
    Nats(String),
}

impl Peer {
    /// Parses `nats://local` or `nats://HOST:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = || format!("expected nats://HOST:PORT or nats://local, not {text}");
        let addr = text.strip_prefix("nats://").ok_or_else(usage)?;
        if addr == "local" {
            return Ok(Self::LocalNats);
        }
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Nats(addr.to_owned()))
            }
            _ => Err(usage()),
        }
    }
}

/// `--transport`: a [`Transport`] by name, the names listed in `--help`.
pub fn transport_flag() -> impl TypedValueParser<Value = Transport> {
    PossibleValuesParser::new(Transport::ALL.map(Transport::name)).try_map(|name| name.parse())
}

/// Flags every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// URLs of a running target, comma-separated: ws://HOST:PORT/ws or
    /// quic://HOST:PORT as --transport says (users are spread over them and
    /// follow redirects).
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["spawn_local", "simulate"])]
    pub target: Vec<String>,
    /// The target's token secret file, with --target.
    #[arg(long, env = "CHATROOM_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// Start the target on this machine (the embedded server, or a cluster
    /// with --msg-svcs) and measure its processes.
    #[arg(long, conflicts_with = "target")]
    pub spawn_local: bool,
    /// With --spawn-local: message services of a local cluster; 0 runs the
    /// embedded server (one process).
    #[arg(long, default_value_t = 0)]
    pub msg_svcs: usize,
    /// With --spawn-local and --msg-svcs: room services.
    #[arg(long, default_value_t = 1)]
    pub room_svcs: usize,
    /// A flag passed to every spawned server process, e.g.
    /// --server-arg=--shards=2 (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Users (each one real connection; simulated with --simulate).
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
    /// Messages per second, all rooms together.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Users that send, per room.
    #[arg(long)]
    pub senders: Option<u64>,
    /// Length of the measured phase, seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Where report.json and chart.svg go.
    #[arg(long, default_value = "loadtest-out")]
    pub out: PathBuf,
    /// How clients connect; several (`ws,quic`) run the scenario over each
    /// in turn, against a fresh target each with --spawn-local, and
    /// compare them.
    #[arg(long, value_parser = transport_flag(), value_delimiter = ',', default_value = "ws")]
    pub transport: Vec<Transport>,
    /// QUIC with --target: trust the server certificate in this PEM file.
    #[arg(long, conflicts_with_all = ["fingerprint", "spawn_local"])]
    pub cert: Option<PathBuf>,
    /// QUIC with --target: trust the server certificate with this SHA-256
    /// fingerprint.
    #[arg(long, conflicts_with = "spawn_local")]
    pub fingerprint: Option<Fingerprint>,
    /// Which client plays the users.
    #[arg(long, value_enum, default_value_t)]
    pub client: ClientKind,
    /// A system notice (PRIORITY) per room this often, ms; 0 for none.
    #[arg(long)]
    pub notice_every_ms: Option<u64>,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Worker processes; default: one per 15,000 users.
    #[arg(long)]
    pub workers: Option<u32>,
    /// New connections per second, all workers together.
    #[arg(long, default_value_t = 4_000)]
    pub connect_rate: u32,
    /// Run the same giant-room against a NATS server side by side:
    /// nats://HOST:PORT, or nats://local to start Debian's nats-server.
    #[arg(long, value_parser = Peer::parse)]
    pub peer: Option<Peer>,
    /// Run the real fan-out core in this process with simulated users
    /// instead of connections.
    #[arg(long, conflicts_with_all = ["target", "spawn_local", "peer"])]
    pub simulate: bool,
    /// With --simulate: the share of sessions that read slowly (their
    /// socket refuses every other push; they pull a round late).
    #[arg(long, default_value_t = 0.01, requires = "simulate")]
    pub laggards: f64,
    /// With --spawn-local: run the servers with a moderation hook (an HTTP
    /// receiver started here) that accepts every message after this many
    /// ms, to measure what the hook costs.
    #[arg(long, requires = "spawn_local")]
    pub hook_delay_ms: Option<u64>,
    /// The program to run workers with (`loadtest worker`); default: this one.
    #[arg(long, hide = true)]
    pub worker_exe: Option<PathBuf>,
}

/// The scenarios.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// One room, many users, a few senders, a trickle of notices.
    GiantRoom,
    /// Many rooms with Zipf sizes.
    ManyRooms {
        /// Rooms.
        rooms: u64,
        /// Zipf exponent of the sizes.
        zipf_s: f64,
    },
    /// Everyone joins one room at once; nobody sends.
    JoinStorm,
    /// Senders at ten times the room limit, notices mixed in.
    Flood,
    /// A share of the users drop and resume by cursor over and over.
    ReconnectStorm {
        /// Share of users that reconnect.
        fraction: f64,
        /// How often each of them does, ms.
        every_ms: u64,
    },
    /// The giant room at a modest rate for a long time.
    Soak,
    /// Rooms of equal size, a sender and a notifier in each, while
    /// processes of the cluster fail (`loadtest faults`).
    Faults {
        /// Rooms.
        rooms: u64,
    },
}

impl Scenario {
    /// As reports name it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::GiantRoom => "giant-room",
            Self::ManyRooms { .. } => "many-rooms",
            Self::JoinStorm => "join-storm",
            Self::Flood => "flood",
            Self::ReconnectStorm { .. } => "reconnect-storm",
            Self::Soak => "soak",
            Self::Faults { .. } => "faults",
        }
    }

    /// The rooms and their users for `args`.
    pub fn rooms(&self, args: &RunArgs) -> Vec<PlanRoom> {
        let notice = |default| args.notice_every_ms.unwrap_or(default);
        let giant = |rate: f64, senders: u64, notice_every_ms| {
            vec![PlanRoom {
                name: "giant".into(),
                first_user: 0,
                users: args.users,
                senders: senders.min(args.users),
                rate,
                notice_every_ms,
            }]
        };
        match self {
            Self::GiantRoom | Self::ReconnectStorm { .. } => giant(
                args.rate.unwrap_or(ROOM_LIMIT),
                args.senders.unwrap_or(4),
                notice(1_000),
            ),
            Self::Soak => giant(
                args.rate.unwrap_or(50.0),
                args.senders.unwrap_or(2),
                notice(5_000),
            ),
            Self::Flood => giant(
                args.rate.unwrap_or(10.0 * ROOM_LIMIT),
                args.senders.unwrap_or(10),
                notice(200),
            ),
            Self::JoinStorm => giant(0.0, 0, 0),
            Self::Faults { rooms } => {
                let rooms = (*rooms).clamp(1, args.users.max(1));
                let mut first_user = 0;
                (0..rooms)
                    .map(|index| {
                        // The first rooms take one user more when they do
                        // not divide evenly.
                        let users = args.users / rooms + u64::from(index < args.users % rooms);
                        let room = PlanRoom {
                            name: format!("faults-{index}"),
                            first_user,
                            users,
                            senders: args.senders.unwrap_or(1).min(users),
                            rate: args.rate.unwrap_or(20.0),
                            notice_every_ms: notice(500),
                        };
                        first_user += users;
                        room
                    })
                    .collect()
            }
            Self::ManyRooms { rooms, zipf_s } => {
                let sizes = zipf_sizes(args.users, *rooms, *zipf_s);
                let rate = args.rate.unwrap_or(ROOM_LIMIT);
                let mut first_user = 0;
                sizes
                    .into_iter()
                    .enumerate()
                    .map(|(index, users)| {
                        let room = PlanRoom {
                            name: format!("room-{index}"),
                            first_user,
                            users,
                            senders: args.senders.unwrap_or(1).min(users),
                            rate: rate * users as f64 / args.users as f64,
                            notice_every_ms: if index == 0 { notice(1_000) } else { 0 },
                        };
                        first_user += users;
                        room
                    })
                    .collect()
            }
        }
    }
}

/// `rooms` sizes adding up to `users`, the k-th proportional to 1/k^s, each
/// at least 1 (as long as there are enough users).
pub fn zipf_sizes(users: u64, rooms: u64, s: f64) -> Vec<u64> {
    let rooms = rooms.clamp(1, users.max(1));
    let weights: Vec<f64> = (1..=rooms).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let spare = users - rooms;
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| 1 + (spare as f64 * w / total).floor() as u64)
        .collect();
    // Rounding leaves a few users over: the largest rooms take them.
    let mut left = users - sizes.iter().sum::<u64>();
    for size in sizes.iter_mut() {
        if left == 0 {
            break;
        }
        *size += 1;
        left -= 1;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_sizes_add_up_and_fall_off() {
        let sizes = zipf_sizes(10_000, 100, 1.0);
        assert_eq!(sizes.len(), 100);
        assert_eq!(sizes.iter().sum::<u64>(), 10_000);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        assert!(sizes[0] > 15 * sizes[99], "{} vs {}", sizes[0], sizes[99]);
        assert!(sizes.iter().all(|&s| s >= 1));
        assert_eq!(zipf_sizes(3, 10, 1.0), [1, 1, 1]);
    }

    #[test]
    fn peers_are_nats_urls_with_a_port_or_local() {
        assert_eq!(Peer::parse("nats://local"), Ok(Peer::LocalNats));
        assert_eq!(
            Peer::parse("nats://127.0.0.1:4222"),
            Ok(Peer::Nats("127.0.0.1:4222".into()))
        );
        for bad in [
            "127.0.0.1:4222",
            "nats://",
            "nats://host",
            "nats://host:x",
            "nats://:4222",
        ] {
            assert!(Peer::parse(bad).is_err(), "{bad}");
        }
    }
}
