//! The room service driven through its public API, with fake msg-svc nodes
//! attached over real bounded channels (the embedded mode's transport).
//! Every wait is on an event, bounded by a timeout that only guards against
//! a hang.

mod support;

use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::link::{LinkError, UpLink};
use chatroom_proto::cluster::v1::{
    SendRequest, ToRoomSvc, Unsubscribe, send_result, to_msg_svc, to_room_svc,
};
use chatroom_proto::v1::{Cursor, ErrorCode, KickReason, Kind, Lane};
use room_svc::{AdminError, RoomService, RoomServiceConfig};
use support::*;
use tokio::time::timeout;

#[tokio::test]
async fn subscribe_ack_carries_config_history_and_latest() {
    let service = start(2);
    let config = config_with(|c| c.history_size = 2);
    assert_eq!(
        set_config(&service, ROOM, config.clone()).await,
        Ok(config.clone())
    );
    let mut a = FakeNode::attach(&service, "a");
    let ack = a.subscribe(ROOM).await;
    assert_eq!(ack.room_id, ROOM);
    assert_eq!(ack.config.as_ref(), Some(&config));
    assert!(ack.history.is_empty());
    assert_eq!(ack.member_count, 0);
    let epoch = ack.latest.expect("a cursor").epoch;
    assert!(epoch > 0);
    assert_eq!(ack.latest, Some(Cursor::start(epoch)));

    a.join(ROOM, &["alice"]);
    for request_id in 1..=3 {
        a.send(send_body(send(ROOM, "alice", request_id)));
    }
    for _ in 1..=3 {
        a.next_ack().await;
    }
    let broadcast = a.next_broadcast().await;
    assert_eq!(broadcast.messages.len(), 3, "one drain, one broadcast");

    let mut b = FakeNode::attach(&service, "b");
    let ack = b.subscribe(ROOM).await;
    let ids: Vec<u64> = ack.history.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [2, 3]);
    assert_eq!(ack.history[1], broadcast.messages[2]);
    assert_eq!(ack.member_count, 1);
    assert_eq!(
        ack.latest,
        Some(Cursor::after(epoch, &broadcast.messages[2]))
    );
}

#[tokio::test]
async fn one_broadcast_copy_per_subscribed_node_only() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    let mut c = FakeNode::attach(&service, "c");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    c.subscribe("another-room").await;
    a.join(ROOM, &["alice"]);
    for request_id in 1..=3 {
        a.send(send_body(send(ROOM, "alice", request_id)));
    }
    for request_id in 1..=3 {
        let result = a.next_result().await;
        assert_eq!((result.session_id, result.request_id), (77, request_id));
    }
    let on_a = a.next_broadcast().await;
    let on_b = b.next_broadcast().await;
    assert_eq!(on_a, on_b);
    assert_eq!(on_a.room_id, ROOM);
    assert_eq!(on_a.messages.len(), 3);

    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!(stats.broadcast_frames, 2);
    assert_eq!(stats.broadcast_messages, 6);
    assert_eq!(stats.nodes, 2);
    a.assert_quiet();
    b.assert_quiet();
    c.assert_quiet();

    // Once unsubscribed, b gets nothing more.
    b.send(to_room_svc::Body::Unsubscribe(Unsubscribe {
        room_id: ROOM.into(),
    }));
    a.send(send_body(send(ROOM, "alice", 4)));
    a.next_ack().await;
    assert_eq!(a.next_broadcast().await.messages.len(), 1);
    assert_eq!(service.stats(ROOM).await.unwrap().nodes, 1);
    b.assert_quiet();
    c.assert_quiet();
}

#[tokio::test]
async fn acks_carry_strictly_increasing_ids_and_timestamps() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice", "bob"]);
    let mut acks = Vec::new();
    for request_id in 1..=20 {
        let sender = if request_id % 2 == 0 { "alice" } else { "bob" };
        a.send(send_body(send(ROOM, sender, request_id)));
        acks.push(a.next_ack().await);
        let broadcast = a.next_broadcast().await;
        assert_eq!(broadcast.messages.len(), 1);
        let msg = &broadcast.messages[0];
        assert_eq!(
            (msg.msg_id, msg.ts),
            (acks[acks.len() - 1].msg_id, acks[acks.len() - 1].ts)
        );
        assert_eq!(msg.normal_seq, msg.msg_id);
    }
    for (i, pair) in acks.windows(2).enumerate() {
        assert_eq!(pair[0].msg_id, i as u64 + 1);
        assert_eq!(pair[1].msg_id, pair[0].msg_id + 1);
        assert!(pair[1].ts > pair[0].ts);
    }
}

#[tokio::test]
async fn sending_without_membership_is_not_joined() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    // A room nobody ever subscribed to.
    a.send(send_body(send("nowhere", "alice", 1)));
    assert_eq!(code(&a.next_error().await), ErrorCode::NotJoined);

    a.subscribe(ROOM).await;
    a.send(send_body(send(ROOM, "alice", 2)));
    let error = a.next_error().await;
    assert_eq!(code(&error), ErrorCode::NotJoined);
    assert_eq!(error.message, "join the room before sending to it");

    a.join(ROOM, &["alice"]);
    a.send(send_body(send(ROOM, "alice", 3)));
    assert_eq!(a.next_ack().await.msg_id, 1);
    a.send(membership(ROOM, &[], &["alice"]));
    a.send(send_body(send(ROOM, "alice", 5)));
    a.next_broadcast().await;
    assert_eq!(code(&a.next_error().await), ErrorCode::NotJoined);
}

#[tokio::test]
async fn over_the_limit_is_rate_limited_while_priority_passes() {
    let service = start(2);
    set_config(
        &service,
        ROOM,
        config_with(|c| {
            c.normal_per_s = 1;
            c.normal_burst = 1;
        }),
    )
    .await
    .unwrap();
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice", "bot"]);
    a.send(send_body(send(ROOM, "alice", 1)));
    a.send(send_body(send(ROOM, "alice", 2)));
    a.send(send_body(SendRequest {
        sender_roles: vec!["system".into()],
        ..send(ROOM, "bot", 3)
    }));
    assert_eq!(a.next_ack().await.lane, Lane::Normal as i32);
    let error = a.next_error().await;
    assert_eq!(code(&error), ErrorCode::RateLimited);
    assert!((1..=1000).contains(&error.retry_after_ms), "{error:?}");
    assert_eq!(error.message, "normal lane limit 1 msg/s reached");
    assert_eq!(a.next_ack().await.lane, Lane::Priority as i32);
    let broadcast = a.next_broadcast().await;
    let senders: Vec<&str> = broadcast
        .messages
        .iter()
        .map(|m| m.sender.as_str())
        .collect();
    assert_eq!(senders, ["alice", "bot"]);
    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!(stats.rejected["rate_limited"], 1);
    assert_eq!((stats.accepted_normal, stats.accepted_priority), (1, 1));
}

#[tokio::test]
async fn a_resend_gets_the_same_ack_and_no_second_broadcast() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    let request = SendRequest {
        client_msg_id: 4242,
        ..send(ROOM, "alice", 1)
    };
    a.send(send_body(request.clone()));
    let first = a.next_ack().await;
    a.next_broadcast().await;
    b.next_broadcast().await;

    a.send(send_body(SendRequest {
        request_id: 2,
        ..request
    }));
    let again = a.next_result().await;
    assert_eq!(again.request_id, 2);
    assert_eq!(again.outcome, Some(send_result::Outcome::Ack(first)));
    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!(stats.duplicates, 1);
    assert_eq!(stats.latest.msg_id, 1);
    a.assert_quiet();
    b.assert_quiet();
}

#[tokio::test]
async fn ban_kicks_where_the_user_is_and_refuses_later_sends() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    a.join(ROOM, &["bob"]);
    b.join(ROOM, &["alice"]);
    assert_eq!(service.stats(ROOM).await.unwrap().members, 2);

    service.ban(ROOM, "alice").await.unwrap();
    let kick = b.next_kick().await;
    assert_eq!(kick.room_id, ROOM);
    assert_eq!(kick.user_id, "alice");
    assert_eq!(kick.reason, KickReason::Banned as i32);
    a.assert_quiet();
    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!((stats.members, stats.bans), (1, 1));

    b.send(send_body(send(ROOM, "alice", 1)));
    assert_eq!(code(&b.next_error().await), ErrorCode::Banned);
    // A report of her joining again is answered with another kick.
    b.join(ROOM, &["alice"]);
    assert_eq!(b.next_kick().await.user_id, "alice");
    assert_eq!(service.stats(ROOM).await.unwrap().members, 1);

    service.unban(ROOM, "alice").await.unwrap();
    b.join(ROOM, &["alice"]);
    b.send(send_body(send(ROOM, "alice", 2)));
    b.next_ack().await;
}

#[tokio::test]
async fn a_muted_user_is_refused_until_unmuted() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    service
        .mute(ROOM, "alice", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    a.send(send_body(send(ROOM, "alice", 1)));
    let error = a.next_error().await;
    assert_eq!(code(&error), ErrorCode::Muted);
    assert!(
        (29_000..=30_000).contains(&error.retry_after_ms),
        "{error:?}"
    );
    assert_eq!(error.message, "muted for 30 s more");
    assert_eq!(service.stats(ROOM).await.unwrap().mutes, 1);

    service.unmute(ROOM, "alice").await.unwrap();
    a.send(send_body(send(ROOM, "alice", 2)));
    a.next_ack().await;
}

#[tokio::test]
async fn config_changes_are_pushed_to_subscribers_only() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    let mut c = FakeNode::attach(&service, "c");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    c.subscribe("elsewhere").await;
    a.join(ROOM, &["alice"]);

    let config = config_with(|c| {
        c.max_payload_bytes = 100;
        c.round_interval_ms = 500;
    });
    set_config(&service, ROOM, config.clone()).await.unwrap();
    for node in [&mut a, &mut b] {
        let update = node.next_update().await;
        assert_eq!(update.room_id, ROOM);
        assert_eq!(update.config.as_ref(), Some(&config));
        assert_eq!(update.member_count, 1);
        assert!(!update.closed);
    }
    c.assert_quiet();
    assert_eq!(
        service.room_config(ROOM).await.map(|s| s.config),
        Ok(config.clone())
    );

    let bad = config_with(|c| c.priority_ring = 0);
    assert!(matches!(
        set_config(&service, ROOM, bad).await,
        Err(AdminError::InvalidConfig(_))
    ));
    assert_eq!(
        service.room_config(ROOM).await.map(|s| s.config),
        Ok(config)
    );
    a.assert_quiet();

    // The new payload limit is in force.
    a.send(send_body(SendRequest {
        payload: Bytes::from(vec![b'x'; 101]),
        ..send(ROOM, "alice", 1)
    }));
    assert_eq!(code(&a.next_error().await), ErrorCode::PayloadTooLarge);
}

/// A room service pushing member counts each second, and two nodes
/// attached to it.
fn counting_nodes() -> (RoomService, FakeNode, FakeNode) {
    let service = RoomService::start(RoomServiceConfig {
        workers: 1,
        member_update_interval: Duration::from_secs(1),
        ..RoomServiceConfig::default()
    });
    let a = FakeNode::attach(&service, "a");
    let b = FakeNode::attach(&service, "b");
    (service, a, b)
}

#[tokio::test(start_paused = true)]
async fn member_count_updates_are_coalesced() {
    let (_service, mut a, mut b) = counting_nodes();
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    // Time stands still until the runtime is idle: all of these land
    // within one update interval.
    a.send(membership(ROOM, &["u1"], &[]));
    a.send(membership(ROOM, &["u2", "u3"], &[]));
    b.send(membership(ROOM, &["u2", "u4"], &[]));
    a.send(membership(ROOM, &[], &["u1"]));
    for node in [&mut a, &mut b] {
        let update = node.next_update().await;
        assert_eq!(update.member_count, 3);
        assert_eq!(update.config, None);
        assert!(!update.closed);
    }
    // Nothing changed since: no further update, however long we wait.
    assert!(
        timeout(Duration::from_secs(5), a.down.recv())
            .await
            .is_err()
    );

    // A change that cancels out within an interval is not pushed either.
    a.send(membership(ROOM, &["u5"], &[]));
    a.send(membership(ROOM, &[], &["u5"]));
    assert!(
        timeout(Duration::from_secs(5), a.down.recv())
            .await
            .is_err()
    );

    // The next real change is.
    b.send(membership(ROOM, &[], &["u2", "u4"]));
    assert_eq!(a.next_update().await.member_count, 2);
}

#[tokio::test(start_paused = true)]
async fn each_node_hears_which_of_its_reports_a_count_includes() {
    let (service, mut a, mut b) = counting_nodes();
    assert_eq!(a.subscribe(ROOM).await.membership_seq, 0);
    b.subscribe(ROOM).await;
    a.send(numbered_membership(ROOM, 1, &["u1"], &[]));
    a.send(numbered_membership(ROOM, 2, &["u2"], &[]));
    b.send(numbered_membership(ROOM, 7, &["u3"], &[]));
    let (to_a, to_b) = (a.next_update().await, b.next_update().await);
    assert_eq!((to_a.member_count, to_a.membership_seq), (3, 2));
    assert_eq!((to_b.member_count, to_b.membership_seq), (3, 7));

    // A report that changes no count (u1 is already counted, through b)
    // is still confirmed to its node, and to it alone.
    b.send(numbered_membership(ROOM, 8, &["u1"], &[]));
    let to_b = b.next_update().await;
    assert_eq!((to_b.member_count, to_b.membership_seq), (3, 8));
    assert!(
        timeout(Duration::from_secs(5), a.down.recv())
            .await
            .is_err(),
        "a has nothing new to hear"
    );

    // A banned user's join is confirmed without counting them.
    service.ban(ROOM, "eve").await.unwrap();
    a.send(numbered_membership(ROOM, 3, &["eve"], &[]));
    a.next_kick().await;
    let to_a = a.next_update().await;
    assert_eq!((to_a.member_count, to_a.membership_seq), (3, 3));
}

#[tokio::test]
async fn close_room_tells_subscribers_and_forgets_the_room() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    let first = a.subscribe(ROOM).await.latest.unwrap().epoch;
    a.join(ROOM, &["alice"]);
    a.send(send_body(send(ROOM, "alice", 1)));
    a.next_ack().await;
    a.next_broadcast().await;

    service.close_room(ROOM).await.unwrap();
    let update = a.next_update().await;
    assert!(update.closed);
    assert_eq!(update.room_id, ROOM);
    assert_eq!(
        service.stats(ROOM).await,
        Err(AdminError::UnknownRoom(ROOM.into()))
    );
    assert_eq!(
        service.close_room(ROOM).await,
        Err(AdminError::UnknownRoom(ROOM.into()))
    );
    // Its overrides went with it.
    let settings = service.room_config(ROOM).await.unwrap();
    assert_eq!(settings.config, room_svc::core::default_room_config());
    assert_eq!(settings.overrides, Default::default());

    // Subscribing again starts a new stream.
    let ack = a.subscribe(ROOM).await;
    let latest = ack.latest.unwrap();
    assert!(latest.epoch > first);
    assert_eq!(latest.msg_id, 0);
    assert!(ack.history.is_empty());
}

#[tokio::test]
async fn a_full_worker_queue_refuses_frames() {
    let service = RoomService::start(RoomServiceConfig {
        worker_queue: 1,
        ..quiet_config(1)
    });
    // Nobody reads this node's downlink, which holds one frame.
    let mut a = FakeNode::attach_with_capacity(&service, "a", 1);
    let mut refused = false;
    let mut queued = 0;
    for i in 0..100 {
        let frame = ToRoomSvc {
            body: Some(subscribe(&format!("room-{i}"))),
        };
        match a.port.try_send(frame) {
            Ok(()) => queued += 1,
            Err(LinkError::Full) => {
                refused = true;
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        // Let the worker take what it can.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    assert!(refused, "the queue never filled");
    // One ack on the downlink, one the worker waits to send, one queued.
    assert!(queued <= 3, "{queued} frames queued");

    // Draining the downlink lets everything through again.
    for _ in 0..queued {
        assert!(matches!(a.next().await, to_msg_svc::Body::SubscribeAck(_)));
    }
    let ack = a.subscribe("room-after").await;
    assert_eq!(ack.room_id, "room-after");
}

#[tokio::test]
async fn invalid_room_ids_are_refused() {
    let service = start(1);
    let mut a = FakeNode::attach(&service, "a");
    a.send(send_body(send("bad room", "alice", 9)));
    let result = a.next_result().await;
    assert_eq!(result.request_id, 9);
    match result.outcome {
        Some(send_result::Outcome::Error(error)) => {
            assert_eq!(code(&error), ErrorCode::BadRequest);
            assert_eq!(
                error.message,
                "room id contains ' ', outside [A-Za-z0-9_.:@-]"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    a.send(send_body(send("", "alice", 10)));
    assert_eq!(code(&a.next_error().await), ErrorCode::BadRequest);
    a.send(send_body(send(ROOM, "al ice", 11)));
    assert_eq!(code(&a.next_error().await), ErrorCode::BadRequest);

    // Other frames with a bad room id are dropped.
    a.send(subscribe("bad/room"));
    a.send(membership(&"x".repeat(129), &["alice"], &[]));
    // A frame without a body is dropped at the port.
    assert_eq!(a.port.try_send(ToRoomSvc { body: None }), Ok(()));
    a.subscribe(ROOM).await;
    a.assert_quiet();

    assert!(matches!(
        service.ban("bad room", "alice").await,
        Err(AdminError::BadRoomId(_))
    ));
    assert!(matches!(
        service.mute(ROOM, "", None).await,
        Err(AdminError::BadUserId(_))
    ));
    assert!(matches!(
        service.post_notice(ROOM, "o p s", Bytes::new()).await,
        Err(AdminError::BadUserId(_))
    ));
}

#[tokio::test]
async fn notices_are_broadcast_on_the_priority_lane() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    let ack = service
        .post_notice(ROOM, "ops", Bytes::from_static(b"stream starts soon"))
        .await
        .unwrap();
    assert_eq!(ack.lane, Lane::Priority as i32);
    for node in [&mut a, &mut b] {
        let broadcast = node.next_broadcast().await;
        let msg = &broadcast.messages[0];
        assert_eq!(
            (msg.msg_id, msg.ts, msg.lane),
            (ack.msg_id, ack.ts, ack.lane)
        );
        assert_eq!(msg.kind, Kind::Notice as i32);
        assert_eq!(msg.sender, "ops");
        assert_eq!(&msg.payload[..], b"stream starts soon");
    }
    let refused = service
        .post_notice(ROOM, "ops", Bytes::from(vec![0; 5000]))
        .await;
    match refused {
        Err(AdminError::NoticeRefused(error)) => {
            assert_eq!(code(&error), ErrorCode::PayloadTooLarge)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    a.assert_quiet();
}

#[tokio::test]
async fn whitelisted_senders_go_to_the_priority_lane() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["vip"]);
    service.whitelist_add(ROOM, "vip").await.unwrap();
    a.send(send_body(send(ROOM, "vip", 1)));
    assert_eq!(a.next_ack().await.lane, Lane::Priority as i32);
    a.next_broadcast().await;
    service.whitelist_remove(ROOM, "vip").await.unwrap();
    a.send(send_body(send(ROOM, "vip", 2)));
    assert_eq!(a.next_ack().await.lane, Lane::Normal as i32);
}

#[tokio::test]
async fn a_node_with_a_closed_downlink_is_detached() {
    let service = start(1);
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    b.join(ROOM, &["bob"]);
    assert_eq!(service.stats(ROOM).await.unwrap().members, 2);

    b.down.close();
    a.send(send_body(send(ROOM, "alice", 1)));
    a.next_ack().await;
    a.next_broadcast().await;
    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!((stats.nodes, stats.members), (1, 1));

    // The worker carries on.
    a.send(send_body(send(ROOM, "alice", 2)));
    assert_eq!(a.next_ack().await.msg_id, 2);
}

#[tokio::test]
async fn workers_stop_once_every_handle_is_dropped() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    let FakeNode { port, mut down } = a;
    let port_clone = port.clone();
    drop(port);
    drop(service);
    // The port clone still holds the service: the worker is alive.
    port_clone
        .try_send(ToRoomSvc {
            body: Some(subscribe(ROOM)),
        })
        .unwrap();
    assert!(matches!(
        timeout(GUARD, down.recv())
            .await
            .unwrap()
            .and_then(|f| f.body),
        Some(to_msg_svc::Body::SubscribeAck(_))
    ));
    drop(port_clone);
    // The workers end and drop their handles on the downlink.
    assert!(timeout(GUARD, down.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn stats_serialize_for_the_admin_api() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    a.send(send_body(send(ROOM, "nobody", 1)));
    a.next_error().await;
    let stats = service.stats(ROOM).await.unwrap();
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["room_id"], ROOM);
    assert_eq!(json["members"], 1);
    assert_eq!(json["rejected"]["not_joined"], 1);
    assert_eq!(json["latest"]["msg_id"], 0);
    assert!(json["latest"]["epoch"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn disconnect_detaches_a_node_at_once() {
    let service = RoomService::start(RoomServiceConfig {
        member_update_interval: Duration::from_millis(10),
        ..quiet_config(2)
    });
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    b.subscribe("another-room").await;
    a.join(ROOM, &["alice"]);
    b.join(ROOM, &["bob", "carol"]);
    b.join("another-room", &["bob"]);
    assert_eq!(service.stats(ROOM).await.unwrap().members, 3);
    assert_eq!(service.stats("another-room").await.unwrap().members, 1);

    service.disconnect(&b.port).await;
    let stats = service.stats(ROOM).await.unwrap();
    assert_eq!((stats.nodes, stats.members), (1, 1));
    let other = service.stats("another-room").await.unwrap();
    assert_eq!((other.nodes, other.members), (0, 0));
    // The remaining subscriber learns the new count as usual (after the
    // counts pushed before, if a tick came between the joins).
    while a.next_update().await.member_count != 1 {}
    // The disconnected port takes nothing more.
    let frame = ToRoomSvc {
        body: Some(subscribe(ROOM)),
    };
    assert_eq!(b.port.try_send(frame.clone()), Err(LinkError::Down));
    assert_eq!(b.port.send(frame).await, Err(LinkError::Down));
    a.send(send_body(send(ROOM, "alice", 1)));
    a.next_ack().await;
    a.next_broadcast().await;
    assert_eq!(service.stats(ROOM).await.unwrap().broadcast_frames, 1);
}

#[tokio::test]
async fn node_port_send_waits_for_queue_room_instead_of_failing() {
    let service = RoomService::start(RoomServiceConfig {
        worker_queue: 1,
        ..quiet_config(1)
    });
    // Nobody reads this node's downlink, which holds one frame.
    let mut a = FakeNode::attach_with_capacity(&service, "a", 1);
    let mut queued = 0;
    for i in 0.. {
        let frame = ToRoomSvc {
            body: Some(subscribe(&format!("room-{i}"))),
        };
        match a.port.try_send(frame) {
            Ok(()) => queued += 1,
            Err(LinkError::Full) => break,
            Err(other) => panic!("unexpected {other:?}"),
        }
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    let port = a.port.clone();
    let mut waiting = tokio::spawn(async move {
        port.send(ToRoomSvc {
            body: Some(subscribe("room-last")),
        })
        .await
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "send waits while the queue is full");
    for _ in 0..queued {
        assert!(matches!(a.next().await, to_msg_svc::Body::SubscribeAck(_)));
    }
    assert_eq!(timeout(GUARD, &mut waiting).await.unwrap().unwrap(), Ok(()));
    match a.next().await {
        to_msg_svc::Body::SubscribeAck(ack) => assert_eq!(ack.room_id, "room-last"),
        other => panic!("expected a SubscribeAck, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_ack_history_stays_within_its_byte_budget() {
    let service = RoomService::start(RoomServiceConfig {
        ack_history_bytes: 3_500,
        ..quiet_config(1)
    });
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    for request_id in 1..=5 {
        a.send(send_body(SendRequest {
            payload: Bytes::from(vec![b'x'; 1_000]),
            ..send(ROOM, "alice", request_id)
        }));
        a.next_ack().await;
        a.next_broadcast().await;
    }
    assert_eq!(service.stats(ROOM).await.unwrap().history, 5);
    let mut b = FakeNode::attach(&service, "b");
    let ack = b.subscribe(ROOM).await;
    let ids: Vec<u64> = ack.history.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [3, 4, 5], "the newest that fit, oldest first");
}

#[tokio::test]
async fn a_subscribe_replaces_what_the_room_held_of_the_node() {
    let service = start(1);
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["u1", "u2"]);
    assert_eq!(service.stats(ROOM).await.unwrap().members, 2);
    // The node subscribes again (it lost the owner and found it again):
    // its presence report that follows is all it has; u2 left meanwhile.
    assert_eq!(a.subscribe(ROOM).await.member_count, 0);
    a.join(ROOM, &["u1"]);
    assert_eq!(service.stats(ROOM).await.unwrap().members, 1);
}
