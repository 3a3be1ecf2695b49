//! The harness against the embedded server on port 0: tiny runs of the
//! giant room and the flood, with worker processes, must account for every
//! message exactly and lose no priority notice.

use std::path::PathBuf;
use std::time::Duration;

use chatroom_client::Transport;
use chatroom_cluster::auth::TokenKey;
use chatroom_cluster::quic::TlsIdentity;
use chatroom_embedded::{Embedded, EmbeddedConfig};
use clap::Parser;
use loadtest::harness::coordinator::{self, Target};
use loadtest::harness::report::Report;
use loadtest::harness::scenario::{RunArgs, Scenario};
use msg_svc::{Listeners, QuicListener};
use tokio::net::TcpListener;

const SECRET: &str = "harness-test-secret-0123456789abcdef";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
}

async fn run(scenario: Scenario, flags: &[&str]) -> Report {
    run_over(Transport::Ws, scenario, flags).await
}

/// Runs `scenario` with its clients over `transport` against an embedded
/// server serving both.
async fn run_over(transport: Transport, scenario: Scenario, flags: &[&str]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let identity = TlsIdentity::self_signed(&["127.0.0.1".into()]).unwrap();
    let fingerprint = identity.fingerprint().to_string();
    let listeners = Listeners {
        ws: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        quic: Some(QuicListener::bind("127.0.0.1:0".parse().unwrap(), identity).unwrap()),
        http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let config = EmbeddedConfig {
        drain_grace: Duration::from_secs(1),
        ..EmbeddedConfig::default()
    };
    let server =
        Embedded::start(config, TokenKey::new(SECRET.as_bytes()).unwrap(), listeners).unwrap();
    let url = match transport {
        Transport::Ws => server.ws_url(),
        Transport::Quic => server.quic_url().unwrap(),
    };
    let out: PathBuf = dir.path().join("out");
    let worker = env!("CARGO_BIN_EXE_loadtest");
    let mut argv = vec![
        "loadtest",
        "--target",
        &url,
        "--worker-exe",
        worker,
        "--duration",
        "2",
        "--out",
    ];
    let out_str = out.display().to_string();
    argv.push(&out_str);
    let secret_str = secret_file.display().to_string();
    argv.extend(["--token-secret-file", &secret_str]);
    argv.extend([
        "--transport",
        transport.name(),
        "--fingerprint",
        &fingerprint,
    ]);
    argv.extend(flags);
    let args = Args::parse_from(argv).run;
    let target = Target::prepare(&args, transport).unwrap();
    let report = coordinator::run(&scenario, &args, &target).await.unwrap();
    server.shutdown().await;
    println!("{}", report.summary());
    assert_eq!(report.transport, transport.name());
    report
}

fn assert_exact(report: &Report) {
    for (name, lane) in [
        ("normal", report.lanes.normal),
        ("priority", report.lanes.priority),
    ] {
        assert_eq!(lane.lost, 0, "{name} lane lost deliveries: {lane:?}");
        assert_eq!(
            lane.delivered + lane.dropped,
            lane.expected,
            "{name}: {lane:?}"
        );
    }
    assert!(report.lanes.priority.accepted > 0, "notices were sent");
    assert_eq!(
        report.lanes.priority.delivered, report.lanes.priority.expected,
        "every receiver got every notice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_giant_room_accounts_for_every_message() {
    tiny_giant_room(Transport::Ws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_giant_room_over_quic_accounts_for_every_message() {
    tiny_giant_room(Transport::Quic).await;
}

async fn tiny_giant_room(transport: Transport) {
    let report = run_over(
        transport,
        Scenario::GiantRoom,
        &[
            "--users",
            "120",
            "--workers",
            "2",
            "--notice-every-ms",
            "300",
        ],
    )
    .await;
    assert_exact(&report);
    assert_eq!(
        report.real_connections, 121,
        "120 users and the notice sender"
    );
    assert!(
        report.lanes.normal.accepted >= 300,
        "{:?}",
        report.lanes.normal
    );
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.max >= report.latency_ms.p99);
    assert_eq!(
        report.client.processes, 3,
        "two receiving workers and the senders' own"
    );
}

/// The Rust client library, playing the same users over QUIC, counts the
/// same.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_library_plays_the_giant_room_exactly_too() {
    let report = run_over(
        Transport::Quic,
        Scenario::GiantRoom,
        &[
            "--client",
            "library",
            "--users",
            "60",
            "--workers",
            "2",
            "--notice-every-ms",
            "300",
        ],
    )
    .await;
    assert_exact(&report);
    assert_eq!(report.real_connections, 61);
    assert!(report.lanes.normal.accepted >= 300, "{:?}", report.lanes);
    assert!(
        report.notes.iter().any(|n| n.contains("client library")),
        "{:?}",
        report.notes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_flood_is_limited_and_still_exact() {
    let report = run(Scenario::Flood, &["--users", "60", "--workers", "2"]).await;
    assert_exact(&report);
    let limited = report.refused.get("RATE_LIMITED").copied().unwrap_or(0);
    assert!(
        limited > 0,
        "a flood at ten times the limit is refused: {:?}",
        report.refused
    );
    // The limiter's contract: burst + rate x time.
    let allowed = 200.0 + 200.0 * report.duration_s + 1.0;
    assert!(
        (report.lanes.normal.accepted as f64) <= allowed,
        "{} accepted, more than {allowed}",
        report.lanes.normal.accepted
    );
}

/// The peer is counted the same way: a tiny giant room against a real
/// nats-server accounts for every message too.
#[tokio::test(flavor = "multi_thread")]
async fn the_nats_peer_is_counted_alike() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let worker = env!("CARGO_BIN_EXE_loadtest");
    let argv = [
        "loadtest",
        "--spawn-local",
        "--peer",
        "nats://local",
        "--worker-exe",
        worker,
        "--duration",
        "2",
        "--users",
        "80",
        "--workers",
        "2",
        "--notice-every-ms",
        "300",
        "--out",
        &out,
    ];
    let args = Args::parse_from(argv).run;
    let peer = args.peer.clone().unwrap();
    let target = Target::nats(&peer, dir.path()).unwrap();
    let report = coordinator::run(&Scenario::GiantRoom, &args, &target)
        .await
        .unwrap();
    println!("{}", report.summary());
    assert_eq!(report.transport, "nats");
    assert_eq!(report.real_connections, 81);
    assert_exact(&report);
    assert!(
        report.server.cpu_s.is_some(),
        "the local nats-server was measured"
    );
}
