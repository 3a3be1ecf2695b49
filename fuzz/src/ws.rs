//! WebSocket: the HTTP upgrade request (with the Origin allow-list), then
//! the frame reader (headers, masks, fragments, control frames, size
//! limits) feeding the client frame decoder.

use chatroom_proto::framing::ws::MAX_HEADER_LEN;
use msg_svc::fuzzing::{Control, HANDSHAKE_READ, MAX_HANDSHAKE, Read, WsReader, ws_upgrade};

use crate::input::Input;

/// Frame limits the stream is read with: tiny ones reach the limits' edges.
const MAX_FRAMES: [usize; 4] = [16, 125, 1024, 64 * 1024];

/// A browser origin on the allow-list of setting 2.
pub const ALLOWED_ORIGIN: &str = "https://chat.example";

/// An upgrade request cut into reads: judged the same however it arrives
/// (against the reads of a client that sends it all at once); an incomplete
/// request is held only below the size limit; an accepted one ends within
/// the bytes read and has a key.
pub fn ws_handshake(data: &[u8]) {
    let input = Input::parse(data);
    let origins = match input.setting % 3 {
        0 => None,
        1 => Some(vec!["*".to_owned()]),
        _ => Some(vec![
            ALLOWED_ORIGIN.to_owned(),
            "http://localhost:8080".to_owned(),
        ]),
    };
    let origins = origins.as_deref();
    let chosen = handshake(&input.chunks(HANDSHAKE_READ), origins);
    let at_once: Vec<&[u8]> = input.stream.chunks(HANDSHAKE_READ).collect();
    assert_eq!(
        chosen,
        handshake(&at_once, origins),
        "the verdict depends on how the request arrives"
    );
}

/// What the handshake makes of `reads`: `None` when they end before it can
/// judge, else the end of the request and its key, or the refusal sent.
fn handshake(
    reads: &[&[u8]],
    origins: Option<&[String]>,
) -> Option<Result<(usize, String), String>> {
    let mut buf = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        match ws_upgrade(&buf, origins) {
            Ok(None) => assert!(buf.len() < MAX_HANDSHAKE, "an oversized request is held"),
            Ok(Some((end, key))) => {
                assert!(end <= buf.len());
                assert!(!key.is_empty() && key.trim() == key, "key {key:?}");
                return Some(Ok((end, key)));
            }
            Err(response) => {
                assert!(response.starts_with("HTTP/1.1 4"), "{response}");
                return Some(Err(response));
            }
        }
    }
    None
}

/// A client's byte stream: decoded the same however it is cut into reads;
/// between reads the reader keeps less than one frame (and nothing when no
/// frame is incomplete) and assembles at most the frame limit; a Close ends
/// the stream and is the last control.
pub fn ws_frames(data: &[u8]) {
    let input = Input::parse(data);
    let max_frame = MAX_FRAMES[usize::from(input.setting) % MAX_FRAMES.len()];
    let chosen = read_all(max_frame, &input.chunks(usize::MAX));
    let whole = read_all(max_frame, &[input.stream]);
    assert_eq!(chosen, whole, "decoding depends on how the stream is cut");
    let closes = whole
        .controls
        .iter()
        .filter(|c| matches!(c, Control::Close(_)))
        .count();
    assert_eq!(closes, usize::from(whole.eof));
    if whole.eof {
        assert!(matches!(whole.controls.last(), Some(Control::Close(_))));
    }
}

/// Every read's results in one, up to the first read the connection would
/// stop after (fatal, or the client's Close).
fn read_all(max_frame: usize, reads: &[&[u8]]) -> Read {
    let mut reader = WsReader::new(max_frame);
    let mut all = Read::default();
    for bytes in reads {
        let read = reader.read(bytes);
        let kept = reader.kept();
        // After a fatal frame or a Close the connection reads no more and
        // what followed is dropped with it.
        if read.fatal.is_none() && !read.eof {
            assert!(kept.len < MAX_HEADER_LEN + max_frame, "{kept:?}");
            assert!(
                kept.capacity <= 2 * (MAX_HEADER_LEN + max_frame),
                "{kept:?}"
            );
        }
        if kept.len == 0 {
            assert_eq!(kept.capacity, 0, "an idle connection holds a buffer");
        }
        assert!(reader.assembling() <= max_frame);
        all.frames.extend(read.frames);
        all.controls.extend(read.controls);
        all.eof = read.eof;
        all.fatal = read.fatal;
        if all.eof || all.fatal.is_some() {
            break;
        }
    }
    all
}
