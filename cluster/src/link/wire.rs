//! Node link frames on the socket: a big-endian `u32` byte count, then the
//! protobuf bytes (the same framing as `chatroom_proto::framing::length`).
//!
//! [`LinkCodec`] puts prost on top of tokio-util's [`LengthDelimitedCodec`],
//! which refuses a declared length over [`MAX_LINK_FRAME`] as soon as the
//! prefix has arrived, before any of the body is buffered. Writing is
//! pipelined: [`write_frames`] encodes whatever is queued when the socket is
//! free and sends it in one write, so a busy link costs one syscall per
//! batch, not per frame.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use bytes::BytesMut;
use chatroom_proto::Message;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{
    Decoder, Encoder, FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError,
};

/// Largest frame on a node link. A SubscribeAck's history is capped well
/// below it.
pub const MAX_LINK_FRAME: usize = 16 * 1024 * 1024;
/// Bytes gathered into one write before it is sent.
const WRITE_BATCH: usize = 256 * 1024;
/// Bytes in the length prefix.
const PREFIX_LEN: usize = 4;
/// Room made for the next read while a frame is incomplete. FramedRead
/// itself ensures only one byte; with room for 4 KiB a busy link read one or
/// two Broadcasts per syscall and lost a third of its throughput (the link
/// benchmark), with 256 KiB it spent more CPU per frame.
const READ_CHUNK: usize = 64 * 1024;

/// Why a link's socket stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkIoError {
    /// The socket failed, or closed inside a frame (`UnexpectedEof`).
    #[error("link i/o: {0}")]
    Io(#[from] io::Error),
    /// A frame's length is over the limit.
    #[error("link frame of {len} bytes refused: the limit is {max}")]
    TooLarge {
        /// The declared (or, writing, the encoded) length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The peer sent bytes that are not a frame of the expected type.
    #[error("undecodable link frame: {0}")]
    Decode(#[from] chatroom_proto::DecodeError),
}

/// Decodes frames of type `In` and encodes frames of type `Out`: a link's
/// two directions carry different messages.
pub struct LinkCodec<In, Out> {
    frames: LengthDelimitedCodec,
    max: usize,
    /// The length codec has taken a frame's prefix and waits for its body: a
    /// stream that ends now is truncated, though nothing is left buffered.
    in_frame: bool,
    /// Where an outgoing frame is encoded before the length codec frames it;
    /// kept, so its allocation is reused frame after frame (it keeps the
    /// largest frame's size, as the write buffer does).
    body: Vec<u8>,
    directions: PhantomData<fn(Out) -> In>,
}

impl<In, Out> fmt::Debug for LinkCodec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkCodec").field("max", &self.max).finish()
    }
}

impl<In, Out> Default for LinkCodec<In, Out> {
    fn default() -> Self {
        Self::with_max(MAX_LINK_FRAME)
    }
}

impl<In, Out> LinkCodec<In, Out> {
    /// A codec refusing frames over `max` bytes either way; node links use
    /// [`MAX_LINK_FRAME`] (the default).
    pub fn with_max(max: usize) -> Self {
        Self {
            frames: LengthDelimitedCodec::builder()
                .big_endian()
                .length_field_type::<u32>()
                .max_frame_length(max)
                .new_codec(),
            max,
            in_frame: false,
            body: Vec::new(),
            directions: PhantomData,
        }
    }

    fn too_large(&self, len: u64) -> LinkIoError {
        LinkIoError::TooLarge { len, max: self.max }
    }
}

impl<In: Message + Default, Out> Decoder for LinkCodec<In, Out> {
    type Item = In;
    type Error = LinkIoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, LinkIoError> {
        let buffered = src.len();
        match self.frames.decode(src) {
            Ok(Some(body)) => {
                self.in_frame = false;
                Ok(Some(In::decode(body.freeze())?))
            }
            Ok(None) => {
                // While it waits, the length codec consumes a prefix at most.
                self.in_frame |= src.len() < buffered;
                src.reserve(READ_CHUNK);
                Ok(None)
            }
            // The length codec refuses from the prefix alone and leaves it
            // in place, so the declared length can still be read.
            Err(error) if is_too_large(&error) => {
                let len = src
                    .first_chunk::<PREFIX_LEN>()
                    .map_or(0, |prefix| u64::from(u32::from_be_bytes(*prefix)));
                Err(self.too_large(len))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A stream that ends inside a frame is truncated: `UnexpectedEof`.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, LinkIoError> {
        match self.decode(src)? {
            None if self.in_frame || !src.is_empty() => {
                Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
            }
            frame => Ok(frame),
        }
    }
}

impl<In, Out: Message> Encoder<Out> for LinkCodec<In, Out> {
    type Error = LinkIoError;

    fn encode(&mut self, frame: Out, dst: &mut BytesMut) -> Result<(), LinkIoError> {
        let len = frame.encoded_len();
        if len > self.max {
            return Err(self.too_large(len as u64));
        }
        self.body.clear();
        // A Vec grows as needed, so encoding cannot run out of room.
        frame
            .encode(&mut self.body)
            .expect("a Vec has room for any frame");
        self.frames.encode(self.body.as_slice(), dst)?;
        Ok(())
    }
}

/// Whether the length codec refused a frame for its length.
fn is_too_large(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
}

/// A link's reading half: a stream of `In` frames from `io`, ending with
/// `None` when the peer closes between frames.
pub fn reader<R: AsyncRead, In, Out>(io: R) -> FramedRead<R, LinkCodec<In, Out>> {
    FramedRead::new(io, LinkCodec::default())
}

/// A link's writing half: `Out` frames to `io`. It buffers up to a whole
/// batch before writing on its own, so [`write_frames`] decides the batches.
pub fn writer<W: AsyncWrite, In, Out>(io: W) -> FramedWrite<W, LinkCodec<In, Out>> {
    let mut writer = FramedWrite::new(io, LinkCodec::default());
    writer.set_backpressure_boundary(WRITE_BATCH);
    writer
}

/// Writes every frame `frames` yields to `link`, batching what is queued,
/// until the channel closes (then `Ok`) or the socket fails.
pub async fn write_frames<W, In, Out>(
    link: &mut FramedWrite<W, LinkCodec<In, Out>>,
    frames: &mut mpsc::Receiver<Out>,
) -> Result<(), LinkIoError>
where
    W: AsyncWrite + Unpin,
    Out: Message,
{
    while let Some(frame) = frames.recv().await {
        link.feed(frame).await?;
        while link.write_buffer().len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => link.feed(frame).await?,
                Err(_) => break,
            }
        }
        link.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
