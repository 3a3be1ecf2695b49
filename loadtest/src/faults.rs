//! `loadtest faults`: a local cluster under the harness's load while its
//! processes fail one after another, and admin notices posted through
//! every room service all along. Each fault's recovery is timed by
//! end-to-end probes, and the run passes only if no PRIORITY message was
//! lost or skipped, every NORMAL delivery is accounted for (delivered, or
//! reported skipped to the client), the history checker found nothing (no
//! receiver saw messages out of order, no `msg_id` was given to two
//! messages), and every fault recovered in time.
//!
//! The faults, in order:
//! - `msg-svc`: `kill -9` of a msg-svc, restarted at once; its users come
//!   back and resume by cursor.
//! - `room-svc`: `kill -9` of a room-svc; its rooms move to the other one
//!   when its ZooKeeper session expires. Then it is restarted and they move
//!   back.
//! - `zookeeper`: ZooKeeper frozen (SIGSTOP) past the session timeout,
//!   then let go: every node's session expires and is made again.
//! - `redis`: Redis killed and restarted (with its append-only file, as a
//!   durable Redis restarts).
//! - `link-cut`: a msg-svc cut off from every room-svc (its links closed
//!   and refused by a proxy) while its clients stay connected, then healed.
//! - `zk-cut`: a room-svc cut off from ZooKeeper only (its links and Redis
//!   intact) past the session timeout, then healed: its lease ends, its
//!   rooms move, and nothing it still holds reaches anyone.
//! - `stall`: a room-svc stopped (SIGSTOP) past the session timeout, then
//!   let go, as a long pause would.
//! - `msg-zk-cut`: a msg-svc cut off from ZooKeeper only, past the session
//!   timeout, then healed.
//! - `redis-cut`: a room-svc cut off from Redis only, then healed.
//! - `flap`: a msg-svc's links to the room-svcs cut and healed again and
//!   again.
//!
//! - [`proxy`]: the link proxy that cuts msg-svcs off.
//! - [`partition`]: a proxy on each node's path to ZooKeeper and Redis.
//! - [`notices`]: the admin notices.
//! - [`probe`]: the end-to-end probes.

pub mod notices;
pub mod partition;
pub mod probe;
pub mod proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chatroom_client::Transport;
use chatroom_cluster::link::tls;
use chatroom_cluster::placement;
use clap::ValueEnum;
use serde::Serialize;
use tokio::time::Instant;

use crate::harness::coordinator::{self, Target};
use crate::harness::plan::ClientKind;
use crate::harness::report::{Lanes, Report};
use crate::harness::scenario::{RunArgs, Scenario, transport_flag};
use crate::local::{ClusterSpec, LocalCluster, Servers};
use notices::{NoticeLog, Notices};
use partition::{Partitions, Path};
use probe::Probe;
use proxy::{Cuts, LinkProxy, ProxyTls};

/// Room services of the cluster.
const ROOM_SVCS: usize = 2;
/// Message services of the cluster.
const MSG_SVCS: usize = 3;
/// Harness traffic before the first fault and between faults, so each
/// fault meets a cluster in its steady state.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a msg-svc stays cut off.
const CUT_FOR: Duration = Duration::from_secs(5);
/// How long past the session timeout a node stays cut from ZooKeeper, or
/// stalled.
const PAST_SESSION: Duration = Duration::from_secs(8);
/// How long a room-svc stays cut from Redis.
const REDIS_CUT_FOR: Duration = Duration::from_secs(8);
/// A flap: cut for this long, then healed for the second, so many times.
const FLAP: (Duration, Duration, u32) = (Duration::from_millis(300), Duration::from_millis(700), 6);
/// How long after a fault the probes keep trying before it counts as
/// never recovered.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Pause between failed probe rounds.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Probe rooms per room-svc.
const PROBE_ROOMS_EACH: usize = 2;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` of a msg-svc, restarted at once.
    MsgSvc,
    /// `kill -9` of a room-svc; restarted after its rooms moved.
    RoomSvc,
    /// ZooKeeper frozen past the session timeout.
    Zookeeper,
    /// Redis killed and restarted.
    Redis,
    /// A msg-svc cut off from the room-svcs, then healed.
    LinkCut,
    /// A room-svc cut off from ZooKeeper only, past the session timeout.
    ZkCut,
    /// A room-svc stopped (SIGSTOP) past the session timeout, then resumed.
    Stall,
    /// A msg-svc cut off from ZooKeeper only, past the session timeout.
    MsgZkCut,
    /// A room-svc cut off from Redis only.
    RedisCut,
    /// A msg-svc's links cut and healed again and again.
    Flap,
}

/// Flags of `loadtest faults`.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// Harness users (each a real connection), spread over the rooms.
    #[arg(long, default_value_t = 300)]
    pub users: u64,
    /// Harness rooms; each has one sender and a notifier.
    #[arg(long, default_value_t = 6)]
    pub rooms: u64,
    /// NORMAL messages per second per room.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// A PRIORITY notice per room this often, ms.
    #[arg(long, default_value_t = 250)]
    pub notice_every_ms: u64,
    /// ZooKeeper session timeout of every node, ms.
    #[arg(long, default_value_t = 4_000)]
    pub zk_session_timeout_ms: u64,
    /// The recovery each fault must make within, seconds: from the kill
    /// (or the moment a freeze or cut ends) until every probe room delivers
    /// to a member on every msg-svc and, for a whole cluster, every node is
    /// ready and sees all the others.
    #[arg(long, default_value_t = 10)]
    pub recover_within_s: u64,
    /// How the harness's users connect.
    #[arg(long, value_parser = transport_flag(), default_value = "ws")]
    pub transport: Transport,
    /// Only these faults (comma-separated); default: all, in order.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Fault>,
    /// Where the cluster's logs and `faults.json` go.
    #[arg(long, default_value = "faults-out")]
    pub out: PathBuf,
    /// Where `room-svc` and `msg-svc` are; default: beside this program.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// How one fault went.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    /// The fault.
    pub fault: Fault,
    /// What was done and from when recovery is timed.
    pub what: String,
    /// Seconds until recovered; `None`: not within a minute.
    pub recovered_s: Option<f64>,
    /// For a freeze or a cut: probe rounds during it, and how many failed.
    pub during: Option<Held>,
    /// For the ZooKeeper freeze: the nodes whose connection to ZooKeeper
    /// dropped meanwhile, by their metrics (every node, or the freeze did
    /// not happen).
    pub nodes_noticed: Option<usize>,
    /// Probe rounds that failed meanwhile.
    pub failed_rounds: u32,
    /// The last failed round's reason.
    pub last_failure: Option<String>,
    /// Admin notices refused (or of unknown outcome) from the fault until
    /// it recovered, by error code.
    pub notices_refused: BTreeMap<String, u64>,
    /// Seconds from the first such notice to the last.
    pub notices_refused_for_s: f64,
    /// When the fault began and when it was over.
    #[serde(skip)]
    window: (Instant, Instant),
}

/// What became of the admin notices.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoticeTotals {
    /// Answered 201.
    pub posted: u64,
    /// Refused before anything was stamped.
    pub refused: u64,
    /// Of unknown outcome (the answer was lost).
    pub unknown: u64,
}

/// Probe rounds while a freeze or a cut lasted.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Held {
    /// Rounds run.
    pub rounds: u32,
    /// Of those, rounds that failed.
    pub failed: u32,
}

/// The outcome of a run, as `faults.json` holds it.
#[derive(Debug, Serialize)]
pub struct FaultReport {
    /// Each fault's recovery, in order.
    pub recoveries: Vec<Recovery>,
    /// The bound each recovery is held to, seconds.
    pub recover_within_s: u64,
    /// The harness's accounting over the whole run.
    pub lanes: Lanes,
    /// Harness sends refused, by error code (while a room had no owner,
    /// say).
    pub refused: BTreeMap<String, u64>,
    /// Admin notices posted (201), refused, and of unknown outcome.
    pub notices: NoticeTotals,
    /// The harness's connections lost and resumed, and other notes.
    pub notes: Vec<String>,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

impl FaultReport {
    /// A table for people.
    pub fn summary(&self) -> String {
        let mut out = String::from("fault       recovered  rounds failed  what\n");
        for r in &self.recoveries {
            let mut during = r.during.map_or_else(String::new, |held| {
                format!(
                    " ({} of {} probe rounds failed during it)",
                    held.failed, held.rounds
                )
            });
            if let Some(nodes) = r.nodes_noticed {
                during.push_str(&format!("; {nodes} nodes lost ZooKeeper"));
            }
            let fault = serde_json::to_value(r.fault)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let recovered = r
                .recovered_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s"));
            if !r.notices_refused.is_empty() {
                during.push_str(&format!(
                    "; admin notices refused over {:.2} s: {:?}",
                    r.notices_refused_for_s, r.notices_refused
                ));
            }
            out.push_str(&format!(
                "{fault:<11} {recovered:>9}  {:>13}  {}{during}\n",
                r.failed_rounds, r.what
            ));
        }
        for (name, lane) in [
            ("normal", &self.lanes.normal),
            ("priority", &self.lanes.priority),
        ] {
            out.push_str(&format!(
                "{name:<8}: accepted {}, deliveries owed {}, delivered {}, reported skipped {}, \
                 lost {}; out of order {}, msg_id conflicts {}, sent again {}\n",
                lane.accepted,
                lane.expected,
                lane.delivered,
                lane.dropped,
                lane.lost,
                lane.disordered,
                lane.conflicting,
                lane.redundant
            ));
        }
        out.push_str(&format!(
            "admin notices: posted {}, refused {}, outcome unknown {}\n",
            self.notices.posted, self.notices.refused, self.notices.unknown
        ));
        if !self.refused.is_empty() {
            out.push_str(&format!("sends refused: {:?}\n", self.refused));
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        if self.failures.is_empty() {
            out.push_str(&format!(
                "PASS: no PRIORITY loss, exact accounting, a clean history, every fault \
                 recovered within {} s\n",
                self.recover_within_s
            ));
        } else {
            for failure in &self.failures {
                out.push_str(&format!("FAIL: {failure}\n"));
            }
        }
        out
    }
}

type Shared = Arc<Mutex<LocalCluster>>;

/// Runs the fault suite, prints its table and writes `faults.json` under
/// `--out`; whether it passed.
pub async fn run_suite(args: &FaultArgs) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.out)?;
    let report = run(args).await?;
    let path = args.out.join("faults.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    print!("{}", report.summary());
    println!("written {}", path.display());
    Ok(report.failures.is_empty())
}

/// Starts the cluster and the harness, injects the faults, and judges.
pub async fn run(args: &FaultArgs) -> anyhow::Result<FaultReport> {
    let cuts = Cuts::default();
    let mut proxies = Vec::new();
    for _ in 0..ROOM_SVCS {
        proxies.push(LinkProxy::bind().await.context("binding a link proxy")?);
    }
    let mut spec = ClusterSpec {
        room_svcs: ROOM_SVCS,
        msg_svcs: MSG_SVCS,
        zk_session_timeout: Duration::from_millis(args.zk_session_timeout_ms),
        bin_dir: args.bin_dir.clone(),
        public_link_addrs: proxies
            .iter()
            .map(|p| p.addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?,
        durable_redis: true,
        ..ClusterSpec::default()
    };
    let dir = args.out.join("servers");
    let servers = {
        let (spec, dir) = (spec.clone(), dir.clone());
        tokio::task::spawn_blocking(move || Servers::start(&spec, &dir)).await??
    };
    let room_svc_ids: Vec<String> = (1..=ROOM_SVCS).map(|i| format!("room-svc-{i}")).collect();
    let node_ids: Vec<String> = room_svc_ids
        .iter()
        .cloned()
        .chain((1..=MSG_SVCS).map(|i| format!("msg-svc-{i}")))
        .collect();
    let partitions = Partitions::start(&servers, &node_ids, &room_svc_ids).await?;
    spec.zk_via = partitions.zk_via();
    spec.redis_via = partitions.redis_via();
    let cluster = tokio::task::spawn_blocking(move || -> anyhow::Result<LocalCluster> {
        let cluster = LocalCluster::start_on(servers, &spec, &dir)?;
        for node in cluster.room_svcs.iter().chain(&cluster.msg_svcs) {
            node.wait_members((ROOM_SVCS, MSG_SVCS))?;
        }
        Ok(cluster)
    })
    .await??;
    let proxy_tls = ProxyTls {
        accept: cluster
            .link_tls(tls::ROOM_SVC_NAME)
            .server_config()?
            .context("the local cluster's links are TLS")?,
        connect: cluster
            .link_tls(tls::MSG_SVC_NAME)
            .client_config()?
            .context("the local cluster's links are TLS")?,
    };
    let _relays: Vec<_> = proxies
        .into_iter()
        .zip(&cluster.room_svcs)
        .map(|(proxy, node)| {
            let upstream = node.link_addr.clone().expect("room-svcs listen for links");
            AbortOnDrop(proxy.start(upstream, &cuts, Some(proxy_tls.clone())))
        })
        .collect();

    let mut target = Target::cluster(&cluster, args.transport)?;
    // Processes are killed and replaced: their CPU use is not measured.
    target.pids.clear();
    let room_ids: Vec<String> = cluster.room_svcs.iter().map(|n| n.id.clone()).collect();
    let scenario = Scenario::Faults { rooms: args.rooms };
    let run_args = run_args(args);
    let harness_rooms: Vec<String> = scenario
        .rooms(&run_args)
        .into_iter()
        .map(|r| r.name)
        .collect();
    for id in &room_ids {
        if !harness_rooms
            .iter()
            .any(|room| placement::owner(room, &room_ids) == Some(id))
        {
            anyhow::bail!("no harness room is owned by {id}: use more --rooms");
        }
    }
    let homes: Vec<(String, String)> = cluster
        .msg_svcs
        .iter()
        .map(|n| {
            (
                n.id.clone(),
                n.ws_url.clone().expect("msg-svcs serve WebSocket"),
            )
        })
        .collect();
    let mut probe = Probe::new(
        cluster.ws_urls(),
        &homes,
        cluster.token_key()?,
        probe_rooms(&room_ids),
    )
    .map_err(anyhow::Error::msg)?;
    let faults = if args.only.is_empty() {
        Fault::value_variants().to_vec()
    } else {
        args.only.clone()
    };
    let admins = cluster
        .room_svcs
        .iter()
        .map(|n| n.http_addr.clone())
        .collect();
    let admin_token = cluster.admin_token()?;
    let cluster: Shared = Arc::new(Mutex::new(cluster));
    let injector = Injector {
        cluster: Arc::clone(&cluster),
        cuts: &cuts,
        partitions: &partitions,
        probe: &mut probe,
        session_timeout: Duration::from_millis(args.zk_session_timeout_ms),
    };
    let injected = injector.inject(&faults, admins, admin_token, harness_rooms);
    let (report, injected) =
        coordinator::run_until(&scenario, &run_args, &target, injected).await?;
    let (recoveries, notices) = injected?;
    Ok(judge(recoveries, report, &notices, args.recover_within_s))
}

/// Owes the admin notices posted in each room to its receivers, in the
/// PRIORITY lane; those whose outcome is unknown may or may not be owed.
/// Returns by how many deliveries `lost` may fall short of 0.
fn owe_notices(report: &mut Report, notices: &NoticeLog) -> u64 {
    let priority = &mut report.lanes.priority;
    for (room, posted) in notices.posted() {
        let receivers = report.receivers.get(&room).copied().unwrap_or(0);
        priority.accepted += posted;
        priority.expected += posted * receivers;
    }
    priority.lost = priority.expected as i64 - priority.delivered as i64 - priority.dropped as i64;
    notices
        .unknown()
        .into_iter()
        .map(|(room, unknown)| unknown * report.receivers.get(&room).copied().unwrap_or(0))
        .sum()
}

fn judge(
    mut recoveries: Vec<Recovery>,
    mut report: Report,
    notices: &NoticeLog,
    bound_s: u64,
) -> FaultReport {
    let mut failures = Vec::new();
    let maybe_owed = owe_notices(&mut report, notices);
    let priority = &report.lanes.priority;
    // Each notice of unknown outcome that was stamped after all is
    // delivered without being owed.
    if priority.lost > 0 || priority.lost < -(maybe_owed as i64) || priority.dropped != 0 {
        failures.push(format!(
            "PRIORITY: {} deliveries lost and {} skipped of {} owed",
            priority.lost, priority.dropped, priority.expected
        ));
    }
    for (name, lane) in [("NORMAL", &report.lanes.normal), ("PRIORITY", priority)] {
        if lane.disordered != 0 || lane.conflicting != 0 {
            failures.push(format!(
                "{name}: history broken: {} messages out of order, {} under a msg_id another \
                 message had",
                lane.disordered, lane.conflicting
            ));
        }
    }
    for r in &mut recoveries {
        (r.notices_refused, r.notices_refused_for_s) =
            notices.refused_between(r.window.0, r.window.1);
    }
    let normal = &report.lanes.normal;
    if normal.lost != 0 {
        failures.push(format!(
            "NORMAL: {} of {} deliveries neither delivered nor reported skipped",
            normal.lost, normal.expected
        ));
    }
    if priority.accepted == 0 || normal.accepted == 0 {
        failures.push("the harness sent nothing in a lane".into());
    }
    for r in &recoveries {
        if r.fault == Fault::LinkCut && r.during.is_none_or(|held| held.failed == 0) {
            failures.push(format!("{}: the probes never noticed the cut", r.what));
        }
        if r.fault == Fault::Zookeeper && r.nodes_noticed.is_none_or(|n| n < ROOM_SVCS + MSG_SVCS) {
            failures.push(format!(
                "{}: {} of {} nodes saw their ZooKeeper connection drop",
                r.what,
                r.nodes_noticed.unwrap_or(0),
                ROOM_SVCS + MSG_SVCS
            ));
        }
        match r.recovered_s {
            Some(s) if s <= bound_s as f64 => {}
            Some(s) => failures.push(format!(
                "{}: recovered in {s:.2} s, over {bound_s} s",
                r.what
            )),
            None => failures.push(format!(
                "{}: not recovered after {GIVE_UP_AFTER:?} ({})",
                r.what,
                r.last_failure.as_deref().unwrap_or("")
            )),
        }
    }
    let posted: u64 = notices.posted().values().sum();
    let unknown: u64 = notices.unknown().values().sum();
    FaultReport {
        recoveries,
        recover_within_s: bound_s,
        lanes: report.lanes,
        refused: report.refused,
        notices: NoticeTotals {
            posted,
            refused: notices.entries.len() as u64 - posted - unknown,
            unknown,
        },
        notes: report.notes,
        failures,
    }
}

/// The harness's flags for the run: a local cluster started by the caller.
fn run_args(args: &FaultArgs) -> RunArgs {
    RunArgs {
        target: Vec::new(),
        token_secret_file: None,
        spawn_local: true,
        msg_svcs: MSG_SVCS,
        room_svcs: ROOM_SVCS,
        server_args: Vec::new(),
        hook_delay_ms: None,
        users: args.users,
        rate: Some(args.rate),
        senders: Some(1),
        duration: 0,
        out: args.out.clone(),
        transport: vec![args.transport],
        cert: None,
        fingerprint: None,
        client: ClientKind::Swarm,
        notice_every_ms: Some(args.notice_every_ms),
        payload_bytes: 64,
        workers: Some(1),
        connect_rate: 4_000,
        peer: None,
        simulate: false,
        laggards: 0.0,
        worker_exe: None,
    }
}

/// Probe rooms, [`PROBE_ROOMS_EACH`] owned by each room-svc.
fn probe_rooms(room_svcs: &[String]) -> Vec<String> {
    let mut rooms = Vec::new();
    for id in room_svcs {
        rooms.extend(
            (0..)
                .map(|n| format!("probe-{n}"))
                .filter(|room| placement::owner(room, room_svcs) == Some(id))
                .take(PROBE_ROOMS_EACH),
        );
    }
    rooms
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Injector<'a> {
    cluster: Shared,
    cuts: &'a Cuts,
    partitions: &'a Partitions,
    probe: &'a mut Probe,
    session_timeout: Duration,
}

impl Injector<'_> {
    /// Injects `faults` in turn while admin notices are posted through
    /// `admins` into `rooms`. This runs in the harness's measured phase,
    /// every receiver joined; the notices stop a while before the
    /// harness's senders do, so every notice is below the positions the
    /// receivers drain to.
    async fn inject(
        mut self,
        faults: &[Fault],
        admins: Vec<String>,
        admin_token: String,
        rooms: Vec<String>,
    ) -> anyhow::Result<(Vec<Recovery>, NoticeLog)> {
        let notices = Notices::start(admins, admin_token, rooms);
        tokio::time::sleep(SETTLE).await;
        if let (None, _, why) = self.recover(Instant::now(), true).await {
            anyhow::bail!(
                "the probes fail before any fault: {}",
                why.unwrap_or_default()
            );
        }
        let mut recoveries = Vec::new();
        for (n, &fault) in faults.iter().enumerate() {
            if n > 0 {
                tokio::time::sleep(SETTLE).await;
            }
            self.fault(fault, &mut recoveries).await?;
        }
        let notices = notices.stop().await;
        tokio::time::sleep(SETTLE).await;
        Ok((recoveries, notices))
    }

    async fn fault(&mut self, fault: Fault, out: &mut Vec<Recovery>) -> anyhow::Result<()> {
        let mut began = Instant::now();
        let mut record = |what: &str, during, (recovered_s, failed_rounds, last_failure)| {
            // The next part of the fault (a restart after a kill) begins
            // where this one ended.
            let ended = Instant::now();
            let window = (std::mem::replace(&mut began, ended), ended);
            out.push(Recovery {
                fault,
                what: what.to_owned(),
                recovered_s,
                during,
                nodes_noticed: None,
                failed_rounds,
                last_failure,
                notices_refused: BTreeMap::new(),
                notices_refused_for_s: 0.0,
                window,
            });
        };
        let past_session = self.session_timeout + PAST_SESSION;
        match fault {
            Fault::MsgSvc => {
                let start = Instant::now();
                self.with_cluster(|c| Ok(node(&mut c.msg_svcs, "msg-svc-2")?.restart()?))
                    .await?;
                let recovery = self.recover(start, true).await;
                record(
                    "msg-svc-2 kill -9, restarted at once; from the kill",
                    None,
                    recovery,
                );
            }
            Fault::RoomSvc => {
                let start = Instant::now();
                self.with_cluster(|c| {
                    node(&mut c.room_svcs, "room-svc-1")?.kill9();
                    Ok(())
                })
                .await?;
                let recovery = self.recover(start, false).await;
                record(
                    "room-svc-1 kill -9: its rooms fail over; from the kill",
                    None,
                    recovery,
                );
                let start = Instant::now();
                self.with_cluster(|c| Ok(node(&mut c.room_svcs, "room-svc-1")?.restart()?))
                    .await?;
                let recovery = self.recover(start, true).await;
                record(
                    "room-svc-1 restarted: its rooms move back; from the start",
                    None,
                    recovery,
                );
            }
            Fault::Zookeeper => {
                let before = self.with_cluster(|c| Ok(zookeeper_disconnects(c))).await?;
                self.with_cluster(|c| Ok(c.zookeeper.pause()?)).await?;
                let during = self
                    .hold(self.session_timeout + Duration::from_secs(2))
                    .await;
                let start = Instant::now();
                self.with_cluster(|c| Ok(c.zookeeper.resume()?)).await?;
                let recovery = self.recover(start, true).await;
                let after = self.with_cluster(|c| Ok(zookeeper_disconnects(c))).await?;
                record(
                    "ZooKeeper frozen for the session timeout + 2 s; from the thaw",
                    Some(during),
                    recovery,
                );
                if let Some(recovery) = out.last_mut() {
                    let noticed = before.iter().zip(&after).filter(|(b, a)| a > b).count();
                    recovery.nodes_noticed = Some(noticed);
                }
            }
            Fault::Redis => {
                let start = Instant::now();
                self.with_cluster(|c| Ok(c.redis.restart()?)).await?;
                let recovery = self.recover(start, true).await;
                record("Redis kill -9 and restart; from the kill", None, recovery);
            }
            Fault::LinkCut => {
                self.cuts.cut("msg-svc-3");
                let during = self.hold(CUT_FOR).await;
                let start = Instant::now();
                self.cuts.heal("msg-svc-3");
                let recovery = self.recover(start, true).await;
                record(
                    "msg-svc-3 cut off from the room-svcs for 5 s; from the heal",
                    Some(during),
                    recovery,
                );
            }
            Fault::ZkCut => {
                let (during, recovery) = self
                    .partition("room-svc-1", Path::ZooKeeper, past_session)
                    .await?;
                record(
                    "room-svc-1 cut from ZooKeeper only, for the session timeout + 8 s; from \
                     the heal",
                    Some(during),
                    recovery,
                );
            }
            Fault::Stall => {
                self.with_cluster(|c| {
                    node(&mut c.room_svcs, "room-svc-1")?.pause();
                    Ok(())
                })
                .await?;
                let during = self.hold(past_session).await;
                let start = Instant::now();
                self.with_cluster(|c| {
                    node(&mut c.room_svcs, "room-svc-1")?.resume();
                    Ok(())
                })
                .await?;
                let recovery = self.recover(start, true).await;
                record(
                    "room-svc-1 stalled (SIGSTOP) for the session timeout + 8 s; from the \
                     resume",
                    Some(during),
                    recovery,
                );
            }
            Fault::MsgZkCut => {
                let (during, recovery) = self
                    .partition("msg-svc-1", Path::ZooKeeper, past_session)
                    .await?;
                record(
                    "msg-svc-1 cut from ZooKeeper only, for the session timeout + 8 s; from \
                     the heal",
                    Some(during),
                    recovery,
                );
            }
            Fault::RedisCut => {
                let (during, recovery) = self
                    .partition("room-svc-1", Path::Redis, REDIS_CUT_FOR)
                    .await?;
                record(
                    "room-svc-1 cut from Redis only, for 8 s; from the heal",
                    Some(during),
                    recovery,
                );
            }
            Fault::Flap => {
                let (down, up, times) = FLAP;
                for _ in 0..times {
                    self.cuts.cut("msg-svc-3");
                    tokio::time::sleep(down).await;
                    self.cuts.heal("msg-svc-3");
                    tokio::time::sleep(up).await;
                }
                let start = Instant::now();
                let recovery = self.recover(start, true).await;
                record(
                    "msg-svc-3's links flapping (0.3 s cut, 0.7 s up, 6 times); from the last \
                     heal",
                    None,
                    recovery,
                );
            }
        }
        Ok(())
    }

    /// Cuts `node`'s `path` for `span`, then heals it: the probe rounds
    /// meanwhile, and the recovery from the heal.
    async fn partition(
        &mut self,
        node: &str,
        path: Path,
        span: Duration,
    ) -> anyhow::Result<(Held, (Option<f64>, u32, Option<String>))> {
        self.partitions.cut(node, path)?;
        let during = self.hold(span).await;
        let start = Instant::now();
        self.partitions.heal(node, path)?;
        Ok((during, self.recover(start, true).await))
    }

    /// Runs probe rounds until one passes (and, with `whole`, every node is
    /// ready and sees every other); returns the time since `since`, the
    /// failed rounds and the last reason.
    async fn recover(&mut self, since: Instant, whole: bool) -> (Option<f64>, u32, Option<String>) {
        let (mut failed, mut last) = (0, None);
        while since.elapsed() < GIVE_UP_AFTER {
            match self.probe.round().await {
                Ok(()) if !whole || self.whole().await => {
                    return (Some(since.elapsed().as_secs_f64()), failed, last);
                }
                Ok(()) => last = Some("the cluster is not whole yet".to_owned()),
                Err(why) => last = Some(why),
            }
            failed += 1;
            tokio::time::sleep(PROBE_EVERY).await;
        }
        (None, failed, last)
    }

    /// Runs probe rounds for `span` (a freeze or a cut lasting): what users
    /// saw meanwhile.
    async fn hold(&mut self, span: Duration) -> Held {
        let end = Instant::now() + span;
        let mut held = Held {
            rounds: 0,
            failed: 0,
        };
        while Instant::now() < end {
            held.rounds += 1;
            if self.probe.round().await.is_err() {
                held.failed += 1;
            }
            tokio::time::sleep_until(end.min(Instant::now() + PROBE_EVERY)).await;
        }
        held
    }

    /// Whether every node is ready and sees every other.
    async fn whole(&self) -> bool {
        self.with_cluster(|c| {
            Ok(c.room_svcs
                .iter()
                .chain(&c.msg_svcs)
                .all(|n| n.is_ready() && n.sees_members((ROOM_SVCS, MSG_SVCS))))
        })
        .await
        .unwrap_or(false)
    }

    /// Runs blocking process control on the cluster off the async threads.
    async fn with_cluster<T: Send + 'static>(
        &self,
        act: impl FnOnce(&mut LocalCluster) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let cluster = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || {
            let mut cluster = cluster
                .lock()
                .map_err(|_| anyhow::anyhow!("cluster poisoned"))?;
            act(&mut cluster)
        })
        .await?
    }
}

/// Each node's count of dropped ZooKeeper connections, in node order (0
/// for a node that does not answer).
fn zookeeper_disconnects(cluster: &LocalCluster) -> Vec<f64> {
    cluster
        .room_svcs
        .iter()
        .chain(&cluster.msg_svcs)
        .map(|n| {
            n.metric("chatroom_zookeeper_disconnects_total")
                .unwrap_or(0.0)
        })
        .collect()
}

fn node<'a>(
    nodes: &'a mut [crate::local::NodeProcess],
    id: &str,
) -> anyhow::Result<&'a mut crate::local::NodeProcess> {
    nodes
        .iter_mut()
        .find(|n| n.id == id)
        .with_context(|| format!("no node {id}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: FaultArgs,
    }

    #[test]
    fn rooms_share_the_users_and_each_has_a_sender_and_notices() {
        let cli = Cli::parse_from(["faults", "--users", "20", "--rooms", "6"]);
        let rooms = Scenario::Faults { rooms: 6 }.rooms(&run_args(&cli.args));
        let sizes: Vec<u64> = rooms.iter().map(|r| r.users).collect();
        assert_eq!(sizes, [4, 4, 3, 3, 3, 3]);
        let mut next = 0;
        for room in &rooms {
            assert_eq!(room.first_user, next, "users are contiguous");
            next += room.users;
            assert_eq!((room.senders, room.rate), (1, 20.0));
            assert_eq!(room.notice_every_ms, 250);
        }
    }

    #[test]
    fn probe_rooms_are_owned_by_every_room_svc() {
        let ids = ["room-svc-1".to_owned(), "room-svc-2".to_owned()];
        let rooms = probe_rooms(&ids);
        assert_eq!(rooms.len(), ids.len() * PROBE_ROOMS_EACH);
        for id in &ids {
            let owned = rooms
                .iter()
                .filter(|room| placement::owner(room, &ids) == Some(id))
                .count();
            assert_eq!(owned, PROBE_ROOMS_EACH, "{id}");
        }
    }
}
