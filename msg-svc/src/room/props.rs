//! Property tests of a room's downstream accounting on one node: what its
//! ring evicts through subscriptions, broadcasts and new settings, and what
//! reaches the owner in reports, some of which fail to go out.

use std::collections::VecDeque;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use chatroom_proto::cluster::v1::{RoomConfig, RoomReport, RoomUpdate, SubscribeAck};
use chatroom_proto::v1::{ChatMessage, Cursor, Lane};

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// The owner's SubscribeAck: its newest position, ring sizes and the
    /// last `history` messages; the stream may have been rebuilt under a
    /// new epoch first.
    Activate {
        new_epoch: bool,
        history: usize,
        normal: u32,
        priority: u32,
    },
    /// A broadcast of messages in these lanes.
    Broadcast(Vec<Lane>),
    /// New ring sizes.
    Reconfigure {
        normal: u32,
        priority: u32,
    },
    /// A frame handed `taken` to `members` members.
    Handed {
        taken: Taken,
        members: u64,
    },
    Kicked(u64),
    /// A report is taken and sent, or fails to go out and is put back.
    Report {
        sent: bool,
    },
}

fn lane() -> impl Strategy<Value = Lane> {
    prop_oneof![3 => Just(Lane::Normal), 1 => Just(Lane::Priority)]
}

fn op() -> impl Strategy<Value = Op> {
    let sizes = (0..5u32, 1..4u32);
    prop_oneof![
        1 => (prop::bool::weighted(0.3), 0..6usize, sizes.clone()).prop_map(
            |(new_epoch, history, (normal, priority))| Op::Activate {
                new_epoch,
                history,
                normal,
                priority,
            }
        ),
        4 => vec(lane(), 1..5).prop_map(Op::Broadcast),
        1 => sizes.prop_map(|(normal, priority)| Op::Reconfigure { normal, priority }),
        2 => ((0..5u64, 0..5u64, 0..3u64), 0..4u64).prop_map(|((messages, n, p), members)| {
            Op::Handed {
                taken: Taken {
                    messages,
                    skipped_normal: n,
                    skipped_priority: p,
                },
                members,
            }
        }),
        1 => (0..3u64).prop_map(Op::Kicked),
        2 => any::<bool>().prop_map(|sent| Op::Report { sent }),
    ]
}

/// The ring as the rules say it must be: per lane, the msg_ids held.
struct Model {
    epoch: u64,
    stream: Vec<ChatMessage>,
    /// Whether the room was activated, and for which epoch its ring is.
    live: bool,
    ring_epoch: u64,
    held: [VecDeque<u64>; 2],
    capacity: [usize; 2],
    /// The newest msg_id the ring has taken in.
    newest: u64,
}

impl Model {
    fn stamp(&mut self, lane: Lane) -> ChatMessage {
        let (msg_id, normal_seq) = self
            .stream
            .last()
            .map_or((0, 0), |m| (m.msg_id, m.normal_seq));
        let msg = ChatMessage {
            msg_id: msg_id + 1,
            ts: 1_000 + msg_id + 1,
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

    /// Trims both lanes to their capacity; what that evicted.
    fn trim(&mut self) -> Evicted {
        let mut evicted = [0; 2];
        for (lane, held) in self.held.iter_mut().enumerate() {
            let excess = held.len().saturating_sub(self.capacity[lane]);
            held.drain(..excess);
            evicted[lane] = excess as u64;
        }
        Evicted {
            normal: evicted[0],
            priority: evicted[1],
        }
    }

    /// Takes in messages newer than the ring's newest; what that evicted.
    fn take_in<'a>(&mut self, messages: impl Iterator<Item = &'a ChatMessage>) -> Evicted {
        let mut total = Evicted::default();
        for msg in messages
            .filter(|m| m.msg_id > self.newest)
            .collect::<Vec<_>>()
        {
            self.newest = msg.msg_id;
            self.held[msg.lane as usize].push_back(msg.msg_id);
            let evicted = self.trim();
            total.normal += evicted.normal;
            total.priority += evicted.priority;
        }
        total
    }
}

fn counts(report: &RoomReport) -> [u64; 6] {
    [
        report.delivered,
        report.skipped_normal,
        report.skipped_priority,
        report.evicted_normal,
        report.evicted_priority,
        report.slow_consumer_kicks,
    ]
}

fn add(total: &mut [u64; 6], more: [u64; 6]) {
    for (t, m) in total.iter_mut().zip(more) {
        *t += m;
    }
}

/// A room as the node drives it: its lifecycle, then the ring changes it
/// asks for.
struct Driven {
    lifecycle: RoomLifecycle<()>,
    ring: RoomRing,
    downstream: Downstream,
}

impl Driven {
    fn feed(&mut self, event: Event<()>) -> Evicted {
        self.lifecycle.handle(0, event);
        let mut evicted = Evicted::default();
        while let Some(op) = self.lifecycle.poll_ring() {
            let more = apply(&mut self.ring, op);
            evicted.normal += more.normal;
            evicted.priority += more.priority;
        }
        evicted
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let timers = Timers {
        subscribe_timeout: 1_000,
        grace: 1_000,
    };
    let mut room = Driven {
        lifecycle: RoomLifecycle::new(timers),
        ring: RoomRing::new(Cursor::default(), 0, 0),
        downstream: Downstream::default(),
    };
    let mut model = Model {
        epoch: 1,
        stream: Vec::new(),
        live: false,
        ring_epoch: 0,
        held: [VecDeque::new(), VecDeque::new()],
        capacity: [0, 0],
        newest: 0,
    };
    // What happened downstream, and what the owner was sent of it.
    let mut happened = [0; 6];
    let mut sent = [0; 6];
    for op in ops {
        let evicted = match op {
            Op::Activate {
                new_epoch,
                history,
                normal,
                priority,
            } => {
                if new_epoch {
                    model.epoch += 1;
                    model.stream.clear();
                }
                let latest = model.stream.last().map_or(Cursor::start(model.epoch), |m| {
                    Cursor::after(model.epoch, m)
                });
                let config = RoomConfig {
                    normal_ring: normal,
                    priority_ring: priority,
                    ..RoomConfig::default()
                };
                let history = model.stream[model.stream.len().saturating_sub(history)..].to_vec();
                let evicted = room.feed(Event::Subscribed(SubscribeAck {
                    room_id: "room".into(),
                    latest: Some(latest),
                    config: Some(config),
                    member_count: 1,
                    history: history.clone(),
                    fence: 0,
                    membership_seq: 0,
                }));
                // A ring not yet live, or of another stream, is replaced:
                // what it held was not evicted.
                if !model.live || model.ring_epoch != model.epoch {
                    model.held = [VecDeque::new(), VecDeque::new()];
                    model.newest = 0;
                    model.ring_epoch = model.epoch;
                }
                model.live = true;
                model.capacity = [normal as usize, priority as usize];
                let mut expected = model.trim();
                let more = model.take_in(history.iter());
                expected.normal += more.normal;
                expected.priority += more.priority;
                model.newest = model.newest.max(latest.msg_id);
                prop_assert_eq!(evicted, expected, "activate");
                Some(evicted)
            }
            // Broadcasts reach only an active room's ring.
            Op::Broadcast(lanes) if model.live => {
                let messages: Vec<ChatMessage> = lanes.iter().map(|&l| model.stamp(l)).collect();
                let evicted = room.feed(Event::Broadcast {
                    messages: messages.clone(),
                    fence: 0,
                });
                prop_assert_eq!(evicted, model.take_in(messages.iter()), "broadcast");
                Some(evicted)
            }
            Op::Broadcast(lanes) => {
                for lane in lanes {
                    model.stamp(lane);
                }
                None
            }
            Op::Reconfigure { normal, priority } => {
                let config = RoomConfig {
                    normal_ring: normal,
                    priority_ring: priority,
                    ..RoomConfig::default()
                };
                let evicted = room.feed(Event::Updated(RoomUpdate {
                    room_id: "room".into(),
                    config: Some(config),
                    member_count: 1,
                    closed: false,
                    membership_seq: 0,
                    fence: 0,
                }));
                model.capacity = [normal as usize, priority as usize];
                prop_assert_eq!(evicted, model.trim(), "reconfigure");
                Some(evicted)
            }
            Op::Handed { taken, members } => {
                room.downstream.handed(taken, members);
                add(
                    &mut happened,
                    [
                        taken.messages * members,
                        taken.skipped_normal * members,
                        taken.skipped_priority * members,
                        0,
                        0,
                        0,
                    ],
                );
                None
            }
            Op::Kicked(n) => {
                room.downstream.kicked(n);
                add(&mut happened, [0, 0, 0, 0, 0, n]);
                None
            }
            Op::Report { sent: ok } => {
                let report = room.downstream.take("room");
                let owed: Vec<u64> = (0..6).map(|i| happened[i] - sent[i]).collect();
                let anything = owed.iter().any(|&n| n > 0);
                prop_assert_eq!(report.is_some(), anything, "a report of {:?}", owed);
                if let Some(report) = &report {
                    prop_assert_eq!(report.room_id.as_str(), "room");
                    prop_assert_eq!(&counts(report)[..], &owed[..]);
                }
                if let Some(report) = report {
                    if ok {
                        add(&mut sent, counts(&report));
                    } else {
                        room.downstream.restore(&report);
                    }
                }
                None
            }
        };
        if let Some(evicted) = evicted {
            room.downstream.evicted(evicted);
            add(
                &mut happened,
                [0, 0, 0, evicted.normal, evicted.priority, 0],
            );
        }
        if model.live {
            let ring = &room.ring;
            prop_assert_eq!(ring.len(Lane::Normal), model.held[0].len());
            prop_assert_eq!(ring.len(Lane::Priority), model.held[1].len());
        }
    }
    let rest = room.downstream.take("room").map_or([0; 6], |r| counts(&r));
    add(&mut sent, rest);
    prop_assert_eq!(sent, happened, "every count reaches the owner exactly once");
    Ok(())
}

proptest! {
    /// For any sequence of subscriptions (to the same stream or a rebuilt
    /// one), broadcasts, new ring sizes, frames handed, kicks and reports
    /// that are sent or fail and are put back: each change reports exactly
    /// the entries its ring evicted (none for a ring replaced by a new
    /// stream's), each report carries exactly what happened since the last
    /// one sent, and in the end the owner has been told every count once.
    #[test]
    fn downstream_counts_reach_the_owner_exactly_once(ops in vec(op(), 1..60)) {
        run(ops)?;
    }
}
