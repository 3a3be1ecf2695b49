//! Property tests of [`RoomRing`]: generated broadcasts (some never
//! received, some replayed), resizes and readers pulling or taking inline
//! deltas from arbitrary cursors, checked against a model of what each lane
//! must hold and what each reader is owed.

use std::collections::VecDeque;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

const EPOCH: u64 = 77;
const LANES: [Lane; 2] = [Lane::Normal, Lane::Priority];

#[derive(Debug, Clone)]
enum Op {
    /// The room stamps a message and the ring gets it.
    Push(Lane),
    /// The room stamps a message this node never gets (a broadcast lost
    /// while resubscribing).
    Miss(Lane),
    /// A stamped message arrives again (a replay after a resubscribe).
    Replay(Index),
    /// The owner says the room is at its newest message.
    Observe,
    /// The room's ring capacities change.
    Resize { normal: usize, priority: usize },
    /// A reader starts at the newest position, the start, another reader's
    /// cursor or another epoch's.
    Join(Start),
    /// A reader pulls up to `limit` messages.
    Pull { reader: Index, limit: usize },
    /// A round offers a reader an inline delta up to the newest position or
    /// an older one (the round began before the last appends).
    Delta {
        reader: Index,
        upto: Option<Index>,
        max_messages: usize,
        inline_max: usize,
    },
}

#[derive(Debug, Clone)]
enum Start {
    Latest,
    Beginning,
    Like(Index),
    OtherEpoch,
    /// A cursor the room never handed out, made from a message's.
    Forged(Index, Forgery),
}

/// How a forged cursor lies.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// Past the room's newest position.
    Ahead,
    /// More NORMAL messages than messages.
    MoreNormal,
    /// Another time than the message's.
    OtherTs,
    /// One NORMAL message fewer than the message's.
    FewerNormal,
}

fn lane() -> impl Strategy<Value = Lane> {
    prop_oneof![3 => Just(Lane::Normal), 1 => Just(Lane::Priority)]
}

fn op() -> impl Strategy<Value = Op> {
    let start = prop_oneof![
        Just(Start::Latest),
        Just(Start::Beginning),
        any::<Index>().prop_map(Start::Like),
        Just(Start::OtherEpoch),
        (
            any::<Index>(),
            prop_oneof![
                Just(Forgery::Ahead),
                Just(Forgery::MoreNormal),
                Just(Forgery::OtherTs),
                Just(Forgery::FewerNormal),
            ]
        )
            .prop_map(|(at, how)| Start::Forged(at, how)),
    ];
    prop_oneof![
        12 => lane().prop_map(Op::Push),
        1 => lane().prop_map(Op::Miss),
        1 => any::<Index>().prop_map(Op::Replay),
        1 => Just(Op::Observe),
        1 => (0..6usize, 1..5usize).prop_map(|(normal, priority)| Op::Resize { normal, priority }),
        2 => start.prop_map(Op::Join),
        4 => (any::<Index>(), 0..6usize).prop_map(|(reader, limit)| Op::Pull { reader, limit }),
        3 => (
            any::<Index>(),
            prop::option::weighted(0.3, any::<Index>()),
            1..6usize,
            prop_oneof![Just(0), Just(usize::MAX), 0..200usize],
        )
            .prop_map(|(reader, upto, max_messages, inline_max)| Op::Delta {
                reader,
                upto,
                max_messages,
                inline_max,
            }),
    ]
}

/// One reader: where it started, where it is, and what it was handed per
/// lane (messages, and messages it was told it skipped).
#[derive(Debug)]
struct Reader {
    start: Cursor,
    cursor: Cursor,
    got: [u64; 2],
    skipped: [u64; 2],
    /// Its cursor is one the room never handed out.
    forged: bool,
}

/// A cursor the room never handed out, made from one of `model`'s
/// messages (or its newest position).
fn forge(model: &Model, at: &Index, how: Forgery) -> Cursor {
    let honest = match model.stream.len() {
        0 => model.latest,
        n => Cursor::after(EPOCH, &model.stream[at.index(n)]),
    };
    match how {
        Forgery::Ahead => Cursor {
            msg_id: model.latest.msg_id + 1,
            normal_seq: model.latest.normal_seq + 1,
            ts: model.latest.ts + 1,
            ..model.latest
        },
        Forgery::OtherTs => Cursor {
            ts: honest.ts + 1,
            ..honest
        },
        Forgery::FewerNormal if honest.normal_seq > 0 => Cursor {
            normal_seq: honest.normal_seq - 1,
            ..honest
        },
        Forgery::MoreNormal | Forgery::FewerNormal => Cursor {
            normal_seq: honest.msg_id + 1,
            ..honest
        },
    }
}

/// Whether the ring can tell that `since` was never handed out: it is
/// ahead of the room, has more NORMAL messages than messages, or differs
/// from the position of a message the ring holds (or of the newest).
fn detectably_forged(model: &Model, since: &Cursor) -> bool {
    if since.msg_id > model.latest.msg_id || since.normal_seq > since.msg_id {
        return true;
    }
    let truth = match since.msg_id {
        0 => Some(Cursor::start(EPOCH)),
        id => model
            .stream
            .iter()
            .find(|msg| msg.msg_id == id)
            .map(|msg| Cursor::after(EPOCH, msg)),
    };
    let checkable = since.msg_id == model.latest.msg_id || model.holds(since.msg_id);
    checkable && truth.is_some_and(|truth| truth != *since)
}

/// What the ring must hold: each lane's newest stored messages, by msg_id.
struct Model {
    /// Every message the room stamped, in order.
    stream: Vec<ChatMessage>,
    /// Per lane (NORMAL, PRIORITY): the msg_ids held, oldest first.
    held: [VecDeque<u64>; 2],
    capacity: [usize; 2],
    /// The largest capacity each lane was given.
    peak: [usize; 2],
    /// Messages appended (not stale), and how many of them were evicted.
    stored: [u64; 2],
    evicted: [u64; 2],
    /// The newest position the ring was given.
    latest: Cursor,
}

impl Model {
    fn stamp(&mut self, lane: Lane) -> ChatMessage {
        let (msg_id, normal_seq) = self
            .stream
            .last()
            .map_or((0, 0), |m| (m.msg_id, m.normal_seq));
        let msg = ChatMessage {
            msg_id: msg_id + 1,
            ts: 1_000 + (msg_id + 1) * 10,
            normal_seq: normal_seq + u64::from(lane == Lane::Normal),
            sender: "s".into(),
            lane: lane as i32,
            kind: 0,
            payload: Bytes::from_static(b"hi"),
            client_msg_id: 0,
            sender_info: None,
        };
        self.stream.push(msg.clone());
        msg
    }

    fn store(&mut self, msg: &ChatMessage) -> u64 {
        let lane = msg.lane as usize;
        self.held[lane].push_back(msg.msg_id);
        self.stored[lane] += 1;
        self.latest = Cursor::after(EPOCH, msg);
        self.trim(lane)
    }

    fn trim(&mut self, lane: usize) -> u64 {
        let excess = self.held[lane].len().saturating_sub(self.capacity[lane]);
        self.held[lane].drain(..excess);
        self.evicted[lane] += excess as u64;
        excess as u64
    }

    fn holds(&self, msg_id: u64) -> bool {
        self.held.iter().any(|lane| lane.contains(&msg_id))
    }

    /// Messages of `lane` after `since` up to `upto`.
    fn between(&self, lane: Lane, since: u64, upto: u64) -> impl Iterator<Item = &ChatMessage> {
        self.stream
            .iter()
            .filter(move |m| m.lane == lane as i32 && m.msg_id > since && m.msg_id <= upto)
    }
}

/// Checks a selection from `since` up to `upto` with `limit` against what
/// the ring holds, then moves `reader` on and adds what it was handed.
fn check_selection(
    model: &Model,
    reader: &mut Reader,
    sel: &Selection<'_>,
    limit: usize,
    upto: Cursor,
) -> Result<(), TestCaseError> {
    let since = reader.cursor;
    let forged = reader.forged;
    if forged && detectably_forged(model, &since) {
        prop_assert!(
            sel.reset,
            "{:?}, never handed out, taken at its word",
            since
        );
    } else if !forged {
        prop_assert_eq!(sel.reset, since.epoch != EPOCH);
    }
    let from = if sel.reset { 0 } else { since.msg_id };
    let limit = limit.max(1);
    prop_assert!(sel.entries.len() <= limit);
    prop_assert!(sel.entries.windows(2).all(|w| w[0].ts < w[1].ts));
    prop_assert!(
        sel.entries
            .iter()
            .all(|e| e.msg_id > from && e.msg_id <= sel.cursor.msg_id)
    );

    // What the ring holds in the window, per lane, oldest first.
    let window = |lane: Lane| -> Vec<u64> {
        model
            .between(lane, from, upto.msg_id)
            .map(|m| m.msg_id)
            .filter(|&id| model.holds(id))
            .collect()
    };
    let returned = |lane: Lane| -> Vec<u64> {
        sel.entries
            .iter()
            .filter(|e| e.lane == lane)
            .map(|e| e.msg_id)
            .collect()
    };
    let (normal, priority) = (window(Lane::Normal), window(Lane::Priority));
    if from >= upto.msg_id {
        prop_assert!(sel.entries.is_empty() && !sel.more);
        prop_assert_eq!(sel.cursor.msg_id, from);
    } else if normal.len() + priority.len() <= limit {
        prop_assert_eq!(returned(Lane::Normal), normal);
        prop_assert_eq!(returned(Lane::Priority), priority);
        prop_assert_eq!(sel.cursor, upto);
        prop_assert!(!sel.more);
    } else if priority.len() >= limit {
        // Priority first, oldest first, paged.
        prop_assert_eq!(returned(Lane::Priority), &priority[..limit]);
        prop_assert!(returned(Lane::Normal).is_empty());
        prop_assert_eq!(sel.cursor.msg_id, priority[limit - 1]);
        prop_assert!(sel.more);
    } else {
        // All priority, then the newest NORMAL that fit.
        prop_assert_eq!(returned(Lane::Priority), priority.clone());
        let keep = limit - priority.len();
        prop_assert_eq!(returned(Lane::Normal), &normal[normal.len() - keep..]);
        prop_assert_eq!(sel.cursor, upto);
        prop_assert!(!sel.more);
    }

    let skipped = [sel.dropped, sel.dropped_priority];
    if sel.reset {
        // Another epoch's cursor cannot be counted from: start afresh.
        prop_assert_eq!(skipped, [0, 0]);
        *reader = Reader {
            start: sel.cursor,
            cursor: sel.cursor,
            got: [0, 0],
            skipped: [0, 0],
            forged: false,
        };
        return Ok(());
    }
    if forged {
        // A forgery the ring cannot tell from a real position (nothing it
        // holds is near it): what it is owed cannot be said either. The
        // reader goes on from where it was handed to (still the forgery,
        // when nothing came after it yet).
        *reader = Reader {
            start: sel.cursor,
            cursor: sel.cursor,
            got: [0, 0],
            skipped: [0, 0],
            forged: sel.cursor == since,
        };
        return Ok(());
    }
    for lane in LANES {
        let owed: Vec<&ChatMessage> = model.between(lane, from, sel.cursor.msg_id).collect();
        let given = returned(lane).len() as u64;
        prop_assert_eq!(
            given + skipped[lane as usize],
            owed.len() as u64,
            "{:?} after {} up to {}",
            lane,
            from,
            sel.cursor.msg_id
        );
        if lane == Lane::Priority {
            // Priority is skipped only when the ring no longer (or never)
            // had it: never for running past a limit.
            let gone = owed.iter().filter(|m| !model.holds(m.msg_id)).count();
            prop_assert_eq!(sel.dropped_priority, gone as u64);
        }
        reader.got[lane as usize] += given;
        reader.skipped[lane as usize] += skipped[lane as usize];
    }
    reader.cursor = sel.cursor;
    Ok(())
}

/// The reader's totals: every message after its start up to its cursor was
/// handed to it or counted as skipped, per lane.
fn check_reader(model: &Model, reader: &Reader) -> Result<(), TestCaseError> {
    for lane in LANES {
        let owed = model
            .between(lane, reader.start.msg_id, reader.cursor.msg_id)
            .count() as u64;
        let i = lane as usize;
        prop_assert_eq!(reader.got[i] + reader.skipped[i], owed, "{:?}", lane);
    }
    Ok(())
}

fn check_ring(model: &Model, ring: &RoomRing) -> Result<(), TestCaseError> {
    for lane in LANES {
        let i = lane as usize;
        let ring_lane = ring.lane(lane);
        let held: Vec<u64> = ring_lane.entries.iter().map(|e| e.msg_id).collect();
        prop_assert!(held.len() <= model.capacity[i], "{:?} over capacity", lane);
        prop_assert_eq!(&held, &Vec::from(model.held[i].clone()), "{:?} holds", lane);
        prop_assert_eq!(ring.evicted(lane), model.evicted[i]);
        prop_assert_eq!(ring.evicted(lane) + held.len() as u64, model.stored[i]);
        // A shrink keeps the allocation, a push goes one over before the
        // trim: the memory follows the largest capacity ever given.
        let allocated = ring_lane.entries.capacity();
        prop_assert!(
            allocated <= 2 * (model.peak[i] + 1) + 4,
            "{allocated} allocated"
        );
    }
    prop_assert_eq!(ring.latest(), model.latest);
    Ok(())
}

fn run(capacity: (usize, usize), ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut ring = RoomRing::new(Cursor::start(EPOCH), capacity.0, capacity.1);
    let mut model = Model {
        stream: Vec::new(),
        held: [VecDeque::new(), VecDeque::new()],
        capacity: [capacity.0, capacity.1],
        peak: [capacity.0, capacity.1],
        stored: [0, 0],
        evicted: [0, 0],
        latest: Cursor::start(EPOCH),
    };
    let mut readers: Vec<Reader> = Vec::new();
    for op in ops {
        match op {
            Op::Push(lane) => {
                let msg = model.stamp(lane);
                let evicted = model.store(&msg);
                prop_assert_eq!(ring.append(&msg), Appended::Stored { evicted });
            }
            Op::Miss(lane) => {
                model.stamp(lane);
            }
            Op::Replay(which) if !model.stream.is_empty() => {
                let msg = model.stream[which.index(model.stream.len())].clone();
                let appended = ring.append(&msg);
                if msg.msg_id <= model.latest.msg_id {
                    prop_assert_eq!(appended, Appended::Stale);
                } else {
                    let evicted = model.store(&msg);
                    prop_assert_eq!(appended, Appended::Stored { evicted });
                }
            }
            Op::Replay(_) => {}
            Op::Observe => {
                if let Some(newest) = model.stream.last() {
                    model.latest = Cursor::after(EPOCH, newest);
                    ring.observe(model.latest);
                }
            }
            Op::Resize { normal, priority } => {
                ring.resize(normal, priority);
                model.capacity = [normal, priority];
                for i in 0..2 {
                    model.peak[i] = model.peak[i].max(model.capacity[i]);
                    model.trim(i);
                }
            }
            Op::Join(start) => {
                let (at, forged) = match start {
                    Start::Latest => (ring.latest(), false),
                    Start::Beginning => (Cursor::start(EPOCH), false),
                    Start::Like(other) if !readers.is_empty() => {
                        let other = &readers[other.index(readers.len())];
                        (other.cursor, other.forged)
                    }
                    Start::Like(_) => (ring.latest(), false),
                    Start::OtherEpoch => (
                        Cursor {
                            epoch: EPOCH + 1,
                            ..ring.latest()
                        },
                        false,
                    ),
                    Start::Forged(at, how) => (forge(&model, &at, how), true),
                };
                readers.push(Reader {
                    start: at,
                    cursor: at,
                    got: [0, 0],
                    skipped: [0, 0],
                    forged,
                });
                // A joiner's backfill: the newest of both lanes, in order.
                let recent: Vec<u64> = ring.recent(3).iter().map(|e| e.msg_id).collect();
                let mut all: Vec<u64> = model.held.iter().flatten().copied().collect();
                all.sort_unstable();
                prop_assert_eq!(recent, &all[all.len().saturating_sub(3)..]);
            }
            Op::Pull { reader, limit } if !readers.is_empty() => {
                let count = readers.len();
                let reader = &mut readers[reader.index(count)];
                let (_, sel) = ring.pull_frame(1, "room", &reader.cursor, limit);
                check_selection(&model, reader, &sel, limit, ring.latest())?;
                check_reader(&model, reader)?;
            }
            Op::Delta {
                reader,
                upto,
                max_messages,
                inline_max,
            } if !readers.is_empty() => {
                let count = readers.len();
                let reader = &mut readers[reader.index(count)];
                let upto = match upto {
                    Some(at) if !model.stream.is_empty() => {
                        let msg = &model.stream[at.index(model.stream.len())];
                        if msg.msg_id <= ring.latest().msg_id {
                            Cursor::after(EPOCH, msg)
                        } else {
                            ring.latest()
                        }
                    }
                    _ => ring.latest(),
                };
                let head = Notify {
                    room_id: "room".into(),
                    latest: Some(upto),
                    delta: None,
                    member_count: 1,
                };
                let since = reader.cursor;
                match ring.delta_frame(&head, &since, max_messages, inline_max) {
                    Some((_, sel)) => {
                        prop_assert!(!sel.reset && !sel.more);
                        prop_assert!(inline_max > 0 && sel.encoded_len() <= inline_max);
                        check_selection(&model, reader, &sel, max_messages, upto)?;
                        check_reader(&model, reader)?;
                    }
                    None => {
                        let sel = ring.select(&since, max_messages, Some(&upto));
                        let inlinable = inline_max > 0 && sel.encoded_len() <= inline_max;
                        prop_assert!(sel.reset || sel.more || !inlinable, "not inlined");
                    }
                }
            }
            Op::Pull { .. } | Op::Delta { .. } => {}
        }
        check_ring(&model, &ring)?;
    }
    // Every reader catches up: everything after its start was handed to it
    // or counted as skipped.
    for reader in &mut readers {
        loop {
            let (_, sel) = ring.pull_frame(1, "room", &reader.cursor, 4);
            check_selection(&model, reader, &sel, 4, ring.latest())?;
            if !sel.more {
                break;
            }
        }
        prop_assert_eq!(reader.cursor, ring.latest());
        check_reader(&model, reader)?;
    }
    Ok(())
}

proptest! {
    /// For any interleaving of broadcasts to both lanes (received, missed
    /// or replayed), resizes and readers at arbitrary cursors:
    ///
    /// - lanes bounded: each lane holds exactly its newest `capacity`
    ///   stored messages, its evictions are the stored messages beyond
    ///   that, and its allocation follows the largest capacity it was given;
    /// - accounting exact: each pull or inline delta hands over what the
    ///   ring's rule says (all priority first, then the newest NORMAL), and
    ///   every message after the reader's cursor up to its new one is
    ///   handed or counted as skipped in its lane; priority is skipped only
    ///   when the ring does not hold it; a reader that catches up has been
    ///   handed or told of every message after its start, per lane;
    /// - cursors answered truthfully: one the room never handed out (ahead
    ///   of it, with more NORMAL messages than messages, or contradicting
    ///   the message the ring holds at its msg_id) is reset, never taken at
    ///   its word, so no count is made from it.
    #[test]
    fn lanes_are_bounded_and_accounting_is_exact(
        capacity in (0..6usize, 1..5usize),
        ops in vec(op(), 1..80),
    ) {
        run(capacity, ops)?;
    }
}
