//! The coordinator: starts the target when asked, spawns the worker
//! processes with their shares, runs the phases (connect, go, stop, drain),
//! measures the target's and the workers' processes from /proc, and merges
//! what the workers counted into one report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chatroom_client::Transport;
use chatroom_cluster::auth::SecretSource;
use chatroom_cluster::local::LocalServer;
use chatroom_cluster::quic::Fingerprint;
use tokio::sync::mpsc;

use super::hook::HookReceiver;
use super::plan::{ClientKind, Command, Event, PlanRoom, Plays, Protocol, WorkerPlan};
use super::report::{ClientUse, Lanes, Report, Second, ServerUse};
use super::scenario::{Peer, RunArgs, Scenario};
use super::stats::{Latency, Tally};
use crate::local::{ClusterSpec, LocalCluster, NodeProcess, admin_get};

/// Users per worker process: well under the 20,000 descriptors a process
/// may hold.
const USERS_PER_WORKER: u64 = 15_000;
/// Source addresses per worker (each its own port space per destination).
const SOURCES_PER_WORKER: u8 = 4;
/// How long the drain may take.
const DRAIN_PATIENCE: Duration = Duration::from_secs(30);

/// The system under test, as far as the coordinator needs it.
#[derive(Debug)]
pub struct Target {
    /// Where users connect.
    pub urls: Vec<String>,
    /// How: the URLs' scheme.
    pub transport: Transport,
    /// QUIC: the certificate file to trust.
    pub quic_cert: Option<PathBuf>,
    /// QUIC: or the certificate's fingerprint.
    pub quic_fingerprint: Option<Fingerprint>,
    /// The secret their tokens are signed with.
    pub secret: String,
    /// The service processes to measure, when they run here.
    pub pids: Vec<u32>,
    /// Named in the report.
    pub name: String,
    /// What it speaks.
    pub protocol: Protocol,
    /// Its admin API, address and bearer token, when this run started it
    /// (to read the rooms' stats at the end).
    pub admin: Option<(String, String)>,
    /// The moderation hook the spawned servers use, if any.
    pub hook: Option<HookReceiver>,
    /// Spawned processes, alive until the run ends.
    _embedded: Option<NodeProcess>,
    _cluster: Option<LocalCluster>,
    _nats: Option<LocalServer>,
}

impl Target {
    /// The target `args` name, for clients over `transport`: started here,
    /// or reached at `--target`.
    pub fn prepare(args: &RunArgs, transport: Transport) -> anyhow::Result<Self> {
        if !args.spawn_local {
            let file = args
                .token_secret_file
                .clone()
                .context("--target needs --token-secret-file (the target's token secret)")?;
            let secret = read_secret(&file)?;
            for url in &args.target {
                let named = Transport::of(url)?;
                if named != transport {
                    bail!(
                        "--target {url} is {} but the run is over {}: give one target list \
                         per transport",
                        named.name(),
                        transport.name()
                    );
                }
            }
            return Ok(Self {
                urls: args.target.clone(),
                transport,
                quic_cert: args.cert.clone(),
                quic_fingerprint: args.fingerprint,
                secret,
                pids: Vec::new(),
                name: format!("{} (remote)", args.target.join(", ")),
                protocol: Protocol::Chatroom,
                admin: None,
                hook: None,
                _embedded: None,
                _cluster: None,
                _nats: None,
            });
        }
        let dir = args.out.join("servers");
        let hook = args
            .hook_delay_ms
            .map(|ms| HookReceiver::start(&dir, Duration::from_millis(ms)))
            .transpose()?;
        let mut server_args = args.server_args.clone();
        server_args.extend(hook.iter().flat_map(HookReceiver::server_args));
        if args.msg_svcs == 0 {
            let node = crate::local::spawn_embedded(&dir, &server_args)?;
            let secret = read_secret(&dir.join("token-secret"))?;
            let token = std::fs::read_to_string(dir.join("admin-token"))
                .context("the embedded server's admin token")?;
            let url = match transport {
                Transport::Ws => node.ws_url.clone(),
                Transport::Quic => node.quic_url.clone(),
            };
            return Ok(Self {
                urls: url.into_iter().collect(),
                transport,
                quic_cert: Some(dir.join("quic-cert.pem")),
                quic_fingerprint: None,
                secret,
                pids: node.pid().into_iter().collect(),
                name: "chatroom embedded (1 process, spawned here)".into(),
                protocol: Protocol::Chatroom,
                admin: Some((node.http_addr.clone(), token.trim().to_owned())),
                hook,
                _embedded: Some(node),
                _cluster: None,
                _nats: None,
            });
        }
        let spec = ClusterSpec {
            room_svcs: args.room_svcs.max(1),
            msg_svcs: args.msg_svcs,
            node_args: server_args,
            ..ClusterSpec::default()
        };
        let cluster = LocalCluster::start(&spec, &dir)?;
        let mut target = Self::cluster(&cluster, transport)?;
        target._cluster = Some(cluster);
        target.hook = hook;
        Ok(target)
    }

    /// A local cluster the caller started and keeps (to fail its processes
    /// during the run): its processes are measured as they were at the start.
    pub fn cluster(cluster: &LocalCluster, transport: Transport) -> anyhow::Result<Self> {
        let secret = read_secret(&cluster.dir().join("token-secret"))?;
        Ok(Self {
            urls: match transport {
                Transport::Ws => cluster.ws_urls(),
                Transport::Quic => cluster.quic_urls(),
            },
            transport,
            quic_cert: Some(cluster.quic_cert_file().to_owned()),
            quic_fingerprint: None,
            secret,
            pids: cluster
                .room_svcs
                .iter()
                .chain(&cluster.msg_svcs)
                .filter_map(NodeProcess::pid)
                .collect(),
            name: format!(
                "chatroom cluster ({} room-svc + {} msg-svc, spawned here)",
                cluster.room_svcs.len(),
                cluster.msg_svcs.len()
            ),
            protocol: Protocol::Chatroom,
            admin: cluster
                .room_svcs
                .first()
                .map(|node| {
                    Ok::<_, anyhow::Error>((node.http_addr.clone(), cluster.admin_token()?))
                })
                .transpose()?,
            hook: None,
            _embedded: None,
            _cluster: None,
            _nats: None,
        })
    }
}

impl Target {
    /// The reference broker `peer` names, started here if it is local.
    pub fn nats(peer: &Peer, out: &Path) -> anyhow::Result<Self> {
        let (addr, pids, name, server) = match peer {
            Peer::LocalNats => {
                let server = LocalServer::nats(&out.join("nats"))?;
                let pids = server.pid().into_iter().collect();
                let name = "nats-server (1 process, spawned here)".to_owned();
                (server.addr(), pids, name, Some(server))
            }
            Peer::Nats(addr) => (
                addr.clone(),
                Vec::new(),
                format!("nats://{addr} (remote)"),
                None,
            ),
        };
        let url = format!("nats://{addr}");
        Ok(Self {
            urls: vec![url],
            transport: Transport::Ws,
            quic_cert: None,
            quic_fingerprint: None,
            // Unused by NATS; a worker still needs a valid key to start.
            secret: "nats-peer-has-no-tokens-0123456789".into(),
            pids,
            name,
            protocol: Protocol::Nats,
            admin: None,
            hook: None,
            _embedded: None,
            _cluster: None,
            _nats: server,
        })
    }
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    SecretSource::File(path.to_owned())
        .load(false)
        .with_context(|| format!("token secret {}", path.display()))?;
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Runs `scenario` against `target` with real connections.
pub async fn run(scenario: &Scenario, args: &RunArgs, target: &Target) -> anyhow::Result<Report> {
    // Timed from its first poll, when the measured phase begins.
    let measured = async { tokio::time::sleep(Duration::from_secs(args.duration)).await };
    Ok(run_until(scenario, args, target, measured).await?.0)
}

/// Runs `scenario` against `target` with a measured phase that lasts until
/// `until`, first polled when the phase begins, completes (at least until every user joined, in a join storm);
/// returns the report and what `until` gave.
pub async fn run_until<T>(
    scenario: &Scenario,
    args: &RunArgs,
    target: &Target,
    until: impl Future<Output = T>,
) -> anyhow::Result<(Report, T)> {
    let rooms = scenario.rooms(args);
    let room_names: Vec<String> = rooms.iter().map(|r| r.name.clone()).collect();
    let users: u64 = rooms.iter().map(|r| r.users).sum();
    let receiving = args
        .workers
        .unwrap_or_else(|| users.div_ceil(USERS_PER_WORKER) as u32)
        .max(1);
    // With several workers the senders get a process of their own, so the
    // receive load cannot slow the offered rate.
    let sends = rooms
        .iter()
        .any(|r| (r.senders > 0 && r.rate > 0.0) || r.notice_every_ms > 0);
    let senders_apart = receiving > 1 && sends;
    let workers = receiving + u32::from(senders_apart);
    let server_rss_before = rss_kb(&target.pids);
    let mut fleet = Fleet::spawn(scenario, args, target, rooms, receiving, senders_apart)?;

    let (mut connected, mut failed, mut connect_s) = (0, 0, 0.0f64);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..workers {
        match fleet.next().await? {
            Event::Ready {
                connected: c,
                failed: f,
                connect_s: s,
                failures: why,
            } => {
                connected += c;
                failed += f;
                connect_s = connect_s.max(s);
                for (reason, n) in why {
                    *failures.entry(reason).or_default() += n;
                }
            }
            other => bail!("a worker said {other:?} before it was ready"),
        }
    }
    let idle_rss = rss_kb(&target.pids);
    let server_cpu_before = cpu_s(&target.pids);
    let server_cpu_each_before: Vec<f64> = target.pids.iter().map(|&pid| cpu_s(&[pid])).collect();
    let client_cpu_before = cpu_s(&fleet.pids());
    fleet.tell(&Command::Go)?;
    let started = Instant::now();

    let mut seconds = Seconds::default();
    let join_storm = matches!(scenario, Scenario::JoinStorm);
    let mut until = std::pin::pin!(until);
    let mut ended = None;
    let ended = loop {
        if let Some(out) = ended.take_if(|_| !join_storm || seconds.joined >= connected) {
            break out;
        }
        // A join storm's joins must keep coming; other runs wait for `until`.
        let patience = if join_storm {
            Duration::from_secs(60)
        } else {
            Duration::MAX
        };
        tokio::select! {
            out = &mut until, if ended.is_none() => ended = Some(out),
            event = tokio::time::timeout(patience, fleet.next()) => match event {
                Ok(event) => seconds.absorb(event?)?,
                Err(_) => bail!("joins stopped at {} of {connected}", seconds.joined),
            },
        }
    };
    let duration_s = started.elapsed().as_secs_f64();
    fleet.tell(&Command::StopSending)?;
    let mut targets = BTreeMap::new();
    let mut sent = 0;
    while sent < workers {
        match fleet.next().await? {
            Event::Sent { tally } => {
                sent += 1;
                for (room, counts) in tally.rooms {
                    let drain_to = targets.entry(room).or_insert(0);
                    *drain_to = match target.protocol {
                        // The room's newest message id.
                        Protocol::Chatroom => counts.last_msg_id.max(*drain_to),
                        // How many messages were published in the room.
                        Protocol::Nats => *drain_to + counts.accepted.iter().sum::<u64>(),
                    };
                }
            }
            other => seconds.absorb(other)?,
        }
    }
    fleet.tell(&Command::Drain {
        targets,
        patience_ms: DRAIN_PATIENCE.as_millis() as u64,
    })?;
    let mut tally = Tally::default();
    let mut latency = Latency::default();
    let (mut behind, mut resumed, mut done) = (0, 0, 0);
    let mut lost: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_join_s = 0.0f64;
    while done < workers {
        match fleet.next().await? {
            Event::Done {
                tally: t,
                latency: l,
                behind: b,
                lost_connections: why,
                resumed: r,
                last_join_s: j,
            } => {
                done += 1;
                last_join_s = last_join_s.max(j);
                tally.merge(&t);
                latency.merge(&l);
                behind += b;
                resumed += r;
                for (reason, n) in why {
                    *lost.entry(reason).or_default() += n;
                }
            }
            other => seconds.absorb(other)?,
        }
    }
    let server_cpu = cpu_s(&target.pids) - server_cpu_before;
    let mut server_cpu_by_program: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    for (pid, before) in target.pids.iter().zip(&server_cpu_each_before) {
        let entry = server_cpu_by_program.entry(program(*pid)).or_default();
        entry.0 += cpu_s(&[*pid]) - before;
        entry.1 += 1;
    }
    let client_cpu = cpu_s(&fleet.pids()) - client_cpu_before;
    let final_rss = rss_kb(&target.pids);
    fleet.finish();
    let room_stats_delivered = match &target.admin {
        Some((addr, token)) => room_stats_delivered(addr, token, &room_names).await,
        None => None,
    };

    // Whole seconds of the measured phase.
    let measured_seconds = (duration_s as u32).max(1);
    let timeline: Vec<Second> = seconds
        .by_t
        .iter()
        .filter(|(t, _)| **t < measured_seconds)
        .map(|(t, (delivered, latency))| Second {
            t: *t,
            delivered_per_s: *delivered as f64,
            p50_ms: latency.quantile_ms(0.5),
            p99_ms: latency.quantile_ms(0.99),
        })
        .collect();
    let delivered_measured: f64 = timeline.iter().map(|s| s.delivered_per_s).sum();
    let delivered_per_s = delivered_measured / f64::from(measured_seconds);
    let accepted: u64 = (0..2).map(|lane| tally.lane(lane).accepted).sum();
    let mut notes = vec![if senders_apart {
        format!("{workers} worker processes, the senders in one of their own")
    } else {
        format!("{workers} worker processes")
    }];
    if failed > 0 {
        notes.push(format!("{failed} connections failed: {failures:?}"));
    }
    if behind > 0 {
        notes.push(format!(
            "{behind} receivers had not caught up after {DRAIN_PATIENCE:?}"
        ));
    }
    if args.client == ClientKind::Library && target.protocol == Protocol::Chatroom {
        notes.push("users played by the Rust client library (--client library)".to_owned());
    }
    if server_cpu_by_program.len() > 1 {
        let each: Vec<String> = server_cpu_by_program
            .iter()
            .map(|(name, (cpu, n))| match n {
                1 => format!("{name} {cpu:.2}"),
                n => format!("{name} {cpu:.2} over {n} processes"),
            })
            .collect();
        notes.push(format!("server CPU-s by program: {}", each.join(", ")));
    }
    let lost_connections: u64 = lost.values().sum();
    if lost_connections > 0 {
        notes.push(format!(
            "{lost_connections} connections ended early, {resumed} came back and resumed by \
             cursor: {lost:?}"
        ));
    }
    let has_server = !target.pids.is_empty();
    let total_delivered = tally.delivered() as f64;
    let report = Report {
        scenario: scenario.name().into(),
        transport: match target.protocol {
            Protocol::Chatroom => target.transport.name().into(),
            Protocol::Nats => "nats".into(),
        },
        real_connections: connected,
        simulated_users: 0,
        duration_s,
        latency_ms: latency.percentiles(),
        delivered_per_s,
        lanes: Lanes {
            normal: tally.lane(0),
            priority: tally.lane(1),
        },
        server: ServerUse {
            cpu_s: has_server.then_some(server_cpu),
            rss_kb_per_idle_conn: (has_server && connected > 0)
                .then(|| idle_rss.saturating_sub(server_rss_before) as f64 / connected as f64),
            delivered_per_cpu_s: (has_server && server_cpu > 0.0)
                .then(|| total_delivered / server_cpu),
            rss_kb: has_server.then_some(final_rss),
        },
        peer: None,
        other_transports: Vec::new(),
        target: target.name.clone(),
        accepted_per_s: accepted as f64 / duration_s,
        connect_per_s: if connect_s > 0.0 {
            connected as f64 / connect_s
        } else {
            0.0
        },
        joins_per_s: (join_storm && last_join_s > 0.0).then(|| seconds.joined as f64 / last_join_s),
        refused: tally.refused(),
        room_stats_delivered,
        receivers: tally
            .rooms
            .iter()
            .map(|(room, counts)| (room.clone(), counts.receivers))
            .collect(),
        client: ClientUse {
            cpu_s: client_cpu,
            processes: workers,
        },
        timeline,
        notes,
    };
    Ok((report, ended))
}

/// The deliveries the rooms' stats count, summed, once the nodes' last
/// reports (taken about once a second) are in: read until two readings a
/// second and a half apart agree; `None` if the stats cannot be read.
async fn room_stats_delivered(addr: &str, token: &str, rooms: &[String]) -> Option<u64> {
    const SETTLE: Duration = Duration::from_millis(1_500);
    const READINGS: u32 = 8;
    let read = || {
        let (addr, token, rooms) = (addr.to_owned(), token.to_owned(), rooms.to_vec());
        tokio::task::spawn_blocking(move || {
            rooms.iter().try_fold(0u64, |sum, room| {
                let (status, body) = admin_get(&addr, &format!("/admin/v1/rooms/{room}"), &token)?;
                let stats: serde_json::Value = serde_json::from_str(&body).ok()?;
                (status == 200).then(|| sum + stats["delivered"].as_u64().unwrap_or(0))
            })
        })
    };
    let mut last = read().await.ok()??;
    for _ in 0..READINGS {
        tokio::time::sleep(SETTLE).await;
        let now = read().await.ok()??;
        if now == last {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// Per-second counts of the measured phase, from every worker.
#[derive(Default)]
struct Seconds {
    by_t: BTreeMap<u32, (u64, Latency)>,
    joined: u64,
}

impl Seconds {
    /// Takes in a `Second` event; anything else at this point is a worker
    /// out of step.
    fn absorb(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Second {
                t,
                delivered,
                joined,
                latency,
            } => {
                let entry = self.by_t.entry(t).or_default();
                entry.0 += delivered;
                entry.1.merge(&latency);
                self.joined += joined;
                Ok(())
            }
            other => bail!("a worker said {other:?} out of turn"),
        }
    }
}

/// The worker processes and what they say.
struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    /// What each worker says, tagged with its index.
    events: mpsc::UnboundedReceiver<(u32, anyhow::Result<Event>)>,
    /// Workers that sent their results: their exit is expected.
    finished: Vec<bool>,
}

impl Fleet {
    fn spawn(
        scenario: &Scenario,
        args: &RunArgs,
        target: &Target,
        rooms: Vec<PlanRoom>,
        receiving: u32,
        senders_apart: bool,
    ) -> anyhow::Result<Self> {
        let users: u64 = rooms.iter().map(|r| r.users).sum();
        let per_worker = users.div_ceil(u64::from(receiving));
        let workers = receiving + u32::from(senders_apart);
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        let exe: PathBuf = match &args.worker_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()?,
        };
        for worker in 0..workers {
            // The senders' worker, when apart, is the last and spans everyone.
            let (plays, first_user, share) = if worker == receiving {
                (Plays::Senders, 0, users)
            } else {
                let first_user = u64::from(worker) * per_worker;
                let share = per_worker.min(users.saturating_sub(first_user));
                let plays = if senders_apart {
                    Plays::Receivers
                } else {
                    Plays::All
                };
                (plays, first_user, share)
            };
            let plan = WorkerPlan {
                worker,
                protocol: target.protocol,
                client: args.client,
                targets: target.urls.clone(),
                quic_cert: target.quic_cert.clone(),
                quic_fingerprint: target.quic_fingerprint.map(|pin| pin.to_string()),
                source_ips: (1..=SOURCES_PER_WORKER)
                    .map(|host| {
                        Ipv4Addr::new(127, 1 + (worker / 250) as u8, (worker % 250) as u8, host)
                    })
                    .collect(),
                token_secret: target.secret.clone(),
                rooms: rooms.clone(),
                first_user,
                users: share,
                connect_per_s: (args.connect_rate / receiving).max(1),
                payload_bytes: args.payload_bytes,
                reconnect_fraction: match scenario {
                    Scenario::ReconnectStorm { fraction, .. } => *fraction,
                    _ => 0.0,
                },
                reconnect_every_ms: match scenario {
                    Scenario::ReconnectStorm { every_ms, .. } => *every_ms,
                    _ => 0,
                },
                join_on_go: matches!(scenario, Scenario::JoinStorm),
                plays,
            };
            let mut child = Process::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting a worker")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            writeln!(stdin, "{}", serde_json::to_string(&plan)?)?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let event = line.map_err(anyhow::Error::from).and_then(|line| {
                        serde_json::from_str::<Event>(&line).map_err(anyhow::Error::from)
                    });
                    if tx.send((worker, event)).is_err() {
                        return;
                    }
                }
                let _ = tx.send((worker, Err(anyhow::anyhow!("worker {worker} ended"))));
            });
            children.push(child);
            stdins.push(stdin);
        }
        Ok(Self {
            children,
            stdins,
            events,
            finished: vec![false; workers as usize],
        })
    }

    async fn next(&mut self) -> anyhow::Result<Event> {
        loop {
            let (worker, event) = self.events.recv().await.context("workers gone")?;
            let worker = worker as usize;
            match event {
                Err(_) if self.finished[worker] => continue,
                Ok(event @ Event::Done { .. }) => {
                    self.finished[worker] = true;
                    return Ok(event);
                }
                other => return other,
            }
        }
    }

    fn tell(&mut self, command: &Command) -> anyhow::Result<()> {
        let line = serde_json::to_string(command)?;
        for stdin in &mut self.stdins {
            writeln!(stdin, "{line}")?;
            stdin.flush()?;
        }
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn finish(mut self) {
        self.stdins.clear();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU seconds (user + system) of `pids` so far.
pub fn cpu_s(pids: &[u32]) -> f64 {
    // The kernel's USER_HZ, in which /proc reports CPU time: 100 on Linux.
    const TICKS_PER_S: f64 = 100.0;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some((user + system) as f64 / TICKS_PER_S)
        })
        .sum()
}

/// The program a process runs, as the kernel names it (`comm`).
fn program(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_or_else(|_| format!("pid {pid}"), |name| name.trim().to_owned())
}

/// Resident memory of `pids`, KiB.
pub fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_from_proc() {
        let me = std::process::id();
        let mut spin = 0u64;
        while cpu_s(&[me]) == 0.0 {
            spin = (0..100_000u64).fold(spin, |a, b| a.wrapping_add(b * b));
        }
        assert!(cpu_s(&[me]) > 0.0, "{spin}");
        assert!(rss_kb(&[me]) > 1_000, "a test process uses more than 1 MiB");
        assert_eq!((cpu_s(&[u32::MAX]), rss_kb(&[u32::MAX])), (0.0, 0));
    }
}
