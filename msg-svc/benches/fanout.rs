//! The fan-out cores on their own: ring append and pull, and one notifier
//! round over 100,000 sessions. `cargo bench -p msg-svc`.

use std::hint::black_box;

use bytes::Bytes;
use chatroom_proto::compose::pull_result_frame;
use chatroom_proto::v1::{ChatMessage, Cursor, Lane, PullResult};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use msg_svc::notifier::{Action, Delivery, Notifier, RoundConfig, RoundSource};
use msg_svc::ring::RoomRing;

const EPOCH: u64 = 1;

fn message(msg_id: u64) -> ChatMessage {
    ChatMessage {
        msg_id,
        ts: 1_700_000_000_000_000 + msg_id,
        normal_seq: msg_id,
        sender: "viewer-123456".into(),
        lane: Lane::Normal as i32,
        kind: 0,
        payload: Bytes::from_static(b"a chat line of typical length, say sixty bytes or so!!"),
        client_msg_id: msg_id,
        sender_info: None,
    }
}

fn full_ring() -> RoomRing {
    let mut ring = RoomRing::new(Cursor::start(EPOCH), 512, 256);
    for id in 1..=512 {
        ring.append(&message(id));
    }
    ring
}

fn ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_evicting", |b| {
        let mut ring = full_ring();
        let mut id = 512;
        b.iter(|| {
            id += 1;
            black_box(ring.append(&message(id)));
        });
    });
    let ring = full_ring();
    let since = Cursor {
        epoch: EPOCH,
        ts: 1_700_000_000_000_000 + 462,
        msg_id: 462,
        normal_seq: 462,
    };
    group.throughput(Throughput::Elements(50));
    group.bench_function("pull_50_and_encode", |b| {
        b.iter(|| {
            let selection = ring.select(black_box(&since), 100, None);
            let head = PullResult {
                room_id: "giant".into(),
                cursor: Some(selection.cursor),
                dropped: selection.dropped,
                ..PullResult::default()
            };
            black_box(pull_result_frame(7, &head, selection.encoded()))
        });
    });
    group.finish();
}

/// A room whose frames are prebuilt: the round's own cost is what is measured.
struct Prebuilt {
    latest: Cursor,
    frame: Bytes,
}

impl RoundSource for Prebuilt {
    type Frame = Bytes;

    fn latest(&self) -> Cursor {
        self.latest
    }

    fn delta(&mut self, _since: &Cursor) -> Option<Bytes> {
        Some(self.frame.clone())
    }

    fn plain(&mut self) -> Bytes {
        self.frame.clone()
    }
}

const SESSIONS: u64 = 100_000;
const CONFIG: RoundConfig = RoundConfig {
    interval_ms: 100,
    pull_timeout_ms: 2_000,
    slow_consumer_notifies: 5,
};

fn at(msg_id: u64) -> Cursor {
    Cursor {
        epoch: EPOCH,
        ts: msg_id,
        msg_id,
        normal_seq: msg_id,
    }
}

fn notifier_with(cursors: u64) -> Notifier<u32, u64> {
    let mut notifier = Notifier::new();
    for session in 0..SESSIONS {
        notifier.join(0, CONFIG, session, session, at(1 + session % cursors));
    }
    notifier
}

fn notifier(c: &mut Criterion) {
    let mut group = c.benchmark_group("notifier_round");
    group.throughput(Throughput::Elements(SESSIONS));
    group.sample_size(20);
    for cursors in [1, 16] {
        group.bench_function(format!("100k_sessions_{cursors}_cursors"), |b| {
            let mut latest = 1_000;
            b.iter_batched_ref(
                || notifier_with(cursors),
                |notifier| {
                    latest += 1;
                    let mut source = Prebuilt {
                        latest: at(latest),
                        frame: Bytes::from_static(&[0; 300]),
                    };
                    let mut frames = 0u64;
                    let stats = notifier.round(&0, 0, &mut source, |action| {
                        if let Action::Deliver(_, frame) = action {
                            frames += frame.len() as u64;
                        }
                        Delivery::Accepted
                    });
                    black_box((stats, frames))
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, ring, notifier);
criterion_main!(benches);
