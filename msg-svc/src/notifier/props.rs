//! Property tests of the [`Notifier`]: generated joins, leaves, messages,
//! new epochs, pulls, backed-up sockets and time, with rounds run whenever
//! the notifier says a room is due (as a shard does), checked against the
//! rules in the module's documentation.

use std::collections::{BTreeMap, HashSet};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

const ROOMS: u8 = 2;
const SESSIONS: u64 = 5;

#[derive(Debug, Clone)]
enum Op {
    /// A session joins a room at the newest position, `behind` messages
    /// before it, or at another epoch's position.
    Join {
        room: u8,
        session: u64,
        behind: u64,
        other_epoch: bool,
    },
    Leave {
        room: u8,
        session: u64,
    },
    /// Messages arrive in a room.
    Messages {
        room: u8,
        count: u64,
    },
    /// The room's stream is rebuilt under a new epoch.
    NewEpoch {
        room: u8,
    },
    /// A session pulls, up to `short` messages short of the newest.
    Pull {
        room: u8,
        session: u64,
        short: u64,
    },
    /// A session's socket backs up or drains.
    BackUp {
        session: u64,
        backed_up: bool,
    },
    /// Time passes; the due rooms run their rounds.
    Tick(u64),
    /// The shard sleeps until the notifier's next wakeup, then runs the
    /// due rooms' rounds.
    Sleep,
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0..ROOMS;
    let session = 0..SESSIONS;
    let behind = prop_oneof![Just(0), 0..20u64];
    prop_oneof![
        2 => (room.clone(), session.clone(), behind, prop::bool::weighted(0.1))
            .prop_map(|(room, session, behind, other_epoch)| Op::Join {
                room,
                session,
                behind,
                other_epoch,
            }),
        1 => (room.clone(), session.clone())
            .prop_map(|(room, session)| Op::Leave { room, session }),
        4 => (room.clone(), 1..8u64).prop_map(|(room, count)| Op::Messages { room, count }),
        1 => room.clone().prop_map(|room| Op::NewEpoch { room }),
        3 => (room, session.clone(), prop_oneof![Just(0), 0..5u64])
            .prop_map(|(room, session, short)| Op::Pull { room, session, short }),
        1 => (session, prop::bool::weighted(0.3))
            .prop_map(|(session, backed_up)| Op::BackUp { session, backed_up }),
        4 => prop_oneof![0..150u64, 0..3_000u64].prop_map(Op::Tick),
        3 => Just(Op::Sleep),
    ]
}

fn config() -> impl Strategy<Value = RoundConfig> {
    (10..300u64, 100..1_000u64, 1..4u32).prop_map(
        |(interval_ms, pull_timeout_ms, slow_consumer_notifies)| RoundConfig {
            interval_ms,
            pull_timeout_ms,
            slow_consumer_notifies,
        },
    )
}

/// A room's stream as a round sees it; inlines gaps up to `inline_max`.
struct Source {
    latest: Cursor,
    inline_max: u64,
    /// The cursors deltas were asked for this round.
    asked: Vec<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Delta { since: u64, upto: u64 },
    Plain,
}

impl RoundSource for Source {
    type Frame = Frame;

    fn latest(&self) -> Cursor {
        self.latest
    }

    fn delta(&mut self, since: &Cursor) -> Option<Frame> {
        self.asked.push(*since);
        inlinable(since, &self.latest, self.inline_max).then_some(Frame::Delta {
            since: since.msg_id,
            upto: self.latest.msg_id,
        })
    }

    fn plain(&mut self) -> Frame {
        Frame::Plain
    }
}

fn inlinable(since: &Cursor, latest: &Cursor, inline_max: u64) -> bool {
    since.epoch == latest.epoch && latest.msg_id - since.msg_id <= inline_max
}

fn behind(cursor: &Cursor, latest: &Cursor) -> bool {
    cursor.epoch != latest.epoch || cursor.msg_id < latest.msg_id
}

/// A member as the rules say the notifier must see it.
#[derive(Debug)]
struct Member {
    cursor: Cursor,
    /// When the unanswered notify (or refused frame) went out.
    waiting: Option<u64>,
    unanswered: u32,
    /// When this membership was last handed a frame.
    last_frame: Option<u64>,
}

#[derive(Debug)]
struct Room {
    config: RoundConfig,
    latest: Cursor,
    inline_max: u64,
    members: BTreeMap<u64, Member>,
    /// When the interval since the last round ends.
    next_round_at: u64,
}

impl Room {
    /// When `member` is owed a frame, if it is behind: at the next round,
    /// or, while it waits for a pull, at the first round after its pull
    /// timeout.
    fn owed_at(&self, member: &Member) -> Option<u64> {
        if !behind(&member.cursor, &self.latest) {
            return None;
        }
        let ready = member
            .waiting
            .map_or(0, |at| at + self.config.pull_timeout_ms);
        Some(ready.max(self.next_round_at))
    }
}

/// What one member got in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Delta,
    Notify,
    Kick,
}

/// Runs a round of room `key` at `now`, checks what each member got
/// against the rules and moves the model on.
fn round(
    notifier: &mut Notifier<u8, u64>,
    rooms: &mut BTreeMap<u8, Room>,
    backed_up: &HashSet<u64>,
    key: u8,
    now: u64,
) -> Result<(), TestCaseError> {
    let room = rooms.get_mut(&key).expect("a due room is a room");
    let mut source = Source {
        latest: room.latest,
        inline_max: room.inline_max,
        asked: Vec::new(),
    };
    let mut got: Vec<(u64, Got, Delivery)> = Vec::new();
    let stats = notifier.round(&key, now, &mut source, |action| {
        let (session, what) = match action {
            Action::Deliver(&session, frame) => {
                assert_eq!(
                    *frame,
                    Frame::Delta {
                        since: room.members[&session].cursor.msg_id,
                        upto: room.latest.msg_id
                    },
                    "the delta for the member's own cursor"
                );
                (session, Got::Delta)
            }
            Action::Notify(&session, frame) => {
                assert_eq!(*frame, Frame::Plain);
                (session, Got::Notify)
            }
            Action::Kick(&session) => (session, Got::Kick),
        };
        let delivery = if backed_up.contains(&session) && what != Got::Kick {
            Delivery::Refused
        } else {
            Delivery::Accepted
        };
        got.push((session, what, delivery));
        delivery
    });

    // A delta is built once per distinct cursor.
    let distinct: HashSet<(u64, u64)> = source.asked.iter().map(|c| (c.epoch, c.msg_id)).collect();
    prop_assert_eq!(distinct.len(), source.asked.len(), "a delta built twice");

    let sessions: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
    let once: HashSet<u64> = sessions.iter().copied().collect();
    prop_assert_eq!(
        once.len(),
        sessions.len(),
        "two frames in one round: {:?}",
        got
    );

    let mut expected_stats = RoundStats::default();
    let latest = room.latest;
    let config = room.config;
    let mut kicked = Vec::new();
    for (&session, member) in &mut room.members {
        let action = got.iter().find(|(s, _, _)| *s == session);
        if !behind(&member.cursor, &latest) {
            prop_assert!(action.is_none(), "{session} at the latest got {action:?}");
            continue;
        }
        let expected = match member.waiting {
            Some(at) if now < at + config.pull_timeout_ms => {
                expected_stats.suppressed += 1;
                prop_assert!(action.is_none(), "{session} pulling got {action:?}");
                continue;
            }
            Some(_) if member.unanswered >= config.slow_consumer_notifies => Got::Kick,
            Some(_) => Got::Notify,
            None if inlinable(&member.cursor, &latest, room.inline_max) => Got::Delta,
            None => Got::Notify,
        };
        let Some((_, what, delivery)) = action else {
            return Err(TestCaseError::fail(format!(
                "lost wake-up: {session} behind and due got nothing at {now}"
            )));
        };
        prop_assert_eq!(what, &expected, "{}", session);
        if *what == Got::Kick {
            expected_stats.kicked += 1;
            kicked.push(session);
            continue;
        }
        if let Some(last) = member.last_frame {
            prop_assert!(
                now >= last + config.interval_ms,
                "{} got frames at {} and {}, interval {}",
                session,
                last,
                now,
                config.interval_ms
            );
        }
        member.last_frame = Some(now);
        // A first frame bundles every message it is behind by but one.
        let bundled = if member.waiting.is_none() && member.cursor.epoch == latest.epoch {
            latest.msg_id - member.cursor.msg_id - 1
        } else {
            0
        };
        match (what, delivery) {
            (Got::Delta, Delivery::Accepted) => {
                expected_stats.delivered += 1;
                expected_stats.coalesced += bundled;
                member.cursor = latest;
                member.unanswered = 0;
                continue;
            }
            (_, Delivery::Refused) => expected_stats.refused += 1,
            (_, Delivery::Accepted) => {
                expected_stats.notified += 1;
                expected_stats.coalesced += bundled;
            }
        }
        member.waiting = Some(now);
        member.unanswered += 1;
    }
    prop_assert!(
        got.iter().all(|(s, _, _)| room.members.contains_key(s)),
        "a frame for a non-member: {:?}",
        got
    );
    for session in kicked {
        room.members.remove(&session);
    }
    room.next_round_at = now + config.interval_ms;
    // Built: each distinct cursor's delta, and one plain notify if any.
    let plain = got.iter().any(|(_, what, _)| *what == Got::Notify);
    expected_stats.frames_built = (source.asked.len() + usize::from(plain)) as u32;
    prop_assert_eq!(stats, expected_stats);
    if room.members.is_empty() {
        rooms.remove(&key);
    }
    Ok(())
}

/// Runs the rounds due at `now`, as a shard does; after them no member is
/// left owed a frame.
fn run_due(
    notifier: &mut Notifier<u8, u64>,
    rooms: &mut BTreeMap<u8, Room>,
    backed_up: &HashSet<u64>,
    now: u64,
) -> Result<(), TestCaseError> {
    let mut due = notifier.due(now);
    due.sort_unstable();
    for key in due {
        round(notifier, rooms, backed_up, key, now)?;
    }
    for (key, room) in rooms.iter() {
        for (session, member) in &room.members {
            if let Some(at) = room.owed_at(member) {
                prop_assert!(
                    at > now,
                    "lost wake-up: {} in room {} owed since {}, now {}",
                    session,
                    key,
                    at,
                    now
                );
            }
        }
    }
    Ok(())
}

fn run(configs: Vec<(RoundConfig, u64)>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut notifier: Notifier<u8, u64> = Notifier::new();
    // Every room's stream, whether or not it has members here.
    let mut streams: Vec<Cursor> = (0..ROOMS)
        .map(|r| Cursor::start(u64::from(r) * 100))
        .collect();
    let mut rooms: BTreeMap<u8, Room> = BTreeMap::new();
    let mut backed_up = HashSet::new();
    let mut now = 0;
    for op in ops {
        match op {
            Op::Join {
                room: key,
                session,
                behind,
                other_epoch,
            } => {
                let latest = streams[usize::from(key)];
                let cursor = match other_epoch {
                    true => Cursor {
                        epoch: latest.epoch + 50,
                        ..latest
                    },
                    false => Cursor {
                        msg_id: latest.msg_id.saturating_sub(behind),
                        ..latest
                    },
                };
                let (config, inline_max) = configs[usize::from(key)];
                notifier.join(key, config, session, session, cursor);
                let room = rooms.entry(key).or_insert_with(|| Room {
                    config,
                    latest,
                    inline_max,
                    members: BTreeMap::new(),
                    next_round_at: 0,
                });
                room.members.insert(
                    session,
                    Member {
                        cursor,
                        waiting: None,
                        unanswered: 0,
                        last_frame: None,
                    },
                );
            }
            Op::Leave { room: key, session } => {
                let was = rooms
                    .get_mut(&key)
                    .is_some_and(|room| room.members.remove(&session).is_some());
                prop_assert_eq!(notifier.leave(&key, session), was);
                if rooms.get(&key).is_some_and(|room| room.members.is_empty()) {
                    rooms.remove(&key);
                }
            }
            Op::Messages { room: key, count } => {
                let stream = &mut streams[usize::from(key)];
                stream.msg_id += count;
                stream.ts += count;
                if let Some(room) = rooms.get_mut(&key) {
                    room.latest = *stream;
                }
                notifier.mark_dirty(&key);
            }
            Op::NewEpoch { room: key } => {
                let stream = &mut streams[usize::from(key)];
                *stream = Cursor {
                    epoch: stream.epoch + 1,
                    ts: stream.ts + 1,
                    msg_id: 1,
                    normal_seq: 1,
                };
                if let Some(room) = rooms.get_mut(&key) {
                    room.latest = *stream;
                }
                notifier.mark_dirty(&key);
            }
            Op::Pull {
                room: key,
                session,
                short,
            } => {
                let latest = streams[usize::from(key)];
                let cursor = Cursor {
                    msg_id: latest.msg_id.saturating_sub(short),
                    ..latest
                };
                // Short of the newest: more waits, and the member pulls on.
                let more = short > 0;
                notifier.pulled(&key, session, cursor, more, now);
                if let Some(member) = rooms
                    .get_mut(&key)
                    .and_then(|room| room.members.get_mut(&session))
                {
                    if cursor.epoch != member.cursor.epoch || cursor.msg_id > member.cursor.msg_id {
                        member.cursor = cursor;
                    }
                    member.waiting = more.then_some(now);
                    member.unanswered = 0;
                }
            }
            Op::BackUp {
                session,
                backed_up: on,
            } => {
                match on {
                    true => backed_up.insert(session),
                    false => backed_up.remove(&session),
                };
            }
            Op::Tick(ms) => {
                now += ms;
                run_due(&mut notifier, &mut rooms, &backed_up, now)?;
            }
            Op::Sleep => {
                now = notifier.next_wakeup().map_or(now, |at| at.max(now));
                run_due(&mut notifier, &mut rooms, &backed_up, now)?;
            }
        }
        // The shard sleeps until the next wakeup: it must come no later
        // than the earliest moment a member is owed a frame.
        let owed = rooms
            .values()
            .flat_map(|room| room.members.values().filter_map(|m| room.owed_at(m)))
            .min();
        if let Some(owed) = owed {
            let wakeup = notifier.next_wakeup();
            prop_assert!(
                wakeup.is_some_and(|at| at <= owed),
                "wakes at {:?}, a member is owed at {}",
                wakeup,
                owed
            );
        }
        for key in 0..ROOMS {
            let members = rooms.get(&key).map_or(0, |room| room.members.len());
            prop_assert_eq!(notifier.member_count(&key), members);
        }
    }
    Ok(())
}

proptest! {
    /// For any interleaving of joins, leaves, messages, new epochs, pulls,
    /// backed-up sockets and time, with rounds run when due:
    ///
    /// - a member gets at most one frame per round, none while at the
    ///   newest position or waiting out its pull timeout, and frames of one
    ///   membership are at least the round interval apart;
    /// - no lost wake-up: a member behind and not waiting for a pull gets a
    ///   frame (an inline delta when it fits, else a notify) at the room's
    ///   next round, a member waiting past its pull timeout is notified
    ///   again or, after the allowed unanswered notifies, kicked; the
    ///   notifier's next wakeup is never later than that;
    /// - each distinct cursor's delta is built once per round, the plain
    ///   notify at most once, and the round's stats (coalesced messages
    ///   included) count what it did.
    #[test]
    fn notifies_at_most_once_per_round_and_never_loses_a_wake_up(
        configs in vec((config(), 0..10u64), usize::from(ROOMS)),
        ops in vec(op(), 1..100),
    ) {
        run(configs, ops)?;
    }
}
