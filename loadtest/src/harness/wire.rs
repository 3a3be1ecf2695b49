//! The swarm's side of the wire: a lean WebSocket client, the QUIC stream's
//! length-prefixed framing, and a scanner that reads the frames that come by
//! the million (Notify with its delta, PullResult) without decoding them
//! into structs.
//!
//! The library client decodes every frame into allocated messages, which is
//! right for an application and far too slow for a load generator that
//! shares two cores with the server. A scanned message is its position, lane
//! and send stamp, read in place; anything rarer is decoded with prost.

use bytes::Buf;
use chatroom_proto::Message;
use chatroom_proto::framing::length;
use chatroom_proto::framing::ws::{self, OpCode};
use chatroom_proto::v1::{ClientFrame, Cursor, Lane, ServerFrame};
use prost::encoding::{WireType, decode_key, decode_varint};

/// Largest server frame the swarm accepts (a full pull result fits).
pub const MAX_SERVER_FRAME: usize = 1024 * 1024;

/// The HTTP upgrade request for `path` on `host`.
pub fn upgrade_request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c3dhcm0tY2xpZW50LWtleQ==\r\n\r\n"
    )
}

/// Where the upgrade response ends in `buf`, once it has: `Ok(Some(end))`
/// for 101, an error for any other status.
pub fn upgrade_response(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    if head.starts_with("HTTP/1.1 101") {
        Ok(Some(end + 4))
    } else {
        Err(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or_default()
        ))
    }
}

/// One masked client frame carrying `frame`, ready to write.
pub fn client_frame(frame: &ClientFrame, mask: [u8; 4]) -> Vec<u8> {
    ws::masked_frame(OpCode::Binary, true, &frame.encode_to_vec(), mask)
}

/// How server frames are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// WebSocket frames.
    Ws,
    /// A big-endian `u32` length before each frame (QUIC).
    Length,
}

/// What the server sent, found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A binary message: one ServerFrame, at this range of the buffer.
    Binary(std::ops::Range<usize>),
    /// The server closed, with its code.
    Close(u16),
    /// Ping or pong: nothing for the swarm to do.
    Control,
}

/// The next complete item at the start of `buf`, delimited as `framing`
/// says, and the bytes it used.
pub fn next_frame(framing: Framing, buf: &[u8]) -> Result<Option<(WsFrame, usize)>, String> {
    match framing {
        Framing::Ws => next_ws_frame(buf),
        Framing::Length => {
            let Some(len) = length::peek_len(buf, MAX_SERVER_FRAME).map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let end = length::PREFIX_LEN + len;
            Ok((buf.len() >= end).then_some((WsFrame::Binary(length::PREFIX_LEN..end), end)))
        }
    }
}

/// A client frame after its length prefix, for a QUIC stream.
pub fn length_frame(frame: &ClientFrame) -> Vec<u8> {
    let body = frame.encode_to_vec();
    let mut out = Vec::with_capacity(length::PREFIX_LEN + body.len());
    // Client frames are far below 4 GiB.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The next complete WebSocket frame at the start of `buf` and the bytes
/// it used.
pub fn next_ws_frame(buf: &[u8]) -> Result<Option<(WsFrame, usize)>, String> {
    let Some((header, range)) = ws::next_frame(buf, MAX_SERVER_FRAME).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let end = range.end;
    let frame = match header.opcode {
        OpCode::Binary if header.fin => WsFrame::Binary(range),
        OpCode::Close => {
            WsFrame::Close(ws::parse_close(&buf[range]).map_or(1005, |(code, _)| code))
        }
        OpCode::Ping | OpCode::Pong => WsFrame::Control,
        other => return Err(format!("unexpected {other:?} frame from the server")),
    };
    Ok(Some((frame, end)))
}

/// A delivered message as the swarm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub msg_id: u64,
    pub ts: u64,
    pub lane: Lane,
    /// The sender's stamp (µs since the Unix epoch), if the payload has one.
    pub stamp: Option<u64>,
}

/// Messages and accounting carried by a Notify delta or a PullResult.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Oldest first.
    pub messages: Vec<Seen>,
    pub dropped: u64,
    pub dropped_priority: u64,
    /// Delta: where it starts. PullResult: unused.
    pub since: Option<Cursor>,
    /// PullResult: the new cursor.
    pub cursor: Option<Cursor>,
    pub more: bool,
    pub reset: bool,
}

/// What a server frame says, as far as the swarm cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Scanned {
    /// A Notify: the room's newest position and, maybe, the messages.
    Notify {
        latest: Cursor,
        delta: Option<Batch>,
    },
    /// The answer to a Pull.
    PullResult { request_id: u64, batch: Batch },
    /// Anything else, decoded.
    Other(ServerFrame),
}

/// Field numbers in client.proto.
mod field {
    pub(super) const FRAME_REQUEST_ID: u32 = 1;
    pub(super) const FRAME_NOTIFY: u32 = 6;
    pub(super) const FRAME_PULL_RESULT: u32 = 7;
    pub(super) const NOTIFY_LATEST: u32 = 2;
    pub(super) const NOTIFY_DELTA: u32 = 3;
    pub(super) const DELTA_SINCE: u32 = 1;
    pub(super) const DELTA_MESSAGES: u32 = 2;
    pub(super) const DELTA_DROPPED: u32 = 3;
    pub(super) const DELTA_DROPPED_PRIORITY: u32 = 4;
    pub(super) const PULL_MESSAGES: u32 = 2;
    pub(super) const PULL_DROPPED: u32 = 3;
    pub(super) const PULL_DROPPED_PRIORITY: u32 = 4;
    pub(super) const PULL_CURSOR: u32 = 5;
    pub(super) const PULL_MORE: u32 = 6;
    pub(super) const PULL_RESET: u32 = 7;
    pub(super) const MSG_ID: u32 = 1;
    pub(super) const MSG_TS: u32 = 2;
    pub(super) const MSG_LANE: u32 = 5;
    pub(super) const MSG_PAYLOAD: u32 = 7;
    pub(super) const CURSOR_EPOCH: u32 = 1;
    pub(super) const CURSOR_TS: u32 = 2;
    pub(super) const CURSOR_MSG_ID: u32 = 3;
    pub(super) const CURSOR_NORMAL_SEQ: u32 = 4;
}

type ScanResult<T> = Result<T, String>;

/// Reads one ServerFrame, scanning Notify and PullResult in place.
pub fn scan(frame: &[u8]) -> ScanResult<Scanned> {
    let mut request_id = 0;
    let mut notify = None;
    let mut pull = None;
    each_field(frame, |tag, value| {
        match (tag, value) {
            (field::FRAME_REQUEST_ID, Value::Varint(v)) => request_id = v,
            (field::FRAME_NOTIFY, Value::Bytes(b)) => notify = Some(scan_notify(b)?),
            (field::FRAME_PULL_RESULT, Value::Bytes(b)) => pull = Some(scan_pull(b)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(match (notify, pull) {
        (Some((latest, delta)), None) => Scanned::Notify { latest, delta },
        (None, Some(batch)) => Scanned::PullResult { request_id, batch },
        _ => Scanned::Other(
            ServerFrame::decode(frame).map_err(|e| format!("undecodable server frame: {e}"))?,
        ),
    })
}

fn scan_notify(buf: &[u8]) -> ScanResult<(Cursor, Option<Batch>)> {
    let mut latest = Cursor::default();
    let mut delta = None;
    each_field(buf, |tag, value| {
        match (tag, value) {
            (field::NOTIFY_LATEST, Value::Bytes(b)) => latest = scan_cursor(b)?,
            (field::NOTIFY_DELTA, Value::Bytes(b)) => {
                let mut batch = Batch::default();
                each_field(b, |tag, value| {
                    match (tag, value) {
                        (field::DELTA_SINCE, Value::Bytes(c)) => {
                            batch.since = Some(scan_cursor(c)?)
                        }
                        (field::DELTA_MESSAGES, Value::Bytes(m)) => {
                            batch.messages.push(scan_message(m)?)
                        }
                        (field::DELTA_DROPPED, Value::Varint(v)) => batch.dropped = v,
                        (field::DELTA_DROPPED_PRIORITY, Value::Varint(v)) => {
                            batch.dropped_priority = v
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                delta = Some(batch);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((latest, delta))
}

fn scan_pull(buf: &[u8]) -> ScanResult<Batch> {
    let mut batch = Batch::default();
    each_field(buf, |tag, value| {
        match (tag, value) {
            (field::PULL_MESSAGES, Value::Bytes(m)) => batch.messages.push(scan_message(m)?),
            (field::PULL_DROPPED, Value::Varint(v)) => batch.dropped = v,
            (field::PULL_DROPPED_PRIORITY, Value::Varint(v)) => batch.dropped_priority = v,
            (field::PULL_CURSOR, Value::Bytes(c)) => batch.cursor = Some(scan_cursor(c)?),
            (field::PULL_MORE, Value::Varint(v)) => batch.more = v != 0,
            (field::PULL_RESET, Value::Varint(v)) => batch.reset = v != 0,
            _ => {}
        }
        Ok(())
    })?;
    Ok(batch)
}

fn scan_message(buf: &[u8]) -> ScanResult<Seen> {
    let mut seen = Seen {
        msg_id: 0,
        ts: 0,
        lane: Lane::Normal,
        stamp: None,
    };
    each_field(buf, |tag, value| {
        match (tag, value) {
            (field::MSG_ID, Value::Varint(v)) => seen.msg_id = v,
            (field::MSG_TS, Value::Varint(v)) => seen.ts = v,
            (field::MSG_LANE, Value::Varint(v)) => {
                seen.lane = if v == Lane::Priority as u64 {
                    Lane::Priority
                } else {
                    Lane::Normal
                }
            }
            (field::MSG_PAYLOAD, Value::Bytes(p)) => seen.stamp = read_stamp(p),
            _ => {}
        }
        Ok(())
    })?;
    Ok(seen)
}

fn scan_cursor(buf: &[u8]) -> ScanResult<Cursor> {
    let mut cursor = Cursor::default();
    each_field(buf, |tag, value| {
        if let Value::Varint(v) = value {
            match tag {
                field::CURSOR_EPOCH => cursor.epoch = v,
                field::CURSOR_TS => cursor.ts = v,
                field::CURSOR_MSG_ID => cursor.msg_id = v,
                field::CURSOR_NORMAL_SEQ => cursor.normal_seq = v,
                _ => {}
            }
        }
        Ok(())
    })?;
    Ok(cursor)
}

/// The stamp the swarm's senders put at the front of every payload.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    payload.first_chunk::<8>().map(|b| u64::from_le_bytes(*b))
}

/// A payload of `len` bytes (at least 8) starting with `stamp`.
pub fn stamped_payload(stamp: u64, len: usize) -> Vec<u8> {
    let mut payload = vec![b'.'; len.max(8)];
    payload[..8].copy_from_slice(&stamp.to_le_bytes());
    payload
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Calls `visit` for every field of the message in `buf`; fixed-width
/// fields are skipped.
fn each_field<'a>(
    buf: &'a [u8],
    mut visit: impl FnMut(u32, Value<'a>) -> ScanResult<()>,
) -> ScanResult<()> {
    let mut rest = buf;
    while rest.has_remaining() {
        let (tag, wire) = decode_key(&mut rest).map_err(|e| e.to_string())?;
        match wire {
            WireType::Varint => {
                let value = decode_varint(&mut rest).map_err(|e| e.to_string())?;
                visit(tag, Value::Varint(value))?;
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut rest).map_err(|e| e.to_string())?)
                    .map_err(|_| "length does not fit".to_owned())?;
                if len > rest.len() {
                    return Err("field runs past the frame".into());
                }
                let (value, tail) = rest.split_at(len);
                rest = tail;
                visit(tag, Value::Bytes(value))?;
            }
            WireType::SixtyFourBit => skip(&mut rest, 8)?,
            WireType::ThirtyTwoBit => skip(&mut rest, 4)?,
            WireType::StartGroup | WireType::EndGroup => return Err("groups are not used".into()),
        }
    }
    Ok(())
}

fn skip(rest: &mut &[u8], n: usize) -> ScanResult<()> {
    if rest.len() < n {
        return Err("field runs past the frame".into());
    }
    rest.advance(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chatroom_proto::compose::{encode_message, notify_frame, pull_result_frame};
    use chatroom_proto::v1::{ChatMessage, Delta, Notify, PullResult, SendAck, server_frame};

    fn msg(msg_id: u64, lane: Lane, stamp: u64) -> ChatMessage {
        ChatMessage {
            msg_id,
            ts: msg_id * 10,
            normal_seq: msg_id,
            sender: "s".into(),
            lane: lane as i32,
            kind: 0,
            payload: Bytes::from(stamped_payload(stamp, 40)),
            sender_info: None,
            client_msg_id: 0,
        }
    }

    fn cursor(msg_id: u64) -> Cursor {
        Cursor {
            epoch: 7,
            ts: msg_id * 10,
            msg_id,
            normal_seq: msg_id,
        }
    }

    #[test]
    fn scans_a_composed_delta_like_the_server_sends_it() {
        let messages = [msg(4, Lane::Normal, 111), msg(5, Lane::Priority, 222)];
        let encoded: Vec<Bytes> = messages.iter().map(encode_message).collect();
        let head = Notify {
            room_id: "giant".into(),
            latest: Some(cursor(5)),
            delta: None,
            member_count: 3,
        };
        let delta = Delta {
            since: Some(cursor(3)),
            messages: Vec::new(),
            dropped: 2,
            dropped_priority: 0,
        };
        let frame = notify_frame(&head, &delta, encoded.iter().map(|b| &b[..]));
        let Scanned::Notify { latest, delta } = scan(&frame).unwrap() else {
            panic!("not a notify");
        };
        assert_eq!(latest, cursor(5));
        let delta = delta.unwrap();
        assert_eq!(delta.since, Some(cursor(3)));
        assert_eq!(delta.dropped, 2);
        assert_eq!(
            delta.messages,
            [
                Seen {
                    msg_id: 4,
                    ts: 40,
                    lane: Lane::Normal,
                    stamp: Some(111)
                },
                Seen {
                    msg_id: 5,
                    ts: 50,
                    lane: Lane::Priority,
                    stamp: Some(222)
                },
            ]
        );
    }

    #[test]
    fn scans_pull_results_and_decodes_the_rest() {
        let encoded = encode_message(&msg(9, Lane::Normal, 5));
        let head = PullResult {
            room_id: "giant".into(),
            dropped: 4,
            cursor: Some(cursor(9)),
            more: true,
            ..PullResult::default()
        };
        let frame = pull_result_frame(42, &head, std::iter::once(&encoded[..]));
        let Scanned::PullResult { request_id, batch } = scan(&frame).unwrap() else {
            panic!("not a pull result");
        };
        assert_eq!(request_id, 42);
        assert_eq!(
            (batch.dropped, batch.more, batch.cursor),
            (4, true, Some(cursor(9)))
        );
        assert_eq!(batch.messages.len(), 1);

        let ack = ServerFrame::reply(
            3,
            server_frame::Body::SendAck(SendAck {
                msg_id: 1,
                ts: 2,
                lane: 0,
            }),
        );
        assert_eq!(scan(&ack.encode_to_vec()).unwrap(), Scanned::Other(ack));
    }

    #[test]
    fn refuses_truncated_frames() {
        let encoded = encode_message(&msg(9, Lane::Normal, 5));
        let frame = pull_result_frame(1, &PullResult::default(), std::iter::once(&encoded[..]));
        assert!(scan(&frame[..frame.len() - 3]).is_err());
    }

    #[test]
    fn client_frames_are_masked_and_server_frames_found() {
        let frame = ClientFrame::default();
        let wire = client_frame(&frame, [1, 2, 3, 4]);
        let (header, range) = ws::next_frame(&wire, 1024).unwrap().unwrap();
        assert_eq!(header.mask, Some([1, 2, 3, 4]));
        assert_eq!(range.end, wire.len());

        let mut server = ws::HeaderBytes::new(OpCode::Binary, 3, None)
            .as_slice()
            .to_vec();
        server.extend_from_slice(b"abc");
        server.extend_from_slice(ws::HeaderBytes::new(OpCode::Ping, 0, None).as_slice());
        let (first, used) = next_ws_frame(&server).unwrap().unwrap();
        assert_eq!(first, WsFrame::Binary(2..5));
        assert_eq!(
            next_ws_frame(&server[used..]).unwrap().unwrap().0,
            WsFrame::Control
        );
        assert_eq!(next_ws_frame(&server[..3]).unwrap(), None);
    }

    #[test]
    fn length_framing_finds_whole_frames_only() {
        let frame = ClientFrame {
            request_id: 9,
            body: None,
        };
        let mut wire = length_frame(&frame);
        wire.extend(length_frame(&frame));
        let (first, used) = next_frame(Framing::Length, &wire).unwrap().unwrap();
        let WsFrame::Binary(range) = first else {
            panic!("{first:?}");
        };
        assert_eq!(ClientFrame::decode(&wire[range]).unwrap(), frame);
        assert_eq!(used * 2, wire.len());
        assert_eq!(
            next_frame(Framing::Length, &wire[..used - 1]).unwrap(),
            None
        );
        let huge = ((MAX_SERVER_FRAME + 1) as u32).to_be_bytes();
        assert!(next_frame(Framing::Length, &huge).is_err());
    }

    #[test]
    fn upgrade_responses() {
        assert_eq!(
            upgrade_response(b"HTTP/1.1 101 Switching Protocols\r\n\r\nxx"),
            Ok(Some(36))
        );
        assert_eq!(upgrade_response(b"HTTP/1.1 101 Switching"), Ok(None));
        assert!(upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
