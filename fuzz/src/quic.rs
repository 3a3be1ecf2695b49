//! QUIC: a session stream's length-prefixed frames, read in arbitrary
//! chunks, feeding the client frame decoder.

use chatroom_proto::framing::length::PREFIX_LEN;
use msg_svc::fuzzing::{QuicReader, Read};

use crate::input::Input;

/// Frame limits the stream is read with: tiny ones reach the limits' edges.
const MAX_FRAMES: [usize; 3] = [16, 1024, 64 * 1024];

/// A session stream: decoded the same however it is cut into chunks; between
/// chunks the reader keeps less than one frame, in a buffer sized for that
/// frame (and none when no frame is incomplete).
pub fn quic_frames(data: &[u8]) {
    let input = Input::parse(data);
    let max_frame = MAX_FRAMES[usize::from(input.setting) % MAX_FRAMES.len()];
    let chosen = read_all(max_frame, &input.chunks(usize::MAX));
    let whole = read_all(max_frame, &[input.stream]);
    assert_eq!(chosen, whole, "decoding depends on how the stream is cut");
}

/// Every chunk's results in one, up to the first fatal one.
fn read_all(max_frame: usize, chunks: &[&[u8]]) -> Read {
    let mut reader = QuicReader::new(max_frame);
    let mut all = Read::default();
    for chunk in chunks {
        let read = reader.read(chunk);
        let kept = reader.kept();
        if read.fatal.is_none() {
            assert!(kept.len < PREFIX_LEN + max_frame, "{kept:?}");
            assert!(
                kept.capacity <= (PREFIX_LEN + max_frame).max(64),
                "{kept:?}"
            );
        }
        if kept.len == 0 {
            assert_eq!(kept.capacity, 0, "an idle session holds a buffer");
        }
        assert!(read.controls.is_empty() && !read.eof);
        all.frames.extend(read.frames);
        all.fatal = read.fatal;
        if all.fatal.is_some() {
            break;
        }
    }
    all
}
