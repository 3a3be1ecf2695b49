//! What is QUIC's own: the handshake (protocol version by ALPN, the
//! server's certificate), one stream per session, frame limits read from
//! the length prefix, the connection limit, and a client that changes
//! address mid-session. Everything both transports carry is in `flows` and
//! `bad_input`, run over each.

mod support;

use chatroom_client::{Client, ClientConfig, ClientError};
use chatroom_cluster::quic::{self, Fingerprint, TlsIdentity, Trust};
use chatroom_proto::v1::{ErrorCode, Ping, client_frame, server_frame};
use support::{Bystanders, PATIENCE, RawClient, RawQuic, Seen, TestServer, Transport};

async fn expect_close(client: &mut RawClient) -> (u16, String) {
    loop {
        match client.next().await {
            Seen::Closed { code, reason } => return (code, reason),
            Seen::Frame(_) => {}
            Seen::Ended => panic!("connection ended without a close code"),
        }
    }
}

#[tokio::test]
async fn a_client_offering_another_protocol_version_is_refused_at_the_handshake() {
    let server = TestServer::start().await;
    let mut calm = Bystanders::start(&server).await;
    let refused = RawQuic::connect(server.quic_addr(), &server.trust(), b"chatroom/0").await;
    let error = refused.err().expect("the handshake fails").to_string();
    assert!(
        error.contains("120"),
        "no_application_protocol alert: {error}"
    );
    let current = RawQuic::connect(server.quic_addr(), &server.trust(), quic::ALPN).await;
    assert!(current.is_ok(), "the current version is served");
    calm.chat().await;
}

#[tokio::test]
async fn the_client_trusts_the_certificate_by_file_or_fingerprint_and_nothing_else() {
    let server = TestServer::start_over(Transport::Quic).await;
    let dir = tempfile::tempdir().unwrap();
    let connect = async |trust: Trust| {
        let config = ClientConfig {
            trust: Some(trust),
            ..ClientConfig::new(server.url_over(Transport::Quic), server.token("careful"))
        };
        Client::connect(config).await
    };

    let pinned = connect(Trust::Fingerprint(server.fingerprint)).await;
    assert!(pinned.is_ok(), "{:?}", pinned.err());
    let ours = dir.path().join("server.pem");
    std::fs::write(&ours, &server.cert_pem).unwrap();
    let by_file = connect(Trust::CertFile(ours)).await;
    assert!(by_file.is_ok(), "{:?}", by_file.err());

    match connect(Trust::Fingerprint(Fingerprint([7; 32]))).await {
        Err(ClientError::Quic(message)) => {
            assert!(message.contains("fingerprint"), "{message}")
        }
        other => panic!("a wrong pin must fail the handshake: {other:?}"),
    }
    let stranger = dir.path().join("stranger.pem");
    TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .write_cert(&stranger)
        .unwrap();
    match connect(Trust::CertFile(stranger)).await {
        Err(ClientError::Quic(message)) => {
            assert!(message.contains("certificate"), "{message}")
        }
        other => panic!("a certificate nobody vouches for must fail: {other:?}"),
    }
    assert_eq!(
        server.server.session_count(),
        2,
        "only the trusting clients"
    );
}

#[tokio::test]
async fn a_second_bidirectional_stream_closes_the_session_with_a_reason() {
    let server = TestServer::start_over(Transport::Quic).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "greedy").await;
    client.join("streams").await;
    let (mut extra, _) = client.quic().connection.open_bi().await.unwrap();
    // A stream reaches the server with its first byte.
    extra.write_all(b"x").await.unwrap();
    let (code, reason) = expect_close(&mut client).await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("one stream per session"), "{reason}");
    // Closed only after its memberships were released.
    assert_eq!(server.server.session_count(), 2, "the bystanders remain");
    calm.chat().await;
}

#[tokio::test]
async fn a_unidirectional_stream_closes_the_session_with_a_reason() {
    let server = TestServer::start_over(Transport::Quic).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "sideways").await;
    let mut extra = client.quic().connection.open_uni().await.unwrap();
    extra.write_all(b"x").await.unwrap();
    let (code, reason) = expect_close(&mut client).await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("one stream per session"), "{reason}");
    calm.chat().await;
}

#[tokio::test]
async fn an_oversized_length_prefix_is_refused_before_its_body_is_sent() {
    let server = TestServer::start_over(Transport::Quic).await;
    let mut calm = Bystanders::start(&server).await;
    let (mut client, _) = RawClient::login(&server, "boaster").await;
    // Claims 16 MiB and sends none of it: the prefix alone is refused.
    client.send_raw(&(16u32 << 20).to_be_bytes()).await;
    let error = match client.frame().await.body {
        Some(server_frame::Body::Error(error)) => error,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(error.code, ErrorCode::BadRequest as i32);
    assert!(
        error.message.contains("16777216") && error.message.contains("65536"),
        "{}",
        error.message
    );
    let (code, _) = expect_close(&mut client).await;
    assert_eq!(code, 1009);
    calm.chat().await;
}

#[tokio::test]
async fn past_the_connection_limit_new_connections_are_refused() {
    let server = TestServer::start_over_with(Transport::Quic, |c| c.node.max_connections = 1).await;
    let (mut first, _) = RawClient::login(&server, "first").await;
    let refused = RawQuic::connect(server.quic_addr(), &server.trust(), quic::ALPN).await;
    let error = refused.err().expect("the second connection is refused");
    assert!(
        matches!(
            &error,
            quinn::ConnectionError::ConnectionClosed(close)
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
        ),
        "{error}"
    );
    // The first is served as before.
    first.join("alone").await;
    // WebSocket has the same limit, per transport: its first is let in, its
    // second is told to come back later.
    let (mut ws, _) = RawClient::login_over(&server, Transport::Ws, "ws-first").await;
    ws.join("alone").await;
    match tokio_tungstenite::connect_async(server.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
        }
        other => panic!("expected a 503, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_changes_address_keeps_its_session() {
    let server = TestServer::start_over(Transport::Quic).await;
    let (mut mover, _) = RawClient::login(&server, "mover").await;
    mover.join("train").await;
    let (mut talker, _) = RawClient::login(&server, "talker").await;
    talker.join("train").await;

    // The phone switches networks: a new socket, a new source port.
    let before = mover.quic().endpoint.local_addr().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    mover.quic().endpoint.rebind(socket).unwrap();
    let after = mover.quic().endpoint.local_addr().unwrap();
    assert_ne!(before.port(), after.port());

    // Requests and pushes both reach it on the new path.
    let id = mover.request(client_frame::Body::Ping(Ping {})).await;
    assert!(matches!(mover.reply(id).await, server_frame::Body::Pong(_)));
    let sent = talker.say("train", 1, "next stop").await;
    assert!(matches!(sent, server_frame::Body::SendAck(_)), "{sent:?}");
    let got = tokio::time::timeout(PATIENCE, mover.delta("train"))
        .await
        .expect("the delta arrives on the new path");
    assert_eq!(
        got.last().map(|m| m.payload.as_ref()),
        Some(&b"next stop"[..])
    );
    assert_eq!(server.server.session_count(), 2, "the same two sessions");
}
