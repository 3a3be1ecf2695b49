//! The flows of DESIGN §4 through the real client library, over real
//! connections to the embedded server on port 0: every flow runs once over
//! WebSocket and once over QUIC.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatroom_client::{Client, ClientConfig, ClientError, Event, Events, JoinOptions};
use chatroom_cluster::auth::Roles;
use chatroom_proto::v1::{ChatMessage, Cursor, ErrorCode, KickReason, Kind, Lane};
use support::{PATIENCE, TestServer, Transport, over_both};

const SYSTEM: Roles = Roles {
    admin: false,
    system: true,
};

async fn connect(server: &TestServer, user: &str) -> (Client, Events) {
    connect_with(server, user, Roles::default(), |_| {}).await
}

async fn connect_with(
    server: &TestServer,
    user: &str,
    roles: Roles,
    tweak: impl FnOnce(&mut ClientConfig),
) -> (Client, Events) {
    let mut config = server.client_config(server.transport, server.token_with(user, roles));
    tweak(&mut config);
    let (client, events) = Client::connect(config).await.expect("client connects");
    let scheme = match server.transport {
        Transport::Ws => "ws://",
        Transport::Quic => "quic://",
    };
    assert!(client.url().starts_with(scheme), "{}", client.url());
    (client, events)
}

async fn join(client: &Client, room: &str) {
    client
        .join(room, JoinOptions::default())
        .await
        .expect("join");
}

fn text(msg: &ChatMessage) -> String {
    String::from_utf8_lossy(&msg.payload).into_owned()
}

/// Everything a receiver got in a room up to and including message `msg_id`.
#[derive(Debug, Default)]
struct Received {
    messages: Vec<ChatMessage>,
    dropped_normal: u64,
    dropped_priority: u64,
}

/// Reads events until message `msg_id` arrives. The newest message of a room
/// is never the one a ring drops, so waiting for it is waiting for the
/// receiver to be current.
async fn receive_until(events: &mut Events, room: &str, msg_id: u64) -> Received {
    let mut got = Received::default();
    loop {
        match events.recv_timeout(PATIENCE).await {
            Ok(Event::Message { room: r, message }) if &*r == room => {
                let last = message.msg_id;
                got.messages.push(message);
                if last >= msg_id {
                    return got;
                }
            }
            Ok(Event::Dropped {
                room: r,
                normal,
                priority,
            }) if &*r == room => {
                got.dropped_normal += normal;
                got.dropped_priority += priority;
            }
            Ok(Event::Closed { reason }) => panic!("connection closed: {reason}"),
            Ok(_) => {}
            Err(error) => panic!("no message {msg_id} yet ({got:?}): {error}"),
        }
    }
}

async fn two_users_receive_each_others_messages_in_ts_order(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let (alice, mut alice_events) = connect(&server, "alice").await;
    let (bob, mut bob_events) = connect(&server, "bob").await;
    join(&alice, "lobby").await;
    join(&bob, "lobby").await;

    let mut last = 0;
    for i in 0..5 {
        last = alice
            .send("lobby", Kind::Chat, format!("alice {i}"))
            .await
            .unwrap()
            .msg_id;
        last = last.max(
            bob.send("lobby", Kind::Chat, format!("bob {i}"))
                .await
                .unwrap()
                .msg_id,
        );
    }
    for events in [&mut alice_events, &mut bob_events] {
        let got = receive_until(events, "lobby", last).await;
        let texts: Vec<String> = got.messages.iter().map(text).collect();
        let expected: Vec<String> = (0..5)
            .flat_map(|i| [format!("alice {i}"), format!("bob {i}")])
            .collect();
        assert_eq!(texts, expected);
        assert!(
            got.messages.windows(2).all(|w| w[0].ts < w[1].ts),
            "ts strictly increasing"
        );
        assert!(
            got.messages
                .iter()
                .all(|m| m.sender == "alice" || m.sender == "bob")
        );
        assert_eq!(got.dropped_normal, 0);
    }
    server.server.shutdown().await;
}

async fn a_flood_is_rate_limited_while_a_priority_notice_reaches_every_member(
    transport: Transport,
) {
    // The room's limits are under test, not the session's own.
    let server = TestServer::start_over_with(transport, |c| {
        c.node.session_send_rate = msg_svc::Rate { per_s: 0, burst: 0 };
    })
    .await;
    // A small ring, so the flood really overflows the receivers' lane.
    server.configure("stage", |c| c.normal_ring = 16).await;
    let (flooder, _flood_events) = connect(&server, "flooder").await;
    let (host, _host_events) = connect_with(&server, "host", SYSTEM, |_| {}).await;
    join(&flooder, "stage").await;
    join(&host, "stage").await;
    let mut viewers = Vec::new();
    for i in 0..3 {
        let (client, events) = connect(&server, &format!("viewer{i}")).await;
        join(&client, "stage").await;
        viewers.push((client, events));
    }

    // 2,000 sends as fast as 20 pipelined loops can go: ten times the
    // default 200 msg/s burst, in well under a second.
    let flood_started = Instant::now();
    let flood: Vec<_> = (0..20)
        .map(|loop_id| {
            let flooder = flooder.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..100 {
                    let text = format!("spam {loop_id}-{i}");
                    outcomes.push(flooder.send("stage", Kind::Chat, text).await);
                }
                outcomes
            })
        })
        .collect();
    let notice = host
        .send("stage", Kind::Notice, "the stream starts in 5 minutes")
        .await
        .expect("a system notice is accepted during the flood");
    assert_eq!(notice.lane, Lane::Priority as i32);

    let mut accepted = Vec::new();
    let mut limited = 0;
    for outcome in futures_util::future::join_all(flood)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
    {
        match outcome {
            Ok(ack) => accepted.push(ack.msg_id),
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::RateLimited), "{error}");
                let retry = error
                    .retry_after()
                    .expect("RATE_LIMITED carries retry_after_ms");
                assert!(
                    retry > Duration::ZERO && retry <= Duration::from_secs(1),
                    "{retry:?}"
                );
                limited += 1;
            }
        }
    }
    // The limiter's contract: the burst, plus the rate for the time it took.
    let allowed = 200 + (200.0 * flood_started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        accepted.len() >= 200,
        "the burst gets through: {}",
        accepted.len()
    );
    assert!(
        accepted.len() <= allowed,
        "{} accepted, more than the {allowed} the limit allows",
        accepted.len()
    );
    assert!(limited > 0 && accepted.len() + limited == 2_000);
    let last = accepted
        .iter()
        .copied()
        .chain([notice.msg_id])
        .max()
        .unwrap();

    for (_, events) in &mut viewers {
        let got = receive_until(events, "stage", last).await;
        let notices: Vec<_> = got
            .messages
            .iter()
            .filter(|m| m.lane == Lane::Priority as i32)
            .collect();
        assert_eq!(notices.len(), 1, "the notice arrives exactly once");
        assert_eq!(text(notices[0]), "the stream starts in 5 minutes");
        assert_eq!(got.dropped_priority, 0);
        // Exact accounting: every accepted normal message was received or
        // reported dropped, never both, never neither.
        let normal_received = got.messages.len() as u64 - 1;
        assert_eq!(normal_received + got.dropped_normal, accepted.len() as u64);
    }
    server.server.shutdown().await;
}

async fn a_client_that_never_pulls_is_renotified_after_2_s_and_kicked_after_n(
    transport: Transport,
) {
    let server = TestServer::start_over(transport).await;
    // Plain notifies only, and a short fuse: 3 unanswered notifies.
    server
        .configure("quiet", |c| {
            c.inline_max_bytes = 0;
            c.slow_consumer_notifies = 3;
        })
        .await;
    let (lazy, mut lazy_events) =
        connect_with(&server, "lazy", Roles::default(), |c| c.auto_pull = false).await;
    let (keen, mut keen_events) = connect(&server, "keen").await;
    let (talker, _talker_events) = connect(&server, "talker").await;
    join(&lazy, "quiet").await;
    join(&keen, "quiet").await;
    join(&talker, "quiet").await;

    let chatter = tokio::spawn(async move {
        for i in 0.. {
            if talker
                .send("quiet", Kind::Chat, format!("line {i}"))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let started = Instant::now();
    let mut notified_at = Vec::new();
    let kicked_at = loop {
        match lazy_events
            .recv_timeout(PATIENCE)
            .await
            .expect("the lazy client hears back")
        {
            Event::Notified { room, inline, .. } if &*room == "quiet" => {
                assert!(!inline, "inline deltas are off in this room");
                notified_at.push(started.elapsed());
            }
            Event::Kicked {
                room: None, reason, ..
            } => {
                assert_eq!(reason, KickReason::SlowConsumer);
                break started.elapsed();
            }
            Event::Closed { reason } => panic!("closed before a kick: {reason}"),
            _ => {}
        }
    };
    assert_eq!(
        notified_at.len(),
        3,
        "three notifies, then the kick: {notified_at:?}"
    );
    // The server waits 2 s between notifies on its own clock (the notifier's
    // unit tests pin that exactly); here delivery jitter on a loaded machine
    // blurs it, but a notifier that re-notified every round (100 ms) would
    // still fail by far.
    let min_gap = Duration::from_millis(1_500);
    for pair in notified_at.windows(2) {
        assert!(
            pair[1] - pair[0] >= min_gap,
            "renotified too soon: {notified_at:?}"
        );
    }
    assert!(kicked_at - notified_at[2] >= min_gap, "kicked too soon");
    assert!(matches!(
        lazy_events
            .wait_for(PATIENCE, |e| matches!(e, Event::Closed { .. }))
            .await,
        Ok(Event::Closed { .. })
    ));

    // The room's owner heard of the kick from the node's report.
    let stats = stats_until(&server, "quiet", |s| s.slow_consumer_kicks > 0).await;
    assert_eq!(stats.slow_consumer_kicks, 1);

    // The client that pulls is still there and current.
    let latest = keen.cursor("quiet").unwrap();
    let got = receive_until(&mut keen_events, "quiet", latest.msg_id + 1).await;
    assert!(!got.messages.is_empty());
    chatter.abort();
    server.server.shutdown().await;
}

async fn a_pull_with_an_old_cursor_reports_what_was_dropped(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    server.configure("small", |c| c.normal_ring = 8).await;
    let (reader, _reader_events) = connect(&server, "reader").await;
    let (writer, _writer_events) = connect(&server, "writer").await;
    join(&reader, "small").await;
    join(&writer, "small").await;
    let old = reader.cursor("small").expect("joined");
    for i in 0..20 {
        writer
            .send("small", Kind::Chat, format!("m{i}"))
            .await
            .unwrap();
    }
    let result = reader.pull("small", old, 100).await.expect("pull");
    let texts: Vec<String> = result.messages.iter().map(text).collect();
    let expected: Vec<String> = (12..20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "the ring keeps the newest 8");
    assert_eq!(result.dropped, 12);
    assert_eq!(result.dropped_priority, 0);
    assert!(!result.more && !result.reset);

    // A limit below what is left keeps the newest and counts the rest.
    let result = reader.pull("small", old, 3).await.expect("pull");
    assert_eq!(
        result.messages.iter().map(text).collect::<Vec<_>>(),
        ["m17", "m18", "m19"]
    );
    assert_eq!(result.dropped, 17);
    server.server.shutdown().await;
}

/// The room's stats once `done` holds. They depend on the reports the node
/// sends its rooms' owner about once a second, which no client sees: this
/// asks again every 50 ms until they arrive.
async fn stats_until(
    server: &TestServer,
    room: &str,
    done: impl Fn(&room_svc::core::RoomStats) -> bool,
) -> room_svc::core::RoomStats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = server.server.rooms().stats(room).await.expect("room stats");
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn room_stats_count_what_happened_downstream(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    server.configure("counted", |c| c.normal_ring = 8).await;
    let (reader, mut reader_events) = connect(&server, "reader").await;
    let (writer, mut writer_events) = connect(&server, "writer").await;
    join(&reader, "counted").await;
    join(&writer, "counted").await;
    let old = reader.cursor("counted").expect("joined");
    let mut last = 0;
    for i in 0..20 {
        last = writer
            .send("counted", Kind::Chat, format!("m{i}"))
            .await
            .unwrap()
            .msg_id;
    }
    receive_until(&mut reader_events, "counted", last).await;
    receive_until(&mut writer_events, "counted", last).await;
    let result = reader.pull("counted", old, 100).await.expect("pull");
    assert_eq!((result.messages.len(), result.dropped), (8, 12));

    // One more message, counted after the pull.
    let last = writer
        .send("counted", Kind::Chat, "m20")
        .await
        .unwrap()
        .msg_id;
    receive_until(&mut reader_events, "counted", last).await;
    receive_until(&mut writer_events, "counted", last).await;

    // Each member heard of all 21 messages once, each one either delivered
    // or counted as skipped; the reader's pull from its old cursor handed
    // it 8 it had and told it of 12 it knew it missed: not counted again.
    let stats = stats_until(&server, "counted", |s| {
        s.delivered + s.skipped_normal >= 42 && s.evicted_normal >= 13
    })
    .await;
    assert_eq!(stats.delivered + stats.skipped_normal, 42, "{stats:?}");
    assert_eq!(stats.evicted_normal, 13, "{stats:?}");
    assert_eq!((stats.skipped_priority, stats.evicted_priority), (0, 0));
    assert_eq!(stats.accepted_normal, 21);
    assert!(stats.in_per_s > 0.0 && stats.out_per_s > 0.0, "{stats:?}");
    server.server.shutdown().await;
}

async fn a_cursor_resumed_after_reconnect_returns_exactly_the_missed_messages(
    transport: Transport,
) {
    let server = TestServer::start_over(transport).await;
    let (writer, _writer_events) = connect(&server, "writer").await;
    join(&writer, "show").await;
    let (reader, mut reader_events) = connect(&server, "reader").await;
    join(&reader, "show").await;
    let seen = writer.send("show", Kind::Chat, "before").await.unwrap();
    receive_until(&mut reader_events, "show", seen.msg_id).await;
    let cursor = reader.cursor("show").unwrap();
    reader.close().await;
    drop(reader_events);

    let mut missed = Vec::new();
    for i in 0..7 {
        missed.push(
            writer
                .send("show", Kind::Chat, format!("missed {i}"))
                .await
                .unwrap()
                .msg_id,
        );
    }
    let (reader, mut reader_events) = connect(&server, "reader").await;
    let ack = reader
        .join(
            "show",
            JoinOptions {
                since: Some(cursor),
                backfill: 0,
            },
        )
        .await
        .unwrap();
    assert!(!ack.reset);
    assert!(ack.recent.is_empty(), "a resuming joiner gets no backfill");
    let got = receive_until(&mut reader_events, "show", *missed.last().unwrap()).await;
    assert_eq!(
        got.messages.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        missed
    );
    assert_eq!(got.dropped_normal, 0);

    // And it is live again.
    let after = writer.send("show", Kind::Chat, "after").await.unwrap();
    let got = receive_until(&mut reader_events, "show", after.msg_id).await;
    assert_eq!(got.messages.iter().map(text).collect::<Vec<_>>(), ["after"]);
    server.server.shutdown().await;
}

async fn a_cursor_the_room_never_handed_out_is_reset_not_trusted(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let (writer, _writer_events) = connect(&server, "writer").await;
    join(&writer, "show").await;
    let last = writer.send("show", Kind::Chat, "one").await.unwrap();
    let (reader, mut reader_events) = connect(&server, "reader").await;
    let honest = {
        join(&reader, "show").await;
        receive_until(&mut reader_events, "show", last.msg_id).await;
        reader.cursor("show").unwrap()
    };
    reader.leave("show").await.unwrap();
    // Ahead of the room: were it trusted, the next messages (at or below
    // it) would never reach the reader, and nobody would say why.
    let ahead = Cursor {
        msg_id: honest.msg_id + 100,
        normal_seq: honest.normal_seq + 100,
        ts: honest.ts + 1_000_000,
        ..honest
    };
    let ack = reader
        .join(
            "show",
            JoinOptions {
                since: Some(ahead),
                backfill: 0,
            },
        )
        .await
        .unwrap();
    assert!(ack.reset, "a cursor ahead of the room is reset");
    let next = writer.send("show", Kind::Chat, "two").await.unwrap();
    let got = receive_until(&mut reader_events, "show", next.msg_id).await;
    assert_eq!(got.messages.last().map(|m| m.msg_id), Some(next.msg_id));
    server.server.shutdown().await;
}

async fn a_cursorless_joiner_gets_the_last_few_messages(transport: Transport) {
    // The room's limits are under test, not the session's own.
    let server = TestServer::start_over_with(transport, |c| {
        c.node.session_send_rate = msg_svc::Rate { per_s: 0, burst: 0 };
    })
    .await;
    let (writer, _events) = connect(&server, "writer").await;
    join(&writer, "hall").await;
    for i in 0..60 {
        writer
            .send("hall", Kind::Chat, format!("m{i}"))
            .await
            .unwrap();
    }
    let (late, _late_events) = connect(&server, "late").await;
    let recent =
        |ack: &chatroom_proto::v1::JoinAck| ack.recent.iter().map(text).collect::<Vec<_>>();
    let ack = late.join("hall", JoinOptions::default()).await.unwrap();
    assert_eq!(
        recent(&ack),
        (50..60).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(late.cursor("hall"), ack.latest);
    let (few, _few_events) = connect(&server, "few").await;
    let ack = few
        .join(
            "hall",
            JoinOptions {
                since: None,
                backfill: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(recent(&ack), ["m57", "m58", "m59"]);
    let (greedy, _greedy_events) = connect(&server, "greedy").await;
    let ack = greedy
        .join(
            "hall",
            JoinOptions {
                since: None,
                backfill: 500,
            },
        )
        .await
        .unwrap();
    assert_eq!(ack.recent.len(), 50, "backfill is capped at 50");
    server.server.shutdown().await;
}

async fn mute_ban_and_whitelist_behave(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let rooms = server.server.rooms();
    let (mallory, mut mallory_events) = connect(&server, "mallory").await;
    let (vip, _vip_events) = connect(&server, "vip").await;
    let (plain, _plain_events) = connect(&server, "plain").await;
    for client in [&mallory, &vip, &plain] {
        join(client, "mod").await;
    }

    // Mute: refused with the time left, until unmuted.
    rooms
        .mute("mod", "mallory", Some(Duration::from_secs(3_600)))
        .await
        .unwrap();
    let error = mallory.send("mod", Kind::Chat, "hi").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Muted));
    let left = error.retry_after().expect("a timed mute says when it ends");
    assert!(
        left > Duration::from_secs(3_500) && left <= Duration::from_secs(3_600),
        "{left:?}"
    );
    rooms.unmute("mod", "mallory").await.unwrap();
    mallory.send("mod", Kind::Chat, "hi again").await.unwrap();

    // Ban: kicked from the room at once; a rejoin is kicked again.
    rooms.ban("mod", "mallory").await.unwrap();
    let kicked = mallory_events
        .wait_for(PATIENCE, |e| matches!(e, Event::Kicked { .. }))
        .await
        .unwrap();
    assert!(
        matches!(&kicked, Event::Kicked { room: Some(r), reason: KickReason::Banned, .. } if &**r == "mod"),
        "{kicked:?}"
    );
    let error = mallory
        .send("mod", Kind::Chat, "let me in")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotJoined));
    join(&mallory, "mod").await;
    let kicked = mallory_events
        .wait_for(PATIENCE, |e| matches!(e, Event::Kicked { .. }))
        .await
        .unwrap();
    assert!(matches!(
        kicked,
        Event::Kicked {
            reason: KickReason::Banned,
            ..
        }
    ));
    rooms.unban("mod", "mallory").await.unwrap();
    join(&mallory, "mod").await;
    mallory
        .send("mod", Kind::Chat, "behaving now")
        .await
        .unwrap();

    // Whitelist: PRIORITY lane, past a closed NORMAL lane.
    server.configure("mod", |c| c.normal_per_s = 0).await;
    let error = plain.send("mod", Kind::Chat, "hello?").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RateLimited));
    rooms.whitelist_add("mod", "vip").await.unwrap();
    let ack = vip.send("mod", Kind::Chat, "VIP here").await.unwrap();
    assert_eq!(ack.lane, Lane::Priority as i32);
    rooms.whitelist_remove("mod", "vip").await.unwrap();
    let error = vip
        .send("mod", Kind::Chat, "still here?")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RateLimited));
    server.server.shutdown().await;
}

async fn a_user_may_hold_several_devices_and_a_device_seen_again_replaces_its_session(
    transport: Transport,
) {
    let server = TestServer::start_over(transport).await;
    let device = |name: &'static str| move |c: &mut ClientConfig| c.device_id = name.into();
    let (phone, mut phone_events) =
        connect_with(&server, "alice", Roles::default(), device("phone")).await;
    let (laptop, mut laptop_events) =
        connect_with(&server, "alice", Roles::default(), device("laptop")).await;
    let (bob, _bob_events) = connect(&server, "bob").await;
    for client in [&phone, &laptop, &bob] {
        join(client, "family").await;
    }
    let hello = bob.send("family", Kind::Chat, "hi alice").await.unwrap();
    for events in [&mut phone_events, &mut laptop_events] {
        let got = receive_until(events, "family", hello.msg_id).await;
        assert_eq!(
            got.messages.iter().map(text).collect::<Vec<_>>(),
            ["hi alice"]
        );
    }

    let (phone2, mut phone2_events) =
        connect_with(&server, "alice", Roles::default(), device("phone")).await;
    let kicked = phone_events
        .wait_for(PATIENCE, |e| matches!(e, Event::Kicked { .. }))
        .await
        .unwrap();
    assert!(matches!(
        kicked,
        Event::Kicked {
            room: None,
            reason: KickReason::Replaced,
            ..
        }
    ));
    join(&phone2, "family").await;
    let again = bob
        .send("family", Kind::Chat, "still there?")
        .await
        .unwrap();
    for events in [&mut phone2_events, &mut laptop_events] {
        let got = receive_until(events, "family", again.msg_id).await;
        assert_eq!(
            got.messages.last().map(text).as_deref(),
            Some("still there?")
        );
    }
    server.server.shutdown().await;
}

async fn a_silent_client_is_closed_and_its_memberships_released(transport: Transport) {
    let server =
        TestServer::start_over_with(transport, |c| c.node.heartbeat = Duration::from_millis(200))
            .await;
    let (mut silent, _) = support::RawClient::login(&server, "silent").await;
    silent.join("porch").await;
    let (stays, _stays_events) = connect(&server, "stays").await;
    join(&stays, "porch").await;
    let rooms = server.server.rooms();
    // A send reports the room's presence changes ahead of itself, so once it
    // is acked the room service has counted every join and leave before it.
    let members = async || {
        stays.send("porch", Kind::Chat, "sync").await.unwrap();
        rooms.stats("porch").await.unwrap().members
    };
    assert_eq!(members().await, 2);
    // The raw client never pings: after three heartbeats it is let go.
    let kick = loop {
        if let Some(chatroom_proto::v1::server_frame::Body::Kicked(kick)) =
            silent.frame().await.body
        {
            break kick;
        }
    };
    assert_eq!(kick.reason, KickReason::HeartbeatTimeout as i32, "{kick:?}");
    // The server hangs up only after releasing the session's rooms.
    while !matches!(silent.next().await, support::Seen::Ended) {}
    assert_eq!(members().await, 1);
    // The client library pings by itself and is still served.
    stays.send("porch", Kind::Chat, "still here").await.unwrap();
    server.server.shutdown().await;
}

async fn pong_carries_each_joined_rooms_latest_position(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let (mut raw, _) = support::RawClient::login(&server, "pinger").await;
    raw.join("a").await;
    raw.join("b").await;
    let (writer, _events) = connect(&server, "writer").await;
    join(&writer, "b").await;
    let ack = writer.send("b", Kind::Chat, "x").await.unwrap();
    let id = raw
        .request(chatroom_proto::v1::client_frame::Body::Ping(
            Default::default(),
        ))
        .await;
    let pong = match raw.reply(id).await {
        chatroom_proto::v1::server_frame::Body::Pong(pong) => pong,
        other => panic!("expected Pong, got {other:?}"),
    };
    let rooms: BTreeSet<(String, u64)> = pong
        .rooms
        .iter()
        .map(|r| (r.room_id.clone(), r.latest.unwrap_or_default().ts))
        .collect();
    assert_eq!(
        rooms,
        BTreeSet::from([("a".into(), 0), ("b".into(), ack.ts)])
    );
    server.server.shutdown().await;
}

/// The room's member count from a Pong on `raw`'s session.
async fn pong_count(raw: &mut support::RawClient, room: &str) -> u64 {
    let id = raw
        .request(chatroom_proto::v1::client_frame::Body::Ping(
            Default::default(),
        ))
        .await;
    match raw.reply(id).await {
        chatroom_proto::v1::server_frame::Body::Pong(pong) => pong
            .rooms
            .iter()
            .find(|r| r.room_id == room)
            .map(|r| r.member_count)
            .expect("the room is in the Pong"),
        other => panic!("expected Pong, got {other:?}"),
    }
}

async fn every_join_and_leave_counts_at_once_in_join_acks_pongs_and_notifies(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut counts = Vec::new();
    let mut members = Vec::new();
    for user in ["ann", "bo", "cy"] {
        let (client, events) = connect(&server, user).await;
        let ack = client
            .join("counted", JoinOptions::default())
            .await
            .expect("join");
        counts.push(ack.member_count);
        members.push((client, events));
    }
    assert_eq!(
        counts,
        [1, 2, 3],
        "each joiner counts itself and every join before it"
    );
    let (mut raw, _) = support::RawClient::login(&server, "pinger").await;
    assert_eq!(raw.join("counted").await.member_count, 4);
    assert_eq!(pong_count(&mut raw, "counted").await, 4);

    let (cy, _) = members.pop().expect("cy");
    cy.leave("counted").await.unwrap();
    assert_eq!(pong_count(&mut raw, "counted").await, 3);
    // A Notify carries the same count: the writer's message reaches ann
    // with it.
    let (ann, ann_events) = &mut members[0];
    let ack = ann.send("counted", Kind::Chat, "hello").await.unwrap();
    receive_until(ann_events, "counted", ack.msg_id).await;
    assert_eq!(ann.member_count("counted"), Some(3));
    server.server.shutdown().await;
}

async fn leave_stops_deliveries(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let (stayer, mut stayer_events) = connect(&server, "stayer").await;
    let (leaver, mut leaver_events) = connect(&server, "leaver").await;
    join(&stayer, "exit").await;
    join(&leaver, "exit").await;
    leaver.leave("exit").await.unwrap();
    let error = leaver.send("exit", Kind::Chat, "bye").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotJoined));
    let ack = stayer.send("exit", Kind::Chat, "anyone?").await.unwrap();
    receive_until(&mut stayer_events, "exit", ack.msg_id).await;
    // The stayer's own message has been fanned out; the leaver got none of it.
    let leftovers: Vec<Event> = leaver_events.drain();
    assert!(
        leftovers
            .iter()
            .all(|e| !matches!(e, Event::Message { .. })),
        "{leftovers:?}"
    );
    let error = leaver.leave("exit").await.unwrap_err();
    assert!(matches!(&error, ClientError::Server(e) if e.code == ErrorCode::NotJoined as i32));
    server.server.shutdown().await;
}

async fn shutdown_tells_clients_the_server_is_going_away(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let (client, mut events) = connect(&server, "guest").await;
    join(&client, "lobby").await;
    let stopping = tokio::spawn(server.server.shutdown());
    let kicked = events
        .wait_for(PATIENCE, |e| matches!(e, Event::Kicked { .. }))
        .await
        .unwrap();
    assert!(matches!(
        kicked,
        Event::Kicked {
            room: None,
            reason: KickReason::Shutdown,
            ..
        }
    ));
    let closed = events
        .wait_for(PATIENCE, |e| matches!(e, Event::Closed { .. }))
        .await
        .unwrap();
    assert!(
        matches!(
            &closed,
            Event::Closed {
                reason: chatroom_client::CloseReason::Server { code: 1001, .. }
            }
        ),
        "{closed:?}"
    );
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap();
}

async fn sends_are_acked_with_strictly_increasing_ids_and_retries_are_deduplicated(
    transport: Transport,
) {
    let server = TestServer::start_over(transport).await;
    let (client, _events) = connect(&server, "sender").await;
    join(&client, "dedupe").await;
    let first = client
        .send_with_id("dedupe", 77, Kind::Chat, Bytes::from_static(b"once"))
        .await
        .unwrap();
    let retry = client
        .send_with_id("dedupe", 77, Kind::Chat, Bytes::from_static(b"once"))
        .await
        .unwrap();
    assert_eq!(first, retry, "a retry gets the original ack");
    let next = client.send("dedupe", Kind::Chat, "twice").await.unwrap();
    assert!(next.msg_id == first.msg_id + 1 && next.ts > first.ts);
    let history = client
        .pull(
            "dedupe",
            Cursor::start(client.cursor("dedupe").unwrap().epoch),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        history.messages.iter().map(text).collect::<Vec<_>>(),
        ["once", "twice"]
    );
    server.server.shutdown().await;
}

over_both!(
    two_users_receive_each_others_messages_in_ts_order,
    a_flood_is_rate_limited_while_a_priority_notice_reaches_every_member,
    a_client_that_never_pulls_is_renotified_after_2_s_and_kicked_after_n,
    a_pull_with_an_old_cursor_reports_what_was_dropped,
    room_stats_count_what_happened_downstream,
    a_cursor_resumed_after_reconnect_returns_exactly_the_missed_messages,
    a_cursor_the_room_never_handed_out_is_reset_not_trusted,
    a_cursorless_joiner_gets_the_last_few_messages,
    mute_ban_and_whitelist_behave,
    a_user_may_hold_several_devices_and_a_device_seen_again_replaces_its_session,
    a_silent_client_is_closed_and_its_memberships_released,
    pong_carries_each_joined_rooms_latest_position,
    every_join_and_leave_counts_at_once_in_join_acks_pongs_and_notifies,
    leave_stops_deliveries,
    shutdown_tells_clients_the_server_is_going_away,
    sends_are_acked_with_strictly_increasing_ids_and_retries_are_deduplicated,
);
