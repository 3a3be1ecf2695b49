//! The in-process room service: rooms hashed over a few worker tasks, each of
//! which owns its rooms' [`RoomState`](crate::core::RoomState)s outright (no
//! locks on room state).
//!
//! A msg-svc node attaches with the [`DownLink`] its frames should go to and
//! gets a [`NodePort`], its [`UpLink`], back. The port routes each frame by
//! room id to the owning worker's bounded queue and refuses with
//! [`LinkError::Full`] when that queue is at its bound; frames of one room
//! share one queue, so they are handled in the order sent. Admin operations
//! travel to the owning worker as jobs with a oneshot reply.
//!
//! Rooms not in memory are loaded from the [`RoomStore`] when first touched,
//! and changes are written back off the ack path (see [`crate::store`]).
//! With an [`Ownership`] view the service serves only the rooms placement
//! gives this node; without one (the embedded mode) it owns every room.
//!
//! The workers end once every [`RoomService`] clone and every [`NodePort`]
//! is dropped.

mod worker;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::link::accept::RoomEnd;
use chatroom_cluster::link::{DownLink, LinkError, UpLink};
use chatroom_cluster::membership::{Lease, Members};
use chatroom_cluster::metrics::Registry;
use chatroom_proto::cluster::v1::{RoomConfig, RoomOverrides, ToRoomSvc};
use chatroom_proto::ids::{IdError, check_id};
use chatroom_proto::v1;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, info_span, warn};

use crate::core::moderation::List;
use crate::core::{
    ConfigError, ConfigPatch, ModerationError, NodeIdx, RankBy, RoomStats, RoomSummary, WordList,
    default_room_config,
};
use chatroom_cluster::reload::Reloaded;

use crate::hooks::{ModerationHook, Webhooks};
use crate::metrics::RoomMetrics;
use crate::store::{RoomStore, StoreError, StoreHealth};
pub use worker::Backend;
use worker::Clients;
use worker::{AdminJob, Input, NodeLink, Worker, WorkerSettings};

/// How the service is laid out.
#[derive(Debug, Clone)]
pub struct RoomServiceConfig {
    /// Worker tasks rooms are hashed over (at least 1).
    pub workers: usize,
    /// Bound of each worker's queue, in frames and admin jobs (at least 1).
    pub worker_queue: usize,
    /// Settings of a room nobody has configured.
    pub room_defaults: RoomConfig,
    /// Member-count changes are pushed to nodes at most this often per room.
    pub member_update_interval: Duration,
    /// Inputs one room may queue while it is loaded from the store (at
    /// least 1); sends beyond it are refused with OVERLOADED.
    pub loading_queue: usize,
    /// Most bytes of encoded history a SubscribeAck carries; older messages
    /// beyond it are left out, so a link frame stays bounded.
    pub ack_history_bytes: usize,
    /// How long a room no node is subscribed to stays in memory (see
    /// `Worker::drop_idle_rooms`): what bounds the rooms a client can make
    /// a room service hold by joining room after room.
    pub idle_room_ttl: Duration,
    /// The app's backend: default word lists, moderation hook, webhooks.
    pub backend: Backend,
}

impl Default for RoomServiceConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            worker_queue: 65_536,
            room_defaults: default_room_config(),
            member_update_interval: Duration::from_millis(250),
            loading_queue: 1024,
            ack_history_bytes: 8 << 20,
            idle_room_ttl: Duration::from_secs(600),
            backend: Backend::default(),
        }
    }
}

/// Which rooms this node serves: placement over the live members, by node
/// id, while the node's lease on its view holds. A room whose owner is
/// another node is refused (NotOwner, or OVERLOADED for sends) and dropped
/// from memory when it moves away; when the lease lapses every room is
/// dropped and refused until it is renewed.
#[derive(Debug, Clone)]
pub struct Ownership {
    node_id: Arc<str>,
    members: watch::Receiver<Arc<Members>>,
    lease: Lease,
}

impl Ownership {
    /// This node is `node_id`; `members` is membership's live view and
    /// `lease` how long the node may act on it.
    pub fn new(
        node_id: impl Into<Arc<str>>,
        members: watch::Receiver<Arc<Members>>,
        lease: Lease,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            members,
            lease,
        }
    }

    /// Whether this node may act as an owner now: its lease holds for the
    /// view it has.
    pub fn is_sure(&self) -> bool {
        let term = self.members.borrow().term;
        self.lease.holds(tokio::time::Instant::now(), term)
    }
}

/// A room's settings as operators see them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RoomSettings {
    /// What the room runs with: the defaults with the overrides laid over.
    #[serde(serialize_with = "crate::core::config::serialize_config")]
    pub config: RoomConfig,
    /// What an operator set for this room.
    #[serde(serialize_with = "crate::core::config::serialize_overrides")]
    pub overrides: RoomOverrides,
}

impl RoomSettings {
    fn of(state: &crate::core::RoomState) -> Self {
        Self {
            config: state.config().clone(),
            overrides: state.overrides().clone(),
        }
    }
}

/// Who is on one of a room's moderation lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModerationList {
    /// The room.
    pub room_id: String,
    /// Users on the list in all (mutes still running, for mutes).
    pub total: u64,
    /// The first of them by id.
    pub users: Vec<ListedUser>,
}

/// One user on a moderation list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListedUser {
    /// The user.
    pub user_id: String,
    /// For a mute, the wall-clock microsecond it ends; `null` when it runs
    /// until lifted (and for bans and the whitelist).
    pub until_us: Option<u64>,
}

/// A change to a room's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set or clear some fields.
    Patch(ConfigPatch),
    /// Drop every override: the room follows the defaults again.
    Reset,
}

/// Why an admin operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The room id breaks the id grammar.
    #[error("room id {0}")]
    BadRoomId(IdError),
    /// The user id breaks the id grammar.
    #[error("user id {0}")]
    BadUserId(IdError),
    /// The room config is out of bounds.
    #[error("invalid room config: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The room does not exist on this service.
    #[error("room {0} is unknown")]
    UnknownRoom(String),
    /// Another room service owns the room.
    #[error("room {0} is owned by another room service")]
    NotOwner(String),
    /// This room service cannot be sure it owns anything now (cut from
    /// ZooKeeper, or just back from a stall): it acts for no room until
    /// ZooKeeper proves its session alive again.
    #[error("this room service cannot be sure of its ownership now (no lease from ZooKeeper)")]
    OwnershipUnsure,
    /// A moderation list is at its bound.
    #[error(transparent)]
    Moderation(#[from] ModerationError),
    /// Word lists out of their bounds.
    #[error("invalid word lists: {0}")]
    InvalidWordLists(String),
    /// The room refused the notice (e.g. its payload is too large).
    #[error("notice refused: {}", .0.message)]
    NoticeRefused(v1::Error),
    /// The room refused a published message (its kind or size).
    #[error("message refused: {}", .0.message)]
    PublishRefused(v1::Error),
    /// The service's workers have stopped.
    #[error("room service has stopped")]
    Stopped,
}

/// The room service. Cheap to clone; every clone drives the same workers.
#[derive(Debug, Clone)]
pub struct RoomService {
    shared: Arc<Shared>,
    /// Who the changes made through this handle are made by (an admin
    /// key's name), as moderation events name them.
    actor: Option<Arc<str>>,
}

#[derive(Debug)]
struct Shared {
    workers: Vec<mpsc::Sender<Input>>,
    next_node: AtomicU32,
    store: RoomStore,
    metrics: RoomMetrics,
    /// Where room events go, if anywhere (for the admin API's audit
    /// events, metrics and a flush at shutdown).
    webhooks: Option<Webhooks>,
    /// The moderation hook, if any (for metrics).
    hook: Option<ModerationHook>,
    /// The default word lists, if from a file (for metrics).
    word_lists: Option<Reloaded<Vec<WordList>>>,
    /// Rereads the default word lists while the service runs.
    _words_watch: Option<AbortOnDrop>,
}

/// How often the default word lists file is checked for changes.
const WORD_LISTS_RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Stops a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Shared {
    /// The queue of the worker that owns `room`. A fixed-key hash: rooms
    /// only need to land on the same worker within this process.
    fn worker_for(&self, room: &str) -> &mpsc::Sender<Input> {
        let mut hasher = DefaultHasher::new();
        room.hash(&mut hasher);
        let index = hasher.finish() % self.workers.len() as u64;
        // `index` < len, which fits in usize.
        &self.workers[index as usize]
    }
}

impl RoomService {
    /// Starts the embedded mode: nothing persists and this node owns every
    /// room.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(config: RoomServiceConfig) -> Self {
        Self::start_with(config, RoomStore::memory(), None)
    }

    /// Starts the workers on the current tokio runtime, keeping rooms in
    /// `store` and, with `ownership`, serving only the rooms this node owns.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start_with(
        config: RoomServiceConfig,
        store: RoomStore,
        ownership: Option<Ownership>,
    ) -> Self {
        let queue = config.worker_queue.max(1);
        let interval = config.member_update_interval.max(Duration::from_millis(1));
        if let Err(error) = crate::core::validate_config(&config.room_defaults) {
            warn!(%error, "room defaults are out of bounds; rooms use them as given");
        }
        let metrics = RoomMetrics::default();
        let clients = Clients::start(config.backend.clone());
        let words_watch = clients
            .word_lists
            .as_ref()
            .map(|lists| AbortOnDrop(lists.spawn_watch("word lists", WORD_LISTS_RELOAD_EVERY)));
        let workers = (0..config.workers.max(1))
            .map(|index| {
                let (tx, rx) = mpsc::channel(queue);
                let mut members = ownership.as_ref().map(|view| view.members.clone());
                let settings = WorkerSettings {
                    defaults: config.room_defaults.clone(),
                    store: store.clone(),
                    loading_queue: config.loading_queue,
                    ack_history_bytes: config.ack_history_bytes,
                    owner: ownership
                        .as_ref()
                        .map(|view| (Arc::clone(&view.node_id), view.lease.clone())),
                    idle_room_ttl: config.idle_room_ttl,
                    metrics: metrics.clone(),
                    backend: clients.clone(),
                };
                let (worker, returns) = Worker::new(settings, members.as_mut());
                tokio::spawn(
                    worker
                        .run(rx, returns, interval, members)
                        .instrument(info_span!("room_worker", worker = index)),
                );
                tx
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                workers,
                next_node: AtomicU32::new(0),
                store,
                metrics,
                webhooks: clients.webhooks,
                hook: clients.hook,
                word_lists: clients.word_lists,
                _words_watch: words_watch,
            }),
            actor: None,
        }
    }

    /// A handle whose changes are made by `actor` (e.g. the admin key of
    /// the request): the moderation events they raise name it.
    pub fn acting_as(&self, actor: &str) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            actor: Some(actor.into()),
        }
    }

    /// Attaches a msg-svc node. Frames for it go to `down`; the returned port
    /// carries its frames in. A node whose `down` closes is detached
    /// (unsubscribed everywhere) the next time something is sent to it, or
    /// at once by [`disconnect`](Self::disconnect).
    pub fn connect_node(&self, node_id: &str, down: DownLink) -> NodePort {
        let idx = NodeIdx(self.shared.next_node.fetch_add(1, Ordering::Relaxed));
        self.shared.metrics.nodes.inc();
        NodePort {
            link: Arc::new(NodeLink::new(idx, node_id.into(), down)),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Detaches `port`'s node from every worker now: unsubscribed
    /// everywhere, its members gone (member counts are pushed as usual).
    /// Frames the port sends afterwards are refused with
    /// [`LinkError::Down`]. Returns once every worker has done so.
    pub async fn disconnect(&self, port: &NodePort) {
        if port.link.mark_detached() {
            self.shared.metrics.nodes.dec();
        }
        let node = port.link.idx;
        self.on_every_worker(move |worker| worker.detach(node, "disconnected"))
            .await;
    }

    /// Registers the service's metric families (`chatroom_messages_*`,
    /// `chatroom_broadcast*_sent`, `chatroom_rooms_owned`,
    /// `chatroom_nodes_attached` and, with Redis, `chatroom_redis_*`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.shared.metrics.register(registry, &self.shared.store);
        if let Some(hook) = &self.shared.hook {
            crate::metrics::register_hook(registry, hook);
        }
        if let Some(webhooks) = &self.shared.webhooks {
            crate::metrics::register_webhooks(registry, webhooks);
        }
        if let Some(lists) = &self.shared.word_lists {
            crate::metrics::register_reloads(registry, "word_lists", lists);
        }
    }

    /// Where room events go, if a webhook is configured.
    pub fn webhooks(&self) -> Option<&Webhooks> {
        self.shared.webhooks.as_ref()
    }

    /// The moderation hook, if one is configured.
    pub fn moderation_hook(&self) -> Option<&ModerationHook> {
        self.shared.hook.as_ref()
    }

    /// Where rooms are kept beyond memory.
    pub fn store(&self) -> &RoomStore {
        &self.shared.store
    }

    /// The store's health, for readiness.
    pub fn store_health(&self) -> StoreHealth {
        self.shared.store.health()
    }

    /// Waits until every change the workers made so far (to the inputs they
    /// have taken) is written to the store, or the store gives up (see
    /// [`RoomStore::flush`]). For graceful shutdown and tests.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.on_every_worker(|_| {}).await;
        self.shared.store.flush().await
    }

    /// Runs `op` on every worker and waits until each has sent what it
    /// caused (its writes included). Workers that have stopped are skipped.
    async fn on_every_worker<F>(&self, op: F)
    where
        F: Fn(&mut Worker) + Clone + Send + 'static,
    {
        let mut answers = Vec::with_capacity(self.shared.workers.len());
        for queue in &self.shared.workers {
            let (reply, answer) = oneshot::channel();
            let op = op.clone();
            let job: AdminJob = Box::new(move |worker: &mut Worker| {
                op(worker);
                worker.reply_after_flush(
                    None,
                    Box::new(move |_| {
                        // The caller may have given up waiting; nobody else wants it.
                        let _ = reply.send(());
                    }),
                );
            });
            if queue.send(Input::Worker(job)).await.is_ok() {
                answers.push(answer);
            }
        }
        for answer in answers {
            // A worker that stopped meanwhile has nothing left to do.
            let _ = answer.await;
        }
    }

    /// The room's settings: the defaults for a room nobody configured.
    pub async fn room_config(&self, room: &str) -> Result<RoomSettings, AdminError> {
        self.on_worker(room, |worker, room| Ok(worker.settings(&room)))
            .await
    }

    /// Changes the room's overrides (creating the room if needed) and pushes
    /// the resulting config to its subscribed nodes. A change that takes the
    /// config out of bounds is refused and changes nothing.
    pub async fn configure_room(
        &self,
        room: &str,
        change: ConfigChange,
    ) -> Result<RoomSettings, AdminError> {
        self.on_worker(room, move |worker, room| worker.configure(&room, change))
            .await
    }

    /// Mutes `user` for `duration`, or until unmuted when `None`.
    pub async fn mute(
        &self,
        room: &str,
        user: &str,
        duration: Option<Duration>,
    ) -> Result<(), AdminError> {
        let user = user_id(user)?;
        self.on_worker(room, move |worker, room| {
            worker.mute(&room, &user, duration)
        })
        .await
    }

    /// Lifts a mute (nothing happens if there is none).
    pub async fn unmute(&self, room: &str, user: &str) -> Result<(), AdminError> {
        let user = user_id(user)?;
        self.on_worker(room, move |worker, room| {
            worker.unmute(&room, &user);
            Ok(())
        })
        .await
    }

    /// Bans `user`: removes them from the room and kicks them on every node
    /// they are present on.
    pub async fn ban(&self, room: &str, user: &str) -> Result<(), AdminError> {
        let user = user_id(user)?;
        self.on_worker(room, move |worker, room| worker.ban(&room, &user))
            .await
    }

    /// Lifts a ban (nothing happens if there is none).
    pub async fn unban(&self, room: &str, user: &str) -> Result<(), AdminError> {
        let user = user_id(user)?;
        self.on_worker(room, move |worker, room| {
            worker.unban(&room, &user);
            Ok(())
        })
        .await
    }

    /// Sends `user`'s messages to the PRIORITY lane.
    pub async fn whitelist_add(&self, room: &str, user: &str) -> Result<(), AdminError> {
        let user = user_id(user)?;
        self.on_worker(room, move |worker, room| worker.whitelist_add(&room, &user))
            .await
    }

    /// Takes `user` off the whitelist (nothing happens if not on it).
    pub async fn whitelist_remove(&self, room: &str, user: &str) -> Result<(), AdminError> {
        let user = user_id(user)?;
        self.on_worker(room, move |worker, room| {
            worker.whitelist_remove(&room, &user);
            Ok(())
        })
        .await
    }

    /// Posts a notice from `sender` on the PRIORITY lane and broadcasts it
    /// like any accepted message.
    pub async fn post_notice(
        &self,
        room: &str,
        sender: &str,
        payload: Bytes,
    ) -> Result<v1::SendAck, AdminError> {
        let sender = user_id(sender)?;
        self.on_worker(room, move |worker, room| {
            worker.post_notice(&room, sender, payload)
        })
        .await
    }

    /// Posts a message of the app's backend (see
    /// [`RoomState::publish`](crate::core::RoomState::publish)); with
    /// whether it was a retry answered with the first message's ack.
    pub async fn publish(
        &self,
        room: &str,
        publish: crate::core::Publish,
    ) -> Result<(v1::SendAck, bool), AdminError> {
        check_id(&publish.sender).map_err(AdminError::BadUserId)?;
        self.on_worker(room, move |worker, room| worker.publish(&room, publish))
            .await
    }

    /// A snapshot of the room.
    pub async fn stats(&self, room: &str) -> Result<RoomStats, AdminError> {
        self.on_worker(room, |worker, room| worker.stats(&room))
            .await
    }

    /// The first `limit` users (by id) on one of the room's lists.
    pub async fn moderation_list(
        &self,
        room: &str,
        list: List,
        limit: usize,
    ) -> Result<ModerationList, AdminError> {
        self.on_worker(room, move |worker, room| {
            Ok(worker.moderation_list(&room, list, limit))
        })
        .await
    }

    /// The `limit` busiest rooms this service holds, busiest first.
    pub async fn busiest(&self, by: RankBy, limit: usize) -> Vec<RoomSummary> {
        let mut answers = Vec::with_capacity(self.shared.workers.len());
        for queue in &self.shared.workers {
            let (reply, answer) = oneshot::channel();
            let job: AdminJob = Box::new(move |worker: &mut Worker| {
                // The caller may have given up waiting; nobody else wants it.
                let _ = reply.send(worker.busiest(by, limit));
            });
            if queue.send(Input::Worker(job)).await.is_ok() {
                answers.push(answer);
            }
        }
        let mut rooms = Vec::new();
        for answer in answers {
            // A worker that stopped meanwhile holds no rooms.
            rooms.extend(answer.await.unwrap_or_default());
        }
        by.top(&mut rooms, limit);
        rooms
    }

    /// The room's own word lists (the defaults apply beside them).
    pub async fn word_lists(&self, room: &str) -> Result<Vec<WordList>, AdminError> {
        self.on_worker(room, |worker, room| Ok(worker.word_lists(&room)))
            .await
    }

    /// Sets one of the room's word lists, replacing the one of its name.
    pub async fn set_word_list(&self, room: &str, list: WordList) -> Result<(), AdminError> {
        self.on_worker(room, move |worker, room| worker.set_word_list(&room, list))
            .await
    }

    /// Drops one of the room's word lists; whether there was one of that name.
    pub async fn remove_word_list(&self, room: &str, name: &str) -> Result<bool, AdminError> {
        let name = name.to_owned();
        self.on_worker(room, move |worker, room| {
            worker.remove_word_list(&room, &name)
        })
        .await
    }

    /// Tells the subscribed nodes the room is closed, then forgets it. The
    /// next subscribe starts it afresh, with a new epoch.
    pub async fn close_room(&self, room: &str) -> Result<(), AdminError> {
        self.on_worker(room, |worker, room| worker.close(&room))
            .await
    }

    /// Runs `op` on the worker owning `room` and waits for its answer, which
    /// comes once the frames it caused are on the nodes' downlinks. Admin
    /// jobs wait for queue space rather than being refused: they are rare
    /// and an operator is waiting on them.
    async fn on_worker<T, F>(&self, room: &str, op: F) -> Result<T, AdminError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Worker, Arc<str>) -> Result<T, AdminError> + Send + 'static,
    {
        check_id(room).map_err(AdminError::BadRoomId)?;
        let queue = self.shared.worker_for(room);
        let room: Arc<str> = room.into();
        let (reply, answer) = oneshot::channel();
        let job_room = Arc::clone(&room);
        let actor = self.actor.clone();
        let job = Box::new(move |worker: &mut Worker| {
            let answer = if !worker.leased() {
                Err(AdminError::OwnershipUnsure)
            } else if worker.owns(&job_room) {
                worker.acting_as(actor);
                let answer = op(worker, Arc::clone(&job_room));
                worker.acting_as(None);
                answer
            } else {
                Err(AdminError::NotOwner(job_room.to_string()))
            };
            let room = Arc::clone(&job_room);
            worker.reply_after_flush(
                Some(job_room),
                Box::new(move |refused| {
                    // The store refused the room's writes: a newer owner
                    // has it, and what this answer says did not happen.
                    let answer = if refused {
                        Err(AdminError::NotOwner(room.to_string()))
                    } else {
                        answer
                    };
                    // The caller may have given up waiting; nobody else wants it.
                    let _ = reply.send(answer);
                }),
            );
        });
        queue
            .send(Input::Admin { room, job })
            .await
            .map_err(|_| AdminError::Stopped)?;
        answer.await.map_err(|_| AdminError::Stopped)?
    }
}

fn user_id(user: &str) -> Result<String, AdminError> {
    check_id(user).map_err(AdminError::BadUserId)?;
    Ok(user.to_owned())
}

/// A msg-svc node's way in: routes its frames to the worker owning each
/// frame's room.
#[derive(Clone)]
pub struct NodePort {
    link: Arc<NodeLink>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePort")
            .field("node", &self.link.id)
            .field("idx", &self.link.idx)
            .finish()
    }
}

impl NodePort {
    /// The index this service gave the node.
    pub fn node(&self) -> NodeIdx {
        self.link.idx
    }

    /// The id the node attached with.
    pub fn node_id(&self) -> &str {
        &self.link.id
    }

    /// Queues `frame` for the worker owning its room, waiting while that
    /// worker's queue is full (backpressure onto the link's reader).
    /// [`LinkError::Down`] once the node is disconnected or the service has
    /// stopped.
    pub async fn send(&self, frame: ToRoomSvc) -> Result<(), LinkError> {
        let Some((queue, input)) = self.route(frame)? else {
            return Ok(());
        };
        queue.send(input).await.map_err(|_| LinkError::Down)
    }

    /// The queue `frame` goes to and the input it becomes; `None` for frames
    /// without a room, which are dropped here.
    fn route(&self, frame: ToRoomSvc) -> Result<Option<(&mpsc::Sender<Input>, Input)>, LinkError> {
        if self.link.is_detached() {
            return Err(LinkError::Down);
        }
        let Some(room) = frame.room_id() else {
            warn!(node = %self.link.id, "frame without a room dropped");
            return Ok(None);
        };
        // Invalid room ids are routed like any other and answered (or
        // dropped) by the worker, after the frames sent before them.
        let queue = self.shared.worker_for(room);
        let input = Input::Frame {
            node: Arc::clone(&self.link),
            frame,
        };
        Ok(Some((queue, input)))
    }
}

impl UpLink for NodePort {
    fn try_send(&self, frame: ToRoomSvc) -> Result<(), LinkError> {
        let Some((queue, input)) = self.route(frame)? else {
            return Ok(());
        };
        queue.try_send(input).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => LinkError::Full,
            mpsc::error::TrySendError::Closed(_) => LinkError::Down,
        })
    }
}

/// The service behind the node links a room-svc process accepts: a link's
/// node is attached at its Hello and detached when the link closes.
impl RoomEnd for RoomService {
    type Port = NodePort;

    fn attach(&self, node_id: &str, down: DownLink) -> NodePort {
        self.connect_node(node_id, down)
    }

    async fn deliver(&self, port: &NodePort, frame: ToRoomSvc) -> Result<(), LinkError> {
        port.send(frame).await
    }

    async fn detach(&self, port: &NodePort) {
        self.disconnect(port).await;
    }
}
