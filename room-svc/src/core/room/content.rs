//! Tests of what a room does with what is said: read-only rooms, the word
//! filter, and sends held for the app's moderation hook.

use super::*;
use crate::core::config::default_room_config;
use crate::core::wordfilter::{FilterAction, WordList};
use chatroom_cluster::auth::RoomRoles;

const S_US: u64 = 1_000_000;

fn at(secs: u64) -> Now {
    Now {
        unix_us: 1_700_000_000 * S_US + secs * S_US,
        mono_ns: secs * 1_000_000_000,
    }
}

fn room_with(edit: impl FnOnce(&mut RoomConfig)) -> RoomState {
    let mut config = default_room_config();
    config.normal_per_s = 1_000_000;
    config.normal_burst = 1_000_000;
    edit(&mut config);
    let mut room = RoomState::new("lobby".into(), 7, config);
    let users: Vec<String> = ["alice", "bob", "mod", "star"].map(str::to_owned).into();
    room.apply_membership(NodeIdx(1), &users, &[]);
    room
}

fn say(sender: &str, text: &str, client_msg_id: u64) -> SendInput {
    SendInput {
        sender: sender.to_owned(),
        roles: Roles::default(),
        room_roles: RoomRoles::default(),
        sender_info: None,
        client_msg_id,
        kind: Kind::Chat as i32,
        payload: Bytes::copy_from_slice(text.as_bytes()),
    }
}

fn filter(lists: &[(&str, FilterAction, &[&str])]) -> Arc<WordFilter> {
    let lists: Vec<WordList> = lists
        .iter()
        .map(|(name, action, words)| WordList {
            name: (*name).to_owned(),
            action: *action,
            words: words.iter().map(|w| (*w).to_owned()).collect(),
        })
        .collect();
    Arc::new(WordFilter::build(&lists).expect("valid lists"))
}

fn error_code(result: Result<Accepted, v1::Error>) -> ErrorCode {
    ErrorCode::try_from(result.expect_err("a refusal").code).expect("a known code")
}

fn held(result: Result<Accepted, v1::Error>) -> Held {
    match result.expect("accepted") {
        Accepted::Held(held) => held,
        other => panic!("not held: {other:?}"),
    }
}

fn stamped(result: Result<Accepted, v1::Error>) -> ChatMessage {
    match result.expect("accepted") {
        Accepted::New(msg) => msg,
        other => panic!("not stamped: {other:?}"),
    }
}

#[test]
fn a_read_only_room_takes_posts_from_moderators_streamers_and_staff_only() {
    let mut room = room_with(|config| config.read_only = true);
    assert_eq!(
        error_code(room.accept(say("alice", "hi", 0), at(1))),
        ErrorCode::Forbidden
    );
    let moderator = SendInput {
        room_roles: RoomRoles {
            moderator: true,
            streamer: false,
        },
        ..say("mod", "hi", 0)
    };
    stamped(room.accept(moderator, at(1)));
    let streamer = SendInput {
        room_roles: RoomRoles {
            moderator: false,
            streamer: true,
        },
        ..say("star", "hi", 0)
    };
    stamped(room.accept(streamer, at(1)));
    let system = SendInput {
        roles: Roles {
            admin: false,
            system: true,
        },
        ..say("bob", "hi", 0)
    };
    stamped(room.accept(system, at(1)));
}

#[test]
fn the_word_filter_masks_or_refuses_without_naming_the_word_and_staff_bypass_it() {
    let mut room = room_with(|_| {});
    room.set_filter(filter(&[
        ("slurs", FilterAction::Reject, &["badword"]),
        ("mild", FilterAction::Mask, &["darn"]),
    ]));
    let masked = stamped(room.accept(say("alice", "oh ＤＡＲＮ it", 1), at(1)));
    assert_eq!(&masked.payload[..], "oh **** it".as_bytes());
    let refused = room
        .accept(say("alice", "a BadWord here", 2), at(1))
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::ContentRejected as i32);
    assert!(refused.message.contains("slurs"), "{}", refused.message);
    assert!(!refused.message.to_lowercase().contains("badword"));
    stamped(room.accept(say("alice", "all clean", 3), at(1)));
    let admin = SendInput {
        roles: Roles {
            admin: true,
            system: false,
        },
        ..say("bob", "badword", 0)
    };
    assert_eq!(&stamped(room.accept(admin, at(1))).payload[..], b"badword");
    let stats = room.stats(at(1));
    assert_eq!(stats.masked, 1);
    assert_eq!(stats.rejected.get("content_rejected"), Some(&1));
    assert_eq!(stats.accepted_normal + stats.accepted_priority, 3);
}

#[test]
fn hooked_kinds_are_held_then_stamped_refused_or_replaced_by_the_verdict() {
    let mut room = room_with(|_| {});
    room.set_hooked(true);
    let like = SendInput {
        kind: Kind::Like as i32,
        ..say("bob", "", 0)
    };
    stamped(room.accept(like, at(1)));
    let first = held(room.accept(say("alice", "one", 1), at(1)));
    let second = held(room.accept(say("alice", "two", 2), at(1)));
    let third = held(room.accept(say("bob", "three", 3), at(1)));
    assert_eq!(room.held(), 3);
    assert_eq!(&first.payload()[..], b"one");

    let msg = stamped(room.complete(first, Verdict::Accept, at(2)));
    assert_eq!(&msg.payload[..], b"one");
    let refused = room
        .complete(second, Verdict::Reject("spam".into()), at(2))
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::ContentRejected as i32);
    assert_eq!(refused.message, "spam");
    let replaced = stamped(room.complete(third, Verdict::Replace(Bytes::from_static(b"3")), at(2)));
    assert_eq!(&replaced.payload[..], b"3");
    assert_eq!(replaced.msg_id, msg.msg_id + 1);
    assert_eq!(room.held(), 0);
    let stats = room.stats(at(2));
    assert_eq!(stats.hook_replaced, 1);
    assert_eq!(stats.rejected.get("content_rejected"), Some(&1));
}

#[test]
fn a_failed_hook_follows_the_rooms_policy() {
    let mut open = room_with(|_| {});
    open.set_hooked(true);
    let send = held(open.accept(say("alice", "hi", 1), at(1)));
    stamped(open.complete(send, Verdict::Failed, at(1)));
    assert_eq!(open.stats(at(1)).hook_failed_open, 1);

    let mut closed = room_with(|config| config.hook_failure = HookFailurePolicy::Closed as i32);
    closed.set_hooked(true);
    let send = held(closed.accept(say("alice", "hi", 1), at(1)));
    let error = closed
        .complete(send, Verdict::Failed, at(1))
        .expect_err("fails closed");
    assert_eq!(error.code, ErrorCode::Overloaded as i32);
    assert!(error.retry_after_ms > 0);
}

#[test]
fn a_verdict_does_not_override_a_ban_a_retry_or_the_size_limit() {
    let mut room = room_with(|config| config.max_payload_bytes = 8);
    room.set_hooked(true);
    let banned = held(room.accept(say("alice", "hi", 1), at(1)));
    room.ban("alice").expect("room for a ban");
    assert_eq!(
        error_code(room.complete(banned, Verdict::Accept, at(1))),
        ErrorCode::Banned
    );

    let first = held(room.accept(say("bob", "hi", 7), at(1)));
    let retry = held(room.accept(say("bob", "hi", 7), at(1)));
    let msg = stamped(room.complete(first, Verdict::Accept, at(1)));
    match room.complete(retry, Verdict::Accept, at(1)) {
        Ok(Accepted::Duplicate(ack)) => assert_eq!(ack.msg_id, msg.msg_id),
        other => panic!("a retry was stamped again: {other:?}"),
    }

    let big = held(room.accept(say("bob", "hi", 8), at(1)));
    assert_eq!(
        error_code(room.complete(
            big,
            Verdict::Replace(Bytes::from_static(b"far too long")),
            at(1)
        )),
        ErrorCode::PayloadTooLarge
    );
}

#[test]
fn a_room_holds_a_bounded_number_of_sends_for_the_hook() {
    let mut room = room_with(|_| {});
    room.set_hooked(true);
    let holds: Vec<Held> = (0..MAX_HELD)
        .map(|n| held(room.accept(say("alice", "x", n as u64 + 1), at(1))))
        .collect();
    let error = room
        .accept(say("bob", "one more", 0), at(1))
        .expect_err("over the bound");
    assert_eq!(error.code, ErrorCode::Overloaded as i32);
    let mut holds = holds.into_iter();
    let released = room.release(holds.next().expect("one"));
    assert_eq!(released.code, ErrorCode::Overloaded as i32);
    held(room.accept(say("bob", "one more", 0), at(1)));
    assert_eq!(room.held(), MAX_HELD);
}
