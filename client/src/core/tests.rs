//! The session core driven frame by frame.
//!
//! The streams here are simple: message `n` has `msg_id = n`, `ts = 100 * n`
//! and is NORMAL unless a test says otherwise, so `at(n)` is the cursor just
//! after it.

use super::*;
use chatroom_proto::v1::{
    ConnectAck, Delta, Kicked, Kind, Redirect, RoomPosition, SendAck, server_frame::Body,
};

const ROOM: &str = "demo";
const EPOCH: u64 = 7;
const LIMIT: u32 = 50;

fn at(n: u64) -> Cursor {
    Cursor {
        epoch: EPOCH,
        ts: 100 * n,
        msg_id: n,
        normal_seq: n,
    }
}

fn msg(n: u64) -> ChatMessage {
    ChatMessage {
        msg_id: n,
        ts: 100 * n,
        normal_seq: n,
        sender: "alice".into(),
        lane: Lane::Normal as i32,
        kind: 0,
        payload: Bytes::from(format!("m{n}")),
        client_msg_id: n,
        sender_info: None,
    }
}

fn msgs(range: std::ops::RangeInclusive<u64>) -> Vec<ChatMessage> {
    range.map(msg).collect()
}

fn core(auto_pull: bool) -> SessionCore {
    SessionCore::new(CoreConfig {
        auto_pull,
        pull_limit: LIMIT,
    })
}

fn push(body: Body) -> ServerFrame {
    ServerFrame {
        request_id: 0,
        body: Some(body),
    }
}

fn reply(request_id: u64, body: Body) -> ServerFrame {
    ServerFrame {
        request_id,
        body: Some(body),
    }
}

fn handle(core: &mut SessionCore, frame: ServerFrame) -> Output {
    let mut out = Output::default();
    core.handle(frame, &mut out);
    out
}

fn join_ack(latest: Cursor, recent: Vec<ChatMessage>, reset: bool) -> Body {
    Body::JoinAck(JoinAck {
        room_id: ROOM.into(),
        latest: Some(latest),
        member_count: 3,
        limits: None,
        recent,
        reset,
    })
}

/// A session in ROOM whose cursor is `at(n)`.
fn joined_at(auto_pull: bool, n: u64) -> SessionCore {
    let mut core = core(auto_pull);
    let join = core.join(ROOM, JoinOptions::default());
    let out = handle(
        &mut core,
        reply(join.request_id, join_ack(at(n), vec![], false)),
    );
    assert!(out.frames.is_empty());
    core
}

fn notify(latest: Cursor, delta: Option<Delta>) -> ServerFrame {
    push(Body::Notify(Notify {
        room_id: ROOM.into(),
        latest: Some(latest),
        delta,
        member_count: 4,
    }))
}

fn delta(since: Cursor, messages: Vec<ChatMessage>, dropped: u64) -> Option<Delta> {
    Some(Delta {
        since: Some(since),
        messages,
        dropped,
        dropped_priority: 0,
    })
}

fn pull_result(cursor: Cursor, messages: Vec<ChatMessage>, more: bool) -> PullResult {
    PullResult {
        room_id: ROOM.into(),
        messages,
        dropped: 0,
        dropped_priority: 0,
        cursor: Some(cursor),
        more,
        reset: false,
    }
}

fn pong(latest: Cursor) -> ServerFrame {
    push(Body::Pong(Pong {
        rooms: vec![RoomPosition {
            room_id: ROOM.into(),
            latest: Some(latest),
            member_count: 5,
        }],
    }))
}

/// The Pulls in `out`: (request id, since, limit).
fn pulls(out: &Output) -> Vec<(u64, Cursor, u32)> {
    out.frames
        .iter()
        .filter_map(|frame| match &frame.body {
            Some(client_frame::Body::Pull(pull)) => {
                assert_eq!(pull.room_id, ROOM);
                Some((frame.request_id, pull.since.unwrap(), pull.limit))
            }
            _ => None,
        })
        .collect()
}

/// The one Pull in `out`.
fn the_pull(out: &Output) -> (u64, Cursor) {
    let pulls = pulls(out);
    assert_eq!(pulls.len(), 1, "{:?}", out.frames);
    assert_eq!(pulls[0].2, LIMIT);
    (pulls[0].0, pulls[0].1)
}

fn delivered(out: &Output) -> Vec<u64> {
    out.events
        .iter()
        .filter_map(|event| match event {
            Event::Message { room, message } => {
                assert_eq!(&**room, ROOM);
                Some(message.msg_id)
            }
            _ => None,
        })
        .collect()
}

fn drops(out: &Output) -> Vec<(u64, u64)> {
    out.events
        .iter()
        .filter_map(|event| match event {
            Event::Dropped {
                normal, priority, ..
            } => Some((*normal, *priority)),
            _ => None,
        })
        .collect()
}

fn resets(out: &Output) -> usize {
    out.events
        .iter()
        .filter(|event| matches!(event, Event::Reset { .. }))
        .count()
}

fn notified(out: &Output) -> Vec<(Cursor, bool)> {
    out.events
        .iter()
        .filter_map(|event| match event {
            Event::Notified { latest, inline, .. } => Some((*latest, *inline)),
            _ => None,
        })
        .collect()
}

// Joining.

#[test]
fn fresh_join_delivers_recent_and_takes_latest_as_cursor() {
    let mut core = core(true);
    let join = core.join(
        ROOM,
        JoinOptions {
            since: None,
            backfill: 3,
        },
    );
    let Some(client_frame::Body::Join(body)) = &join.body else {
        panic!("{join:?}")
    };
    assert_eq!(
        (body.room_id.as_str(), body.since, body.backfill),
        (ROOM, None, 3)
    );
    assert_eq!(core.cursor(ROOM), None, "no room before the ack");

    let ack = join_ack(at(10), msgs(8..=10), false);
    let out = handle(&mut core, reply(join.request_id, ack.clone()));
    assert_eq!(delivered(&out), [8, 9, 10]);
    assert_eq!(resets(&out), 0);
    assert!(out.frames.is_empty());
    assert_eq!(
        out.replies,
        [Reply {
            request_id: join.request_id,
            result: Ok(ack)
        }]
    );
    assert_eq!(core.cursor(ROOM), Some(at(10)));
    assert_eq!(core.member_count(ROOM), Some(3));
    assert_eq!(core.rooms().collect::<Vec<_>>(), [ROOM]);
}

#[test]
fn refused_join_goes_to_the_caller_and_creates_no_room() {
    let mut core = core(true);
    let join = core.join(ROOM, JoinOptions::default());
    let error = v1::Error::new(v1::ErrorCode::Banned, "banned");
    let out = handle(
        &mut core,
        reply(join.request_id, Body::Error(error.clone())),
    );
    assert_eq!(out.replies[0].result, Err(error));
    assert!(out.events.is_empty());
    assert_eq!(core.cursor(ROOM), None);
}

#[test]
fn resumed_join_keeps_its_cursor_and_pulls_when_behind() {
    let mut core = core(true);
    let join = core.join(
        ROOM,
        JoinOptions {
            since: Some(at(10)),
            backfill: 0,
        },
    );
    let out = handle(
        &mut core,
        reply(join.request_id, join_ack(at(15), vec![], false)),
    );
    assert_eq!(core.cursor(ROOM), Some(at(10)), "never jumps to latest");
    assert_eq!(the_pull(&out).1, at(10));
    assert!(core.is_pulling(ROOM));
    assert!(delivered(&out).is_empty());
}

#[test]
fn resumed_join_that_is_current_does_not_pull() {
    let mut core = core(true);
    let join = core.join(
        ROOM,
        JoinOptions {
            since: Some(at(10)),
            backfill: 0,
        },
    );
    let out = handle(
        &mut core,
        reply(join.request_id, join_ack(at(10), vec![], false)),
    );
    assert!(out.frames.is_empty());
    assert_eq!(core.cursor(ROOM), Some(at(10)));
}

#[test]
fn join_reset_starts_over_from_latest_and_tells_the_app() {
    let mut core = core(true);
    let old = Cursor { epoch: 3, ..at(40) };
    let join = core.join(
        ROOM,
        JoinOptions {
            since: Some(old),
            backfill: 0,
        },
    );
    // The new epoch's timestamps may be below the old cursor's: still delivered.
    let out = handle(
        &mut core,
        reply(join.request_id, join_ack(at(5), msgs(3..=5), true)),
    );
    assert_eq!(resets(&out), 1);
    assert!(
        matches!(out.events[0], Event::Reset { .. }),
        "reset comes first"
    );
    assert_eq!(delivered(&out), [3, 4, 5]);
    assert_eq!(core.cursor(ROOM), Some(at(5)));
    assert!(out.frames.is_empty());
}

// Inline deltas.

#[test]
fn inline_delta_is_applied_without_a_pull() {
    let mut core = joined_at(true, 10);
    let out = handle(&mut core, notify(at(12), delta(at(10), msgs(11..=12), 0)));
    assert_eq!(notified(&out), [(at(12), true)]);
    assert!(
        matches!(out.events[0], Event::Notified { .. }),
        "notified first"
    );
    assert_eq!(delivered(&out), [11, 12]);
    assert!(drops(&out).is_empty());
    assert!(out.frames.is_empty());
    assert_eq!(core.cursor(ROOM), Some(at(12)));
    assert_eq!(core.member_count(ROOM), Some(4));
}

#[test]
fn delta_drops_are_reported_before_the_messages() {
    let mut core = joined_at(true, 10);
    let out = handle(&mut core, notify(at(17), delta(at(10), msgs(16..=17), 5)));
    assert_eq!(drops(&out), [(5, 0)]);
    let first_message = out
        .events
        .iter()
        .position(|e| matches!(e, Event::Message { .. }))
        .unwrap();
    let dropped = out
        .events
        .iter()
        .position(|e| matches!(e, Event::Dropped { .. }))
        .unwrap();
    assert!(dropped < first_message);
    assert_eq!(delivered(&out), [16, 17]);
    assert_eq!(core.cursor(ROOM), Some(at(17)));
}

#[test]
fn delta_starting_before_the_cursor_delivers_only_newer_messages() {
    let mut core = joined_at(true, 11);
    let out = handle(&mut core, notify(at(12), delta(at(10), msgs(11..=12), 0)));
    assert_eq!(delivered(&out), [12]);
    assert!(drops(&out).is_empty());
    assert_eq!(core.cursor(ROOM), Some(at(12)));
}

#[test]
fn delta_starting_before_the_cursor_counts_only_our_gap() {
    // The server counted 4 drops after at(10); we were already at at(12),
    // so only 13 and 14 are ours to miss.
    let mut core = joined_at(true, 12);
    let out = handle(&mut core, notify(at(16), delta(at(10), msgs(15..=16), 4)));
    assert_eq!(drops(&out), [(2, 0)]);
    assert_eq!(delivered(&out), [15, 16]);
}

#[test]
fn priority_drops_in_a_delta_are_counted_per_lane() {
    let mut core = joined_at(true, 10);
    // Messages 11..=14 exist: 11 and 13 PRIORITY. The delta carries 13 and
    // 14 and reports the rest as dropped, one per lane.
    let mut m13 = msg(13);
    m13.lane = Lane::Priority as i32;
    let latest = Cursor {
        normal_seq: 12,
        ..at(14)
    };
    let d = Delta {
        since: Some(at(10)),
        messages: vec![m13, msg(14)],
        dropped: 1,
        dropped_priority: 1,
    };
    let out = handle(&mut core, notify(latest, Some(d)));
    assert_eq!(drops(&out), [(1, 1)]);
    assert_eq!(delivered(&out), [13, 14]);
}

#[test]
fn overlapping_delta_counts_each_lane_from_the_sequence_numbers() {
    // At 12; then 13 (PRIORITY), 14, 15 (PRIORITY), 16. The delta starts at
    // 10 and carries 15 and 16: the server's counts (3 normal: 11, 12, 14;
    // 1 priority: 13) include 11 and 12, which we already have.
    let mut core = joined_at(true, 12);
    let priority = |n| ChatMessage {
        lane: Lane::Priority as i32,
        normal_seq: 12 + (n - 12) / 2,
        ..msg(n)
    };
    let latest = Cursor {
        normal_seq: 14,
        ..at(16)
    };
    let d = Delta {
        since: Some(at(10)),
        messages: vec![
            priority(15),
            ChatMessage {
                normal_seq: 14,
                ..msg(16)
            },
        ],
        dropped: 3,
        dropped_priority: 1,
    };
    let out = handle(&mut core, notify(latest, Some(d)));
    assert_eq!(drops(&out), [(1, 1)]);
    assert_eq!(delivered(&out), [15, 16]);
    assert_eq!(core.cursor(ROOM), Some(latest));
}

#[test]
fn delta_that_starts_after_the_cursor_means_pull() {
    let mut core = joined_at(true, 10);
    let out = handle(&mut core, notify(at(14), delta(at(12), msgs(13..=14), 0)));
    assert_eq!(notified(&out), [(at(14), false)]);
    assert!(delivered(&out).is_empty());
    assert_eq!(the_pull(&out).1, at(10));
    assert_eq!(core.cursor(ROOM), Some(at(10)));
}

#[test]
fn delta_of_another_epoch_means_pull() {
    let mut core = joined_at(true, 10);
    let other = |c: Cursor| Cursor {
        epoch: EPOCH + 1,
        ..c
    };
    let out = handle(
        &mut core,
        notify(other(at(12)), delta(other(at(10)), msgs(11..=12), 0)),
    );
    assert!(delivered(&out).is_empty());
    assert_eq!(the_pull(&out).1, at(10));
}

#[test]
fn notify_we_are_already_past_does_nothing() {
    let mut core = joined_at(true, 12);
    let out = handle(&mut core, notify(at(12), delta(at(10), msgs(11..=12), 0)));
    assert_eq!(notified(&out), [(at(12), false)]);
    assert!(delivered(&out).is_empty());
    assert!(out.frames.is_empty());
    let out = handle(&mut core, notify(at(11), None));
    assert!(out.frames.is_empty());
}

// Pulls.

#[test]
fn plain_notify_pulls_from_the_cursor() {
    let mut core = joined_at(true, 10);
    let out = handle(&mut core, notify(at(13), None));
    assert_eq!(notified(&out), [(at(13), false)]);
    let (id, since) = the_pull(&out);
    assert_eq!(since, at(10));
    let out = handle(
        &mut core,
        reply(
            id,
            Body::PullResult(pull_result(at(13), msgs(11..=13), false)),
        ),
    );
    assert_eq!(delivered(&out), [11, 12, 13]);
    assert!(out.frames.is_empty());
    assert!(out.replies.is_empty(), "automatic pulls answer nobody");
    assert_eq!(core.cursor(ROOM), Some(at(13)));
    assert!(!core.is_pulling(ROOM));
}

#[test]
fn only_one_pull_per_room_is_outstanding() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(11), None)));
    for n in 12..=15 {
        let out = handle(&mut core, notify(at(n), None));
        assert!(out.frames.is_empty(), "notify {n} while pulling");
        assert_eq!(handle(&mut core, pong(at(n))).frames, []);
    }
    // A delta that would apply at the cursor is left alone while pulling.
    let out = handle(&mut core, notify(at(16), delta(at(10), msgs(11..=16), 0)));
    assert!(out.frames.is_empty());
    assert!(delivered(&out).is_empty());
    assert_eq!(notified(&out), [(at(16), false)]);
    // The answer covers up to 11; latest is 16: pull again, once.
    let out = handle(
        &mut core,
        reply(
            id,
            Body::PullResult(pull_result(at(11), msgs(11..=11), false)),
        ),
    );
    assert_eq!(delivered(&out), [11]);
    assert_eq!(the_pull(&out).1, at(11));
}

#[test]
fn more_means_pull_again() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(30), None)));
    let out = handle(
        &mut core,
        reply(
            id,
            Body::PullResult(pull_result(at(20), msgs(11..=20), true)),
        ),
    );
    assert_eq!(delivered(&out).len(), 10);
    let (next, since) = the_pull(&out);
    assert_ne!(next, id);
    assert_eq!(since, at(20));
    let out = handle(
        &mut core,
        reply(
            next,
            Body::PullResult(pull_result(at(30), msgs(21..=30), false)),
        ),
    );
    assert_eq!(delivered(&out), (21..=30).collect::<Vec<_>>());
    assert!(out.frames.is_empty());
}

#[test]
fn pull_drops_are_surfaced() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(20), None)));
    let result = PullResult {
        dropped: 7,
        dropped_priority: 1,
        ..pull_result(at(20), msgs(18..=20), false)
    };
    let out = handle(&mut core, reply(id, Body::PullResult(result)));
    assert_eq!(drops(&out), [(7, 1)]);
    assert!(matches!(out.events[0], Event::Dropped { .. }));
    assert_eq!(delivered(&out), [18, 19, 20]);
}

#[test]
fn duplicate_and_old_messages_are_ignored() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(12), None)));
    // A sloppy answer repeating what we have, out of order at the end.
    let mut messages = msgs(9..=12);
    messages.push(msg(11));
    let out = handle(
        &mut core,
        reply(id, Body::PullResult(pull_result(at(12), messages, false))),
    );
    assert_eq!(delivered(&out), [11, 12]);
    // A later delta repeating 12.
    let out = handle(&mut core, notify(at(13), delta(at(12), msgs(12..=13), 0)));
    assert_eq!(delivered(&out), [13]);
}

#[test]
fn a_server_making_no_progress_does_not_make_us_spin() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(12), None)));
    let out = handle(
        &mut core,
        reply(id, Body::PullResult(pull_result(at(10), vec![], true))),
    );
    assert!(out.frames.is_empty());
    // The next news starts a pull again.
    assert_eq!(the_pull(&handle(&mut core, pong(at(12)))).1, at(10));
}

#[test]
fn a_cursor_never_moves_back() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(12), None)));
    let out = handle(
        &mut core,
        reply(id, Body::PullResult(pull_result(at(8), msgs(7..=8), false))),
    );
    assert!(delivered(&out).is_empty());
    assert_eq!(core.cursor(ROOM), Some(at(10)));
}

#[test]
fn pull_reset_starts_over_in_the_new_epoch() {
    let mut core = joined_at(true, 40);
    let (id, _) = the_pull(&handle(&mut core, pong(Cursor { epoch: 9, ..at(3) })));
    let new = |n| Cursor { epoch: 9, ..at(n) };
    let result = PullResult {
        reset: true,
        ..pull_result(new(3), msgs(1..=3), false)
    };
    let out = handle(&mut core, reply(id, Body::PullResult(result)));
    assert_eq!(resets(&out), 1);
    assert_eq!(delivered(&out), [1, 2, 3]);
    assert_eq!(core.cursor(ROOM), Some(new(3)));
    assert!(out.frames.is_empty(), "caught up with the new epoch");
    // Deltas of the new epoch apply from there.
    let out = handle(&mut core, notify(new(4), delta(new(3), msgs(4..=4), 0)));
    assert_eq!(delivered(&out), [4]);
}

#[test]
fn epoch_change_without_the_reset_flag_is_a_reset() {
    let mut core = joined_at(true, 40);
    let new = |n| Cursor { epoch: 9, ..at(n) };
    let (id, _) = the_pull(&handle(&mut core, notify(new(2), None)));
    let out = handle(
        &mut core,
        reply(
            id,
            Body::PullResult(pull_result(new(2), msgs(1..=2), false)),
        ),
    );
    assert_eq!(resets(&out), 1);
    assert_eq!(delivered(&out), [1, 2]);
    assert_eq!(core.cursor(ROOM), Some(new(2)));
}

#[test]
fn refused_automatic_pull_is_reported_and_retried_on_news() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(12), None)));
    let error = v1::Error::new(v1::ErrorCode::Overloaded, "busy").retry_after(100);
    let out = handle(&mut core, reply(id, Body::Error(error.clone())));
    assert_eq!(
        out.events,
        [Event::Error {
            room: Some(ROOM.into()),
            error
        }]
    );
    assert!(!core.is_pulling(ROOM));
    assert_eq!(the_pull(&handle(&mut core, pong(at(12)))).1, at(10));
}

// Heartbeat answers.

#[test]
fn pong_ahead_of_the_cursor_pulls() {
    let mut core = joined_at(true, 10);
    let out = handle(&mut core, pong(at(13)));
    assert_eq!(the_pull(&out).1, at(10));
    assert_eq!(core.member_count(ROOM), Some(5));
    assert!(out.events.is_empty());
}

#[test]
fn pong_at_the_cursor_or_for_other_rooms_does_nothing() {
    let mut core = joined_at(true, 10);
    assert!(handle(&mut core, pong(at(10))).is_empty());
    let other = push(Body::Pong(Pong {
        rooms: vec![RoomPosition {
            room_id: "elsewhere".into(),
            latest: Some(at(50)),
            member_count: 1,
        }],
    }));
    assert!(handle(&mut core, other).is_empty());
}

#[test]
fn pong_is_handled_whatever_request_id_it_carries() {
    let mut core = joined_at(true, 10);
    let ping = core.ping();
    assert!(matches!(ping.body, Some(client_frame::Body::Ping(_))));
    let Body::Pong(body) = pong(at(11)).body.unwrap() else {
        unreachable!()
    };
    let out = handle(&mut core, reply(ping.request_id, Body::Pong(body)));
    assert_eq!(the_pull(&out).1, at(10));
}

// Clients that never pull.

#[test]
fn without_auto_pull_notifies_are_reported_raw() {
    let mut core = joined_at(false, 10);
    let out = handle(&mut core, notify(at(12), None));
    assert_eq!(notified(&out), [(at(12), false)]);
    assert!(out.frames.is_empty());
    assert!(handle(&mut core, pong(at(12))).frames.is_empty());
    // Inline deltas still apply: they cost the server nothing more.
    let out = handle(&mut core, notify(at(13), delta(at(10), msgs(11..=13), 0)));
    assert_eq!(notified(&out), [(at(13), true)]);
    assert_eq!(delivered(&out), [11, 12, 13]);
}

#[test]
fn without_auto_pull_a_resumed_join_does_not_pull() {
    let mut core = core(false);
    let join = core.join(
        ROOM,
        JoinOptions {
            since: Some(at(10)),
            backfill: 0,
        },
    );
    let out = handle(
        &mut core,
        reply(join.request_id, join_ack(at(15), vec![], false)),
    );
    assert!(out.frames.is_empty());
}

// Kicks and leaving.

#[test]
fn kick_from_a_room_clears_its_state() {
    let mut core = joined_at(true, 10);
    let (id, _) = the_pull(&handle(&mut core, notify(at(12), None)));
    let kicked = push(Body::Kicked(Kicked {
        room_id: ROOM.into(),
        reason: KickReason::SlowConsumer as i32,
        message: "too slow".into(),
    }));
    let out = handle(&mut core, kicked);
    assert_eq!(
        out.events,
        [Event::Kicked {
            room: Some(ROOM.into()),
            reason: KickReason::SlowConsumer,
            message: "too slow".into(),
            last_cursor: Some(at(10)),
        }]
    );
    assert_eq!(core.cursor(ROOM), None);
    assert!(handle(&mut core, notify(at(13), None)).is_empty());
    assert!(handle(&mut core, pong(at(13))).is_empty());
    let late = reply(
        id,
        Body::PullResult(pull_result(at(12), msgs(11..=12), false)),
    );
    assert!(handle(&mut core, late).is_empty());
}

#[test]
fn session_kick_keeps_cursors_for_resuming() {
    let mut core = joined_at(true, 10);
    let kicked = push(Body::Kicked(Kicked {
        room_id: String::new(),
        reason: KickReason::Replaced as i32,
        message: String::new(),
    }));
    let out = handle(&mut core, kicked);
    assert!(matches!(
        &out.events[..],
        [Event::Kicked {
            room: None,
            reason: KickReason::Replaced,
            ..
        }]
    ));
    assert_eq!(core.cursor(ROOM), Some(at(10)));
}

#[test]
fn unknown_kick_reasons_read_as_unspecified() {
    let mut core = joined_at(true, 10);
    let out = handle(
        &mut core,
        push(Body::Kicked(Kicked {
            room_id: ROOM.into(),
            reason: 99,
            message: String::new(),
        })),
    );
    assert!(matches!(
        &out.events[..],
        [Event::Kicked {
            reason: KickReason::Unspecified,
            ..
        }]
    ));
}

#[test]
fn leave_forgets_the_room_at_once_and_stale_pulls_are_ignored() {
    let mut core = joined_at(true, 10);
    let (pull_id, _) = the_pull(&handle(&mut core, notify(at(12), None)));
    let leave = core.leave(ROOM);
    assert_eq!(core.cursor(ROOM), None);
    assert!(handle(&mut core, notify(at(13), None)).is_empty());
    let out = handle(
        &mut core,
        reply(
            leave.request_id,
            Body::LeaveAck(v1::LeaveAck {
                room_id: ROOM.into(),
            }),
        ),
    );
    assert!(out.replies[0].result.is_ok());
    // Rejoined before the old pull's answer arrives: that answer is stale.
    let join = core.join(ROOM, JoinOptions::default());
    handle(
        &mut core,
        reply(join.request_id, join_ack(at(20), vec![], false)),
    );
    let stale = reply(
        pull_id,
        Body::PullResult(pull_result(at(12), msgs(11..=12), false)),
    );
    assert!(handle(&mut core, stale).is_empty());
    assert_eq!(core.cursor(ROOM), Some(at(20)));
}

// Requests and their answers.

#[test]
fn requests_get_fresh_ids_and_answers_reach_their_callers() {
    let mut core = joined_at(true, 10);
    let send = core.send(ROOM, 77, Kind::Chat as i32, Bytes::from_static(b"hi"));
    let pull = core.pull(ROOM, at(3), 5);
    let ping = core.ping();
    let ids = [send.request_id, pull.request_id, ping.request_id];
    assert!(ids.iter().all(|&id| id > CONNECT_REQUEST_ID));
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let Some(client_frame::Body::Send(body)) = &send.body else {
        panic!("{send:?}")
    };
    assert_eq!(body.client_msg_id, 77);
    assert_eq!(&body.payload[..], b"hi");

    let ack = Body::SendAck(SendAck {
        msg_id: 11,
        ts: 1100,
        lane: 0,
    });
    let out = handle(&mut core, reply(send.request_id, ack.clone()));
    assert_eq!(
        out.replies,
        [Reply {
            request_id: send.request_id,
            result: Ok(ack)
        }]
    );
    assert!(out.events.is_empty());

    // A raw pull's answer goes to its caller and changes nothing.
    let raw = pull_result(at(5), msgs(4..=5), false);
    let out = handle(
        &mut core,
        reply(pull.request_id, Body::PullResult(raw.clone())),
    );
    assert_eq!(out.replies[0].result, Ok(Body::PullResult(raw)));
    assert!(out.events.is_empty());
    assert_eq!(core.cursor(ROOM), Some(at(10)));
}

#[test]
fn errors_reach_their_caller_or_the_app() {
    let mut core = joined_at(true, 10);
    let send = core.send(ROOM, 1, 0, Bytes::new());
    let limited = v1::Error::new(v1::ErrorCode::RateLimited, "slow down").retry_after(250);
    let out = handle(
        &mut core,
        reply(send.request_id, Body::Error(limited.clone())),
    );
    assert_eq!(out.replies[0].result, Err(limited));
    assert!(out.events.is_empty());

    let pushed = v1::Error::new(v1::ErrorCode::BadRequest, "bad frame");
    let out = handle(&mut core, push(Body::Error(pushed.clone())));
    assert_eq!(
        out.events,
        [Event::Error {
            room: None,
            error: pushed.clone()
        }]
    );
    // An answer to a request nobody made is no one's: reported, not routed.
    let out = handle(&mut core, reply(9_999, Body::Error(pushed)));
    assert!(out.replies.is_empty());
    assert_eq!(out.events.len(), 1);
    let stray = reply(9_998, Body::SendAck(SendAck::default()));
    assert!(handle(&mut core, stray).is_empty());
}

#[test]
fn gave_up_requests_are_forgotten_but_joins_still_land() {
    let mut core = core(true);
    let send = core.send(ROOM, 1, 0, Bytes::new());
    core.give_up(send.request_id);
    assert!(
        handle(
            &mut core,
            reply(send.request_id, Body::SendAck(SendAck::default()))
        )
        .is_empty()
    );

    let join = core.join(ROOM, JoinOptions::default());
    core.give_up(join.request_id);
    handle(
        &mut core,
        reply(join.request_id, join_ack(at(10), vec![], false)),
    );
    assert_eq!(core.cursor(ROOM), Some(at(10)));

    let never_sent = core.join("other", JoinOptions::default());
    core.forget(never_sent.request_id);
    handle(
        &mut core,
        reply(never_sent.request_id, join_ack(at(1), vec![], false)),
    );
    assert_eq!(core.cursor("other"), None);
}

#[test]
fn frames_without_a_body_are_ignored() {
    let mut core = joined_at(true, 10);
    let empty = ServerFrame {
        request_id: 0,
        body: None,
    };
    assert!(handle(&mut core, empty).is_empty());
}

// Handshake.

#[test]
fn handshake_answers_are_read() {
    let ack = ConnectAck {
        session_id: 5,
        heartbeat_ms: 10_000,
        user_id: "alice".into(),
        max_rooms: 8,
        token_expires_at_ms: 1_700_000_000_000,
    };
    let frame = reply(CONNECT_REQUEST_ID, Body::ConnectAck(ack.clone()));
    assert_eq!(handshake_reply(frame).unwrap(), Handshake::Accepted(ack));

    let redirect = Body::Redirect(Redirect {
        url: "ws://127.0.0.2:7400/ws".into(),
    });
    assert_eq!(
        handshake_reply(reply(CONNECT_REQUEST_ID, redirect)).unwrap(),
        Handshake::Redirect("ws://127.0.0.2:7400/ws".into())
    );

    let denied = v1::Error::new(v1::ErrorCode::Unauthenticated, "token expired");
    let err = handshake_reply(reply(CONNECT_REQUEST_ID, Body::Error(denied))).unwrap_err();
    assert_eq!(err.code(), Some(v1::ErrorCode::Unauthenticated));

    let empty = Body::Redirect(Redirect { url: String::new() });
    assert!(matches!(
        handshake_reply(reply(CONNECT_REQUEST_ID, empty)),
        Err(ClientError::Protocol(_))
    ));
    let odd = handshake_reply(notify(at(1), None)).unwrap_err();
    assert_eq!(
        odd.to_string(),
        "protocol violation: expected connect_ack, got notify"
    );
}

#[test]
fn connect_frame_carries_token_and_device() {
    let frame = connect_frame("tok", "dev-1");
    assert_eq!(frame.request_id, CONNECT_REQUEST_ID);
    assert_eq!(
        frame.body,
        Some(client_frame::Body::Connect(v1::Connect {
            token: "tok".into(),
            device_id: "dev-1".into()
        }))
    );
}
