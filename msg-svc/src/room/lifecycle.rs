//! A room's lifecycle on this node, without I/O: where the node stands with
//! the room's owner, who is present here, how many sessions hold the room,
//! its grace period once empty, and the settings its ring follows.
//!
//! In the shape of quinn-proto's `Connection`: the node feeds an [`Event`]
//! with the time ([`RoomLifecycle::handle`]), then carries out what the room
//! asks for: ring changes ([`poll_ring`](RoomLifecycle::poll_ring)), frames
//! for the owner ([`transmit`](RoomLifecycle::transmit)) and the rest
//! ([`poll_action`](RoomLifecycle::poll_action));
//! [`poll_timeout`](RoomLifecycle::poll_timeout) says when the room next
//! needs an [`Event::Tick`] or [`Event::Reap`]. Nothing here locks, waits or
//! reads a clock.
//!
//! A room is `Pending` until its owner's SubscribeAck (joiners wait with
//! it, up to a deadline), then `Live` (the ring is filled and broadcasts
//! flow), until the owner closes it (`Closed`) or nobody here has been in it
//! for the grace period (`Gone`: the node drops it). Whichever stage it is
//! in, a live or pending room stays subscribed at the owner placement names:
//! a Subscribe (with the room's whole presence, which the owner keeps only
//! as soft state) goes out whenever the owner it is subscribed at is not the
//! one placement names, and only then; presence changes go to that owner,
//! each once.
//!
//! The member count the room gives (joiners, Pongs, Notifies) is the
//! owner's last count plus every presence change here it does not include
//! yet: changes not reported, and reports the owner has not confirmed
//! (each report is numbered; the owner's counts say up to which number they
//! include this node's). So a joiner counts itself and every other join on
//! this node at once; joins on other nodes count from the owner's next push.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chatroom_cluster::link::LinkError;
use chatroom_proto::cluster::v1::{RoomConfig, RoomUpdate, SubscribeAck};
use chatroom_proto::v1::{ChatMessage, Cursor};

use crate::notifier::RoundConfig;

/// A room's timers, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timers {
    /// How long a joiner waits for the owner's SubscribeAck.
    pub(crate) subscribe_timeout: u64,
    /// How long a room nobody here is in stays subscribed.
    pub(crate) grace: u64,
}

/// What happens to a room, as the node sees it. `W` is how a waiting joiner
/// is answered (a channel in the node, a number in tests).
#[derive(Debug)]
pub(crate) enum Event<W> {
    /// A session of `user` asks to join; `waiter` hears the verdict.
    /// `granted`: the user's token grants them this room (or they are an
    /// admin or system user), which a private room requires.
    Join {
        user: Arc<str>,
        waiter: W,
        granted: bool,
    },
    /// A session of `user` that was let in left, was kicked, or ended.
    Leave { user: Arc<str> },
    /// The owner took `user` out of the room on its own (a ban): it no
    /// longer counts them present here, whoever still is.
    Removed { user: Arc<str> },
    /// Placement names this room service as the room's owner now (`None`:
    /// no room service is known).
    Owner(Option<String>),
    /// The link to this room service came (back) up: it forgot this node.
    LinkBack(String),
    /// The room service subscribed at says it does not own the room.
    NotOwner,
    /// The owner's answer to a Subscribe.
    Subscribed(SubscribeAck),
    /// Messages an owner broadcast, under its fence for the room.
    Broadcast {
        messages: Vec<ChatMessage>,
        fence: u64,
    },
    /// New settings or member count from the owner, or the room was closed.
    Updated(RoomUpdate),
    /// Time passed: joiners past their deadline are refused.
    Tick,
    /// The node drops the room if nobody has been in it for the grace
    /// period. Fed with the node's room map locked, so that no joiner can
    /// find the room between this and its removal.
    Reap,
}

/// A change to the room's ring, carried out by the node while it still
/// holds the room, so nobody sees the room live with its ring unfilled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RingOp {
    /// The owner's SubscribeAck: a new ring for `latest`'s stream first if
    /// `fresh` (the ring was not live, or holds another stream), then the
    /// capacities, the history and the newest position.
    Fill {
        fresh: bool,
        normal: usize,
        priority: usize,
        history: Vec<ChatMessage>,
        latest: Cursor,
    },
    /// Broadcast messages.
    Append(Vec<ChatMessage>),
    /// New capacities.
    Resize { normal: usize, priority: usize },
}

/// What the room asks of the node besides ring changes and frames.
#[derive(Debug, PartialEq)]
pub(crate) enum Action<W> {
    /// Let a waiting joiner in.
    Admit(W, Admission),
    /// Turn a joiner away.
    Refuse(W, JoinRefusal),
    /// The room's round timing changed: tell the fan-out shards.
    Timing(RoundConfig),
    /// The ring has new messages: wake the fan-out shards.
    Wake,
    /// The owner closed the room: kick its members here and forget it.
    Close,
    /// A frame from an owner older than one already heard was ignored.
    Stale,
}

/// What a joiner is let in with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Admission {
    /// The room's settings.
    pub(crate) config: RoomConfig,
    /// Room-wide distinct users, the joiner counted.
    pub(crate) member_count: u64,
}

/// Why a joiner is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinRefusal {
    /// The owner closed the room.
    Closed,
    /// The owner did not answer the Subscribe in time.
    NoAnswer,
    /// The room was dropped; a new one takes the joiner.
    Gone,
    /// The room is private and the joiner's token grants no access to it.
    Private,
}

/// A frame for the room's owner; the node adds the room id (and, for a
/// live ring's Subscribe, its newest position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// Subscribe, then (when anyone is present) report everyone present,
    /// as report `seq`. `live`: the ring is live, so the owner sends only
    /// what it lacks.
    Subscribe {
        live: bool,
        present: Vec<String>,
        seq: u64,
    },
    /// Users who became present, and who left, since the last report: report
    /// `seq`.
    Membership {
        joined: Vec<String>,
        left: Vec<String>,
        seq: u64,
    },
    /// The node no longer holds the room.
    Unsubscribe,
}

#[derive(Debug)]
struct Joiner<W> {
    user: Arc<str>,
    waiter: W,
    granted: bool,
    /// Monotonic ms after which the joiner is refused.
    deadline: u64,
}

#[derive(Debug)]
enum Stage<W> {
    Pending(Vec<Joiner<W>>),
    Live,
    Closed,
    Gone,
}

/// One room's lifecycle on this node.
#[derive(Debug)]
pub(crate) struct RoomLifecycle<W> {
    stage: Stage<W>,
    timers: Timers,
    /// The owner placement named last; `None` when unknown, or since that
    /// owner refused the room (until placement is asked again).
    owner: Option<String>,
    /// The room service this node is subscribed at, by node id.
    subscribed_at: Option<String>,
    config: RoomConfig,
    /// Room-wide distinct users, as the owner last reported.
    member_count: u64,
    /// The number of the last presence report made.
    report_seq: u64,
    /// Reports the owner subscribed at has not confirmed: number, and the
    /// change in count each makes.
    reports: VecDeque<(u64, i64)>,
    /// The stream the ring holds, once live.
    ring_epoch: Option<u64>,
    /// The newest owner's fence heard of (see `SubscribeAck.fence`):
    /// acks, broadcasts and send results under a smaller one come from an
    /// owner that lost the room, and are ignored.
    fence: u64,
    /// Sessions let in and not gone.
    sessions: usize,
    /// Sessions here per user.
    presence: HashMap<Arc<str>, u32>,
    /// Presence the owner subscribed at has not been told: user -> present.
    /// A change undone before it is reported is no change.
    changes: HashMap<Arc<str>, bool>,
    /// Since when (monotonic ms) no session is in or joining the room.
    empty_since: Option<u64>,
    /// An Unsubscribe is owed: the room is gone.
    unsubscribe: bool,
    ring_ops: VecDeque<RingOp>,
    actions: VecDeque<Action<W>>,
}

impl<W> RoomLifecycle<W> {
    /// A room nobody has joined yet, pending its owner's SubscribeAck.
    pub(crate) fn new(timers: Timers) -> Self {
        Self {
            stage: Stage::Pending(Vec::new()),
            timers,
            owner: None,
            subscribed_at: None,
            config: RoomConfig::default(),
            member_count: 0,
            report_seq: 0,
            reports: VecDeque::new(),
            ring_epoch: None,
            fence: 0,
            sessions: 0,
            presence: HashMap::new(),
            changes: HashMap::new(),
            empty_since: None,
            unsubscribe: false,
            ring_ops: VecDeque::new(),
            actions: VecDeque::new(),
        }
    }

    /// Takes in `event` at monotonic time `now` (ms).
    pub(crate) fn handle(&mut self, now: u64, event: Event<W>) {
        match event {
            Event::Join {
                user,
                waiter,
                granted,
            } => self.join(now, user, waiter, granted),
            Event::Leave { user } => self.leave(now, &user),
            Event::Removed { user } => {
                // A change waiting is one from what the owner holds, which
                // now lacks the user.
                if self.subscribed_at.is_some() {
                    if self.presence.contains_key(&user) {
                        self.changes.insert(user, true);
                    } else {
                        self.changes.remove(&user);
                    }
                }
            }
            Event::Owner(owner) => self.owner = owner,
            Event::LinkBack(node) => {
                if self.subscribed_at.as_deref() == Some(node.as_str()) {
                    self.forget_subscription();
                }
            }
            Event::NotOwner => {
                // Not again until placement is asked again: a room service
                // and this node that disagree would otherwise trade
                // Subscribes and refusals as fast as the link goes.
                self.forget_subscription();
                self.owner = None;
            }
            Event::Subscribed(ack) => {
                if self.heard_from(ack.fence) {
                    self.subscribed(now, ack);
                }
            }
            Event::Broadcast { messages, fence } => {
                if self.heard_from(fence) && matches!(self.stage, Stage::Live) {
                    self.ring_ops.push_back(RingOp::Append(messages));
                    self.actions.push_back(Action::Wake);
                }
            }
            Event::Updated(update) => self.updated(now, update),
            Event::Tick => self.expire_joiners(now),
            Event::Reap => self.reap(now),
        }
    }

    /// The next change to the ring.
    pub(crate) fn poll_ring(&mut self) -> Option<RingOp> {
        self.ring_ops.pop_front()
    }

    /// The next thing for the node to do.
    pub(crate) fn poll_action(&mut self) -> Option<Action<W>> {
        self.actions.pop_front()
    }

    /// Hands `link` the frames the owner is owed: an Unsubscribe for a room
    /// that is gone; a Subscribe when the room is not subscribed at the
    /// owner placement names; with `flush_presence`, the presence changes
    /// not yet reported. What the link refuses is tried again at the next
    /// call.
    pub(crate) fn transmit(
        &mut self,
        flush_presence: bool,
        link: &mut impl FnMut(Transmit) -> Result<(), LinkError>,
    ) {
        if std::mem::take(&mut self.unsubscribe) {
            // Best effort: the owner also drops the node with its link.
            let _ = link(Transmit::Unsubscribe);
        }
        let live = match self.stage {
            Stage::Pending(_) => false,
            Stage::Live => true,
            Stage::Closed | Stage::Gone => return,
        };
        if let Some(owner) = &self.owner
            && self.subscribed_at.as_ref() != Some(owner)
        {
            let present: Vec<String> = self.presence.keys().map(|user| user.to_string()).collect();
            let seq = self.report_seq + 1;
            let delta = count_of(present.len());
            if link(Transmit::Subscribe { live, present, seq }).is_err() {
                return;
            }
            self.report_seq = seq;
            self.subscribed_at = Some(owner.clone());
            // The Subscribe carried the whole presence: until the new owner
            // counts, the count is the last one without this node's users,
            // and the Subscribe's report.
            let counted_here = self.counted_here();
            self.member_count = self.member_count.saturating_sub(counted_here);
            self.changes.clear();
            self.reports.clear();
            self.reports.push_back((seq, delta));
        }
        if flush_presence && self.subscribed_at.is_some() && !self.changes.is_empty() {
            let (mut joined, mut left) = (Vec::new(), Vec::new());
            for (user, &present) in &self.changes {
                let list = if present { &mut joined } else { &mut left };
                list.push(user.to_string());
            }
            let delta = count_of(joined.len()) - count_of(left.len());
            let seq = self.report_seq + 1;
            if link(Transmit::Membership { joined, left, seq }).is_ok() {
                self.report_seq = seq;
                self.reports.push_back((seq, delta));
                self.changes.clear();
            }
        }
    }

    /// When the room next needs an [`Event::Tick`] (a joiner's deadline) or
    /// an [`Event::Reap`] (the end of its grace period), monotonic ms.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        let deadline = match &self.stage {
            Stage::Pending(joiners) => joiners.iter().map(|j| j.deadline).min(),
            Stage::Live => None,
            Stage::Closed | Stage::Gone => return None,
        };
        let grace_over = self
            .empty_since
            .filter(|_| self.is_empty())
            .map(|since| since.saturating_add(self.timers.grace));
        deadline.into_iter().chain(grace_over).min()
    }

    /// What a session already in the room is told when it joins again.
    pub(crate) fn rejoin(&self) -> Result<Admission, JoinRefusal> {
        match self.stage {
            Stage::Live => Ok(Admission {
                config: self.config.clone(),
                member_count: self.member_count(),
            }),
            Stage::Pending(_) => Err(JoinRefusal::NoAnswer),
            Stage::Closed => Err(JoinRefusal::Closed),
            Stage::Gone => Err(JoinRefusal::Gone),
        }
    }

    /// The room service this node is subscribed at.
    pub(crate) fn subscribed_at(&self) -> Option<&str> {
        self.subscribed_at.as_deref()
    }

    /// The room's settings, as the owner last sent them.
    pub(crate) fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Room-wide distinct users: the owner's last count, with every change
    /// here it does not include yet.
    pub(crate) fn member_count(&self) -> u64 {
        let count = i64::try_from(self.member_count).unwrap_or(i64::MAX);
        u64::try_from(count.saturating_add(self.uncounted())).unwrap_or(0)
    }

    /// The change in count that the owner's last count lacks: reports not
    /// confirmed, and changes not reported.
    fn uncounted(&self) -> i64 {
        let reported: i64 = self.reports.iter().map(|&(_, delta)| delta).sum();
        let unreported: i64 = self
            .changes
            .values()
            .map(|&present| if present { 1 } else { -1 })
            .sum();
        reported + unreported
    }

    /// How many of this node's users the owner's last count includes.
    fn counted_here(&self) -> u64 {
        u64::try_from(count_of(self.presence.len()) - self.uncounted()).unwrap_or(0)
    }

    /// The owner's count includes this node's reports up to `seq`.
    fn confirmed(&mut self, member_count: u64, seq: u64) {
        self.member_count = member_count;
        while self.reports.front().is_some_and(|&(at, _)| at <= seq) {
            self.reports.pop_front();
        }
    }

    /// Whether presence changes wait for a flush.
    pub(crate) fn presence_pending(&self) -> bool {
        self.subscribed_at.is_some() && !self.changes.is_empty()
    }

    /// Whether the room was dropped: the node forgets it.
    pub(crate) fn is_gone(&self) -> bool {
        matches!(self.stage, Stage::Gone)
    }

    /// Whether an owner with `fence` lost the room to a newer one this
    /// room has heard from.
    pub(crate) fn is_stale(&self, fence: u64) -> bool {
        fence < self.fence
    }

    /// Takes in a frame from an owner with `fence`: false (and reported)
    /// when that owner is stale.
    fn heard_from(&mut self, fence: u64) -> bool {
        if self.is_stale(fence) {
            self.actions.push_back(Action::Stale);
            return false;
        }
        self.fence = fence;
        true
    }

    fn join(&mut self, now: u64, user: Arc<str>, waiter: W, granted: bool) {
        match &mut self.stage {
            Stage::Pending(joiners) => {
                joiners.push(Joiner {
                    user,
                    waiter,
                    granted,
                    deadline: now.saturating_add(self.timers.subscribe_timeout),
                });
                self.empty_since = None;
            }
            Stage::Live => {
                self.admit(user, waiter, granted);
                self.note_if_empty(now);
            }
            Stage::Closed => self
                .actions
                .push_back(Action::Refuse(waiter, JoinRefusal::Closed)),
            Stage::Gone => self
                .actions
                .push_back(Action::Refuse(waiter, JoinRefusal::Gone)),
        }
    }

    /// Counts `user` in and lets the waiter in, unless the room is private
    /// and the user holds no grant for it: then nothing of the room is
    /// given and the user is not counted.
    fn admit(&mut self, user: Arc<str>, waiter: W, granted: bool) {
        if self.config.private && !granted {
            self.actions
                .push_back(Action::Refuse(waiter, JoinRefusal::Private));
            return;
        }
        self.sessions += 1;
        self.empty_since = None;
        let count = self.presence.entry(Arc::clone(&user)).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.presence_changed(user, true);
        }
        let admission = Admission {
            config: self.config.clone(),
            member_count: self.member_count(),
        };
        self.actions.push_back(Action::Admit(waiter, admission));
    }

    fn leave(&mut self, now: u64, user: &Arc<str>) {
        self.sessions = self.sessions.saturating_sub(1);
        if let Some(count) = self.presence.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                self.presence.remove(user);
                self.presence_changed(Arc::clone(user), false);
            }
        }
        self.note_if_empty(now);
    }

    /// Records that `user` became present (or absent) here, for the owner
    /// subscribed at; without one, the next Subscribe carries it (and the
    /// change counts until then).
    fn presence_changed(&mut self, user: Arc<str>, present: bool) {
        // Presence alternates, so a change already waiting is undone.
        if self.changes.remove(&user).is_none() {
            self.changes.insert(user, present);
        }
    }

    fn forget_subscription(&mut self) {
        // The count stands as it was until a new owner counts.
        self.member_count = self.member_count();
        self.subscribed_at = None;
        self.changes.clear();
        self.reports.clear();
    }

    fn subscribed(&mut self, now: u64, ack: SubscribeAck) {
        let live = match self.stage {
            Stage::Pending(_) => false,
            Stage::Live => true,
            Stage::Closed | Stage::Gone => return,
        };
        let latest = ack.latest.unwrap_or_default();
        let config = ack.config.unwrap_or_default();
        let fresh = !live || self.ring_epoch != Some(latest.epoch);
        self.ring_epoch = Some(latest.epoch);
        self.ring_ops.push_back(RingOp::Fill {
            fresh,
            normal: config.normal_ring as usize,
            priority: config.priority_ring as usize,
            history: ack.history,
            latest,
        });
        self.confirmed(ack.member_count, ack.membership_seq);
        self.actions
            .push_back(Action::Timing(RoundConfig::of(&config)));
        self.config = config;
        if let Stage::Pending(joiners) = std::mem::replace(&mut self.stage, Stage::Live) {
            for joiner in joiners {
                self.admit(joiner.user, joiner.waiter, joiner.granted);
            }
            // Every joiner may have been turned away.
            self.note_if_empty(now);
        }
        self.actions.push_back(Action::Wake);
    }

    fn updated(&mut self, now: u64, update: RoomUpdate) {
        if matches!(self.stage, Stage::Closed | Stage::Gone) || !self.heard_from(update.fence) {
            return;
        }
        if update.closed {
            if let Stage::Pending(joiners) = std::mem::replace(&mut self.stage, Stage::Closed) {
                for joiner in joiners {
                    self.actions
                        .push_back(Action::Refuse(joiner.waiter, JoinRefusal::Closed));
                }
            }
            self.note_if_empty(now);
            self.actions.push_back(Action::Close);
            return;
        }
        self.confirmed(update.member_count, update.membership_seq);
        if let Some(config) = update.config {
            self.ring_ops.push_back(RingOp::Resize {
                normal: config.normal_ring as usize,
                priority: config.priority_ring as usize,
            });
            self.actions
                .push_back(Action::Timing(RoundConfig::of(&config)));
            self.config = config;
        }
    }

    fn expire_joiners(&mut self, now: u64) {
        let Stage::Pending(joiners) = &mut self.stage else {
            return;
        };
        let (expired, waiting) = std::mem::take(joiners)
            .into_iter()
            .partition(|joiner| joiner.deadline <= now);
        *joiners = waiting;
        for joiner in expired {
            self.actions
                .push_back(Action::Refuse(joiner.waiter, JoinRefusal::NoAnswer));
        }
        self.note_if_empty(now);
    }

    fn reap(&mut self, now: u64) {
        let grace_over = self
            .empty_since
            .is_some_and(|since| now >= since.saturating_add(self.timers.grace));
        if matches!(self.stage, Stage::Gone) || !self.is_empty() || !grace_over {
            return;
        }
        self.unsubscribe = !matches!(self.stage, Stage::Closed);
        self.stage = Stage::Gone;
        self.forget_subscription();
    }

    /// Nobody is in the room here or waiting to join.
    fn is_empty(&self) -> bool {
        let waiting = match &self.stage {
            Stage::Pending(joiners) => joiners.len(),
            _ => 0,
        };
        self.sessions == 0 && waiting == 0
    }

    fn note_if_empty(&mut self, now: u64) {
        if self.is_empty() && self.empty_since.is_none() {
            self.empty_since = Some(now);
        }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

/// A number of users as a change in count.
fn count_of(users: usize) -> i64 {
    i64::try_from(users).unwrap_or(i64::MAX)
}
