//! One simulated viewer: a real connection from a chosen source address,
//! the protocol a real client speaks (redirects, join by cursor, inline
//! deltas, notify then pull, pings, resuming after a drop), and counts.
//!
//! Bots of a worker share one thread, one read buffer and one set of
//! counters; a bot holds only its connection, its cursor and bytes of a
//! frame still arriving. Over QUIC the bots of a worker share one client
//! endpoint (one UDP socket) per source address.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chatroom_cluster::auth::{Roles, TokenKey};
use chatroom_cluster::quic;
use chatroom_proto::v1::{
    self, ClientFrame, Connect, Cursor, ErrorCode, Join, Kind, Lane, Ping, Pull, Send,
    client_frame, server_frame,
};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};

use super::history::RoomHistory;
use super::plan::WorkerPlan;
use super::stats::{LANES, Latency, RoomTally};
use super::wire::{self, Batch, Framing, Scanned, WsFrame};

/// Sends a sender may have awaiting their ack.
const SENDS_IN_FLIGHT: u32 = 32;
/// How often a send told OVERLOADED (the room is moving, or its owner was
/// lost with the send in flight) is tried again, with the same
/// client_msg_id, before it counts as refused. A retry of a send the owner
/// did stamp gets the original ack, so each send counts once.
const SEND_ATTEMPTS: u32 = 40;
/// The least wait before such a retry.
const RETRY_AFTER_MIN: Duration = Duration::from_millis(50);
/// Messages per pull.
const PULL_LIMIT: u32 = 200;
/// Redirects followed when connecting.
const MAX_REDIRECTS: usize = 3;
/// How long connecting (redirects included) may take.
const CONNECT_PATIENCE: Duration = Duration::from_secs(20);
/// A QUIC connection silent this long is gone (the server's shorter limit
/// wins).
const QUIC_IDLE: Duration = Duration::from_secs(60);
/// Most bytes taken from a QUIC stream per read.
const QUIC_READ_CHUNK: usize = 64 * 1024;
/// How long a finished QUIC stream waits for the server's close code.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where a worker is in the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Connecting and joining.
    Connecting,
    /// The measured phase: senders send.
    Running,
    /// Senders stopped; receivers keep receiving.
    Stopped,
    /// Receive until each room's newest message.
    Draining(Rc<BTreeMap<String, u64>>),
}

/// What the bots of one worker share (one thread: cells, no locks).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) plan: WorkerPlan,
    pub(crate) key: TokenKey,
    pub(crate) phase: watch::Receiver<Phase>,
    /// One read buffer for every bot of the thread.
    pub(crate) scratch: RefCell<Vec<u8>>,
    /// Per plan room, by index.
    pub(crate) rooms: RefCell<Vec<RoomTally>>,
    /// What each plan room's receivers saw, checked, by index.
    histories: RefCell<Vec<RoomHistory>>,
    pub(crate) second_delivered: Cell<u64>,
    pub(crate) second_joined: Cell<u64>,
    pub(crate) second_latency: RefCell<Latency>,
    pub(crate) latency: RefCell<Latency>,
    pub(crate) ready: Cell<u64>,
    pub(crate) failures: RefCell<BTreeMap<String, u64>>,
    pub(crate) done: Cell<u64>,
    /// Connections that ended early, by why.
    pub(crate) lost: RefCell<BTreeMap<String, u64>>,
    /// Of those, how many came back and resumed by cursor.
    pub(crate) resumed: Cell<u64>,
    /// When the last JoinAck arrived.
    pub(crate) last_join: Cell<Option<std::time::Instant>>,
    /// Sends of every bot awaiting their answer.
    pub(crate) sends_in_flight: Cell<u64>,
    /// A bot became ready, failed, or finished draining.
    pub(crate) milestone: Notify,
    /// QUIC: one client endpoint per source address.
    quic_endpoints: RefCell<HashMap<Ipv4Addr, quinn::Endpoint>>,
}

impl Shared {
    pub(crate) fn new(plan: WorkerPlan, key: TokenKey, phase: watch::Receiver<Phase>) -> Self {
        let rooms = vec![RoomTally::default(); plan.rooms.len()];
        Self {
            plan,
            key,
            phase,
            scratch: RefCell::new(vec![0; 2 * wire::MAX_SERVER_FRAME]),
            histories: RefCell::new(rooms.iter().map(|_| RoomHistory::default()).collect()),
            rooms: RefCell::new(rooms),
            second_delivered: Cell::new(0),
            second_joined: Cell::new(0),
            second_latency: RefCell::new(Latency::default()),
            latency: RefCell::new(Latency::default()),
            ready: Cell::new(0),
            failures: RefCell::new(BTreeMap::new()),
            done: Cell::new(0),
            lost: RefCell::new(BTreeMap::new()),
            resumed: Cell::new(0),
            last_join: Cell::new(None),
            sends_in_flight: Cell::new(0),
            milestone: Notify::new(),
            quic_endpoints: RefCell::new(HashMap::new()),
        }
    }

    /// The QUIC endpoint bots connect from `source` with, made on first use.
    fn quic_endpoint(&self, source: Ipv4Addr) -> Result<quinn::Endpoint, String> {
        if let Some(endpoint) = self.quic_endpoints.borrow().get(&source) {
            return Ok(endpoint.clone());
        }
        let trust = self
            .plan
            .trust()?
            .ok_or("quic targets need a certificate or fingerprint to trust")?;
        let config =
            quic::client_config(&trust, quic::ALPN, QUIC_IDLE).map_err(|e| e.to_string())?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| format!("quic endpoint on {source}: {e}"))?;
        endpoint.set_default_client_config(config);
        self.quic_endpoints
            .borrow_mut()
            .insert(source, endpoint.clone());
        Ok(endpoint)
    }

    /// A send was answered, or never will be.
    pub(crate) fn send_settled(&self) {
        self.sends_in_flight.set(self.sends_in_flight.get() - 1);
        if self.sends_in_flight.get() == 0 {
            self.milestone.notify_one();
        }
    }

    /// A connection ended early for `reason`.
    pub(crate) fn lose(&self, reason: &str) {
        *self.lost.borrow_mut().entry(reason.to_owned()).or_default() += 1;
    }

    pub(crate) fn fail(&self, reason: &str) {
        *self
            .failures
            .borrow_mut()
            .entry(reason.to_owned())
            .or_default() += 1;
        self.milestone.notify_one();
    }
}

/// What a bot does besides receiving.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Role {
    Receiver,
    /// Sends chat at one message per interval.
    Sender(Duration),
    /// Sends a system notice (PRIORITY) per interval.
    Notifier(Duration),
}

/// Plays one user until the worker's process ends.
pub(crate) async fn run(
    shared: Rc<Shared>,
    user: u64,
    room_index: usize,
    role: Role,
    start_after: Duration,
) {
    let started = async {
        let mut bot = Bot::start(Rc::clone(&shared), user, room_index, role).await?;
        if !shared.plan.join_on_go {
            bot.join(None).await?;
        }
        Ok(bot)
    };
    let Some(mut bot) = arrive(&shared, start_after, started).await else {
        return;
    };
    keep_playing(&shared, user, &mut bot).await;
}

/// Waits `start_after` (connects are staggered), then `start`s a user's
/// connection within the connect patience; counts it ready, or failed and
/// `None`.
pub(crate) async fn arrive<P>(
    shared: &Shared,
    start_after: Duration,
    start: impl Future<Output = Result<P, String>>,
) -> Option<P> {
    tokio::time::sleep(start_after).await;
    match tokio::time::timeout(CONNECT_PATIENCE, start).await {
        Ok(Ok(player)) => {
            shared.ready.set(shared.ready.get() + 1);
            shared.milestone.notify_one();
            Some(player)
        }
        Ok(Err(reason)) => {
            shared.fail(&reason);
            None
        }
        Err(_) => {
            shared.fail("connect timed out");
            None
        }
    }
}

/// A user's connection, whichever client plays it.
pub(crate) trait Player {
    /// Receives (and sends) until the process ends, or the connection is
    /// lost and says why.
    async fn live(&mut self) -> Result<(), String>;
    /// Connects again and rejoins after the last message it has.
    async fn resume(&mut self) -> Result<(), String>;
}

/// Plays until the process ends. A lost connection comes back after a
/// pause and resumes by cursor, as a viewer's app does, so what the server
/// still holds is delivered and the rest reported dropped.
pub(crate) async fn keep_playing(shared: &Shared, user: u64, player: &mut impl Player) {
    let mut resumes = 0;
    loop {
        let Err(mut reason) = player.live().await else {
            return;
        };
        shared.lose(&reason);
        loop {
            if resumes == MAX_RESUMES {
                return shared.fail(&reason);
            }
            resumes += 1;
            tokio::time::sleep(resume_after(resumes, user)).await;
            match player.resume().await {
                Ok(()) => break,
                Err(why) => reason = why,
            }
        }
        shared.resumed.set(shared.resumed.get() + 1);
        // Back in: the next loss starts a fresh series of attempts, as an
        // app's reconnect backoff does.
        resumes = 0;
    }
}

/// The id and token of `user` playing `role`: notices come from a `system`
/// user of their own.
pub(crate) fn identity(shared: &Shared, user: u64, role: Role) -> Result<(String, String), String> {
    let (id, roles) = match role {
        Role::Notifier(_) => (
            format!("sys{user}"),
            Roles {
                system: true,
                ..Roles::default()
            },
        ),
        _ => (format!("u{user}"), Roles::default()),
    };
    let token = shared
        .key
        .mint(&id, roles, Duration::from_secs(24 * 3600))
        .map_err(|e| format!("token: {e}"))?;
    Ok((id, token))
}

/// Reads what `stream` has into `scratch` after the bytes of `partial`
/// (an item that had not fully arrived); returns how much of `scratch` is
/// filled and whether the peer closed.
pub(crate) fn read_after(
    stream: &TcpStream,
    scratch: &mut [u8],
    partial: &[u8],
) -> Result<(usize, bool), String> {
    let mut filled = partial.len();
    scratch[..filled].copy_from_slice(partial);
    while filled < scratch.len() {
        match stream.try_read(&mut scratch[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok((filled, false))
}

/// Keeps `rest`, the start of an item still arriving, for the next read; an
/// idle connection keeps no buffer.
pub(crate) fn keep_rest(partial: &mut Vec<u8>, rest: &[u8]) {
    partial.clear();
    if rest.is_empty() {
        *partial = Vec::new();
    } else {
        partial.extend_from_slice(rest);
    }
}

/// Attempts in a row a bot makes to come back after losing its connection
/// before it gives up.
const MAX_RESUMES: u32 = 5;

/// The pause before resume number `attempt`: a second per attempt, spread
/// over another second by user so a mass kick does not return at once.
fn resume_after(attempt: u32, user: u64) -> Duration {
    Duration::from_secs(u64::from(attempt)) + Duration::from_millis(user % 1_000)
}

struct Bot {
    shared: Rc<Shared>,
    user: u64,
    token: String,
    /// Where this user's node is (after redirects).
    url: String,
    source: Ipv4Addr,
    room_index: usize,
    room: String,
    role: Role,
    link: Link,
    /// Bytes of a frame still arriving (empty between frames).
    partial: Vec<u8>,
    heartbeat: Duration,
    cursor: Cursor,
    /// The room's newest position as last heard.
    latest: Cursor,
    pulling: bool,
    joined: bool,
    next_request: u64,
    /// Sends awaiting an answer, by request id.
    sends: HashMap<u64, PendingSend>,
    /// Sends to try again, each when it is due, oldest first.
    retries: std::collections::VecDeque<(tokio::time::Instant, PendingSend)>,
    client_msg_id: u64,
    mask: u32,
    done: bool,
}

impl Player for Bot {
    async fn live(&mut self) -> Result<(), String> {
        Bot::live(self).await
    }

    async fn resume(&mut self) -> Result<(), String> {
        self.reconnect().await
    }
}

impl Bot {
    /// Connects and says who it is, following redirects.
    async fn start(
        shared: Rc<Shared>,
        user: u64,
        room_index: usize,
        role: Role,
    ) -> Result<Self, String> {
        let (_, token) = identity(&shared, user, role)?;
        let plan = &shared.plan;
        let url = plan.targets[(user as usize) % plan.targets.len()].clone();
        let source = plan.source_ips[(user as usize) % plan.source_ips.len()];
        let room = plan.rooms[room_index].name.clone();
        let (link, partial) = open(&shared, &url, source).await?;
        let mut bot = Self {
            shared: Rc::clone(&shared),
            user,
            token,
            url,
            source,
            room_index,
            room,
            role,
            link,
            partial,
            heartbeat: Duration::from_secs(10),
            cursor: Cursor::default(),
            latest: Cursor::default(),
            pulling: false,
            joined: false,
            next_request: 1,
            sends: HashMap::new(),
            retries: std::collections::VecDeque::new(),
            // The user's number in the middle bits, a random run tag on
            // top: a rerun against the same server within its dedupe
            // window must not look like a retry of the last run's sends.
            client_msg_id: (rand::random::<u64>() & (u64::MAX << 44)) | (user << 20),
            mask: (user as u32).wrapping_mul(2_654_435_761) | 1,
            done: false,
        };
        bot.establish().await?;
        Ok(bot)
    }

    /// Sends Connect on the current stream; on a redirect, opens the stream
    /// the server names and tries there.
    async fn establish(&mut self) -> Result<(), String> {
        for _ in 0..=MAX_REDIRECTS {
            let connect = client_frame::Body::Connect(Connect {
                token: self.token.clone(),
                device_id: "swarm".into(),
            });
            self.request(connect).await?;
            match self.next_reply().await?.body {
                Some(server_frame::Body::ConnectAck(ack)) => {
                    self.heartbeat = Duration::from_millis(u64::from(ack.heartbeat_ms.max(1_000)));
                    return Ok(());
                }
                Some(server_frame::Body::Redirect(redirect)) => {
                    self.url = redirect.url;
                    (self.link, self.partial) = open(&self.shared, &self.url, self.source).await?;
                }
                other => return Err(format!("connect refused: {}", describe(other.as_ref()))),
            }
        }
        Err("too many redirects".to_owned())
    }

    /// Joins the room (resuming after `since`) and waits for the ack.
    async fn join(&mut self, since: Option<Cursor>) -> Result<(), String> {
        let id = self
            .request(client_frame::Body::Join(Join {
                room_id: self.room.clone(),
                since,
                backfill: 1,
            }))
            .await?;
        loop {
            let frame = self.next_reply().await?;
            if frame.request_id != id {
                continue;
            }
            return match frame.body {
                Some(server_frame::Body::JoinAck(ack)) => {
                    let latest = ack.latest.unwrap_or_default();
                    self.latest = latest;
                    self.cursor = match since {
                        Some(since) if !ack.reset => since,
                        _ => latest,
                    };
                    if since.is_none() {
                        self.shared.rooms.borrow_mut()[self.room_index].receivers += 1;
                    }
                    self.joined = true;
                    self.shared
                        .second_joined
                        .set(self.shared.second_joined.get() + 1);
                    self.shared.last_join.set(Some(std::time::Instant::now()));
                    if self.cursor.msg_id < latest.msg_id {
                        self.pull().await?;
                    }
                    Ok(())
                }
                other => Err(format!("join refused: {}", describe(other.as_ref()))),
            };
        }
    }

    /// Receives (and sends, pings, reconnects) until the process ends.
    async fn live(&mut self) -> Result<(), String> {
        let mut phase = self.shared.phase.clone();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        let send_every = match self.role {
            Role::Sender(every) | Role::Notifier(every) => Some(every),
            Role::Receiver => None,
        };
        let mut send = tokio::time::interval(send_every.unwrap_or(Duration::from_secs(3600)));
        send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let plan = &self.shared.plan;
        let reconnects = plan.reconnect_every_ms > 0
            && (self.user % 10_000) < (plan.reconnect_fraction * 10_000.0) as u64
            && self.role == Role::Receiver;
        let reconnect_every = Duration::from_millis(plan.reconnect_every_ms.max(1));
        let mut reconnect = tokio::time::interval_at(
            tokio::time::Instant::now() + reconnect_every,
            reconnect_every,
        );
        loop {
            let running = *phase.borrow() == Phase::Running;
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let now = phase.borrow().clone();
                    if now == Phase::Running && !self.joined {
                        self.join(None).await?;
                    }
                    self.check_drained(&now);
                }
                _ = send.tick(), if running && send_every.is_some() => self.send_one().await?,
                () = retry_due(&self.retries) => self.retry().await?,
                _ = ping.tick() => {
                    let id = self.next_id();
                    self.write(&ClientFrame { request_id: id, body: Some(client_frame::Body::Ping(Ping {})) }).await?;
                }
                _ = reconnect.tick(), if reconnects && running => self.reconnect().await?,
                input = self.link.input() => {
                    self.receive(input?).await?;
                    let now = phase.borrow().clone();
                    self.check_drained(&now);
                }
            }
        }
    }

    fn check_drained(&mut self, phase: &Phase) {
        if self.done {
            return;
        }
        if let Phase::Draining(targets) = phase {
            let target = targets.get(&self.room).copied().unwrap_or(0);
            if self.cursor.msg_id >= target {
                self.done = true;
                self.shared.done.set(self.shared.done.get() + 1);
                self.shared.milestone.notify_one();
            }
        }
    }

    /// Drops the connection and comes back with the cursor, as a viewer on
    /// a flaky network does.
    async fn reconnect(&mut self) -> Result<(), String> {
        (self.link, self.partial) = open(&self.shared, &self.url, self.source).await?;
        self.pulling = false;
        // What was in flight may or may not have been stamped: it is sent
        // again once back, with the same client_msg_id.
        let now = tokio::time::Instant::now();
        for (_, pending) in std::mem::take(&mut self.sends) {
            self.retries.push_back((now, pending));
        }
        self.establish().await?;
        self.join(Some(self.cursor)).await
    }

    async fn send_one(&mut self) -> Result<(), String> {
        // The phase may have moved on since this select began: a send after
        // the worker reported what it sent would be owed but not counted.
        if *self.shared.phase.borrow() != Phase::Running
            || (self.sends.len() + self.retries.len()) as u32 >= SENDS_IN_FLIGHT
        {
            return Ok(());
        }
        let kind = match self.role {
            Role::Notifier(_) => Kind::Notice,
            _ => Kind::Chat,
        };
        self.client_msg_id += 1;
        let payload = wire::stamped_payload(unix_micros(), self.shared.plan.payload_bytes);
        let pending = PendingSend {
            client_msg_id: self.client_msg_id,
            kind,
            payload: payload.into(),
            attempts: 0,
        };
        self.shared
            .sends_in_flight
            .set(self.shared.sends_in_flight.get() + 1);
        self.transmit(pending).await
    }

    /// Sends (or sends again) `pending`.
    async fn transmit(&mut self, mut pending: PendingSend) -> Result<(), String> {
        pending.attempts += 1;
        let id = self
            .request(client_frame::Body::Send(Send {
                room_id: self.room.clone(),
                client_msg_id: pending.client_msg_id,
                kind: pending.kind as i32,
                payload: pending.payload.clone(),
            }))
            .await?;
        self.sends.insert(id, pending);
        Ok(())
    }

    /// Sends again every retry that is due.
    async fn retry(&mut self) -> Result<(), String> {
        let now = tokio::time::Instant::now();
        while self.retries.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, pending)) = self.retries.pop_front() {
                self.transmit(pending).await?;
            }
        }
        Ok(())
    }

    /// A send was told OVERLOADED: it is tried again after `retry_after`,
    /// unless it was tried often enough (then false: it counts as refused).
    fn retry_later(&mut self, request_id: u64, retry_after: Duration) -> bool {
        let Some(pending) = self.sends.remove(&request_id) else {
            return false;
        };
        if pending.attempts >= SEND_ATTEMPTS {
            self.sends.insert(request_id, pending);
            return false;
        }
        let due = tokio::time::Instant::now() + retry_after.max(RETRY_AFTER_MIN);
        // Retries keep the order they were told in; a later one never
        // waits for an earlier, longer one.
        let at = self.retries.partition_point(|(other, _)| *other <= due);
        self.retries.insert(at, (due, pending));
        true
    }

    /// A send was answered (or will never be).
    fn settle(&mut self, request_id: u64) -> bool {
        if self.sends.remove(&request_id).is_none() {
            return false;
        }
        self.shared.send_settled();
        true
    }

    async fn pull(&mut self) -> Result<(), String> {
        self.pulling = true;
        self.request(client_frame::Body::Pull(Pull {
            room_id: self.room.clone(),
            since: Some(self.cursor),
            limit: PULL_LIMIT,
        }))
        .await?;
        Ok(())
    }

    /// Reads what arrived (`chunk` over QUIC; the socket's bytes over
    /// WebSocket) and handles every complete frame.
    async fn receive(&mut self, chunk: Option<Bytes>) -> Result<(), String> {
        let mut scanned: Vec<Scanned> = Vec::new();
        {
            let mut scratch = self.shared.scratch.borrow_mut();
            let (filled, eof) = match (&self.link, chunk) {
                (Link::Ws(stream), _) => read_after(stream, &mut scratch, &self.partial)?,
                (Link::Quic(_), chunk) => {
                    let chunk = chunk.unwrap_or_default();
                    let filled = self.partial.len() + chunk.len();
                    if filled > scratch.len() {
                        return Err("more buffered than one frame allows".into());
                    }
                    scratch[..self.partial.len()].copy_from_slice(&self.partial);
                    scratch[self.partial.len()..filled].copy_from_slice(&chunk);
                    (filled, false)
                }
            };
            let framing = self.link.framing();
            let mut pos = 0;
            while let Some((frame, used)) = wire::next_frame(framing, &scratch[pos..filled])? {
                match frame {
                    WsFrame::Binary(range) => {
                        scanned.push(wire::scan(&scratch[pos + range.start..pos + range.end])?);
                    }
                    WsFrame::Close(code) => return Err(format!("closed by the server ({code})")),
                    WsFrame::Control => {}
                }
                pos += used;
            }
            keep_rest(&mut self.partial, &scratch[pos..filled]);
            if eof {
                return Err("connection closed".into());
            }
        }
        for frame in scanned {
            self.handle(frame).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, scanned: Scanned) -> Result<(), String> {
        match scanned {
            Scanned::Notify { latest, delta } => {
                self.latest = furthest(self.latest, latest);
                match delta {
                    Some(delta)
                        if delta.since.is_some_and(|s| {
                            s.epoch == self.cursor.epoch && s.msg_id <= self.cursor.msg_id
                        }) =>
                    {
                        self.apply(&delta, latest);
                    }
                    _ if !self.pulling && self.cursor.msg_id < latest.msg_id => self.pull().await?,
                    _ => {}
                }
            }
            Scanned::PullResult { batch, .. } => {
                self.pulling = false;
                let cursor = batch.cursor.unwrap_or(self.cursor);
                self.apply(&batch, cursor);
                if batch.more || self.cursor.msg_id < self.latest.msg_id {
                    self.pull().await?;
                }
            }
            Scanned::Other(frame) => self.handle_other(frame).await?,
        }
        Ok(())
    }

    /// Counts a batch covering everything after the cursor up to `to`.
    fn apply(&mut self, batch: &Batch, to: Cursor) {
        if to.epoch != self.cursor.epoch || to.msg_id <= self.cursor.msg_id {
            return;
        }
        let verdict =
            self.shared.histories.borrow_mut()[self.room_index].check(self.cursor, &batch.messages);
        let now = unix_micros();
        let mut delivered = [0u64; LANES];
        {
            let mut second = self.shared.second_latency.borrow_mut();
            let mut total = self.shared.latency.borrow_mut();
            for seen in batch
                .messages
                .iter()
                .filter(|m| m.msg_id > self.cursor.msg_id)
            {
                delivered[seen.lane as usize] += 1;
                // A payload not stamped by a bot (an admin notice's text)
                // reads as a stamp from the future: no latency for it.
                if let Some(stamp) = seen.stamp.filter(|&stamp| stamp <= now) {
                    let micros = now.saturating_sub(stamp);
                    second.record(micros);
                    total.record(micros);
                }
            }
        }
        // What lies between the cursor and `to` and did not come is dropped:
        // the server's own count when the batch starts at our cursor, the
        // same arithmetic on the cursors when it started earlier.
        let normal_span = to.normal_seq.saturating_sub(self.cursor.normal_seq);
        let priority_span = (to.msg_id - self.cursor.msg_id).saturating_sub(normal_span);
        let dropped = [
            normal_span.saturating_sub(delivered[0]),
            priority_span.saturating_sub(delivered[1]),
        ];
        let mut rooms = self.shared.rooms.borrow_mut();
        let room = &mut rooms[self.room_index];
        for lane in 0..LANES {
            room.delivered[lane] += delivered[lane];
            room.dropped[lane] += dropped[lane];
            room.redundant[lane] += verdict.redundant[lane];
            room.disordered[lane] += verdict.disordered[lane];
            room.conflicting[lane] += verdict.conflicting[lane];
        }
        self.shared
            .second_delivered
            .set(self.shared.second_delivered.get() + delivered[0] + delivered[1]);
        self.cursor = to;
    }

    async fn handle_other(&mut self, frame: v1::ServerFrame) -> Result<(), String> {
        let request_id = frame.request_id;
        match frame.body {
            Some(server_frame::Body::SendAck(ack)) => {
                self.settle(request_id);
                let mut rooms = self.shared.rooms.borrow_mut();
                let room = &mut rooms[self.room_index];
                let lane = if ack.lane == Lane::Priority as i32 {
                    1
                } else {
                    0
                };
                room.accepted[lane] += 1;
                room.last_msg_id = room.last_msg_id.max(ack.msg_id);
            }
            Some(server_frame::Body::Error(error))
                if error.code == ErrorCode::Overloaded as i32
                    && self.retry_later(
                        request_id,
                        Duration::from_millis(u64::from(error.retry_after_ms)),
                    ) => {}
            Some(server_frame::Body::Error(error)) if self.settle(request_id) => {
                self.shared.rooms.borrow_mut()[self.room_index].refuse(error.code);
            }
            Some(server_frame::Body::Error(error)) => {
                self.pulling = false;
                return Err(format!("server error: {}", error.message));
            }
            Some(server_frame::Body::Pong(pong)) => {
                if let Some(position) = pong.rooms.iter().find(|r| r.room_id == self.room) {
                    self.latest = furthest(self.latest, position.latest.unwrap_or_default());
                    if !self.pulling && self.cursor.msg_id < self.latest.msg_id {
                        self.pull().await?;
                    }
                }
            }
            Some(server_frame::Body::Kicked(kicked)) => {
                return Err(format!("kicked: {}", kicked.message));
            }
            _ => {}
        }
        Ok(())
    }

    fn next_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    async fn request(&mut self, body: client_frame::Body) -> Result<u64, String> {
        let id = self.next_id();
        self.write(&ClientFrame {
            request_id: id,
            body: Some(body),
        })
        .await?;
        Ok(id)
    }

    async fn write(&mut self, frame: &ClientFrame) -> Result<(), String> {
        match &mut self.link {
            Link::Ws(stream) => {
                self.mask = self.mask.rotate_left(7) ^ 0x9e37_79b9;
                let bytes = wire::client_frame(frame, self.mask.to_le_bytes());
                stream
                    .write_all(&bytes)
                    .await
                    .map_err(|e| format!("write: {e}"))
            }
            Link::Quic(quic) => quic
                .send
                .write_all(&wire::length_frame(frame))
                .await
                .map_err(|e| format!("write: {e}")),
        }
    }

    /// The next frame while connecting (no swarm traffic yet), decoded.
    async fn next_reply(&mut self) -> Result<v1::ServerFrame, String> {
        loop {
            if let Some((frame, used)) = wire::next_frame(self.link.framing(), &self.partial)? {
                let result = match frame {
                    WsFrame::Binary(range) => Some(
                        prost::Message::decode(&self.partial[range])
                            .map_err(|e| format!("undecodable frame: {e}")),
                    ),
                    WsFrame::Close(code) => Some(Err(format!("closed by the server ({code})"))),
                    WsFrame::Control => None,
                };
                self.partial.drain(..used);
                match result {
                    Some(Ok(frame)) => {
                        let frame: v1::ServerFrame = frame;
                        if matches!(frame.body, Some(server_frame::Body::Notify(_))) {
                            // Messages before the join cursor: not owed.
                            continue;
                        }
                        return Ok(frame);
                    }
                    Some(Err(e)) => return Err(e),
                    None => continue,
                }
            }
            self.link.read_into(&mut self.partial).await?;
        }
    }
}

/// A bot's connection.
enum Link {
    /// WebSocket: masked frames over TCP.
    Ws(TcpStream),
    /// QUIC: length-prefixed frames on the session's stream.
    Quic(QuicLink),
}

struct QuicLink {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Link {
    fn framing(&self) -> Framing {
        match self {
            Self::Ws(_) => Framing::Ws,
            Self::Quic(_) => Framing::Length,
        }
    }

    /// Waits for input: over WebSocket, readiness (the bytes are read into
    /// the worker's buffer after); over QUIC, the next chunk of the stream.
    async fn input(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Self::Ws(stream) => {
                stream.readable().await.map_err(|e| e.to_string())?;
                Ok(None)
            }
            Self::Quic(quic) => quic.chunk().await.map(Some),
        }
    }

    /// Appends what arrives next to `buf`.
    async fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Ws(stream) => {
                let mut chunk = [0u8; 4096];
                let n = stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection closed".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Self::Quic(quic) => buf.extend_from_slice(&quic.chunk().await?),
        }
        Ok(())
    }
}

impl QuicLink {
    /// The next chunk of the stream; its end or a lost connection is an
    /// error, with the server's close code when it gave one.
    async fn chunk(&mut self) -> Result<Bytes, String> {
        let error = match self.recv.read_chunk(QUIC_READ_CHUNK, true).await {
            Ok(Some(chunk)) => return Ok(chunk.bytes),
            Ok(None) => tokio::time::timeout(CLOSE_GRACE, self.connection.closed())
                .await
                .map_err(|_| "connection closed".to_owned())?,
            Err(quinn::ReadError::ConnectionLost(error)) => error,
            Err(error) => return Err(format!("read: {error}")),
        };
        Err(match error {
            quinn::ConnectionError::ApplicationClosed(close) => {
                format!("closed by the server ({})", close.error_code)
            }
            other => format!("connection lost: {other}"),
        })
    }
}

/// `addr` (`ip:port` or `host:port`, e.g. a Kubernetes Service's name)
/// resolved to an IPv4 address.
pub(crate) async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = addr.parse::<SocketAddr>() {
        return Ok(addr);
    }
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("resolve {addr}: no IPv4 address"))
}

/// A TCP connection to `addr` (`ip:port` or `host:port`) from the local
/// address `source` when the target is on this machine (loopback source
/// addresses multiply the ephemeral ports); from the system's choice
/// otherwise, e.g. a Job in a cluster.
pub(crate) async fn connect_from(addr: &str, source: Ipv4Addr) -> Result<TcpStream, String> {
    let addr = resolve(addr).await?;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if addr.ip().is_loopback() {
        // Without this, bind picks a port per source address at once and
        // runs out at ~28k per address; with it, the port is chosen at
        // connect time per destination.
        setsockopt(&socket.as_fd(), sockopt::IpBindAddressNoPort, &true)
            .map_err(|e| format!("setsockopt: {e}"))?;
        socket
            .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
            .map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a connection to `url` from `source`, over the transport its scheme
/// names; returns it and any bytes that followed the WebSocket upgrade.
async fn open(shared: &Shared, url: &str, source: Ipv4Addr) -> Result<(Link, Vec<u8>), String> {
    if let Some(addr) = url.strip_prefix("quic://") {
        let addr = addr.trim_end_matches('/');
        let remote = resolve(addr).await?;
        // Loopback source addresses reach only this machine.
        let source = if remote.ip().is_loopback() {
            source
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let endpoint = shared.quic_endpoint(source)?;
        let host = match addr.rsplit_once(':') {
            Some((name, _)) if name.parse::<IpAddr>().is_err() => name.to_owned(),
            _ => remote.ip().to_string(),
        };
        let connection = endpoint
            .connect(remote, &host)
            .map_err(|e| format!("connect: {e}"))?
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let link = Link::Quic(QuicLink {
            connection,
            send,
            recv,
        });
        return Ok((link, Vec::new()));
    }
    let (stream, rest) = open_ws(url, source).await?;
    Ok((Link::Ws(stream), rest))
}

/// Opens a TCP connection from `source` and upgrades it to WebSocket;
/// returns the stream and any bytes that followed the upgrade.
async fn open_ws(url: &str, source: Ipv4Addr) -> Result<(TcpStream, Vec<u8>), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("not a ws:// or quic:// url: {url}"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let path = format!("/{}", path.trim_start_matches('/'));
    let mut stream = connect_from(host, source).await?;
    stream
        .write_all(wire::upgrade_request(host, &path).as_bytes())
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 512];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = wire::upgrade_response(&buf)? {
            return Ok((stream, buf.split_off(end)));
        }
        if buf.len() > 8 * 1024 {
            return Err("oversized upgrade response".into());
        }
    }
}

fn furthest(a: Cursor, b: Cursor) -> Cursor {
    if b.epoch != a.epoch || b.msg_id > a.msg_id {
        b
    } else {
        a
    }
}

fn describe(body: Option<&server_frame::Body>) -> String {
    match body {
        Some(server_frame::Body::Error(e)) => e.message.clone(),
        Some(other) => format!("{other:?}").chars().take(80).collect(),
        None => "nothing".into(),
    }
}

/// Wall-clock microseconds: what stamps and latencies are made of.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A send not settled yet: what is sent again when it must be.
#[derive(Debug, Clone)]
struct PendingSend {
    client_msg_id: u64,
    kind: Kind,
    payload: Bytes,
    /// How often it was sent so far.
    attempts: u32,
}

/// Completes when the first of `retries` is due; never, without any.
async fn retry_due(retries: &std::collections::VecDeque<(tokio::time::Instant, PendingSend)>) {
    match retries.front() {
        Some((due, _)) => tokio::time::sleep_until(*due).await,
        None => std::future::pending().await,
    }
}
