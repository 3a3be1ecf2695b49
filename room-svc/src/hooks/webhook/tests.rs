//! Webhooks against a real receiver on loopback that checks every
//! signature and dedupes by event id.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::header::{CONTENT_TYPE, USER_AGENT};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::hooks::sign::{DEFAULT_WINDOW, SIGNATURE_HEADER, SignatureError, verify};
use crate::hooks::test_server::{TestServer, closed_addr, json_response, now_unix_s, url_of};

const SECRET: &str = "webhook secret for tests";

const KINDS: [EventKind; 6] = [
    EventKind::RoomOccupancy,
    EventKind::RoomJoins,
    EventKind::MessageAccepted,
    EventKind::Moderation,
    EventKind::RoomClosed,
    EventKind::AdminAudit,
];

fn secret() -> SigningSecret {
    SigningSecret::new(SECRET).expect("long enough")
}

/// One request as the receiver saw it.
#[derive(Debug)]
struct Seen {
    signature: String,
    delivery: String,
    user_agent: String,
    content_type: String,
    body: Bytes,
    events: Vec<Value>,
    status: u16,
}

/// A receiver answering each request with the next of `statuses` (then
/// 200), reporting every request it verified on the channel.
async fn receiver(
    addr: SocketAddr,
    statuses: &[u16],
) -> (TestServer, mpsc::UnboundedReceiver<Seen>) {
    let (seen, requests) = mpsc::unbounded_channel();
    let statuses = Arc::new(Mutex::new(
        statuses.iter().copied().collect::<VecDeque<_>>(),
    ));
    let server = TestServer::start(addr, move |request: hyper::Request<Bytes>| {
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let signature = header(SIGNATURE_HEADER);
        let verified = verify(
            &secret(),
            &signature,
            request.body(),
            now_unix_s(),
            DEFAULT_WINDOW,
        );
        let status = if verified.is_ok() {
            statuses
                .lock()
                .expect("not poisoned")
                .pop_front()
                .unwrap_or(200)
        } else {
            401
        };
        let events = serde_json::from_slice::<Value>(request.body())
            .ok()
            .and_then(|body| body["events"].as_array().cloned())
            .unwrap_or_default();
        let _ = seen.send(Seen {
            delivery: header(DELIVERY_HEADER),
            user_agent: header(USER_AGENT.as_str()),
            content_type: header(CONTENT_TYPE.as_str()),
            signature,
            body: request.body().clone(),
            events,
            status,
        });
        async move { json_response(status, "{}") }
    })
    .await;
    (server, requests)
}

fn config(url: Uri) -> WebhookConfig {
    let mut config = WebhookConfig::new(url, secret()).expect("an http url");
    config.batch_delay = Duration::from_millis(20);
    config.backoff_min = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(40);
    config.timeout = Duration::from_secs(5);
    config
}

fn emit_numbered(webhooks: &Webhooks, range: std::ops::Range<u64>) {
    for n in range {
        let kind = KINDS[(n % 6) as usize];
        let room = (kind != EventKind::AdminAudit).then(|| format!("room-{n}"));
        webhooks.emit(kind, room.as_deref(), json!({ "n": n }));
    }
}

fn drain(requests: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    std::iter::from_fn(|| requests.try_recv().ok()).collect()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// Event numbers of the requests answered 2xx, once each and in order of
/// first delivery: what a receiver deduping by id ends up with.
fn deduped(seen: &[Seen]) -> Vec<u64> {
    let mut ids = HashSet::new();
    seen.iter()
        .filter(|request| request.status == 200)
        .flat_map(|request| &request.events)
        .filter(|event| ids.insert(event["id"].as_str().expect("an id").to_owned()))
        .map(|event| event["data"]["n"].as_u64().expect("a number"))
        .collect()
}

#[tokio::test]
async fn events_arrive_batched_signed_and_in_order() {
    let (server, mut requests) = receiver("127.0.0.1:0".parse().expect("addr"), &[]).await;
    let webhooks = Webhooks::start(config(server.url()));
    let before_us = unix_micros();
    emit_numbered(&webhooks, 0..250);
    webhooks.flush(soon()).await.expect("all delivered");

    let seen = drain(&mut requests);
    let sizes: Vec<_> = seen.iter().map(|request| request.events.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let deliveries: HashSet<_> = seen
        .iter()
        .map(|request| request.delivery.clone())
        .collect();
    assert_eq!(deliveries.len(), 3);
    let mut ids = HashSet::new();
    for request in &seen {
        assert_eq!(request.status, 200, "signature verified");
        assert!(request.delivery.starts_with("dlv_") && request.delivery.len() == 36);
        assert_eq!(
            request.user_agent,
            concat!("chatroom/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(request.content_type, "application/json");
    }
    for (n, event) in seen.iter().flat_map(|request| &request.events).enumerate() {
        let n = n as u64;
        let kind = KINDS[(n % 6) as usize];
        let id = event["id"].as_str().expect("an id");
        assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
        assert!(ids.insert(id.to_owned()), "ids are unique");
        assert_eq!(event["type"], kind.as_str());
        assert_eq!(event["data"], json!({ "n": n }));
        let ts_us = event["ts_us"].as_u64().expect("a timestamp");
        assert!(ts_us >= before_us && ts_us <= unix_micros());
        let room = if kind == EventKind::AdminAudit {
            Value::Null
        } else {
            json!(format!("room-{n}"))
        };
        assert_eq!(event["room_id"], room);
        assert_eq!(event.as_object().map(|fields| fields.len()), Some(5));
    }
    let counters = webhooks.counters();
    assert_eq!(counters.emitted.load(Ordering::Relaxed), 250);
    assert_eq!(counters.delivered.load(Ordering::Relaxed), 250);
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(counters.retries.load(Ordering::Relaxed), 0);
    assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
}

#[test]
fn event_types_are_stable() {
    let types: Vec<_> = KINDS
        .iter()
        .map(|kind| serde_json::to_value(kind).expect("a string"))
        .collect();
    assert_eq!(
        types,
        [
            "room.occupancy",
            "room.joins",
            "message.accepted",
            "moderation",
            "room.closed",
            "admin.audit"
        ]
    );
}

#[tokio::test]
async fn a_failing_batch_is_retried_until_answered_2xx() {
    let (server, mut requests) =
        receiver("127.0.0.1:0".parse().expect("addr"), &[500, 503, 500]).await;
    let mut config = config(server.url());
    config.batch_max = 10;
    let webhooks = Webhooks::start(config);
    emit_numbered(&webhooks, 0..30);
    webhooks.flush(soon()).await.expect("all delivered");

    let seen = drain(&mut requests);
    assert_eq!(seen.len(), 6, "three failures, then three batches");
    let first_ids: Vec<_> = seen[..4]
        .iter()
        .map(|request| {
            request
                .events
                .iter()
                .map(|event| event["id"].clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        first_ids.iter().all(|ids| *ids == first_ids[0]),
        "the same batch, resent whole"
    );
    let deliveries: HashSet<_> = seen
        .iter()
        .map(|request| request.delivery.clone())
        .collect();
    assert_eq!(deliveries.len(), 6, "a new delivery id per attempt");
    assert_eq!(deduped(&seen), (0..30).collect::<Vec<_>>());

    let counters = webhooks.counters();
    assert_eq!(counters.failed_status.load(Ordering::Relaxed), 3);
    assert_eq!(counters.retries.load(Ordering::Relaxed), 3);
    assert_eq!(counters.delivered.load(Ordering::Relaxed), 30);
}

#[tokio::test]
async fn events_survive_the_receiver_going_away() {
    let (server, mut first) = receiver("127.0.0.1:0".parse().expect("addr"), &[]).await;
    let addr = server.addr();
    let mut config = config(server.url());
    config.batch_max = 8;
    let webhooks = Webhooks::start(config);
    emit_numbered(&webhooks, 0..5);
    webhooks.flush(soon()).await.expect("delivered while up");
    server.stop().await;

    emit_numbered(&webhooks, 5..25);
    // The failures are counters with nothing to await: look until they show.
    let counters = webhooks.counters();
    let deadline = soon();
    while counters.failed_connect.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "no failures counted");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (_restarted, mut second) = receiver(addr, &[]).await;
    webhooks.flush(soon()).await.expect("delivered once back");

    let mut seen = drain(&mut first);
    seen.extend(drain(&mut second));
    assert_eq!(deduped(&seen), (0..25).collect::<Vec<_>>());
    assert_eq!(counters.delivered.load(Ordering::Relaxed), 25);
    assert!(counters.retries.load(Ordering::Relaxed) >= 2);
}

#[tokio::test]
async fn events_past_the_queue_bound_are_dropped_and_counted() {
    let (server, mut requests) = receiver("127.0.0.1:0".parse().expect("addr"), &[]).await;
    let mut config = config(server.url());
    config.batch_max = 5;
    config.queue = 10;
    let webhooks = Webhooks::start(config);
    // No await in between: the sender cannot take any before the bound.
    emit_numbered(&webhooks, 0..25);
    let counters = webhooks.counters();
    assert_eq!(counters.emitted.load(Ordering::Relaxed), 25);
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 15);
    assert_eq!(counters.queued.load(Ordering::Relaxed), 10);

    webhooks
        .flush(soon())
        .await
        .expect("the kept ones delivered");
    assert_eq!(deduped(&drain(&mut requests)), (0..10).collect::<Vec<_>>());
    assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn flush_gives_up_at_its_deadline() {
    let addr = closed_addr().await;
    let webhooks = Webhooks::start(config(url_of(addr)));
    emit_numbered(&webhooks, 0..3);
    let result = webhooks
        .flush(Instant::now() + Duration::from_millis(50))
        .await;
    assert_eq!(result, Err(FlushTimedOut { undelivered: 3 }));
}

#[tokio::test]
async fn captured_requests_fail_verify_when_tampered_or_old() {
    let (server, mut requests) = receiver("127.0.0.1:0".parse().expect("addr"), &[]).await;
    let webhooks = Webhooks::start(config(server.url()));
    webhooks.emit(
        EventKind::RoomClosed,
        Some("lobby"),
        json!({"reason": "done"}),
    );
    webhooks.flush(soon()).await.expect("delivered");
    let captured = requests.recv().await.expect("one request");
    let now = now_unix_s();
    assert_eq!(
        verify(
            &secret(),
            &captured.signature,
            &captured.body,
            now,
            DEFAULT_WINDOW
        ),
        Ok(())
    );

    let tampered = String::from_utf8(captured.body.to_vec())
        .expect("json")
        .replace("lobby", "lobbz");
    assert_eq!(
        verify(
            &secret(),
            &captured.signature,
            tampered.as_bytes(),
            now,
            DEFAULT_WINDOW
        ),
        Err(SignatureError::Mismatch)
    );
    let later = now + DEFAULT_WINDOW.as_secs() + 2;
    assert!(matches!(
        verify(
            &secret(),
            &captured.signature,
            &captured.body,
            later,
            DEFAULT_WINDOW
        ),
        Err(SignatureError::OutsideWindow { .. })
    ));
}
