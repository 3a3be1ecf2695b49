//! Shared by the integration tests: an embedded server on port 0 serving
//! WebSocket and QUIC, a raw client of either transport that can send any
//! bytes, and [`over_both!`](crate::over_both) to run a test over each.

#![allow(dead_code, unreachable_pub, unused_imports, unused_macros)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use chatroom_client::ClientConfig;
use chatroom_cluster::auth::{Roles, TokenKey};
use chatroom_cluster::quic::{self, Fingerprint, TlsIdentity, Trust};
use chatroom_embedded::{Embedded, EmbeddedConfig};
use chatroom_proto::Message;
use chatroom_proto::framing::length;
use chatroom_proto::v1::{ClientFrame, ServerFrame, client_frame};
use futures_util::{SinkExt, StreamExt};
use msg_svc::{Listeners, QuicListener};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Runs each named `async fn name(transport: Transport)` once over
/// WebSocket and once over QUIC, as tests `name::ws` and `name::quic`.
macro_rules! over_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn ws() {
                super::$name(super::support::Transport::Ws).await
            }
            #[tokio::test]
            async fn quic() {
                super::$name(super::support::Transport::Quic).await
            }
        }
    )*};
}
pub(crate) use over_both;

/// How a test's clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Quic,
}

/// The longest any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const SECRET: &[u8] = b"integration-test-secret-0123456789";

pub struct TestServer {
    pub server: Embedded,
    pub tokens: TokenKey,
    /// Of the self-signed certificate the server's QUIC presents.
    pub fingerprint: Fingerprint,
    /// That certificate, PEM.
    pub cert_pem: String,
    /// How the test's clients connect unless they say otherwise.
    pub transport: Transport,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut EmbeddedConfig)) -> Self {
        Self::start_over_with(Transport::Ws, tweak).await
    }

    /// A server whose clients connect over `transport` by default.
    pub async fn start_over(transport: Transport) -> Self {
        Self::start_over_with(transport, |_| {}).await
    }

    pub async fn start_over_with(
        transport: Transport,
        tweak: impl FnOnce(&mut EmbeddedConfig),
    ) -> Self {
        let mut config = EmbeddedConfig {
            drain_grace: Duration::from_secs(2),
            ..EmbeddedConfig::default()
        };
        tweak(&mut config);
        let identity = TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let fingerprint = identity.fingerprint();
        let cert_pem = identity.cert_pem();
        let listeners = Listeners {
            ws: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            quic: Some(QuicListener::bind("127.0.0.1:0".parse().unwrap(), identity).unwrap()),
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let server = Embedded::start(config, TokenKey::new(SECRET).unwrap(), listeners).unwrap();
        Self {
            server,
            tokens: TokenKey::new(SECRET).unwrap(),
            fingerprint,
            cert_pem,
            transport,
        }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        self.server.ws_url()
    }

    pub fn url_over(&self, transport: Transport) -> String {
        match transport {
            Transport::Ws => self.server.ws_url(),
            Transport::Quic => self.server.quic_url().expect("quic is served"),
        }
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.server.quic_addr().expect("quic is served")
    }

    /// What a client trusts this server's QUIC certificate by.
    pub fn trust(&self) -> Trust {
        Trust::Fingerprint(self.fingerprint)
    }

    /// A client library configuration for `transport`.
    pub fn client_config(&self, transport: Transport, token: String) -> ClientConfig {
        ClientConfig {
            trust: Some(self.trust()),
            ..ClientConfig::new(self.url_over(transport), token)
        }
    }

    pub fn token(&self, user: &str) -> String {
        self.tokens
            .mint(user, Roles::default(), Duration::from_secs(600))
            .unwrap()
    }

    /// Sets a room's settings through the in-process admin API.
    pub async fn configure(
        &self,
        room: &str,
        tweak: impl FnOnce(&mut chatroom_proto::cluster::v1::RoomConfig),
    ) {
        let rooms = self.server.rooms();
        let mut config = rooms.room_config(room).await.expect("room settings").config;
        tweak(&mut config);
        let patch = room_svc::core::ConfigPatch::from_config(&config);
        rooms
            .configure_room(room, room_svc::ConfigChange::Patch(patch))
            .await
            .expect("valid room config");
    }

    pub fn token_with(&self, user: &str, roles: Roles) -> String {
        self.tokens
            .mint(user, roles, Duration::from_secs(600))
            .unwrap()
    }
}

/// A client speaking raw frames over either transport: for bad input and
/// protocol edges.
pub struct RawClient {
    wire: RawWire,
    next_request: u64,
}

enum RawWire {
    Ws(Box<WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>>),
    Quic(RawQuic),
}

/// A QUIC connection with its session stream, parts open for tests.
pub struct RawQuic {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    partial: BytesMut,
    /// The server's close, once seen.
    closed: bool,
}

impl RawQuic {
    /// Connects to `addr` offering `alpn`, trusting as `trust` says, and
    /// opens the session stream.
    pub async fn connect(
        addr: SocketAddr,
        trust: &Trust,
        alpn: &[u8],
    ) -> Result<Self, quinn::ConnectionError> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(
            quic::client_config(trust, alpn, Duration::from_secs(30)).unwrap(),
        );
        let connection = endpoint.connect(addr, "localhost").unwrap().await?;
        let (send, recv) = connection.open_bi().await?;
        Ok(Self {
            endpoint,
            connection,
            send,
            recv,
            partial: BytesMut::new(),
            closed: false,
        })
    }

    async fn next(&mut self) -> Seen {
        if self.closed {
            return Seen::Ended;
        }
        loop {
            if let Some(frame) = length::split_frame(&mut self.partial, 1 << 20).unwrap() {
                return Seen::Frame(ServerFrame::decode(frame).expect("server frame decodes"));
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.partial.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    self.closed = true;
                    return close_of(self.connection.closed().await);
                }
                Err(quinn::ReadError::ConnectionLost(error)) => {
                    self.closed = true;
                    return close_of(error);
                }
                Err(_) => return Seen::Ended,
            }
        }
    }
}

fn close_of(error: quinn::ConnectionError) -> Seen {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Seen::Closed {
            code: close.error_code.into_inner() as u16,
            reason: String::from_utf8_lossy(&close.reason).into_owned(),
        },
        _ => Seen::Ended,
    }
}

/// What the raw client saw next.
#[derive(Debug)]
pub enum Seen {
    Frame(ServerFrame),
    Closed { code: u16, reason: String },
    Ended,
}

impl RawClient {
    /// A WebSocket connection to `url`.
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            wire: RawWire::Ws(Box::new(ws)),
            next_request: 1,
        }
    }

    /// A connection to `server` over `transport`.
    pub async fn connect_over(server: &TestServer, transport: Transport) -> Self {
        match transport {
            Transport::Ws => Self::connect(&server.url()).await,
            Transport::Quic => Self::from_quic(
                RawQuic::connect(server.quic_addr(), &server.trust(), quic::ALPN)
                    .await
                    .unwrap(),
            ),
        }
    }

    pub fn from_quic(quic: RawQuic) -> Self {
        Self {
            wire: RawWire::Quic(quic),
            next_request: 1,
        }
    }

    /// The QUIC parts, for a QUIC client.
    pub fn quic(&mut self) -> &mut RawQuic {
        match &mut self.wire {
            RawWire::Quic(quic) => quic,
            RawWire::Ws(_) => panic!("not a quic client"),
        }
    }

    /// Connects over the server's default transport and authenticates as
    /// `user`; returns the ConnectAck frame.
    pub async fn login(server: &TestServer, user: &str) -> (Self, ServerFrame) {
        Self::login_over(server, server.transport, user).await
    }

    /// Connects over `transport` and authenticates as `user`.
    pub async fn login_over(
        server: &TestServer,
        transport: Transport,
        user: &str,
    ) -> (Self, ServerFrame) {
        let mut client = Self::connect_over(server, transport).await;
        let token = server.token(user);
        client
            .request(client_frame::Body::Connect(chatroom_proto::v1::Connect {
                token,
                device_id: String::new(),
            }))
            .await;
        let ack = client.frame().await;
        (client, ack)
    }

    /// Sends a request with a fresh id; returns the id.
    pub async fn request(&mut self, body: client_frame::Body) -> u64 {
        let request_id = self.next_request;
        self.next_request += 1;
        let frame = ClientFrame {
            request_id,
            body: Some(body),
        };
        self.send_bytes(frame.encode_to_vec()).await;
        request_id
    }

    /// Sends `bytes` as one frame: a binary message, or after a length
    /// prefix over QUIC.
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        match &mut self.wire {
            RawWire::Ws(ws) => ws.send(WsMessage::Binary(bytes.into())).await.unwrap(),
            RawWire::Quic(quic) => {
                let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                quic.send.write_all(&framed).await.unwrap();
            }
        }
    }

    /// Writes bytes as they are: over QUIC, to the stream with no prefix.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.quic().send.write_all(bytes).await.unwrap();
    }

    pub async fn send_ws(&mut self, message: WsMessage) {
        match &mut self.wire {
            RawWire::Ws(ws) => ws.send(message).await.unwrap(),
            RawWire::Quic(_) => panic!("not a websocket client"),
        }
    }

    /// The next thing the server did.
    pub async fn next(&mut self) -> Seen {
        let ws = match &mut self.wire {
            RawWire::Ws(ws) => ws,
            RawWire::Quic(quic) => {
                return tokio::time::timeout(PATIENCE, quic.next())
                    .await
                    .expect("server answered in time");
            }
        };
        loop {
            let item = tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("server answered in time");
            match item {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    return Seen::Frame(ServerFrame::decode(bytes).expect("server frame decodes"));
                }
                Some(Ok(WsMessage::Close(close))) => {
                    return match close {
                        Some(close) => Seen::Closed {
                            code: close.code.into(),
                            reason: close.reason.to_string(),
                        },
                        None => Seen::Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                    };
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected websocket message {other:?}"),
                Some(Err(_)) | None => return Seen::Ended,
            }
        }
    }

    /// The next frame; panics on anything else.
    pub async fn frame(&mut self) -> ServerFrame {
        match self.next().await {
            Seen::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

impl RawClient {
    /// Joins `room` without a cursor; returns the JoinAck.
    pub async fn join(&mut self, room: &str) -> chatroom_proto::v1::JoinAck {
        let id = self
            .request(client_frame::Body::Join(chatroom_proto::v1::Join {
                room_id: room.into(),
                since: None,
                backfill: 0,
            }))
            .await;
        match self.reply(id).await {
            chatroom_proto::v1::server_frame::Body::JoinAck(ack) => ack,
            other => panic!("expected JoinAck, got {other:?}"),
        }
    }

    /// Sends a chat message; returns the server's answer to it.
    pub async fn say(
        &mut self,
        room: &str,
        client_msg_id: u64,
        text: &str,
    ) -> chatroom_proto::v1::server_frame::Body {
        let id = self
            .request(client_frame::Body::Send(chatroom_proto::v1::Send {
                room_id: room.into(),
                client_msg_id,
                kind: 0,
                payload: text.as_bytes().to_vec().into(),
            }))
            .await;
        self.reply(id).await
    }

    /// The body of the frame answering `request_id`, skipping pushes.
    pub async fn reply(&mut self, request_id: u64) -> chatroom_proto::v1::server_frame::Body {
        loop {
            let frame = self.frame().await;
            if frame.request_id == request_id {
                return frame.body.expect("reply has a body");
            }
            assert_eq!(frame.request_id, 0, "a reply to another request: {frame:?}");
        }
    }

    /// The messages of the next inline delta for `room`.
    pub async fn delta(&mut self, room: &str) -> Vec<chatroom_proto::v1::ChatMessage> {
        loop {
            let frame = self.frame().await;
            if let Some(chatroom_proto::v1::server_frame::Body::Notify(notify)) = frame.body
                && notify.room_id == room
                && let Some(delta) = notify.delta
            {
                return delta.messages;
            }
        }
    }
}

/// Two well-behaved clients in a room of their own, to show that bad input
/// elsewhere costs them nothing.
pub struct Bystanders {
    alice: RawClient,
    bob: RawClient,
    sent: u64,
}

impl Bystanders {
    /// Alice over WebSocket, Bob over QUIC.
    pub async fn start(server: &TestServer) -> Self {
        let (mut alice, _) = RawClient::login(server, "bystander-alice").await;
        let (mut bob, _) = RawClient::login_over(server, Transport::Quic, "bystander-bob").await;
        alice.join("calm").await;
        bob.join("calm").await;
        let mut pair = Self {
            alice,
            bob,
            sent: 0,
        };
        pair.chat().await;
        pair
    }

    /// Alice says something; Bob gets exactly it.
    pub async fn chat(&mut self) {
        self.sent += 1;
        let text = format!("message {}", self.sent);
        let answer = self.alice.say("calm", self.sent, &text).await;
        assert!(
            matches!(answer, chatroom_proto::v1::server_frame::Body::SendAck(_)),
            "bystander send failed: {answer:?}"
        );
        let got = self.bob.delta("calm").await;
        let texts: Vec<_> = got
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        assert_eq!(texts, [text], "bystander lost or gained messages");
    }
}

/// The whole answer (head and body) to `GET path` at `addr`, over one
/// HTTP/1.1 connection the server closes.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
