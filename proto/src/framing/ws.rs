//! WebSocket (RFC 6455) frame headers, masking and close payloads.
//!
//! The server writes one unmasked header in front of a body that many sockets
//! share, so it needs header bytes on their own, not a framed copy of the body.

use std::ops::Range;

/// The longest header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most this many payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close codes this service sends.
pub mod close_code {
    /// The purpose of the connection is fulfilled.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame where only binary is accepted.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// The peer broke the chatroom protocol or a policy.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server failed.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// The next fragment of a message.
    Continuation,
    /// A UTF-8 message.
    Text,
    /// A binary message.
    Binary,
    /// Closing handshake.
    Close,
    /// Keep-alive request.
    Ping,
    /// Keep-alive answer.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Result<Self, WsError> {
        Ok(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(WsError::ReservedOpcode(other)),
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last fragment of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// Client frames are masked with this key.
    pub mask: Option<[u8; 4]>,
    /// Payload length as declared.
    pub payload_len: u64,
}

/// A header that breaks RFC 6455 or the size limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame over 125 bytes.
    #[error("control frame of {0} bytes, more than 125")]
    ControlTooLong(u64),
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A 64-bit length with its most significant bit set.
    #[error("invalid 64-bit length")]
    BadLength,
    /// A payload over the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared payload length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
}

/// Parses the header at the start of `buf`: `Ok(None)` when more bytes are
/// needed, otherwise the header and its length in bytes.
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, WsError> {
    let [first, second, rest @ ..] = buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let fin = first & 0x80 != 0;
    let opcode = OpCode::from_bits(first & 0x0F)?;
    let masked = second & 0x80 != 0;
    let (payload_len, len_bytes) = match second & 0x7F {
        126 => match rest.first_chunk::<2>() {
            Some(b) => (u64::from(u16::from_be_bytes(*b)), 2),
            None => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(b) => (u64::from_be_bytes(*b), 8),
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    if payload_len >> 63 != 0 {
        return Err(WsError::BadLength);
    }
    if opcode.is_control() {
        if !fin {
            return Err(WsError::FragmentedControl);
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::ControlTooLong(payload_len));
        }
    }
    let mask = if masked {
        match rest[len_bytes..].first_chunk::<4>() {
            Some(key) => Some(*key),
            None => return Ok(None),
        }
    } else {
        None
    };
    let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
    let header = Header {
        fin,
        opcode,
        mask,
        payload_len,
    };
    Ok(Some((header, header_len)))
}

/// The first complete frame in `buf`: its header and where its payload lies.
///
/// A payload declared larger than `max_payload` is refused as soon as the
/// header has arrived. `Ok(None)` means more bytes are needed.
pub fn next_frame(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(Header, Range<usize>)>, WsError> {
    let Some((header, header_len)) = parse_header(buf)? else {
        return Ok(None);
    };
    if header.payload_len > max_payload as u64 {
        return Err(WsError::TooLarge {
            len: header.payload_len,
            max: max_payload,
        });
    }
    // Fits in usize: bounded by `max_payload` above.
    let end = header_len + header.payload_len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((header, header_len..end)))
}

/// XORs `payload` with the mask key (masking and unmasking are the same).
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let (words, rest) = payload.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
    }
    for (byte, key) in rest.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// Header bytes for one frame, ready to be written before its payload.
#[derive(Debug, Clone, Copy)]
pub struct HeaderBytes {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl HeaderBytes {
    /// The header for a final frame; `mask` is `Some` for client frames.
    pub fn new(opcode: OpCode, payload_len: usize, mask: Option<[u8; 4]>) -> Self {
        let mut buf = [0u8; MAX_HEADER_LEN];
        buf[0] = 0x80 | opcode.bits();
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        let mut len = 2;
        if payload_len < 126 {
            buf[1] = mask_bit | payload_len as u8;
        } else if let Ok(short) = u16::try_from(payload_len) {
            buf[1] = mask_bit | 126;
            buf[2..4].copy_from_slice(&short.to_be_bytes());
            len = 4;
        } else {
            buf[1] = mask_bit | 127;
            buf[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            len = 10;
        }
        if let Some(key) = mask {
            buf[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        Self {
            buf,
            len: len as u8,
        }
    }

    /// The header's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// The payload of a Close frame: the code, then the reason cut at a character
/// boundary so the whole fits in a control frame.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let room = MAX_CONTROL_PAYLOAD - 2;
    let mut cut = reason.len().min(room);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    payload
}

/// A whole frame as a client sends it: the header (`fin` clear for all but
/// a message's last fragment), then `payload` masked with `mask`.
pub fn masked_frame(opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let header = HeaderBytes::new(opcode, payload.len(), Some(mask));
    let mut out = Vec::with_capacity(header.as_slice().len() + payload.len());
    out.extend_from_slice(header.as_slice());
    if !fin {
        out[0] &= 0x7f;
    }
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
    out
}

/// The code and reason of a Close payload, if well formed.
pub fn parse_close(payload: &[u8]) -> Option<(u16, &str)> {
    let (code, reason) = payload.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*code), std::str::from_utf8(reason).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = HeaderBytes::new(opcode, payload.len(), mask)
            .as_slice()
            .to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key);
        }
        out
    }

    #[test]
    fn round_trips_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let key = [1, 2, 3, 4];
            let mut wire = frame(OpCode::Binary, &payload, Some(key));
            let (header, range) = next_frame(&wire, 1 << 20).unwrap().unwrap();
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(header.mask, Some(key));
            assert!(header.fin);
            assert_eq!(range.end, wire.len());
            apply_mask(&mut wire[range.clone()], key);
            assert_eq!(&wire[range], &payload[..], "len {len}");
        }
    }

    #[test]
    fn waits_for_every_partial_prefix() {
        let wire = frame(OpCode::Binary, &[7; 300], Some([9, 9, 9, 9]));
        for cut in 0..wire.len() {
            assert_eq!(next_frame(&wire[..cut], 1024), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn refuses_oversized_payload_from_the_header_alone() {
        let wire = HeaderBytes::new(OpCode::Binary, 1 << 30, Some([0; 4]));
        assert_eq!(
            next_frame(wire.as_slice(), 65_536),
            Err(WsError::TooLarge {
                len: 1 << 30,
                max: 65_536
            })
        );
    }

    #[test]
    fn refuses_protocol_violations() {
        assert_eq!(parse_header(&[0x82 | 0x40, 0]), Err(WsError::ReservedBits));
        assert_eq!(parse_header(&[0x83, 0]), Err(WsError::ReservedOpcode(3)));
        assert_eq!(parse_header(&[0x09, 0]), Err(WsError::FragmentedControl));
        assert_eq!(
            parse_header(&[0x89, 126, 0, 200]),
            Err(WsError::ControlTooLong(200))
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_header(&huge), Err(WsError::BadLength));
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let reason = "\u{e9}".repeat(100);
        let payload = close_payload(close_code::POLICY_VIOLATION, &reason);
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        let (code, text) = parse_close(&payload).unwrap();
        assert_eq!(code, close_code::POLICY_VIOLATION);
        assert_eq!(text, "\u{e9}".repeat(61));
    }

    #[test]
    fn mask_matches_the_bytewise_definition() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }
}
