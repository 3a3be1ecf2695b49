//! Tests of the write coalescing: what wins, what is kept, what is dropped
//! and counted, and how writes land on what a store already holds.

use bytes::Bytes;
use chatroom_proto::v1::Lane;

use super::*;
use crate::core::default_room_config;

const EPOCH: u64 = 7;

fn room() -> Arc<str> {
    "lobby".into()
}

fn msg(msg_id: u64) -> ChatMessage {
    ChatMessage {
        msg_id,
        ts: 1_000 + msg_id,
        normal_seq: msg_id,
        sender: "alice".into(),
        lane: Lane::Normal as i32,
        kind: 0,
        payload: Bytes::from(format!("m{msg_id}")),
        client_msg_id: 0,
        sender_info: None,
    }
}

fn ids(history: &VecDeque<ChatMessage>) -> Vec<u64> {
    history.iter().map(|m| m.msg_id).collect()
}

fn appended(range: std::ops::RangeInclusive<u64>, history_size: u32) -> PendingWrites {
    let mut writes = PendingWrites::default();
    for id in range {
        writes.append(&room(), EPOCH, &msg(id), history_size);
    }
    writes
}

#[test]
fn the_newest_position_wins_and_history_keeps_the_window() {
    let writes = appended(1..=5, 3);
    let lobby = writes.get("lobby").unwrap();
    assert_eq!(lobby.latest, Some(Cursor::after(EPOCH, &msg(5))));
    assert_eq!(ids(&lobby.history), [3, 4, 5]);
    assert_eq!(lobby.history_cap, Some(3));
    assert_eq!(writes.coalesced.history, 2);

    let mut pending = PendingWrites::default();
    assert_eq!(pending.merge_submission(writes, 1).history, 2);
    let coalesced = pending.merge_submission(appended(6..=7, 3), 2);
    assert_eq!(coalesced.history, 2);
    assert_eq!(ids(&pending.get("lobby").unwrap().history), [5, 6, 7]);
    assert_eq!(pending.oldest_submission(), Some(1));
}

#[test]
fn a_room_without_history_still_records_its_position() {
    let writes = appended(1..=3, 0);
    let lobby = writes.get("lobby").unwrap();
    assert!(lobby.history.is_empty());
    assert_eq!(lobby.history_cap, Some(0));
    assert_eq!(lobby.latest.unwrap().msg_id, 3);
}

#[test]
fn a_new_stream_replaces_the_history_waiting_before_it() {
    let mut pending = appended(1..=3, 10);
    let mut newer = PendingWrites::default();
    newer.begin_stream(&room(), Cursor::start(EPOCH + 1));
    newer.append(&room(), EPOCH + 1, &msg(1), 10);
    pending.merge_newer(newer);
    let lobby = pending.get("lobby").unwrap();
    assert!(lobby.reset_history);
    assert_eq!(ids(&lobby.history), [1]);
    assert_eq!(lobby.latest.unwrap().epoch, EPOCH + 1);

    // Appends after the reset keep it.
    pending.merge_newer(appended(2..=2, 10));
    let lobby = pending.get("lobby").unwrap();
    assert!(lobby.reset_history);
    assert_eq!(ids(&lobby.history), [1, 2]);
}

#[test]
fn a_clear_supersedes_everything_before_it() {
    let mut pending = appended(1..=3, 10);
    pending.config(&room(), &default_room_config(), &RoomOverrides::default());
    pending.moderation(&room(), List::Bans, "bob", EntryChange::Put(None));
    let mut newer = PendingWrites::default();
    newer.clear(&room());
    pending.merge_newer(newer);
    let lobby = pending.get("lobby").unwrap();
    assert!(lobby.clear);
    assert_eq!(lobby.weight(), 1);
    assert!(lobby.latest.is_none() && lobby.overrides.is_none() && lobby.history.is_empty());

    // What comes after the clear stays with it.
    let mut after = PendingWrites::default();
    after.append(&room(), EPOCH + 1, &msg(1), 10);
    pending.merge_newer(after);
    let lobby = pending.get("lobby").unwrap();
    assert!(lobby.clear && lobby.reset_history);
    assert_eq!(ids(&lobby.history), [1]);
}

#[test]
fn an_empty_stream_is_not_written_and_its_first_message_replaces_the_history() {
    let mut writes = PendingWrites::default();
    writes.begin_stream(&room(), Cursor::start(EPOCH + 1));
    assert!(
        writes.get("lobby").is_none(),
        "nothing to keep, nothing written"
    );
    writes.append(&room(), EPOCH + 1, &msg(1), 10);
    let lobby = writes.get("lobby").unwrap();
    assert!(
        lobby.reset_history,
        "the stored history belongs to another stream"
    );
    assert_eq!(lobby.latest.unwrap().epoch, EPOCH + 1);
}

#[test]
fn config_wins_and_moves_the_history_cap() {
    let mut writes = appended(1..=5, 10);
    let mut config = default_room_config();
    config.history_size = 2;
    let overrides = RoomOverrides {
        history_size: Some(2),
        ..RoomOverrides::default()
    };
    writes.config(&room(), &config, &overrides);
    let lobby = writes.get("lobby").unwrap();
    assert_eq!(lobby.overrides.as_ref(), Some(&overrides));
    assert_eq!(lobby.history_cap, Some(2));
    assert_eq!(ids(&lobby.history), [4, 5]);
}

#[test]
fn moderation_keeps_the_last_change_per_user_and_list() {
    let mut writes = PendingWrites::default();
    writes.moderation(&room(), List::Mutes, "bob", EntryChange::Put(Some(99)));
    writes.moderation(&room(), List::Mutes, "bob", EntryChange::Remove);
    writes.moderation(&room(), List::Bans, "bob", EntryChange::Put(None));
    let mut pending = PendingWrites::default();
    pending.merge_submission(writes, 1);
    let mut newer = PendingWrites::default();
    newer.moderation(&room(), List::Bans, "bob", EntryChange::Remove);
    newer.moderation(&room(), List::Whitelist, "carol", EntryChange::Put(None));
    pending.merge_submission(newer, 2);
    let mut changes: Vec<_> = pending.get("lobby").unwrap().moderation().collect();
    changes.sort_by_key(|(list, user, _)| (format!("{list}"), user.to_string()));
    assert_eq!(
        changes,
        [
            (List::Bans, "bob", EntryChange::Remove),
            (List::Mutes, "bob", EntryChange::Remove),
            (List::Whitelist, "carol", EntryChange::Put(None)),
        ]
    );
}

#[test]
fn moderation_beyond_the_bound_drops_the_oldest_and_counts_it() {
    let mut writes = PendingWrites::default();
    for i in 0..MAX_PENDING_MODERATION + 2 {
        writes.moderation(
            &room(),
            List::Bans,
            &format!("u{i}"),
            EntryChange::Put(None),
        );
    }
    assert_eq!(writes.coalesced.moderation, 2);
    let lobby = writes.get("lobby").unwrap();
    let users: Vec<&str> = lobby.moderation().map(|(_, user, _)| user).collect();
    assert_eq!(users.len(), MAX_PENDING_MODERATION);
    assert!(!users.contains(&"u0") && !users.contains(&"u1"));
    assert!(users.contains(&"u2"));

    // Merging keeps arrival order: the older side's entries go first.
    let mut pending = PendingWrites::default();
    pending.merge_submission(writes, 1);
    let mut newer = PendingWrites::default();
    newer.moderation(&room(), List::Bans, "late", EntryChange::Put(None));
    assert_eq!(pending.merge_submission(newer, 2).moderation, 1);
    let lobby = pending.get("lobby").unwrap();
    let users: Vec<&str> = lobby.moderation().map(|(_, user, _)| user).collect();
    assert!(users.contains(&"late") && !users.contains(&"u2"));
}

#[test]
fn batches_take_whole_rooms_up_to_a_weight() {
    let mut pending = PendingWrites::default();
    for r in 0..10 {
        let mut writes = PendingWrites::default();
        let room: Arc<str> = format!("room-{r}").into();
        for id in 1..=4 {
            writes.append(&room, EPOCH, &msg(id), 100);
        }
        pending.merge_submission(writes, r + 1);
    }
    // Each room weighs 5 (its position and 4 messages).
    let batch = pending.take_batch(12);
    assert_eq!(batch.len(), 2);
    assert_eq!(pending.len(), 8);
    for (_, writes) in batch.iter() {
        assert_eq!(writes.history.len(), 4);
    }
    // A room heavier than the weight still goes, alone.
    let batch = pending.take_batch(1);
    assert_eq!(batch.len(), 1);
    let rest = pending.take_batch(usize::MAX);
    assert_eq!(rest.len(), 7);
    assert!(pending.is_empty());
    assert_eq!(pending.oldest_submission(), None);
}

#[test]
fn a_stored_position_of_the_same_stream_shows_what_is_in() {
    let mut writes = PendingWrites::default();
    writes.begin_stream(&room(), Cursor::start(EPOCH));
    for id in 1..=4 {
        writes.append(&room(), EPOCH, &msg(id), 10);
    }
    let lobby = writes.get("lobby").unwrap();
    let nothing = Stored {
        began: false,
        through_msg_id: 0,
    };
    assert_eq!(lobby.stored(None), nothing);
    let other_stream = StoredPosition {
        epoch: EPOCH - 1,
        msg_id: 50,
    };
    assert_eq!(lobby.stored(Some(other_stream)), nothing);
    let half = StoredPosition {
        epoch: EPOCH,
        msg_id: 2,
    };
    assert_eq!(
        lobby.stored(Some(half)),
        Stored {
            began: true,
            through_msg_id: 2
        }
    );
}

fn stored_room(epoch: u64, through: u64) -> PersistedRoom {
    PersistedRoom {
        latest: Some(Cursor::after(epoch, &msg(through))),
        overrides: None,
        mutes: vec![("bob".into(), None)],
        bans: vec!["eve".into()],
        whitelist: vec![],
        history: (1..=through).map(msg).collect(),
    }
}

#[test]
fn writes_apply_on_top_of_a_load_without_repeating_messages() {
    let mut writes = appended(3..=5, 4);
    writes.moderation(&room(), List::Mutes, "bob", EntryChange::Remove);
    writes.moderation(&room(), List::Whitelist, "vip", EntryChange::Put(None));
    let lobby = writes.get("lobby").unwrap();
    // The load already saw messages up to 3 (an in-flight batch landed).
    let room = lobby.apply_to(Some(stored_room(EPOCH, 3))).unwrap();
    let ids: Vec<u64> = room.history.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [2, 3, 4, 5]);
    assert_eq!(room.latest.unwrap().msg_id, 5);
    assert!(room.mutes.is_empty());
    assert_eq!(room.bans, ["eve"]);
    assert_eq!(room.whitelist, ["vip"]);
}

#[test]
fn a_new_stream_on_top_of_a_load_replaces_its_history() {
    let mut writes = PendingWrites::default();
    writes.begin_stream(&room(), Cursor::start(EPOCH + 1));
    writes.append(&room(), EPOCH + 1, &msg(1), 10);
    let lobby = writes.get("lobby").unwrap();
    let room = lobby.apply_to(Some(stored_room(EPOCH, 3))).unwrap();
    assert_eq!(room.latest.unwrap().epoch, EPOCH + 1);
    assert_eq!(room.history, [msg(1)]);
    assert_eq!(room.bans, ["eve"], "moderation is not part of the stream");
}

#[test]
fn a_clear_on_top_of_a_load_leaves_nothing_or_only_what_followed() {
    let mut writes = PendingWrites::default();
    writes.clear(&room());
    let lobby = writes.get("lobby").unwrap();
    assert_eq!(lobby.apply_to(Some(stored_room(EPOCH, 3))), None);

    writes.moderation(&room(), List::Bans, "mallory", EntryChange::Put(None));
    let lobby = writes.get("lobby").unwrap();
    let room = lobby.apply_to(Some(stored_room(EPOCH, 3))).unwrap();
    assert_eq!(room.latest, None);
    assert_eq!(room.bans, ["mallory"]);
    assert!(room.history.is_empty() && room.mutes.is_empty());
}
