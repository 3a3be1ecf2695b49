//! The admin API's config patch: a request body read as the API reads it,
//! laid over a room's overrides and checked; a config within bounds is
//! applied by the room and by a msg-svc holding the room.

use chatroom_proto::cluster::v1::{RoomConfig, RoomOverrides, RoomUpdate};
use chatroom_proto::v1::Kind;
use room_svc::core::config::serialize_overrides;
use room_svc::core::{
    ConfigPatch, NodeIdx, Now, RoomState, SendInput, default_room_config, resolve, validate_config,
};
use room_svc::fuzzing::admin_body;
use serde::Serialize;

/// Overrides the room has before the patch: some fields set, so a patch
/// can keep, clear or change them.
fn existing() -> RoomOverrides {
    RoomOverrides {
        normal_per_s: Some(50),
        history_size: Some(20),
        max_payload_bytes: Some(1024),
        ..RoomOverrides::default()
    }
}

/// A patch body: read without a panic; a patch that reads writes back (as
/// the API shows overrides) to one that makes the same overrides; a config
/// within bounds is taken by the room (which then decides on a message
/// under it) and by a msg-svc's copy of the room.
pub fn admin_config(data: &[u8]) {
    let Ok(patch) = admin_body::<ConfigPatch>(data) else {
        return;
    };
    let mut overrides = existing();
    patch.apply(&mut overrides);
    assert_eq!(
        reread(&overrides),
        overrides,
        "overrides do not survive a round trip"
    );
    let defaults = default_room_config();
    let config = resolve(&defaults, &overrides);
    let valid = validate_config(&config).is_ok();
    let mut room = RoomState::new("lobby".into(), 1, defaults.clone());
    assert_eq!(room.reconfigure(overrides, &defaults).is_ok(), valid);
    if !valid {
        return;
    }
    assert_eq!(room.config(), &config);
    room.apply_membership(NodeIdx(0), &["alice".to_owned()], &[]);
    let send = SendInput {
        sender: "alice".into(),
        roles: Default::default(),
        room_roles: Default::default(),
        sender_info: None,
        client_msg_id: 1,
        kind: Kind::Chat as i32,
        payload: vec![b'x'; 100].into(),
    };
    let now = Now {
        unix_us: 1_700_000_000_000_000,
        mono_ns: 1_000_000_000,
    };
    let _ = room.accept(send, now);
    msg_svc_takes(config);
}

/// The overrides as the API shows them, read back as a patch of a room
/// without overrides.
fn reread(overrides: &RoomOverrides) -> RoomOverrides {
    #[derive(Serialize)]
    struct Shown<'a>(#[serde(serialize_with = "serialize_overrides")] &'a RoomOverrides);
    let json = serde_json::to_vec(&Shown(overrides)).expect("overrides serialize");
    let patch: ConfigPatch = admin_body(&json).expect("shown overrides read back");
    let mut reread = RoomOverrides::default();
    patch.apply(&mut reread);
    reread
}

/// A msg-svc holding the room applies the config the owner pushes.
fn msg_svc_takes(config: RoomConfig) {
    let room = msg_svc::fuzzing::Room::pending("lobby");
    room.updated(&RoomUpdate {
        room_id: "lobby".into(),
        config: Some(config),
        member_count: 1,
        closed: false,
        membership_seq: 0,
        fence: 0,
    });
}
