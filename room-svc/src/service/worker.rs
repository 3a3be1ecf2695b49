//! One worker task: owns a share of the rooms, handles their frames and admin
//! jobs in queue order, and answers in batches.
//!
//! A worker drains what is queued (up to [`BATCH`] inputs), handles it, then
//! flushes: each room that accepted messages gets one Broadcast per
//! subscribed node carrying all of them in order. Replies go out in the order
//! they were made, so a sender's ack always precedes the broadcast of its
//! message. Sending waits when a node's downlink is full (the backpressure
//! policy of the node link: the worker's own queue then fills and senders
//! are refused with `LinkError::Full`); a node whose downlink is closed is
//! detached.
//!
//! Room changes that the second-level store keeps (positions, messages,
//! config, moderation, closes) are recorded as they happen and handed to the
//! store once per batch, before the batch's answers go out; the worker never
//! waits on the store. Which rooms the worker serves, and how a room that is
//! not in memory gets there, is [`routing`]'s part.

mod backend;
mod routing;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::link::DownLink;
use chatroom_cluster::membership::{Lease, Members};
use chatroom_cluster::time::{mono_nanos, unix_micros};
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{
    Broadcast, Kick, Membership, RoomConfig, RoomOverrides, RoomReport, RoomUpdate, SendRequest,
    SendResult, Subscribe, SubscribeAck, ToMsgSvc, ToRoomSvc, send_result, to_msg_svc, to_room_svc,
};
use chatroom_proto::ids::check_id;
use chatroom_proto::v1::{self, ChatMessage, ErrorCode, KickReason, Lane, SendAck};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tracing::{debug, info, warn};

use super::{AdminError, ConfigChange, ListedUser, ModerationList, RoomSettings};
use crate::core::WordList;
use crate::core::moderation::List;
use crate::core::wordfilter::validate_lists as validate_word_lists;
use crate::core::{
    Accepted, CatchUp, NodeIdx, Now, RankBy, RoomClock, RoomState, RoomStats, RoomSummary,
    SendInput, resolve, validate_config,
};
use crate::hooks::EventKind;
use crate::metrics::{RoomMetrics, RoomsShare};
use crate::store::writes::{EntryChange, PendingWrites};
use crate::store::{Fenced, RoomStore};
pub use backend::Backend;
pub(crate) use backend::Clients;
use backend::{HeldSend, HookVerdict, WorkerBackend, stored_word_list, word_lists};
use routing::{Loaded, LoadingRoom, OwnerView};

/// Most inputs handled between two flushes.
const BATCH: usize = 256;
/// A room's occupancy goes to the webhook at most this often.
const OCCUPANCY_EVERY: Duration = Duration::from_secs(5);

/// An attached msg-svc node as the workers see it.
#[derive(Debug)]
pub(super) struct NodeLink {
    pub(super) idx: NodeIdx,
    /// The id it attached with, for logs.
    pub(super) id: Arc<str>,
    pub(super) down: DownLink,
    /// The node was disconnected: its frames are refused at the port and
    /// dropped by the workers.
    detached: AtomicBool,
}

impl NodeLink {
    pub(super) fn new(idx: NodeIdx, id: Arc<str>, down: DownLink) -> Self {
        Self {
            idx,
            id,
            down,
            detached: AtomicBool::new(false),
        }
    }

    pub(super) fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    /// Marks the node detached; false if it was already.
    pub(super) fn mark_detached(&self) -> bool {
        !self.detached.swap(true, Ordering::AcqRel)
    }
}

/// A job run on the worker owning a room; it hands its reply to
/// [`Worker::reply_after_flush`].
pub(super) type AdminJob = Box<dyn FnOnce(&mut Worker) + Send>;

/// Sends an admin job's answer; told whether the store refused the room's
/// writes meanwhile (a newer owner had taken it).
pub(super) type Reply = Box<dyn FnOnce(bool) + Send>;

/// What a worker's queue carries.
pub(super) enum Input {
    /// A frame from a node.
    Frame {
        node: Arc<NodeLink>,
        frame: ToRoomSvc,
    },
    /// An admin operation on one room.
    Admin { room: Arc<str>, job: AdminJob },
    /// A job for the worker as a whole (detaching a node, a flush barrier).
    Worker(AdminJob),
}

/// How the worker is set up.
pub(super) struct WorkerSettings {
    /// Settings of a room nobody has configured.
    pub(super) defaults: RoomConfig,
    /// Where rooms are kept beyond memory.
    pub(super) store: RoomStore,
    /// Inputs one room may queue while it loads.
    pub(super) loading_queue: usize,
    /// Most bytes of encoded history one SubscribeAck carries.
    pub(super) ack_history_bytes: usize,
    /// This node's id and its lease, when the worker serves only the rooms
    /// it owns.
    pub(super) owner: Option<(Arc<str>, Lease)>,
    /// How long a room no node is subscribed to stays in memory.
    pub(super) idle_room_ttl: Duration,
    /// What the worker counts.
    pub(super) metrics: RoomMetrics,
    /// The app's backend: word lists, moderation hook, webhooks.
    pub(super) backend: Clients,
}

/// A room and what the worker has yet to send for it.
struct RoomSlot {
    state: RoomState,
    /// The member view term under which this node took the room: its
    /// writes are fenced with it.
    fence: u64,
    /// Accepted messages not broadcast yet, oldest first.
    pending: Vec<ChatMessage>,
    /// The member count the subscribers were last told.
    pushed_members: u64,
    /// Per subscribed node, its presence reports this room applied and
    /// told it of (see `Membership.seq`).
    reports: HashMap<NodeIdx, Reports>,
    /// Since when no node has been subscribed, as of the last idle sweep.
    idle_since: Option<Instant>,
    /// The generation of the default word lists the room's filter was
    /// compiled with; 0: compile it before the next send.
    filter_generation: u64,
    /// When the webhook last heard the room's occupancy, and the count.
    occupancy: Option<(Instant, u64)>,
}

/// A node's presence reports for a room: the newest applied, and the
/// newest its member counts were sent with.
#[derive(Debug, Clone, Copy, Default)]
struct Reports {
    applied: u64,
    told: u64,
}

/// The rooms of one worker task and everything it has to send.
pub(super) struct Worker {
    defaults: RoomConfig,
    ack_history_bytes: usize,
    idle_room_ttl: Duration,
    rooms: HashMap<Arc<str>, RoomSlot>,
    /// Nodes that sent this worker a frame (and so may be answered).
    nodes: HashMap<NodeIdx, Arc<NodeLink>>,
    /// Frames to send at the next flush, in the order they were made.
    outbox: Vec<(NodeIdx, ToMsgSvc)>,
    /// Rooms with pending messages, in the order their first one arrived.
    pending_rooms: Vec<Arc<str>>,
    /// Rooms whose member count may have changed since the last push.
    members_changed: HashSet<Arc<str>>,
    /// Rooms whose occupancy the webhook has yet to hear.
    occupancy_due: HashSet<Arc<str>>,
    /// Answers to admin jobs, sent once their frames are sent, with the
    /// room each is about.
    replies: Vec<(Option<Arc<str>>, Reply)>,
    /// Issues room epochs: creation time in microseconds, distinct even for
    /// rooms created (or closed and re-created) within one microsecond.
    epochs: RoomClock,
    store: RoomStore,
    /// Changes for the store since the last hand-over; `None` when the store
    /// keeps nothing.
    writes: Option<PendingWrites>,
    /// Which rooms this node owns; `None`: all of them.
    view: Option<OwnerView>,
    /// Rooms a newer owner has taken in the store, as this node learned
    /// when its load or its writes were refused: not this node's until the
    /// view changes.
    fenced: HashSet<Arc<str>>,
    /// Where the store tells of refused writes; `None` when it keeps
    /// nothing.
    refusals: Option<broadcast::Receiver<Fenced>>,
    /// Rooms being loaded, with the inputs waiting for them.
    loading: HashMap<Arc<str>, LoadingRoom>,
    loading_queue: usize,
    /// Where load results come back. Unbounded, but holds at most one
    /// result per loading room.
    loaded_tx: mpsc::UnboundedSender<Loaded>,
    /// The room whose load just settled with nothing to restore: while its
    /// waiting inputs are replayed they create it afresh rather than load
    /// it again.
    settled: Option<Arc<str>>,
    /// What the worker counts.
    metrics: RoomMetrics,
    /// This worker's rooms in the rooms-held gauge.
    rooms_held: RoomsShare,
    /// The word filter, the moderation hook and the webhooks.
    backend: WorkerBackend,
    /// Who the admin job being run acts for, as moderation events name them.
    actor: Option<Arc<str>>,
}

fn now() -> Now {
    Now {
        unix_us: unix_micros(),
        mono_ns: mono_nanos(),
    }
}

fn frame(body: to_msg_svc::Body) -> ToMsgSvc {
    ToMsgSvc { body: Some(body) }
}

impl Worker {
    /// A worker and the receiving ends of its load results and hook
    /// verdicts (for [`run`](Self::run)). With an owner id, `members` is
    /// the view rooms are placed by.
    pub(super) fn new(
        settings: WorkerSettings,
        members: Option<&mut watch::Receiver<Arc<Members>>>,
    ) -> (Self, Returns) {
        let (loaded_tx, loaded_rx) = mpsc::unbounded_channel();
        let (backend, verdicts_rx) = WorkerBackend::new(settings.backend);
        let view = settings.owner.zip(members).map(|((me, lease), members)| {
            OwnerView::new(me, lease, members.borrow_and_update().clone())
        });
        let worker = Self {
            defaults: settings.defaults,
            ack_history_bytes: settings.ack_history_bytes,
            idle_room_ttl: settings.idle_room_ttl,
            rooms: HashMap::new(),
            nodes: HashMap::new(),
            outbox: Vec::new(),
            pending_rooms: Vec::new(),
            members_changed: HashSet::new(),
            occupancy_due: HashSet::new(),
            replies: Vec::new(),
            epochs: RoomClock::new(),
            writes: settings.store.persists().then(PendingWrites::default),
            refusals: settings.store.fenced(),
            store: settings.store,
            view,
            fenced: HashSet::new(),
            loading: HashMap::new(),
            loading_queue: settings.loading_queue.max(1),
            loaded_tx,
            settled: None,
            rooms_held: settings.metrics.rooms_share(),
            metrics: settings.metrics,
            backend,
            actor: None,
        };
        let returns = Returns {
            loaded: loaded_rx,
            verdicts: verdicts_rx,
        };
        (worker, returns)
    }

    /// Runs `reply` after the frames queued so far are sent (and, while
    /// the store keeps up, after what they hold is written), so an admin
    /// call returns once its effects (kicks, updates, broadcasts) are on the
    /// nodes' downlinks; with whether the store refused `room`'s writes.
    pub(super) fn reply_after_flush(&mut self, room: Option<Arc<str>>, reply: Reply) {
        self.replies.push((room, reply));
    }

    /// Handles inputs until every sender of `queue` is gone. Load results
    /// come in on `loaded`; with an ownership view, member view changes on
    /// `members`.
    pub(super) async fn run(
        mut self,
        mut queue: mpsc::Receiver<Input>,
        returns: Returns,
        member_update: Duration,
        mut members: Option<watch::Receiver<Arc<Members>>>,
    ) {
        let Returns {
            mut loaded,
            mut verdicts,
        } = returns;
        let mut settled_verdicts = Vec::new();
        debug!("worker started");
        let mut tick = interval_at(Instant::now() + member_update, member_update);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A room is dropped between one and five quarters of the TTL after
        // its last node left.
        let sweep_every = (self.idle_room_ttl / 4).max(Duration::from_millis(1));
        let mut idle_sweep = interval_at(Instant::now() + sweep_every, sweep_every);
        idle_sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        let mut settled = Vec::new();
        loop {
            // Biased: a placement change applies to every input queued after
            // it, and settled loads and member pushes (both bounded) are not
            // starved by a busy queue.
            tokio::select! {
                biased;
                view = routing::next_view(&mut members) => match view {
                    Some(view) => self.on_view(view),
                    // Membership is gone: placement stays as last seen.
                    None => members = None,
                },
                refused = routing::next_fenced(&mut self.refusals) => self.on_fenced(refused),
                _ = loaded.recv_many(&mut settled, BATCH) => {
                    for load in settled.drain(..) {
                        self.on_loaded(load);
                    }
                }
                _ = verdicts.recv_many(&mut settled_verdicts, BATCH) => {
                    for verdict in settled_verdicts.drain(..) {
                        self.on_verdict(verdict);
                    }
                }
                _ = tick.tick() => {
                    self.check_lease();
                    self.push_member_counts();
                }
                now = idle_sweep.tick() => self.drop_idle_rooms(now),
                received = queue.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    // Once per batch: a batch is handled in far less than
                    // the lease's margin.
                    self.check_lease();
                    self.backend.refresh_words();
                    for input in batch.drain(..) {
                        self.on_input(input);
                    }
                }
            }
            self.rooms_held.report(self.rooms.len());
            self.flush().await;
            for (room, reply) in std::mem::take(&mut self.replies) {
                reply(room.is_some_and(|room| self.fenced.contains(&room)));
            }
        }
        debug!(rooms = self.rooms.len(), "worker stopped");
    }

    // --- Frames from nodes ---------------------------------------------------

    fn on_frame(&mut self, link: Arc<NodeLink>, frame: ToRoomSvc) {
        let node = link.idx;
        self.nodes.entry(node).or_insert(link);
        match frame.body {
            Some(to_room_svc::Body::Subscribe(sub)) => self.on_subscribe(node, sub),
            Some(to_room_svc::Body::Unsubscribe(unsub)) => {
                self.on_unsubscribe(node, &unsub.room_id)
            }
            Some(to_room_svc::Body::Membership(membership)) => self.on_membership(node, membership),
            Some(to_room_svc::Body::Send(send)) => self.on_send(node, send),
            Some(to_room_svc::Body::Report(report)) => self.on_report(node, &report),
            // The port drops body-less frames and link greetings before
            // they get here.
            Some(to_room_svc::Body::Hello(_)) | None => {}
        }
    }

    fn on_subscribe(&mut self, node: NodeIdx, sub: Subscribe) {
        let Subscribe { room_id, latest } = sub;
        if let Err(error) = check_id(&room_id) {
            warn!(%node, %error, "subscribe with a bad room id dropped");
            return;
        }
        // Messages accepted before the subscribe are in the history the ack
        // carries; only the nodes already subscribed get them as a broadcast.
        self.broadcast_pending(&room_id);
        let slot = room_or_create(
            &mut self.rooms,
            routing::term(&self.view),
            &mut self.epochs,
            &self.defaults,
            &mut self.writes,
            &room_id,
        );
        if let Some(seen) = latest {
            let state = &mut slot.state;
            match state.catch_up(&seen) {
                CatchUp::Unchanged => {}
                CatchUp::Advanced => {
                    debug!(%node, room = %room_id, msg_id = seen.msg_id, "stream moved past a subscriber's position");
                    if let Some(writes) = &mut self.writes {
                        writes.position(state.room_id(), state.latest());
                    }
                }
                CatchUp::Adopted => {
                    info!(%node, room = %room_id, epoch = seen.epoch, msg_id = seen.msg_id, "fresh room continues a subscriber's stream");
                    if let Some(writes) = &mut self.writes {
                        writes.begin_stream(state.room_id(), state.latest());
                    }
                }
            }
        }
        // The node's whole presence comes next, in a report of its own:
        // whatever this room held of the node before is replaced by it (a
        // user who left meanwhile is in no report).
        if slot.state.unsubscribe(node) {
            self.members_changed
                .insert(Arc::clone(slot.state.room_id()));
        }
        slot.state.subscribe(node);
        slot.reports.insert(node, Reports::default());
        debug!(%node, room = %room_id, "node subscribed");
        let state = &slot.state;
        let ack = SubscribeAck {
            latest: Some(state.latest()),
            config: Some(state.config().clone()),
            member_count: state.member_count() as u64,
            history: ack_history(state, self.ack_history_bytes),
            room_id,
            fence: slot.fence,
            membership_seq: 0,
        };
        self.outbox
            .push((node, frame(to_msg_svc::Body::SubscribeAck(ack))));
    }

    fn on_unsubscribe(&mut self, node: NodeIdx, room_id: &str) {
        if let Err(error) = check_id(room_id) {
            warn!(%node, %error, "unsubscribe with a bad room id dropped");
            return;
        }
        self.broadcast_pending(room_id);
        if let Some(slot) = self.rooms.get_mut(room_id) {
            debug!(%node, room = room_id, "node unsubscribed");
            slot.reports.remove(&node);
            if slot.state.unsubscribe(node) {
                self.members_changed
                    .insert(Arc::clone(slot.state.room_id()));
            }
        }
    }

    fn on_membership(&mut self, node: NodeIdx, mut report: Membership) {
        if let Err(error) = check_id(&report.room_id) {
            warn!(%node, %error, "membership with a bad room id dropped");
            return;
        }
        let reported = report.joined.len() + report.left.len();
        report.joined.retain(|user| check_id(user).is_ok());
        report.left.retain(|user| check_id(user).is_ok());
        let dropped = reported - report.joined.len() - report.left.len();
        if dropped > 0 {
            warn!(
                %node,
                room = %report.room_id,
                dropped,
                "bad user ids in a membership report dropped"
            );
        }
        let slot = if report.joined.is_empty() {
            // Only departures: nothing to do for a room that does not exist.
            match self.rooms.get_mut(report.room_id.as_str()) {
                Some(slot) => slot,
                None => return,
            }
        } else {
            room_or_create(
                &mut self.rooms,
                routing::term(&self.view),
                &mut self.epochs,
                &self.defaults,
                &mut self.writes,
                &report.room_id,
            )
        };
        let change = slot
            .state
            .apply_membership(node, &report.joined, &report.left);
        if slot.state.config().webhook_presence {
            let joined: Vec<&String> = report
                .joined
                .iter()
                .filter(|user| !change.banned.contains(user))
                .collect();
            if !joined.is_empty() || !report.left.is_empty() {
                self.backend.emit(
                    EventKind::RoomJoins,
                    &report.room_id,
                    || serde_json::json!({ "joined": joined, "left": report.left }),
                );
            }
        }
        let reports = slot.reports.entry(node).or_default();
        reports.applied = reports.applied.max(report.seq);
        // Even an unchanged count is news to the reporter: its report is in.
        self.members_changed
            .insert(Arc::clone(slot.state.room_id()));
        for user in change.banned {
            debug!(%node, room = %report.room_id, %user, "banned user rejoined; kicking again");
            self.outbox.push((node, kick(&report.room_id, user)));
        }
    }

    /// Adds a node's downstream counts to the room's stats; a report for a
    /// room not in memory (it moved, or was closed) is dropped.
    fn on_report(&mut self, node: NodeIdx, report: &RoomReport) {
        match self.rooms.get_mut(report.room_id.as_str()) {
            Some(slot) => slot.state.record_report(report, now()),
            None => debug!(%node, room = %report.room_id, "report for a room not here dropped"),
        }
    }

    fn on_send(&mut self, node: NodeIdx, send: SendRequest) {
        let (session_id, request_id) = (send.session_id, send.request_id);
        let (outcome, room_id, fence) = self.accept(node, send);
        if let Some(outcome) = outcome {
            self.answer_send(node, session_id, request_id, outcome, room_id, fence);
        }
    }

    fn answer_send(
        &mut self,
        node: NodeIdx,
        session_id: u64,
        request_id: u64,
        outcome: send_result::Outcome,
        room_id: String,
        fence: u64,
    ) {
        if let send_result::Outcome::Error(error) = &outcome {
            self.metrics.rejected(error.code);
        }
        let result = SendResult {
            session_id,
            request_id,
            outcome: Some(outcome),
            room_id,
            fence,
        };
        self.outbox
            .push((node, frame(to_msg_svc::Body::SendResult(result))));
    }

    /// The app's verdict on a held send: stamped (or refused) and answered,
    /// unless its room moved or was re-created meanwhile (then the sender
    /// is told to try again).
    fn on_verdict(&mut self, verdict: HookVerdict) {
        use send_result::Outcome;
        let Some((send, verdict)) = self.backend.settle(verdict) else {
            return;
        };
        let HeldSend {
            room,
            fence,
            node,
            session_id,
            request_id,
            held,
        } = send;
        let moved = || {
            Outcome::Error(
                v1::Error::new(ErrorCode::Overloaded, "the room moved; send again")
                    .retry_after(100),
            )
        };
        // The answer goes under the fence the room is held with now, so a
        // node that has heard from a newer owner still takes it.
        let (outcome, answer_fence) = match self.rooms.get_mut(&room) {
            Some(slot) if slot.fence == fence => {
                let outcome = match slot.state.complete(held, verdict, now()) {
                    Ok(accepted) => match slot.take_accepted(
                        accepted,
                        &mut self.pending_rooms,
                        &mut self.writes,
                        &self.backend,
                        &self.metrics,
                    ) {
                        Ok(outcome) => outcome,
                        // A verdict settles a send: `complete` never holds.
                        Err(_) => Outcome::Error(v1::Error::new(
                            ErrorCode::Internal,
                            "a settled send was held again",
                        )),
                    },
                    Err(error) => Outcome::Error(error),
                };
                (outcome, fence)
            }
            Some(slot) => (moved(), slot.fence),
            None => (moved(), self.term()),
        };
        self.answer_send(
            node,
            session_id,
            request_id,
            outcome,
            room.to_string(),
            answer_fence,
        );
    }

    /// The room's answer to `send` (`None`: held for the moderation hook,
    /// answered with its verdict), with the room's id (handed back) and the
    /// fence the answer is given under.
    fn accept(
        &mut self,
        node: NodeIdx,
        mut send: SendRequest,
    ) -> (Option<send_result::Outcome>, String, u64) {
        use send_result::Outcome;
        let refuse = |code, message: String| Some(Outcome::Error(v1::Error::new(code, message)));
        if let Err(error) = check_id(&send.room_id) {
            let refused = refuse(ErrorCode::BadRequest, format!("room id {error}"));
            return (refused, send.room_id, self.term());
        }
        if let Err(error) = check_id(&send.sender) {
            let refused = refuse(ErrorCode::BadRequest, format!("sender id {error}"));
            return (refused, send.room_id, self.term());
        }
        let room_id = std::mem::take(&mut send.room_id);
        let Some(slot) = self.rooms.get_mut(room_id.as_str()) else {
            let refused = refuse(
                ErrorCode::NotJoined,
                "join the room before sending to it".into(),
            );
            return (refused, room_id, self.term());
        };
        let fence = slot.fence;
        if slot.filter_generation != self.backend.words_generation() {
            slot.state
                .set_filter(self.backend.filter_for(slot.state.overrides()));
            slot.state.set_hooked(self.backend.hooked());
            slot.filter_generation = self.backend.words_generation();
        }
        let (session_id, request_id) = (send.session_id, send.request_id);
        let outcome = match slot.state.accept(SendInput::from(send), now()) {
            Ok(accepted) => match slot.take_accepted(
                accepted,
                &mut self.pending_rooms,
                &mut self.writes,
                &self.backend,
                &self.metrics,
            ) {
                Ok(outcome) => outcome,
                Err(held) => {
                    let send = HeldSend {
                        room: Arc::clone(slot.state.room_id()),
                        fence,
                        node,
                        session_id,
                        request_id,
                        held,
                    };
                    match self.backend.hold(send) {
                        Ok(()) => return (None, room_id, fence),
                        Err(send) => Outcome::Error(slot.state.release(send.held)),
                    }
                }
            },
            Err(error) => Outcome::Error(error),
        };
        (Some(outcome), room_id, fence)
    }

    // --- Admin jobs ------------------------------------------------------------

    fn known_room(&mut self, room_id: &str) -> Result<&mut RoomSlot, AdminError> {
        self.rooms
            .get_mut(room_id)
            .ok_or_else(|| AdminError::UnknownRoom(room_id.to_owned()))
    }

    /// The room's settings; a room that does not exist follows the defaults.
    pub(super) fn settings(&self, room_id: &str) -> RoomSettings {
        match self.rooms.get(room_id) {
            Some(slot) => RoomSettings::of(&slot.state),
            None => RoomSettings {
                config: self.defaults.clone(),
                overrides: RoomOverrides::default(),
            },
        }
    }

    /// Changes the room's overrides (creating the room if needed) and pushes
    /// the config they resolve to to its subscribed nodes. A change that
    /// would take the config out of bounds changes nothing.
    pub(super) fn configure(
        &mut self,
        room_id: &str,
        change: ConfigChange,
    ) -> Result<RoomSettings, AdminError> {
        let mut overrides = match self.rooms.get(room_id) {
            Some(slot) => slot.state.overrides().clone(),
            // Nothing to reset in a room that does not exist: leave it so.
            None if change == ConfigChange::Reset => return Ok(self.settings(room_id)),
            None => RoomOverrides::default(),
        };
        match change {
            ConfigChange::Patch(patch) => patch.apply(&mut overrides),
            ConfigChange::Reset => overrides = RoomOverrides::default(),
        }
        validate_config(&resolve(&self.defaults, &overrides))?;
        let slot = room_or_create(
            &mut self.rooms,
            routing::term(&self.view),
            &mut self.epochs,
            &self.defaults,
            &mut self.writes,
            room_id,
        );
        let before = RoomSettings::of(&slot.state);
        slot.state.reconfigure(overrides, &self.defaults)?;
        slot.filter_generation = 0;
        let settings = RoomSettings::of(&slot.state);
        if let Some(writes) = &mut self.writes {
            writes.config(slot.state.room_id(), &settings.config, &settings.overrides);
        }
        info!(room = room_id, "room config changed");
        self.push_update(room_id, Some(settings.config.clone()), true);
        self.moderated(
            room_id,
            "config",
            serde_json::json!({ "before": before, "after": settings }),
        );
        Ok(settings)
    }

    /// The room's own word lists (none for a room not here).
    pub(super) fn word_lists(&self, room_id: &str) -> Vec<WordList> {
        self.rooms
            .get(room_id)
            .map(|slot| word_lists(slot.state.overrides()))
            .unwrap_or_default()
    }

    /// Sets one of the room's word lists (replacing the one of the same
    /// name), creating the room if needed; the lists must stay within
    /// their bounds. Kept with the room's settings.
    pub(super) fn set_word_list(
        &mut self,
        room_id: &str,
        list: WordList,
    ) -> Result<(), AdminError> {
        let mut lists = self.word_lists(room_id);
        let name = list.name.clone();
        let words = list.words.len();
        match lists.iter_mut().find(|known| known.name == list.name) {
            Some(known) => *known = list,
            None => lists.push(list),
        }
        validate_word_lists(&lists).map_err(|e| AdminError::InvalidWordLists(e.to_string()))?;
        self.store_word_lists(room_id, lists)?;
        info!(room = room_id, list = %name, words, "word list set");
        self.moderated(
            room_id,
            "word_list_set",
            serde_json::json!({ "list": name, "words": words }),
        );
        Ok(())
    }

    /// Drops one of the room's word lists; whether it had one of that name.
    pub(super) fn remove_word_list(
        &mut self,
        room_id: &str,
        name: &str,
    ) -> Result<bool, AdminError> {
        let mut lists = self.word_lists(room_id);
        let before = lists.len();
        lists.retain(|known| known.name != name);
        if lists.len() == before {
            return Ok(false);
        }
        self.store_word_lists(room_id, lists)?;
        info!(room = room_id, list = name, "word list removed");
        self.moderated(
            room_id,
            "word_list_removed",
            serde_json::json!({ "list": name }),
        );
        Ok(true)
    }

    fn store_word_lists(&mut self, room_id: &str, lists: Vec<WordList>) -> Result<(), AdminError> {
        let slot = room_or_create(
            &mut self.rooms,
            routing::term(&self.view),
            &mut self.epochs,
            &self.defaults,
            &mut self.writes,
            room_id,
        );
        let mut overrides = slot.state.overrides().clone();
        overrides.word_lists = lists.into_iter().map(stored_word_list).collect();
        slot.state.reconfigure(overrides, &self.defaults)?;
        slot.filter_generation = 0;
        if let Some(writes) = &mut self.writes {
            let settings = RoomSettings::of(&slot.state);
            writes.config(slot.state.room_id(), &settings.config, &settings.overrides);
        }
        Ok(())
    }

    pub(super) fn mute(
        &mut self,
        room_id: &str,
        user: &str,
        duration: Option<Duration>,
    ) -> Result<(), AdminError> {
        let now_us = unix_micros();
        let until_us = duration
            .map(|d| now_us.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)));
        self.room_or_create(room_id)
            .state
            .mute(user, until_us, now_us)?;
        self.record_moderation(room_id, List::Mutes, user, EntryChange::Put(until_us));
        info!(room = room_id, user, ?duration, "user muted");
        Ok(())
    }

    pub(super) fn unmute(&mut self, room_id: &str, user: &str) {
        if let Some(slot) = self.rooms.get_mut(room_id) {
            slot.state.unmute(user, unix_micros());
            self.record_moderation(room_id, List::Mutes, user, EntryChange::Remove);
            info!(room = room_id, user, "user unmuted");
        }
    }

    pub(super) fn ban(&mut self, room_id: &str, user: &str) -> Result<(), AdminError> {
        let slot = room_or_create(
            &mut self.rooms,
            routing::term(&self.view),
            &mut self.epochs,
            &self.defaults,
            &mut self.writes,
            room_id,
        );
        let nodes = slot.state.ban(user)?;
        if !nodes.is_empty() {
            self.members_changed
                .insert(Arc::clone(slot.state.room_id()));
        }
        self.record_moderation(room_id, List::Bans, user, EntryChange::Put(None));
        info!(room = room_id, user, kicked_on = nodes.len(), "user banned");
        for node in nodes {
            self.outbox.push((node, kick(room_id, user.to_owned())));
        }
        Ok(())
    }

    pub(super) fn unban(&mut self, room_id: &str, user: &str) {
        if let Some(slot) = self.rooms.get_mut(room_id) {
            slot.state.unban(user);
            self.record_moderation(room_id, List::Bans, user, EntryChange::Remove);
            info!(room = room_id, user, "user unbanned");
        }
    }

    pub(super) fn whitelist_add(&mut self, room_id: &str, user: &str) -> Result<(), AdminError> {
        self.room_or_create(room_id).state.whitelist_add(user)?;
        self.record_moderation(room_id, List::Whitelist, user, EntryChange::Put(None));
        info!(room = room_id, user, "user whitelisted");
        Ok(())
    }

    pub(super) fn whitelist_remove(&mut self, room_id: &str, user: &str) {
        if let Some(slot) = self.rooms.get_mut(room_id) {
            slot.state.whitelist_remove(user);
            self.record_moderation(room_id, List::Whitelist, user, EntryChange::Remove);
            info!(room = room_id, user, "user taken off the whitelist");
        }
    }

    /// Sets who the admin jobs that follow act for.
    pub(super) fn acting_as(&mut self, actor: Option<Arc<str>>) {
        self.actor = actor;
    }

    /// Records a moderation change of a room in memory for the store, and
    /// tells the webhook.
    fn record_moderation(&mut self, room_id: &str, list: List, user: &str, change: EntryChange) {
        if let Some(writes) = &mut self.writes
            && let Some(slot) = self.rooms.get(room_id)
        {
            writes.moderation(slot.state.room_id(), list, user, change);
        }
        let action = match (list, change) {
            (List::Mutes, EntryChange::Put(_)) => "mute",
            (List::Mutes, EntryChange::Remove) => "unmute",
            (List::Bans, EntryChange::Put(_)) => "ban",
            (List::Bans, EntryChange::Remove) => "unban",
            (List::Whitelist, EntryChange::Put(_)) => "whitelist_add",
            (List::Whitelist, EntryChange::Remove) => "whitelist_remove",
        };
        let until_us = match change {
            EntryChange::Put(until) => until,
            EntryChange::Remove => None,
        };
        self.moderated(
            room_id,
            action,
            serde_json::json!({ "user": user, "until_us": until_us }),
        );
    }

    /// Tells the webhook of a moderation action: what, on what, by whom.
    fn moderated(&self, room_id: &str, action: &str, mut data: serde_json::Value) {
        let by = self.actor.as_deref();
        self.backend.emit(EventKind::Moderation, room_id, || {
            data["action"] = serde_json::json!(action);
            data["by"] = serde_json::json!(by);
            data
        });
    }

    /// Posts a message of the app's backend; with whether it was a retry
    /// answered with the first message's ack.
    pub(super) fn publish(
        &mut self,
        room_id: &str,
        publish: crate::core::Publish,
    ) -> Result<(SendAck, bool), AdminError> {
        let slot = room_or_create(
            &mut self.rooms,
            routing::term(&self.view),
            &mut self.epochs,
            &self.defaults,
            &mut self.writes,
            room_id,
        );
        match slot
            .state
            .publish(publish, now())
            .map_err(AdminError::PublishRefused)?
        {
            Accepted::New(msg) => {
                let ack = ack_of(&msg);
                slot.queue_broadcast(
                    msg,
                    &mut self.pending_rooms,
                    &mut self.writes,
                    &self.backend,
                );
                Ok((ack, false))
            }
            Accepted::Duplicate(ack) => Ok((ack, true)),
            // A published message is never held: the backend is trusted.
            Accepted::Held(_) => Err(AdminError::PublishRefused(v1::Error::new(
                ErrorCode::Internal,
                "a published message was held",
            ))),
        }
    }

    pub(super) fn post_notice(
        &mut self,
        room_id: &str,
        sender: String,
        payload: Bytes,
    ) -> Result<SendAck, AdminError> {
        let slot = room_or_create(
            &mut self.rooms,
            routing::term(&self.view),
            &mut self.epochs,
            &self.defaults,
            &mut self.writes,
            room_id,
        );
        let msg = slot
            .state
            .post_notice(sender, payload, now())
            .map_err(AdminError::NoticeRefused)?;
        let ack = SendAck {
            msg_id: msg.msg_id,
            ts: msg.ts,
            lane: msg.lane,
        };
        slot.queue_broadcast(
            msg,
            &mut self.pending_rooms,
            &mut self.writes,
            &self.backend,
        );
        Ok(ack)
    }

    pub(super) fn stats(&mut self, room_id: &str) -> Result<RoomStats, AdminError> {
        Ok(self.known_room(room_id)?.state.stats(now()))
    }

    /// The users on one of the room's lists (see [`ModerationList`]); none
    /// for a room that does not exist.
    pub(super) fn moderation_list(
        &self,
        room_id: &str,
        list: List,
        limit: usize,
    ) -> ModerationList {
        let Some(slot) = self.rooms.get(room_id) else {
            return ModerationList {
                room_id: room_id.to_owned(),
                total: 0,
                users: Vec::new(),
            };
        };
        let (entries, total) = slot.state.moderation().entries(list, unix_micros(), limit);
        ModerationList {
            room_id: room_id.to_owned(),
            total: total as u64,
            users: entries
                .into_iter()
                .map(|(user, until_us)| ListedUser {
                    user_id: user.to_owned(),
                    until_us,
                })
                .collect(),
        }
    }

    /// This worker's `limit` busiest rooms, busiest first.
    pub(super) fn busiest(&self, by: RankBy, limit: usize) -> Vec<RoomSummary> {
        let now = now();
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .values()
            .map(|slot| slot.state.summary(now))
            .collect();
        by.top(&mut rooms, limit);
        rooms
    }

    pub(super) fn close(&mut self, room_id: &str) -> Result<(), AdminError> {
        self.known_room(room_id)?;
        self.broadcast_pending(room_id);
        let Some(slot) = self.remove_room(room_id) else {
            return Err(AdminError::UnknownRoom(room_id.to_owned()));
        };
        if let Some(writes) = &mut self.writes {
            writes.clear(slot.state.room_id());
            writes.fence(room_id, slot.fence);
        }
        let update = RoomUpdate {
            room_id: room_id.to_owned(),
            config: Some(slot.state.config().clone()),
            member_count: slot.state.member_count() as u64,
            closed: true,
            membership_seq: 0,
            fence: slot.fence,
        };
        let body = to_msg_svc::Body::RoomUpdate(update);
        let nodes: Vec<NodeIdx> = slot.state.subscribers().collect();
        self.push_to(&nodes, body);
        info!(room = room_id, nodes = nodes.len(), "room closed");
        let members = slot.state.member_count();
        let by = self.actor.as_deref();
        self.backend.emit(
            EventKind::RoomClosed,
            room_id,
            || serde_json::json!({ "members": members, "by": by }),
        );
        Ok(())
    }

    // --- Sending ---------------------------------------------------------------

    fn room_or_create(&mut self, room_id: &str) -> &mut RoomSlot {
        let fence = self.term();
        room_or_create(
            &mut self.rooms,
            fence,
            &mut self.epochs,
            &self.defaults,
            &mut self.writes,
            room_id,
        )
    }

    /// Queues one copy of `body` per node; the last copy is the original.
    fn push_to(&mut self, nodes: &[NodeIdx], body: to_msg_svc::Body) {
        if let Some((&last, rest)) = nodes.split_last() {
            for &node in rest {
                self.outbox.push((node, frame(body.clone())));
            }
            self.outbox.push((last, frame(body)));
        }
    }

    /// Queues one Broadcast per subscribed node with the room's pending
    /// messages.
    fn broadcast_pending(&mut self, room_id: &str) {
        let Some(slot) = self.rooms.get_mut(room_id) else {
            return;
        };
        if slot.pending.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut slot.pending);
        let nodes: Vec<NodeIdx> = slot.state.subscribers().collect();
        let copies = nodes.len() as u64;
        slot.state
            .record_broadcast(copies, copies * messages.len() as u64);
        let priority = messages
            .iter()
            .filter(|msg| msg.lane() == Lane::Priority)
            .count() as u64;
        self.metrics
            .accepted(messages.len() as u64 - priority, priority);
        self.metrics
            .broadcast(copies, copies * messages.len() as u64);
        let broadcast = Broadcast {
            room_id: room_id.to_owned(),
            messages,
            fence: slot.fence,
        };
        self.push_to(&nodes, to_msg_svc::Body::Broadcast(broadcast));
    }

    /// Pushes the member count of every room whose count changed since it
    /// was last pushed, and to a node whose reports it now includes.
    fn push_member_counts(&mut self) {
        for room_id in std::mem::take(&mut self.members_changed) {
            self.push_update(&room_id, None, false);
            if self.backend.has_webhook() {
                self.occupancy_due.insert(room_id);
            }
        }
        self.tell_occupancy(Instant::now());
    }

    /// Tells the webhook the member count of each room whose count changed,
    /// at most once per [`OCCUPANCY_EVERY`] per room (a change within it
    /// waits for the next tick past it).
    fn tell_occupancy(&mut self, now: Instant) {
        let backend = &self.backend;
        let rooms = &mut self.rooms;
        self.occupancy_due.retain(|room_id| {
            let Some(slot) = rooms.get_mut(room_id) else {
                return false;
            };
            let members = slot.state.member_count() as u64;
            match slot.occupancy {
                Some((_, told)) if told == members => return false,
                Some((at, _)) if now.duration_since(at) < OCCUPANCY_EVERY => return true,
                _ => {}
            }
            slot.occupancy = Some((now, members));
            backend.emit(
                EventKind::RoomOccupancy,
                room_id,
                || serde_json::json!({ "members": members }),
            );
            false
        });
    }

    /// Sends the room's member count (and `config`, if any) to each
    /// subscribed node, with the newest of its presence reports the count
    /// includes: to all when `all`, the config is new or the count changed,
    /// else to the nodes with reports they were not told of.
    fn push_update(&mut self, room_id: &str, config: Option<RoomConfig>, all: bool) {
        let Some(slot) = self.rooms.get_mut(room_id) else {
            return;
        };
        let member_count = slot.state.member_count() as u64;
        let all = all || member_count != slot.pushed_members;
        slot.pushed_members = member_count;
        for node in slot.state.subscribers() {
            let reports = slot.reports.entry(node).or_default();
            if !all && reports.applied == reports.told {
                continue;
            }
            reports.told = reports.applied;
            let update = RoomUpdate {
                room_id: room_id.to_owned(),
                config: config.clone(),
                member_count,
                closed: false,
                membership_seq: reports.applied,
                fence: slot.fence,
            };
            self.outbox
                .push((node, frame(to_msg_svc::Body::RoomUpdate(update))));
        }
    }

    /// Drops from memory the rooms no node has been subscribed to for the
    /// idle TTL, so rooms that users only passed through do not pile up.
    /// With a store a dropped room is loaded again on its next use (the
    /// store's load includes writes still on their way). Without one only
    /// rooms holding nothing an operator set (no overrides, no moderation
    /// entries) are dropped: they start a new stream when used again.
    fn drop_idle_rooms(&mut self, now: Instant) {
        let persists = self.store.persists();
        let now_us = unix_micros();
        let mut idle = Vec::new();
        for (room_id, slot) in &mut self.rooms {
            if slot.state.subscribers().len() > 0 || !slot.pending.is_empty() {
                slot.idle_since = None;
                continue;
            }
            let since = *slot.idle_since.get_or_insert(now);
            let nothing_set = || {
                let moderation = slot.state.moderation();
                *slot.state.overrides() == RoomOverrides::default()
                    && moderation.mute_count(now_us) == 0
                    && moderation.ban_count() == 0
                    && moderation.whitelist_count() == 0
            };
            if now.duration_since(since) >= self.idle_room_ttl && (persists || nothing_set()) {
                idle.push(Arc::clone(room_id));
            }
        }
        for room_id in &idle {
            self.remove_room(room_id);
        }
        if !idle.is_empty() {
            debug!(rooms = idle.len(), "idle rooms dropped from memory");
            self.metrics.idle_rooms_dropped(idle.len() as u64);
        }
    }

    /// Hands the recorded writes to the store, broadcasts what the rooms
    /// accepted, then sends everything queued, in order, waiting on full
    /// downlinks. Nodes whose downlink is closed are detached afterwards.
    async fn flush(&mut self) {
        let mut submission = None;
        if let Some(writes) = &mut self.writes
            && !writes.is_empty()
        {
            let rooms = &self.rooms;
            writes.fence_all(|room| rooms.get(room).map_or(0, |slot| slot.fence));
            submission = self.store.submit(std::mem::take(writes));
        }
        let rooms = std::mem::take(&mut self.pending_rooms);
        for room_id in &rooms {
            self.broadcast_pending(room_id);
        }
        self.pending_rooms = rooms;
        self.pending_rooms.clear();
        if let Some(submission) = submission {
            // What the frames tell must outlive this node: wait for the
            // store, unless it is not keeping up (then live delivery goes
            // first, and readiness says degraded).
            if !self.store.stored(submission).await {
                self.metrics.written_behind();
            }
            // Refusals are told before the writes count as written.
            while let Some(refused) = routing::try_fenced(&mut self.refusals) {
                self.on_fenced(refused);
            }
        }

        let mut outbox = std::mem::take(&mut self.outbox);
        let mut closed: Vec<NodeIdx> = Vec::new();
        for (node, frame) in outbox.drain(..) {
            if closed.contains(&node) {
                continue;
            }
            let Some(link) = self.nodes.get(&node) else {
                continue;
            };
            if link.down.send(frame).await.is_err() {
                closed.push(node);
            }
        }
        self.outbox = outbox;
        for node in closed {
            self.detach(node, "downlink closed");
        }
    }

    /// Forgets a node (its downlink is closed, or it was disconnected):
    /// unsubscribed from every room of this worker, its members gone.
    pub(super) fn detach(&mut self, node: NodeIdx, reason: &str) {
        let Some(link) = self.nodes.remove(&node) else {
            return;
        };
        let mut rooms = 0;
        for (room_id, slot) in &mut self.rooms {
            if slot.state.is_subscribed(node) {
                rooms += 1;
            }
            slot.reports.remove(&node);
            if slot.state.unsubscribe(node) {
                self.members_changed.insert(Arc::clone(room_id));
            }
        }
        info!(%node, node_id = %link.id, rooms, reason, "node detached");
    }
}

impl RoomSlot {
    /// What the sender of an accepted send is told, with a new message
    /// queued for broadcast; a held send is handed back.
    fn take_accepted(
        &mut self,
        accepted: Accepted,
        pending_rooms: &mut Vec<Arc<str>>,
        writes: &mut Option<PendingWrites>,
        backend: &WorkerBackend,
        metrics: &RoomMetrics,
    ) -> Result<send_result::Outcome, crate::core::Held> {
        match accepted {
            Accepted::New(msg) => {
                let ack = ack_of(&msg);
                self.queue_broadcast(msg, pending_rooms, writes, backend);
                Ok(send_result::Outcome::Ack(ack))
            }
            Accepted::Duplicate(ack) => {
                metrics.deduplicated();
                Ok(send_result::Outcome::Ack(ack))
            }
            Accepted::Held(held) => Err(held),
        }
    }

    /// Adds an accepted message to the next broadcast of the room, to the
    /// writes for the store and, when the room archives through the
    /// webhook, to its events.
    fn queue_broadcast(
        &mut self,
        msg: ChatMessage,
        pending_rooms: &mut Vec<Arc<str>>,
        writes: &mut Option<PendingWrites>,
        backend: &WorkerBackend,
    ) {
        if self.state.config().webhook_messages {
            backend.emit(EventKind::MessageAccepted, self.state.room_id(), || {
                backend::message_json(&msg)
            });
        }
        if let Some(writes) = writes {
            let state = &self.state;
            writes.append(
                state.room_id(),
                state.epoch(),
                &msg,
                state.config().history_size,
            );
        }
        if self.pending.is_empty() {
            pending_rooms.push(Arc::clone(self.state.room_id()));
        }
        self.pending.push(msg);
    }
}

/// The receiving ends a worker's tasks answer it on.
pub(super) struct Returns {
    loaded: mpsc::UnboundedReceiver<Loaded>,
    verdicts: mpsc::UnboundedReceiver<HookVerdict>,
}

/// The ack of a stamped message.
fn ack_of(msg: &ChatMessage) -> SendAck {
    SendAck {
        msg_id: msg.msg_id,
        ts: msg.ts,
        lane: msg.lane,
    }
}

/// The room's slot, created with the defaults and a new epoch (a new stream
/// for the store) if absent.
fn room_or_create<'a>(
    rooms: &'a mut HashMap<Arc<str>, RoomSlot>,
    fence: u64,
    epochs: &mut RoomClock,
    defaults: &RoomConfig,
    writes: &mut Option<PendingWrites>,
    room_id: &str,
) -> &'a mut RoomSlot {
    if !rooms.contains_key(room_id) {
        let id: Arc<str> = room_id.into();
        let epoch = epochs.stamp(unix_micros());
        let state = RoomState::new(Arc::clone(&id), epoch, defaults.clone());
        debug!(room = room_id, epoch = state.epoch(), "room created");
        if let Some(writes) = writes {
            writes.begin_stream(&id, state.latest());
        }
        rooms.insert(
            id,
            RoomSlot {
                state,
                fence,
                pending: Vec::new(),
                pushed_members: 0,
                reports: HashMap::new(),
                idle_since: None,
                filter_generation: 0,
                occupancy: None,
            },
        );
    }
    // Inserted just above when it was missing.
    rooms.get_mut(room_id).expect("the room was just created")
}

/// The newest history messages whose encodings fit in `budget` bytes,
/// oldest first, so a SubscribeAck stays within a link frame.
fn ack_history(state: &RoomState, budget: usize) -> Vec<ChatMessage> {
    let mut left = budget;
    let mut fits = 0;
    for msg in state.history().rev() {
        let Some(rest) = left.checked_sub(msg.encoded_len()) else {
            break;
        };
        left = rest;
        fits += 1;
    }
    let skip = state.history().len() - fits;
    if skip > 0 {
        debug!(room = %state.room_id(), skip, "history beyond the subscribe ack's byte budget left out");
    }
    state.history().skip(skip).cloned().collect()
}

fn kick(room_id: &str, user_id: String) -> ToMsgSvc {
    frame(to_msg_svc::Body::Kick(Kick {
        room_id: room_id.to_owned(),
        user_id,
        reason: KickReason::Banned as i32,
        message: "banned from this room".to_owned(),
    }))
}
