//! Abuse limits over real sockets: per-address connection count and rate,
//! the browser Origin allow-list, and slow clients (a trickled handshake, a
//! frame left half-sent) being dropped within a bound.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatroom_cluster::serve::{HTTP_HEADER_TIMEOUT, MAX_HTTP_CONNECTIONS};
use chatroom_proto::Message;
use chatroom_proto::v1::{ClientFrame, Connect, ErrorCode, KickReason, client_frame, server_frame};
use msg_svc::{IpLimits, Rate};
use support::{RawClient, RawQuic, Seen, TestServer, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Loopback is exempt by default; these tests come from it, so they lift the
/// exemption.
fn strict(max_connections: usize, connect_rate: Rate) -> IpLimits {
    IpLimits {
        max_connections,
        connect_rate,
        exempt_loopback: false,
    }
}

const NO_RATE: Rate = Rate { per_s: 0, burst: 0 };

/// Sends an upgrade request with `extra` headers; returns the connection
/// and the response head.
async fn upgrade(addr: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("{UPGRADE}{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(support::PATIENCE, tcp.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (tcp, String::from_utf8(head).unwrap())
}

/// The value of `series` in the server's `/metrics`.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let mut tcp = TcpStream::connect(server.server.http_addr()).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Waits until `tcp` is closed by the server; returns how long that took.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + bound).into(), tcp.read(&mut sink)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after {bound:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_connections_per_address_are_capped_and_freed_on_close() {
    let server = TestServer::start_with(|c| c.node.ip_limits = strict(2, NO_RATE)).await;
    let addr = server.server.ws_addr();
    let (first, ok) = upgrade(addr, "").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    let (_second, ok) = upgrade(addr, "").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    let (_, refused) = upgrade(addr, "").await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("Retry-After: 1"), "{refused}");
    let counted = metric(
        &server,
        "chatroom_connections_refused_total{reason=\"address_count\"}",
    );
    assert_eq!(counted.await, 1.0);
    // Closing one frees its slot (once the server has let go of it).
    drop(first);
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let (_third, answer) = upgrade(addr, "").await;
        if answer.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn websocket_connect_rate_per_address_is_limited() {
    let rate = Rate { per_s: 1, burst: 3 };
    let server = TestServer::start_with(|c| c.node.ip_limits = strict(0, rate)).await;
    let addr = server.server.ws_addr();
    let mut open = Vec::new();
    for _ in 0..3 {
        let (tcp, ok) = upgrade(addr, "").await;
        assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
        open.push(tcp);
    }
    let (_, refused) = upgrade(addr, "").await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    // A token comes back after a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_, ok) = upgrade(addr, "").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
}

#[tokio::test]
async fn quic_connections_per_address_are_capped() {
    let server = TestServer::start_over_with(Transport::Quic, |c| {
        c.node.ip_limits = strict(1, NO_RATE);
    })
    .await;
    let (_first, ack) = RawClient::login(&server, "first").await;
    assert!(matches!(ack.body, Some(server_frame::Body::ConnectAck(_))));
    let refused = RawQuic::connect(
        server.quic_addr(),
        &server.trust(),
        chatroom_cluster::quic::ALPN,
    )
    .await;
    assert!(
        matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(ref c))
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
        "{:?}",
        refused.err()
    );
    let counted = metric(
        &server,
        "chatroom_connections_refused_total{reason=\"address_count\"}",
    );
    assert_eq!(counted.await, 1.0);
}

#[tokio::test]
async fn loopback_is_exempt_by_default() {
    let server = TestServer::start_with(|c| {
        c.node.ip_limits = IpLimits {
            max_connections: 1,
            ..IpLimits::default()
        };
    })
    .await;
    let addr = server.server.ws_addr();
    let mut open = Vec::new();
    for _ in 0..5 {
        let (tcp, ok) = upgrade(addr, "").await;
        assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
        open.push(tcp);
    }
}

#[tokio::test]
async fn browser_origins_outside_the_allow_list_get_403() {
    let server = TestServer::start_with(|c| {
        c.node.allowed_origins = Some(vec!["https://good.example".into()]);
    })
    .await;
    let addr = server.server.ws_addr();
    let (_, refused) = upgrade(addr, "Origin: https://evil.example\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let counted = metric(
        &server,
        "chatroom_connections_refused_total{reason=\"origin\"}",
    );
    assert_eq!(counted.await, 1.0);
    let (_, ok) = upgrade(addr, "Origin: https://good.example\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    // Not a browser: no Origin, let in.
    let (_, ok) = upgrade(addr, "").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
}

#[tokio::test]
async fn any_origin_is_allowed_by_default() {
    let server = TestServer::start().await;
    let (_, ok) = upgrade(server.server.ws_addr(), "Origin: https://any.example\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
}

#[tokio::test]
async fn a_handshake_trickled_byte_by_byte_is_dropped_at_the_deadline() {
    let connect_timeout = Duration::from_millis(800);
    let server = TestServer::start_with(|c| c.node.connect_timeout = connect_timeout).await;
    let mut tcp = TcpStream::connect(server.server.ws_addr()).await.unwrap();
    // A request that would take ~10 s at one byte per 50 ms.
    let request = format!("{UPGRADE}X-Pad: {}\r\n\r\n", "p".repeat(60));
    let start = Instant::now();
    let mut sent = 0;
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            read = tcp.read(&mut sink) => {
                assert!(matches!(read, Ok(0) | Err(_)), "no answer expected: {read:?}");
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if tcp.write_all(&request.as_bytes()[sent..=sent]).await.is_err() {
                    break;
                }
                sent += 1;
                assert!(sent < request.len(), "the whole request went out");
            }
        }
    }
    // Dropped before the request could be finished (the loop asserts it),
    // and not before the deadline. How long after it depends on the
    // machine's load, so it is printed, not asserted.
    let took = start.elapsed();
    assert!(took >= connect_timeout, "dropped early: {took:?}");
    println!(
        "a trickled handshake was dropped {took:?} after it began (deadline {connect_timeout:?})"
    );
}

#[tokio::test]
async fn pings_do_not_keep_a_connection_that_never_says_connect() {
    let connect_timeout = Duration::from_millis(800);
    let server = TestServer::start_with(|c| c.node.connect_timeout = connect_timeout).await;
    let (mut tcp, answer) = upgrade(server.server.ws_addr(), "").await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let ping = ClientFrame {
        request_id: 1,
        body: Some(client_frame::Body::Ping(Default::default())),
    }
    .encode_to_vec();
    let start = Instant::now();
    let mut sink = [0u8; 256];
    // Pings every 100 ms, far more often than any deadline, until the
    // server closes the connection (or 30 s pass: never, if it works).
    while start.elapsed() < Duration::from_secs(30) {
        tokio::select! {
            read = tcp.read(&mut sink) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if tcp.write_all(&masked(&ping)).await.is_err() {
                    break;
                }
            }
        }
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "a connection that only pings was never closed"
    );
    assert!(took >= connect_timeout, "closed early: {took:?}");
    println!(
        "a connection that only pinged was closed after {took:?} (deadline {connect_timeout:?})"
    );
}

#[tokio::test]
async fn an_unfinished_http_request_is_closed_at_the_header_timeout() {
    let server = TestServer::start().await;
    let mut tcp = TcpStream::connect(server.server.http_addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut sink = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut sink)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "an unfinished request was answered or kept: {read:?}"
    );
    let took = start.elapsed();
    assert!(took >= HTTP_HEADER_TIMEOUT, "closed early: {took:?}");
    println!("an unfinished HTTP request was closed after {took:?}");
}

#[tokio::test]
async fn http_connections_beyond_the_cap_are_closed_at_once() {
    let server = TestServer::start().await;
    let addr = server.server.http_addr();
    let mut held = Vec::new();
    for _ in 0..MAX_HTTP_CONNECTIONS {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // The server takes connections in order; one request on the last held
    // one shows it was taken (and so were all before it).
    let last = held.last_mut().unwrap();
    last.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 64];
    let n = last.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "a connection over the cap was served: {read:?}"
    );
    drop(held);
}

/// A masked binary WebSocket frame (the mask is zero, so the payload goes
/// as it is).
fn masked(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x82];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

fn heartbeat_server(heartbeat: Duration) -> impl FnOnce(&mut chatroom_embedded::EmbeddedConfig) {
    move |c| c.node.heartbeat = heartbeat
}

#[tokio::test]
async fn a_websocket_session_stalled_mid_frame_is_closed_by_the_heartbeat() {
    let heartbeat = Duration::from_millis(200);
    let server = TestServer::start_with(heartbeat_server(heartbeat)).await;
    let (mut tcp, ok) = upgrade(server.server.ws_addr(), "").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    let connect = ClientFrame {
        request_id: 1,
        body: Some(client_frame::Body::Connect(Connect {
            token: server.token("staller"),
            device_id: String::new(),
        })),
    };
    tcp.write_all(&masked(&connect.encode_to_vec()))
        .await
        .unwrap();
    // Half a frame header, then nothing.
    tcp.write_all(&[0x82, 0x80 | 126, 0x01]).await.unwrap();
    let took = closed_within(&mut tcp, 3 * heartbeat + Duration::from_secs(4)).await;
    assert!(
        took >= 2 * heartbeat,
        "closed before the heartbeat: {took:?}"
    );
}

#[tokio::test]
async fn a_quic_session_stalled_mid_length_prefix_is_kicked_by_the_heartbeat() {
    let heartbeat = Duration::from_millis(200);
    let server = TestServer::start_over_with(Transport::Quic, heartbeat_server(heartbeat)).await;
    let (mut client, _) = RawClient::login(&server, "staller").await;
    let start = Instant::now();
    client.send_raw(&[0, 0]).await;
    let mut kicked = false;
    while let Seen::Frame(frame) = client.next().await {
        if let Some(server_frame::Body::Kicked(k)) = frame.body {
            assert_eq!(k.reason, KickReason::HeartbeatTimeout as i32);
            kicked = true;
        }
    }
    assert!(kicked, "told why");
    let took = start.elapsed();
    assert!(
        took >= 2 * heartbeat,
        "closed before the heartbeat: {took:?}"
    );
    assert!(took < 3 * heartbeat + Duration::from_secs(4), "{took:?}");
}

async fn a_session_sending_past_its_own_rate_is_rate_limited(transport: Transport) {
    let server = TestServer::start_over_with(transport, |c| {
        c.node.session_send_rate = Rate { per_s: 2, burst: 3 };
    })
    .await;
    let (mut chatty, _) = RawClient::login(&server, "chatty").await;
    chatty.join("lobby").await;
    for i in 0..3 {
        let body = chatty.say("lobby", i + 1, "hi").await;
        assert!(matches!(body, server_frame::Body::SendAck(_)), "{body:?}");
    }
    let body = chatty.say("lobby", 4, "hi").await;
    let server_frame::Body::Error(error) = body else {
        panic!("expected RATE_LIMITED, got {body:?}");
    };
    assert_eq!(error.code, ErrorCode::RateLimited as i32);
    assert!(
        (1..=500).contains(&error.retry_after_ms),
        "{}",
        error.retry_after_ms
    );
    assert_eq!(
        metric(&server, "chatroom_sends_rate_limited_total").await,
        1.0
    );
    // Other sessions are not affected.
    let (mut calm, _) = RawClient::login(&server, "calm").await;
    calm.join("lobby").await;
    let body = calm.say("lobby", 1, "hello").await;
    assert!(matches!(body, server_frame::Body::SendAck(_)), "{body:?}");
    // Admin and system sessions are exempt.
    let mut admin = RawClient::connect_over(&server, transport).await;
    let roles = chatroom_cluster::auth::Roles {
        admin: true,
        ..Default::default()
    };
    admin
        .request(client_frame::Body::Connect(Connect {
            token: server.token_with("mod", roles),
            device_id: String::new(),
        }))
        .await;
    admin.frame().await;
    admin.join("lobby").await;
    for i in 0..6 {
        let body = admin.say("lobby", i + 1, "notice").await;
        assert!(matches!(body, server_frame::Body::SendAck(_)), "{body:?}");
    }
    // After the wait, the session may send again.
    tokio::time::sleep(Duration::from_millis(u64::from(error.retry_after_ms) + 50)).await;
    let body = chatty.say("lobby", 5, "hi").await;
    assert!(matches!(body, server_frame::Body::SendAck(_)), "{body:?}");
}

support::over_both!(a_session_sending_past_its_own_rate_is_rate_limited);
