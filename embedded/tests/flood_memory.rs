//! Memory stays bounded under a flood of misbehaving WebSocket clients:
//! the stated bound is at most one largest frame plus 16 KiB per open
//! connection (a half-sent frame is the most a connection may make the
//! server buffer; a handshake is capped at 8 KiB). Alone in its binary, so
//! no other test's memory is counted.

mod support;

use std::time::Duration;

use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
/// Clients of each kind.
const EACH: usize = 300;
const MAX_FRAME: usize = 64 * 1024;
/// What one connection may cost the server, at most.
const PER_CONNECTION: usize = MAX_FRAME + 16 * 1024;

/// Resident set size of this process, bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

async fn upgraded(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_misbehaving_clients_stays_under_the_memory_bound() {
    let server = TestServer::start_with(|c| {
        c.node.max_frame_bytes = MAX_FRAME;
        c.node.connect_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = server.server.ws_addr();
    // Warm up: one connection of each kind, so per-thread buffers and the
    // allocator's first arenas are counted in the baseline.
    let _warm = upgraded(addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss();

    let mut held = Vec::new();
    // Half a handshake, then silence.
    for _ in 0..EACH {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&UPGRADE.as_bytes()[..40]).await.unwrap();
        held.push(tcp);
    }
    // Upgraded, then most of a largest frame, then silence: the server must
    // keep those bytes until the rest comes (or the heartbeat ends it).
    let len = MAX_FRAME - 16;
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(len as u64).to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    let almost = vec![7u8; len - 1];
    for _ in 0..EACH {
        let mut tcp = upgraded(addr).await;
        tcp.write_all(&header).await.unwrap();
        tcp.write_all(&almost).await.unwrap();
        held.push(tcp);
    }
    // Garbage after the upgrade: closed, and must leave nothing behind.
    for _ in 0..EACH {
        let mut tcp = upgraded(addr).await;
        let _ = tcp.write_all(&[0x82, 0x05, 1, 2, 3, 4, 5]).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(support::PATIENCE, tcp.read_to_end(&mut sink)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let grown = rss().saturating_sub(baseline);
    let open = 2 * EACH;
    let bound = open * PER_CONNECTION;
    eprintln!(
        "rss grew {} KiB for {open} open misbehaving connections; bound {} KiB",
        grown / 1024,
        bound / 1024
    );
    assert!(
        grown < bound,
        "rss grew {grown} bytes, over the bound of {bound} for {open} connections"
    );
    drop(held);
}
