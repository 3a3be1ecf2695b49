//! The room service over a real Redis (one server per test, started by the
//! shared helper): rooms survive a restart, Redis outages cost no acks,
//! takeovers never stamp below what a node holds, and ownership follows the
//! member view. Waits are on events (frames, health changes, the store's
//! flush); the timeouts only guard against a hang.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::membership::{Lease, Members, NodeInfo, Role};
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{RoomOverrides, SendRequest};
use chatroom_proto::v1::{ChatMessage, Cursor, ErrorCode, Lane};
use redis::AsyncCommands;
use room_svc::core::{default_room_config, resolve};
use room_svc::{AdminError, Ownership, RoomService, RoomServiceConfig, RoomStore, StoreHealth};
use support::*;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

fn start_on(store: RoomStore) -> RoomService {
    RoomService::start_with(quiet_config(2), store, None)
}

async fn wait_health(service: &RoomService, health: StoreHealth) {
    let mut watch = service.store().watch_health();
    timeout(GUARD, watch.wait_for(|now| *now == health))
        .await
        .expect("the health changes in time")
        .expect("the store is alive");
}

/// Sends `count` messages from `sender` one by one; the acks and the
/// messages as broadcast.
async fn send_many(
    node: &mut FakeNode,
    room: &str,
    sender: &str,
    first_request: u64,
    count: u64,
) -> Vec<ChatMessage> {
    let mut messages = Vec::new();
    for request_id in first_request..first_request + count {
        node.send(send_body(send(room, sender, request_id)));
        let ack = node.next_ack().await;
        let broadcast = node.next_broadcast().await;
        assert_eq!(broadcast.messages.len(), 1);
        assert_eq!(broadcast.messages[0].msg_id, ack.msg_id);
        messages.extend(broadcast.messages);
    }
    messages
}

/// Fields of a room's `meta` hash, as stored.
async fn stored_meta(redis: &TestRedis, cluster: &str, room: &str, fields: &[&str]) -> Vec<u64> {
    let mut raw = redis.raw().await;
    redis::cmd("HMGET")
        .arg(format!("chatroom:{cluster}:room:{room}:meta"))
        .arg(fields)
        .query_async(&mut raw)
        .await
        .unwrap()
}

async fn stored_history(redis: &TestRedis, cluster: &str, room: &str) -> Vec<ChatMessage> {
    let mut raw = redis.raw().await;
    let key = format!("chatroom:{cluster}:room:{room}:history");
    let encoded: Vec<Vec<u8>> = raw.lrange(key, 0, -1).await.unwrap();
    encoded
        .iter()
        .map(|bytes| ChatMessage::decode(bytes.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn rooms_survive_a_restart_over_the_same_redis() {
    let redis = TestRedis::start();
    let config = config_with(|c| {
        c.history_size = 5;
        c.max_payload_bytes = 100;
    });
    let (epoch, sent) = {
        let service = start_on(redis.store("persist"));
        set_config(&service, ROOM, config.clone()).await.unwrap();
        let mut a = FakeNode::attach(&service, "a");
        let epoch = a.subscribe(ROOM).await.latest.unwrap().epoch;
        a.join(ROOM, &["alice", "bob", "vip"]);
        service.mute(ROOM, "bob", None).await.unwrap();
        service
            .mute(ROOM, "carol", Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        service.ban(ROOM, "eve").await.unwrap();
        service.whitelist_add(ROOM, "vip").await.unwrap();
        let sent = send_many(&mut a, ROOM, "alice", 1, 7).await;
        service.flush().await.expect("everything is written");
        (epoch, sent)
    };
    let last = sent.last().unwrap().clone();

    // The key schema, as written.
    let meta = stored_meta(
        &redis,
        "persist",
        ROOM,
        &["epoch", "msg_id", "normal_seq", "ts"],
    )
    .await;
    assert_eq!(meta, [epoch, last.msg_id, last.normal_seq, last.ts]);
    let mut raw = redis.raw().await;
    let stored_config: Vec<u8> = raw
        .get("chatroom:persist:room:stream-1:config")
        .await
        .unwrap();
    let stored = RoomOverrides::decode(stored_config.as_slice()).unwrap();
    assert_eq!(
        stored.max_payload_bytes,
        Some(100),
        "the overrides are stored"
    );
    assert_eq!(resolve(&default_room_config(), &stored), config);
    let bob_until: u64 = raw
        .hget("chatroom:persist:room:stream-1:mutes", "bob")
        .await
        .unwrap();
    assert_eq!(bob_until, 0, "0 is indefinite");
    let bans: Vec<String> = raw
        .smembers("chatroom:persist:room:stream-1:bans")
        .await
        .unwrap();
    assert_eq!(bans, ["eve"]);
    assert_eq!(stored_history(&redis, "persist", ROOM).await, sent[2..]);

    // A new service over the same Redis picks the room up where it was.
    let service = start_on(redis.store("persist"));
    let mut b = FakeNode::attach(&service, "b");
    let ack = b.subscribe(ROOM).await;
    assert_eq!(ack.latest, Some(Cursor::after(epoch, &last)));
    assert_eq!(ack.history, sent[2..], "the newest history_size messages");
    assert_eq!(ack.config.as_ref(), Some(&config));
    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!((stats.mutes, stats.bans, stats.whitelist), (2, 1, 1));

    b.join(ROOM, &["alice", "bob", "vip", "eve"]);
    assert_eq!(b.next_kick().await.user_id, "eve");
    let next = send_many(&mut b, ROOM, "alice", 100, 1).await;
    assert_eq!(next[0].msg_id, last.msg_id + 1);
    assert!(next[0].ts > last.ts);
    b.send(send_body(send(ROOM, "bob", 101)));
    assert_eq!(code(&b.next_error().await), ErrorCode::Muted);
    b.send(send_body(send(ROOM, "vip", 102)));
    assert_eq!(b.next_ack().await.lane, Lane::Priority as i32);
    b.send(send_body(SendRequest {
        payload: Bytes::from(vec![b'x'; 101]),
        ..send(ROOM, "alice", 103)
    }));
    b.next_broadcast().await;
    assert_eq!(code(&b.next_error().await), ErrorCode::PayloadTooLarge);
}

#[tokio::test]
async fn unmuting_and_unbanning_are_kept_too() {
    let redis = TestRedis::start();
    {
        let service = start_on(redis.store("lists"));
        // Kept, so the room has a record to come back to.
        service.mute(ROOM, "keeper", None).await.unwrap();
        service.ban(ROOM, "eve").await.unwrap();
        service.mute(ROOM, "bob", None).await.unwrap();
        service.whitelist_add(ROOM, "vip").await.unwrap();
        service.flush().await.unwrap();
        service.unban(ROOM, "eve").await.unwrap();
        service.unmute(ROOM, "bob").await.unwrap();
        service.whitelist_remove(ROOM, "vip").await.unwrap();
        service.flush().await.unwrap();
    }
    let service = start_on(redis.store("lists"));
    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!((stats.mutes, stats.bans, stats.whitelist), (1, 0, 0));
}

#[tokio::test]
async fn a_closed_room_is_gone_from_the_store() {
    let redis = TestRedis::start();
    let first = {
        let service = start_on(redis.store("close"));
        set_config(&service, ROOM, config_with(|c| c.max_payload_bytes = 9))
            .await
            .unwrap();
        service.ban(ROOM, "eve").await.unwrap();
        let mut a = FakeNode::attach(&service, "a");
        let first = a.subscribe(ROOM).await.latest.unwrap().epoch;
        a.join(ROOM, &["alice"]);
        send_many(&mut a, ROOM, "alice", 1, 2).await;
        service.close_room(ROOM).await.unwrap();
        assert!(a.next_update().await.closed);
        service.flush().await.unwrap();
        first
    };
    let service = start_on(redis.store("close"));
    assert_eq!(
        service.stats(ROOM).await,
        Err(AdminError::UnknownRoom(ROOM.into()))
    );
    let mut a = FakeNode::attach(&service, "a");
    let ack = a.subscribe(ROOM).await;
    let latest = ack.latest.unwrap();
    assert!(latest.epoch > first);
    assert_eq!(latest.msg_id, 0);
    assert!(ack.history.is_empty());
    assert_eq!(ack.config, Some(config_with(|_| {})));
    assert_eq!(service.stats(ROOM).await.unwrap().bans, 0);
}

#[tokio::test]
async fn sends_are_acked_while_redis_is_down_and_land_once_it_is_back() {
    let mut redis = TestRedis::start();
    let service = start_on(redis.store("outage"));
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    send_many(&mut a, ROOM, "alice", 1, 1).await;
    service.flush().await.unwrap();
    assert_eq!(service.store_health(), StoreHealth::Healthy);

    redis.server.kill();
    let during = send_many(&mut a, ROOM, "alice", 2, 3).await;
    assert_eq!(
        during.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    wait_health(&service, StoreHealth::Degraded).await;
    assert!(service.flush().await.is_err(), "nothing can be written");
    assert!(service.store().counters().write_failures > 0);

    // The restarted server is empty (nothing on disk); what waited lands.
    redis.server.restart().unwrap();
    wait_health(&service, StoreHealth::Healthy).await;
    service.flush().await.expect("the backlog is written");
    assert_eq!(stored_history(&redis, "outage", ROOM).await, during);
    let mut raw = redis.raw().await;
    let msg_id: u64 = raw
        .hget("chatroom:outage:room:stream-1:meta", "msg_id")
        .await
        .unwrap();
    assert_eq!(msg_id, 4);

    // And the service carries on.
    let after = send_many(&mut a, ROOM, "alice", 5, 1).await;
    service.flush().await.unwrap();
    let stored = stored_history(&redis, "outage", ROOM).await;
    assert_eq!(stored.last(), after.last());
    assert_eq!(stored.len(), 4, "no message written twice");
}

#[tokio::test]
async fn a_room_first_touched_while_redis_is_down_starts_afresh_in_bounded_time() {
    let mut redis = TestRedis::start();
    let service = start_on(redis.store("down"));
    redis.server.kill();
    let mut a = FakeNode::attach(&service, "a");
    let started = Instant::now();
    // Inputs for the room wait for the load, in order.
    a.send(subscribe(ROOM));
    a.join(ROOM, &["alice"]);
    a.send(send_body(send(ROOM, "alice", 1)));
    let ack = match a.next().await {
        chatroom_proto::cluster::v1::to_msg_svc::Body::SubscribeAck(ack) => ack,
        other => panic!("expected a SubscribeAck, got {other:?}"),
    };
    let waited = started.elapsed();
    // The load's own bound, and slack for a busy machine.
    let bound = test_store_config().load_timeout + Duration::from_secs(2);
    assert!(waited < bound, "the load gave up after {waited:?}");
    let latest = ack.latest.unwrap();
    assert!(latest.epoch > 0);
    assert_eq!(latest.msg_id, 0);
    assert_eq!(a.next_ack().await.msg_id, 1);
    a.next_broadcast().await;
    assert_eq!(service.store_health(), StoreHealth::Degraded);
    assert_eq!(service.store().counters().load_failures, 1);

    // Other rooms are not held up by a load: a room already in memory
    // answers while another one loads.
    a.send(subscribe("other-room"));
    a.send(send_body(send(ROOM, "alice", 2)));
    assert_eq!(a.next_ack().await.msg_id, 2);
}

#[tokio::test]
async fn sends_beyond_the_loading_queue_are_refused_until_the_room_is_loaded() {
    let mut redis = TestRedis::start();
    let service = RoomService::start_with(
        RoomServiceConfig {
            loading_queue: 3,
            ..quiet_config(1)
        },
        redis.store("queue"),
        None,
    );
    redis.server.kill();
    let mut a = FakeNode::attach(&service, "a");
    a.send(subscribe(ROOM));
    a.join(ROOM, &["alice"]);
    for request_id in 1..=3 {
        a.send(send_body(send(ROOM, "alice", request_id)));
    }
    // The two sends beyond the bound are answered at once.
    for request_id in 2..=3 {
        let result = a.next_result().await;
        assert_eq!(result.request_id, request_id);
        let Some(chatroom_proto::cluster::v1::send_result::Outcome::Error(error)) = result.outcome
        else {
            panic!("expected a refusal, got {result:?}");
        };
        assert_eq!(code(&error), ErrorCode::Overloaded);
        assert_eq!(error.retry_after_ms, 500);
    }
    // What fit in the queue is handled, in order, once the load settles.
    let ack = a.next().await;
    assert!(
        matches!(
            ack,
            chatroom_proto::cluster::v1::to_msg_svc::Body::SubscribeAck(_)
        ),
        "{ack:?}"
    );
    let result = a.next_result().await;
    assert_eq!(result.request_id, 1);
    assert!(matches!(
        result.outcome,
        Some(chatroom_proto::cluster::v1::send_result::Outcome::Ack(_))
    ));
}

#[tokio::test]
async fn a_subscriber_ahead_of_the_store_moves_the_stream_past_it() {
    let redis = TestRedis::start();
    let (epoch, last) = {
        let service = start_on(redis.store("ahead"));
        let mut a = FakeNode::attach(&service, "a");
        let epoch = a.subscribe(ROOM).await.latest.unwrap().epoch;
        a.join(ROOM, &["alice"]);
        let sent = send_many(&mut a, ROOM, "alice", 1, 2).await;
        service.flush().await.unwrap();
        (epoch, sent[1].clone())
    };
    // A previous owner stamped up to msg 10 and the store never got them;
    // a node holds that position.
    let seen = Cursor {
        epoch,
        ts: last.ts + 5_000_000,
        msg_id: 10,
        normal_seq: 10,
    };
    let service = start_on(redis.store("ahead"));
    let mut a = FakeNode::attach(&service, "a");
    let ack = a.subscribe_from(ROOM, seen).await;
    assert_eq!(ack.latest, Some(seen));
    assert_eq!(ack.history.len(), 2);
    a.join(ROOM, &["alice"]);
    let next = send_many(&mut a, ROOM, "alice", 3, 1).await;
    assert_eq!((next[0].msg_id, next[0].normal_seq), (11, 11));
    assert!(next[0].ts > seen.ts);

    // A position behind the room changes nothing.
    let mut b = FakeNode::attach(&service, "b");
    let behind = Cursor::after(epoch, &last);
    let ack = b.subscribe_from(ROOM, behind).await;
    assert_eq!(ack.latest.unwrap().msg_id, 11);
}

#[tokio::test]
async fn a_fresh_room_adopts_a_subscribers_stream() {
    let redis = TestRedis::start();
    let service = start_on(redis.store("adopt"));
    let seen = Cursor {
        epoch: 12_345,
        ts: 1_700_000_000_000_000,
        msg_id: 5,
        normal_seq: 4,
    };
    let mut a = FakeNode::attach(&service, "a");
    let ack = a.subscribe_from(ROOM, seen).await;
    assert_eq!(ack.latest, Some(seen));
    a.join(ROOM, &["alice"]);
    let next = send_many(&mut a, ROOM, "alice", 1, 1).await;
    assert_eq!((next[0].msg_id, next[0].normal_seq), (6, 5));

    // The adopted stream is what the store keeps.
    service.flush().await.unwrap();
    let restarted = start_on(redis.store("adopt"));
    let mut b = FakeNode::attach(&restarted, "b");
    let ack = b.subscribe(ROOM).await;
    assert_eq!(ack.latest, Some(Cursor::after(seen.epoch, &next[0])));
    assert_eq!(ack.history, next);
}

fn room_svc(id: &str) -> NodeInfo {
    NodeInfo::new(id, Role::RoomSvc)
}

#[tokio::test]
async fn only_owned_rooms_are_served_and_rooms_that_move_away_are_dropped() {
    let redis = TestRedis::start();
    let both = Arc::new(Members::new([room_svc("r1"), room_svc("r2")]));
    let only_me = Arc::new(Members::new([room_svc("r1")]));
    let room = (0..)
        .map(|i| format!("room-{i}"))
        .find(|room| both.room_owner(room).unwrap().id == "r2")
        .unwrap();
    let (view, members) = watch::channel(Arc::clone(&both));
    let service = RoomService::start_with(
        quiet_config(2),
        redis.store("owners"),
        Some(Ownership::new("r1", members, Lease::forever())),
    );
    let mut a = FakeNode::attach(&service, "a");

    // r2 owns the room.
    a.send(subscribe(&room));
    assert_eq!(a.next_not_owner().await.room_id, room);
    a.send(send_body(send(&room, "alice", 1)));
    let error = a.next_error().await;
    assert_eq!(code(&error), ErrorCode::Overloaded);
    assert_eq!(error.message, "room is moving to another room service");
    assert_eq!(error.retry_after_ms, 200);
    a.join(&room, &["alice"]);
    assert_eq!(
        service.stats(&room).await,
        Err(AdminError::NotOwner(room.clone()))
    );
    a.assert_quiet();

    // r2 leaves: the room is this node's.
    view.send_replace(Arc::clone(&only_me));
    let epoch = a.subscribe(&room).await.latest.unwrap().epoch;
    a.join(&room, &["alice"]);
    let sent = send_many(&mut a, &room, "alice", 2, 2).await;

    // r2 is back: the room moves away, subscribers are told, memory is freed.
    view.send_replace(Arc::clone(&both));
    assert_eq!(a.next_not_owner().await.room_id, room);
    assert_eq!(
        service.stats(&room).await,
        Err(AdminError::NotOwner(room.clone()))
    );

    // Regained: rebuilt from the store (the old subscription and members
    // are gone with the memory).
    view.send_replace(only_me);
    let ack = a.subscribe(&room).await;
    assert_eq!(ack.latest, Some(Cursor::after(epoch, &sent[1])));
    assert_eq!(ack.history, sent);
    assert_eq!(ack.member_count, 0);
    let stats = service.stats(&room).await.unwrap();
    assert_eq!((stats.nodes, stats.members), (1, 0));
}

#[tokio::test]
async fn a_hung_redis_applies_the_timed_out_batch_late_and_the_retry_adds_nothing_twice() {
    let redis = TestRedis::start();
    let service = start_on(redis.store("hung"));
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    send_many(&mut a, ROOM, "alice", 1, 1).await;
    service.flush().await.unwrap();

    // The transaction sits in the socket while Redis is stopped, times out,
    // and runs once Redis continues: the writer cannot know it did.
    redis.server.pause().unwrap();
    let during = send_many(&mut a, ROOM, "alice", 2, 2).await;
    wait_health(&service, StoreHealth::Degraded).await;
    redis.server.resume().unwrap();
    wait_health(&service, StoreHealth::Healthy).await;
    service.flush().await.unwrap();
    let stored = stored_history(&redis, "hung", ROOM).await;
    let ids: Vec<u64> = stored.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(stored[1..], during);
}

/// The value of `series` (a line's first word) in the service's metrics,
/// once `done` holds for it; waits for the idle sweep, not a fixed time.
async fn metric_when(service: &RoomService, series: &str, done: impl Fn(f64) -> bool) -> f64 {
    let mut registry = chatroom_cluster::metrics::registry();
    service.register_metrics(&mut registry);
    timeout(GUARD, async {
        loop {
            let text = chatroom_cluster::metrics::render(&registry);
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|value| value.parse().ok());
            if let Some(value) = value.filter(|v| done(*v)) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the metric reaches its value in time")
}

fn unsubscribe(room: &str) -> chatroom_proto::cluster::v1::to_room_svc::Body {
    chatroom_proto::cluster::v1::to_room_svc::Body::Unsubscribe(
        chatroom_proto::cluster::v1::Unsubscribe {
            room_id: room.into(),
        },
    )
}

#[tokio::test]
async fn an_idle_room_is_dropped_from_memory_and_comes_back_where_it_was() {
    let redis = TestRedis::start();
    let service = RoomService::start_with(
        RoomServiceConfig {
            idle_room_ttl: Duration::from_millis(100),
            ..quiet_config(1)
        },
        redis.store("idle"),
        None,
    );
    let config = config_with(|c| c.max_payload_bytes = 100);
    set_config(&service, ROOM, config.clone()).await.unwrap();
    let mut a = FakeNode::attach(&service, "a");
    let epoch = a.subscribe(ROOM).await.latest.unwrap().epoch;
    a.join(ROOM, &["alice"]);
    service.ban(ROOM, "eve").await.unwrap();
    let sent = send_many(&mut a, ROOM, "alice", 1, 3).await;
    assert_eq!(
        metric_when(&service, "chatroom_rooms_owned", |v| v == 1.0).await,
        1.0
    );

    a.send(unsubscribe(ROOM));
    metric_when(&service, "chatroom_idle_rooms_dropped_total", |v| v == 1.0).await;
    metric_when(&service, "chatroom_rooms_owned", |v| v == 0.0).await;

    // Used again, it is loaded with its stream, settings and bans.
    let ack = a.subscribe(ROOM).await;
    let last = sent.last().unwrap();
    assert_eq!(ack.latest, Some(Cursor::after(epoch, last)));
    assert_eq!(ack.config.as_ref(), Some(&config));
    a.join(ROOM, &["alice", "eve"]);
    assert_eq!(a.next_kick().await.user_id, "eve");
    let next = send_many(&mut a, ROOM, "alice", 10, 1).await;
    assert_eq!(next[0].msg_id, last.msg_id + 1);
}

#[tokio::test]
async fn without_a_store_only_rooms_holding_nothing_set_are_dropped() {
    let service = RoomService::start(RoomServiceConfig {
        idle_room_ttl: Duration::from_millis(100),
        ..quiet_config(1)
    });
    let mut a = FakeNode::attach(&service, "a");
    for room in ["plain", "moderated", "configured"] {
        a.subscribe(room).await;
    }
    service.ban("moderated", "eve").await.unwrap();
    set_config(
        &service,
        "configured",
        config_with(|c| c.max_payload_bytes = 100),
    )
    .await
    .unwrap();
    for room in ["plain", "moderated", "configured"] {
        a.send(unsubscribe(room));
    }
    metric_when(&service, "chatroom_idle_rooms_dropped_total", |v| v >= 1.0).await;
    assert_eq!(
        service.stats("plain").await.unwrap_err(),
        AdminError::UnknownRoom("plain".into())
    );
    assert_eq!(service.stats("moderated").await.unwrap().bans, 1);
    let settings = service.room_config("configured").await.unwrap();
    assert_eq!(settings.config.max_payload_bytes, 100);
    assert_eq!(
        metric_when(&service, "chatroom_idle_rooms_dropped_total", |_| true).await,
        1.0,
        "the rooms holding what an operator set stay"
    );
}

#[tokio::test]
async fn a_stale_owner_s_writes_are_refused_once_a_newer_owner_took_the_room() {
    let redis = TestRedis::start();
    let start_as = |id: &str, term: u64| {
        let view = Arc::new(Members::new([room_svc(id)]).with_term(term));
        let (view, members) = watch::channel(view);
        let service = RoomService::start_with(
            quiet_config(2),
            redis.store("fenced"),
            Some(Ownership::new(id, members, Lease::forever())),
        );
        (service, view)
    };
    // r1 took the room in view 5; r2 takes it in view 9 while r1, cut
    // off, still believes it owns it.
    let (old, old_view) = start_as("r1", 5);
    let (new, _new_view) = start_as("r2", 9);
    let mut a = FakeNode::attach(&old, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    send_many(&mut a, ROOM, "alice", 1, 2).await;
    old.flush().await.unwrap();

    let mut b = FakeNode::attach(&new, "b");
    let ack = b.subscribe(ROOM).await;
    assert_eq!(
        ack.latest.unwrap().msg_id,
        2,
        "the new owner continues the stream"
    );
    b.join(ROOM, &["bob"]);
    let fresh = send_many(&mut b, ROOM, "bob", 1, 1).await;
    new.flush().await.unwrap();

    // The stale owner stamps the next msg_id (the one the new owner gave
    // bob's message); the store refuses the write before anybody is told
    // of it: the sender is told to retry, nothing is broadcast, and the
    // room is dropped.
    a.send(send_body(send(ROOM, "alice", 3)));
    let error = a.next_error().await;
    assert_eq!(code(&error), ErrorCode::Overloaded);
    assert_eq!(
        error.message,
        "the room moved to another room service; retry"
    );
    assert_eq!(a.next_not_owner().await.room_id, ROOM);
    old.flush().await.unwrap();
    assert_eq!(fresh[0].msg_id, 3);
    assert_eq!(old.store().counters().fenced_writes, 1);
    assert_eq!(new.store().counters().fenced_writes, 0);
    let history = stored_history(&redis, "fenced", ROOM).await;
    let stored: Vec<(u64, &str)> = history
        .iter()
        .map(|msg| (msg.msg_id, msg.sender.as_str()))
        .collect();
    assert_eq!(stored, [(1, "alice"), (2, "alice"), (3, "bob")]);
    let meta = || stored_meta(&redis, "fenced", ROOM, &["msg_id", "fence"]);
    assert_eq!(meta().await, [3, 9], "the store never goes back");

    // Nor can the stale owner take the room again in its old view: not
    // while it remembers the refusal, nor after (a view as old as before),
    // when the store refuses to let it take the room.
    a.send(subscribe(ROOM));
    assert_eq!(a.next_not_owner().await.room_id, ROOM);
    a.send(send_body(send(ROOM, "alice", 4)));
    assert_eq!(code(&a.next_error().await), ErrorCode::Overloaded);
    old_view.send_modify(|_| {});
    a.send(subscribe(ROOM));
    assert_eq!(a.next_not_owner().await.room_id, ROOM);
    a.assert_quiet();
    assert_eq!(meta().await, [3, 9]);
}

#[tokio::test]
async fn what_is_acked_is_already_stored() {
    let redis = TestRedis::start();
    let service = start_on(redis.store("ahead"));
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    for request_id in 1..=3 {
        a.send(send_body(send(ROOM, "alice", request_id)));
        let ack = a.next_ack().await;
        // No flush: the ack itself says the message is in Redis.
        let stored = stored_history(&redis, "ahead", ROOM).await;
        assert_eq!(
            stored.last().map(|msg| msg.msg_id),
            Some(ack.msg_id),
            "acked before it was stored"
        );
        a.next_broadcast().await;
    }
}
