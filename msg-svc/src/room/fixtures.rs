//! What the room's tests share.

use bytes::Bytes;
use chatroom_proto::v1::ChatMessage;

/// A chat message the owner stamped `msg_id`.
pub(crate) fn message(msg_id: u64) -> ChatMessage {
    ChatMessage {
        msg_id,
        ts: 1_000 + msg_id,
        normal_seq: msg_id,
        sender: "s".into(),
        lane: 0,
        kind: 0,
        payload: Bytes::from_static(b"hi"),
        client_msg_id: 0,
        sender_info: None,
    }
}
