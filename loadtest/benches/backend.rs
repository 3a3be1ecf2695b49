//! What the app's backend costs a send: sends per second through a room
//! service and each send's send→ack time, with nothing in the way, with the
//! word filter (1,000 words), and with the moderation hook (a receiver on
//! loopback answering after 1 ms, then after 50 ms).
//!
//! `cargo bench -p loadtest --bench backend`; the hook is the harness's
//! (`--hook-delay-ms`), which checks every request's signature. Closed loop: a fixed number of
//! sends in flight over 16 rooms (at most the hook's per-room bound in each),
//! each answered send replaced by the next, so with a slow hook the rate is
//! what is in flight over the hook's time. Figures are printed, never
//! asserted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatroom_cluster::link::UpLink;
use chatroom_proto::cluster::v1::{
    Membership, SendRequest, Subscribe, ToRoomSvc, send_result, to_msg_svc, to_room_svc,
};
use chatroom_proto::v1::Kind;
use hdrhistogram::Histogram;
use loadtest::harness::hook::HookReceiver;
use room_svc::core::{ConfigPatch, FilterAction, WordList, default_room_config};
use room_svc::hooks::{HookConfig, SigningSecret};
use room_svc::{Backend, ConfigChange, RoomService, RoomServiceConfig};
use tokio::sync::mpsc;

const ROOMS: usize = 16;
const RUN: Duration = Duration::from_secs(5);

/// A chat line of about 100 bytes, none of the filter's words in it.
const TEXT: &str =
    "what a play that was, did you see the goalkeeper stretch for it? unbelievable save!!";

/// 1,000 words over a reject list and a mask list, none in [`TEXT`].
fn thousand_words() -> Vec<WordList> {
    let words = |prefix: &str| (0..500).map(|n| format!("{prefix}{n:03}x")).collect();
    vec![
        WordList {
            name: "reject".into(),
            action: FilterAction::Reject,
            words: words("zq"),
        },
        WordList {
            name: "mask".into(),
            action: FilterAction::Mask,
            words: words("qz"),
        },
    ]
}

struct Case {
    name: &'static str,
    hook_delay: Option<Duration>,
    filter: bool,
    /// Sends in flight (a room holds at most 256 for the hook).
    in_flight: usize,
}

async fn run(case: &Case) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Answers until the case ends.
    let receiver = case
        .hook_delay
        .map(|delay| HookReceiver::start(dir.path(), delay).expect("a hook receiver"));
    let mut backend = Backend::default();
    if let Some(receiver) = &receiver {
        let secret = std::fs::read(&receiver.secret_file).expect("its secret");
        let url = receiver.url.parse().expect("url");
        let mut hook = HookConfig::new(url, SigningSecret::new(secret).expect("long enough"))
            .expect("http url");
        hook.max_in_flight = 64;
        backend.hook = Some(hook);
    }
    let service = RoomService::start(RoomServiceConfig {
        backend,
        member_update_interval: Duration::from_secs(3600),
        ..RoomServiceConfig::default()
    });
    let (down_tx, mut down) = mpsc::channel(1 << 16);
    let port = service.connect_node("bench", down_tx);
    let mut config = default_room_config();
    config.normal_per_s = 1_000_000;
    config.normal_burst = 1_000_000;
    config.history_size = 0;
    let rooms: Vec<String> = (0..ROOMS).map(|n| format!("room-{n}")).collect();
    for room in &rooms {
        service
            .configure_room(room, ConfigChange::Patch(ConfigPatch::from_config(&config)))
            .await
            .expect("config");
        if case.filter {
            for list in thousand_words() {
                service.set_word_list(room, list).await.expect("list");
            }
        }
        let frames = [
            to_room_svc::Body::Subscribe(Subscribe {
                room_id: room.clone(),
                latest: None,
            }),
            to_room_svc::Body::Membership(Membership {
                room_id: room.clone(),
                joined: vec!["alice".into()],
                left: Vec::new(),
                seq: 1,
            }),
        ];
        for body in frames {
            port.try_send(ToRoomSvc { body: Some(body) })
                .expect("queued");
        }
    }
    let send = |request_id: u64| {
        let room = &rooms[request_id as usize % ROOMS];
        let frame = ToRoomSvc {
            body: Some(to_room_svc::Body::Send(SendRequest {
                room_id: room.clone(),
                sender: "alice".into(),
                request_id,
                kind: Kind::Chat as i32,
                payload: Bytes::from_static(TEXT.as_bytes()),
                ..SendRequest::default()
            })),
        };
        port.try_send(frame).expect("queued");
        Instant::now()
    };
    let mut sent_at = HashMap::with_capacity(case.in_flight);
    let mut next = 1u64;
    for _ in 0..case.in_flight {
        sent_at.insert(next, send(next));
        next += 1;
    }
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let (mut acked, mut refused) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < RUN {
        let Some(frame) = down.recv().await else {
            break;
        };
        let Some(to_msg_svc::Body::SendResult(result)) = frame.body else {
            continue;
        };
        let Some(at) = sent_at.remove(&result.request_id) else {
            continue;
        };
        match result.outcome {
            Some(send_result::Outcome::Ack(_)) => acked += 1,
            _ => refused += 1,
        }
        latency
            .record(at.elapsed().as_micros() as u64)
            .expect("in range");
        sent_at.insert(next, send(next));
        next += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{:<24} {:>5} in flight {:>9.0} sends/s  send→ack p50 {:>7.2} ms  p99 {:>7.2} ms  ({} acked, {} refused)",
        case.name,
        case.in_flight,
        (acked + refused) as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        acked,
        refused,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "sends over {ROOMS} rooms, {} s each, {}-byte chat text",
        RUN.as_secs(),
        TEXT.len()
    );
    for case in [
        Case {
            name: "plain",
            hook_delay: None,
            filter: false,
            in_flight: 512,
        },
        Case {
            name: "word filter (1,000)",
            hook_delay: None,
            filter: true,
            in_flight: 512,
        },
        Case {
            name: "hook answering in 1 ms",
            hook_delay: Some(Duration::from_millis(1)),
            filter: false,
            in_flight: 512,
        },
        Case {
            name: "hook answering in 50 ms",
            hook_delay: Some(Duration::from_millis(50)),
            filter: false,
            in_flight: 512,
        },
        Case {
            name: "hook answering in 50 ms",
            hook_delay: Some(Duration::from_millis(50)),
            filter: false,
            in_flight: 2048,
        },
    ] {
        runtime.block_on(run(&case));
    }
}
