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
//! The workers end once every [`RoomService`] clone and every [`NodePort`]
//! is dropped.

mod worker;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::link::{DownLink, LinkError, UpLink};
use chatroom_proto::cluster::v1::{RoomConfig, ToRoomSvc, to_room_svc};
use chatroom_proto::ids::{IdError, check_id};
use chatroom_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info_span, warn};

use crate::core::{ConfigError, ModerationError, NodeIdx, RoomStats, default_room_config};
use worker::{Input, NodeLink, Worker};

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
}

impl Default for RoomServiceConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            worker_queue: 65_536,
            room_defaults: default_room_config(),
            member_update_interval: Duration::from_secs(1),
        }
    }
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
    /// A moderation list is at its bound.
    #[error(transparent)]
    Moderation(#[from] ModerationError),
    /// The room refused the notice (e.g. its payload is too large).
    #[error("notice refused: {}", .0.message)]
    NoticeRefused(v1::Error),
    /// The service's workers have stopped.
    #[error("room service has stopped")]
    Stopped,
}

/// The room service. Cheap to clone; every clone drives the same workers.
#[derive(Debug, Clone)]
pub struct RoomService {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    workers: Vec<mpsc::Sender<Input>>,
    next_node: AtomicU32,
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
    /// Starts the workers on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(config: RoomServiceConfig) -> Self {
        let queue = config.worker_queue.max(1);
        let interval = config.member_update_interval.max(Duration::from_millis(1));
        if let Err(error) = crate::core::validate_config(&config.room_defaults) {
            warn!(%error, "room defaults are out of bounds; rooms use them as given");
        }
        let workers = (0..config.workers.max(1))
            .map(|index| {
                let (tx, rx) = mpsc::channel(queue);
                let worker = Worker::new(config.room_defaults.clone());
                tokio::spawn(
                    worker
                        .run(rx, interval)
                        .instrument(info_span!("room_worker", worker = index)),
                );
                tx
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                workers,
                next_node: AtomicU32::new(0),
            }),
        }
    }

    /// Attaches a msg-svc node. Frames for it go to `down`; the returned port
    /// carries its frames in. A node whose `down` closes is detached
    /// (unsubscribed everywhere) the next time something is sent to it.
    pub fn connect_node(&self, node_id: &str, down: DownLink) -> NodePort {
        let idx = NodeIdx(self.shared.next_node.fetch_add(1, Ordering::Relaxed));
        NodePort {
            link: Arc::new(NodeLink {
                idx,
                id: node_id.into(),
                down,
            }),
            shared: Arc::clone(&self.shared),
        }
    }

    /// The room's settings.
    pub async fn room_config(&self, room: &str) -> Result<RoomConfig, AdminError> {
        self.on_worker(room, |worker, room| worker.config(&room))
            .await
    }

    /// Validates and applies the room's settings (creating the room if
    /// needed) and pushes them to its subscribed nodes.
    pub async fn set_room_config(
        &self,
        room: &str,
        config: RoomConfig,
    ) -> Result<RoomConfig, AdminError> {
        crate::core::validate_config(&config)?;
        self.on_worker(room, move |worker, room| worker.set_config(&room, config))
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

    /// A snapshot of the room.
    pub async fn stats(&self, room: &str) -> Result<RoomStats, AdminError> {
        self.on_worker(room, |worker, room| worker.stats(&room))
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
        let job = Box::new(move |worker: &mut Worker| {
            let answer = op(worker, room);
            worker.reply_after_flush(Box::new(move || {
                // The caller may have given up waiting; nobody else wants it.
                let _ = reply.send(answer);
            }));
        });
        queue
            .send(Input::Admin(job))
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
}

impl UpLink for NodePort {
    fn try_send(&self, frame: ToRoomSvc) -> Result<(), LinkError> {
        let Some(room) = room_of(&frame) else {
            warn!(node = %self.link.id, "frame without a body dropped");
            return Ok(());
        };
        // Invalid room ids are routed like any other and answered (or
        // dropped) by the worker, after the frames sent before them.
        let queue = self.shared.worker_for(room);
        let input = Input::Frame {
            node: Arc::clone(&self.link),
            frame,
        };
        queue.try_send(input).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => LinkError::Full,
            mpsc::error::TrySendError::Closed(_) => LinkError::Down,
        })
    }
}

/// The room a frame is about; every body but the link's Hello names one.
fn room_of(frame: &ToRoomSvc) -> Option<&str> {
    use to_room_svc::Body;
    Some(match frame.body.as_ref()? {
        Body::Subscribe(sub) => &sub.room_id,
        Body::Unsubscribe(unsub) => &unsub.room_id,
        Body::Membership(membership) => &membership.room_id,
        Body::Send(send) => &send.room_id,
        Body::Hello(_) => return None,
    })
}
