//! Which inputs a worker handles now, which wait, and which it refuses.
//!
//! An input about a room in memory is handled at once. A room that is not in
//! memory and that the input needs (a subscribe, a report of joiners, a
//! send, an admin operation) is loaded from the store first: the load runs
//! as a task of its own, the room's inputs wait in order in a queue of their
//! own (a send beyond the queue's bound is refused with OVERLOADED and a
//! retry hint; control frames and admin jobs always wait, they are few), and
//! when the load settles they are replayed. Nothing found, or a failed
//! load, lets the replay create the room afresh.
//!
//! With an ownership view the worker serves only the rooms this node owns:
//! for the others a subscribe is answered NotOwner, a send OVERLOADED (the
//! room is moving), and membership changes are dropped; admin jobs answer
//! [`AdminError::NotOwner`](crate::AdminError::NotOwner) themselves. When the
//! view changes, rooms that moved away are dropped from memory (their writes
//! are already recorded for the store) and their subscribers told NotOwner.
//! While the node's lease does not hold it owns nothing: every room is
//! dropped the same way, and every input refused, until it is renewed.
//!
//! Loads take a room in the store under the view's term, and writes are
//! fenced with it (see [`crate::store`]). A room whose load or writes the
//! store refused for a newer owner's fence is dropped the same way and not
//! this node's until the view changes.

use std::collections::HashMap;
use std::sync::Arc;

use chatroom_cluster::membership::{Lease, Members};
use chatroom_cluster::time::{mono_nanos, unix_micros};
use chatroom_proto::cluster::v1::{
    NotOwner, SendRequest, SendResult, ToRoomSvc, send_result, to_msg_svc, to_room_svc,
};
use chatroom_proto::ids::check_id;
use chatroom_proto::v1::{self, ErrorCode};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Input, NodeLink, RoomSlot, Worker, frame};
use crate::core::moderation::List;
use crate::core::{NodeIdx, Now, PersistedRoom, RoomState, resolve, validate_config};
use crate::store::writes::EntryChange;
use crate::store::{Fenced, StoreError};

/// What a sender refused while its room loads is told to wait.
const LOADING_RETRY_AFTER_MS: u32 = 500;

/// What a sender to a room this node does not own is told to wait.
const MOVING_RETRY_AFTER_MS: u32 = 200;

/// The placement the worker serves by: this node, the live members and
/// how long the node may act on them.
#[derive(Debug)]
pub(super) struct OwnerView {
    me: Arc<str>,
    lease: Lease,
    members: Arc<Members>,
}

impl OwnerView {
    pub(super) fn new(me: Arc<str>, lease: Lease, members: Arc<Members>) -> Self {
        Self { me, lease, members }
    }

    /// Whether the lease holds for this view now.
    fn leased(&self) -> bool {
        self.lease.holds(Instant::now(), self.members.term)
    }

    /// Whether this node owns `room` by placement. A view without room
    /// services (this node not registered yet) leaves every room to this
    /// node.
    fn places_here(&self, room: &str) -> bool {
        self.members
            .room_owner(room)
            .is_none_or(|owner| *owner.id == *self.me)
    }
}

/// The term of the view the worker serves by; 0 without one.
pub(super) fn term(view: &Option<OwnerView>) -> u64 {
    view.as_ref().map_or(0, |view| view.members.term)
}

/// The next refusal of the store; `None` when some were missed. Never
/// resolves for a store that keeps nothing.
pub(super) async fn next_fenced(
    fenced: &mut Option<broadcast::Receiver<Fenced>>,
) -> Option<Fenced> {
    let Some(receiver) = fenced else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(refused) => Some(refused),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// A refusal of the store already told, if any: `Some(None)` when some
/// were missed.
pub(super) fn try_fenced(
    fenced: &mut Option<broadcast::Receiver<Fenced>>,
) -> Option<Option<Fenced>> {
    match fenced.as_mut()?.try_recv() {
        Ok(refused) => Some(Some(refused)),
        Err(broadcast::error::TryRecvError::Lagged(_)) => Some(None),
        Err(_) => None,
    }
}

/// The next member view; `None` once membership is gone. Never resolves
/// without a receiver.
pub(super) async fn next_view(
    members: &mut Option<watch::Receiver<Arc<Members>>>,
) -> Option<Arc<Members>> {
    let Some(members) = members else {
        return std::future::pending().await;
    };
    members.changed().await.ok()?;
    Some(members.borrow_and_update().clone())
}

/// A finished load.
#[derive(Debug)]
pub(in crate::service) struct Loaded {
    room: Arc<str>,
    result: Result<Option<PersistedRoom>, StoreError>,
}

/// A room being loaded and the inputs waiting for it, oldest first.
#[derive(Default)]
pub(super) struct LoadingRoom {
    inputs: Vec<Input>,
}

/// Where an input goes now.
enum Route {
    Handle,
    Refuse,
    Wait { room: Arc<str>, load: bool },
}

impl Input {
    /// The room the input is about, and whether it needs the room to exist.
    fn room(&self) -> Option<(&str, bool)> {
        use to_room_svc::Body;
        match self {
            Self::Worker(_) => None,
            Self::Admin { room, .. } => Some((room, true)),
            Self::Frame { frame, .. } => match frame.body.as_ref()? {
                Body::Subscribe(sub) => Some((&sub.room_id, true)),
                Body::Send(send) => Some((&send.room_id, true)),
                Body::Membership(report) => Some((&report.room_id, !report.joined.is_empty())),
                Body::Unsubscribe(unsub) => Some((&unsub.room_id, false)),
                Body::Report(report) => Some((&report.room_id, false)),
                Body::Hello(_) => None,
            },
        }
    }
}

impl Worker {
    /// Whether this node may act as an owner now (always, without a view).
    pub(in crate::service) fn leased(&self) -> bool {
        self.view.as_ref().is_none_or(OwnerView::leased)
    }

    /// Whether this node owns `room` now: placement gives it here, the
    /// lease holds and the store has not shown a newer owner.
    pub(in crate::service) fn owns(&self, room: &str) -> bool {
        self.view.as_ref().is_none_or(|view| {
            view.leased() && view.places_here(room) && !self.fenced.contains(room)
        })
    }

    /// The term of the view this worker serves by.
    pub(super) fn term(&self) -> u64 {
        term(&self.view)
    }

    /// The store refused a room's writes for a newer owner's fence (or
    /// some refusals were missed, `None`): the room (every room) is dropped
    /// and not this node's until the view changes.
    pub(super) fn on_fenced(&mut self, refused: Option<Fenced>) {
        let Some(Fenced { room, fence }) = refused else {
            let rooms: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
            warn!(
                rooms = rooms.len(),
                "store refusals were missed; every room dropped to be loaded again"
            );
            for room in &rooms {
                if let Some(slot) = self.rooms.get_mut(room) {
                    slot.pending.clear();
                }
                self.unsend(room);
                self.drop_room(room);
            }
            return;
        };
        let Some(slot) = self.rooms.get_mut(&room) else {
            return;
        };
        if slot.fence >= fence {
            return;
        }
        warn!(room = %room, ours = slot.fence, theirs = fence, "a newer owner took the room; dropped");
        // What it accepted since its writes were refused reaches nobody.
        slot.pending.clear();
        self.unsend(&room);
        self.fenced.insert(Arc::clone(&room));
        self.drop_room(&room);
    }

    /// Takes back what the outbox holds of `room`'s stream: its broadcasts
    /// are not sent, and its acks become a retry (the store refused what
    /// they acknowledge; the current owner takes the retry).
    fn unsend(&mut self, room: &str) {
        use send_result::Outcome;
        let mut taken = 0;
        self.outbox.retain_mut(|(_, frame)| match &mut frame.body {
            Some(to_msg_svc::Body::Broadcast(broadcast)) if broadcast.room_id == room => {
                taken += 1;
                false
            }
            Some(to_msg_svc::Body::SendResult(result))
                if result.room_id == room && matches!(result.outcome, Some(Outcome::Ack(_))) =>
            {
                let error = v1::Error::new(
                    ErrorCode::Overloaded,
                    "the room moved to another room service; retry",
                )
                .retry_after(MOVING_RETRY_AFTER_MS);
                result.outcome = Some(Outcome::Error(error));
                taken += 1;
                true
            }
            _ => true,
        });
        if taken > 0 {
            debug!(
                room,
                taken, "frames of a room a newer owner took, taken back"
            );
        }
    }

    /// Drops every room if the lease has lapsed: nothing may be accepted
    /// for them until it is renewed and they are loaded again.
    pub(super) fn check_lease(&mut self) {
        if self.rooms.is_empty() || self.leased() {
            return;
        }
        let rooms: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for room in &rooms {
            self.drop_room(room);
        }
        warn!(
            rooms = rooms.len(),
            "no lease from ZooKeeper (cut off, or stalled): every room dropped until it is renewed"
        );
    }

    pub(super) fn on_input(&mut self, input: Input) {
        if let Input::Frame { node, .. } = &input
            && node.is_detached()
        {
            debug!(node = %node.idx, "frame of a disconnected node dropped");
            return;
        }
        match self.route(&input) {
            Route::Handle => self.handle(input),
            Route::Refuse => self.refuse(input),
            Route::Wait { room, load } => self.wait_for_load(room, load, input),
        }
    }

    fn route(&self, input: &Input) -> Route {
        let Some((room, needs_room)) = input.room() else {
            return Route::Handle;
        };
        // Rooms in memory first: the common case, and their ids are valid.
        // Frames with a bad room id go to their handlers, which refuse them.
        if self.rooms.contains_key(room) || check_id(room).is_err() {
            return Route::Handle;
        }
        if self.loading.contains_key(room) {
            return Route::Wait {
                room: room.into(),
                load: false,
            };
        }
        if !self.owns(room) {
            return Route::Refuse;
        }
        if needs_room && self.store.persists() && self.settled.as_deref() != Some(room) {
            return Route::Wait {
                room: room.into(),
                load: true,
            };
        }
        Route::Handle
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Frame { node, frame } => self.on_frame(node, frame),
            Input::Admin { job, .. } | Input::Worker(job) => job(self),
        }
    }

    /// Answers an input about a room this node does not own.
    fn refuse(&mut self, input: Input) {
        use to_room_svc::Body;
        let Input::Frame {
            node: link,
            frame: refused,
        } = input
        else {
            // Admin jobs check ownership and answer NotOwner themselves.
            return self.handle(input);
        };
        let node = link.idx;
        match refused.body {
            Some(Body::Subscribe(sub)) => {
                debug!(%node, room = %sub.room_id, "subscribe for a room owned elsewhere");
                self.nodes.entry(node).or_insert(link);
                let not_owner = NotOwner {
                    room_id: sub.room_id,
                };
                self.outbox
                    .push((node, frame(to_msg_svc::Body::NotOwner(not_owner))));
            }
            Some(Body::Send(send)) => {
                let error = v1::Error::new(
                    ErrorCode::Overloaded,
                    "room is moving to another room service",
                )
                .retry_after(MOVING_RETRY_AFTER_MS);
                self.refuse_send(link, send, error);
            }
            Some(Body::Membership(report)) => {
                debug!(%node, room = %report.room_id, "membership for a room owned elsewhere dropped");
            }
            Some(Body::Unsubscribe(unsub)) => {
                debug!(%node, room = %unsub.room_id, "unsubscribe for a room owned elsewhere dropped");
            }
            Some(Body::Report(report)) => {
                debug!(%node, room = %report.room_id, "report for a room owned elsewhere dropped");
            }
            Some(Body::Hello(_)) | None => {}
        }
    }

    fn refuse_send(&mut self, link: Arc<NodeLink>, send: SendRequest, error: v1::Error) {
        let node = link.idx;
        self.nodes.entry(node).or_insert(link);
        self.metrics.rejected(error.code);
        let result = SendResult {
            session_id: send.session_id,
            request_id: send.request_id,
            outcome: Some(send_result::Outcome::Error(error)),
            room_id: send.room_id,
            fence: self.term(),
        };
        self.outbox
            .push((node, frame(to_msg_svc::Body::SendResult(result))));
    }

    /// Queues `input` until `room` is loaded, starting the load if `load`.
    fn wait_for_load(&mut self, room: Arc<str>, load: bool, input: Input) {
        if load {
            self.start_load(Arc::clone(&room));
        }
        let bound = self.loading_queue;
        let waiting = self.loading.entry(room).or_default();
        if waiting.inputs.len() < bound {
            waiting.inputs.push(input);
            return;
        }
        match input {
            Input::Frame {
                node,
                frame:
                    ToRoomSvc {
                        body: Some(to_room_svc::Body::Send(send)),
                    },
            } => {
                let error = v1::Error::new(ErrorCode::Overloaded, "room is loading; try again")
                    .retry_after(LOADING_RETRY_AFTER_MS);
                self.refuse_send(node, send, error);
            }
            other => waiting.inputs.push(other),
        }
    }

    fn start_load(&mut self, room: Arc<str>) {
        debug!(room = %room, "loading room");
        let store = self.store.clone();
        let results = self.loaded_tx.clone();
        let fence = self.term();
        tokio::spawn(async move {
            let result = store.load(&room, fence).await;
            // Nobody receives once the worker has stopped; the result is
            // moot then.
            let _ = results.send(Loaded { room, result });
        });
    }

    /// A load settled: restores the room if something was found, then
    /// replays what waited for it.
    pub(super) fn on_loaded(&mut self, loaded: Loaded) {
        let Loaded { room, result } = loaded;
        let Some(waiting) = self.loading.remove(&room) else {
            return;
        };
        if let Err(StoreError::Fenced { fence, .. }) = &result {
            warn!(room = %room, ours = self.term(), theirs = fence, "a newer owner holds the room; refused");
            self.fenced.insert(Arc::clone(&room));
            for input in waiting.inputs {
                self.on_input(input);
            }
            return;
        }
        match result {
            Ok(Some(stored)) if self.owns(&room) => self.restore(&room, stored),
            Ok(Some(_)) => debug!(room = %room, "room moved away while it loaded"),
            Ok(None) => debug!(room = %room, "nothing stored; the room starts afresh"),
            Err(error) => {
                warn!(%error, room = %room, "loading the room failed; it starts afresh with a new epoch");
            }
        }
        self.settled = Some(room);
        for input in waiting.inputs {
            self.on_input(input);
        }
        self.settled = None;
    }

    fn restore(&mut self, room_id: &Arc<str>, stored: PersistedRoom) {
        let now_us = unix_micros();
        if let Some(overrides) = &stored.overrides
            && let Err(error) = validate_config(&resolve(&self.defaults, overrides))
        {
            warn!(%error, room = %room_id, "stored room settings are out of bounds; the defaults apply");
        }
        let expired: Vec<String> = stored
            .mutes
            .iter()
            .filter(|(_, until)| until.is_some_and(|until| until <= now_us))
            .map(|(user, _)| user.clone())
            .collect();
        let new_stream = stored.latest.is_none();
        let epoch = self.epochs.stamp(now_us);
        let state = RoomState::restore(
            Arc::clone(room_id),
            epoch,
            self.defaults.clone(),
            stored,
            Now {
                unix_us: now_us,
                mono_ns: mono_nanos(),
            },
        );
        let fence = self.term();
        if let Some(writes) = &mut self.writes {
            if new_stream {
                writes.begin_stream(room_id, state.latest());
            }
            for user in &expired {
                writes.moderation(room_id, List::Mutes, user, EntryChange::Remove);
            }
        }
        debug!(
            room = %room_id,
            epoch = state.epoch(),
            msg_id = state.latest().msg_id,
            history = state.history().len(),
            "room restored"
        );
        self.rooms.insert(
            Arc::clone(room_id),
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

    /// The member view changed: drops the rooms that moved away.
    pub(super) fn on_view(&mut self, members: Arc<Members>) {
        let Some(view) = &mut self.view else {
            return;
        };
        view.members = members;
        self.fenced.clear();
        let moved: Vec<Arc<str>> = self
            .rooms
            .keys()
            .filter(|room| !self.owns(room))
            .cloned()
            .collect();
        for room in &moved {
            self.drop_room(room);
        }
        if !moved.is_empty() {
            info!(
                rooms = moved.len(),
                "rooms moved to another room service; dropped"
            );
        }
    }

    /// Forgets a room this node no longer owns, after broadcasting what it
    /// accepted, and tells its subscribers to ask the new owner.
    fn drop_room(&mut self, room_id: &str) {
        self.broadcast_pending(room_id);
        let Some(slot) = self.remove_room(room_id) else {
            return;
        };
        let nodes: Vec<NodeIdx> = slot.state.subscribers().collect();
        let not_owner = NotOwner {
            room_id: room_id.to_owned(),
        };
        self.push_to(&nodes, to_msg_svc::Body::NotOwner(not_owner));
        debug!(room = room_id, nodes = nodes.len(), "room dropped");
    }

    /// Takes a room out of memory; what waits to be written for it keeps
    /// its fence.
    pub(super) fn remove_room(&mut self, room_id: &str) -> Option<RoomSlot> {
        let slot = self.rooms.remove(room_id)?;
        self.members_changed.remove(room_id);
        if let Some(writes) = &mut self.writes {
            writes.fence(room_id, slot.fence);
        }
        Some(slot)
    }
}
