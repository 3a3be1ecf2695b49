//! The same users played by the Rust client library (`--client library`):
//! every frame decoded, deltas applied and pulls made by `chatroom_client::Client`,
//! exactly as an application using it would. It costs far more CPU per
//! message than the swarm's lean client, so it is for checking the swarm
//! and the library against each other on small runs, not for scale.
//!
//! Counting is the swarm's: messages after the cursor the user joined at
//! are delivered, the library's `Dropped` events are what the server shed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use chatroom_client::{Client, ClientConfig, ClientError, Event, Events, JoinOptions};
use chatroom_proto::v1::{Kind, Lane};
use tokio::time::MissedTickBehavior;

use super::bot::{self, Phase, Player, Role, Shared};
use super::wire;

/// Sends one user may have awaiting their answer, as in the swarm.
const SENDS_IN_FLIGHT: u32 = 32;

/// Plays one user with the client library until the worker's process ends.
pub(crate) async fn run(
    shared: Rc<Shared>,
    user: u64,
    room_index: usize,
    role: Role,
    start_after: Duration,
) {
    let started = async {
        let mut player = LibraryUser::start(Rc::clone(&shared), user, room_index, role).await?;
        if !shared.plan.join_on_go {
            player.join().await?;
        }
        Ok(player)
    };
    let Some(mut player) = bot::arrive(&shared, start_after, started).await else {
        return;
    };
    bot::keep_playing(&shared, user, &mut player).await;
}

struct LibraryUser {
    shared: Rc<Shared>,
    config: ClientConfig,
    client: Client,
    events: Events,
    room_index: usize,
    room: String,
    role: Role,
    joined: bool,
    /// Messages up to this msg_id were in the room before the user came.
    joined_after: u64,
    /// This user's sends awaiting their answer.
    in_flight: Rc<Cell<u32>>,
    done: bool,
}

impl Player for LibraryUser {
    async fn live(&mut self) -> Result<(), String> {
        let mut phase = self.shared.phase.clone();
        let send_every = match self.role {
            Role::Sender(every) | Role::Notifier(every) => Some(every),
            Role::Receiver => None,
        };
        let mut send = tokio::time::interval(send_every.unwrap_or(Duration::from_secs(3600)));
        send.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let running = *phase.borrow() == Phase::Running;
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if *phase.borrow() == Phase::Running && !self.joined {
                        self.join().await?;
                    }
                    self.check_drained();
                }
                _ = send.tick(), if running && send_every.is_some() => self.send_one(),
                event = self.events.recv() => {
                    self.take(event)?;
                    self.check_drained();
                }
            }
        }
    }

    async fn resume(&mut self) -> Result<(), String> {
        let since = self.client.cursor(&self.room);
        (self.client, self.events) = Client::connect(self.config.clone())
            .await
            .map_err(|e| e.to_string())?;
        let options = JoinOptions { since, backfill: 0 };
        self.client
            .join(&self.room, options)
            .await
            .map_err(|e| format!("join refused: {e}"))?;
        Ok(())
    }
}

impl LibraryUser {
    async fn start(
        shared: Rc<Shared>,
        user: u64,
        room_index: usize,
        role: Role,
    ) -> Result<Self, String> {
        let (_, token) = bot::identity(&shared, user, role)?;
        let plan = &shared.plan;
        let url = plan.targets[(user as usize) % plan.targets.len()].clone();
        let mut config = ClientConfig::new(url, token);
        config.trust = plan.trust()?;
        config.bind_addr = Some(plan.source_ips[(user as usize) % plan.source_ips.len()].into());
        let (client, events) = Client::connect(config.clone())
            .await
            .map_err(|e| format!("connect refused: {e}"))?;
        let room = plan.rooms[room_index].name.clone();
        Ok(Self {
            shared,
            config,
            client,
            events,
            room_index,
            room,
            role,
            joined: false,
            joined_after: 0,
            in_flight: Rc::new(Cell::new(0)),
            done: false,
        })
    }

    /// Joins fresh: what the room held before is not this run's to count.
    async fn join(&mut self) -> Result<(), String> {
        let ack = self
            .client
            .join(&self.room, JoinOptions::default())
            .await
            .map_err(|e| format!("join refused: {e}"))?;
        self.joined_after = ack.latest.unwrap_or_default().msg_id;
        self.joined = true;
        self.shared.rooms.borrow_mut()[self.room_index].receivers += 1;
        let shared = &self.shared;
        shared.second_joined.set(shared.second_joined.get() + 1);
        shared.last_join.set(Some(std::time::Instant::now()));
        Ok(())
    }

    /// Counts one event; a lost connection ends the session.
    fn take(&mut self, event: Option<Event>) -> Result<(), String> {
        let shared = &self.shared;
        match event {
            Some(Event::Message { message, .. }) if message.msg_id > self.joined_after => {
                let lane = usize::from(message.lane == Lane::Priority as i32);
                shared.rooms.borrow_mut()[self.room_index].delivered[lane] += 1;
                shared
                    .second_delivered
                    .set(shared.second_delivered.get() + 1);
                if let Some(stamp) = wire::read_stamp(&message.payload) {
                    let micros = bot::unix_micros().saturating_sub(stamp);
                    shared.second_latency.borrow_mut().record(micros);
                    shared.latency.borrow_mut().record(micros);
                }
            }
            Some(Event::Dropped {
                normal, priority, ..
            }) => {
                let mut rooms = shared.rooms.borrow_mut();
                let dropped = &mut rooms[self.room_index].dropped;
                dropped[0] += normal;
                dropped[1] += priority;
            }
            Some(Event::Kicked {
                room: None,
                message,
                ..
            }) => return Err(format!("kicked: {message}")),
            Some(Event::Closed { reason }) => return Err(reason.to_string()),
            None => return Err("connection closed".into()),
            Some(_) => {}
        }
        Ok(())
    }

    /// Sends one stamped message; its answer is counted when it comes.
    fn send_one(&mut self) {
        // A send after the worker reported what it sent would be owed but
        // not counted.
        if *self.shared.phase.borrow() != Phase::Running || self.in_flight.get() >= SENDS_IN_FLIGHT
        {
            return;
        }
        let kind = match self.role {
            Role::Notifier(_) => Kind::Notice,
            _ => Kind::Chat,
        };
        let payload = wire::stamped_payload(bot::unix_micros(), self.shared.plan.payload_bytes);
        let (client, room, shared) = (
            self.client.clone(),
            self.room.clone(),
            Rc::clone(&self.shared),
        );
        let (room_index, in_flight) = (self.room_index, Rc::clone(&self.in_flight));
        in_flight.set(in_flight.get() + 1);
        shared.sends_in_flight.set(shared.sends_in_flight.get() + 1);
        tokio::task::spawn_local(async move {
            let answer = client.send(&room, kind, payload).await;
            {
                let mut rooms = shared.rooms.borrow_mut();
                let tally = &mut rooms[room_index];
                match answer {
                    Ok(ack) => {
                        tally.accepted[usize::from(ack.lane == Lane::Priority as i32)] += 1;
                        tally.last_msg_id = tally.last_msg_id.max(ack.msg_id);
                    }
                    Err(ClientError::Server(error)) => tally.refuse(error.code),
                    // Unanswered: the connection went; the resume counts on.
                    Err(_) => {}
                }
            }
            in_flight.set(in_flight.get() - 1);
            shared.send_settled();
        });
    }

    fn check_drained(&mut self) {
        if self.done {
            return;
        }
        if let Phase::Draining(targets) = &*self.shared.phase.borrow() {
            let target = targets.get(&self.room).copied().unwrap_or(0);
            let at = self.client.cursor(&self.room).map_or(0, |c| c.msg_id);
            if at >= target {
                self.done = true;
                self.shared.done.set(self.shared.done.get() + 1);
                self.shared.milestone.notify_one();
            }
        }
    }
}
