//! Node links: the link codec's reader over any bytes in either direction,
//! read in arbitrary chunks, and what the receiving side does first with
//! each frame: a room service's room state takes a msg-svc's subscribes,
//! memberships, sends and reports the way its worker hands them over; a
//! msg-svc's room takes its owner's acks, broadcasts and updates.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use chatroom_cluster::link::wire::{self, LinkIoError, MAX_LINK_FRAME};
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{ToMsgSvc, ToRoomSvc, to_msg_svc, to_room_svc};
use chatroom_proto::framing::length;
use chatroom_proto::ids::check_id;
use chatroom_proto::v1::{Cursor, Lane};
use futures_util::Stream;
use room_svc::core::{Accepted, NodeIdx, Now, RoomState, SendInput, default_room_config};
use tokio::io::{AsyncRead, ReadBuf};

use crate::input::Input;

/// The room a msg-svc holds in the ToMsgSvc direction.
pub const ROOM: &str = "lobby";
/// Rooms a room service creates from one input, at most (it would create
/// as many as it is asked to; the target stays small).
const MAX_ROOMS: usize = 16;
/// The msg-svc on the other end of the link.
const NODE: NodeIdx = NodeIdx(3);

/// How a link's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Closed between frames.
    Clean,
    /// Closed inside a frame.
    Truncated,
    /// A declared length over the limit.
    TooLarge,
    /// A frame's bytes are not the expected message.
    Undecodable,
}

/// A link's byte stream (the setting's low bit picks the direction): read
/// the same however it is cut into reads, the same as framing and decoding
/// it whole; then every frame is taken by the receiving side without a
/// panic, keeping its promises.
pub fn cluster_frames(data: &[u8]) {
    let input = Input::parse(data);
    if input.setting & 1 == 0 {
        let frames = read_link::<ToRoomSvc, ToMsgSvc>(&input);
        to_room_svc(frames);
    } else {
        let frames = read_link::<ToMsgSvc, ToRoomSvc>(&input);
        to_msg_svc(&frames);
    }
}

/// The `In` frames the reading end of a link (which writes `Out`) takes
/// from the input's stream, checked against the stream framed and decoded
/// whole.
fn read_link<In: Message + Default + PartialEq, Out>(input: &Input<'_>) -> Vec<In> {
    let mut reader = wire::reader::<_, In, Out>(Reads(input.chunks(usize::MAX).into()));
    let mut frames = Vec::new();
    let end = loop {
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(next) = Pin::new(&mut reader).poll_next(&mut cx) else {
            panic!("a reader whose reads are all ready waits");
        };
        match next {
            Some(Ok(frame)) => frames.push(frame),
            None => break End::Clean,
            Some(Err(LinkIoError::Io(error))) => {
                assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
                break End::Truncated;
            }
            Some(Err(LinkIoError::TooLarge { .. })) => break End::TooLarge,
            Some(Err(LinkIoError::Decode(_))) => break End::Undecodable,
        }
    };
    let (at_once, at_once_end) = whole::<In>(input.stream);
    assert!(
        frames == at_once && end == at_once_end,
        "reading depends on the cuts"
    );
    frames
}

/// The stream framed and decoded at once.
fn whole<M: Message + Default>(stream: &[u8]) -> (Vec<M>, End) {
    let mut buf = BytesMut::from(stream);
    let mut frames = Vec::new();
    loop {
        match length::split_frame(&mut buf, MAX_LINK_FRAME) {
            Ok(Some(body)) => match M::decode(body) {
                Ok(frame) => frames.push(frame),
                Err(_) => return (frames, End::Undecodable),
            },
            Ok(None) if buf.is_empty() => return (frames, End::Clean),
            Ok(None) => return (frames, End::Truncated),
            Err(_) => return (frames, End::TooLarge),
        }
    }
}

/// A socket whose reads are given, all ready; then the end of the stream.
struct Reads<'a>(VecDeque<&'a [u8]>);

impl AsyncRead for Reads<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(front) = self.0.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            *front = &front[n..];
            if front.is_empty() {
                self.0.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A room service taking a msg-svc's frames: room ids checked first, then
/// each body handed to the room's state as the worker hands it, at a clock
/// that moves 1 ms per frame.
fn to_room_svc(frames: Vec<ToRoomSvc>) {
    let mut rooms: HashMap<String, RoomState> = HashMap::new();
    for (n, frame) in (1u64..).zip(frames) {
        let now = Now {
            unix_us: 1_700_000_000_000_000 + n * 1000,
            mono_ns: n * 1_000_000,
        };
        let is_hello = matches!(frame.body, Some(to_room_svc::Body::Hello(_)));
        assert_eq!(
            frame.room_id().is_none(),
            frame.body.is_none() || is_hello,
            "every frame but a Hello names its room"
        );
        let Some(room_id) = frame.room_id().map(str::to_owned) else {
            continue;
        };
        if check_id(&room_id).is_err() {
            continue;
        }
        if !rooms.contains_key(&room_id) && rooms.len() == MAX_ROOMS {
            continue;
        }
        let creates = match &frame.body {
            Some(to_room_svc::Body::Subscribe(_)) => true,
            Some(to_room_svc::Body::Membership(report)) => !report.joined.is_empty(),
            _ => false,
        };
        if creates {
            rooms.entry(room_id.clone()).or_insert_with(|| {
                RoomState::new(room_id.as_str().into(), 1, default_room_config())
            });
        }
        let Some(room) = rooms.get_mut(&room_id) else {
            continue;
        };
        match frame.body {
            Some(to_room_svc::Body::Subscribe(sub)) => {
                if let Some(seen) = sub.latest {
                    room.catch_up(&seen);
                    let latest = room.latest();
                    if seen.epoch == latest.epoch {
                        assert!(latest.msg_id >= seen.msg_id, "the room fell behind");
                    }
                }
                room.subscribe(NODE);
            }
            Some(to_room_svc::Body::Unsubscribe(_)) => {
                room.unsubscribe(NODE);
            }
            Some(to_room_svc::Body::Membership(mut report)) => {
                report.joined.retain(|user| check_id(user).is_ok());
                report.left.retain(|user| check_id(user).is_ok());
                room.apply_membership(NODE, &report.joined, &report.left);
            }
            Some(to_room_svc::Body::Send(send)) => {
                if check_id(&send.sender).is_err() {
                    continue;
                }
                let before = room.latest();
                let input = SendInput::from(send);
                if let Ok(Accepted::New(msg)) = room.accept(input, now) {
                    assert!(msg.msg_id > before.msg_id || before.msg_id == u64::MAX);
                    assert!(msg.ts > before.ts || before.ts == u64::MAX);
                    assert_eq!(room.latest(), Cursor::after(room.epoch(), &msg));
                }
            }
            Some(to_room_svc::Body::Report(report)) => {
                room.record_report(&report, now);
                let stats = room.stats(now);
                assert!(stats.delivered >= report.delivered);
                room.summary(now);
            }
            Some(to_room_svc::Body::Hello(_)) | None => {}
        }
    }
}

/// A msg-svc taking its room's owner's frames: the ring never holds more
/// than its lanes' capacities (as the newest owner heard from set them: an
/// ack or update from an older one is ignored; once the room is closed,
/// nothing changes them), and answers a pull from the stream's start.
fn to_msg_svc(frames: &[ToMsgSvc]) {
    let room = msg_svc::fuzzing::Room::pending(ROOM);
    // The newest owner's fence heard so far, and whether the room closed.
    let (mut heard, mut closed) = (0, false);
    for frame in frames {
        let Some(body) = &frame.body else {
            continue;
        };
        let config = match body {
            to_msg_svc::Body::SubscribeAck(ack) if ack.room_id == ROOM => {
                room.subscribed(ack);
                if ack.fence < heard {
                    continue;
                }
                heard = ack.fence;
                ack.config.clone().unwrap_or_default()
            }
            to_msg_svc::Body::Broadcast(broadcast) if broadcast.room_id == ROOM => {
                room.broadcast(broadcast);
                heard = heard.max(broadcast.fence);
                continue;
            }
            to_msg_svc::Body::RoomUpdate(update) if update.room_id == ROOM => {
                room.updated(update);
                if update.fence < heard {
                    continue;
                }
                heard = update.fence;
                closed |= update.closed;
                match &update.config {
                    Some(config) => config.clone(),
                    None => continue,
                }
            }
            _ => continue,
        };
        if closed {
            continue;
        }
        room.ring(|ring| {
            assert!(ring.len(Lane::Normal) <= config.normal_ring as usize);
            assert!(ring.len(Lane::Priority) <= config.priority_ring as usize);
        });
    }
    room.ring(|ring| {
        let selection = ring.select(&Cursor::start(ring.epoch()), 50, None);
        assert!(selection.entries.len() <= 50);
        assert_eq!(selection.cursor.epoch, ring.epoch());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_proto::cluster::v1::{Hello, RoomReport};

    fn framed(frame: &ToRoomSvc) -> Vec<u8> {
        let body = frame.encode_to_vec();
        let mut out = length::prefix(body.len()).unwrap().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn a_stream_cut_anywhere_reads_the_same() {
        let hello = ToRoomSvc {
            body: Some(to_room_svc::Body::Hello(Hello {
                node_id: "m1".into(),
            })),
        };
        let report = ToRoomSvc {
            body: Some(to_room_svc::Body::Report(RoomReport {
                room_id: "lobby".into(),
                delivered: 5,
                ..RoomReport::default()
            })),
        };
        let mut stream = framed(&hello);
        stream.extend(framed(&report));
        for cut in 1..stream.len() {
            let data = Input::compose(0, &[cut], &stream);
            cluster_frames(&data);
        }
    }

    #[test]
    fn a_stream_ending_anywhere_ends_the_same_however_it_is_cut() {
        let hello = ToRoomSvc {
            body: Some(to_room_svc::Body::Hello(Hello {
                node_id: "m1".into(),
            })),
        };
        let stream = [framed(&hello), framed(&hello)].concat();
        for end in 0..=stream.len() {
            cluster_frames(&Input::compose(0, &[], &stream[..end]));
            for cut in 1..end {
                cluster_frames(&Input::compose(0, &[cut], &stream[..end]));
            }
        }
    }
}
