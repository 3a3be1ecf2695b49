//! The rooms' side of the simulation: each room's senders and notices at
//! the scenario's rates, decided and stamped by room-svc's own room core
//! (limits included), appended to the room's ring and the room marked dirty
//! in every shard, as msg-svc's downlink does with a Broadcast.
//!
//! Every lane of every room is a stream at a steady rate, phase-shifted so
//! rooms do not all fire at once. A wake-up sends whatever is due and then
//! one Dirty per shard for the rooms it touched (a Broadcast may carry
//! several messages, too).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatroom_cluster::auth::Roles;
use chatroom_proto::v1::{Kind, Lane};
use msg_svc::ring::Appended;
use room_svc::core::{Accepted, NodeIdx, RoomState, SendInput};

use super::shard::ShardCmd;
use super::{EPOCH, SimClock, SimRoom, SimSpec};
use crate::harness::stats::RoomTally;
use crate::harness::wire;

/// Who the simulated chat is from.
const SENDER: &str = "simulated-sender";
/// Who the simulated notices are from (a `system` user, as the bots use).
const NOTIFIER: &str = "simulated-system";

/// Most messages stamped before the shards hear of them, when the stamper
/// has fallen behind its schedule.
const STAMP_BATCH: usize = 1_024;

/// What the rooms decided.
#[derive(Debug)]
pub(super) struct Stamped {
    /// Per room: messages accepted per lane, sends refused by code.
    pub(super) rooms: Vec<RoomTally>,
    /// Messages the rings evicted to make room.
    pub(super) evicted: u64,
}

/// One lane of one room at a steady rate.
#[derive(Debug, Clone, Copy)]
struct Stream {
    room: usize,
    lane: Lane,
    period_ns: u64,
    first_ns: u64,
}

/// Sends the scenario's messages to the rooms for the measured phase.
pub(super) struct Stamper<'a> {
    rooms: &'a [SimRoom],
    clock: SimClock,
    payload_bytes: usize,
    streams: Vec<Stream>,
    cores: Vec<RoomState>,
    stamped: Stamped,
}

impl<'a> Stamper<'a> {
    pub(super) fn new(rooms: &'a [SimRoom], spec: &SimSpec, clock: SimClock) -> Self {
        let mut streams = Vec::new();
        for (room, plan) in spec.rooms.iter().enumerate() {
            let periods = [
                (
                    Lane::Normal,
                    (plan.rate.is_finite() && plan.rate > 0.0).then(|| (1e9 / plan.rate) as u64),
                ),
                (
                    Lane::Priority,
                    (plan.notice_every_ms > 0).then(|| plan.notice_every_ms * 1_000_000),
                ),
            ];
            for (lane, period) in periods {
                if let Some(period_ns) = period {
                    let period_ns = period_ns.max(1);
                    // Golden-ratio phases spread the streams' first messages
                    // evenly over one period.
                    let phase = ((streams.len() + 1) as f64 * 0.618_033_988_7).fract();
                    streams.push(Stream {
                        room,
                        lane,
                        period_ns,
                        first_ns: (phase * period_ns as f64) as u64,
                    });
                }
            }
        }
        let cores = rooms
            .iter()
            .map(|room| {
                let mut core =
                    RoomState::new(Arc::from(room.id.as_str()), EPOCH, spec.room.clone());
                let present = [SENDER.to_owned(), NOTIFIER.to_owned()];
                core.apply_membership(NodeIdx(0), &present, &[]);
                core
            })
            .collect();
        Self {
            rooms,
            clock,
            payload_bytes: spec.payload_bytes.max(8),
            streams,
            cores,
            stamped: Stamped {
                rooms: vec![RoomTally::default(); rooms.len()],
                evicted: 0,
            },
        }
    }

    /// Sends for `window`, telling `shards` of each batch.
    pub(super) fn run(mut self, shards: &[SyncSender<ShardCmd>], window: Duration) -> Stamped {
        let end = window.as_nanos() as u64;
        let mut due: BinaryHeap<Reverse<(u64, usize)>> = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, stream)| stream.first_ns < end)
            .map(|(index, stream)| Reverse((stream.first_ns, index)))
            .collect();
        let started = Instant::now();
        let elapsed = || started.elapsed().as_nanos() as u64;
        let mut touched: Vec<u32> = Vec::new();
        loop {
            let now = elapsed();
            while let Some(&Reverse((at, index))) = due.peek() {
                if at > now || touched.len() >= STAMP_BATCH {
                    break;
                }
                due.pop();
                let stream = self.streams[index];
                if self.send(stream.room, stream.lane) {
                    // Room indexes fit in u32: there are no more rooms than users.
                    touched.push(stream.room as u32);
                }
                let next = at + stream.period_ns;
                if next < end {
                    due.push(Reverse((next, index)));
                }
            }
            if !touched.is_empty() {
                touched.sort_unstable();
                touched.dedup();
                let rooms: Arc<[u32]> = touched.drain(..).collect();
                for tx in shards {
                    // A shard that is gone panicked; the run re-raises that.
                    let _ = tx.send(ShardCmd::Dirty(Arc::clone(&rooms)));
                }
            }
            let next = due.peek().map_or(end, |&Reverse((at, _))| at);
            let now = elapsed();
            if due.is_empty() && now >= end {
                return self.stamped;
            }
            thread::sleep(Duration::from_nanos(next.saturating_sub(now)));
        }
    }

    /// Sends one message to `room` as the scenario's bots would: chat from
    /// a member, notices from a `system` user. Returns whether the room
    /// accepted it (and it is in the ring).
    fn send(&mut self, room: usize, lane: Lane) -> bool {
        let now = self.clock.now();
        let (sender, roles, kind) = match lane {
            Lane::Normal => (SENDER, Roles::default(), Kind::Chat),
            Lane::Priority => (
                NOTIFIER,
                Roles {
                    system: true,
                    ..Roles::default()
                },
                Kind::Notice,
            ),
        };
        let send = SendInput {
            sender: sender.to_owned(),
            roles,
            room_roles: Default::default(),
            sender_info: None,
            client_msg_id: 0,
            kind: kind as i32,
            payload: Bytes::from(wire::stamped_payload(now.unix_us, self.payload_bytes)),
        };
        let tally = &mut self.stamped.rooms[room];
        let message = match self.cores[room].accept(send, now) {
            Ok(Accepted::New(message)) => message,
            // Dedupe is off (client_msg_id 0): there are no retries; and
            // the simulation runs no moderation hook.
            Ok(Accepted::Duplicate(_) | Accepted::Held(_)) => return false,
            Err(error) => {
                tally.refuse(error.code);
                return false;
            }
        };
        match self.rooms[room].write_ring().append(&message) {
            Appended::Stored { evicted } => {
                tally.accepted[message.lane as usize] += 1;
                self.stamped.evicted += evicted;
                true
            }
            // Impossible with ids that only grow; a stale message is not
            // accepted, so the accounting would not expect it either.
            Appended::Stale => false,
        }
    }
}
