//! The app's backend in the loop, end to end through the room service: a
//! real HTTP server plays the moderation hook and another the webhook
//! receiver (both on loopback, both checking our signature), while fake
//! msg-svc nodes send through the service's node port.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes as BodyBytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chatroom_proto::cluster::v1::{HookFailurePolicy, send_result};
use chatroom_proto::v1::{ErrorCode, Kind};
use room_svc::core::{FilterAction, WordList};
use room_svc::hooks::sign::verify;
use room_svc::hooks::{HookConfig, SigningSecret, WebhookConfig};
use room_svc::{Backend, RoomService, RoomServiceConfig};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

const SECRET: &[u8] = b"hook-secret-of-32-bytes-0123456";

fn secret() -> SigningSecret {
    SigningSecret::new(SECRET).expect("long enough")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Checks the signature on a request from the room service.
fn signed(headers: &HeaderMap, body: &[u8]) -> bool {
    headers
        .get("x-chatroom-signature")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|header| {
            verify(&secret(), header, body, now_s(), Duration::from_secs(300)).is_ok()
        })
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A moderation backend: `spam` anywhere is refused, `shout` is replaced
/// by its lower case, the rest accepted. Counts unsigned requests.
async fn moderation_backend(unsigned: Arc<Mutex<u64>>) -> SocketAddr {
    async fn judge(
        State(unsigned): State<Arc<Mutex<u64>>>,
        headers: HeaderMap,
        body: BodyBytes,
    ) -> (StatusCode, String) {
        if !signed(&headers, &body) {
            *unsigned.lock().expect("not poisoned") += 1;
            return (StatusCode::UNAUTHORIZED, String::new());
        }
        let request: Value = serde_json::from_slice(&body).expect("json");
        let verdicts: Vec<Value> = request["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|message| {
                let id = &message["id"];
                let text = message["text"].as_str().unwrap_or_default();
                if text.contains("spam") {
                    json!({"id": id, "action": "reject", "reason": "no spam here"})
                } else if text.contains("SHOUT") {
                    json!({"id": id, "action": "replace", "text": text.to_lowercase()})
                } else {
                    json!({"id": id, "action": "accept"})
                }
            })
            .collect();
        (StatusCode::OK, json!({ "verdicts": verdicts }).to_string())
    }
    serve(
        Router::new()
            .route("/moderate", post(judge))
            .with_state(unsigned),
    )
    .await
}

/// A webhook receiver: every signed event, deduplicated by id, goes to the
/// channel.
async fn webhook_receiver(events: mpsc::UnboundedSender<Value>) -> SocketAddr {
    #[derive(Clone)]
    struct Receiver {
        events: mpsc::UnboundedSender<Value>,
        seen: Arc<Mutex<HashSet<String>>>,
    }
    async fn receive(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        body: BodyBytes,
    ) -> StatusCode {
        if !signed(&headers, &body) {
            return StatusCode::UNAUTHORIZED;
        }
        let batch: Value = serde_json::from_slice(&body).expect("json");
        for event in batch["events"].as_array().expect("events") {
            let id = event["id"].as_str().expect("an id").to_owned();
            if receiver.seen.lock().expect("not poisoned").insert(id) {
                let _ = receiver.events.send(event.clone());
            }
        }
        StatusCode::NO_CONTENT
    }
    let receiver = Receiver {
        events,
        seen: Arc::default(),
    };
    serve(
        Router::new()
            .route("/events", post(receive))
            .with_state(receiver),
    )
    .await
}

/// The next send result, past the broadcasts before it.
async fn next_result(node: &mut FakeNode) -> chatroom_proto::cluster::v1::SendResult {
    loop {
        if let chatroom_proto::cluster::v1::to_msg_svc::Body::SendResult(result) = node.next().await
        {
            return result;
        }
    }
}

fn hook_at(addr: SocketAddr) -> HookConfig {
    let url = format!("http://{addr}/moderate").parse().expect("a url");
    HookConfig::new(url, secret()).expect("http url")
}

fn webhook_at(addr: SocketAddr) -> WebhookConfig {
    let url = format!("http://{addr}/events").parse().expect("a url");
    let mut config = WebhookConfig::new(url, secret()).expect("http url");
    config.batch_delay = Duration::from_millis(5);
    config
}

fn service_with(backend: Backend) -> RoomService {
    RoomService::start(RoomServiceConfig {
        backend,
        ..quiet_config(2)
    })
}

fn list(name: &str, action: FilterAction, words: &[&str]) -> WordList {
    WordList {
        name: name.into(),
        action,
        words: words.iter().map(|w| (*w).to_owned()).collect(),
    }
}

#[tokio::test]
async fn a_flood_through_the_word_filter_and_the_hook_is_accounted_for_exactly() {
    let unsigned = Arc::new(Mutex::new(0));
    let backend = moderation_backend(Arc::clone(&unsigned)).await;
    let service = service_with(Backend {
        hook: Some(hook_at(backend)),
        ..Backend::default()
    });
    set_config(
        &service,
        ROOM,
        config_with(|config| {
            config.normal_per_s = 100_000;
            config.normal_burst = 100_000;
        }),
    )
    .await
    .expect("config");
    service
        .set_word_list(ROOM, list("slurs", FilterAction::Reject, &["badword"]))
        .await
        .expect("list");
    service
        .set_word_list(ROOM, list("mild", FilterAction::Mask, &["darn"]))
        .await
        .expect("list");
    let mut node = FakeNode::attach(&service, "m1");
    node.subscribe(ROOM).await;
    node.join(ROOM, &["alice"]);

    // Five kinds of text, in turn: clean, masked by the filter, refused by
    // the filter, refused by the hook, replaced by the hook.
    // Sent in waves that stay within what a room may hold for the hook
    // (past it senders are told OVERLOADED, which the unit tests cover).
    let texts = ["hello", "oh darn", "a badword", "buy spam", "SHOUT"];
    let offered = 1_000u64;
    let wave = 200;
    let mut answers = HashMap::new();
    let mut delivered = Vec::new();
    for start in (0..offered).step_by(wave) {
        for n in start..start + wave as u64 {
            let mut request = send(ROOM, "alice", n + 1);
            request.payload = texts[(n % 5) as usize].as_bytes().to_vec().into();
            node.send(send_body(request));
        }
        while (answers.len() as u64) < start + wave as u64 {
            match node.next().await {
                chatroom_proto::cluster::v1::to_msg_svc::Body::SendResult(result) => {
                    let outcome = result.outcome.expect("an outcome");
                    assert!(answers.insert(result.request_id, outcome).is_none());
                }
                chatroom_proto::cluster::v1::to_msg_svc::Body::Broadcast(broadcast) => {
                    delivered.extend(broadcast.messages);
                }
                _ => {}
            }
        }
    }
    let mut by_text: HashMap<&str, (u64, u64)> = HashMap::new();
    for (request_id, outcome) in &answers {
        let text = texts[((request_id - 1) % 5) as usize];
        let entry = by_text.entry(text).or_default();
        match outcome {
            send_result::Outcome::Ack(_) => entry.0 += 1,
            send_result::Outcome::Error(error) => {
                assert_eq!(code(error), ErrorCode::ContentRejected, "{error:?}");
                entry.1 += 1;
            }
        }
    }
    let per_text = offered / 5;
    assert_eq!(by_text["hello"], (per_text, 0));
    assert_eq!(by_text["oh darn"], (per_text, 0));
    assert_eq!(by_text["a badword"], (0, per_text));
    assert_eq!(by_text["buy spam"], (0, per_text));
    assert_eq!(by_text["SHOUT"], (per_text, 0));

    let stats = service.stats(ROOM).await.expect("stats");
    let accepted = stats.accepted_normal + stats.accepted_priority;
    let rejected = stats.rejected.get("content_rejected").copied().unwrap_or(0);
    assert_eq!(accepted + rejected, offered, "every send accounted for");
    assert_eq!(stats.hook_replaced, per_text);
    assert_eq!(stats.masked, per_text);
    assert_eq!(stats.held, 0);
    assert_eq!(*unsigned.lock().expect("not poisoned"), 0);

    // What was posted is what the filter and the hook made of it.
    while (delivered.len() as u64) < accepted {
        delivered.extend(node.next_broadcast().await.messages);
    }
    let posted: HashSet<&[u8]> = delivered.iter().map(|m| &m.payload[..]).collect();
    let expected: HashSet<&[u8]> = [&b"hello"[..], b"oh ****", b"shout"].into();
    assert_eq!(posted, expected);
}

#[tokio::test]
async fn a_hook_that_never_answers_follows_each_rooms_policy_and_stalls_nothing_else() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("http://{addr}/moderate").parse().expect("a url");
    let mut config = HookConfig::new(url, secret()).expect("http url");
    config.timeout = Duration::from_millis(500);
    let service = service_with(Backend {
        hook: Some(config),
        ..Backend::default()
    });
    set_config(
        &service,
        "closed",
        config_with(|config| config.hook_failure = HookFailurePolicy::Closed as i32),
    )
    .await
    .expect("config");
    let mut node = FakeNode::attach(&service, "m1");
    for room in [ROOM, "closed", "likes"] {
        node.subscribe(room).await;
        node.join(room, &["alice"]);
    }
    // Two chats wait for a hook that never answers; a like, sent after
    // them, does not go through the hook and is answered while they wait.
    node.send(send_body(send(ROOM, "alice", 2)));
    node.send(send_body(send("closed", "alice", 3)));
    let mut like = send("likes", "alice", 1);
    like.kind = Kind::Like as i32;
    node.send(send_body(like));
    let first = next_result(&mut node).await;
    assert_eq!(
        first.request_id, 1,
        "the like is answered before the held chats"
    );
    match first.outcome {
        Some(send_result::Outcome::Ack(_)) => {}
        other => panic!("a like is not held: {other:?}"),
    }
    let mut outcomes = HashMap::new();
    while outcomes.len() < 2 {
        let result = next_result(&mut node).await;
        outcomes.insert(result.request_id, result.outcome.expect("an outcome"));
    }
    assert!(
        matches!(outcomes[&2], send_result::Outcome::Ack(_)),
        "fails open by default"
    );
    match &outcomes[&3] {
        send_result::Outcome::Error(error) => {
            assert_eq!(code(error), ErrorCode::Overloaded);
            assert!(error.retry_after_ms > 0);
        }
        other => panic!("a closed room refuses: {other:?}"),
    }
}

#[tokio::test]
async fn webhooks_tell_joins_messages_moderation_occupancy_and_closes_signed() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let receiver = webhook_receiver(events_tx).await;
    let service = RoomService::start(RoomServiceConfig {
        backend: Backend {
            webhook: Some(webhook_at(receiver)),
            ..Backend::default()
        },
        member_update_interval: Duration::from_millis(20),
        ..RoomServiceConfig::default()
    });
    set_config(
        &service,
        ROOM,
        config_with(|config| {
            config.webhook_presence = true;
            config.webhook_messages = true;
        }),
    )
    .await
    .expect("config");
    let mut node = FakeNode::attach(&service, "m1");
    node.subscribe(ROOM).await;
    node.join(ROOM, &["alice", "bob"]);
    node.send(send_body(send(ROOM, "alice", 1)));
    let ack = match next_result(&mut node).await.outcome {
        Some(send_result::Outcome::Ack(ack)) => ack,
        other => panic!("expected an ack, got {other:?}"),
    };
    let probe = service.webhooks().expect("a webhook").clone();
    let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
    let mut wait_for = async |kinds: &[&str], seen: &mut HashMap<String, Vec<Value>>| {
        while !kinds.iter().all(|kind| seen.contains_key(*kind)) {
            let event = timeout(GUARD, events.recv())
                .await
                .unwrap_or_else(|_| panic!("{kinds:?} in time: {:?}", probe.counters()))
                .expect("the receiver runs");
            assert_eq!(event["room_id"], ROOM);
            seen.entry(event["type"].as_str().expect("a type").to_owned())
                .or_default()
                .push(event);
        }
    };
    wait_for(
        &["room.joins", "message.accepted", "room.occupancy"],
        &mut seen,
    )
    .await;
    service
        .acting_as("ops-console")
        .mute(ROOM, "bob", None)
        .await
        .expect("mute");
    service.close_room(ROOM).await.expect("close");
    wait_for(&["moderation", "room.closed"], &mut seen).await;
    let joins = &seen["room.joins"][0]["data"];
    assert_eq!(joins["joined"], json!(["alice", "bob"]));
    let message = &seen["message.accepted"][0]["data"];
    assert_eq!(message["msg_id"], ack.msg_id);
    assert_eq!(message["text"], "message 1");
    let mute = seen["moderation"]
        .iter()
        .find(|event| event["data"]["action"] == "mute")
        .expect("the mute is told");
    assert_eq!(mute["data"]["user"], "bob");
    assert_eq!(mute["data"]["by"], "ops-console");
    assert!(
        seen["moderation"]
            .iter()
            .any(|event| event["data"]["action"] == "config"),
        "the config change is told"
    );
    assert_eq!(seen["room.occupancy"][0]["data"]["members"], 2);
}

#[tokio::test]
async fn every_change_through_the_admin_api_reaches_the_webhook_naming_its_key() {
    use chatroom_cluster::auth::AdminToken;
    use hyper::Method;
    use room_svc::admin::client::AdminClient;
    use room_svc::admin::{AdminApi, Keyring};

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let receiver = webhook_receiver(events_tx).await;
    let service = service_with(Backend {
        webhook: Some(webhook_at(receiver)),
        ..Backend::default()
    });
    let token = "admin-token-of-the-backend-test";
    let keyring = Keyring::new(Some(AdminToken::new(token.as_bytes()).expect("long")), None);
    let router = AdminApi::new(service.clone(), keyring, None).router();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = AdminClient::new(&format!("http://{addr}"), token).expect("client");
    client
        .call(Method::PUT, &format!("/rooms/{ROOM}/bans/eve"), None)
        .await
        .expect("ban");
    let body = json!({"action": "mask", "words": ["darn"]});
    client
        .call(
            Method::PUT,
            &format!("/rooms/{ROOM}/word-lists/mild"),
            Some(&body),
        )
        .await
        .expect("word list");

    let mut audited = Vec::new();
    let mut moderated = Vec::new();
    while audited.len() < 2 || moderated.len() < 2 {
        let event = timeout(GUARD, events.recv())
            .await
            .expect("events in time")
            .expect("the receiver runs");
        match event["type"].as_str() {
            Some("admin.audit") => audited.push(event["data"].clone()),
            Some("moderation") => moderated.push(event["data"].clone()),
            _ => {}
        }
    }
    assert!(audited.iter().all(|record| record["key"] == "admin-token"));
    assert_eq!(audited[0]["method"], "PUT");
    assert_eq!(audited[0]["room"], ROOM);
    assert_eq!(audited[0]["status"], 204);
    let actions: Vec<&Value> = moderated.iter().map(|data| &data["action"]).collect();
    assert_eq!(actions, [&json!("ban"), &json!("word_list_set")]);
    assert!(moderated.iter().all(|data| data["by"] == "admin-token"));
}

#[tokio::test]
async fn the_backend_publishes_any_kind_once_per_idempotency_key_on_the_rooms_lane() {
    use chatroom_proto::v1::{Lane, SenderInfo};
    use room_svc::core::Publish;

    let service = service_with(Backend::default());
    let mut node = FakeNode::attach(&service, "m1");
    node.subscribe(ROOM).await;
    let gift = || Publish {
        sender: "alice".into(),
        system: false,
        sender_info: Some(SenderInfo {
            name: "Alice".into(),
            badges: vec!["vip".into()],
            color: "#ff8800".into(),
        }),
        kind: Kind::Gift as i32,
        payload: r#"{"gift":"rocket","count":3}"#.into(),
        client_msg_id: 42,
    };
    let (ack, duplicate) = service.publish(ROOM, gift()).await.expect("published");
    assert!(!duplicate);
    let broadcast = node.next_broadcast().await;
    let message = &broadcast.messages[0];
    assert_eq!(message.msg_id, ack.msg_id);
    assert_eq!(
        message.sender, "alice",
        "on the user's behalf, though not a member"
    );
    assert_eq!(message.lane(), Lane::Priority, "gifts are a priority kind");
    assert_eq!(&message.payload[..], br#"{"gift":"rocket","count":3}"#);
    assert_eq!(message.sender_info.as_ref().expect("shown").name, "Alice");

    let (again, duplicate) = service.publish(ROOM, gift()).await.expect("answered");
    assert!(duplicate);
    assert_eq!(again.msg_id, ack.msg_id);
    let like = Publish {
        kind: Kind::Like as i32,
        payload: Default::default(),
        client_msg_id: 0,
        sender_info: None,
        ..gift()
    };
    let (liked, _) = service.publish(ROOM, like).await.expect("published");
    let broadcast = node.next_broadcast().await;
    assert_eq!(
        broadcast.messages.len(),
        1,
        "the retry was not posted again"
    );
    assert_eq!(broadcast.messages[0].msg_id, liked.msg_id);
    assert_eq!(broadcast.messages[0].lane(), Lane::Normal);
    node.assert_quiet();
}
