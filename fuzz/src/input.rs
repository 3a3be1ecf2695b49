//! How the stream targets read their bytes: a setting byte, a cut count
//! byte, that many read lengths, then the stream. A few leading bytes let the
//! fuzzer vary the setting and where the stream is cut into reads, while the
//! rest stays a plain stream it can mutate.

/// The most reads a stream is cut into before its rest.
const MAX_CUTS: u8 = 8;

/// A stream target's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input<'a> {
    /// Picks the setting the stream is read with (a limit, an allow-list).
    pub setting: u8,
    /// Lengths of the first reads (1 to 256 bytes each).
    pub reads: Vec<usize>,
    /// The bytes as a peer sends them.
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `data` into its setting, read lengths and stream; missing
    /// leading bytes read as 0.
    pub fn parse(data: &'a [u8]) -> Self {
        let (setting, data) = data.split_first().map_or((0, data), |(&b, rest)| (b, rest));
        let (cuts, data) = data
            .split_first()
            .map_or((0, data), |(&b, rest)| (b % (MAX_CUTS + 1), rest));
        let (reads, stream) = data.split_at(usize::from(cuts).min(data.len()));
        Self {
            setting,
            reads: reads.iter().map(|&len| usize::from(len) + 1).collect(),
            stream,
        }
    }

    /// The input's bytes: what [`parse`](Self::parse) reads back.
    pub fn compose(setting: u8, reads: &[usize], stream: &[u8]) -> Vec<u8> {
        assert!(reads.len() <= usize::from(MAX_CUTS), "too many reads");
        let mut out = vec![setting, reads.len() as u8];
        out.extend(reads.iter().map(|&len| {
            len.checked_sub(1)
                .and_then(|len| u8::try_from(len).ok())
                .expect("reads are 1 to 256 bytes long")
        }));
        out.extend_from_slice(stream);
        out
    }

    /// The stream cut into the chosen reads, then the rest in reads of at
    /// most `max_read` bytes; no read is empty.
    pub fn chunks(&self, max_read: usize) -> Vec<&'a [u8]> {
        let mut rest = self.stream;
        let mut chunks = Vec::new();
        for &len in &self.reads {
            let (chunk, after) = rest.split_at(len.min(rest.len()));
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
            rest = after;
        }
        chunks.extend(rest.chunks(max_read));
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_inputs_parse_back() {
        let data = Input::compose(3, &[1, 256, 2], b"hello world");
        let input = Input::parse(&data);
        assert_eq!(input.setting, 3);
        assert_eq!(input.reads, [1, 256, 2]);
        assert_eq!(input.stream, b"hello world");
        assert_eq!(input.chunks(4), [&b"h"[..], b"ello world"]);
        let input = Input::parse(&[7, 2, 0, 1, b'a', b'b', b'c', b'd', b'e']);
        assert_eq!(input.chunks(1), [&b"a"[..], b"bc", b"d", b"e"]);
    }

    #[test]
    fn short_inputs_are_streams_read_whole() {
        for data in [&[][..], &[9], &[9, 4, 1]] {
            let input = Input::parse(data);
            assert!(input.stream.is_empty());
            assert!(input.chunks(16).is_empty());
        }
    }
}
