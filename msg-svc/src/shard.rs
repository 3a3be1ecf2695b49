//! Fan-out shards: each owns the notifier state of a share of the sessions
//! (by session id) and runs their rooms' rounds. Shards run in parallel on
//! the runtime's workers; within a shard everything is sequential, so the
//! notifier needs no lock.
//!
//! Commands arrive on a bounded channel. Senders wait at the bound (joins,
//! pulls and broadcasts then slow down); the shard never waits on them.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use chatroom_cluster::time;
use chatroom_proto::compose::plain_notify_frame;
use chatroom_proto::v1::{Cursor, KickReason, Lane, Notify};
use tokio::sync::mpsc;
use tracing::debug;

use crate::metrics::RoundMetrics;
use crate::notifier::{Action, Notifier, RoundConfig, RoundSource, SessionId};
use crate::room::{LocalRoom, RoomKey, Taken};
use crate::session::{Session, Urgency};

/// Commands a shard takes.
#[derive(Debug)]
pub(crate) enum ShardCmd {
    /// A session joined a room at a cursor.
    Join {
        room: RoomKey,
        config: RoundConfig,
        session: Arc<Session>,
        cursor: Cursor,
    },
    /// A session left a room.
    Leave { room: RoomKey, session: SessionId },
    /// A session pulled from `since` (`None`: a cursor the room reset) up
    /// to `cursor`; `more` waited after it. The pull handed it `taken`, the
    /// messages `entries` (number and lane): what it had been handed (or
    /// told it missed) already is not counted again in the room's stats.
    Pulled {
        room: RoomKey,
        session: SessionId,
        since: Option<Cursor>,
        cursor: Cursor,
        more: bool,
        taken: Taken,
        entries: Vec<(u64, Lane)>,
    },
    /// New messages in a room.
    Dirty(RoomKey),
    /// A room's timing changed.
    Config { room: RoomKey, config: RoundConfig },
    /// A room was closed.
    Forget(RoomKey),
}

/// Commands a shard drains before running its due rounds.
const DRAIN_BATCH: usize = 4_096;

/// A shard's handle.
pub(crate) type ShardTx = mpsc::Sender<ShardCmd>;

/// Starts a shard task, adding each round's stats to `metrics`; it ends
/// when every sender is dropped.
pub(crate) fn spawn(queue: usize, limits: FrameLimits, metrics: RoundMetrics) -> ShardTx {
    let (tx, rx) = mpsc::channel(queue);
    let shard = Shard {
        notifier: Notifier::new(),
        rx,
        limits,
        metrics,
    };
    tokio::spawn(shard.run());
    tx
}

/// How large a delta a round may inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLimits {
    /// Most messages in one delta (the pull cap).
    pub(crate) max_messages: usize,
}

struct Shard {
    notifier: Notifier<RoomKey, Arc<Session>>,
    rx: mpsc::Receiver<ShardCmd>,
    limits: FrameLimits,
    metrics: RoundMetrics,
}

impl Shard {
    async fn run(mut self) {
        loop {
            let wake_at = self.notifier.next_wakeup().map(time::instant_at);
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => return,
                },
                () = sleep_until(wake_at), if wake_at.is_some() => {}
            }
            for _ in 0..DRAIN_BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => self.apply(cmd),
                    Err(_) => break,
                }
            }
            let now = time::mono_millis();
            for room in self.notifier.due(now) {
                self.round(&room, now);
            }
        }
    }

    fn apply(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Join {
                room,
                config,
                session,
                cursor,
            } => {
                let id = session.id;
                self.notifier.join(room, config, id, session, cursor);
            }
            ShardCmd::Leave { room, session } => {
                self.notifier.leave(&room, session);
            }
            ShardCmd::Pulled {
                room,
                session,
                since,
                cursor,
                more,
                taken,
                entries,
            } => {
                let now = time::mono_millis();
                let handed = self.notifier.pulled(&room, session, cursor, more, now);
                let taken = match handed.filter(|handed| handed.epoch == cursor.epoch) {
                    // Counted from where the member was handed everything,
                    // or from where the pull began if that is later (what
                    // lies between, the client chose to pass over).
                    Some(handed) => {
                        let from = since
                            .filter(|since| {
                                since.epoch == cursor.epoch && since.msg_id > handed.msg_id
                            })
                            .unwrap_or(handed);
                        Taken::beyond(&entries, from, cursor)
                    }
                    None => taken,
                };
                room.0.downstream.handed(taken, 1);
            }
            ShardCmd::Dirty(room) => self.notifier.mark_dirty(&room),
            ShardCmd::Config { room, config } => self.notifier.set_config(&room, config),
            ShardCmd::Forget(room) => self.notifier.forget(&room),
        }
    }

    fn round(&mut self, room: &RoomKey, now: u64) {
        let mut source = RingSource::new(&room.0, self.limits);
        let stats = self
            .notifier
            .round(room, now, &mut source, |action| match action {
                Action::Deliver(session, frame) => {
                    let delivery = session.send(0, &frame.bytes, Urgency::Push);
                    if delivery == crate::notifier::Delivery::Accepted {
                        frame.handed.set(frame.handed.get() + 1);
                    }
                    delivery
                }
                Action::Notify(session, frame) => session.send(0, &frame.bytes, Urgency::Push),
                Action::Kick(session) => {
                    session.kick(
                        KickReason::SlowConsumer,
                        "slow consumer: notifications left unanswered",
                    );
                    crate::notifier::Delivery::Accepted
                }
            });
        self.metrics.count(&stats);
        let downstream = &room.0.downstream;
        for (taken, handed) in source.built {
            downstream.handed(taken, handed.get());
        }
        if stats.kicked > 0 {
            downstream.kicked(u64::from(stats.kicked));
        }
        if stats.kicked > 0 || stats.refused > 0 {
            debug!(room = %room.0.id, ?stats, "round");
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Builds a round's frames from the room's ring, taking the ring's read lock
/// only while building, never while writing to sockets.
struct RingSource<'a> {
    room: &'a LocalRoom,
    latest: Cursor,
    member_count: u64,
    inline_max: usize,
    limits: FrameLimits,
    /// The deltas built so far, with what each hands and how many took it.
    built: Vec<(Taken, Rc<Cell<u64>>)>,
}

impl<'a> RingSource<'a> {
    fn new(room: &'a LocalRoom, limits: FrameLimits) -> Self {
        let (member_count, inline_max) = {
            let lifecycle = room.lifecycle();
            (
                lifecycle.member_count(),
                lifecycle.config().inline_max_bytes as usize,
            )
        };
        Self {
            room,
            latest: room.ring.read().latest(),
            member_count,
            inline_max,
            limits,
            built: Vec::new(),
        }
    }

    fn head(&self) -> Notify {
        Notify {
            room_id: self.room.id.to_string(),
            latest: Some(self.latest),
            delta: None,
            member_count: self.member_count,
        }
    }
}

/// A round's frame, and (for a delta) how many members took it.
#[derive(Debug)]
struct RoundFrame {
    bytes: Bytes,
    handed: Rc<Cell<u64>>,
}

impl RoundSource for RingSource<'_> {
    type Frame = RoundFrame;

    fn latest(&self) -> Cursor {
        self.latest
    }

    fn delta(&mut self, since: &Cursor) -> Option<RoundFrame> {
        let ring = self.room.ring.read();
        let (bytes, selection) = ring.delta_frame(
            &self.head(),
            since,
            self.limits.max_messages,
            self.inline_max,
        )?;
        let handed = Rc::new(Cell::new(0));
        self.built.push((Taken::of(&selection), Rc::clone(&handed)));
        Some(RoundFrame { bytes, handed })
    }

    fn plain(&mut self) -> RoundFrame {
        RoundFrame {
            bytes: plain_notify_frame(&self.head()),
            handed: Rc::default(),
        }
    }
}
