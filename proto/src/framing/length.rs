//! Length-prefixed frames: a big-endian `u32` byte count, then the protobuf
//! bytes. QUIC client streams and node links use it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// A frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LengthError {
    /// The declared or actual length is over the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
}

/// The prefix for a body of `len` bytes.
pub fn prefix(len: usize) -> Result<[u8; PREFIX_LEN], LengthError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| LengthError::TooLarge {
            len: len as u64,
            max: u32::MAX as usize,
        })
}

/// Appends `body` with its prefix to `out`, refusing bodies over `max`.
pub fn encode(body: &[u8], max: usize, out: &mut BytesMut) -> Result<(), LengthError> {
    if body.len() > max {
        return Err(LengthError::TooLarge {
            len: body.len() as u64,
            max,
        });
    }
    out.reserve(PREFIX_LEN + body.len());
    out.put_slice(&prefix(body.len())?);
    out.put_slice(body);
    Ok(())
}

/// Splits the first complete frame's body off `buf`.
///
/// `Ok(None)` means more bytes are needed; nothing is consumed then. A declared
/// length over `max` is refused as soon as the prefix has arrived, before any of
/// the body is buffered.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, LengthError> {
    let Some(len) = peek_len(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < PREFIX_LEN + len {
        return Ok(None);
    }
    buf.advance(PREFIX_LEN);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The declared length of the frame at the front of `buf`, if its prefix has
/// arrived. Lets a reader reserve exactly what the frame needs.
pub fn peek_len(buf: &[u8], max: usize) -> Result<Option<usize>, LengthError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max {
        return Err(LengthError::TooLarge {
            len: len as u64,
            max,
        });
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_frames_split_anywhere() {
        let mut wire = BytesMut::new();
        encode(b"hello", 16, &mut wire).unwrap();
        encode(b"", 16, &mut wire).unwrap();
        encode(b"world!", 16, &mut wire).unwrap();
        let wire = wire.freeze();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            let feed = |buf: &mut BytesMut, got: &mut Vec<Bytes>| {
                while let Some(frame) = split_frame(buf, 16).unwrap() {
                    got.push(frame);
                }
            };
            feed(&mut buf, &mut got);
            buf.extend_from_slice(&wire[cut..]);
            feed(&mut buf, &mut got);
            assert_eq!(got, [&b"hello"[..], b"", b"world!"], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_an_oversized_frame_from_its_prefix_alone() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(LengthError::TooLarge {
                len: u64::from(u32::MAX),
                max: 1024
            })
        );
        let mut out = BytesMut::new();
        assert!(encode(&[0; 17], 16, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn waits_for_a_partial_prefix() {
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(split_frame(&mut buf, 16), Ok(None));
        assert_eq!(buf.len(), 2);
    }
}
