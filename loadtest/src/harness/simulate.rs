//! `loadtest --simulate`: the real msg-svc fan-out core (rings, notifier,
//! frame composition, pull path) driven in one process by up to a million
//! simulated sessions, without sockets.
//!
//! It answers "can one node's fan-out keep up with a million viewers, and
//! what does each cost": the cost the real harness cannot isolate because
//! socket writes dominate there.
//!
//! Layout:
//! - this file: [`SimSpec`], [`run`], and the report;
//! - `stamper`: the rooms' side: the scenario's messages decided and
//!   stamped by room-svc's room core and appended to each room's ring, as a
//!   Broadcast lands on msg-svc;
//! - `shard`: fan-out threads, each owning a [`Notifier`] for its share of
//!   the sessions (by session id, as msg-svc's shards do) and playing their
//!   clients;
//! - `meter`: latency histograms, per-second counts, CPU and memory readings.
//!
//! [`Notifier`]: msg_svc::notifier::Notifier

use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Barrier, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use chatroom_proto::cluster::v1::RoomConfig;
use chatroom_proto::v1::Cursor;
use msg_svc::NodeConfig;
use msg_svc::notifier::RoundConfig;
use msg_svc::ring::RoomRing;
use room_svc::core::{Now, default_room_config};
use tracing::warn;

use super::plan::PlanRoom;
use super::report::{Lanes, Report, ServerUse};
use super::scenario::{RunArgs, Scenario};
use super::stats::Tally;
use meter::Meter;
use shard::{Counters, Shard, ShardCmd, ShardOutcome};
use stamper::{Stamped, Stamper};

mod meter;
mod shard;
mod stamper;

#[cfg(test)]
mod tests;

/// The epoch of every simulated room's stream.
const EPOCH: u64 = 1;

/// Most simulated sessions one run holds (about 160 bytes each).
pub const MAX_USERS: u64 = 20_000_000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// Named in the report.
    pub scenario: String,
    /// The scenario's rooms: their sessions (each in one room), chat rate
    /// and notice interval.
    pub rooms: Vec<PlanRoom>,
    /// Length of the measured phase, during which messages are sent.
    pub duration: Duration,
    /// Payload size of every message; the first 8 bytes carry the stamp.
    pub payload_bytes: usize,
    /// Fan-out threads, as msg-svc's shards. At least 1.
    pub shards: usize,
    /// Every room's settings: limits, round interval, rings, inline max,
    /// pull timeout.
    pub room: RoomConfig,
    /// Fraction of sessions that are slow readers: every other push finds
    /// their socket busy (msg-svc refuses it and re-notifies after the pull
    /// timeout), and they answer a plain Notify one round late. They keep
    /// the notify → pull path busy, which inline deltas otherwise bypass.
    pub laggards: f64,
}

impl SimSpec {
    /// The simulation of `scenario` as `args` size it, on msg-svc's and
    /// room-svc's defaults.
    pub fn of(scenario: &Scenario, args: &RunArgs) -> anyhow::Result<Self> {
        if matches!(scenario, Scenario::ReconnectStorm { .. }) {
            bail!("--simulate has no sockets to drop: run reconnect-storm against a target");
        }
        if !(1..=MAX_USERS).contains(&args.users) {
            bail!(
                "--simulate takes 1 to {MAX_USERS} users, not {}",
                args.users
            );
        }
        if !(0.0..=1.0).contains(&args.laggards) {
            bail!(
                "--laggards is a fraction from 0 to 1, not {}",
                args.laggards
            );
        }
        Ok(Self {
            scenario: scenario.name().to_owned(),
            rooms: scenario.rooms(args),
            duration: Duration::from_secs(args.duration),
            payload_bytes: args.payload_bytes,
            shards: NodeConfig::default().shards,
            room: default_room_config(),
            laggards: args.laggards,
        })
    }
}

/// Runs the simulation and reports on it. Blocks for the measured phase and
/// the drain after it (until every session has caught up); spawns one
/// thread per shard and stamps messages on the calling thread.
pub fn run(spec: &SimSpec) -> Report {
    let outcome = simulate(spec);
    let counters = outcome.counters;
    if outcome.behind + outcome.short_of_priority + counters.kicked + counters.stale_deltas > 0 {
        // The fan-out core lost track of a session: the figures are suspect.
        warn!(
            behind = outcome.behind,
            short_of_priority = outcome.short_of_priority,
            kicked = counters.kicked,
            stale_deltas = counters.stale_deltas,
            "simulated sessions did not all catch up"
        );
    }
    outcome.report
}

/// The report, and the per-session checks behind its accounting.
#[derive(Debug)]
struct Outcome {
    report: Report,
    /// Summed over shards.
    counters: Counters,
    /// Sessions whose cursor is short of their room's latest at the end.
    behind: u64,
    /// Sessions that did not get every PRIORITY message of their room.
    short_of_priority: u64,
}

/// How a round and a pull behave: the room's settings and msg-svc's limits.
#[derive(Debug, Clone, Copy)]
struct FanoutConfig {
    round: RoundConfig,
    /// Largest inline delta, bytes; 0 always notifies plainly.
    inline_max: usize,
    /// Most messages in an inline delta (msg-svc caps it at the pull maximum).
    max_delta_messages: usize,
    /// Messages per pull: the server's default, as the client asks for 0.
    pull_limit: usize,
}

/// The spec made consistent, and what follows from it.
#[derive(Debug)]
struct Plan {
    users: usize,
    shards: usize,
    sizes: Vec<usize>,
    laggards: f64,
    fanout: FanoutConfig,
    window: Duration,
    /// Commands queued per shard before the stamper waits, as in msg-svc.
    queue: usize,
}

impl Plan {
    fn of(spec: &SimSpec) -> Self {
        // Session and room indexes are u32 inside the shards.
        let cap = |n: u64| n.min(MAX_USERS) as usize;
        let mut sizes: Vec<usize> = spec.rooms.iter().map(|room| cap(room.users)).collect();
        if sizes.is_empty() {
            sizes.push(1);
        }
        let users = cap(sizes.iter().map(|&n| n as u64).sum()).max(1);
        let node = NodeConfig::default();
        let room = &spec.room;
        Self {
            users,
            shards: spec.shards.clamp(1, users),
            sizes,
            laggards: if spec.laggards.is_finite() {
                spec.laggards.clamp(0.0, 1.0)
            } else {
                0.0
            },
            fanout: FanoutConfig {
                round: RoundConfig::of(room),
                inline_max: room.inline_max_bytes as usize,
                max_delta_messages: node.pull.1 as usize,
                pull_limit: node.pull.0 as usize,
            },
            window: spec.duration.max(Duration::from_millis(1)),
            queue: node.shard_queue,
        }
    }

    /// How long shards wait for every session to catch up after the last
    /// message: long enough for a member re-notified as often as it may be
    /// before a kick (each renotify waits for a round).
    fn drain_limit(&self) -> Duration {
        let round = self.fanout.round;
        let renotifies = u64::from(round.slow_consumer_notifies) + 1;
        Duration::from_millis(
            (round.pull_timeout_ms + round.interval_ms) * renotifies
                + 4 * round.interval_ms.max(1)
                + 1_000,
        )
    }
}

/// Whether session `id` is a laggard: exactly `fraction` of the ids, spread
/// evenly, so every room and shard gets its share.
fn is_laggard(id: usize, fraction: f64) -> bool {
    ((id + 1) as f64 * fraction).floor() > (id as f64 * fraction).floor()
}

/// One time base for the whole run: milliseconds for the notifier (which
/// takes time as a number) and Unix microseconds for stamps and latency.
#[derive(Debug, Clone, Copy)]
struct SimClock {
    origin: Instant,
    unix_us_at_origin: u64,
}

impl SimClock {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            unix_us_at_origin: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Monotonic, but in Unix microseconds like a room's `ts`.
    fn now_us(&self) -> u64 {
        self.unix_us_at_origin + self.origin.elapsed().as_micros() as u64
    }

    /// The moment as room-svc's core takes it.
    fn now(&self) -> Now {
        let elapsed = self.origin.elapsed();
        Now {
            unix_us: self.unix_us_at_origin + elapsed.as_micros() as u64,
            mono_ns: elapsed.as_nanos() as u64,
        }
    }
}

/// A room as msg-svc holds it: one ring, shared by every shard.
#[derive(Debug)]
struct SimRoom {
    id: String,
    members: u64,
    /// As in msg-svc, held only while appending or building a frame, never
    /// while handing frames out; `std`'s lock, parking_lot not being a
    /// dependency of the harness.
    ring: RwLock<RoomRing>,
}

impl SimRoom {
    fn new(id: String, members: usize, config: &RoomConfig) -> Self {
        Self {
            id,
            members: members as u64,
            ring: RwLock::new(RoomRing::new(
                Cursor::start(EPOCH),
                config.normal_ring as usize,
                config.priority_ring as usize,
            )),
        }
    }

    /// The ring for reading. A panic elsewhere while holding the lock fails
    /// the run anyway (the scope re-raises it), so poisoning is ignored.
    fn read_ring(&self) -> RwLockReadGuard<'_, RoomRing> {
        self.ring.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_ring(&self) -> RwLockWriteGuard<'_, RoomRing> {
        self.ring.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Resident memory and CPU at the points the report compares.
#[derive(Debug, Clone, Copy, Default)]
struct Readings {
    rss_before_kib: Option<u64>,
    rss_joined_kib: Option<u64>,
    rss_end_kib: Option<u64>,
    cpu_s: Option<f64>,
}

fn simulate(spec: &SimSpec) -> Outcome {
    let plan = Plan::of(spec);
    let mut readings = Readings {
        rss_before_kib: meter::rss_kib(),
        ..Readings::default()
    };
    let clock = SimClock::new();
    let rooms: Vec<SimRoom> = plan
        .sizes
        .iter()
        .enumerate()
        .map(|(index, &members)| {
            let id = spec
                .rooms
                .get(index)
                .map_or_else(|| "giant".to_owned(), |room| room.name.clone());
            SimRoom::new(id, members, &spec.room)
        })
        .collect();
    let (senders, receivers): (Vec<SyncSender<ShardCmd>>, Vec<_>) =
        (0..plan.shards).map(|_| sync_channel(plan.queue)).unzip();
    let joined = Barrier::new(plan.shards + 1);

    let (stamped, shards, caught_up) = thread::scope(|scope| {
        let handles: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(index, rx)| {
                let (plan, rooms, joined) = (&plan, &rooms[..], &joined);
                scope.spawn(move || {
                    let shard = Shard::new(index, plan, rooms, clock);
                    joined.wait();
                    shard.run(&rx)
                })
            })
            .collect();
        joined.wait();
        readings.rss_joined_kib = meter::rss_kib();
        let cpu_start = meter::cpu_seconds();
        let start_us = clock.now_us();
        for tx in &senders {
            // A shard that is gone panicked; joining it below re-raises that.
            let _ = tx.send(ShardCmd::Start(start_us));
        }
        let stamped = Stamper::new(&rooms, spec, clock).run(&senders, plan.window);
        // No CPU time at all means /proc could not tell.
        readings.cpu_s = Some(meter::cpu_seconds() - cpu_start).filter(|&cpu| cpu > 0.0);
        let finished = Instant::now();
        for tx in &senders {
            let _ = tx.send(ShardCmd::Finished);
        }
        let shards: Vec<ShardOutcome> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        let caught_up = shards
            .iter()
            .all(|shard| shard.drained)
            .then(|| finished.elapsed());
        (stamped, shards, caught_up)
    });
    readings.rss_end_kib = meter::rss_kib();
    assemble(spec, &plan, &rooms, &stamped, shards, readings, caught_up)
}

fn assemble(
    spec: &SimSpec,
    plan: &Plan,
    rooms: &[SimRoom],
    stamped: &Stamped,
    shards: Vec<ShardOutcome>,
    readings: Readings,
    caught_up: Option<Duration>,
) -> Outcome {
    let mut tally = Tally::default();
    for (index, room) in rooms.iter().enumerate() {
        let counts = tally.room(&room.id);
        counts.merge(&stamped.rooms[index]);
        counts.last_msg_id = room.read_ring().latest().msg_id;
        counts.receivers = room.members;
        for shard in &shards {
            let room = &shard.rooms[index];
            for lane in 0..counts.delivered.len() {
                counts.delivered[lane] += room.delivered[lane];
                counts.dropped[lane] += room.dropped[lane];
            }
        }
    }
    let mut meter = Meter::new(plan.window);
    let mut counters = Counters::default();
    let (mut behind, mut short_of_priority, mut laggards) = (0, 0, 0);
    for shard in &shards {
        meter.merge(&shard.meter);
        counters.add(&shard.counters);
        behind += shard.behind;
        short_of_priority += shard.short_of_priority;
        laggards += shard.laggards;
    }

    let seconds = plan.window.as_secs_f64();
    let measured = meter.measured();
    let accepted: u64 = stamped.rooms.iter().flat_map(|room| room.accepted).sum();
    let memory_per_session = readings
        .rss_before_kib
        .zip(readings.rss_joined_kib)
        .map(|(before, joined)| joined.saturating_sub(before) as f64 / plan.users as f64);
    let per_s = |n: u64| n as f64 / seconds;
    let shard_cores = plan.shards as f64 * seconds;
    let busy = measured.busy.as_secs_f64();
    let mut notes = vec![
        format!(
            "{:.0} frames/s to sessions ({:.0} inline deltas, {:.0} plain notifies, {:.0} pull \
             results), {:.1} MB/s of frame bytes (shared buffers: handed over, not copied)",
            per_s(measured.frames),
            per_s(measured.deltas),
            per_s(measured.notifies),
            per_s(measured.pulls),
            per_s(measured.bytes) / 1e6,
        ),
        format!(
            "{:.0} rounds/s over {} shards, {:.0} distinct frames built/s; {} laggards, \
             {} pushes refused to them, {} pulls",
            per_s(measured.rounds),
            plan.shards,
            per_s(measured.frames_built),
            laggards,
            counters.refused,
            counters.pulls,
        ),
        format!(
            "fan-out threads busy {:.1} of {:.1} shard-seconds ({:.0}%): {:.0} deliveries per \
             busy shard-second; {}",
            busy,
            shard_cores,
            100.0 * busy / shard_cores,
            if busy > 0.0 {
                measured.deliveries as f64 / busy
            } else {
                0.0
            },
            if busy > 0.8 * shard_cores {
                "limited by CPU: the shards had no idle time left"
            } else {
                "limited by the offered rate: the shards idled between rounds"
            },
        ),
        "CPU-s is the whole process: stamper, fan-out shards and the simulated clients' \
         bookkeeping; latency is stamp to hand-over in a round or pull (no socket)"
            .to_owned(),
    ];
    if let Some(kib) = memory_per_session {
        notes.push(format!(
            "{:.0} bytes resident per joined session (notifier member and slot, client state)",
            kib * 1024.0
        ));
    }
    match caught_up {
        Some(after) => notes.push(format!(
            "every session caught up {:.2} s after the last message",
            after.as_secs_f64()
        )),
        None => notes.push(format!(
            "gave up waiting for sessions to catch up after {:.1} s",
            plan.drain_limit().as_secs_f64()
        )),
    }
    if let [largest, .., smallest] = plan.sizes[..] {
        notes.push(format!(
            "{} rooms of {smallest} to {largest} sessions",
            plan.sizes.len()
        ));
    }
    if stamped.evicted > 0 {
        notes.push(format!(
            "{} messages aged out of the rings (turnover; what a session missed is counted \
             as dropped)",
            stamped.evicted
        ));
    }
    if counters.kicked > 0 || counters.stale_deltas > 0 || behind > 0 || short_of_priority > 0 {
        notes.push(format!(
            "faults: {} kicked, {} deltas not at the client's cursor, {behind} sessions behind, \
             {short_of_priority} short of a priority message",
            counters.kicked, counters.stale_deltas
        ));
    }

    let report = Report {
        scenario: spec.scenario.clone(),
        transport: "simulated".to_owned(),
        real_connections: 0,
        simulated_users: plan.users as u64,
        duration_s: seconds,
        latency_ms: meter.percentiles(),
        delivered_per_s: per_s(measured.deliveries),
        lanes: Lanes {
            normal: tally.lane(0),
            priority: tally.lane(1),
        },
        server: ServerUse {
            cpu_s: readings.cpu_s,
            rss_kb_per_idle_conn: memory_per_session,
            delivered_per_cpu_s: readings
                .cpu_s
                .filter(|&cpu| cpu > 0.0)
                .map(|cpu| measured.deliveries as f64 / cpu),
            rss_kb: readings.rss_end_kib,
        },
        refused: tally.refused(),
        target: format!(
            "msg-svc fan-out core, in process ({} shards, {} ms rounds)",
            plan.shards, spec.room.round_interval_ms
        ),
        accepted_per_s: per_s(accepted),
        timeline: meter.timeline(),
        notes,
        ..Report::default()
    };
    Outcome {
        report,
        counters,
        behind,
        short_of_priority,
    }
}
