//! One room's state and the decisions made on it: who is in it and on which
//! nodes, which nodes want its broadcasts, whether a message is accepted
//! (DESIGN §4's checks, in order), and how it is stamped. A room is created
//! afresh or rebuilt from what the second-level store kept
//! ([`PersistedRoom`]), and a new owner catches up with the positions its
//! subscribers already hold.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use chatroom_cluster::auth::{Roles, RoomRoles};
use chatroom_proto::cluster::v1::{
    HookFailurePolicy, RoomConfig, RoomOverrides, RoomReport, SendRequest,
};
use chatroom_proto::v1::{self, ChatMessage, Cursor, ErrorCode, Kind, Lane, SendAck, SenderInfo};

use super::clock::RoomClock;
use super::config::{ConfigError, resolve, validate_config};
use super::dedupe::Dedupe;
use super::limiter::{LaneLimiter, Limited};
use super::members::{NodeIdx, RoomMembers};
use super::moderation::{Moderation, ModerationError, MuteLeft};
use super::slowmode::SlowMode;
use super::stats::{Counters, RoomStats, RoomSummary};
use super::wordfilter::{Filtered, WordFilter};

/// Most sends one room may have waiting for the moderation hook's verdict:
/// past it the room's senders are told OVERLOADED, so a slow hook holds up
/// one room's traffic within this bound and nothing else.
pub const MAX_HELD: usize = 256;

/// The time of a decision, read by the caller: wall clock for stamps and
/// mutes, monotonic for limits and dedupe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Now {
    /// Microseconds since the Unix epoch.
    pub unix_us: u64,
    /// Nanoseconds on a monotonic clock.
    pub mono_ns: u64,
}

impl Now {
    /// Whole seconds on the monotonic clock.
    pub fn seconds(self) -> u64 {
        self.mono_ns / 1_000_000_000
    }
}

/// A message a member wants to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendInput {
    /// The sending user.
    pub sender: String,
    /// The sender's roles, from their token.
    pub roles: Roles,
    /// The sender's roles in this room, from their token.
    pub room_roles: RoomRoles,
    /// How the sender is shown, from their token.
    pub sender_info: Option<SenderInfo>,
    /// The sender's id for the message; 0 turns dedupe off.
    pub client_msg_id: u64,
    /// A `Kind` value or an application kind.
    pub kind: i32,
    /// Application bytes.
    pub payload: Bytes,
}

impl From<SendRequest> for SendInput {
    /// The send a msg-svc forwarded, as the room takes it.
    fn from(send: SendRequest) -> Self {
        Self {
            sender: send.sender,
            roles: Roles::from_names(&send.sender_roles),
            room_roles: RoomRoles::from_names(&send.sender_roles),
            sender_info: send.sender_info,
            client_msg_id: send.client_msg_id,
            kind: send.kind,
            payload: send.payload,
        }
    }
}

/// A send the room accepted (or holds for the app's verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new message, stamped and in the history: broadcast it.
    New(ChatMessage),
    /// A retry of a message accepted earlier: answer with its ack only.
    Duplicate(SendAck),
    /// Passed every check of the room and waits for the moderation hook:
    /// hand it over, then give the verdict to [`RoomState::complete`].
    Held(Held),
}

impl Accepted {
    /// What the sender is told; `None` while the send is held.
    pub fn ack(&self) -> Option<SendAck> {
        match self {
            Self::New(msg) => Some(ack_of(msg)),
            Self::Duplicate(ack) => Some(*ack),
            Self::Held(_) => None,
        }
    }
}

/// A send waiting for the moderation hook: it passed the room's checks
/// (its rate and slow-mode slot are taken) and is stamped once the app
/// accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held(Box<Stamp>);

impl Held {
    /// The sender.
    pub fn sender(&self) -> &str {
        &self.0.sender
    }

    /// How the sender is shown.
    pub fn sender_info(&self) -> Option<&SenderInfo> {
        self.0.sender_info.as_ref()
    }

    /// The message kind.
    pub fn kind(&self) -> i32 {
        self.0.kind
    }

    /// The payload, as the word filter left it.
    pub fn payload(&self) -> &Bytes {
        &self.0.payload
    }
}

/// A message the app's backend posts (through the admin API) on behalf of
/// a user or of the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Who it is from.
    pub sender: String,
    /// From the system (PRIORITY, and notices allowed) rather than a user.
    pub system: bool,
    /// How the sender is shown.
    pub sender_info: Option<SenderInfo>,
    /// A `Kind` value or an application kind.
    pub kind: i32,
    /// Application bytes (a gift's attributes as JSON, say).
    pub payload: Bytes,
    /// The idempotency key's number: a retry with the same one gets the
    /// first message's ack; 0: none.
    pub client_msg_id: u64,
}

/// What the app's moderation hook said of a held send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Post it as it is.
    Accept,
    /// Refuse it; the reason is shown to the sender.
    Reject(String),
    /// Post this payload instead.
    Replace(Bytes),
    /// The hook failed or did not answer in time: the room's policy decides.
    Failed,
}

/// The ack of a stamped message.
fn ack_of(msg: &ChatMessage) -> SendAck {
    SendAck {
        msg_id: msg.msg_id,
        ts: msg.ts,
        lane: msg.lane,
    }
}

/// What a membership report changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceChange {
    /// The member count differs from before the report.
    pub count_changed: bool,
    /// Reported joiners who are banned: not added, to be kicked again.
    pub banned: Vec<String>,
}

/// What the second-level store keeps of a room: enough to rebuild it after a
/// restart or on a new owner. Members and subscribers are soft state and are
/// not kept: the nodes report them again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersistedRoom {
    /// The stream's newest position; `None` when only settings or
    /// moderation were kept.
    pub latest: Option<Cursor>,
    /// Settings set through the admin API, if any.
    pub overrides: Option<RoomOverrides>,
    /// Muted users and the wall-clock microsecond their mute ends (`None`:
    /// until unmuted).
    pub mutes: Vec<(String, Option<u64>)>,
    /// Banned users.
    pub bans: Vec<String>,
    /// Whitelisted users.
    pub whitelist: Vec<String>,
    /// The recent messages of the stream at `latest`, oldest first.
    pub history: Vec<ChatMessage>,
}

/// What a subscriber's position did to the room's stream (see
/// [`RoomState::catch_up`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The room was already at or past it.
    Unchanged,
    /// Same stream, further on: the counters and clock moved past it.
    Advanced,
    /// A fresh room took over the subscriber's stream (epoch and position).
    Adopted,
}

/// Everything the room service owns about one room.
pub struct RoomState {
    room_id: Arc<str>,
    epoch: u64,
    /// What an operator set; `config` is the defaults with these laid over.
    overrides: RoomOverrides,
    config: RoomConfig,
    members: RoomMembers,
    subscribers: BTreeSet<NodeIdx>,
    moderation: Moderation,
    normal_limit: LaneLimiter,
    priority_limit: LaneLimiter,
    dedupe: Dedupe,
    slow_mode: SlowMode,
    /// The default word lists and the room's own, compiled.
    filter: Arc<WordFilter>,
    /// The service has a moderation hook: sends of the room's hook kinds
    /// wait for its verdict.
    hooked: bool,
    /// Sends waiting for the hook's verdict.
    held: usize,
    clock: RoomClock,
    /// The newest message's position: its msg_id, ts and normal_seq are
    /// where the next message counts from.
    latest: Cursor,
    history: VecDeque<ChatMessage>,
    counters: Counters,
}

impl std::fmt::Debug for RoomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomState")
            .field("room_id", &self.room_id)
            .field("epoch", &self.epoch)
            .field("members", &self.members.count())
            .field("subscribers", &self.subscribers)
            .field("latest", &self.latest)
            .finish_non_exhaustive()
    }
}

impl RoomState {
    /// A room with no members, no messages and a new stream `epoch`. The
    /// config is taken as given (see [`validate_config`]); limiters treat a
    /// zero burst as 1.
    pub fn new(room_id: Arc<str>, epoch: u64, config: RoomConfig) -> Self {
        Self {
            room_id,
            epoch,
            normal_limit: LaneLimiter::new(config.normal_per_s, config.normal_burst),
            priority_limit: LaneLimiter::new(config.priority_per_s, config.priority_burst),
            history: VecDeque::with_capacity(config.history_size.min(256) as usize),
            config,
            overrides: RoomOverrides::default(),
            members: RoomMembers::new(),
            subscribers: BTreeSet::new(),
            moderation: Moderation::new(),
            dedupe: Dedupe::new(),
            slow_mode: SlowMode::default(),
            filter: Arc::default(),
            hooked: false,
            held: 0,
            clock: RoomClock::new(),
            latest: Cursor::start(epoch),
            counters: Counters::default(),
        }
    }

    /// A room rebuilt from what the store kept. Its stream continues after
    /// the stored position (or the stored history's newest message, if that
    /// is further on); the clock resumes after it, and a sender's retry of a
    /// stored message (its `client_msg_id` again) is answered with the
    /// stored message's ack, as before the move. Without a stored position
    /// the room starts a stream with the new `epoch` and the stored history
    /// is ignored. The stored overrides apply when the config they make with
    /// `defaults` is within bounds, and are dropped otherwise; mutes that
    /// ended by `now` are left out.
    pub fn restore(
        room_id: Arc<str>,
        epoch: u64,
        defaults: RoomConfig,
        stored: PersistedRoom,
        now: Now,
    ) -> Self {
        let now_us = now.unix_us;
        let overrides = stored.overrides.unwrap_or_default();
        let resolved = resolve(&defaults, &overrides);
        let (config, overrides) = match validate_config(&resolved) {
            Ok(()) => (resolved, overrides),
            Err(_) => (defaults, RoomOverrides::default()),
        };
        let mut room = Self::new(room_id, epoch, config);
        room.overrides = overrides;
        if let Some(latest) = stored.latest {
            let newest = stored
                .history
                .last()
                .map(|msg| Cursor::after(latest.epoch, msg));
            room.epoch = latest.epoch;
            room.latest = newest.map_or(latest, |newest| furthest(&latest, &newest));
            room.clock = RoomClock::resuming_after(room.latest.ts);
            room.history = stored.history.into();
            room.trim_history();
            for msg in &room.history {
                room.dedupe
                    .remember(&msg.sender, msg.client_msg_id, ack_of(msg), now.mono_ns);
            }
        }
        // The lists were bounded when they were written; an entry beyond the
        // bound (a store edited by hand) is left out.
        for (user, until_us) in stored.mutes {
            if until_us.is_none_or(|until| until > now_us) {
                let _ = room.moderation.mute(&user, until_us, now_us);
            }
        }
        for user in stored.bans {
            let _ = room.moderation.ban(&user);
        }
        for user in stored.whitelist {
            let _ = room.moderation.whitelist_add(&user);
        }
        room
    }

    /// The room's id.
    pub fn room_id(&self) -> &Arc<str> {
        &self.room_id
    }

    /// The identity of the room's stream.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The room's settings.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// What an operator set for the room.
    pub fn overrides(&self) -> &RoomOverrides {
        &self.overrides
    }

    /// Replaces the room's overrides and applies the config they make with
    /// `defaults`, if it is within bounds (nothing changes otherwise).
    pub fn reconfigure(
        &mut self,
        overrides: RoomOverrides,
        defaults: &RoomConfig,
    ) -> Result<(), ConfigError> {
        self.set_config(resolve(defaults, &overrides))?;
        self.overrides = overrides;
        Ok(())
    }

    /// Validates and applies new settings. A lane whose rate or burst changed
    /// gets a fresh limiter (its bucket starts full); the history is trimmed
    /// to the new size.
    pub(crate) fn set_config(&mut self, config: RoomConfig) -> Result<(), ConfigError> {
        validate_config(&config)?;
        if !self
            .normal_limit
            .enforces(config.normal_per_s, config.normal_burst)
        {
            self.normal_limit = LaneLimiter::new(config.normal_per_s, config.normal_burst);
        }
        if !self
            .priority_limit
            .enforces(config.priority_per_s, config.priority_burst)
        {
            self.priority_limit = LaneLimiter::new(config.priority_per_s, config.priority_burst);
        }
        self.config = config;
        self.trim_history();
        Ok(())
    }

    /// Sets the word filter the room's messages go through (the default
    /// lists and the room's own, compiled by the caller).
    pub fn set_filter(&mut self, filter: Arc<WordFilter>) {
        self.filter = filter;
    }

    /// Whether the service has a moderation hook for the room's hook kinds.
    pub fn set_hooked(&mut self, hooked: bool) {
        self.hooked = hooked;
    }

    /// Sends waiting for the hook's verdict.
    pub fn held(&self) -> usize {
        self.held
    }

    // --- Nodes and members -------------------------------------------------

    /// `node` wants the room's broadcasts; whether it did not before.
    pub fn subscribe(&mut self, node: NodeIdx) -> bool {
        self.subscribers.insert(node)
    }

    /// `node` no longer wants broadcasts and has no members here any more;
    /// whether the member count changed.
    pub fn unsubscribe(&mut self, node: NodeIdx) -> bool {
        self.subscribers.remove(&node);
        let before = self.members.count();
        self.members.remove_node(node);
        self.members.count() != before
    }

    /// Whether `node` gets the room's broadcasts.
    pub fn is_subscribed(&self, node: NodeIdx) -> bool {
        self.subscribers.contains(&node)
    }

    /// The subscribed nodes, in index order.
    pub fn subscribers(&self) -> impl ExactSizeIterator<Item = NodeIdx> + '_ {
        self.subscribers.iter().copied()
    }

    /// Applies a node's report of users now present (`joined`, applied first)
    /// and no longer present (`left`) there. Banned joiners are not added.
    pub fn apply_membership(
        &mut self,
        node: NodeIdx,
        joined: &[String],
        left: &[String],
    ) -> PresenceChange {
        let before = self.members.count();
        let mut banned = Vec::new();
        for user in joined {
            if self.moderation.is_banned(user) {
                banned.push(user.clone());
            } else {
                self.members.join(user, node);
            }
        }
        for user in left {
            self.members.leave(user, node);
        }
        PresenceChange {
            count_changed: self.members.count() != before,
            banned,
        }
    }

    /// The nodes `user` is present on.
    pub fn nodes_of(&self, user: &str) -> &[NodeIdx] {
        self.members.nodes_of(user)
    }

    /// Distinct users present on some node.
    pub fn member_count(&self) -> usize {
        self.members.count()
    }

    // --- Messages ----------------------------------------------------------

    /// Decides on a member's message: checks membership, ban, mute,
    /// read-only, kind, payload size, dedupe, slow mode (NORMAL lane), the
    /// lane's limit and the word filter, in that order: who may post and
    /// how much first, then what is said. A message of the room's hook
    /// kinds is then held for the app's verdict (when the service has a
    /// hook); any other is stamped and appended to the history. A banned
    /// user is no member (the ban removed them), and is told BANNED rather
    /// than NOT_JOINED so their client does not try to join again. Admin and
    /// system senders bypass the filter and the hook.
    pub fn accept(&mut self, send: SendInput, now: Now) -> Result<Accepted, v1::Error> {
        let outcome = self.decide(send, now);
        self.count(&outcome, now);
        outcome
    }

    /// Stamps (or refuses) a held send on the hook's verdict. The sender
    /// is checked for a ban and the message for a retry accepted meanwhile;
    /// a replaced payload must fit the room's limit; a failed hook follows
    /// the room's policy (accept, or refuse with OVERLOADED).
    pub fn complete(
        &mut self,
        held: Held,
        verdict: Verdict,
        now: Now,
    ) -> Result<Accepted, v1::Error> {
        self.held = self.held.saturating_sub(1);
        let outcome = self.settle(*held.0, verdict, now);
        self.count(&outcome, now);
        outcome
    }

    /// Lets go of a held send the hook could not take (its queue is
    /// full): the sender is told OVERLOADED.
    pub fn release(&mut self, _held: Held) -> v1::Error {
        self.held = self.held.saturating_sub(1);
        let error = hook_overloaded();
        self.counters.rejected(error.code);
        error
    }

    fn count(&mut self, outcome: &Result<Accepted, v1::Error>, now: Now) {
        match outcome {
            Ok(Accepted::New(msg)) => self.counters.accepted(msg.lane(), now.seconds()),
            Ok(Accepted::Duplicate(_)) => self.counters.duplicates += 1,
            Ok(Accepted::Held(_)) => {}
            Err(error) => self.counters.rejected(error.code),
        }
    }

    fn settle(&mut self, stamp: Stamp, verdict: Verdict, now: Now) -> Result<Accepted, v1::Error> {
        if self.moderation.is_banned(&stamp.sender) {
            return Err(v1::Error::new(
                ErrorCode::Banned,
                "you are banned from this room",
            ));
        }
        if let Some(ack) = self
            .dedupe
            .get(&stamp.sender, stamp.client_msg_id, now.mono_ns)
        {
            return Ok(Accepted::Duplicate(ack));
        }
        let stamp = match verdict {
            Verdict::Accept => stamp,
            Verdict::Reject(reason) => {
                let reason = if reason.is_empty() {
                    "refused by the room's moderation".to_owned()
                } else {
                    reason
                };
                return Err(v1::Error::new(ErrorCode::ContentRejected, reason));
            }
            Verdict::Replace(payload) => {
                self.check_payload(&payload)?;
                self.counters.hook_replaced += 1;
                Stamp { payload, ..stamp }
            }
            Verdict::Failed => {
                if self.config.hook_failure == HookFailurePolicy::Closed as i32 {
                    return Err(v1::Error::new(
                        ErrorCode::Overloaded,
                        "the room's moderation is unavailable",
                    )
                    .retry_after(1_000));
                }
                self.counters.hook_failed_open += 1;
                stamp
            }
        };
        let msg = self.stamp(stamp, now);
        self.dedupe
            .remember(&msg.sender, msg.client_msg_id, ack_of(&msg), now.mono_ns);
        Ok(Accepted::New(msg))
    }

    /// Runs the word filter over a non-privileged sender's payload: the
    /// payload to post (masked, or as it was), or CONTENT_REJECTED naming
    /// the list (never the word, so the filter cannot be probed).
    fn filter_content(&mut self, payload: Bytes) -> Result<Bytes, v1::Error> {
        if self.filter.is_empty() {
            return Ok(payload);
        }
        let text = String::from_utf8_lossy(&payload);
        match self.filter.check(&text) {
            Filtered::Pass => Ok(payload),
            Filtered::Masked(masked) => {
                self.counters.masked += 1;
                Ok(Bytes::from(masked))
            }
            Filtered::Rejected { list } => Err(v1::Error::new(
                ErrorCode::ContentRejected,
                format!("refused by the room's word filter ({list})"),
            )),
        }
    }

    fn decide(&mut self, send: SendInput, now: Now) -> Result<Accepted, v1::Error> {
        let sender = send.sender.as_str();
        if !self.members.contains(sender) && !self.moderation.is_banned(sender) {
            return Err(v1::Error::new(
                ErrorCode::NotJoined,
                "join the room before sending to it",
            ));
        }
        if self.moderation.is_banned(sender) {
            return Err(v1::Error::new(
                ErrorCode::Banned,
                "you are banned from this room",
            ));
        }
        if !send.roles.privileged()
            && let Some(left) = self.moderation.mute_left(sender, now.unix_us)
        {
            return Err(muted(left));
        }
        if self.config.read_only
            && !send.roles.privileged()
            && !send.room_roles.moderator
            && !send.room_roles.streamer
        {
            return Err(v1::Error::new(
                ErrorCode::Forbidden,
                "this room is read-only: only its moderators and streamers post",
            ));
        }
        if !Kind::is_allowed(send.kind) {
            return Err(v1::Error::new(
                ErrorCode::BadRequest,
                format!("kind {} is reserved", send.kind),
            ));
        }
        if send.kind == Kind::Notice as i32 && !send.roles.privileged() {
            return Err(v1::Error::new(
                ErrorCode::Forbidden,
                "only admin or system senders may post notices",
            ));
        }
        self.check_payload(&send.payload)?;
        if let Some(ack) = self.dedupe.get(sender, send.client_msg_id, now.mono_ns) {
            return Ok(Accepted::Duplicate(ack));
        }
        let lane = self.lane_for(sender, send.roles, send.kind);
        let hooked =
            self.hooked && !send.roles.privileged() && self.config.hook_kinds.contains(&send.kind);
        if hooked && self.held >= MAX_HELD {
            return Err(hook_overloaded());
        }
        let slow_ns = u64::from(self.config.slow_mode_ms) * 1_000_000;
        if lane == Lane::Normal
            && slow_ns > 0
            && let Some(wait_ns) = self.slow_mode.wait(sender, now.mono_ns, slow_ns)
        {
            let seconds = f64::from(self.config.slow_mode_ms) / 1000.0;
            return Err(v1::Error::new(
                ErrorCode::RateLimited,
                format!("slow mode: one message every {seconds} s"),
            )
            .retry_after(u32::try_from(wait_ns.div_ceil(1_000_000)).unwrap_or(u32::MAX)));
        }
        let limiter = match lane {
            Lane::Normal => &self.normal_limit,
            Lane::Priority => &self.priority_limit,
        };
        limiter
            .check_at(now.mono_ns)
            .map_err(|limited| rate_limited(lane, limiter.per_s(), limited))?;
        let payload = if send.roles.privileged() {
            send.payload
        } else {
            self.filter_content(send.payload)?
        };
        if lane == Lane::Normal && slow_ns > 0 {
            self.slow_mode.posted(&send.sender, now.mono_ns, slow_ns);
        }
        let stamp = Stamp {
            sender: send.sender,
            sender_info: send.sender_info,
            lane,
            kind: send.kind,
            payload,
            client_msg_id: send.client_msg_id,
        };
        if hooked {
            self.held += 1;
            return Ok(Accepted::Held(Held(Box::new(stamp))));
        }
        let msg = self.stamp(stamp, now);
        self.dedupe
            .remember(&msg.sender, msg.client_msg_id, ack_of(&msg), now.mono_ns);
        Ok(Accepted::New(msg))
    }

    /// Posts a message the app's backend sends on a user's or the system's
    /// behalf: no membership, mute, limit, filter or hook (the backend is
    /// trusted), but the kind, the payload size and notices' need for the
    /// system are checked, a retry with the same idempotency key gets the
    /// first ack, and the lane is the one the room's policy gives the kind
    /// and the sender (the system's messages go PRIORITY).
    pub fn publish(&mut self, publish: Publish, now: Now) -> Result<Accepted, v1::Error> {
        let outcome = self.decide_publish(publish, now);
        self.count(&outcome, now);
        outcome
    }

    fn decide_publish(&mut self, publish: Publish, now: Now) -> Result<Accepted, v1::Error> {
        if !Kind::is_allowed(publish.kind) {
            return Err(v1::Error::new(
                ErrorCode::BadRequest,
                format!("kind {} is reserved", publish.kind),
            ));
        }
        if publish.kind == Kind::Notice as i32 && !publish.system {
            return Err(v1::Error::new(
                ErrorCode::Forbidden,
                "only the system may post notices",
            ));
        }
        self.check_payload(&publish.payload)?;
        if let Some(ack) = self
            .dedupe
            .get(&publish.sender, publish.client_msg_id, now.mono_ns)
        {
            return Ok(Accepted::Duplicate(ack));
        }
        let roles = Roles {
            admin: false,
            system: publish.system,
        };
        let lane = self.lane_for(&publish.sender, roles, publish.kind);
        let msg = self.stamp(
            Stamp {
                sender: publish.sender,
                sender_info: publish.sender_info,
                lane,
                kind: publish.kind,
                payload: publish.payload,
                client_msg_id: publish.client_msg_id,
            },
            now,
        );
        self.dedupe
            .remember(&msg.sender, msg.client_msg_id, ack_of(&msg), now.mono_ns);
        Ok(Accepted::New(msg))
    }

    /// Posts an admin or system notice: PRIORITY lane, no membership check,
    /// no limit; only the payload size is checked.
    pub fn post_notice(
        &mut self,
        sender: String,
        payload: Bytes,
        now: Now,
    ) -> Result<ChatMessage, v1::Error> {
        if let Err(error) = self.check_payload(&payload) {
            self.counters.rejected(error.code);
            return Err(error);
        }
        let msg = self.stamp(
            Stamp {
                sender,
                sender_info: None,
                lane: Lane::Priority,
                kind: Kind::Notice as i32,
                payload,
                client_msg_id: 0,
            },
            now,
        );
        self.counters.accepted(Lane::Priority, now.seconds());
        Ok(msg)
    }

    /// The lane a message goes to: PRIORITY for privileged or whitelisted
    /// senders and for the room's priority kinds.
    pub fn lane_for(&self, sender: &str, roles: Roles, kind: i32) -> Lane {
        if roles.privileged()
            || self.moderation.is_whitelisted(sender)
            || self.config.priority_kinds.contains(&kind)
        {
            Lane::Priority
        } else {
            Lane::Normal
        }
    }

    fn check_payload(&self, payload: &Bytes) -> Result<(), v1::Error> {
        let max = self.config.max_payload_bytes;
        if payload.len() > max as usize {
            return Err(v1::Error::new(
                ErrorCode::PayloadTooLarge,
                format!("payload is {} bytes, this room allows {max}", payload.len()),
            ));
        }
        Ok(())
    }

    fn stamp(&mut self, stamp: Stamp, now: Now) -> ChatMessage {
        let Stamp {
            sender,
            sender_info,
            lane,
            kind,
            payload,
            client_msg_id,
        } = stamp;
        let ts = self.clock.stamp(now.unix_us);
        let msg_id = self.latest.msg_id.saturating_add(1);
        let normal_seq = match lane {
            Lane::Normal => self.latest.normal_seq.saturating_add(1),
            Lane::Priority => self.latest.normal_seq,
        };
        let msg = ChatMessage {
            msg_id,
            ts,
            normal_seq,
            sender,
            lane: lane as i32,
            kind,
            payload,
            client_msg_id,
            sender_info,
        };
        self.latest = Cursor::after(self.epoch, &msg);
        if self.config.history_size > 0 {
            self.history.push_back(msg.clone());
            self.trim_history();
        }
        msg
    }

    fn trim_history(&mut self) {
        let keep = self.config.history_size as usize;
        if self.history.len() > keep {
            self.history.drain(..self.history.len() - keep);
        }
    }

    /// The room's newest position (ts 0 before the first message).
    pub fn latest(&self) -> Cursor {
        self.latest
    }

    /// Takes in the newest position a subscriber holds, so that the room
    /// never stamps at or below a position a node already has (a previous
    /// owner may have stamped messages the store never got). A position of
    /// this stream that is further on moves the counters and the clock past
    /// it. A position of another stream with messages in it is adopted when
    /// this room's own stream is empty (created afresh, or restored from a
    /// record with nothing stamped, such as one a node left while views
    /// disagreed about the owner): the stream continues instead of starting
    /// over.
    pub fn catch_up(&mut self, seen: &Cursor) -> CatchUp {
        if seen.epoch == self.epoch {
            let ahead = furthest(&self.latest, seen);
            if ahead == self.latest && self.clock.last() >= seen.ts {
                return CatchUp::Unchanged;
            }
            self.latest = ahead;
            self.clock = RoomClock::resuming_after(self.clock.last().max(seen.ts));
            return CatchUp::Advanced;
        }
        if self.latest.msg_id != 0 || seen.msg_id == 0 {
            return CatchUp::Unchanged;
        }
        self.epoch = seen.epoch;
        self.latest = *seen;
        self.clock = RoomClock::resuming_after(self.clock.last().max(seen.ts));
        self.history.clear();
        CatchUp::Adopted
    }

    /// The recent messages, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &ChatMessage> + ExactSizeIterator {
        self.history.iter()
    }

    // --- Moderation --------------------------------------------------------

    /// The room's moderation lists.
    pub fn moderation(&self) -> &Moderation {
        &self.moderation
    }

    /// Mutes `user` until `until_us` (wall clock) or indefinitely.
    pub fn mute(
        &mut self,
        user: &str,
        until_us: Option<u64>,
        now_us: u64,
    ) -> Result<(), ModerationError> {
        self.moderation.mute(user, until_us, now_us)
    }

    /// Lifts a mute; whether one was running.
    pub fn unmute(&mut self, user: &str, now_us: u64) -> bool {
        self.moderation.unmute(user, now_us)
    }

    /// Bans `user` and removes them from the room; the nodes they were
    /// present on, which should kick them.
    pub fn ban(&mut self, user: &str) -> Result<Vec<NodeIdx>, ModerationError> {
        self.moderation.ban(user)?;
        Ok(self.members.remove_user(user))
    }

    /// Lifts a ban; whether there was one.
    pub fn unban(&mut self, user: &str) -> bool {
        self.moderation.unban(user)
    }

    /// Sends `user`'s messages to the PRIORITY lane from now on.
    pub fn whitelist_add(&mut self, user: &str) -> Result<bool, ModerationError> {
        self.moderation.whitelist_add(user)
    }

    /// Takes `user` off the whitelist; whether they were on it.
    pub fn whitelist_remove(&mut self, user: &str) -> bool {
        self.moderation.whitelist_remove(user)
    }

    // --- Stats ---------------------------------------------------------------

    /// Counts `frames` Broadcast frames carrying `messages` message copies.
    pub fn record_broadcast(&mut self, frames: u64, messages: u64) {
        self.counters.broadcast_frames += frames;
        self.counters.broadcast_messages += messages;
    }

    /// Adds a node's report of what happened downstream of the room.
    pub fn record_report(&mut self, report: &RoomReport, now: Now) {
        self.counters.reported(report, now.seconds());
    }

    /// The room's line among the busiest rooms.
    pub fn summary(&self, now: Now) -> RoomSummary {
        RoomSummary {
            room_id: self.room_id.to_string(),
            members: self.members.count() as u64,
            nodes: self.subscribers.len() as u64,
            in_per_s: self.counters.accepted_rate.per_s(now.seconds()),
            out_per_s: self.counters.delivered_rate.per_s(now.seconds()),
        }
    }

    /// A snapshot for operators.
    pub fn stats(&self, now: Now) -> RoomStats {
        let c = &self.counters;
        let down = &c.downstream;
        RoomStats {
            room_id: self.room_id.to_string(),
            members: self.members.count() as u64,
            nodes: self.subscribers.len() as u64,
            in_per_s: c.accepted_rate.per_s(now.seconds()),
            out_per_s: c.delivered_rate.per_s(now.seconds()),
            delivered: down.delivered,
            skipped_normal: down.skipped_normal,
            skipped_priority: down.skipped_priority,
            evicted_normal: down.evicted_normal,
            evicted_priority: down.evicted_priority,
            slow_consumer_kicks: down.slow_consumer_kicks,
            masked: c.masked,
            held: self.held as u64,
            hook_replaced: c.hook_replaced,
            hook_failed_open: c.hook_failed_open,
            accepted_normal: c.accepted_normal,
            accepted_priority: c.accepted_priority,
            duplicates: c.duplicates,
            rejected: c.rejected_by_code(),
            broadcast_frames: c.broadcast_frames,
            broadcast_messages: c.broadcast_messages,
            history: self.history.len() as u64,
            mutes: self.moderation.mute_count(now.unix_us) as u64,
            bans: self.moderation.ban_count() as u64,
            whitelist: self.moderation.whitelist_count() as u64,
            latest: self.latest,
        }
    }
}

/// A message about to be stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    sender: String,
    sender_info: Option<SenderInfo>,
    lane: Lane,
    kind: i32,
    payload: Bytes,
    client_msg_id: u64,
}

/// Each counter of the two positions at its furthest (`a`'s epoch).
fn furthest(a: &Cursor, b: &Cursor) -> Cursor {
    Cursor {
        epoch: a.epoch,
        ts: a.ts.max(b.ts),
        msg_id: a.msg_id.max(b.msg_id),
        normal_seq: a.normal_seq.max(b.normal_seq),
    }
}

fn muted(left: MuteLeft) -> v1::Error {
    match left {
        MuteLeft::Indefinite => v1::Error::new(
            ErrorCode::Muted,
            "muted in this room until a moderator lifts it",
        ),
        MuteLeft::Micros(us) => {
            let secs = us.div_ceil(1_000_000);
            let ms = u32::try_from(us.div_ceil(1_000)).unwrap_or(u32::MAX);
            v1::Error::new(ErrorCode::Muted, format!("muted for {secs} s more")).retry_after(ms)
        }
    }
}

fn hook_overloaded() -> v1::Error {
    v1::Error::new(
        ErrorCode::Overloaded,
        "too many messages wait for the room's moderation",
    )
    .retry_after(500)
}

fn rate_limited(lane: Lane, per_s: u32, limited: Limited) -> v1::Error {
    let lane = match lane {
        Lane::Normal => "normal",
        Lane::Priority => "priority",
    };
    let message = if limited.closed {
        format!("the {lane} lane of this room is closed")
    } else {
        format!("{lane} lane limit {per_s} msg/s reached")
    };
    v1::Error::new(ErrorCode::RateLimited, message).retry_after(limited.retry_after_ms)
}

#[cfg(test)]
mod content;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
