//! The two ways to a msg-svc, behind what the connection task needs: frames
//! out, frames in, a close.
//!
//! - WebSocket, `ws://host:port/path`: one binary message per frame
//!   (tokio-tungstenite, buffers sized for chat).
//! - QUIC, `quic://host:port`: one bidirectional stream per session, each
//!   frame after a big-endian `u32` length; the server's certificate is
//!   trusted as [`ClientConfig::trust`](crate::ClientConfig::trust) says.
//!
//! The frame limits and the embedded server's addresses live here too: they
//! are the transports' business, and the connection above only reads them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chatroom_cluster::quic::{self, Trust};
use chatroom_proto::framing::length;
use chatroom_proto::framing::ws::close_code;
use futures_util::{SinkExt, StreamExt};
use quinn::{Connection, ConnectionError, Endpoint, ReadError, RecvStream, SendStream, VarInt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::error::ClientError;
use crate::events::CloseReason;

/// Where the embedded server listens for WebSocket by default.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:7400/ws";
/// Where the embedded server listens for QUIC by default.
pub const DEFAULT_QUIC_URL: &str = "quic://127.0.0.1:7402";
/// Largest client frame the server accepts.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Largest server frame this client accepts.
pub const MAX_SERVER_FRAME: usize = 1024 * 1024;

/// Initial WebSocket read buffer: room for a few notifies; it grows for a
/// large pull result. tungstenite's default (128 KiB, allocated up front)
/// would cost gigabytes over the harness's tens of thousands of connections.
const READ_BUFFER: usize = 4 * 1024;
/// Frames queued with `feed` are written once this much is buffered, or on
/// the flush that ends each batch: one write per batch, not per frame.
const WRITE_BUFFER: usize = 8 * 1024;
/// How long a closing handshake may take before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most bytes taken from a QUIC stream per read.
const QUIC_READ_CHUNK: usize = 64 * 1024;
/// A QUIC connection with nothing from the server for this long is gone.
/// The server's own limit (past its heartbeat deadline) wins when shorter.
const QUIC_IDLE: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<TcpStream>;

/// How a client reaches a msg-svc; a URL's scheme names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket, `ws://host:port/ws`.
    #[default]
    Ws,
    /// QUIC, `quic://host:port`.
    Quic,
}

impl Transport {
    /// Every transport, in the order flags list them.
    pub const ALL: [Self; 2] = [Self::Ws, Self::Quic];

    /// As reports and flags name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Quic => "quic",
        }
    }

    /// Where the embedded server serves it by default.
    pub fn default_url(self) -> &'static str {
        match self {
            Self::Ws => DEFAULT_URL,
            Self::Quic => DEFAULT_QUIC_URL,
        }
    }

    /// The transport `url` names, if it is one a client can use.
    pub fn of(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("ws") => Ok(Self::Ws),
            Some("quic") => Ok(Self::Quic),
            Some("wss") => Err(invalid(
                "wss needs TLS over TCP, which this client lacks; use quic:// for TLS",
            )),
            _ => Err(invalid("the scheme must be ws or quic")),
        }
    }
}

/// Parses a transport's [name](Transport::name), as flags give it.
impl std::str::FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|transport| transport.name() == name)
            .ok_or_else(|| UnknownTransport(name.to_owned()))
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no transport's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}: expected ws or quic")]
pub struct UnknownTransport(pub String);

/// What a connection is opened with besides its URL: the transports' share
/// of the client's settings, borrowed from them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Dial<'a> {
    /// QUIC: how to trust the server's certificate; `None` trusts the one
    /// the embedded server wrote on this machine, for a server on loopback.
    pub(crate) trust: Option<&'a Trust>,
    /// Local address to connect from; `None` lets the kernel choose.
    pub(crate) bind_addr: Option<IpAddr>,
}

/// What arrived.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// One server frame's bytes.
    Frame(Bytes),
    /// The server closed, with its code and reason.
    Closed { code: u16, reason: String },
}

/// An open connection of either kind.
pub(crate) enum Wire {
    WebSocket(Box<Ws>),
    Quic(Box<QuicWire>),
}

pub(crate) struct QuicWire {
    /// Kept so the endpoint outlives the connection it drives.
    _endpoint: Endpoint,
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    /// Bytes of a frame still arriving.
    partial: BytesMut,
}

impl Wire {
    /// Connects to `url` as `dial` says (source address, trust).
    pub(crate) async fn open(url: &str, dial: Dial<'_>) -> Result<Self, ClientError> {
        match Transport::of(url)? {
            Transport::Ws => Ok(Self::WebSocket(Box::new(
                open_ws(url, dial.bind_addr).await?,
            ))),
            Transport::Quic => Ok(Self::Quic(Box::new(open_quic(url, dial).await?))),
        }
    }

    /// Writes `frames` (emptying it) and flushes once.
    pub(crate) async fn send(&mut self, frames: &mut Vec<Bytes>) -> Result<(), ClientError> {
        match self {
            Self::WebSocket(ws) => {
                for frame in frames.drain(..) {
                    ws.feed(Message::Binary(frame)).await?;
                }
                Ok(ws.flush().await?)
            }
            Self::Quic(quic) => {
                let len = frames.iter().map(|f| length::PREFIX_LEN + f.len()).sum();
                let mut out = BytesMut::with_capacity(len);
                for frame in frames.drain(..) {
                    length::encode(&frame, MAX_CLIENT_FRAME, &mut out)
                        .map_err(|_| ClientError::FrameTooLarge(frame.len()))?;
                }
                quic.send
                    .write_all(&out)
                    .await
                    .map_err(|e| ClientError::Quic(e.to_string()))
            }
        }
    }

    /// The next frame, or why there is none. Cancel-safe: nothing is lost
    /// if the future is dropped before it completes.
    pub(crate) async fn next(&mut self) -> Result<Incoming, CloseReason> {
        match self {
            Self::WebSocket(ws) => next_ws(ws).await,
            Self::Quic(quic) => quic.next().await,
        }
    }

    /// Closes with `code` and `reason`, waiting briefly for the server.
    pub(crate) async fn close(&mut self, code: u16, reason: &'static str) {
        match self {
            Self::WebSocket(ws) => close_ws(ws, CloseCode::from(code), reason).await,
            Self::Quic(quic) => quic.connection.close(VarInt::from(code), reason.as_bytes()),
        }
    }
}

async fn next_ws(ws: &mut Ws) -> Result<Incoming, CloseReason> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => return Ok(Incoming::Frame(bytes)),
            Some(Ok(Message::Text(_))) => {
                close_ws(ws, CloseCode::Unsupported, "text frames are not used").await;
                return Err(CloseReason::Protocol("text frame".into()));
            }
            Some(Ok(Message::Close(frame))) => {
                // Sends the close reply tungstenite queued.
                let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
                let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                    (frame.code.into(), frame.reason.to_string())
                });
                return Ok(Incoming::Closed { code, reason });
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(CloseReason::Io(error.to_string())),
            None => return Err(CloseReason::Io("connection ended".into())),
        }
    }
}

impl QuicWire {
    async fn next(&mut self) -> Result<Incoming, CloseReason> {
        loop {
            match length::split_frame(&mut self.partial, MAX_SERVER_FRAME) {
                Ok(Some(frame)) => {
                    if self.partial.is_empty() {
                        // An idle connection keeps no buffer.
                        self.partial = BytesMut::new();
                    }
                    return Ok(Incoming::Frame(frame));
                }
                Ok(None) => {}
                Err(error) => {
                    self.connection.close(
                        VarInt::from(close_code::MESSAGE_TOO_BIG),
                        b"frame over the client's limit",
                    );
                    return Err(CloseReason::Protocol(error.to_string()));
                }
            }
            match self.recv.read_chunk(QUIC_READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.partial.extend_from_slice(&chunk.bytes),
                // The server finished the stream: its close follows.
                Ok(None) => {
                    let closed = tokio::time::timeout(CLOSE_GRACE, self.connection.closed()).await;
                    return match closed {
                        Ok(error) => closed_by(error),
                        Err(_) => Err(CloseReason::Io("stream ended".into())),
                    };
                }
                Err(ReadError::ConnectionLost(error)) => return closed_by(error),
                Err(error) => return Err(CloseReason::Io(error.to_string())),
            }
        }
    }
}

/// The server's close, or the failure that ended the connection.
fn closed_by(error: ConnectionError) -> Result<Incoming, CloseReason> {
    match error {
        ConnectionError::ApplicationClosed(close) => Ok(Incoming::Closed {
            code: u16::try_from(close.error_code.into_inner()).unwrap_or(u16::MAX),
            reason: String::from_utf8_lossy(&close.reason).into_owned(),
        }),
        ConnectionError::TimedOut => Err(CloseReason::ServerSilent),
        other => Err(CloseReason::Io(other.to_string())),
    }
}

/// A QUIC connection to `url` with its session stream open.
async fn open_quic(url: &str, dial: Dial<'_>) -> Result<QuicWire, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url.strip_prefix("quic://").unwrap_or(url);
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return Err(invalid("a quic url has no path: quic://host:port"));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| invalid("expected quic://host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let trust = match dial.trust {
        Some(trust) => trust.clone(),
        None => default_trust(host)?,
    };
    let client = quic::client_config(&trust, quic::ALPN, QUIC_IDLE)?;
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let local = match (dial.bind_addr, addr) {
            (Some(ip), _) => ip,
            (None, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (None, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let mut endpoint = Endpoint::client(SocketAddr::new(local, 0))?;
        endpoint.set_default_client_config(client.clone());
        let connected = async {
            let connecting = endpoint
                .connect(addr, host)
                .map_err(|e| ClientError::Quic(e.to_string()))?;
            let connection = connecting.await.map_err(quic_failure)?;
            let (send, recv) = connection.open_bi().await.map_err(quic_failure)?;
            Ok::<_, ClientError>((connection, send, recv))
        };
        match connected.await {
            Ok((connection, send, recv)) => {
                return Ok(QuicWire {
                    _endpoint: endpoint,
                    connection,
                    send,
                    recv,
                    partial: BytesMut::new(),
                });
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")).into()
    }))
}

/// With no trust given: the certificate the embedded server wrote, if the
/// server is on this machine and the file is there. Never trust-all.
fn default_trust(host: &str) -> Result<Trust, ClientError> {
    let local = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let file = quic::default_cert_file();
    if local && file.exists() {
        return Ok(Trust::CertFile(file));
    }
    Err(ClientError::NoTrust)
}

fn quic_failure(error: ConnectionError) -> ClientError {
    match error {
        ConnectionError::ApplicationClosed(close) => ClientError::Quic(format!(
            "closed by the server ({}): {}",
            close.error_code,
            String::from_utf8_lossy(&close.reason)
        )),
        other => ClientError::Quic(other.to_string()),
    }
}

/// A TCP connection to `url`'s host (from `bind` if given) and the
/// WebSocket handshake over it, with buffers sized for chat frames.
pub(crate) async fn open_ws(url: &str, bind: Option<IpAddr>) -> Result<Ws, ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let request = url
        .into_client_request()
        .map_err(|e| invalid(e.to_string()))?;
    if request.uri().scheme_str() != Some("ws") {
        return Err(invalid("the scheme must be ws".into()));
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| invalid("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host.as_str(), port)).await? {
        match connect_tcp(addr, bind).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let (ws, _response) =
                    tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                        .await?;
                return Ok(ws);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))
        .into())
}

async fn connect_tcp(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// Sends a close frame and waits briefly for the server's.
async fn close_ws(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Room for the batch being written plus one largest frame; a bound,
        // not an allocation.
        .max_write_buffer_size(WRITE_BUFFER + 2 * MAX_CLIENT_FRAME)
        .max_message_size(Some(MAX_SERVER_FRAME))
        .max_frame_size(Some(MAX_SERVER_FRAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_the_transport() {
        assert_eq!(
            Transport::of("ws://127.0.0.1:7400/ws").unwrap(),
            Transport::Ws
        );
        assert_eq!(
            Transport::of("quic://127.0.0.1:7402").unwrap(),
            Transport::Quic
        );
        for transport in [Transport::Ws, Transport::Quic] {
            assert_eq!(Transport::of(transport.default_url()).unwrap(), transport);
        }
        for (url, why) in [
            ("wss://127.0.0.1:7400/ws", "TLS"),
            ("http://127.0.0.1:7400/ws", "scheme"),
            ("not a url", "scheme"),
        ] {
            match Transport::of(url) {
                Err(ClientError::InvalidUrl { url: got, reason }) => {
                    assert_eq!(got, url);
                    assert!(reason.contains(why), "{url}: {reason}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn transports_parse_from_their_names() {
        for transport in Transport::ALL {
            assert_eq!(transport.name().parse::<Transport>(), Ok(transport));
            assert_eq!(transport.to_string(), transport.name());
        }
        assert_eq!(
            "wss".parse::<Transport>(),
            Err(UnknownTransport("wss".into()))
        );
        assert_eq!(Transport::default(), Transport::Ws);
    }

    #[tokio::test]
    async fn quic_urls_need_host_and_port_and_no_path() {
        let trust = Trust::Fingerprint(quic::Fingerprint([0; 32]));
        let dial = Dial {
            trust: Some(&trust),
            bind_addr: None,
        };
        for url in [
            "quic://127.0.0.1",
            "quic://127.0.0.1:7402/ws",
            "quic://:7402",
        ] {
            assert!(
                matches!(
                    open_quic(url, dial).await,
                    Err(ClientError::InvalidUrl { .. })
                ),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn quic_without_trust_refuses_a_remote_server() {
        assert!(matches!(
            open_quic("quic://192.0.2.1:7402", Dial::default()).await,
            Err(ClientError::NoTrust)
        ));
    }

    #[test]
    fn websocket_buffers_are_small_and_limits_set() {
        let config = ws_config();
        assert_eq!(config.read_buffer_size, READ_BUFFER);
        assert_eq!(config.max_message_size, Some(MAX_SERVER_FRAME));
        assert_eq!(config.max_frame_size, Some(MAX_SERVER_FRAME));
        assert!(config.max_write_buffer_size > config.write_buffer_size + MAX_CLIENT_FRAME);
    }
}
