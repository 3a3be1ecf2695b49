//! A worker process: plays its share of the users on one thread (the
//! coordinator runs several, each under the per-process descriptor limit)
//! and talks to the coordinator in JSON lines: the plan and then commands on
//! stdin, events on stdout.

use std::io::{BufRead, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use chatroom_cluster::auth::TokenKey;
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;

use super::bot::{self, Phase, Role, Shared};
use super::plan::{ClientKind, Command, Event, Plays, Protocol, WorkerPlan};
use super::stats::{Latency, Tally};
use super::{library, nats};

/// How long sends in flight may take to be answered once senders stop.
const SENDS_PATIENCE: Duration = Duration::from_secs(10);

/// Runs a worker until the coordinator's drain completes. Reads the plan
/// from the first line of stdin.
pub fn run() -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let plan: WorkerPlan = serde_json::from_str(&line)?;
    drop(stdin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, play(plan))
}

fn emit(event: &Event) {
    // A struct of numbers, strings and maps always serialises.
    let line = serde_json::to_string(event).expect("events serialise");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Commands arriving on stdin, read on a thread of their own.
fn commands() -> mpsc::UnboundedReceiver<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            match serde_json::from_str::<Command>(&line) {
                Ok(command) => {
                    if tx.send(command).is_err() {
                        return;
                    }
                }
                Err(error) => eprintln!("worker: bad command {line:?}: {error}"),
            }
        }
    });
    rx
}

async fn play(plan: WorkerPlan) -> anyhow::Result<()> {
    let key = TokenKey::new(plan.token_secret.as_bytes())?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let mut commands = commands();
    let shared = Rc::new(Shared::new(plan.clone(), key, phase_rx));
    let bots = cast(&plan);
    let total = bots.len() as u64;
    let started = Instant::now();
    let spacing = Duration::from_secs_f64(1.0 / f64::from(plan.connect_per_s.max(1)));
    for (index, (user, room, role)) in bots.into_iter().enumerate() {
        let start_after = spacing * index as u32;
        let shared = Rc::clone(&shared);
        match (plan.protocol, plan.client) {
            (Protocol::Chatroom, ClientKind::Swarm) => {
                tokio::task::spawn_local(bot::run(shared, user, room, role, start_after))
            }
            (Protocol::Chatroom, ClientKind::Library) => {
                tokio::task::spawn_local(library::run(shared, user, room, role, start_after))
            }
            (Protocol::Nats, _) => {
                tokio::task::spawn_local(nats::run(shared, user, room, role, start_after))
            }
        };
    }
    while shared.ready.get() + failed(&shared) < total {
        shared.milestone.notified().await;
    }
    emit(&Event::Ready {
        connected: shared.ready.get(),
        failed: failed(&shared),
        connect_s: started.elapsed().as_secs_f64(),
        failures: shared.failures.borrow().clone(),
    });

    let mut t = 0u32;
    let mut go_at = Instant::now();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Go) => {
                    go_at = Instant::now();
                    second.reset();
                    phase_tx.send_replace(Phase::Running);
                }
                Some(Command::StopSending) => {
                    phase_tx.send_replace(Phase::Stopped);
                    // Sends still in flight may yet be accepted: the drain
                    // targets must include them.
                    let answered = async {
                        while shared.sends_in_flight.get() > 0 {
                            shared.milestone.notified().await;
                        }
                    };
                    if tokio::time::timeout(SENDS_PATIENCE, answered).await.is_err() {
                        eprintln!("worker: {} sends never answered", shared.sends_in_flight.get());
                    }
                    emit(&Event::Sent { tally: tally(&shared, true) });
                }
                Some(Command::Drain { targets, patience_ms }) => {
                    draining = Some(tokio::time::Instant::now() + Duration::from_millis(patience_ms));
                    phase_tx.send_replace(Phase::Draining(Rc::new(targets)));
                }
                None => return Ok(()),
            },
            _ = second.tick(), if *phase_tx.borrow() != Phase::Connecting => {
                emit(&Event::Second {
                    t,
                    delivered: shared.second_delivered.replace(0),
                    joined: shared.second_joined.replace(0),
                    latency: shared.second_latency.replace(Latency::default()),
                });
                t += 1;
            }
            () = shared.milestone.notified(), if draining.is_some() => {}
            () = sleep_until(draining), if draining.is_some() => break,
        }
        if draining.is_some() && shared.done.get() >= shared.ready.get() {
            break;
        }
    }
    emit(&Event::Done {
        tally: tally(&shared, false),
        latency: shared.latency.borrow().clone(),
        behind: shared.ready.get().saturating_sub(shared.done.get()),
        lost_connections: shared.lost.borrow().clone(),
        resumed: shared.resumed.get(),
        last_join_s: shared
            .last_join
            .get()
            .map_or(0.0, |at| at.saturating_duration_since(go_at).as_secs_f64()),
    });
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn failed(shared: &Shared) -> u64 {
    shared.failures.borrow().values().sum()
}

/// The users this worker plays: (user, room index, role). The first users
/// of a room send; a room with notices gets a `system` user, played by the
/// worker that holds the room's first user.
fn cast(plan: &WorkerPlan) -> Vec<(u64, usize, Role)> {
    let mut bots = Vec::with_capacity(plan.users as usize);
    for user in plan.first_user..plan.first_user + plan.users {
        let Some(index) = plan
            .rooms
            .iter()
            .position(|r| user >= r.first_user && user < r.first_user + r.users)
        else {
            continue;
        };
        let room = &plan.rooms[index];
        let role = if user - room.first_user < room.senders && room.rate > 0.0 {
            Role::Sender(Duration::from_secs_f64(room.senders as f64 / room.rate))
        } else {
            Role::Receiver
        };
        let notifier = (user == room.first_user && room.notice_every_ms > 0)
            .then(|| Role::Notifier(Duration::from_millis(room.notice_every_ms)));
        for role in std::iter::once(role).chain(notifier) {
            let plays = match plan.plays {
                Plays::All => true,
                Plays::Senders => role != Role::Receiver,
                Plays::Receivers => role == Role::Receiver,
            };
            if plays {
                bots.push((user, index, role));
            }
        }
    }
    bots
}

/// The worker's counts as a tally; with `senders_only`, just what the rooms
/// accepted from this worker (for the drain targets).
fn tally(shared: &Shared, senders_only: bool) -> Tally {
    let mut tally = Tally::default();
    for (room, counts) in shared.plan.rooms.iter().zip(shared.rooms.borrow().iter()) {
        if counts.receivers == 0 && counts.accepted == [0, 0] && counts.refused.is_empty() {
            continue;
        }
        let entry = tally.room(&room.name);
        entry.merge(counts);
        if senders_only {
            entry.receivers = 0;
            entry.delivered = [0, 0];
            entry.dropped = [0, 0];
        }
    }
    tally
}
