//! Bad input of every kind gets a typed error, or a close with a reason when
//! the connection cannot go on, and costs every other session nothing. What
//! both transports carry is tested over each; what is one transport's own
//! (WebSocket framing, TLS and streams of QUIC) over that one.

mod support;

use std::time::Duration;

use chatroom_cluster::auth::Roles;
use chatroom_proto::Message;
use chatroom_proto::v1::{
    ClientFrame, Connect, ErrorCode, Join, KickReason, Pull, Send, ServerFrame, client_frame,
    server_frame,
};
use support::{Bystanders, RawClient, Seen, TestServer, Transport, over_both};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn error_of(body: &server_frame::Body) -> (ErrorCode, String) {
    match body {
        server_frame::Body::Error(e) => (ErrorCode::try_from(e.code).unwrap(), e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn frame_error(frame: &ServerFrame) -> (ErrorCode, String) {
    error_of(frame.body.as_ref().expect("frame has a body"))
}

async fn expect_close(client: &mut RawClient, code: u16) -> String {
    loop {
        match client.next().await {
            Seen::Closed { code: got, reason } => {
                assert_eq!(got, code, "close reason: {reason}");
                return reason;
            }
            Seen::Frame(_) => {}
            Seen::Ended => panic!("connection ended without a close frame"),
        }
    }
}

async fn oversized_frame_is_refused_with_an_error_and_a_close(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "big").await;
    client.send_bytes(vec![0u8; 70 * 1024]).await;
    let (code, message) = frame_error(&client.frame().await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("exceeds the limit of 65536"), "{message}");
    expect_close(&mut client, 1009).await;
    calm.chat().await;
}

async fn undecodable_bytes_get_bad_request_then_a_close_when_repeated(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "garbler").await;
    let bad_frame = async |client: &mut RawClient| {
        client.send_bytes(vec![0xff; 16]).await;
        let (code, message) = frame_error(&client.frame().await);
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.starts_with("undecodable frame"), "{message}");
    };
    // One bad frame is answered and the session goes on.
    bad_frame(&mut client).await;
    client.join("still-here").await;
    // Three in a row end it.
    for _ in 0..3 {
        bad_frame(&mut client).await;
    }
    let kicked = client.frame().await;
    match kicked.body {
        Some(server_frame::Body::Kicked(k)) => assert_eq!(k.reason, KickReason::Protocol as i32),
        other => panic!("expected Kicked, got {other:?}"),
    }
    expect_close(&mut client, 1008).await;
    calm.chat().await;
}

async fn unknown_frame_type_gets_bad_request_with_its_request_id(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "future").await;
    // request_id 42 and a field (99) this server does not know.
    let mut bytes = ClientFrame {
        request_id: 42,
        body: None,
    }
    .encode_to_vec();
    bytes.extend_from_slice(&[0x9a, 0x06, 0x00]);
    client.send_bytes(bytes).await;
    let frame = client.frame().await;
    assert_eq!(frame.request_id, 42);
    assert_eq!(
        frame_error(&frame),
        (ErrorCode::BadRequest, "unknown frame".into())
    );
    client.join("after-unknown").await;
    calm.chat().await;
}

#[tokio::test]
async fn text_frames_are_refused_but_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "texter").await;
    client.send_ws(WsMessage::Text("hello".into())).await;
    let (code, message) = frame_error(&client.frame().await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(
        message.contains("text frames are not accepted"),
        "{message}"
    );
    client.join("after-text").await;
    calm.chat().await;
}

async fn ids_outside_the_grammar_are_bad_requests(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "namer").await;
    let long = "r".repeat(129);
    for room in ["has space", "", "slash/room", "caf\u{e9}", long.as_str()] {
        let id = client
            .request(client_frame::Body::Join(Join {
                room_id: room.into(),
                since: None,
                backfill: 0,
            }))
            .await;
        let body = client.reply(id).await;
        let (code, message) = error_of(&body);
        assert_eq!(code, ErrorCode::BadRequest, "room {room:?}");
        assert!(message.starts_with("room id"), "{message}");
    }
    // A token whose user id breaks the grammar is refused at Connect.
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let claims = serde_json::json!({ "sub": "bad user", "exp": u64::MAX / 2 });
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(support::SECRET),
    )
    .unwrap();
    let mut bad = RawClient::connect_over(&server, transport).await;
    bad.request(client_frame::Body::Connect(Connect {
        token,
        device_id: String::new(),
    }))
    .await;
    let (code, message) = frame_error(&bad.frame().await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(message.contains("user id"), "{message}");
    expect_close(&mut bad, 1008).await;
    // So is a device id that breaks it.
    let mut device = RawClient::connect_over(&server, transport).await;
    let id = device
        .request(client_frame::Body::Connect(Connect {
            token: server.token("dev"),
            device_id: "phone 1".into(),
        }))
        .await;
    assert_eq!(error_of(&device.reply(id).await).0, ErrorCode::BadRequest);
    calm.chat().await;
}

async fn payload_over_the_room_max_is_too_large(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "talker").await;
    client.join("lobby").await;
    let big = "x".repeat(4097);
    let body = client.say("lobby", 1, &big).await;
    let (code, message) = error_of(&body);
    assert_eq!(code, ErrorCode::PayloadTooLarge);
    assert!(message.contains("4097"), "{message}");
    // At the limit it is accepted.
    let body = client.say("lobby", 2, &"x".repeat(4096)).await;
    assert!(matches!(body, server_frame::Body::SendAck(_)), "{body:?}");
    calm.chat().await;
}

async fn send_and_pull_before_join_are_not_joined(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "eager").await;
    let body = client.say("lobby", 1, "hi").await;
    assert_eq!(error_of(&body).0, ErrorCode::NotJoined);
    let id = client
        .request(client_frame::Body::Pull(Pull {
            room_id: "lobby".into(),
            since: Some(Default::default()),
            limit: 10,
        }))
        .await;
    assert_eq!(error_of(&client.reply(id).await).0, ErrorCode::NotJoined);
    calm.chat().await;
}

async fn requests_before_connect_are_unauthenticated(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let mut client = RawClient::connect_over(&server, transport).await;
    let id = client
        .request(client_frame::Body::Send(Send {
            room_id: "lobby".into(),
            client_msg_id: 1,
            kind: 0,
            payload: Default::default(),
        }))
        .await;
    let body = client.reply(id).await;
    assert_eq!(
        error_of(&body),
        (ErrorCode::Unauthenticated, "connect first".into())
    );
    calm.chat().await;
}

async fn bad_expired_unsigned_and_alg_none_tokens_are_refused(transport: Transport) {
    let server = TestServer::start_over(transport).await;
    let mut calm = Bystanders::start(&server).await;
    let b64 = |json: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    };
    let body = b64(r#"{"sub":"mallory","exp":4102444800}"#);
    let expired = {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let claims = serde_json::json!({ "sub": "mallory", "exp": 1_000_000 });
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(support::SECRET),
        )
        .unwrap()
    };
    let foreign = chatroom_cluster::auth::TokenKey::new(b"some-other-secret-entirely!!")
        .unwrap()
        .mint("mallory", Roles::default(), Duration::from_secs(60))
        .unwrap();
    let cases = [
        ("garbage", "not.a.token".to_owned(), "malformed"),
        ("wrong secret", foreign, "signature"),
        ("expired", expired, "expired"),
        (
            "unsigned",
            format!("{}.{body}", b64(r#"{"alg":"HS256"}"#)),
            "malformed",
        ),
        (
            "alg none",
            format!("{}.{body}.", b64(r#"{"alg":"none"}"#)),
            "not HS256",
        ),
    ];
    for (what, token, expect) in cases {
        let mut client = RawClient::connect_over(&server, transport).await;
        client
            .request(client_frame::Body::Connect(Connect {
                token,
                device_id: String::new(),
            }))
            .await;
        let frame = client.frame().await;
        let (code, message) = frame_error(&frame);
        assert_eq!(code, ErrorCode::Unauthenticated, "{what}");
        assert!(message.contains(expect), "{what}: {message}");
        let reason = expect_close(&mut client, 1008).await;
        assert!(reason.contains("invalid token"), "{what}: {reason}");
    }
    calm.chat().await;
}

async fn too_many_rooms_per_session_is_refused(transport: Transport) {
    let server = TestServer::start_over_with(transport, |c| c.node.max_rooms_per_session = 2).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "roamer").await;
    client.join("one").await;
    client.join("two").await;
    let id = client
        .request(client_frame::Body::Join(Join {
            room_id: "three".into(),
            since: None,
            backfill: 0,
        }))
        .await;
    let body = client.reply(id).await;
    let (code, message) = error_of(&body);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("at most 2 rooms"), "{message}");
    // Joining a room it is already in is not a new room.
    client.join("two").await;
    calm.chat().await;
}

#[tokio::test]
async fn protocol_violations_below_the_chat_protocol_close_with_a_reason() {
    let server = TestServer::start().await;
    let mut calm = Bystanders::start(&server).await;
    let addr = server.server.ws_addr();

    // Not an upgrade, and a wrong path.
    for (request, status) in [
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
        (
            "GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "404",
        ),
        ("\x16\x03\x01 garbage\r\n\r\n", "400"),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }

    // An unmasked client frame breaks RFC 6455: close 1002.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 0];
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    tcp.write_all(&[0x82, 0x02, 0x08, 0x01]).await.unwrap();
    let mut close = Vec::new();
    tcp.read_to_end(&mut close).await.unwrap();
    assert_eq!(close[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
    assert!(String::from_utf8_lossy(&close[4..]).contains("masked"));
    calm.chat().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_dropped() {
    let server = TestServer::start_with(|c| {
        c.node.max_outbound_bytes = 256 * 1024;
        // The writer fills the room as fast as it can.
        c.node.session_send_rate = msg_svc::Rate { per_s: 0, burst: 0 };
    })
    .await;
    let mut calm = Bystanders::start(&server).await;
    let rooms = server.server.rooms();
    let mut config = room_svc::core::default_room_config();
    config.normal_per_s = 100_000;
    config.normal_burst = 100_000;
    let patch = room_svc::core::ConfigPatch::from_config(&config);
    rooms
        .configure_room("firehose", room_svc::ConfigChange::Patch(patch))
        .await
        .unwrap();
    let (mut writer, _) = RawClient::login(&server, "writer").await;
    writer.join("firehose").await;
    let big = "x".repeat(4_000);
    for i in 0..200 {
        let body = writer.say("firehose", i + 1, &big).await;
        assert!(matches!(body, server_frame::Body::SendAck(_)), "{body:?}");
    }
    let (mut sloth, _) = RawClient::login(&server, "sloth").await;
    let epoch = sloth.join("firehose").await.latest.unwrap().epoch;
    // Ask for ~800 KB over and over without reading a byte of the answers.
    for _ in 0..40 {
        sloth
            .request(client_frame::Body::Pull(Pull {
                room_id: "firehose".into(),
                since: Some(chatroom_proto::v1::Cursor::start(epoch)),
                limit: 200,
            }))
            .await;
    }
    // The server lets go of it while it is still not reading (no event
    // exists for that, so watch the session count, with a deadline)...
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while server.server.session_count() > 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server kept a client that does not read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ...and reading now finds the end of the stream.
    while let Seen::Frame(_) = sloth.next().await {}
    assert_eq!(
        server.server.session_count(),
        3,
        "bystanders and the writer remain"
    );
    calm.chat().await;
}

over_both!(
    oversized_frame_is_refused_with_an_error_and_a_close,
    undecodable_bytes_get_bad_request_then_a_close_when_repeated,
    unknown_frame_type_gets_bad_request_with_its_request_id,
    ids_outside_the_grammar_are_bad_requests,
    payload_over_the_room_max_is_too_large,
    send_and_pull_before_join_are_not_joined,
    requests_before_connect_are_unauthenticated,
    bad_expired_unsigned_and_alg_none_tokens_are_refused,
    too_many_rooms_per_session_is_refused,
);
