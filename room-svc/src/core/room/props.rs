//! Property tests of [`RoomState`]: the stream a room stamps stays one
//! stream through refusals, retries, a wall clock that misbehaves and moves
//! to another owner that restores the room from a store lagging behind.

use std::collections::HashMap;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::core::config::default_room_config;
use crate::core::dedupe::DEDUPE_WINDOW_NS;
use chatroom_cluster::auth::RoomRoles;

const NODE: NodeIdx = NodeIdx(1);
const EPOCH: u64 = 42;
const MS_NS: u64 = 1_000_000;
/// Members; the last one is whitelisted.
const USERS: [&str; 3] = ["ann", "bob", "vip"];

#[derive(Debug, Clone)]
enum Op {
    /// The wall clock moves by this many µs (either way).
    Wall(i64),
    /// The monotonic clock moves on by this many ms.
    Wait(u64),
    /// A member sends; `client_msg_id` comes from a few values, so retries
    /// happen (0 turns dedupe off).
    Send {
        user: usize,
        privileged: bool,
        kind: i32,
        client_msg_id: u64,
    },
    /// An operator posts a notice.
    Notice,
    /// The room moves to another owner, which restores it from the store.
    /// The store's writes may lag `lag` messages behind, its position
    /// `position_lag` more (history and position are written apart). With
    /// a `subscriber`, the owner then takes in the position that node holds
    /// (every message broadcast so far); without one, the store is all
    /// there is, so the test keeps its history current (the position may
    /// still lag when the history holds the newest message).
    Move {
        lag: usize,
        position_lag: usize,
        subscriber: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (-5_000_000..5_000_000i64).prop_map(Op::Wall),
        2 => prop_oneof![0..500u64, 0..120_000u64].prop_map(Op::Wait),
        8 => (
            0..USERS.len(),
            prop::bool::weighted(0.1),
            prop::sample::select(vec![
                Kind::Chat as i32,
                Kind::Like as i32,
                Kind::Gift as i32,
                Kind::CustomMin as i32 + 7,
            ]),
            0..4u64,
        )
            .prop_map(|(user, privileged, kind, client_msg_id)| Op::Send {
                user,
                privileged,
                kind,
                client_msg_id,
            }),
        1 => Just(Op::Notice),
        1 => (0..4usize, 0..3usize, any::<bool>()).prop_map(|(lag, position_lag, subscriber)| {
            Op::Move {
                lag,
                position_lag,
                subscriber,
            }
        }),
    ]
}

/// Tight limits and a small history, so refusals and trimming happen.
fn config() -> impl Strategy<Value = RoomConfig> {
    (
        1..20u32,
        1..4u32,
        1..10u32,
        1..3u32,
        0..6u32,
        prop::sample::select(vec![0, 0, 300]),
    )
        .prop_map(
            |(normal_per_s, normal_burst, priority_per_s, priority_burst, history, slow_ms)| {
                RoomConfig {
                    normal_per_s,
                    normal_burst,
                    priority_per_s,
                    priority_burst,
                    history_size: history,
                    slow_mode_ms: slow_ms,
                    ..default_room_config()
                }
            },
        )
}

/// What the test knows the room must answer.
struct Model {
    config: RoomConfig,
    now: Now,
    /// Every message stamped, by every owner, in order.
    stream: Vec<ChatMessage>,
    /// What the store held after each write, oldest first.
    stored: Vec<PersistedRoom>,
    /// Acks of the current owner, by sender and client id, with when.
    acks: HashMap<(String, u64), (SendAck, u64)>,
    /// The current owner's last NORMAL post of each member.
    last_normal: HashMap<String, u64>,
    /// When the current owner accepted sends, NORMAL and PRIORITY.
    admitted: [Vec<u64>; 2],
}

impl Model {
    /// A new owner restoring `stored`; the fresh epoch it would start a
    /// stream with must not be used, since a position was stored.
    fn owner(&self, stored: PersistedRoom) -> RoomState {
        let mut room = RoomState::restore(
            "lobby".into(),
            EPOCH + 1_000 + self.stored.len() as u64,
            self.config.clone(),
            stored,
            self.now,
        );
        let users: Vec<String> = USERS.iter().map(|u| u.to_string()).collect();
        room.apply_membership(NODE, &users, &[]);
        room
    }

    fn persist(&mut self, room: &RoomState) {
        self.stored.push(PersistedRoom {
            latest: Some(room.latest()),
            whitelist: vec![USERS[2].to_owned()],
            history: room.history().cloned().collect(),
            ..PersistedRoom::default()
        });
    }

    fn seen(&self) -> Cursor {
        self.stream
            .last()
            .map_or(Cursor::start(EPOCH), |msg| Cursor::after(EPOCH, msg))
    }

    /// Records an accepted send and checks that the lane's limiter admitted
    /// no more than its burst plus its rate over any span ending now (with
    /// governor's emission interval, whole nanoseconds).
    fn admitted(&mut self, lane: Lane) -> Result<(), TestCaseError> {
        let (per_s, burst) = match lane {
            Lane::Normal => (self.config.normal_per_s, self.config.normal_burst),
            Lane::Priority => (self.config.priority_per_s, self.config.priority_burst),
        };
        let interval = 1_000_000_000 / u64::from(per_s);
        let now = self.now.mono_ns;
        let admitted = &mut self.admitted[lane as usize];
        admitted.push(now);
        for (i, &since) in admitted.iter().enumerate() {
            let count = (admitted.len() - i) as u64;
            let allowed = u64::from(burst) + (now - since) / interval;
            prop_assert!(
                count <= allowed,
                "{count} {lane:?} sends in {} ns",
                now - since
            );
        }
        Ok(())
    }

    /// Checks a newly stamped message against the stream so far and
    /// appends it.
    fn stamped(&mut self, msg: &ChatMessage) -> Result<(), TestCaseError> {
        let (msg_id, ts, normal_seq) = self
            .stream
            .last()
            .map_or((0, 0, 0), |m| (m.msg_id, m.ts, m.normal_seq));
        prop_assert_eq!(msg.msg_id, msg_id + 1, "msg_id skips or repeats");
        prop_assert!(msg.ts > ts, "ts {} after {}", msg.ts, ts);
        prop_assert!(msg.ts >= self.now.unix_us, "ts below the wall clock");
        let normal = u64::from(msg.lane() == Lane::Normal);
        prop_assert_eq!(msg.normal_seq, normal_seq + normal, "normal_seq");
        self.stream.push(msg.clone());
        Ok(())
    }
}

fn run(config: RoomConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model {
        config,
        now: Now {
            unix_us: 1_700_000_000_000_000,
            mono_ns: 0,
        },
        stream: Vec::new(),
        stored: Vec::new(),
        acks: HashMap::new(),
        last_normal: HashMap::new(),
        admitted: [Vec::new(), Vec::new()],
    };
    let mut room = RoomState::new("lobby".into(), EPOCH, model.config.clone());
    room.whitelist_add(USERS[2]).expect("a valid user id");
    let users: Vec<String> = USERS.iter().map(|u| u.to_string()).collect();
    room.apply_membership(NODE, &users, &[]);
    model.persist(&room);
    for op in ops {
        match op {
            Op::Wall(step) => {
                model.now.unix_us = model.now.unix_us.saturating_add_signed(step);
            }
            Op::Wait(ms) => model.now.mono_ns += ms * MS_NS,
            Op::Send {
                user,
                privileged,
                kind,
                client_msg_id,
            } => {
                let sender = USERS[user].to_owned();
                let roles = Roles {
                    admin: privileged,
                    system: false,
                };
                let send = SendInput {
                    sender: sender.clone(),
                    roles,
                    room_roles: RoomRoles::default(),
                    sender_info: None,
                    client_msg_id,
                    kind,
                    payload: Bytes::from_static(b"hi"),
                };
                let lane = room.lane_for(&sender, roles, kind);
                let key = (sender.clone(), client_msg_id);
                let remembered = model.acks.get(&key).filter(|(_, at)| {
                    client_msg_id != 0 && model.now.mono_ns - at < DEDUPE_WINDOW_NS
                });
                let slow_ns = u64::from(model.config.slow_mode_ms) * MS_NS;
                let slowed = lane == Lane::Normal
                    && model
                        .last_normal
                        .get(&sender)
                        .is_some_and(|&at| model.now.mono_ns < at + slow_ns);
                match (room.accept(send, model.now), remembered) {
                    (Ok(Accepted::Duplicate(ack)), Some((original, _))) => {
                        prop_assert_eq!(&ack, original, "a retry gets the original ack");
                    }
                    (result, Some(_)) => {
                        prop_assert!(false, "a retry within the window got {result:?}");
                    }
                    (Ok(Accepted::New(msg)), None) => {
                        prop_assert!(!slowed, "slow mode let {sender} post again");
                        prop_assert_eq!(msg.lane(), lane);
                        prop_assert_eq!(&msg.sender, &sender);
                        model.admitted(lane)?;
                        model.stamped(&msg)?;
                        model.persist(&room);
                        if client_msg_id != 0 {
                            let ack = ack_of(&msg);
                            model.acks.insert(key, (ack, model.now.mono_ns));
                        }
                        if lane == Lane::Normal && slow_ns > 0 {
                            model.last_normal.insert(sender, model.now.mono_ns);
                        }
                    }
                    (Ok(Accepted::Duplicate(ack)), None) => {
                        prop_assert!(false, "a first send was taken for a retry: {ack:?}");
                    }
                    (Ok(Accepted::Held(held)), _) => {
                        prop_assert!(false, "held without a hook: {held:?}");
                    }
                    (Err(error), None) => {
                        prop_assert_eq!(error.code, ErrorCode::RateLimited as i32);
                    }
                }
            }
            Op::Notice => {
                let msg = room
                    .post_notice("ops".into(), Bytes::from_static(b"notice"), model.now)
                    .expect("a small notice is always posted");
                prop_assert_eq!(msg.lane(), Lane::Priority);
                model.stamped(&msg)?;
                model.persist(&room);
            }
            Op::Move {
                lag,
                position_lag,
                subscriber,
            } => {
                let (lag, position_lag) = match subscriber {
                    true => (lag, position_lag),
                    false if model.config.history_size > 0 => (0, position_lag),
                    false => (0, 0),
                };
                let newest = model.stored.len() - 1;
                let at = newest.saturating_sub(lag);
                let position = model.stored[at.saturating_sub(position_lag)].latest;
                room = model.owner(PersistedRoom {
                    latest: position,
                    ..model.stored[at].clone()
                });
                if subscriber {
                    room.catch_up(&model.seen());
                }
                // Slow mode and limiters are the owner's memory; dedupe
                // is rebuilt from the stored history, as of the move.
                model.acks = room
                    .history()
                    .filter(|msg| msg.client_msg_id != 0)
                    .map(|msg| {
                        let key = (msg.sender.clone(), msg.client_msg_id);
                        (key, (ack_of(msg), model.now.mono_ns))
                    })
                    .collect();
                model.last_normal.clear();
                model.admitted = [Vec::new(), Vec::new()];
            }
        }
        prop_assert_eq!(room.epoch(), EPOCH, "the stream is never restarted");
        prop_assert_eq!(room.latest(), model.seen());
        let history: Vec<&ChatMessage> = room.history().collect();
        prop_assert!(history.len() <= model.config.history_size as usize);
        prop_assert!(history.windows(2).all(|w| w[0].msg_id < w[1].msg_id));
    }
    Ok(())
}

proptest! {
    /// Across refusals, retries, a wall clock that stands still, steps back
    /// or jumps, and moves to owners restoring from a lagging store: every
    /// stamped message has the next msg_id, a ts above the previous one and
    /// at or above the wall clock, and a normal_seq counting NORMAL
    /// messages; a retry within the dedupe window (of the send, or of a
    /// move for a message the new owner restored) gets the original ack
    /// and no new message; slow mode holds each member to one NORMAL post per
    /// interval; each lane's owner admits no more than its burst plus its
    /// rate over any span; the room's latest position is the last message
    /// stamped, and its history is bounded and in order.
    #[test]
    fn the_stream_stays_one_stream(config in config(), ops in vec(op(), 1..80)) {
        run(config, ops)?;
    }
}
