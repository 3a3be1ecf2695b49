//! Tests of [`RoomState`]: check order, lanes, numbering, history, members.

use super::*;
use crate::core::config::default_room_config;
use chatroom_cluster::auth::RoomRoles;

const A: NodeIdx = NodeIdx(1);
const B: NodeIdx = NodeIdx(2);
const S_US: u64 = 1_000_000;
const MS_NS: u64 = 1_000_000;
const EPOCH: u64 = 42;

fn room() -> RoomState {
    RoomState::new("lobby".into(), EPOCH, default_room_config())
}

fn room_with(edit: impl FnOnce(&mut RoomConfig)) -> RoomState {
    let mut config = default_room_config();
    edit(&mut config);
    RoomState::new("lobby".into(), EPOCH, config)
}

fn join(room: &mut RoomState, node: NodeIdx, users: &[&str]) {
    let joined: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    room.apply_membership(node, &joined, &[]);
}

fn at(secs: u64) -> Now {
    Now {
        unix_us: 1_700_000_000 * S_US + secs * S_US,
        mono_ns: secs * 1_000 * MS_NS,
    }
}

fn chat(sender: &str) -> SendInput {
    SendInput {
        sender: sender.to_owned(),
        roles: Roles::default(),
        room_roles: RoomRoles::default(),
        sender_info: None,
        client_msg_id: 0,
        kind: Kind::Chat as i32,
        payload: Bytes::from_static(b"hi"),
    }
}

fn system(sender: &str) -> SendInput {
    SendInput {
        roles: Roles {
            admin: false,
            system: true,
        },
        ..chat(sender)
    }
}

fn code(result: Result<Accepted, v1::Error>) -> ErrorCode {
    let error = result.expect_err("a refusal");
    ErrorCode::try_from(error.code).expect("a known code")
}

fn new_msg(result: Result<Accepted, v1::Error>) -> ChatMessage {
    match result.expect("accepted") {
        Accepted::New(msg) => msg,
        Accepted::Duplicate(ack) => panic!("unexpected duplicate {ack:?}"),
        Accepted::Held(held) => panic!("unexpected hold {held:?}"),
    }
}

#[test]
fn checks_run_in_design_order() {
    // One lane token only, so the second message is over the limit.
    let mut room = room_with(|c| {
        c.normal_per_s = 1;
        c.normal_burst = 1;
    });
    let now = at(0);
    assert_eq!(code(room.accept(chat("alice"), now)), ErrorCode::NotJoined);

    join(&mut room, A, &["alice"]);
    new_msg(room.accept(chat("alice"), now));
    assert_eq!(
        code(room.accept(chat("alice"), now)),
        ErrorCode::RateLimited
    );

    let oversized = SendInput {
        payload: Bytes::from(vec![0; 5000]),
        ..chat("alice")
    };
    assert_eq!(
        code(room.accept(oversized.clone(), now)),
        ErrorCode::PayloadTooLarge
    );
    let notice_oversized = SendInput {
        kind: Kind::Notice as i32,
        ..oversized.clone()
    };
    assert_eq!(
        code(room.accept(notice_oversized.clone(), now)),
        ErrorCode::Forbidden
    );
    let reserved_oversized = SendInput {
        kind: 999,
        ..oversized.clone()
    };
    assert_eq!(
        code(room.accept(reserved_oversized.clone(), now)),
        ErrorCode::BadRequest
    );

    room.mute("alice", None, now.unix_us).unwrap();
    assert_eq!(
        code(room.accept(reserved_oversized.clone(), now)),
        ErrorCode::Muted
    );

    assert_eq!(room.ban("alice").unwrap(), vec![A]);
    // The ban removed alice from the room, but she is told why.
    assert_eq!(
        code(room.accept(reserved_oversized.clone(), now)),
        ErrorCode::Banned
    );
    // Present (a stale report) and banned and muted and over the limit.
    room.members.join("alice", B);
    assert_eq!(
        code(room.accept(reserved_oversized, now)),
        ErrorCode::Banned
    );
    assert_eq!(code(room.accept(chat("alice"), now)), ErrorCode::Banned);
}

#[test]
fn privileged_senders_bypass_mutes_but_not_bans() {
    let mut room = room();
    join(&mut room, A, &["ops"]);
    room.mute("ops", None, 0).unwrap();
    let msg = new_msg(room.accept(system("ops"), at(0)));
    assert_eq!(msg.lane(), Lane::Priority);
    room.ban("ops").unwrap();
    room.members.join("ops", A);
    assert_eq!(code(room.accept(system("ops"), at(0))), ErrorCode::Banned);
}

#[test]
fn mutes_expire_and_say_how_long_is_left() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    let start = at(0);
    room.mute("alice", Some(start.unix_us + 12 * S_US), start.unix_us)
        .unwrap();
    let error = room.accept(chat("alice"), start).unwrap_err();
    assert_eq!(error.code, ErrorCode::Muted as i32);
    assert_eq!(error.message, "muted for 12 s more");
    assert_eq!(error.retry_after_ms, 12_000);

    let almost = Now {
        unix_us: start.unix_us + 11 * S_US + 500_001,
        ..start
    };
    let error = room.accept(chat("alice"), almost).unwrap_err();
    assert_eq!(error.message, "muted for 1 s more");
    assert_eq!(error.retry_after_ms, 500);

    new_msg(room.accept(chat("alice"), at(12)));
    assert_eq!(room.moderation().mute_count(at(12).unix_us), 0);
}

#[test]
fn indefinite_mutes_have_no_retry_hint() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    room.mute("alice", None, 0).unwrap();
    let error = room.accept(chat("alice"), at(1000)).unwrap_err();
    assert_eq!(error.code, ErrorCode::Muted as i32);
    assert_eq!(error.retry_after_ms, 0);
    assert!(room.unmute("alice", 0));
    new_msg(room.accept(chat("alice"), at(1000)));
}

#[test]
fn notices_need_a_privileged_sender() {
    let mut room = room();
    join(&mut room, A, &["alice", "ops"]);
    let notice = |input: SendInput| SendInput {
        kind: Kind::Notice as i32,
        ..input
    };
    let error = room.accept(notice(chat("alice")), at(0)).unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden as i32);
    let msg = new_msg(room.accept(notice(system("ops")), at(0)));
    assert_eq!(msg.kind, Kind::Notice as i32);
    assert_eq!(msg.lane(), Lane::Priority);
}

#[test]
fn custom_kinds_pass_and_reserved_ones_do_not() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    let with_kind = |kind| SendInput {
        kind,
        ..chat("alice")
    };
    new_msg(room.accept(with_kind(1000), at(0)));
    new_msg(room.accept(with_kind(Kind::Like as i32), at(0)));
    for kind in [-1, 4, 999] {
        let error = room.accept(with_kind(kind), at(0)).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest as i32);
        assert_eq!(error.message, format!("kind {kind} is reserved"));
    }
}

#[test]
fn payload_limit_is_inclusive() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    let sized = |n| SendInput {
        payload: Bytes::from(vec![b'x'; n]),
        ..chat("alice")
    };
    new_msg(room.accept(sized(4096), at(0)));
    let error = room.accept(sized(4097), at(0)).unwrap_err();
    assert_eq!(error.code, ErrorCode::PayloadTooLarge as i32);
    assert_eq!(
        error.message,
        "payload is 4097 bytes, this room allows 4096"
    );
}

#[test]
fn lane_follows_role_whitelist_and_priority_kinds() {
    let mut room = room();
    join(&mut room, A, &["alice", "vip", "ops"]);
    room.whitelist_add("vip").unwrap();
    let admin = SendInput {
        roles: Roles {
            admin: true,
            system: false,
        },
        ..chat("ops")
    };
    let gift = SendInput {
        kind: Kind::Gift as i32,
        ..chat("alice")
    };
    let lanes: Vec<Lane> = [chat("alice"), chat("vip"), admin, system("ops"), gift]
        .into_iter()
        .map(|send| new_msg(room.accept(send, at(0))).lane())
        .collect();
    assert_eq!(
        lanes,
        [
            Lane::Normal,
            Lane::Priority,
            Lane::Priority,
            Lane::Priority,
            Lane::Priority
        ]
    );
    room.whitelist_remove("vip");
    assert_eq!(
        new_msg(room.accept(chat("vip"), at(0))).lane(),
        Lane::Normal
    );
}

#[test]
fn numbering_runs_across_lanes() {
    let mut room = room();
    join(&mut room, A, &["alice", "ops"]);
    assert_eq!(room.latest(), Cursor::start(EPOCH));
    let sends = [chat("alice"), system("ops"), chat("alice"), system("ops")];
    let stamped: Vec<(u64, u64, Lane)> = sends
        .into_iter()
        .map(|send| {
            let msg = new_msg(room.accept(send, at(0)));
            (msg.msg_id, msg.normal_seq, msg.lane())
        })
        .collect();
    assert_eq!(
        stamped,
        [
            (1, 1, Lane::Normal),
            (2, 1, Lane::Priority),
            (3, 2, Lane::Normal),
            (4, 2, Lane::Priority),
        ]
    );
    let notice = room
        .post_notice("ops".into(), Bytes::from_static(b"welcome"), at(0))
        .unwrap();
    assert_eq!((notice.msg_id, notice.normal_seq), (5, 2));
    let latest = room.latest();
    assert_eq!(latest.epoch, EPOCH);
    assert_eq!((latest.msg_id, latest.normal_seq), (5, 2));
    assert_eq!(latest.ts, notice.ts);
}

#[test]
fn timestamps_strictly_increase_under_a_stuck_or_backward_clock() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    let t = at(10);
    let first = new_msg(room.accept(chat("alice"), t)).ts;
    assert_eq!(first, t.unix_us);
    let same = new_msg(room.accept(chat("alice"), t)).ts;
    // Only the wall clock steps back; the monotonic one cannot.
    let wall_back = Now {
        unix_us: t.unix_us - 5 * S_US,
        ..t
    };
    let back = new_msg(room.accept(chat("alice"), wall_back)).ts;
    assert_eq!((same, back), (first + 1, first + 2));
}

#[test]
fn rejected_messages_consume_nothing() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    let _ = room.accept(
        SendInput {
            kind: 5,
            ..chat("alice")
        },
        at(0),
    );
    let _ = room.accept(chat("bob"), at(0));
    assert_eq!(room.latest(), Cursor::start(EPOCH));
    assert_eq!(room.history().len(), 0);
    assert_eq!(new_msg(room.accept(chat("alice"), at(0))).msg_id, 1);
}

#[test]
fn the_normal_limit_does_not_hold_back_priority() {
    let mut room = room_with(|c| {
        c.normal_per_s = 2;
        c.normal_burst = 2;
    });
    join(&mut room, A, &["alice", "ops"]);
    let t = at(5);
    new_msg(room.accept(chat("alice"), t));
    new_msg(room.accept(chat("alice"), t));
    let error = room.accept(chat("alice"), t).unwrap_err();
    assert_eq!(error.code, ErrorCode::RateLimited as i32);
    assert_eq!(error.retry_after_ms, 500);
    assert_eq!(error.message, "normal lane limit 2 msg/s reached");
    new_msg(room.accept(system("ops"), t));
    // Half a second later one more normal message fits.
    let later = Now {
        mono_ns: t.mono_ns + 500 * MS_NS,
        ..t
    };
    new_msg(room.accept(chat("alice"), later));
}

#[test]
fn the_priority_lane_has_its_own_limit() {
    let mut room = room_with(|c| {
        c.priority_per_s = 1;
        c.priority_burst = 1;
    });
    join(&mut room, A, &["ops", "alice"]);
    new_msg(room.accept(system("ops"), at(0)));
    let error = room.accept(system("ops"), at(0)).unwrap_err();
    assert_eq!(error.code, ErrorCode::RateLimited as i32);
    assert_eq!(error.message, "priority lane limit 1 msg/s reached");
    assert_eq!(error.retry_after_ms, 1000);
    new_msg(room.accept(chat("alice"), at(0)));
}

#[test]
fn a_closed_lane_refuses_with_a_second_to_wait() {
    let mut room = room_with(|c| c.normal_per_s = 0);
    join(&mut room, A, &["alice", "ops"]);
    let error = room.accept(chat("alice"), at(0)).unwrap_err();
    assert_eq!(error.code, ErrorCode::RateLimited as i32);
    assert_eq!(error.retry_after_ms, 1000);
    assert_eq!(error.message, "the normal lane of this room is closed");
    new_msg(room.accept(system("ops"), at(0)));
}

#[test]
fn a_retry_gets_the_original_ack_without_a_new_message_or_token() {
    let mut room = room_with(|c| {
        c.normal_per_s = 1;
        c.normal_burst = 1;
    });
    join(&mut room, A, &["alice"]);
    let send = SendInput {
        client_msg_id: 9,
        ..chat("alice")
    };
    let first = new_msg(room.accept(send.clone(), at(0)));
    // Over the limit, yet the retry is answered: dedupe comes first.
    for _ in 0..3 {
        let retry = room.accept(send.clone(), at(1)).unwrap();
        assert_eq!(
            retry,
            Accepted::Duplicate(SendAck {
                msg_id: first.msg_id,
                ts: first.ts,
                lane: first.lane,
            })
        );
    }
    assert_eq!(room.latest().msg_id, 1);
    assert_eq!(room.history().len(), 1);
    // The limiter was not charged: one token is back after a second.
    new_msg(room.accept(chat("alice"), at(1)));
    // Another sender with the same client id is a different message.
    join(&mut room, A, &["bob"]);
    let bob = SendInput {
        client_msg_id: 9,
        ..chat("bob")
    };
    assert_eq!(code(room.accept(bob, at(1))), ErrorCode::RateLimited);
    // After the window the same id is a new message again.
    let late = room.accept(send, at(61)).unwrap();
    assert!(matches!(late, Accepted::New(msg) if msg.msg_id == 3));
    let stats = room.stats(at(0));
    assert_eq!(stats.duplicates, 3);
    assert_eq!(stats.accepted_normal, 3);
}

#[test]
fn history_is_capped_oldest_out() {
    let mut room = room_with(|c| c.history_size = 3);
    join(&mut room, A, &["alice"]);
    for _ in 0..5 {
        new_msg(room.accept(chat("alice"), at(0)));
    }
    let ids: Vec<u64> = room.history().map(|m| m.msg_id).collect();
    assert_eq!(ids, [3, 4, 5]);

    let mut config = room.config().clone();
    config.history_size = 2;
    room.set_config(config).unwrap();
    let ids: Vec<u64> = room.history().map(|m| m.msg_id).collect();
    assert_eq!(ids, [4, 5]);
}

#[test]
fn history_size_zero_keeps_nothing_but_still_stamps() {
    let mut room = room_with(|c| c.history_size = 0);
    join(&mut room, A, &["alice"]);
    let msg = new_msg(room.accept(chat("alice"), at(0)));
    assert_eq!(room.history().len(), 0);
    assert_eq!(room.latest(), Cursor::after(EPOCH, &msg));
}

#[test]
fn set_config_validates_and_replaces_changed_limiters_only() {
    let mut room = room_with(|c| {
        c.normal_per_s = 1;
        c.normal_burst = 1;
        c.priority_per_s = 1;
        c.priority_burst = 1;
    });
    join(&mut room, A, &["alice", "ops"]);
    new_msg(room.accept(chat("alice"), at(0)));
    new_msg(room.accept(system("ops"), at(0)));

    let mut bad = room.config().clone();
    bad.round_interval_ms = 1;
    assert!(matches!(
        room.set_config(bad),
        Err(ConfigError::OutOfRange {
            field: "round_interval_ms",
            ..
        })
    ));

    let mut config = room.config().clone();
    config.normal_per_s = 10;
    config.normal_burst = 10;
    config.max_payload_bytes = 10;
    room.set_config(config.clone()).unwrap();
    assert_eq!(room.config(), &config);
    // The normal lane got a fresh, full bucket; priority kept its state.
    new_msg(room.accept(chat("alice"), at(0)));
    assert_eq!(
        code(room.accept(system("ops"), at(0))),
        ErrorCode::RateLimited
    );
    let big = SendInput {
        payload: Bytes::from_static(b"more than ten"),
        ..chat("alice")
    };
    assert_eq!(code(room.accept(big, at(0))), ErrorCode::PayloadTooLarge);
}

#[test]
fn members_on_two_nodes_count_once_and_survive_one_unsubscribe() {
    let mut room = room();
    assert!(room.subscribe(A));
    assert!(!room.subscribe(A));
    room.subscribe(B);
    let change = room.apply_membership(A, &["alice".into(), "bob".into()], &[]);
    assert!(change.count_changed);
    let change = room.apply_membership(B, &["alice".into()], &[]);
    assert!(!change.count_changed, "alice was already present");
    assert_eq!(room.member_count(), 2);
    assert_eq!(room.nodes_of("alice"), &[A, B]);

    assert!(room.unsubscribe(A), "bob was only on A");
    assert_eq!(room.subscribers().collect::<Vec<_>>(), [B]);
    assert_eq!(room.member_count(), 1);
    assert_eq!(room.nodes_of("alice"), &[B]);
    assert!(!room.is_subscribed(A));

    let change = room.apply_membership(B, &[], &["alice".into()]);
    assert!(change.count_changed);
    assert_eq!(room.member_count(), 0);
    // Joining and leaving in one report: joined applies first.
    let change = room.apply_membership(B, &["carol".into()], &["carol".into()]);
    assert!(!change.count_changed);
}

#[test]
fn banning_removes_the_user_everywhere_and_keeps_them_out() {
    let mut room = room();
    join(&mut room, A, &["alice", "bob"]);
    join(&mut room, B, &["alice"]);
    assert_eq!(room.ban("alice").unwrap(), vec![A, B]);
    assert_eq!(room.member_count(), 1);
    let change = room.apply_membership(B, &["alice".into(), "carol".into()], &[]);
    assert_eq!(change.banned, ["alice"]);
    assert!(change.count_changed);
    assert_eq!(room.member_count(), 2);
    assert!(room.unban("alice"));
    join(&mut room, B, &["alice"]);
    new_msg(room.accept(chat("alice"), at(0)));
}

#[test]
fn notices_skip_membership_and_limits_but_not_the_payload_limit() {
    let mut room = room_with(|c| c.priority_per_s = 0);
    for _ in 0..3 {
        let msg = room
            .post_notice("ops".into(), Bytes::from_static(b"hello"), at(0))
            .unwrap();
        assert_eq!(msg.lane(), Lane::Priority);
        assert_eq!(msg.kind, Kind::Notice as i32);
    }
    let error = room
        .post_notice("ops".into(), Bytes::from(vec![0; 4097]), at(0))
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PayloadTooLarge as i32);
    let stats = room.stats(at(0));
    assert_eq!(stats.accepted_priority, 3);
    assert_eq!(stats.rejected["payload_too_large"], 1);
}

#[test]
fn stats_count_per_lane_and_per_code() {
    let mut room = room_with(|c| {
        c.normal_per_s = 1;
        c.normal_burst = 1;
    });
    room.subscribe(A);
    join(&mut room, A, &["alice", "ops"]);
    new_msg(room.accept(chat("alice"), at(0)));
    let _ = room.accept(chat("alice"), at(0));
    let _ = room.accept(chat("alice"), at(0));
    let _ = room.accept(chat("nobody"), at(0));
    new_msg(room.accept(system("ops"), at(0)));
    room.record_broadcast(1, 2);
    room.mute("x", None, 0).unwrap();
    room.ban("y").unwrap();
    let stats = room.stats(at(0));
    assert_eq!(stats.members, 2);
    assert_eq!(stats.nodes, 1);
    assert_eq!((stats.accepted_normal, stats.accepted_priority), (1, 1));
    assert_eq!(stats.rejected.len(), 2);
    assert_eq!(stats.rejected["rate_limited"], 2);
    assert_eq!(stats.rejected["not_joined"], 1);
    assert_eq!((stats.broadcast_frames, stats.broadcast_messages), (1, 2));
    assert_eq!((stats.mutes, stats.bans, stats.whitelist), (1, 1, 0));
    assert_eq!(stats.history, 2);
    assert_eq!(stats.latest, room.latest());
}

fn stored(epoch: u64, history: Vec<ChatMessage>) -> PersistedRoom {
    let latest = history
        .last()
        .map_or(Cursor::start(epoch), |msg| Cursor::after(epoch, msg));
    PersistedRoom {
        latest: Some(latest),
        history,
        ..PersistedRoom::default()
    }
}

/// Three messages stamped by a room of `EPOCH` at `at(1)`.
fn three_messages() -> Vec<ChatMessage> {
    let mut old = room();
    join(&mut old, A, &["alice"]);
    (0..3)
        .map(|_| new_msg(old.accept(chat("alice"), at(1))))
        .collect()
}

#[test]
fn a_restored_room_continues_its_stream() {
    let history = three_messages();
    let last = history[2].clone();
    let mut config = default_room_config();
    config.max_payload_bytes = 10;
    let overrides = RoomOverrides {
        max_payload_bytes: Some(10),
        ..RoomOverrides::default()
    };
    let persisted = PersistedRoom {
        overrides: Some(overrides.clone()),
        mutes: vec![
            ("mo".into(), None),
            ("gone".into(), Some(at(0).unix_us)),
            ("later".into(), Some(at(100).unix_us)),
        ],
        bans: vec!["eve".into()],
        whitelist: vec!["vip".into()],
        ..stored(EPOCH, history)
    };
    let mut room = RoomState::restore("lobby".into(), 999, default_room_config(), persisted, at(1));
    assert_eq!(room.epoch(), EPOCH);
    assert_eq!(room.latest(), Cursor::after(EPOCH, &last));
    assert_eq!(room.config(), &config);
    assert_eq!(room.overrides(), &overrides);
    assert_eq!(room.history().count(), 3);
    assert!(room.moderation().is_banned("eve"));
    assert!(room.moderation().is_whitelisted("vip"));
    assert_eq!(room.moderation().mute_count(at(1).unix_us), 2);

    join(&mut room, A, &["alice"]);
    // The wall clock went back: the room clock does not.
    let next = new_msg(room.accept(chat("alice"), at(0)));
    assert_eq!(next.msg_id, last.msg_id + 1);
    assert_eq!(next.normal_seq, last.normal_seq + 1);
    assert!(next.ts > last.ts);
    // Nothing to adopt: the stream was stored.
    let other = Cursor {
        epoch: 5,
        ts: 1,
        msg_id: 500,
        normal_seq: 500,
    };
    assert_eq!(room.catch_up(&other), CatchUp::Unchanged);
}

#[test]
fn a_restored_room_without_a_position_starts_a_stream_and_keeps_its_lists() {
    let overrides = RoomOverrides {
        history_size: Some(0),
        priority_ring: Some(0),
        ..RoomOverrides::default()
    };
    let persisted = PersistedRoom {
        overrides: Some(overrides),
        bans: vec!["eve".into()],
        history: three_messages(),
        ..PersistedRoom::default()
    };
    let room = RoomState::restore("lobby".into(), 999, default_room_config(), persisted, at(0));
    assert_eq!(room.epoch(), 999);
    assert_eq!(room.latest(), Cursor::start(999));
    assert_eq!(
        room.history().count(),
        0,
        "history without a position is ignored"
    );
    assert_eq!(
        room.config(),
        &default_room_config(),
        "an invalid config is replaced"
    );
    assert_eq!(room.overrides(), &RoomOverrides::default());
    assert!(room.moderation().is_banned("eve"));
}

#[test]
fn a_subscriber_ahead_in_the_same_stream_moves_counters_and_clock() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    let first = new_msg(room.accept(chat("alice"), at(1)));
    let seen = Cursor {
        epoch: EPOCH,
        ts: at(50).unix_us,
        msg_id: 40,
        normal_seq: 30,
    };
    assert_eq!(room.catch_up(&seen), CatchUp::Advanced);
    assert_eq!(room.latest(), seen);
    assert_eq!(room.catch_up(&seen), CatchUp::Unchanged);
    let behind = Cursor::after(EPOCH, &first);
    assert_eq!(room.catch_up(&behind), CatchUp::Unchanged);

    let next = new_msg(room.accept(chat("alice"), at(2)));
    assert_eq!((next.msg_id, next.normal_seq), (41, 31));
    assert!(next.ts > seen.ts);
}

#[test]
fn an_empty_room_adopts_a_subscribers_stream_once() {
    let mut room = room();
    let empty_other = Cursor::start(5);
    assert_eq!(room.catch_up(&empty_other), CatchUp::Unchanged);
    let seen = Cursor {
        epoch: 5,
        ts: at(10).unix_us,
        msg_id: 12,
        normal_seq: 9,
    };
    assert_eq!(room.catch_up(&seen), CatchUp::Adopted);
    assert_eq!(room.epoch(), 5);
    assert_eq!(room.latest(), seen);
    let another = Cursor { epoch: 6, ..seen };
    assert_eq!(room.catch_up(&another), CatchUp::Unchanged);

    join(&mut room, A, &["alice"]);
    let next = new_msg(room.accept(chat("alice"), at(1)));
    assert_eq!((next.msg_id, next.normal_seq), (13, 10));
    assert!(next.ts > seen.ts);

    // So does a room restored from a record with nothing stamped (left by a
    // node that held the room briefly while views disagreed).
    let stale = PersistedRoom {
        latest: Some(Cursor::start(3)),
        overrides: None,
        mutes: Vec::new(),
        bans: Vec::new(),
        whitelist: Vec::new(),
        history: Vec::new(),
    };
    let mut restored = RoomState::restore("lobby".into(), 999, default_room_config(), stale, at(0));
    assert_eq!(restored.catch_up(&seen), CatchUp::Adopted);
    assert_eq!(restored.latest(), seen);

    // A room that has stamped is no longer empty.
    let mut busy = room_with(|_| {});
    join(&mut busy, A, &["alice"]);
    busy.accept(chat("alice"), at(1)).unwrap();
    assert_eq!(busy.catch_up(&seen), CatchUp::Unchanged);
    assert_eq!(busy.epoch(), EPOCH);
}

#[test]
fn overrides_lay_over_the_defaults_they_do_not_name() {
    let mut room = room();
    let overrides = RoomOverrides {
        normal_per_s: Some(5),
        ..RoomOverrides::default()
    };
    let mut defaults = default_room_config();
    defaults.max_payload_bytes = 100;
    room.reconfigure(overrides.clone(), &defaults).unwrap();
    assert_eq!(room.config().normal_per_s, 5);
    assert_eq!(room.config().max_payload_bytes, 100, "follows the defaults");
    assert_eq!(room.overrides(), &overrides);

    let out_of_bounds = RoomOverrides {
        round_interval_ms: Some(1),
        ..RoomOverrides::default()
    };
    assert!(room.reconfigure(out_of_bounds, &defaults).is_err());
    assert_eq!(room.overrides(), &overrides, "nothing changed");
    assert_eq!(room.config().normal_per_s, 5);
}

#[test]
fn stats_add_the_nodes_reports_and_rate_the_last_seconds() {
    let mut room = room();
    join(&mut room, A, &["alice"]);
    for _ in 0..20 {
        new_msg(room.accept(chat("alice"), at(100)));
    }
    let report = RoomReport {
        room_id: "lobby".into(),
        delivered: 40,
        skipped_normal: 3,
        skipped_priority: 0,
        evicted_normal: 7,
        evicted_priority: 1,
        slow_consumer_kicks: 2,
    };
    room.record_report(&report, at(101));
    room.record_report(&report, at(101));
    let stats = room.stats(at(101));
    assert_eq!(stats.in_per_s, 2.0);
    assert_eq!(stats.out_per_s, 8.0);
    assert_eq!(
        (stats.delivered, stats.skipped_normal, stats.evicted_normal),
        (80, 6, 14)
    );
    assert_eq!((stats.evicted_priority, stats.slow_consumer_kicks), (2, 4));
    let later = room.stats(at(111));
    assert_eq!((later.in_per_s, later.out_per_s), (0.0, 0.0));
    assert_eq!(later.delivered, 80, "totals stay");
    assert_eq!(room.summary(at(101)).out_per_s, 8.0);
}

#[test]
fn slow_mode_lets_each_member_post_once_per_interval() {
    let mut room = room_with(|c| c.slow_mode_ms = 5_000);
    join(&mut room, A, &["alice", "bob", "vip", "ops"]);
    room.whitelist_add("vip").unwrap();
    let first = SendInput {
        client_msg_id: 7,
        ..chat("alice")
    };
    new_msg(room.accept(first.clone(), at(10)));
    // A retry of the accepted message still gets its ack.
    assert!(matches!(
        room.accept(first, at(12)),
        Ok(Accepted::Duplicate(_))
    ));
    let error = room.accept(chat("alice"), at(12)).unwrap_err();
    assert_eq!(code(Err(error.clone())), ErrorCode::RateLimited);
    assert_eq!(error.retry_after_ms, 3_000);
    assert!(error.message.contains("slow mode"), "{}", error.message);
    // Others are not held back by alice, nor are priority senders and kinds.
    new_msg(room.accept(chat("bob"), at(12)));
    for _ in 0..3 {
        new_msg(room.accept(chat("vip"), at(12)));
        new_msg(room.accept(system("ops"), at(12)));
        let gift = SendInput {
            kind: Kind::Gift as i32,
            ..chat("alice")
        };
        new_msg(room.accept(gift, at(12)));
    }
    new_msg(room.accept(chat("alice"), at(15)));

    // Turning it off lets alice post at once.
    let mut config = room.config().clone();
    config.slow_mode_ms = 0;
    room.set_config(config).unwrap();
    new_msg(room.accept(chat("alice"), at(15)));
}
