//! `/metrics` of the embedded server, scraped over HTTP while real clients
//! connect over WebSocket and QUIC, chat, get refused, pull, and fall
//! behind: every counter moves by what the clients saw.

mod support;

use std::time::Instant;

use bytes::Bytes;
use chatroom_proto::v1::{ErrorCode, client_frame, server_frame};
use support::{PATIENCE, RawClient, Seen, TestServer, Transport, http_get};

/// One scrape of `/metrics`.
struct Exposition(String);

impl Exposition {
    /// The value of `series` (its name and labels as printed).
    fn value(&self, series: &str) -> Option<u64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            Some(value.parse().expect("an integer sample"))
        })
    }

    /// Every expected `(series, value)` that does not hold, as printed.
    fn mismatches(&self, expected: &[(&str, u64)]) -> Vec<String> {
        expected
            .iter()
            .filter_map(|&(series, want)| {
                let got = self.value(series);
                (got != Some(want)).then(|| format!("{series}: {got:?}, expected {want}"))
            })
            .collect()
    }

    fn assert(&self, expected: &[(&str, u64)]) {
        let wrong = self.mismatches(expected);
        assert!(wrong.is_empty(), "{wrong:#?}\n{}", self.0);
    }
}

/// GET `/metrics`, checking the status and the OpenMetrics content type.
async fn scrape(server: &TestServer) -> Exposition {
    let response = http_get(server.server.http_addr(), "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.lines().any(|line| line.eq_ignore_ascii_case(
            "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
        )),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "a complete exposition");
    Exposition(body.to_owned())
}

/// Scrapes until every expectation holds. For what a fan-out shard counts:
/// it adds a round's stats once the round has handed out its frames, so a
/// client may see a frame a moment before the scrape shows it.
async fn eventually(server: &TestServer, expected: &[(&str, u64)]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let exposition = scrape(server).await;
        let wrong = exposition.mismatches(expected);
        if wrong.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{wrong:#?}\n{}", exposition.0);
        tokio::task::yield_now().await;
    }
}

/// What a client was pushed, and the answers to its requests.
#[derive(Default)]
struct Pushed {
    /// Notifies carrying their messages.
    deltas: u64,
    /// Notifies without them.
    plain: u64,
    /// Messages each delta carried (or reported dropped) beyond its first.
    coalesced: u64,
    /// The newest message id a delta brought.
    latest: u64,
    replies: Vec<(u64, server_frame::Body)>,
    kicked: bool,
}

impl Pushed {
    /// Reads `client`'s frames into this until `done` holds.
    async fn read_until(&mut self, client: &mut RawClient, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            let frame = client.frame().await;
            let body = frame.body.expect("a frame body");
            if frame.request_id != 0 {
                self.replies.push((frame.request_id, body));
                continue;
            }
            match body {
                server_frame::Body::Notify(notify) => match notify.delta {
                    Some(delta) => {
                        let carried = delta.messages.len() as u64 + delta.dropped;
                        self.deltas += 1;
                        self.coalesced += carried + delta.dropped_priority - 1;
                        self.latest = notify.latest.expect("a notify's position").msg_id;
                    }
                    None => self.plain += 1,
                },
                server_frame::Body::Kicked(_) => self.kicked = true,
                other => panic!("unexpected push {other:?}"),
            }
        }
    }
}

fn send(room: &str, client_msg_id: u64) -> client_frame::Body {
    client_frame::Body::Send(chatroom_proto::v1::Send {
        room_id: room.into(),
        client_msg_id,
        kind: 0,
        payload: format!("message {client_msg_id}").into_bytes().into(),
    })
}

#[tokio::test]
async fn counters_follow_what_clients_do_over_both_transports() {
    let server = TestServer::start().await;
    // Three sends fit the lobby's burst, the fourth is refused; its ring
    // keeps two messages. The quiet room notifies plainly; the stalled one
    // soon kicks a member that never pulls.
    server
        .configure("lobby", |c| {
            c.normal_per_s = 1;
            c.normal_burst = 3;
            c.normal_ring = 2;
        })
        .await;
    server.configure("quiet", |c| c.inline_max_bytes = 0).await;
    server
        .configure("stalled", |c| {
            c.inline_max_bytes = 0;
            c.round_interval_ms = 10;
            c.pull_timeout_ms = 500;
            c.slow_consumer_notifies = 2;
        })
        .await;

    let idle = scrape(&server).await;
    idle.assert(&[
        ("chatroom_connections{transport=\"ws\"}", 0),
        ("chatroom_connections{transport=\"quic\"}", 0),
        ("chatroom_sessions", 0),
        ("chatroom_rooms_subscribed", 0),
        // Both roles on one /metrics: the room service's families too.
        ("chatroom_rooms_owned", 3),
        ("chatroom_nodes_attached", 1),
        ("chatroom_cluster_members{role=\"room-svc\"}", 1),
        ("chatroom_cluster_members{role=\"msg-svc\"}", 1),
        ("chatroom_messages_accepted_total{lane=\"normal\"}", 0),
        ("chatroom_sends_forwarded_total", 0),
    ]);
    for absent in ["chatroom_zookeeper", "chatroom_redis", "chatroom_link"] {
        assert!(!idle.0.contains(absent), "no {absent}_* without one");
    }

    let (mut alice, _) = RawClient::login_over(&server, Transport::Ws, "alice").await;
    let (mut bob, _) = RawClient::login_over(&server, Transport::Quic, "bob").await;
    let (mut carol, _) = RawClient::login_over(&server, Transport::Ws, "carol").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    scrape(&server).await.assert(&[
        ("chatroom_connections{transport=\"ws\"}", 2),
        ("chatroom_connections{transport=\"quic\"}", 1),
        ("chatroom_sessions", 3),
        ("chatroom_rooms_subscribed", 1),
    ]);

    // Four sends at once: three accepted, one over the limit.
    let mut alice_saw = Pushed::default();
    let mut bob_saw = Pushed::default();
    for id in 1..=4 {
        alice.request(send("lobby", id)).await;
    }
    alice_saw
        .read_until(&mut alice, |seen| seen.replies.len() == 4)
        .await;
    let refused = alice_saw
        .replies
        .iter()
        .filter(|(_, body)| {
            matches!(body, server_frame::Body::Error(e) if e.code == ErrorCode::RateLimited as i32)
        })
        .count();
    assert_eq!(refused, 1, "{:?}", alice_saw.replies);
    // Both have every message; a ping answered after the sends means the
    // connection task is past counting the last one forwarded.
    alice_saw
        .read_until(&mut alice, |seen| seen.latest == 3)
        .await;
    bob_saw.read_until(&mut bob, |seen| seen.latest == 3).await;
    let ping = alice
        .request(client_frame::Body::Ping(Default::default()))
        .await;
    alice_saw
        .read_until(&mut alice, |seen| {
            seen.replies.iter().any(|(id, _)| *id == ping)
        })
        .await;

    let chatted = scrape(&server).await;
    chatted.assert(&[
        ("chatroom_sends_forwarded_total", 4),
        ("chatroom_sends_accepted_total", 3),
        ("chatroom_sends_rejected_total{code=\"rate_limited\"}", 1),
        ("chatroom_sends_rejected_total{code=\"muted\"}", 0),
        ("chatroom_messages_accepted_total{lane=\"normal\"}", 3),
        ("chatroom_messages_accepted_total{lane=\"priority\"}", 0),
        ("chatroom_messages_rejected_total{code=\"rate_limited\"}", 1),
        ("chatroom_messages_deduplicated_total", 0),
        // One node holds the room: one copy of each message.
        ("chatroom_broadcast_messages_sent_total", 3),
        ("chatroom_broadcast_messages_received_total", 3),
        // Three messages in a ring of two.
        ("chatroom_ring_evictions_total{lane=\"normal\"}", 1),
        ("chatroom_ring_evictions_total{lane=\"priority\"}", 0),
    ]);
    let frames = chatted.value("chatroom_broadcasts_sent_total").unwrap();
    assert!(
        (1..=3).contains(&frames),
        "{frames} broadcasts for 3 messages"
    );
    assert_eq!(
        chatted.value("chatroom_broadcasts_received_total"),
        Some(frames)
    );
    // However the rounds fell, each delta a client got is counted, and each
    // message beyond a delta's first is a notify coalesced.
    let deltas = alice_saw.deltas + bob_saw.deltas;
    let coalesced = alice_saw.coalesced + bob_saw.coalesced;
    assert_eq!(alice_saw.plain + bob_saw.plain, 0);
    eventually(
        &server,
        &[
            ("chatroom_deltas_delivered_total", deltas),
            ("chatroom_notifies_coalesced_total", coalesced),
            ("chatroom_notifies_sent_total", 0),
        ],
    )
    .await;

    // A plain notify, answered by a pull.
    let quiet = bob.join("quiet").await;
    let notice = |text: &'static str| Bytes::from_static(text.as_bytes());
    let rooms = server.server.rooms();
    rooms
        .post_notice("quiet", "ops", notice("quiet notice"))
        .await
        .unwrap();
    bob_saw.read_until(&mut bob, |seen| seen.plain == 1).await;
    let pull = bob
        .request(client_frame::Body::Pull(chatroom_proto::v1::Pull {
            room_id: "quiet".into(),
            since: quiet.latest,
            limit: 0,
        }))
        .await;
    match bob.reply(pull).await {
        server_frame::Body::PullResult(result) => assert_eq!(result.messages.len(), 1),
        other => panic!("expected a PullResult, got {other:?}"),
    }

    // A member that never pulls: notified, left alone while it is pulling
    // (the second notice is suppressed), notified again after the pull
    // timeout, then kicked as a slow consumer.
    carol.join("stalled").await;
    let mut carol_saw = Pushed::default();
    rooms
        .post_notice("stalled", "ops", notice("first"))
        .await
        .unwrap();
    carol_saw
        .read_until(&mut carol, |seen| seen.plain == 1)
        .await;
    rooms
        .post_notice("stalled", "ops", notice("second"))
        .await
        .unwrap();
    carol_saw.read_until(&mut carol, |seen| seen.kicked).await;
    assert_eq!(
        carol_saw.plain, 2,
        "notified, then once more before the kick"
    );
    assert!(matches!(carol.next().await, Seen::Closed { .. }));
    drop(carol);

    scrape(&server).await.assert(&[
        ("chatroom_pulls_total", 1),
        ("chatroom_messages_accepted_total{lane=\"priority\"}", 3),
        ("chatroom_rooms_subscribed", 3),
    ]);
    eventually(
        &server,
        &[
            ("chatroom_notifies_sent_total", 3),
            ("chatroom_notifies_suppressed_total", 1),
            (
                "chatroom_slow_consumer_kicks_total{cause=\"unanswered_notifies\"}",
                1,
            ),
            (
                "chatroom_slow_consumer_kicks_total{cause=\"outbound_queue_full\"}",
                0,
            ),
            ("chatroom_push_frames_refused_total", 0),
            ("chatroom_deltas_delivered_total", deltas),
            // Carol's connection is gone with her session.
            ("chatroom_sessions", 2),
            ("chatroom_connections{transport=\"ws\"}", 1),
            ("chatroom_connections{transport=\"quic\"}", 1),
        ],
    )
    .await;
    server.server.shutdown().await;
}
