//! QUIC transport: the endpoint, one task per connection, and the reader of
//! the length-prefixed frames on a session's stream.
//!
//! A connection carries one session on one bidirectional stream, opened by
//! the client. The frames are the WebSocket binary messages' bytes, each
//! after a big-endian `u32` length. A client that opens another stream is
//! closed with a reason. Closing, the server hands its last frames to the
//! stream, finishes it, waits (bounded) until the client has acknowledged
//! them, then closes the connection with the session's close code, so a
//! kicked client reads both why (the Kicked frame) and the code.

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chatroom_cluster::quic::{self, Limits, TlsError, TlsIdentity};
use chatroom_proto::framing::length::{self, LengthError};
use chatroom_proto::framing::ws::close_code;
use chatroom_proto::v1::KickReason;
use quinn::{Connection, Endpoint, Incoming, RecvStream, VarInt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::admission::IpGuard;
use crate::conn::{self, Batch, Fatal, decode_client_frame};
use crate::metrics::{self, Open};
use crate::node::{MsgNode, NodeConfig};
use crate::session::{QuicStream, Session, Transport};

/// Most bytes taken from the stream per read.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes sent and unacknowledged per connection before writes wait.
const SEND_WINDOW: u64 = 256 * 1024;
/// How long a closing session waits for the client to take its last frames.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Heartbeat intervals of silence after which QUIC itself drops a
/// connection: one more than the session's own deadline (three), so a
/// silent client is told why before the transport gives up on it.
const IDLE_INTERVALS: u32 = 4;

/// A bound UDP socket and the identity the endpoint presents on it.
#[derive(Debug)]
pub struct QuicListener {
    pub(crate) socket: UdpSocket,
    pub(crate) identity: TlsIdentity,
}

impl QuicListener {
    /// Binds `addr` for QUIC with `identity`.
    pub fn bind(addr: SocketAddr, identity: TlsIdentity) -> io::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind(addr)?,
            identity,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The identity it presents.
    pub fn identity(&self) -> &TlsIdentity {
        &self.identity
    }
}

/// Why the QUIC endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The TLS identity or settings were refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The socket could not be used.
    #[error("quic socket: {0}")]
    Io(#[from] io::Error),
}

/// The endpoint serving `listener` with the node's limits. Needs a tokio
/// runtime (the endpoint's driver is spawned on it).
pub(crate) fn endpoint(listener: QuicListener, config: &NodeConfig) -> Result<Endpoint, QuicError> {
    let limits = Limits {
        idle_timeout: config.heartbeat * IDLE_INTERVALS,
        max_frame: config.max_frame_bytes,
        send_window: SEND_WINDOW,
    };
    let server = quic::server_config(&listener.identity, &limits)?;
    listener.socket.set_nonblocking(true)?;
    Ok(Endpoint::new(
        quic::endpoint_config(&listener.identity),
        Some(server),
        listener.socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// Accepts connections until `stop`, one task each; past the node's
/// connection limit, new ones are refused at once.
pub(crate) async fn serve(node: Arc<MsgNode>, endpoint: Endpoint, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            () = stop.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else {
            break;
        };
        if endpoint.open_connections() >= node.config.max_connections {
            debug!(remote = %incoming.remote_address(), "connection limit reached; refused");
            node.metrics.refused(metrics::ConnectRefusal::NodeLimit);
            incoming.refuse();
            continue;
        }
        let now = chatroom_cluster::time::mono_millis();
        let admitted = match node
            .quic_admission
            .admit(incoming.remote_address().ip(), now)
        {
            Ok(guard) => guard,
            Err(why) => {
                debug!(remote = %incoming.remote_address(), %why, "refused");
                node.metrics.refused(why.into());
                incoming.refuse();
                continue;
            }
        };
        let span = info_span!("conn", remote = %incoming.remote_address(), transport = "quic");
        tokio::spawn(connection(Arc::clone(&node), incoming, admitted).instrument(span));
    }
    // Draining: refuse new connections instead of leaving them queued.
    endpoint.set_server_config(None);
}

/// `_admitted` holds the address's slot for the connection's life.
async fn connection(node: Arc<MsgNode>, incoming: Incoming, _admitted: IpGuard) {
    // The endpoint's own count enforces the limit; this one is for metrics.
    let _open = Open::count(node.metrics.quic_connections());
    let remote = incoming.remote_address();
    let deadline = tokio::time::Instant::now() + node.config.connect_timeout;
    let connection = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            debug!(%error, "handshake failed");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            return;
        }
    };
    let (send, recv) = match tokio::time::timeout_at(deadline, connection.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(error)) => {
            debug!(%error, "closed before opening its stream");
            return;
        }
        Err(_) => {
            close(
                &connection,
                close_code::POLICY_VIOLATION,
                "no session stream in time",
            );
            return;
        }
    };
    let session = node.open_session(
        remote,
        Transport::Quic(QuicStream::new(connection.clone(), send)),
    );
    let mut reader = QuicDecoder::new(node.config.max_frame_bytes);
    if let Err(error) = serve_session(&node, &session, &connection, recv, &mut reader).await {
        debug!(%error, session = session.id, "connection ended");
    }
    node.close_session(&session).await;
    finish(&session, &connection).await;
    session.shut_down();
}

async fn serve_session(
    node: &MsgNode,
    session: &Arc<Session>,
    connection: &Connection,
    mut recv: RecvStream,
    reader: &mut QuicDecoder,
) -> io::Result<()> {
    let mut batch = Batch::default();
    loop {
        let decoded = std::mem::take(&mut batch);
        if !conn::handle_batch(node, session, &mut reader.malformed, decoded).await {
            return Ok(());
        }
        session.flush()?;
        if session.is_closing() {
            return Ok(());
        }
        let backlog = session.has_backlog();
        tokio::select! {
            biased;
            () = session.woken() => {}
            flushed = poll_fn(|cx| session.poll_flush(cx)), if backlog => flushed?,
            chunk = recv.read_chunk(READ_CHUNK, true) => {
                batch = match chunk.map_err(io::Error::from)? {
                    Some(chunk) => reader.push(&chunk.bytes),
                    None => Batch { eof: true, ..Batch::default() },
                };
            }
            extra = connection.accept_bi() => refuse_stream(session, extra)?,
            extra = connection.accept_uni() => refuse_stream(session, extra)?,
        }
    }
}

/// A client opened a stream it should not have: the session is closed with
/// the reason.
fn refuse_stream<S>(
    session: &Session,
    opened: Result<S, quinn::ConnectionError>,
) -> io::Result<()> {
    opened.map_err(io::Error::from)?;
    session.close_with(
        KickReason::Protocol,
        close_code::PROTOCOL_ERROR,
        "one stream per session: another stream was opened",
    );
    Ok(())
}

/// Gives a closing session a bounded time to hand its last frames (a kick,
/// an error, a redirect) to the client, and the client time to read them
/// and hang up; then the connection is closed either way, so a silent
/// client cannot hold the task. Acknowledged is not enough: a QUIC client
/// loses stream data it has not read yet when the connection closes under
/// it, so closing right after the acknowledgement loses a redirect now
/// and then.
async fn finish(session: &Session, connection: &Connection) {
    let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
    let flushed = tokio::time::timeout_at(deadline, poll_fn(|cx| session.poll_flush(cx))).await;
    if !matches!(flushed, Ok(Ok(()))) {
        debug!(
            session = session.id,
            "closing client is not reading; dropping it"
        );
        return;
    }
    if let Some(acknowledged) = session.finish_stream() {
        let _ = tokio::time::timeout_at(deadline, acknowledged).await;
    }
    let _ = tokio::time::timeout_at(deadline, connection.closed()).await;
}

fn close(connection: &Connection, code: u16, reason: &str) {
    debug!(code, reason, "closing connection");
    connection.close(VarInt::from(code), reason.as_bytes());
}

/// Turns stream bytes into client frames.
#[derive(Debug)]
pub(crate) struct QuicDecoder {
    max_frame: usize,
    /// Bytes of an incomplete frame; empty (and unallocated) between frames.
    partial: BytesMut,
    malformed: u32,
}

impl QuicDecoder {
    pub(crate) fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            partial: BytesMut::new(),
            malformed: 0,
        }
    }

    /// Decodes every frame completed by `chunk`. What is kept between reads
    /// is less than one frame, whose declared size was checked first.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Batch {
        let mut batch = Batch::default();
        if self.partial.is_empty() {
            let used = self.decode(chunk, &mut batch);
            self.keep(&chunk[used..]);
        } else {
            self.partial.extend_from_slice(chunk);
            let partial = std::mem::take(&mut self.partial);
            let used = self.decode(&partial, &mut batch);
            self.keep(&partial[used..]);
        }
        batch
    }

    /// Decodes complete frames from the front of `buf`; returns how many
    /// bytes they used.
    fn decode(&self, buf: &[u8], batch: &mut Batch) -> usize {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match length::peek_len(rest, self.max_frame) {
                Ok(Some(len)) if rest.len() >= length::PREFIX_LEN + len => {
                    let body = &rest[length::PREFIX_LEN..length::PREFIX_LEN + len];
                    batch.frames.push(decode_client_frame(body));
                    pos += length::PREFIX_LEN + len;
                }
                Ok(_) => return pos,
                Err(LengthError::TooLarge { len, max }) => {
                    batch.fatal = Some(Fatal::too_big(format!(
                        "frame of {len} bytes exceeds the limit of {max}"
                    )));
                    return pos;
                }
            }
        }
    }

    /// The incomplete frame kept: its length and the capacity holding it.
    pub(crate) fn kept(&self) -> (usize, usize) {
        (self.partial.len(), self.partial.capacity())
    }

    fn keep(&mut self, rest: &[u8]) {
        if rest.is_empty() {
            self.partial = BytesMut::new();
            return;
        }
        let mut kept = BytesMut::new();
        if let Ok(Some(len)) = length::peek_len(rest, self.max_frame) {
            // The whole frame: one allocation, however it arrives.
            kept.reserve(length::PREFIX_LEN + len);
        }
        kept.extend_from_slice(rest);
        self.partial = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_proto::Message;
    use chatroom_proto::v1::{ClientFrame, Ping, client_frame};

    fn framed(frame: &ClientFrame) -> Vec<u8> {
        let body = frame.encode_to_vec();
        let mut out = length::prefix(body.len()).unwrap().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn ping(id: u64) -> ClientFrame {
        ClientFrame {
            request_id: id,
            body: Some(client_frame::Body::Ping(Ping {})),
        }
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mut wire = framed(&ping(1));
        wire.extend(framed(&ping(2)));
        wire.extend(framed(&ping(3)));
        for cut in 0..wire.len() {
            let mut reader = QuicDecoder::new(1024);
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                let batch = reader.push(part);
                assert!(batch.fatal.is_none());
                got.extend(batch.frames.into_iter().map(|f| f.unwrap().request_id));
            }
            assert_eq!(got, [1, 2, 3], "cut at {cut}");
            assert!(reader.partial.is_empty() && reader.partial.capacity() == 0);
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_prefix() {
        let mut reader = QuicDecoder::new(16);
        let mut wire = framed(&ping(1));
        wire.extend_from_slice(&1_000_000u32.to_be_bytes());
        let batch = reader.push(&wire);
        assert_eq!(batch.frames.len(), 1, "the frame before it still counts");
        let fatal = batch.fatal.unwrap();
        assert_eq!(fatal.code, close_code::MESSAGE_TOO_BIG);
        assert!(fatal.reason.contains("1000000"), "{}", fatal.reason);
        assert!(reader.partial.capacity() < 64, "nothing reserved for it");
    }

    #[test]
    fn garbage_is_a_bad_frame_not_a_fatal_one() {
        let mut reader = QuicDecoder::new(1024);
        let mut wire = length::prefix(3).unwrap().to_vec();
        wire.extend_from_slice(&[0xff, 0xff, 0xff]);
        let batch = reader.push(&wire);
        assert!(batch.fatal.is_none());
        assert!(batch.frames[0].is_err());
    }
}
