//! A client frame: decoded as both transports decode it, then put through
//! the checks msg-svc makes before it needs a session or a room service:
//! the token and device id of a Connect, the room id and counts of a Join or
//! a Pull, a Send's payload and kind, and the ring's answer to the cursor a
//! Join or a Pull carries.

use std::sync::LazyLock;

use chatroom_proto::Message;
use chatroom_proto::ids::check_id;
use chatroom_proto::v1::{
    ChatMessage, ClientFrame, Cursor, Kind, Lane, Notify, ServerFrame, client_frame, server_frame,
};
use msg_svc::NodeConfig;
use msg_svc::fuzzing::{check_send, decode_client_frame, device_id, requested};
use msg_svc::ring::{RoomRing, Selection};

use crate::token::KEY;

/// The epoch of the sample room's stream.
pub const EPOCH: u64 = 7;
/// Messages the sample room has seen.
const MESSAGES: u64 = 60;
/// The largest payload the sample room takes (the default).
const MAX_PAYLOAD: usize = 4096;
/// Most messages a Notify carries inline, and their most bytes.
const INLINE: (usize, usize) = (64, 32 * 1024);

/// A room whose lanes have evicted their oldest messages: every third
/// message is PRIORITY, and timestamps run 10 µs apart from 1000.
static RING: LazyLock<RoomRing> = LazyLock::new(|| {
    let mut ring = RoomRing::new(Cursor::start(EPOCH), 16, 8);
    let mut normal_seq = 0;
    for msg_id in 1..=MESSAGES {
        let lane = if msg_id % 3 == 0 {
            Lane::Priority
        } else {
            normal_seq += 1;
            Lane::Normal
        };
        ring.append(&ChatMessage {
            msg_id,
            ts: 1000 + 10 * msg_id,
            normal_seq,
            sender: "alice".into(),
            lane: lane as i32,
            kind: Kind::Chat as i32,
            payload: vec![b'x'; msg_id as usize].into(),
            client_msg_id: msg_id,
            sender_info: None,
        });
    }
    ring
});

/// A client frame's bytes: decoding re-encodes to the same frame, and each
/// check's verdict keeps its promise.
pub fn client_frame(data: &[u8]) {
    let Ok(frame) = decode_client_frame(data) else {
        return;
    };
    let encoded = frame.encode_to_vec();
    assert_eq!(encoded.len(), frame.encoded_len());
    assert_eq!(ClientFrame::decode(&encoded[..]).as_ref(), Ok(&frame));
    let Some(body) = frame.body else {
        return;
    };
    let config = NodeConfig::default();
    match body {
        client_frame::Body::Connect(connect) => {
            if let Ok(who) = KEY.verify(&connect.token) {
                assert_eq!(check_id(&who.user), Ok(()));
            }
            if let Ok(device) = device_id(&connect) {
                assert_eq!(check_id(device), Ok(()));
            }
        }
        client_frame::Body::Join(join) => {
            if check_id(&join.room_id).is_err() {
                return;
            }
            let backfill = requested(join.backfill, config.backfill);
            assert!(backfill <= config.backfill.1 as usize);
            let recent = RING.recent(backfill);
            assert!(recent.len() <= backfill);
            if let Some(since) = join.since.filter(|since| RING.could_have_given(since)) {
                inline_delta(&join.room_id, &since);
            }
        }
        client_frame::Body::Send(send) => {
            if check_send(&send, MAX_PAYLOAD).is_ok() {
                assert!(send.payload.len() <= MAX_PAYLOAD && Kind::is_allowed(send.kind));
            }
        }
        client_frame::Body::Pull(pull) => {
            if let Some(since) = pull.since {
                let limit = requested(pull.limit, config.pull);
                assert!(limit <= config.pull.1 as usize);
                answer_pull(frame.request_id, &pull.room_id, &since, limit);
            }
        }
        client_frame::Body::Refresh(refresh) => {
            if let Ok(who) = KEY.verify(&refresh.token) {
                assert_eq!(check_id(&who.user), Ok(()));
            }
        }
        client_frame::Body::Leave(_) | client_frame::Body::Ping(_) => {}
    }
}

/// The Pull's answer decodes to what the selection holds.
fn answer_pull(request_id: u64, room_id: &str, since: &Cursor, limit: usize) {
    let (frame, selection) = RING.pull_frame(request_id, room_id, since, limit);
    check_selection(since, limit, &selection);
    let decoded = ServerFrame::decode(frame).expect("a pull answer decodes");
    assert_eq!(decoded.request_id, request_id);
    let Some(server_frame::Body::PullResult(result)) = decoded.body else {
        panic!("a pull is answered with a PullResult");
    };
    assert_eq!(result.room_id, room_id);
    assert_eq!(result.cursor, Some(selection.cursor));
    assert_eq!(result.messages.len(), selection.entries.len());
    assert_eq!(
        (
            result.dropped,
            result.dropped_priority,
            result.more,
            result.reset
        ),
        (
            selection.dropped,
            selection.dropped_priority,
            selection.more,
            selection.reset
        )
    );
}

/// A session resuming at `since` gets an inline delta that decodes, or a
/// plain Notify.
fn inline_delta(room_id: &str, since: &Cursor) {
    let head = Notify {
        room_id: room_id.to_owned(),
        latest: Some(RING.latest()),
        delta: None,
        member_count: 1,
    };
    let (max_messages, inline_max) = INLINE;
    if let Some((frame, selection)) = RING.delta_frame(&head, since, max_messages, inline_max) {
        check_selection(since, max_messages, &selection);
        assert!(selection.encoded_len() <= inline_max);
        let decoded = ServerFrame::decode(frame).expect("a notify decodes");
        let Some(server_frame::Body::Notify(notify)) = decoded.body else {
            panic!("a delta is a Notify");
        };
        let delta = notify.delta.expect("an inline notify has a delta");
        assert_eq!(delta.messages.len(), selection.entries.len());
    }
}

/// What any selection promises: at most `limit` messages (at least one is
/// asked for), oldest first, after the cursor it started from (unless that
/// is one the room could not have handed out: reset) and no later than the
/// one it ends at, which is in the room's epoch.
fn check_selection(since: &Cursor, limit: usize, selection: &Selection<'_>) {
    assert!(selection.entries.len() <= limit.max(1));
    assert!(selection.entries.is_sorted_by_key(|e| e.ts));
    assert_eq!(selection.cursor.epoch, RING.epoch());
    assert_eq!(selection.reset, !RING.could_have_given(since));
    for entry in &selection.entries {
        if !selection.reset {
            assert!(entry.msg_id > since.msg_id);
        }
        assert!(entry.msg_id <= selection.cursor.msg_id);
    }
}
