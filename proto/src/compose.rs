//! Server frames assembled from messages encoded once.
//!
//! A message is encoded when it enters a ring. A Notify delta, a PullResult or
//! a JoinAck is then a small head that prost encodes, followed by those
//! encodings appended as the repeated field: protobuf accepts fields in any
//! order, so the result decodes exactly like the frame prost would build from
//! structs (the tests check it). Nothing is encoded per recipient; a reply's
//! request id is a separate prefix written in front of the shared bytes.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::v1::{ChatMessage, Delta, JoinAck, Notify, PullResult};

// Field numbers in client.proto.
const SERVER_FRAME_REQUEST_ID: u32 = 1;
const SERVER_FRAME_JOIN_ACK: u32 = 4;
const SERVER_FRAME_NOTIFY: u32 = 6;
const SERVER_FRAME_PULL_RESULT: u32 = 7;
const JOIN_ACK_RECENT: u32 = 5;
const NOTIFY_DELTA: u32 = 3;
const DELTA_MESSAGES: u32 = 2;
const PULL_RESULT_MESSAGES: u32 = 2;

/// Encodes a message once for every frame that will carry it.
pub fn encode_message(msg: &ChatMessage) -> Bytes {
    msg.encode_to_vec().into()
}

/// A `ServerFrame` notifying `head.room_id` with the messages inline: the
/// delta's head (messages left empty) and the encoded messages.
pub fn notify_frame<'a, I>(head: &Notify, delta: &Delta, msgs: I) -> Bytes
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    debug_assert!(
        head.delta.is_none() && delta.messages.is_empty(),
        "parts go in separately"
    );
    let delta_len = delta.encoded_len() + repeated_len(DELTA_MESSAGES, msgs.clone());
    let notify_len = head.encoded_len() + field_len(NOTIFY_DELTA, delta_len);
    let mut buf = BytesMut::with_capacity(field_len(SERVER_FRAME_NOTIFY, notify_len));
    put_field_head(SERVER_FRAME_NOTIFY, notify_len, &mut buf);
    put_message(head, &mut buf);
    put_field_head(NOTIFY_DELTA, delta_len, &mut buf);
    put_message(delta, &mut buf);
    put_repeated(DELTA_MESSAGES, msgs, &mut buf);
    buf.freeze()
}

/// A `ServerFrame` notifying `head.room_id` without messages: pull.
pub fn plain_notify_frame(head: &Notify) -> Bytes {
    debug_assert!(head.delta.is_none(), "a plain notify has no delta");
    let len = head.encoded_len();
    let mut buf = BytesMut::with_capacity(field_len(SERVER_FRAME_NOTIFY, len));
    put_field_head(SERVER_FRAME_NOTIFY, len, &mut buf);
    put_message(head, &mut buf);
    buf.freeze()
}

/// A `ServerFrame` answering a Pull: `head` (messages left empty) and the
/// encoded messages.
pub fn pull_result_frame<'a, I>(request_id: u64, head: &PullResult, msgs: I) -> Bytes
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    debug_assert!(head.messages.is_empty(), "the messages go in separately");
    with_messages(
        request_id,
        SERVER_FRAME_PULL_RESULT,
        head,
        PULL_RESULT_MESSAGES,
        msgs,
    )
}

/// A `ServerFrame` answering a Join: `head` (recent left empty) and the
/// encoded recent messages.
pub fn join_ack_frame<'a, I>(request_id: u64, head: &JoinAck, recent: I) -> Bytes
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    debug_assert!(head.recent.is_empty(), "the messages go in separately");
    with_messages(
        request_id,
        SERVER_FRAME_JOIN_ACK,
        head,
        JOIN_ACK_RECENT,
        recent,
    )
}

/// The encoded `request_id` field, written in front of a shared frame body to
/// make it answer that request.
#[derive(Debug, Clone, Copy)]
pub struct RequestIdPrefix {
    buf: [u8; 11],
    len: u8,
}

impl RequestIdPrefix {
    /// The prefix for `request_id`; empty for 0 (a push).
    pub fn new(request_id: u64) -> Self {
        let mut buf = [0u8; 11];
        let mut len = 0;
        if request_id != 0 {
            let mut cursor = &mut buf[..];
            encode_key(SERVER_FRAME_REQUEST_ID, WireType::Varint, &mut cursor);
            encode_varint(request_id, &mut cursor);
            len = 11 - cursor.len();
        }
        Self {
            buf,
            len: len as u8,
        }
    }

    /// The prefix's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

fn with_messages<'a, M, I>(
    request_id: u64,
    frame_field: u32,
    head: &M,
    msgs_field: u32,
    msgs: I,
) -> Bytes
where
    M: Message,
    I: Iterator<Item = &'a [u8]> + Clone,
{
    let prefix = RequestIdPrefix::new(request_id);
    let inner_len = head.encoded_len() + repeated_len(msgs_field, msgs.clone());
    let mut buf =
        BytesMut::with_capacity(prefix.as_slice().len() + field_len(frame_field, inner_len));
    buf.put_slice(prefix.as_slice());
    put_field_head(frame_field, inner_len, &mut buf);
    put_message(head, &mut buf);
    put_repeated(msgs_field, msgs, &mut buf);
    buf.freeze()
}

fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn repeated_len<'a>(tag: u32, msgs: impl Iterator<Item = &'a [u8]>) -> usize {
    msgs.map(|m| field_len(tag, m.len())).sum()
}

fn put_field_head(tag: u32, len: usize, buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_repeated<'a>(tag: u32, msgs: impl Iterator<Item = &'a [u8]>, buf: &mut BytesMut) {
    for msg in msgs {
        put_field_head(tag, msg.len(), buf);
        buf.put_slice(msg);
    }
}

fn put_message(msg: &impl Message, buf: &mut BytesMut) {
    // The buffer was sized from `encoded_len`, so encoding cannot run out of room.
    msg.encode(buf).expect("buffer sized from encoded_len");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Cursor, Lane, RoomLimits, ServerFrame, server_frame::Body};

    fn msg(msg_id: u64, lane: Lane) -> ChatMessage {
        ChatMessage {
            msg_id,
            ts: 1_000 + msg_id,
            normal_seq: msg_id,
            sender: format!("user{msg_id}"),
            lane: lane as i32,
            kind: 0,
            payload: Bytes::from(vec![msg_id as u8; msg_id as usize * 40]),
            client_msg_id: msg_id * 3,
            sender_info: None,
        }
    }

    fn sample() -> Vec<ChatMessage> {
        vec![
            msg(1, Lane::Normal),
            msg(2, Lane::Priority),
            msg(7, Lane::Normal),
        ]
    }

    fn cursor(ts: u64) -> Cursor {
        Cursor {
            epoch: 9,
            ts,
            msg_id: ts / 10,
            normal_seq: ts / 20,
        }
    }

    fn decode(bytes: &[u8]) -> ServerFrame {
        ServerFrame::decode(bytes).expect("composed frame decodes")
    }

    #[test]
    fn pull_result_decodes_like_the_struct() {
        let msgs = sample();
        let encoded: Vec<Bytes> = msgs.iter().map(encode_message).collect();
        let head = PullResult {
            room_id: "lobby".into(),
            dropped: 12,
            cursor: Some(cursor(5000)),
            more: true,
            ..PullResult::default()
        };
        let frame = pull_result_frame(300, &head, encoded.iter().map(|b| &b[..]));
        let want = ServerFrame::reply(
            300,
            Body::PullResult(PullResult {
                messages: msgs,
                ..head
            }),
        );
        assert_eq!(decode(&frame), want);
        assert_eq!(frame.len(), want.encoded_len());
    }

    #[test]
    fn notify_with_and_without_delta_decodes_like_the_struct() {
        let msgs = sample();
        let encoded: Vec<Bytes> = msgs.iter().map(encode_message).collect();
        let head = Notify {
            room_id: "lobby".into(),
            latest: Some(cursor(9000)),
            delta: None,
            member_count: 42,
        };
        let delta = Delta {
            since: Some(cursor(100)),
            dropped: 3,
            dropped_priority: 0,
            messages: Vec::new(),
        };
        let frame = notify_frame(&head, &delta, encoded.iter().map(|b| &b[..]));
        let want = ServerFrame::reply(
            0,
            Body::Notify(Notify {
                delta: Some(Delta {
                    messages: msgs,
                    ..delta
                }),
                ..head.clone()
            }),
        );
        assert_eq!(decode(&frame), want);

        let plain = plain_notify_frame(&head);
        assert_eq!(decode(&plain), ServerFrame::reply(0, Body::Notify(head)));
    }

    #[test]
    fn join_ack_with_recent_decodes_like_the_struct() {
        let msgs = sample();
        let encoded: Vec<Bytes> = msgs.iter().map(encode_message).collect();
        let head = JoinAck {
            room_id: "lobby".into(),
            latest: Some(cursor(7000)),
            member_count: 2,
            limits: Some(RoomLimits {
                max_payload_bytes: 4096,
                ..RoomLimits::default()
            }),
            ..JoinAck::default()
        };
        let frame = join_ack_frame(5, &head, encoded.iter().map(|b| &b[..]));
        let want = ServerFrame::reply(
            5,
            Body::JoinAck(JoinAck {
                recent: msgs,
                ..head
            }),
        );
        assert_eq!(decode(&frame), want);
    }

    #[test]
    fn request_id_prefix_turns_a_push_into_a_reply() {
        let head = PullResult {
            room_id: "r".into(),
            ..PullResult::default()
        };
        let shared = pull_result_frame(0, &head, std::iter::empty());
        for request_id in [1, 127, 128, u64::MAX] {
            let mut wire = RequestIdPrefix::new(request_id).as_slice().to_vec();
            wire.extend_from_slice(&shared);
            assert_eq!(
                decode(&wire),
                ServerFrame::reply(request_id, Body::PullResult(head.clone()))
            );
        }
        assert!(RequestIdPrefix::new(0).as_slice().is_empty());
    }
}
