//! The room service's metric families, rendered as `/metrics` serves them,
//! while fake msg-svc nodes drive it over real bounded channels (and, for
//! the store's families, while its Redis is down).

mod support;

use bytes::Bytes;
use chatroom_cluster::metrics::{registry, render};
use chatroom_proto::cluster::v1::SendRequest;
use chatroom_proto::v1::ErrorCode;
use room_svc::RoomService;
use support::*;

/// The exposition of everything `service` registers.
fn scrape(service: &RoomService) -> String {
    let mut families = registry();
    service.register_metrics(&mut families);
    render(&families)
}

/// Panics unless each `(series, value)` line is in `text`.
fn assert_lines(text: &str, expected: &[(&str, u64)]) {
    for (series, value) in expected {
        let line = format!("{series} {value}");
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
}

#[tokio::test]
async fn decisions_broadcasts_rooms_and_nodes_are_counted() {
    let service = start(2);
    let mut a = FakeNode::attach(&service, "a");
    let mut b = FakeNode::attach(&service, "b");
    a.subscribe(ROOM).await;
    b.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);

    let first = SendRequest {
        client_msg_id: 9,
        ..send(ROOM, "alice", 1)
    };
    a.send(send_body(first.clone()));
    let ack = a.next_ack().await;
    a.next_broadcast().await;
    b.next_broadcast().await;
    // The retry is answered with the original ack and not broadcast again.
    a.send(send_body(SendRequest {
        request_id: 2,
        ..first
    }));
    assert_eq!(a.next_ack().await, ack);
    a.send(send_body(send(ROOM, "mallory", 3)));
    assert_eq!(code(&a.next_error().await), ErrorCode::NotJoined);
    service
        .post_notice(ROOM, "ops", Bytes::from_static(b"notice"))
        .await
        .unwrap();
    a.next_broadcast().await;
    b.next_broadcast().await;

    assert_lines(
        &scrape(&service),
        &[
            ("chatroom_messages_accepted_total{lane=\"normal\"}", 1),
            ("chatroom_messages_accepted_total{lane=\"priority\"}", 1),
            ("chatroom_messages_deduplicated_total", 1),
            ("chatroom_messages_rejected_total{code=\"not_joined\"}", 1),
            ("chatroom_messages_rejected_total{code=\"rate_limited\"}", 0),
            // Two messages, each broadcast once to each of two nodes.
            ("chatroom_broadcasts_sent_total", 4),
            ("chatroom_broadcast_messages_sent_total", 4),
            ("chatroom_rooms_owned", 1),
            ("chatroom_nodes_attached", 2),
        ],
    );
    assert!(!scrape(&service).contains("chatroom_redis"));

    service.disconnect(&b.port).await;
    service.disconnect(&b.port).await;
    service.close_room(ROOM).await.unwrap();
    assert_lines(
        &scrape(&service),
        &[("chatroom_nodes_attached", 1), ("chatroom_rooms_owned", 0)],
    );
}

#[tokio::test]
async fn redis_failures_are_read_from_the_store() {
    let mut redis = TestRedis::start();
    let service = RoomService::start_with(quiet_config(1), redis.store("metrics"), None);
    assert_lines(
        &scrape(&service),
        &[
            ("chatroom_redis_errors_total{op=\"load\"}", 0),
            ("chatroom_redis_errors_total{op=\"write\"}", 0),
            ("chatroom_redis_write_batches_total", 0),
        ],
    );
    redis.server.kill();
    // The room's load fails after its retries; the room starts afresh.
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    let text = scrape(&service);
    assert_lines(&text, &[("chatroom_redis_errors_total{op=\"load\"}", 1)]);
    for family in [
        "chatroom_redis_history_superseded_total",
        "chatroom_redis_moderation_dropped_total",
        "chatroom_redis_fenced_writes_total",
    ] {
        assert!(
            text.contains(&format!("{family} 0\n")),
            "{family} in\n{text}"
        );
    }
}
