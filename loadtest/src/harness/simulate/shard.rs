//! One fan-out shard of the simulation: a thread that owns the notifier of
//! its share of the sessions (by session id, as msg-svc's shards do), runs
//! their rooms' rounds when due, and plays their clients.
//!
//! The server half is msg-svc's own code: [`Notifier::round`] with a
//! [`RoundSource`] that builds its frames as msg-svc's shard does (an inline
//! delta per distinct cursor from `RoomRing::delta_frame`, else a plain
//! Notify, the ring read-locked only while building), and pulls answered by
//! `RoomRing::pull_frame` as msg-svc's handler answers them.
//!
//! The client half is a small struct per session, no socket: it applies a
//! delta that starts at its cursor, pulls after a plain Notify (a laggard
//! one round late), and counts what it got and what it was told it lost.
//!
//! Latency: every recipient of a frame in the same stretch of a round gets
//! the same messages at (nearly) the same moment, so each frame keeps its
//! messages' stamps and a count of recipients not yet recorded; every
//! [`FLUSH_EVERY`] deliveries the clock is read once and each stamp is
//! recorded with the count as its weight. The histogram is what recording
//! each (session, message) pair would give, to within one flush (tens of
//! µs), at a thousandth of the cost: 200 M single records a second would
//! cost more than the fan-out itself.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatroom_proto::compose::plain_notify_frame;
use chatroom_proto::v1::{Cursor, Lane, Notify};
use msg_svc::notifier::{Action, Delivery, Notifier, RoundSource, RoundStats, SessionId};

use super::meter::Meter;
use super::{FanoutConfig, Plan, SimClock, SimRoom, is_laggard};
use crate::harness::stats::LANES;

/// Deliveries between two clock readings for latency.
const FLUSH_EVERY: u64 = 1_024;

/// Commands taken at once before due rounds run, as in msg-svc's shard.
const DRAIN_BATCH: usize = 4_096;

const PRIORITY: usize = Lane::Priority as usize;

/// What the stamper tells a shard.
#[derive(Debug)]
pub(super) enum ShardCmd {
    /// The measured phase begins at this clock reading, µs.
    Start(u64),
    /// New messages in these rooms.
    Dirty(Arc<[u32]>),
    /// No more messages: catch every session up, then stop.
    Finished,
}

/// A room's deliveries at this shard's sessions, per lane.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RoomCounts {
    /// Messages that reached sessions.
    pub(super) delivered: [u64; LANES],
    /// Messages sessions were told they will never get.
    pub(super) dropped: [u64; LANES],
}

impl RoomCounts {
    fn take(&mut self, carried: &Carried) {
        for lane in 0..LANES {
            self.delivered[lane] += carried.messages[lane];
            self.dropped[lane] += carried.dropped[lane];
        }
    }
}

/// Events over the whole run (measured phase and drain).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    /// Pushes refused by busy laggards.
    pub(super) refused: u64,
    /// Members the notifier kicked as slow.
    pub(super) kicked: u64,
    /// Pull requests answered.
    pub(super) pulls: u64,
    /// Deltas that did not start at the client's cursor (never expected: the
    /// client would drop them and pull).
    pub(super) stale_deltas: u64,
}

impl Counters {
    pub(super) fn add(&mut self, other: &Counters) {
        self.refused += other.refused;
        self.kicked += other.kicked;
        self.pulls += other.pulls;
        self.stale_deltas += other.stale_deltas;
    }
}

/// What a shard hands back when it stops.
#[derive(Debug)]
pub(super) struct ShardOutcome {
    /// Per room, by room index.
    pub(super) rooms: Vec<RoomCounts>,
    pub(super) counters: Counters,
    pub(super) meter: Meter,
    /// Laggards among this shard's sessions.
    pub(super) laggards: u64,
    /// Sessions whose cursor is short of their room's latest.
    pub(super) behind: u64,
    /// Sessions that did not get every PRIORITY message of their room.
    pub(super) short_of_priority: u64,
    /// Every session caught up before the drain limit.
    pub(super) drained: bool,
}

/// A simulated client in one room: only what a client keeps.
#[derive(Debug)]
struct SimSession {
    /// The latest of each delta taken, or the cursor of each pull answer.
    cursor: Cursor,
    room: u32,
    /// PRIORITY messages received.
    priority: u32,
    laggard: bool,
    /// A laggard's socket still holds the frame before.
    busy: bool,
}

impl SimSession {
    /// Whether the session's socket takes a push. A laggard's is busy with
    /// the frame before on every other push, and msg-svc refuses a push to a
    /// backed-up socket.
    fn takes_push(&mut self) -> bool {
        if self.laggard {
            self.busy = !self.busy;
            self.busy
        } else {
            true
        }
    }
}

/// What a delta carries, as the client finds it in the frame.
#[derive(Debug)]
struct Carried {
    since: Cursor,
    latest: Cursor,
    messages: [u64; LANES],
    dropped: [u64; LANES],
    /// Each message's ts, which is also its payload's stamp.
    stamps: Vec<u64>,
}

/// A frame a round hands out.
#[derive(Debug)]
struct BuiltFrame {
    bytes: Bytes,
    /// The delta inside; `None` for a plain Notify.
    carried: Option<Carried>,
    /// Recipients whose latency is not recorded yet.
    unrecorded: Cell<u64>,
}

/// msg-svc's round source, over a simulated room.
struct SimSource<'a> {
    room: &'a SimRoom,
    fanout: &'a FanoutConfig,
    latest: Cursor,
}

impl<'a> SimSource<'a> {
    fn new(room: &'a SimRoom, fanout: &'a FanoutConfig) -> Self {
        let latest = room.read_ring().latest();
        Self {
            room,
            fanout,
            latest,
        }
    }

    fn head(&self) -> Notify {
        Notify {
            room_id: self.room.id.clone(),
            latest: Some(self.latest),
            delta: None,
            member_count: self.room.members,
        }
    }
}

impl RoundSource for SimSource<'_> {
    type Frame = Rc<BuiltFrame>;

    fn latest(&self) -> Cursor {
        self.latest
    }

    fn delta(&mut self, since: &Cursor) -> Option<Rc<BuiltFrame>> {
        let ring = self.room.read_ring();
        let (bytes, selection) = ring.delta_frame(
            &self.head(),
            since,
            self.fanout.max_delta_messages,
            self.fanout.inline_max,
        )?;
        let mut messages = [0; LANES];
        for entry in &selection.entries {
            messages[entry.lane as usize] += 1;
        }
        let carried = Carried {
            since: *since,
            latest: self.latest,
            messages,
            dropped: [selection.dropped, selection.dropped_priority],
            stamps: selection.entries.iter().map(|entry| entry.ts).collect(),
        };
        Some(Rc::new(BuiltFrame {
            bytes,
            carried: Some(carried),
            unrecorded: Cell::new(0),
        }))
    }

    fn plain(&mut self) -> Rc<BuiltFrame> {
        Rc::new(BuiltFrame {
            bytes: plain_notify_frame(&self.head()),
            carried: None,
            unrecorded: Cell::new(0),
        })
    }
}

/// What one round handed out, and the deliveries not yet in the histogram.
#[derive(Debug, Default)]
struct Handed {
    bytes: u64,
    unrecorded: Vec<Rc<BuiltFrame>>,
    since_flush: u64,
}

impl Handed {
    fn delivered(&mut self, frame: &Rc<BuiltFrame>, clock: &SimClock, meter: &mut Meter) {
        let before = frame.unrecorded.get();
        if before == 0 {
            self.unrecorded.push(Rc::clone(frame));
        }
        frame.unrecorded.set(before + 1);
        self.since_flush += 1;
        if self.since_flush >= FLUSH_EVERY {
            self.flush(clock.now_us(), meter);
        }
    }

    fn flush(&mut self, now_us: u64, meter: &mut Meter) {
        for frame in self.unrecorded.drain(..) {
            let recipients = frame.unrecorded.replace(0);
            if let Some(carried) = &frame.carried {
                meter.deliveries(now_us, carried.stamps.iter().copied(), recipients);
            }
        }
        self.since_flush = 0;
    }
}

/// A fan-out thread's state.
#[derive(Debug)]
pub(super) struct Shard<'a> {
    index: usize,
    shards: usize,
    rooms: &'a [SimRoom],
    clock: SimClock,
    fanout: FanoutConfig,
    drain_limit: Duration,
    notifier: Notifier<u32, u32>,
    /// By local index: session id = local × shards + shard index.
    sessions: Vec<SimSession>,
    /// Laggards' pulls, due one round after their Notify, oldest first.
    deferred: VecDeque<(u64, u32)>,
    /// Pulls to make once the due rounds have run.
    immediate: Vec<u32>,
    counts: Vec<RoomCounts>,
    counters: Counters,
    meter: Meter,
    next_request_id: u64,
    /// What the last pull returned: (ts, lane) per message.
    pulled: Vec<(u64, Lane)>,
}

impl<'a> Shard<'a> {
    /// Creates shard `index`'s sessions (every id ≡ index mod shards) and
    /// joins each to its room at the room's current position.
    pub(super) fn new(index: usize, plan: &Plan, rooms: &'a [SimRoom], clock: SimClock) -> Self {
        let starts: Vec<Cursor> = rooms.iter().map(|r| r.read_ring().latest()).collect();
        let mut notifier = Notifier::new();
        let mut sessions =
            Vec::with_capacity(plan.users.saturating_sub(index).div_ceil(plan.shards));
        let (mut room, mut room_end) = (0, plan.sizes[0]);
        for id in (index..plan.users).step_by(plan.shards) {
            while id >= room_end {
                room += 1;
                room_end += plan.sizes[room];
            }
            // Session and room counts are clamped to u32 by the plan.
            let local = sessions.len() as u32;
            let laggard = is_laggard(id, plan.laggards);
            sessions.push(SimSession {
                cursor: starts[room],
                room: room as u32,
                priority: 0,
                laggard,
                busy: false,
            });
            notifier.join(
                room as u32,
                plan.fanout.round,
                id as SessionId,
                local,
                starts[room],
            );
        }
        Self {
            index,
            shards: plan.shards,
            rooms,
            clock,
            fanout: plan.fanout,
            drain_limit: plan.drain_limit(),
            notifier,
            sessions,
            deferred: VecDeque::new(),
            immediate: Vec::new(),
            counts: vec![RoomCounts::default(); rooms.len()],
            counters: Counters::default(),
            meter: Meter::new(plan.window),
            next_request_id: 0,
            pulled: Vec::new(),
        }
    }

    /// Runs rounds and pulls as they fall due until the stamper has finished
    /// and every session has caught up (or the drain limit passed).
    pub(super) fn run(mut self, rx: &Receiver<ShardCmd>) -> ShardOutcome {
        let mut drain_until: Option<u64> = None;
        let drained = loop {
            let now = self.clock.now_ms();
            let wake = self.next_wakeup();
            if let Some(until) = drain_until {
                // Nothing due any more: every member is at its room's latest.
                if wake.is_none() {
                    break true;
                }
                if now >= until {
                    break false;
                }
            }
            let received = match wake {
                Some(at) if at <= now => rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
                Some(at) => rx.recv_timeout(Duration::from_millis(at - now)),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let mut command = match received {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                // The stamper holds the senders until every shard has
                // stopped, so it is gone only if it panicked: stop at once.
                Err(RecvTimeoutError::Disconnected) => break false,
            };
            let mut taken = 0;
            while let Some(cmd) = command.take() {
                match cmd {
                    ShardCmd::Start(start_us) => self.meter.start(start_us),
                    ShardCmd::Dirty(rooms) => {
                        for room in rooms.iter() {
                            self.notifier.mark_dirty(room);
                        }
                    }
                    ShardCmd::Finished => {
                        let limit = self.drain_limit.as_millis() as u64;
                        drain_until = Some(self.clock.now_ms() + limit);
                    }
                }
                taken += 1;
                if taken < DRAIN_BATCH {
                    command = rx.try_recv().ok();
                }
            }
            self.work();
        };
        self.finish(drained)
    }

    fn next_wakeup(&self) -> Option<u64> {
        let pull = self.deferred.front().map(|&(at, _)| at);
        match (self.notifier.next_wakeup(), pull) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the laggards' pulls that are due, the due rounds, then the pulls
    /// their plain notifies asked for.
    fn work(&mut self) {
        let began = Instant::now();
        let now_ms = self.clock.now_ms();
        while let Some(&(at, local)) = self.deferred.front() {
            if at > now_ms {
                break;
            }
            self.deferred.pop_front();
            self.pull(local);
        }
        for room in self.notifier.due(now_ms) {
            self.round(room, now_ms);
        }
        let mut immediate = std::mem::take(&mut self.immediate);
        for &local in &immediate {
            self.pull(local);
        }
        immediate.clear();
        self.immediate = immediate;
        self.meter.busy(self.clock.now_us(), began.elapsed());
    }

    fn round(&mut self, room: u32, now_ms: u64) {
        let now_us = self.clock.now_us();
        let Self {
            rooms,
            clock,
            fanout,
            notifier,
            sessions,
            deferred,
            immediate,
            counts,
            counters,
            meter,
            ..
        } = self;
        let mut source = SimSource::new(&rooms[room as usize], fanout);
        let counts = &mut counts[room as usize];
        let mut handed = Handed::default();
        let stats: RoundStats = notifier.round(&room, now_ms, &mut source, |action| {
            let (local, frame) = match action {
                Action::Deliver(&local, frame) | Action::Notify(&local, frame) => (local, frame),
                Action::Kick(_) => {
                    counters.kicked += 1;
                    return Delivery::Accepted;
                }
            };
            let session = &mut sessions[local as usize];
            if !session.takes_push() {
                counters.refused += 1;
                return Delivery::Refused;
            }
            handed.bytes += frame.bytes.len() as u64;
            match &frame.carried {
                Some(carried) if carried.since == session.cursor => {
                    session.cursor = carried.latest;
                    session.priority += carried.messages[PRIORITY] as u32;
                    counts.take(carried);
                    handed.delivered(frame, clock, meter);
                }
                // A plain Notify, or a delta the client cannot apply: pull,
                // as the client does when it learns it is behind.
                carried => {
                    counters.stale_deltas += u64::from(carried.is_some());
                    if session.laggard {
                        deferred.push_back((now_ms + fanout.round.interval_ms, local));
                    } else {
                        immediate.push(local);
                    }
                }
            }
            Delivery::Accepted
        });
        handed.flush(clock.now_us(), meter);
        meter.round(now_us, &stats, handed.bytes);
    }

    /// The client's pull after a Notify, through msg-svc's pull path, then
    /// the shard told of it as the handler tells msg-svc's shard.
    fn pull(&mut self, local: u32) {
        let id = (local as usize * self.shards + self.index) as SessionId;
        loop {
            let session = &mut self.sessions[local as usize];
            let room = &self.rooms[session.room as usize];
            let before = session.cursor;
            self.next_request_id += 1;
            let (bytes, cursor, more, dropped) = {
                let ring = room.read_ring();
                let (frame, selection) = ring.pull_frame(
                    self.next_request_id,
                    &room.id,
                    &before,
                    self.fanout.pull_limit,
                );
                self.pulled.clear();
                self.pulled
                    .extend(selection.entries.iter().map(|entry| (entry.ts, entry.lane)));
                (
                    frame.len() as u64,
                    selection.cursor,
                    selection.more,
                    [selection.dropped, selection.dropped_priority],
                )
            };
            let now_us = self.clock.now_us();
            let counts = &mut self.counts[session.room as usize];
            for &(_, lane) in &self.pulled {
                counts.delivered[lane as usize] += 1;
                session.priority += u32::from(lane == Lane::Priority);
            }
            for (lane, dropped) in dropped.into_iter().enumerate() {
                counts.dropped[lane] += dropped;
            }
            self.meter
                .deliveries(now_us, self.pulled.iter().map(|&(ts, _)| ts), 1);
            self.meter.pull(now_us, bytes);
            self.counters.pulls += 1;
            session.cursor = cursor;
            let now_ms = self.clock.now_ms();
            self.notifier
                .pulled(&session.room, id, cursor, more && cursor != before, now_ms);
            // Pull again only on progress, as the client does.
            if !more || cursor == before {
                return;
            }
        }
    }

    /// Checks every session against its room's final position.
    fn finish(self, drained: bool) -> ShardOutcome {
        let latest: Vec<Cursor> = self.rooms.iter().map(|r| r.read_ring().latest()).collect();
        let (mut laggards, mut behind, mut short_of_priority) = (0, 0, 0);
        for session in &self.sessions {
            let room = latest[session.room as usize];
            laggards += u64::from(session.laggard);
            behind += u64::from(session.cursor.msg_id != room.msg_id);
            // The stream's PRIORITY messages: all of them minus the NORMAL ones.
            let priority = room.msg_id - room.normal_seq;
            short_of_priority += u64::from(u64::from(session.priority) != priority);
        }
        ShardOutcome {
            rooms: self.counts,
            counters: self.counters,
            meter: self.meter,
            laggards,
            behind,
            short_of_priority,
            drained,
        }
    }
}
