//! Node link frames on the socket: a big-endian `u32` byte count, then the
//! protobuf bytes.
//!
//! Reading refuses a frame whose declared length is over the limit before
//! buffering it. Writing is pipelined: whatever is queued when the socket is
//! free goes out in one write, so a busy link costs one syscall per batch,
//! not per frame.

use std::io;

use bytes::BytesMut;
use chatroom_proto::Message;
use chatroom_proto::framing::length::{self, LengthError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest frame on a node link. A SubscribeAck's history is capped well
/// below it.
pub const MAX_LINK_FRAME: usize = 16 * 1024 * 1024;
/// Bytes gathered into one write before it is sent.
const WRITE_BATCH: usize = 256 * 1024;

/// Why a link's socket stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkIoError {
    /// The socket failed.
    #[error("link i/o: {0}")]
    Io(#[from] io::Error),
    /// The peer sent a frame over the limit.
    #[error("link frame refused: {0}")]
    TooLarge(#[from] LengthError),
    /// The peer sent bytes that are not a frame of the expected type.
    #[error("undecodable link frame: {0}")]
    Decode(#[from] chatroom_proto::DecodeError),
}

/// Reads cluster frames of type `M` from a socket.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `io`.
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the connection between
    /// frames.
    pub async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, LinkIoError> {
        loop {
            if let Some(frame) = length::split_frame(&mut self.buf, MAX_LINK_FRAME)? {
                return Ok(Some(M::decode(frame)?));
            }
            if let Some(len) = length::peek_len(&self.buf, MAX_LINK_FRAME)? {
                self.buf.reserve(length::PREFIX_LEN + len - self.buf.len());
            } else {
                self.buf.reserve(4096);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
                };
            }
        }
    }
}

/// Writes every frame `frames` yields to `io`, batching what is queued,
/// until the channel closes (then `Ok`) or the socket fails.
pub async fn write_frames<W, M>(
    mut io: W,
    frames: &mut mpsc::Receiver<M>,
) -> Result<(), LinkIoError>
where
    W: AsyncWrite + Unpin,
    M: Message,
{
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(frame) = frames.recv().await {
        encode(&frame, &mut buf)?;
        while buf.len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => encode(&frame, &mut buf)?,
                Err(_) => break,
            }
        }
        io.write_all(&buf).await?;
        buf.clear();
    }
    io.flush().await?;
    Ok(())
}

/// Writes one frame now (a link's Hello).
pub async fn write_frame<W, M>(io: &mut W, frame: &M) -> Result<(), LinkIoError>
where
    W: AsyncWrite + Unpin,
    M: Message,
{
    let mut buf = BytesMut::new();
    encode(frame, &mut buf)?;
    io.write_all(&buf).await?;
    Ok(())
}

fn encode(frame: &impl Message, buf: &mut BytesMut) -> Result<(), LengthError> {
    let len = frame.encoded_len();
    if len > MAX_LINK_FRAME {
        return Err(LengthError::TooLarge {
            len: len as u64,
            max: MAX_LINK_FRAME,
        });
    }
    buf.reserve(length::PREFIX_LEN + len);
    buf.extend_from_slice(&length::prefix(len)?);
    // Reserved just above, so encoding cannot run out of room.
    frame.encode(buf).expect("buffer reserved for the frame");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_proto::cluster::v1::{Hello, ToRoomSvc, Unsubscribe, to_room_svc};

    fn unsubscribe(room: &str) -> ToRoomSvc {
        ToRoomSvc {
            body: Some(to_room_svc::Body::Unsubscribe(Unsubscribe {
                room_id: room.into(),
            })),
        }
    }

    #[tokio::test]
    async fn frames_cross_in_order_and_the_stream_ends_cleanly() {
        let (client, server) = tokio::io::duplex(64);
        let (tx, mut rx) = mpsc::channel(16);
        let writer = tokio::spawn(async move { write_frames(client, &mut rx).await });
        let hello = ToRoomSvc {
            body: Some(to_room_svc::Body::Hello(Hello {
                node_id: "m1".into(),
            })),
        };
        let sent = hello.clone();
        tokio::spawn(async move {
            tx.send(sent).await.unwrap();
            for i in 0..100 {
                tx.send(unsubscribe(&format!("room-{i}"))).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(server);
        assert_eq!(reader.next::<ToRoomSvc>().await.unwrap(), Some(hello));
        for i in 0..100 {
            assert_eq!(
                reader.next().await.unwrap(),
                Some(unsubscribe(&format!("room-{i}")))
            );
        }
        writer.await.unwrap().unwrap();
        assert_eq!(reader.next::<ToRoomSvc>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_oversized_declared_length_is_refused_before_buffering() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut reader = FrameReader::new(server);
        assert!(matches!(
            reader.next::<ToRoomSvc>().await,
            Err(LinkIoError::TooLarge(_))
        ));
        assert!(reader.buf.capacity() < 1024 * 1024);
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let mut reader = FrameReader::new(server);
        assert!(matches!(
            reader.next::<ToRoomSvc>().await,
            Err(LinkIoError::Decode(_))
        ));

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(client);
        let mut reader = FrameReader::new(server);
        assert!(matches!(
            reader.next::<ToRoomSvc>().await,
            Err(LinkIoError::Io(_))
        ));
    }
}
