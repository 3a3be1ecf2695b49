use bytes::Bytes;
use chatroom_proto::cluster::v1::{
    Broadcast, Hello, ToMsgSvc, ToRoomSvc, Unsubscribe, to_msg_svc, to_room_svc,
};
use chatroom_proto::framing::length;
use chatroom_proto::v1::ChatMessage;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::*;

/// The room service's end: reads what a msg-svc sends.
type RoomCodec = LinkCodec<ToRoomSvc, ToMsgSvc>;

fn hello(node: &str) -> ToRoomSvc {
    ToRoomSvc {
        body: Some(to_room_svc::Body::Hello(Hello {
            node_id: node.into(),
        })),
    }
}

fn unsubscribe(room: &str) -> ToRoomSvc {
    ToRoomSvc {
        body: Some(to_room_svc::Body::Unsubscribe(Unsubscribe {
            room_id: room.into(),
        })),
    }
}

fn broadcast(messages: u64) -> ToMsgSvc {
    ToMsgSvc {
        body: Some(to_msg_svc::Body::Broadcast(Broadcast {
            room_id: "lobby".into(),
            messages: (1..=messages)
                .map(|msg_id| ChatMessage {
                    msg_id,
                    ts: msg_id,
                    sender: "u1".into(),
                    payload: Bytes::from_static(&[7; 100]),
                    ..ChatMessage::default()
                })
                .collect(),
            fence: 1,
        })),
    }
}

/// Frames as the hand-framing of `chatroom_proto::framing::length` lays
/// them out.
fn framed(frames: &[ToRoomSvc]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for frame in frames {
        length::encode(&frame.encode_to_vec(), usize::MAX, &mut out).unwrap();
    }
    out.to_vec()
}

/// The frames a room service's codec takes out of a stream that arrives in
/// `pieces`, and how the stream ended.
fn decode_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<ToRoomSvc>, Result<(), String>) {
    let mut codec = RoomCodec::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Err(error.to_string())),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(None) => (frames, Ok(())),
        Ok(Some(frame)) => panic!("a frame left after decoding stopped: {frame:?}"),
        Err(error) => (frames, Err(error.to_string())),
    }
}

#[tokio::test]
async fn frames_cross_in_order_and_the_stream_ends_cleanly() {
    let (client, server) = tokio::io::duplex(64);
    let (tx, mut rx) = mpsc::channel(16);
    let writer = tokio::spawn(async move {
        let mut link = super::writer::<_, ToMsgSvc, ToRoomSvc>(client);
        write_frames(&mut link, &mut rx).await
    });
    tokio::spawn(async move {
        tx.send(hello("m1")).await.unwrap();
        for i in 0..100 {
            tx.send(unsubscribe(&format!("room-{i}"))).await.unwrap();
        }
    });
    let mut reader = super::reader::<_, ToRoomSvc, ToMsgSvc>(server);
    assert_eq!(reader.next().await.unwrap().unwrap(), hello("m1"));
    for i in 0..100 {
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            unsubscribe(&format!("room-{i}"))
        );
    }
    writer.await.unwrap().unwrap();
    assert!(reader.next().await.is_none());
}

#[tokio::test]
async fn large_frames_cross_in_batches() {
    let (client, server) = tokio::io::duplex(4096);
    let (tx, mut rx) = mpsc::channel(1024);
    let big = broadcast(3000);
    assert!(big.encoded_len() > WRITE_BATCH);
    for _ in 0..3 {
        tx.send(broadcast(20)).await.unwrap();
        tx.send(big.clone()).await.unwrap();
    }
    drop(tx);
    let writer = tokio::spawn(async move {
        let mut link = super::writer::<_, ToRoomSvc, ToMsgSvc>(client);
        write_frames(&mut link, &mut rx).await
    });
    let mut reader = super::reader::<_, ToMsgSvc, ToRoomSvc>(server);
    for _ in 0..3 {
        assert_eq!(reader.next().await.unwrap().unwrap(), broadcast(20));
        assert_eq!(reader.next().await.unwrap().unwrap(), big);
    }
    writer.await.unwrap().unwrap();
    assert!(reader.next().await.is_none());
}

#[test]
fn the_bytes_on_the_wire_are_the_length_prefixed_frames() {
    let frames = [hello("m1"), unsubscribe("lobby"), ToRoomSvc::default()];
    let mut codec = LinkCodec::<ToMsgSvc, ToRoomSvc>::default();
    let mut wire = BytesMut::new();
    for frame in frames.clone() {
        codec.encode(frame, &mut wire).unwrap();
    }
    assert_eq!(wire.to_vec(), framed(&frames));
}

#[tokio::test]
async fn an_oversized_declared_length_is_refused_before_buffering() {
    let (mut client, server) = tokio::io::duplex(64);
    client.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let mut reader = super::reader::<_, ToRoomSvc, ToMsgSvc>(server);
    match reader.next().await {
        Some(Err(LinkIoError::TooLarge { len, max })) => {
            assert_eq!((len, max), (u64::from(u32::MAX), MAX_LINK_FRAME));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(reader.read_buffer().capacity() < 1024 * 1024);
    assert!(
        reader.next().await.is_none(),
        "the stream stops at the error"
    );
}

#[test]
fn a_frame_over_the_limit_is_neither_read_nor_written() {
    let frame = unsubscribe("a-room-with-a-long-name");
    let len = frame.encoded_len() as u64;
    assert!(len > 16);
    let mut codec = LinkCodec::<ToRoomSvc, ToRoomSvc>::with_max(16);
    let mut wire = BytesMut::from(&framed(std::slice::from_ref(&frame))[..]);
    assert!(matches!(
        codec.decode(&mut wire),
        Err(LinkIoError::TooLarge { len: l, max: 16 }) if l == len
    ));
    let mut out = BytesMut::new();
    assert!(matches!(
        codec.encode(frame, &mut out),
        Err(LinkIoError::TooLarge { len: l, max: 16 }) if l == len
    ));
    assert!(out.is_empty());
}

#[tokio::test]
async fn garbage_and_truncation_are_errors() {
    let (mut client, server) = tokio::io::duplex(64);
    client.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    let mut reader = super::reader::<_, ToRoomSvc, ToMsgSvc>(server);
    assert!(matches!(
        reader.next().await,
        Some(Err(LinkIoError::Decode(_)))
    ));

    // Closed inside a body, right after a prefix (the length codec has
    // consumed it: nothing is left buffered), and inside a prefix.
    for stream in [&[0, 0, 0, 9, 1][..], &[0, 0, 0, 9], &[0, 0]] {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(stream).await.unwrap();
        drop(client);
        let mut reader = super::reader::<_, ToRoomSvc, ToMsgSvc>(server);
        match reader.next().await {
            Some(Err(LinkIoError::Io(error))) => {
                assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{stream:?}");
            }
            other => panic!("expected a truncation of {stream:?}, got {other:?}"),
        }
    }
}

#[test]
fn a_stream_cut_at_every_byte_decodes_the_same() {
    let frames = [
        hello("m1"),
        ToRoomSvc::default(),
        unsubscribe("lobby"),
        unsubscribe("room-2"),
    ];
    let stream = framed(&frames);
    let whole = decode_pieces([&stream[..]]);
    assert_eq!(whole, (frames.to_vec(), Ok(())));
    for cut in 0..=stream.len() {
        let (head, tail) = stream.split_at(cut);
        assert_eq!(decode_pieces([head, tail]), whole, "cut at {cut}");
        let (frames_before, end) = decode_pieces([head]);
        assert!(frames.starts_with(&frames_before), "cut at {cut}");
        assert_eq!(
            end.is_ok(),
            framed(&frames_before).len() == cut,
            "ended at {cut}"
        );
    }
    assert_eq!(decode_pieces(stream.chunks(1)), whole, "a byte at a time");
}
