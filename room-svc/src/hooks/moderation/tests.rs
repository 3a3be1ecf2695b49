//! The moderation hook against a real backend on loopback that checks every
//! signature.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::Full;
use hyper::Response;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use super::*;
use crate::hooks::sign::{DEFAULT_WINDOW, SIGNATURE_HEADER, verify};
use crate::hooks::test_server::{TestServer, closed_addr, json_response, now_unix_s, url_of};

const SECRET: &str = "moderation secret for tests";

fn secret() -> SigningSecret {
    SigningSecret::new(SECRET).expect("long enough")
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

/// A backend that verifies each request's signature (401 if wrong),
/// reports its messages on the channel and answers with `answer`.
async fn backend<H, F>(answer: H) -> (TestServer, mpsc::UnboundedReceiver<Vec<Value>>)
where
    H: Fn(Vec<Value>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let (seen, requests) = mpsc::unbounded_channel();
    let server = TestServer::start(any_port(), move |request: hyper::Request<Bytes>| {
        let signature = request
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let verified = verify(
            &secret(),
            signature,
            request.body(),
            now_unix_s(),
            DEFAULT_WINDOW,
        );
        let messages = serde_json::from_slice::<Value>(request.body())
            .ok()
            .and_then(|body| body["messages"].as_array().cloned())
            .unwrap_or_default();
        let answer = verified.is_ok().then(|| {
            let _ = seen.send(messages.clone());
            answer(messages)
        });
        async move {
            match answer {
                Some(answer) => answer.await,
                None => json_response(401, "{}"),
            }
        }
    })
    .await;
    (server, requests)
}

/// A verdict by the message's text: `accept…`, `reject…`, `replace…`,
/// `missing…` (none), and a binary payload is replaced by bytes 1, 2, 3.
fn verdict_by_text(message: &Value) -> Option<Value> {
    let id = message["id"].clone();
    let Some(text) = message["text"].as_str() else {
        return Some(
            json!({"id": id, "action": "replace", "payload_base64": BASE64.encode([1, 2, 3])}),
        );
    };
    if text.starts_with("accept") {
        Some(json!({"id": id, "action": "accept"}))
    } else if text.starts_with("reject") {
        Some(
            json!({"id": id, "action": "reject", "reason": format!("spam\u{7}\n{}", "x".repeat(300))}),
        )
    } else if text.starts_with("replace") {
        Some(json!({"id": id, "action": "replace", "text": "cleaned"}))
    } else {
        None
    }
}

fn verdicts(messages: &[Value], judge: impl Fn(&Value) -> Option<Value>) -> String {
    json!({ "verdicts": messages.iter().filter_map(judge).collect::<Vec<_>>() }).to_string()
}

async fn by_text(messages: Vec<Value>) -> Response<Full<Bytes>> {
    json_response(200, verdicts(&messages, verdict_by_text))
}

fn config(url: Uri, tune: impl FnOnce(&mut HookConfig)) -> HookConfig {
    let mut config = HookConfig::new(url, secret()).expect("an http url");
    config.timeout = Duration::from_secs(5);
    tune(&mut config);
    config
}

fn message(payload: impl Into<Bytes>) -> HookMessage {
    HookMessage {
        room_id: "lobby".into(),
        sender: "ann".into(),
        sender_info: Some(json!({"name": "Ann"})),
        kind: 1,
        payload: payload.into(),
    }
}

type Outcomes = mpsc::UnboundedReceiver<(usize, HookOutcome)>;

/// `done` callbacks reporting `(tag, outcome)` on one channel.
fn collector() -> (impl Fn(usize) -> HookDone, Outcomes) {
    let (sender, outcomes) = mpsc::unbounded_channel();
    let done = move |tag: usize| -> HookDone {
        let sender = sender.clone();
        Box::new(move |outcome| {
            let _ = sender.send((tag, outcome));
        })
    };
    (done, outcomes)
}

/// The next `count` outcomes, by tag.
async fn outcomes(outcomes: &mut Outcomes, count: usize) -> Vec<HookOutcome> {
    let mut by_tag: Vec<Option<HookOutcome>> = vec![None; count];
    for _ in 0..count {
        let (tag, outcome) = tokio::time::timeout(Duration::from_secs(20), outcomes.recv())
            .await
            .expect("outcomes in time")
            .expect("an outcome");
        assert!(
            by_tag[tag].replace(outcome).is_none(),
            "one outcome per submission"
        );
    }
    by_tag
        .into_iter()
        .map(|outcome| outcome.expect("every tag"))
        .collect()
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[tokio::test]
async fn each_message_of_a_batch_gets_its_verdict() {
    let (server, mut requests) = backend(by_text).await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_max = 5;
        config.batch_delay = Duration::from_secs(60);
    }));
    let (done, mut results) = collector();
    let payloads: [Bytes; 5] = [
        Bytes::from_static(b"accept me"),
        Bytes::from_static(b"reject me"),
        Bytes::from_static(b"replace me"),
        Bytes::from_static(b"\xff\xfe not utf-8"),
        Bytes::from_static(b"missing"),
    ];
    for (tag, payload) in payloads.iter().enumerate() {
        hook.submit(message(payload.clone()), done(tag))
            .expect("room");
    }
    let outcomes = outcomes(&mut results, 5).await;
    let reason = format!("spam{}", "x".repeat(252));
    assert_eq!(
        outcomes,
        [
            HookOutcome::Accept,
            HookOutcome::Reject { reason },
            HookOutcome::Replace {
                payload: Bytes::from_static(b"cleaned")
            },
            HookOutcome::Replace {
                payload: Bytes::from_static(&[1, 2, 3])
            },
            HookOutcome::Failed(HookFailure::Missing),
        ]
    );
    let request = requests.recv().await.expect("one request");
    assert!(requests.try_recv().is_err(), "a single request");
    assert_eq!(
        request[0],
        json!({"id": "m1", "room_id": "lobby", "sender": "ann", "sender_info": {"name": "Ann"},
               "kind": 1, "text": "accept me"})
    );
    assert_eq!(request[3]["id"], "m4");
    assert_eq!(request[3]["text"], Value::Null);
    assert_eq!(request[3]["payload_base64"], BASE64.encode(&payloads[3]));
    let counters = hook.counters();
    assert_eq!(load(&counters.requests), 1);
    assert_eq!(
        [
            &counters.accepted,
            &counters.rejected,
            &counters.replaced,
            &counters.failed_missing
        ]
        .map(load),
        [1, 1, 2, 1]
    );
}

#[tokio::test]
async fn batches_form_by_size_and_by_delay() {
    let (server, mut requests) = backend(by_text).await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_max = 3;
        config.batch_delay = Duration::from_millis(40);
    }));
    let (done, mut results) = collector();
    for tag in 0..7 {
        hook.submit(message("accept"), done(tag)).expect("room");
    }
    // Two full batches go at once, the seventh message waits for its delay.
    let started = Instant::now();
    let first = requests.recv().await.expect("a request").len();
    let second = requests.recv().await.expect("a request").len();
    assert_eq!([first, second], [3, 3]);
    let last = requests.recv().await.expect("a request");
    assert_eq!(last.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(35),
        "{:?}",
        started.elapsed()
    );
    assert!(
        outcomes(&mut results, 7)
            .await
            .iter()
            .all(|outcome| *outcome == HookOutcome::Accept)
    );
    assert_eq!(load(&hook.counters().requests), 3);
}

#[tokio::test]
async fn bad_answers_fail_their_messages() {
    let (server, _requests) = backend(|messages: Vec<Value>| async move {
        match messages[0]["text"].as_str().unwrap_or_default() {
            "garbage" => json_response(200, "this is not json"),
            "shape" => json_response(200, r#"{"verdict": "accept"}"#),
            "status" => json_response(500, "{}"),
            "huge" => json_response(
                200,
                json!({"verdicts": [], "padding": "x".repeat(4096)}).to_string(),
            ),
            _ => std::future::pending().await,
        }
    })
    .await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_max = 1;
        config.batch_delay = Duration::ZERO;
        config.max_response_bytes = 1024;
        config.timeout = Duration::from_millis(150);
    }));
    let (done, mut results) = collector();
    for (tag, text) in ["garbage", "shape", "status", "huge", "silent"]
        .into_iter()
        .enumerate()
    {
        hook.submit(message(text), done(tag)).expect("room");
    }
    let started = Instant::now();
    let garbage = HookOutcome::Failed(HookFailure::Garbage);
    assert_eq!(
        outcomes(&mut results, 5).await,
        [
            garbage.clone(),
            garbage.clone(),
            HookOutcome::Failed(HookFailure::Status(500)),
            garbage,
            HookOutcome::Failed(HookFailure::Timeout),
        ]
    );
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "timed out too early"
    );
    let counters = hook.counters();
    assert_eq!(
        [
            &counters.failed_garbage,
            &counters.failed_status,
            &counters.failed_timeout
        ]
        .map(load),
        [3, 1, 1]
    );
}

#[tokio::test]
async fn verdicts_for_unknown_ids_are_ignored_and_counted() {
    let (server, _requests) = backend(|messages: Vec<Value>| async move {
        let mut verdicts = json!({"verdicts": [
            {"id": "m7", "action": "reject", "reason": "who?"},
            {"id": "m1", "action": "accept"},
            {"id": "m1", "action": "reject", "reason": "twice"},
        ]});
        if messages.len() > 2 {
            verdicts["verdicts"]
                .as_array_mut()
                .expect("an array")
                .push(json!({"id": "m3", "action": "accept"}));
        }
        json_response(200, verdicts.to_string())
    })
    .await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_max = 3;
        config.batch_delay = Duration::from_secs(60);
    }));
    let (done, mut results) = collector();
    for tag in 0..3 {
        hook.submit(message("whatever"), done(tag)).expect("room");
    }
    assert_eq!(
        outcomes(&mut results, 3).await,
        [
            HookOutcome::Accept,
            HookOutcome::Failed(HookFailure::Missing),
            HookOutcome::Accept,
        ]
    );
    assert_eq!(load(&hook.counters().unknown_verdicts), 2);
}

#[tokio::test]
async fn an_unreachable_backend_fails_its_messages() {
    let hook = ModerationHook::start(config(url_of(closed_addr().await), |config| {
        config.batch_delay = Duration::ZERO;
    }));
    let (done, mut results) = collector();
    hook.submit(message("accept"), done(0)).expect("room");
    assert_eq!(
        outcomes(&mut results, 1).await,
        [HookOutcome::Failed(HookFailure::Unreachable)]
    );
    assert_eq!(load(&hook.counters().failed_unreachable), 1);
}

#[tokio::test]
async fn the_queue_bound_refuses_and_shutdown_fails_what_is_pending() {
    let (server, mut requests) =
        backend(|_messages: Vec<Value>| async { std::future::pending().await }).await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_max = 1;
        config.batch_delay = Duration::ZERO;
        config.max_in_flight = 1;
        config.queue = 4;
    }));
    let (done, mut results) = collector();
    // No await in between: the dispatcher cannot take any before the bound.
    for tag in 0..4 {
        hook.submit(message("accept"), done(tag)).expect("room");
    }
    assert_eq!(hook.submit(message("accept"), done(9)), Err(HookOverloaded));
    requests.recv().await.expect("the first request is out");
    hook.submit(message("accept"), done(4))
        .expect("one left the queue");
    assert_eq!(hook.submit(message("accept"), done(9)), Err(HookOverloaded));

    hook.shutdown();
    let shutdown = HookOutcome::Failed(HookFailure::Shutdown);
    assert_eq!(outcomes(&mut results, 5).await, vec![shutdown; 5]);
    assert_eq!(hook.submit(message("accept"), done(9)), Err(HookOverloaded));
    let counters = hook.counters();
    assert_eq!(
        [
            &counters.submitted,
            &counters.overloaded,
            &counters.failed_shutdown
        ]
        .map(load),
        [5, 3, 5]
    );
}

#[tokio::test]
async fn dropping_the_last_handle_fails_what_is_pending() {
    let (server, mut requests) =
        backend(|_messages: Vec<Value>| async { std::future::pending().await }).await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_max = 1;
        config.batch_delay = Duration::ZERO;
        config.max_in_flight = 1;
    }));
    let (done, mut results) = collector();
    for tag in 0..3 {
        hook.submit(message("accept"), done(tag)).expect("room");
    }
    requests.recv().await.expect("the first request is out");
    drop(hook);
    let shutdown = HookOutcome::Failed(HookFailure::Shutdown);
    assert_eq!(outcomes(&mut results, 3).await, vec![shutdown; 3]);
}

#[tokio::test]
async fn done_may_submit_again() {
    let (server, _requests) = backend(by_text).await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_delay = Duration::ZERO;
    }));
    let (done, mut results) = collector();
    let again = hook.clone();
    let second = done(1);
    let first: HookDone = Box::new(move |outcome| {
        assert_eq!(outcome, HookOutcome::Accept);
        again.submit(message("reject"), second).expect("room");
    });
    hook.submit(message("accept"), first).expect("room");
    let (tag, outcome) = results.recv().await.expect("the second outcome");
    assert_eq!(tag, 1);
    assert!(matches!(outcome, HookOutcome::Reject { .. }));
}

#[tokio::test]
async fn concurrent_requests_never_exceed_max_in_flight() {
    let active = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let release = Arc::new(Semaphore::new(0));
    let (server, mut requests) = backend({
        let (active, most, release) = (active.clone(), most.clone(), release.clone());
        move |messages: Vec<Value>| {
            let (active, most, release) = (active.clone(), most.clone(), release.clone());
            async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                release.acquire().await.expect("never closed").forget();
                active.fetch_sub(1, Ordering::SeqCst);
                by_text(messages).await
            }
        }
    })
    .await;
    let hook = ModerationHook::start(config(server.url(), |config| {
        config.batch_max = 1;
        config.batch_delay = Duration::ZERO;
        config.max_in_flight = 3;
    }));
    let (done, mut results) = collector();
    for tag in 0..12 {
        hook.submit(message("accept"), done(tag)).expect("room");
    }
    for _ in 0..3 {
        requests.recv().await.expect("a request");
    }
    assert_eq!(load(&hook.counters().in_flight), 3);
    assert_eq!(
        load(&hook.counters().requests),
        3,
        "the rest wait their turn"
    );
    release.add_permits(12);
    assert!(
        outcomes(&mut results, 12)
            .await
            .iter()
            .all(|outcome| *outcome == HookOutcome::Accept)
    );
    assert_eq!(most.load(Ordering::SeqCst), 3);
    assert_eq!(load(&hook.counters().requests), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_accounted_exactly() {
    const FLOOD: usize = 2000;
    // Batches holding a multiple of 97 are answered 500 whole.
    let failed = Arc::new(Mutex::new(HashSet::new()));
    let (server, _requests) = backend({
        let failed = failed.clone();
        move |messages: Vec<Value>| {
            let numbers: Vec<usize> = messages
                .iter()
                .map(|message| {
                    message["text"]
                        .as_str()
                        .and_then(|text| text.parse().ok())
                        .expect("a number")
                })
                .collect();
            let answer = if numbers.iter().any(|n| n % 97 == 0) {
                failed.lock().expect("not poisoned").extend(numbers);
                json_response(500, "{}")
            } else {
                json_response(
                    200,
                    verdicts(&messages, |message| {
                        let n: usize = message["text"].as_str()?.parse().ok()?;
                        let id = message["id"].clone();
                        match n % 4 {
                            0 => Some(json!({"id": id, "action": "accept"})),
                            1 => Some(json!({"id": id, "action": "reject", "reason": "no"})),
                            2 => Some(json!({"id": id, "action": "replace", "text": "-"})),
                            _ => None,
                        }
                    }),
                )
            };
            async move { answer }
        }
    })
    .await;
    let hook = ModerationHook::start(config(server.url(), |_| {}));
    let calls: Arc<Vec<AtomicUsize>> = Arc::new((0..FLOOD).map(|_| AtomicUsize::new(0)).collect());
    let (sender, mut results) = mpsc::unbounded_channel();
    let submitters: Vec<_> = (0..4)
        .map(|part| {
            let (hook, calls, sender) = (hook.clone(), calls.clone(), sender.clone());
            tokio::spawn(async move {
                for n in (part..FLOOD).step_by(4) {
                    let (calls, sender) = (calls.clone(), sender.clone());
                    let done: HookDone = Box::new(move |outcome| {
                        calls[n].fetch_add(1, Ordering::SeqCst);
                        let _ = sender.send((n, outcome));
                    });
                    hook.submit(message(n.to_string()), done).expect("room");
                    if n % 64 == part {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.await.expect("submitted");
    }
    let mut outcomes = vec![None; FLOOD];
    for _ in 0..FLOOD {
        let (n, outcome) = tokio::time::timeout(Duration::from_secs(30), results.recv())
            .await
            .expect("outcomes in time")
            .expect("an outcome");
        outcomes[n] = Some(outcome);
    }
    let failed = failed.lock().expect("not poisoned").clone();
    for (n, outcome) in outcomes.into_iter().enumerate() {
        let expected = if failed.contains(&n) {
            HookOutcome::Failed(HookFailure::Status(500))
        } else {
            match n % 4 {
                0 => HookOutcome::Accept,
                1 => HookOutcome::Reject {
                    reason: "no".into(),
                },
                2 => HookOutcome::Replace {
                    payload: Bytes::from_static(b"-"),
                },
                _ => HookOutcome::Failed(HookFailure::Missing),
            }
        };
        assert_eq!(outcome, Some(expected), "message {n}");
        assert_eq!(calls[n].load(Ordering::SeqCst), 1, "message {n}");
    }
    let counters = hook.counters();
    let settled: u64 = [
        &counters.accepted,
        &counters.rejected,
        &counters.replaced,
        &counters.failed_timeout,
        &counters.failed_unreachable,
        &counters.failed_status,
        &counters.failed_garbage,
        &counters.failed_missing,
        &counters.failed_shutdown,
    ]
    .map(load)
    .iter()
    .sum();
    assert_eq!(load(&counters.submitted), FLOOD as u64);
    assert_eq!(settled, FLOOD as u64);
    assert_eq!(load(&counters.failed_status), failed.len() as u64);
    assert_eq!(load(&counters.overloaded), 0);
    assert!(!failed.is_empty(), "some batches failed");
}
