//! Shared by the integration tests: an embedded server on port 0 and a raw
//! WebSocket client that can send any bytes.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use chatroom_cluster::auth::{Roles, TokenKey};
use chatroom_proto::Message;
use chatroom_proto::v1::{ClientFrame, ServerFrame, client_frame};
use futures_util::{SinkExt, StreamExt};
use msg_svc::Listeners;
use msg_svc::standalone::{Standalone, StandaloneConfig};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const SECRET: &[u8] = b"integration-test-secret-0123456789";

pub struct TestServer {
    pub server: Standalone,
    pub tokens: TokenKey,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut StandaloneConfig)) -> Self {
        let mut config = StandaloneConfig {
            drain_grace: Duration::from_secs(2),
            ..StandaloneConfig::default()
        };
        tweak(&mut config);
        let listeners = Listeners {
            ws: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let server = Standalone::start(config, TokenKey::new(SECRET).unwrap(), listeners).unwrap();
        Self {
            server,
            tokens: TokenKey::new(SECRET).unwrap(),
        }
    }

    pub fn url(&self) -> String {
        self.server.ws_url()
    }

    pub fn token(&self, user: &str) -> String {
        self.tokens
            .mint(user, Roles::default(), Duration::from_secs(600))
            .unwrap()
    }

    pub fn token_with(&self, user: &str, roles: Roles) -> String {
        self.tokens
            .mint(user, roles, Duration::from_secs(600))
            .unwrap()
    }
}

/// A WebSocket client speaking raw frames: for bad input and protocol edges.
pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    next_request: u64,
}

/// What the raw client saw next.
#[derive(Debug)]
pub enum Seen {
    Frame(ServerFrame),
    Closed { code: u16, reason: String },
    Ended,
}

impl RawClient {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            ws,
            next_request: 1,
        }
    }

    /// Connects and authenticates as `user`; returns the ConnectAck frame.
    pub async fn login(server: &TestServer, user: &str) -> (Self, ServerFrame) {
        let mut client = Self::connect(&server.url()).await;
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

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws.send(WsMessage::Binary(bytes.into())).await.unwrap();
    }

    pub async fn send_ws(&mut self, message: WsMessage) {
        self.ws.send(message).await.unwrap();
    }

    /// The next thing the server did.
    pub async fn next(&mut self) -> Seen {
        loop {
            let item = tokio::time::timeout(PATIENCE, self.ws.next())
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
    pub async fn start(server: &TestServer) -> Self {
        let (mut alice, _) = RawClient::login(server, "bystander-alice").await;
        let (mut bob, _) = RawClient::login(server, "bystander-bob").await;
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
