//! The msg-svc node: its sessions, its rooms, its fan-out shards and its link
//! to the room owners, and the housekeeping that keeps them consistent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chatroom_cluster::auth::{self, Verifier};
use chatroom_cluster::link::UpLink;
use chatroom_cluster::membership::{Members, MembershipHealth, Registration};
use chatroom_cluster::metrics::{Registry, Sampled};
use chatroom_cluster::time;
use chatroom_proto::cluster::v1::{ToRoomSvc, to_room_svc};
use chatroom_proto::framing::ws::close_code;
use chatroom_proto::v1::{self, ErrorCode, KickReason, Kicked, server_frame};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admission::{IpAdmission, IpLimits, Rate};
use crate::metrics::NodeMetrics;
use crate::notifier::RoundConfig;
use crate::room::{
    Action, Admission, Event, Followup, JoinRefusal, JoinWaiter, LocalRoom, RoomKey, Timers,
};
use crate::session::{Session, Transport};
use crate::sessions::SessionTable;
use crate::shard::{self, FrameLimits, ShardCmd, ShardTx};

/// How often subscriptions the links could not take are tried again.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// How often each room's owner hears what happened downstream here.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Settings of a msg-svc node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Clients ping at least this often; three silent intervals close a session.
    pub heartbeat: Duration,
    /// Time from TCP accept to a completed Connect.
    pub connect_timeout: Duration,
    /// Largest client frame, bytes.
    pub max_frame_bytes: usize,
    /// Client connections per transport; past it new ones are refused
    /// (WebSocket: 503, QUIC: CONNECTION_REFUSED).
    pub max_connections: usize,
    /// What one source address may open, per transport.
    pub ip_limits: IpLimits,
    /// Browser origins a WebSocket upgrade may come from; `None` allows any.
    /// An upgrade without an `Origin` header (not a browser) is always let in.
    pub allowed_origins: Option<Vec<String>>,
    /// Sends one session may make, on top of the room's own limits; admin
    /// and system sessions are exempt.
    pub session_send_rate: Rate,
    /// Rooms one session may join.
    pub max_rooms_per_session: usize,
    /// Sessions (devices) one user may hold on this node.
    pub max_sessions_per_user: usize,
    /// Bytes queued for a slow socket before the session is closed.
    pub max_outbound_bytes: usize,
    /// Fan-out shards (parallel notifier tasks).
    pub shards: usize,
    /// Commands queued per shard before senders wait.
    pub shard_queue: usize,
    /// Messages a cursorless joiner gets by default, and at most.
    pub backfill: (u32, u32),
    /// Messages per Pull by default, and at most (also caps inline deltas).
    pub pull: (u32, u32),
    /// How long a room nobody here is in stays subscribed.
    pub unsubscribe_grace: Duration,
    /// How often presence changes are reported.
    pub presence_tick: Duration,
    /// Malformed frames a session may send before it is closed.
    pub malformed_limit: u32,
    /// Sends one session may have awaiting their answer.
    pub max_sends_in_flight: usize,
    /// How long a room owner may take to answer a Subscribe.
    pub subscribe_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 * 1024,
            max_connections: 100_000,
            ip_limits: IpLimits::default(),
            allowed_origins: None,
            session_send_rate: Rate {
                per_s: 20,
                burst: 40,
            },
            max_rooms_per_session: 16,
            max_sessions_per_user: 16,
            max_outbound_bytes: 2 * 1024 * 1024,
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shard_queue: 65_536,
            backfill: (10, 50),
            pull: (100, 200),
            unsubscribe_grace: Duration::from_secs(30),
            presence_tick: Duration::from_millis(20),
            malformed_limit: 3,
            max_sends_in_flight: 64,
            subscribe_timeout: Duration::from_secs(5),
        }
    }
}

/// This node's place among the cluster's message services: who serves
/// which user. The embedded server's view is in-process: itself, alone.
#[derive(Debug)]
pub(crate) struct ClusterView {
    /// This node's id.
    pub(crate) me: String,
    pub(crate) members: watch::Receiver<Arc<Members>>,
    pub(crate) health: watch::Receiver<MembershipHealth>,
}

impl ClusterView {
    /// The view a registration gives.
    pub(crate) fn of(registration: &Registration) -> Self {
        Self {
            me: registration.me().id.clone(),
            members: registration.members(),
            health: registration.health(),
        }
    }
}

/// Whether the node should get traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    /// Serving, but something it depends on is unreachable.
    Degraded(&'static str),
    /// Shutting down.
    Draining,
}

/// A msg-svc node. Shared by every task of the node.
#[derive(Debug)]
pub(crate) struct MsgNode {
    pub(crate) config: NodeConfig,
    pub(crate) view: ClusterView,
    pub(crate) tokens: Verifier,
    pub(crate) uplink: Arc<dyn UpLink>,
    pub(crate) sessions: SessionTable,
    /// Per-address admission of WebSocket connections.
    pub(crate) ws_admission: Arc<IpAdmission>,
    /// Per-address admission of QUIC connections.
    pub(crate) quic_admission: Arc<IpAdmission>,
    rooms: Mutex<HashMap<Arc<str>, Arc<LocalRoom>>>,
    /// Rooms whose presence changes wait for the next report, by id (a
    /// room dropped meanwhile has nothing to report).
    presence_due: Mutex<HashMap<Arc<str>, Arc<LocalRoom>>>,
    shards: Vec<ShardTx>,
    pub(crate) metrics: NodeMetrics,
    next_session: AtomicU64,
    ready: AtomicBool,
}

impl MsgNode {
    /// A node with its shards running.
    pub(crate) fn start(
        config: NodeConfig,
        tokens: Verifier,
        uplink: Arc<dyn UpLink>,
        view: ClusterView,
    ) -> Arc<Self> {
        let limits = FrameLimits {
            max_messages: config.pull.1 as usize,
        };
        let metrics = NodeMetrics::default();
        let shards = (0..config.shards.max(1))
            .map(|_| shard::spawn(config.shard_queue, limits, metrics.rounds.clone()))
            .collect();
        Arc::new(Self {
            ws_admission: IpAdmission::new(config.ip_limits),
            quic_admission: IpAdmission::new(config.ip_limits),
            config,
            view,
            tokens,
            uplink,
            sessions: SessionTable::default(),
            rooms: Mutex::default(),
            presence_due: Mutex::default(),
            shards,
            metrics,
            next_session: AtomicU64::new(1),
            ready: AtomicBool::new(true),
        })
    }

    /// Registers the node's families: what it counts, and its sessions and
    /// rooms, read when scraped.
    pub(crate) fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        self.metrics.register(registry);
        // Weak: the exposition must not keep the node alive.
        let node = Arc::downgrade(self);
        registry.register(
            "sessions",
            "Open client sessions (connections past their handshake)",
            Sampled::gauge(move || read(&node, |node| node.sessions.len())),
        );
        let node = Arc::downgrade(self);
        registry.register(
            "rooms_subscribed",
            "Rooms this node holds a ring for: with members here, or in their grace \
             period after the last one left",
            Sampled::gauge(move || read(&node, MsgNode::room_count)),
        );
        let tokens = self.tokens.clone();
        registry.register(
            "token_keys",
            "Keys client tokens are verified with: the HS256 secret and the identity \
             provider's public keys in force",
            Sampled::gauge(move || tokens.key_count() as u64),
        );
        let tokens = self.tokens.clone();
        registry.register(
            "token_keys_reload_failures",
            "Rereads of the identity provider's key files refused (the keys in force \
             stay): unreadable, malformed, or a key out of bounds",
            Sampled::counter(move || tokens.reload_failures()),
        );
    }

    /// Runs presence reports and the sweeper until `stop`.
    pub(crate) fn spawn_housekeeping(self: &Arc<Self>, stop: CancellationToken) {
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let mut presence = tokio::time::interval(node.config.presence_tick);
            let mut sweep = tokio::time::interval(node.config.heartbeat / 2);
            let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
            let mut report = tokio::time::interval(REPORT_EVERY);
            for ticker in [&mut presence, &mut sweep, &mut reconcile, &mut report] {
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = presence.tick() => node.report_presence(),
                    _ = sweep.tick() => node.sweep(time::mono_millis()),
                    _ = reconcile.tick() => node.reconcile().await,
                    _ = report.tick() => node.report_rooms(),
                }
            }
        });
    }

    /// Tells each room's owner what happened downstream here since the last
    /// report (deliveries, gaps, evictions, kicks), for operators' stats. A
    /// report the link cannot take now is kept for the next one.
    fn report_rooms(&self) {
        let rooms: Vec<Arc<LocalRoom>> = self.rooms.lock().values().cloned().collect();
        for room in rooms {
            let Some(report) = room.downstream.take(&room.id) else {
                continue;
            };
            let frame = ToRoomSvc {
                body: Some(to_room_svc::Body::Report(report)),
            };
            if let Err(error) = self.uplink.try_send(frame.clone()) {
                debug!(room = %room.id, %error, "room report kept for later");
                if let Some(to_room_svc::Body::Report(report)) = &frame.body {
                    room.downstream.restore(report);
                }
            }
        }
    }

    pub(crate) fn readiness(&self) -> Readiness {
        if !self.ready.load(Ordering::Relaxed) {
            return Readiness::Draining;
        }
        if *self.view.health.borrow() == MembershipHealth::Live {
            Readiness::Ready
        } else {
            Readiness::Degraded("zookeeper unreachable")
        }
    }

    /// Where `user` should connect instead, if another node serves them:
    /// its QUIC URL for a `quic` client when it serves QUIC, else its
    /// WebSocket URL (the client library follows either).
    pub(crate) fn redirect_for(&self, user: &str, quic: bool) -> Option<String> {
        let members = self.view.members.borrow();
        let owner = members.user_owner(user)?;
        if owner.id == self.view.me {
            return None;
        }
        let quic_url = owner.quic_url.clone().filter(|_| quic);
        quic_url.or_else(|| owner.client_url.clone())
    }

    /// A new session for an accepted connection.
    pub(crate) fn open_session(
        &self,
        remote: std::net::SocketAddr,
        transport: Transport,
    ) -> Arc<Session> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session::new(
            id,
            (id % self.shards.len() as u64) as usize,
            remote,
            transport,
            self.config.max_outbound_bytes,
            self.metrics.outbound_overflows(),
            time::mono_millis(),
        ));
        self.sessions.insert(Arc::clone(&session));
        session
    }

    /// Releases everything a finished session held.
    pub(crate) async fn close_session(&self, session: &Arc<Session>) {
        self.sessions.remove(session);
        let rooms = std::mem::take(&mut *session.rooms());
        for room in rooms {
            self.leave(session, &room).await;
        }
    }

    /// Sends a command to the session's shard. The shard never waits on its
    /// senders, so this wait ends.
    pub(crate) async fn to_shard(&self, shard: usize, cmd: ShardCmd) {
        if self.shards[shard].send(cmd).await.is_err() {
            warn!(shard, "fan-out shard is gone");
        }
    }

    /// Tells every shard that `room` has new messages.
    pub(crate) async fn mark_dirty(&self, room: &Arc<LocalRoom>) {
        for shard in 0..self.shards.len() {
            self.to_shard(shard, ShardCmd::Dirty(RoomKey(Arc::clone(room))))
                .await;
        }
    }

    pub(crate) async fn to_all_shards(&self, cmd: impl Fn() -> ShardCmd) {
        for shard in 0..self.shards.len() {
            self.to_shard(shard, cmd()).await;
        }
    }

    /// Rooms held.
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }

    pub(crate) fn room(&self, id: &str) -> Option<Arc<LocalRoom>> {
        self.rooms.lock().get(id).cloned()
    }

    /// The timers every room here runs with.
    fn timers(&self) -> Timers {
        Timers {
            subscribe_timeout: self.config.subscribe_timeout.as_millis() as u64,
            grace: self.config.unsubscribe_grace.as_millis() as u64,
        }
    }

    /// Joins `user` to room `id` once it is live here (subscribed, its ring
    /// filled), creating and subscribing it if needed. The user is counted
    /// in on admission; the caller adds the room to its session.
    pub(crate) async fn join_room(
        &self,
        id: &str,
        user: &Arc<str>,
        granted: bool,
    ) -> Result<(Arc<LocalRoom>, Admission), v1::Error> {
        let (tx, rx) = oneshot::channel();
        let join = Event::Join {
            user: Arc::clone(user),
            waiter: tx,
            granted,
        };
        let (room, followup) = {
            let mut rooms = self.rooms.lock();
            let mut created = false;
            let room = rooms
                .entry(Arc::from(id))
                .or_insert_with_key(|id| {
                    created = true;
                    Arc::new(LocalRoom::new(id.clone(), self.timers()))
                })
                .clone();
            let owner = created.then(|| Event::Owner(self.uplink.owner_of(id)));
            // With the map locked, so the sweep cannot reap the room between
            // finding it and counting the joiner in.
            let followup = room.drive(
                time::mono_millis(),
                owner.into_iter().chain([join]),
                self.uplink.as_ref(),
                false,
            );
            (room, followup)
        };
        self.carry_out(&room, followup).await;
        match rx.await {
            Ok(Ok(admission)) => Ok((room, admission)),
            Ok(Err(refusal)) => Err(refused(refusal)),
            // The room was dropped with the joiner waiting.
            Err(_) => Err(refused(JoinRefusal::Gone)),
        }
    }

    /// Feeds `event` to every room, with the owner placement names now.
    async fn to_every_room(&self, event: impl Fn() -> Option<Event<JoinWaiter>>) {
        let rooms: Vec<Arc<LocalRoom>> = self.rooms.lock().values().cloned().collect();
        let now = time::mono_millis();
        for room in rooms {
            let owner = Event::Owner(self.uplink.owner_of(&room.id));
            let followup = room.drive(
                now,
                event().into_iter().chain([owner, Event::Tick]),
                self.uplink.as_ref(),
                false,
            );
            self.carry_out(&room, followup).await;
        }
    }

    /// Makes every room's subscription follow placement, and turns away
    /// joiners whose room's owner did not answer in time.
    pub(crate) async fn reconcile(&self) {
        self.to_every_room(|| None).await;
    }

    /// The link to room service `owner` came (back) up: it forgot this
    /// node, so the rooms subscribed there subscribe again.
    pub(crate) async fn link_back(&self, owner: &str) {
        self.to_every_room(|| Some(Event::LinkBack(owner.to_owned())))
            .await;
    }

    /// The link to `owner` dropped: the sends in flight to it will never be
    /// answered, so answer them now, and let their clients retry.
    pub(crate) fn lost_link(&self, owner: &str) {
        for session in self.sessions.all() {
            for request_id in session.take_sends_to(owner) {
                let error = v1::Error::new(ErrorCode::Overloaded, "lost the room service; retry")
                    .retry_after(200);
                session.reply(request_id, server_frame::Body::Error(error));
            }
        }
    }

    /// Does what an event left for the node: counts evictions, notes
    /// presence to report, answers joiners, tells the shards, closes.
    pub(crate) async fn carry_out(&self, room: &Arc<LocalRoom>, followup: Followup) {
        for action in self.settle(room, followup) {
            match action {
                Action::Timing(config) => self.retime(room, config).await,
                Action::Wake => self.mark_dirty(room).await,
                Action::Close => self.close_room(room).await,
                Action::Admit(..) | Action::Refuse(..) | Action::Stale => {}
            }
        }
    }

    /// The part of [`carry_out`](Self::carry_out) that does not wait;
    /// returns the rest.
    fn settle(&self, room: &Arc<LocalRoom>, followup: Followup) -> Vec<Action<JoinWaiter>> {
        self.metrics.evicted(followup.evicted);
        room.downstream.evicted(followup.evicted);
        if followup.presence_pending {
            self.presence_due
                .lock()
                .insert(Arc::clone(&room.id), Arc::clone(room));
        }
        let mut rest = Vec::new();
        for action in followup.actions {
            match action {
                // A joiner that gave up no longer listens.
                Action::Admit(waiter, admission) => {
                    let _ = waiter.send(Ok(admission));
                }
                Action::Refuse(waiter, refusal) => {
                    let _ = waiter.send(Err(refusal));
                }
                Action::Stale => self.metrics.stale_frame(),
                other => rest.push(other),
            }
        }
        rest
    }

    /// Tells the owners of rooms with unreported presence changes who came
    /// and went since the last report; what a link cannot take now waits
    /// for the next one.
    fn report_presence(&self) {
        let due = std::mem::take(&mut *self.presence_due.lock());
        let now = time::mono_millis();
        for room in due.into_values() {
            let followup = room.drive(now, [], self.uplink.as_ref(), true);
            debug_assert!(followup.actions.is_empty());
            self.settle(&room, followup);
        }
    }

    /// Takes `session` out of `room` (the caller removed the room from the
    /// session's list).
    pub(crate) async fn leave(&self, session: &Session, room: &Arc<LocalRoom>) {
        if let Some(identity) = session.identity() {
            let leave = Event::Leave {
                user: Arc::clone(&identity.user),
            };
            let followup = room.drive(time::mono_millis(), [leave], self.uplink.as_ref(), false);
            // A leave asks for nothing that waits (and carrying it out here
            // would recurse through closing a room).
            debug_assert!(followup.actions.is_empty());
            self.settle(room, followup);
        }
        let cmd = ShardCmd::Leave {
            room: RoomKey(Arc::clone(room)),
            session: session.id,
        };
        self.to_shard(session.shard, cmd).await;
    }

    /// The room's owner closed it: forgets it, and tells its members here.
    async fn close_room(&self, room: &Arc<LocalRoom>) {
        {
            let mut rooms = self.rooms.lock();
            if rooms.get(&room.id).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.id);
            }
        }
        for session in self.sessions.all() {
            let removed = {
                let mut rooms = session.rooms();
                let before = rooms.len();
                rooms.retain(|r| !Arc::ptr_eq(r, room));
                before != rooms.len()
            };
            if removed {
                session.reply(
                    0,
                    kicked_frame(&room.id, KickReason::RoomClosed, "the room was closed"),
                );
                self.leave(&session, room).await;
            }
        }
        self.to_all_shards(|| ShardCmd::Forget(RoomKey(Arc::clone(room))))
            .await;
    }

    /// Tells every shard the room's new round timing.
    async fn retime(&self, room: &Arc<LocalRoom>, config: RoundConfig) {
        self.to_all_shards(|| ShardCmd::Config {
            room: RoomKey(Arc::clone(room)),
            config,
        })
        .await;
    }

    /// Heartbeat and connect deadlines; reaping rooms nobody here is in.
    fn sweep(&self, now: u64) {
        self.ws_admission.prune(now);
        self.quic_admission.prune(now);
        let silent_for = 3 * self.config.heartbeat.as_millis() as u64;
        let connect_for = self.config.connect_timeout.as_millis() as u64;
        let unix_s = time::unix_micros() / 1_000_000;
        for session in self.sessions.all() {
            let idle = now.saturating_sub(session.last_seen());
            // From the opening, not the last frame: pings do not buy an
            // unauthenticated connection more time.
            let open_for = now.saturating_sub(session.opened_ms());
            let identity = session.identity();
            if identity.is_none() && open_for > connect_for {
                session.close_with(
                    KickReason::Protocol,
                    close_code::POLICY_VIOLATION,
                    "no connect in time",
                );
            } else if identity.is_some_and(|who| who.expires_at + auth::LEEWAY_S < unix_s) {
                debug!(session = session.id, "token expired");
                self.metrics.token_expired();
                session.kick(
                    KickReason::TokenExpired,
                    "token expired; connect again with a new one",
                );
            } else if idle > silent_for {
                debug!(session = session.id, "heartbeat timeout");
                session.kick(
                    KickReason::HeartbeatTimeout,
                    "no ping for three heartbeat intervals",
                );
            }
        }
        // With the map locked, so no joiner finds a room being dropped.
        self.rooms.lock().retain(|_, room| {
            let due = room.lifecycle().poll_timeout().is_some_and(|at| at <= now);
            if !due {
                return true;
            }
            let followup = room.drive(now, [Event::Reap], self.uplink.as_ref(), false);
            debug_assert!(followup.actions.is_empty());
            !room.lifecycle().is_gone()
        });
    }

    /// Stops taking new work and asks every client to go.
    pub(crate) fn drain(&self) {
        self.ready.store(false, Ordering::Relaxed);
        let sessions = self.sessions.all();
        info!(sessions = sessions.len(), "draining");
        for session in sessions {
            session.kick(KickReason::Shutdown, "server shutting down");
        }
    }
}

/// What a joiner turned away is told.
pub(crate) fn refused(refusal: JoinRefusal) -> v1::Error {
    match refusal {
        JoinRefusal::Closed => v1::Error::new(ErrorCode::Forbidden, "room is closed"),
        JoinRefusal::NoAnswer => {
            v1::Error::new(ErrorCode::Overloaded, "room service did not answer").retry_after(1_000)
        }
        JoinRefusal::Gone => {
            v1::Error::new(ErrorCode::Overloaded, "room went away; retry").retry_after(100)
        }
        JoinRefusal::Private => v1::Error::new(
            ErrorCode::Forbidden,
            "this room is private and your token grants no access to it",
        ),
    }
}

/// A member's notice that it is out of `room_id`, and why.
pub(crate) fn kicked_frame(room_id: &str, reason: KickReason, message: &str) -> server_frame::Body {
    server_frame::Body::Kicked(Kicked {
        room_id: room_id.to_owned(),
        reason: reason as i32,
        message: message.to_owned(),
    })
}

/// `count` of the node, 0 once it is gone.
fn read(node: &Weak<MsgNode>, count: impl Fn(&MsgNode) -> usize) -> u64 {
    node.upgrade().map_or(0, |node| count(&node) as u64)
}
