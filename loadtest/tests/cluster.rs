//! The distributed mode against a real local cluster: ZooKeeper, Redis, two
//! room-svc and three msg-svc processes on loopback (loadtest::local). The
//! tests run one at a time: each starts its own cluster, and together they
//! would crowd two cores. Each prints how long its recovery took.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::Method;
use chatroom_client::{Client, ClientConfig, ClientError, Event, Events, JoinOptions};
use chatroom_cluster::auth::{Roles, TokenKey};
use chatroom_cluster::placement;
use chatroom_cluster::quic::Trust;
use chatroom_proto::v1::{ChatMessage, ErrorCode, KickReason, Kind, Lane};
use loadtest::local::{ClusterSpec, LocalCluster, NodeProcess, http_get};
use room_svc::admin::client::AdminClient;
use serde_json::json;
use tokio::sync::Mutex;

const PATIENCE: Duration = Duration::from_secs(30);
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
const MSG_SVCS: [&str; 3] = ["msg-svc-1", "msg-svc-2", "msg-svc-3"];
const ROOM_SVCS: [&str; 2] = ["room-svc-1", "room-svc-2"];

/// One cluster at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

struct Setup {
    cluster: LocalCluster,
    key: TokenKey,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    /// A failing test shows what the nodes said.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in self.cluster.room_svcs.iter().chain(&self.cluster.msg_svcs) {
                let log = node.log_text();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("---- {} (last 60 lines)", node.id);
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec {
        zk_session_timeout: SESSION_TIMEOUT,
        heartbeat: Duration::from_secs(2),
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec, dir.path()).expect("local cluster starts");
    let key = cluster.token_key().unwrap();
    Setup {
        cluster,
        key,
        _dir: dir,
    }
}

impl Setup {
    fn msg_svc(&self, node: &str) -> &NodeProcess {
        self.cluster
            .msg_svcs
            .iter()
            .find(|n| n.id == node)
            .unwrap_or_else(|| panic!("no {node}"))
    }

    fn url(&self, node: &str) -> String {
        self.msg_svc(node).ws_url.clone().unwrap()
    }

    fn quic_url(&self, node: &str) -> String {
        self.msg_svc(node).quic_url.clone().unwrap()
    }

    fn http(&self, node: &str) -> String {
        self.cluster
            .msg_svcs
            .iter()
            .chain(&self.cluster.room_svcs)
            .find(|n| n.id == node)
            .map(|n| n.http_addr.clone())
            .unwrap()
    }

    /// Connects `user` through `via` (following the redirect to the node
    /// that serves them).
    async fn connect(&self, user: &str, via: &str) -> (Client, Events) {
        self.connect_to(user, &self.url(via)).await
    }

    /// Connects `user` over QUIC through `via`, trusting the cluster's
    /// certificate.
    async fn connect_quic(&self, user: &str, via: &str) -> (Client, Events) {
        self.connect_to(user, &self.quic_url(via)).await
    }

    async fn connect_to(&self, user: &str, url: &str) -> (Client, Events) {
        let token = self
            .key
            .mint(user, Roles::default(), Duration::from_secs(600))
            .unwrap();
        let config = ClientConfig {
            trust: Some(Trust::CertFile(self.cluster.quic_cert_file().to_owned())),
            ..ClientConfig::new(url, token)
        };
        Client::connect(config)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect via {url}: {e}"))
    }

    /// Connects `user` through any of `via`, trying again until it works
    /// (while a dead node still owns the user, redirects lead nowhere).
    async fn reconnect(&self, user: &str, via: &[&str]) -> (Client, Events) {
        let token = self
            .key
            .mint(user, Roles::default(), Duration::from_secs(600))
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            for node in via {
                let mut config = ClientConfig::new(self.url(node), token.clone());
                config.connect_timeout = Duration::from_secs(2);
                if let Ok(connected) = Client::connect(config).await {
                    return connected;
                }
            }
            assert!(Instant::now() < deadline, "{user} could not reconnect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn metric(&self, node: &str, name: &str) -> u64 {
        let (_, body) = http_get(&self.http(node), "/metrics").expect("metrics answer");
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {node}'s metrics"))
    }

    fn readiness(&self, node: &str) -> String {
        http_get(&self.http(node), "/readyz")
            .map(|(_, body)| body.trim().to_owned())
            .unwrap_or_default()
    }
}

/// The first `{prefix}-{i}` that placement puts on `node` among `nodes`.
fn placed_on(node: &str, nodes: &[&str], prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|key| placement::owner(key, nodes).is_some_and(|owner| *owner == node))
        .unwrap()
}

async fn join(client: &Client, room: &str) {
    client
        .join(room, JoinOptions::default())
        .await
        .expect("join");
}

/// Reads events until message `msg_id` of `room` arrives; returns the
/// messages seen and the drops reported.
async fn receive_until(events: &mut Events, room: &str, msg_id: u64) -> (Vec<ChatMessage>, u64) {
    let mut messages = Vec::new();
    let mut dropped = 0;
    loop {
        match events.recv_timeout(PATIENCE).await {
            Ok(Event::Message { room: r, message }) if &*r == room => {
                let last = message.msg_id;
                messages.push(message);
                if last >= msg_id {
                    return (messages, dropped);
                }
            }
            Ok(Event::Dropped {
                room: r,
                normal,
                priority,
            }) if &*r == room => dropped += normal + priority,
            Ok(Event::Closed { reason }) => panic!("closed while waiting for {msg_id}: {reason}"),
            Ok(_) => {}
            Err(error) => panic!(
                "message {msg_id} never came ({} seen): {error}",
                messages.len()
            ),
        }
    }
}

/// Sends until the room accepts, riding out a failover; returns the ack and
/// how many attempts were refused.
async fn send_until_accepted(
    client: &Client,
    room: &str,
    text: &str,
) -> (chatroom_proto::v1::SendAck, u32) {
    let deadline = Instant::now() + PATIENCE;
    let mut refused = 0;
    let id = client.next_client_msg_id();
    loop {
        match client
            .send_with_id(room, id, Kind::Chat, text.to_owned())
            .await
        {
            Ok(ack) => return (ack, refused),
            Err(error) => {
                assert!(
                    matches!(error.code(), Some(ErrorCode::Overloaded) | None),
                    "unexpected refusal: {error}"
                );
                refused += 1;
                assert!(
                    Instant::now() < deadline,
                    "the room never accepted again: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_on_different_nodes_chat_and_broadcasts_reach_only_member_nodes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = start();
    let alice_id = placed_on("msg-svc-1", &MSG_SVCS, "alice");
    let bob_id = placed_on("msg-svc-2", &MSG_SVCS, "bob");
    // Both enter through msg-svc-3 and are sent where they belong: alice
    // over WebSocket, bob over QUIC (redirected to his node's QUIC address).
    let (alice, mut alice_events) = setup.connect(&alice_id, "msg-svc-3").await;
    let (bob, mut bob_events) = setup.connect_quic(&bob_id, "msg-svc-3").await;
    assert_eq!(
        alice.url(),
        setup.url("msg-svc-1"),
        "alice was redirected to her node"
    );
    assert_eq!(
        bob.url(),
        setup.quic_url("msg-svc-2"),
        "bob was redirected to his node's QUIC endpoint"
    );

    join(&alice, "across").await;
    join(&bob, "across").await;
    let hello = alice
        .send("across", Kind::Chat, "hello from node 1")
        .await
        .unwrap();
    let (got, _) = receive_until(&mut bob_events, "across", hello.msg_id).await;
    assert_eq!(
        got.last().map(|m| m.payload.as_ref()),
        Some(&b"hello from node 1"[..])
    );
    let reply = bob
        .send("across", Kind::Chat, "hi from node 2")
        .await
        .unwrap();
    let (got, _) = receive_until(&mut alice_events, "across", reply.msg_id).await;
    assert!(got.iter().any(|m| m.payload.as_ref() == b"hi from node 2"));
    assert!(reply.ts > hello.ts);

    assert!(setup.metric("msg-svc-1", "chatroom_broadcasts_received_total") > 0);
    assert!(setup.metric("msg-svc-2", "chatroom_broadcasts_received_total") > 0);
    assert_eq!(
        setup.metric("msg-svc-3", "chatroom_broadcasts_received_total"),
        0,
        "a node without members of the room gets none of its broadcasts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_msg_svc_clients_resume_elsewhere_with_exactly_what_they_missed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut setup = start();
    let room = "resume";
    let writer_id = placed_on("msg-svc-2", &MSG_SVCS, "writer");
    let (writer, _writer_events) = setup.connect(&writer_id, "msg-svc-2").await;
    join(&writer, room).await;
    let victims: Vec<String> = (0..3)
        .map(|i| placed_on("msg-svc-1", &MSG_SVCS, &format!("victim{i}")))
        .collect();
    let mut cursors = Vec::new();
    let mut cut_off = Vec::new();
    for victim in &victims {
        let (client, mut events) = setup.connect(victim, "msg-svc-1").await;
        join(&client, room).await;
        let first = writer
            .send(room, Kind::Chat, format!("before {victim}"))
            .await
            .unwrap();
        receive_until(&mut events, room, first.msg_id).await;
        cursors.push(client.cursor(room).unwrap());
        cut_off.push((client, events));
    }

    let killed = Instant::now();
    setup.cluster.msg_svc("msg-svc-1").unwrap().kill9();
    // Connected until the kill: the node vanished under them.
    drop(cut_off);
    // The room goes on while the victims are away.
    let writing = {
        let writer = writer.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                acked.push(
                    writer
                        .send(room, Kind::Chat, format!("while away {i}"))
                        .await
                        .unwrap()
                        .msg_id,
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        })
    };
    let mut resumed = Vec::new();
    for (victim, cursor) in victims.iter().zip(&cursors) {
        let (client, events) = setup.reconnect(victim, &["msg-svc-2", "msg-svc-3"]).await;
        client
            .join(
                room,
                JoinOptions {
                    since: Some(*cursor),
                    backfill: 0,
                },
            )
            .await
            .expect("rejoin with a cursor");
        resumed.push((client, events, *cursor));
    }
    let recovery = killed.elapsed();
    let acked = writing.await.unwrap();
    let last = *acked.last().unwrap();
    for (client, mut events, cursor) in resumed {
        let (got, dropped) = receive_until(&mut events, room, last).await;
        let got: BTreeSet<u64> = got.iter().map(|m| m.msg_id).collect();
        let expected: BTreeSet<u64> = (cursor.msg_id + 1..=last).collect();
        assert_eq!(
            got,
            expected,
            "{} missed or repeated messages",
            client.user_id()
        );
        assert_eq!(dropped, 0);
        assert_ne!(client.url(), setup.url("msg-svc-1"));
    }
    println!("msg-svc kill -9: every client resumed on another node {recovery:?} after the kill");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_room_svc_moves_its_rooms_and_stamps_keep_increasing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut setup = start();
    let room = placed_on("room-svc-1", &ROOM_SVCS, "moving");
    let alice_id = placed_on("msg-svc-1", &MSG_SVCS, "alice");
    let bob_id = placed_on("msg-svc-2", &MSG_SVCS, "bob");
    let (alice, _alice_events) = setup.connect(&alice_id, "msg-svc-1").await;
    let (bob, mut bob_events) = setup.connect(&bob_id, "msg-svc-2").await;
    join(&alice, &room).await;
    join(&bob, &room).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            alice
                .send(&room, Kind::Chat, format!("before {i}"))
                .await
                .unwrap(),
        );
    }

    // Killed once the messages so far have reached both nodes. A message
    // acked but neither written to Redis nor delivered to a node when its
    // owner dies is lost with it (writes are off the ack path): that is not
    // what this test is about.
    let before = sent.last().unwrap().msg_id;
    let (mut got, mut dropped) = receive_until(&mut bob_events, &room, before).await;
    let killed = Instant::now();
    setup.cluster.room_svc("room-svc-1").unwrap().kill9();
    let (ack, refused) = send_until_accepted(&alice, &room, "after the move").await;
    let recovery = killed.elapsed();
    sent.push(ack);
    // Bob never re-joined: the new owner rebuilt membership from the nodes'
    // reports, so his send is accepted too once his node has seen the move
    // (never refused as NOT_JOINED: send_until_accepted checks).
    sent.push(
        send_until_accepted(&bob, &room, "bob after the move")
            .await
            .0,
    );
    for i in 0..5 {
        sent.push(
            alice
                .send(&room, Kind::Chat, format!("after {i}"))
                .await
                .unwrap(),
        );
    }
    assert!(
        sent.windows(2)
            .all(|w| w[0].ts < w[1].ts && w[0].msg_id < w[1].msg_id),
        "{sent:?}"
    );

    let last = sent.last().unwrap().msg_id;
    let (after, dropped_after) = receive_until(&mut bob_events, &room, last).await;
    got.extend(after);
    dropped += dropped_after;
    assert!(
        got.windows(2).all(|w| w[0].ts < w[1].ts),
        "bob saw ts go backwards"
    );
    let got: BTreeSet<u64> = got.iter().map(|m| m.msg_id).collect();
    for ack in &sent {
        assert!(got.contains(&ack.msg_id), "bob missed {}", ack.msg_id);
    }
    assert_eq!(dropped, 0);
    println!(
        "room-svc kill -9: sends accepted again {recovery:?} after the kill ({refused} refused meanwhile; session timeout {SESSION_TIMEOUT:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_accepted_messages_and_a_room_service_relinked_after_its_restart() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut setup = start();
    let room = placed_on("room-svc-1", &ROOM_SVCS, "counted");
    let (alice, _alice_events) = setup
        .connect(&placed_on("msg-svc-1", &MSG_SVCS, "alice"), "msg-svc-1")
        .await;
    join(&alice, &room).await;
    for i in 0..3 {
        alice
            .send(&room, Kind::Chat, format!("m{i}"))
            .await
            .unwrap();
    }
    let accepted = "chatroom_messages_accepted_total{lane=\"normal\"}";
    assert_eq!(setup.metric("room-svc-1", accepted), 3);
    assert_eq!(setup.metric("room-svc-2", accepted), 0);
    assert_eq!(setup.metric("room-svc-1", "chatroom_nodes_attached"), 3);
    assert_eq!(
        setup.metric("msg-svc-1", "chatroom_sends_accepted_total"),
        3
    );
    let reconnects = "chatroom_link_reconnects_total";
    assert_eq!(setup.metric("msg-svc-1", reconnects), 0);
    for node in MSG_SVCS.iter().chain(&ROOM_SVCS) {
        assert_eq!(
            setup.metric(
                node,
                "chatroom_zookeeper_sessions_lost_total{reason=\"expired\"}"
            ),
            0
        );
    }

    // Back within the session timeout: the room stays placed on it, and
    // each message service's link to it comes up again.
    let room_svc = setup.cluster.room_svc("room-svc-1").unwrap();
    room_svc.kill9();
    room_svc.restart().unwrap();
    send_until_accepted(&alice, &room, "after the restart").await;
    // A fresh process counts from 0. (Replacing its stale registration can
    // show the room on room-svc-2 for an instant, which may take the send.)
    let (first, second) = (
        setup.metric("room-svc-1", accepted),
        setup.metric("room-svc-2", accepted),
    );
    assert_eq!(first + second, 1, "a fresh process counts the one send");
    assert!(setup.metric("msg-svc-1", reconnects) >= 1);
    assert_eq!(
        setup.metric("room-svc-1", "chatroom_redis_errors_total{op=\"load\"}"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn live_delivery_never_stops_while_redis_restarts() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut setup = start();
    let room = placed_on("room-svc-1", &ROOM_SVCS, "steady");
    let (alice, _alice_events) = setup
        .connect(&placed_on("msg-svc-1", &MSG_SVCS, "alice"), "msg-svc-1")
        .await;
    let (bob, mut bob_events) = setup
        .connect(&placed_on("msg-svc-2", &MSG_SVCS, "bob"), "msg-svc-2")
        .await;
    join(&alice, &room).await;
    join(&bob, &room).await;

    let sending = {
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..150 {
                let ack = alice.send(&room, Kind::Chat, format!("m{i}")).await;
                acked.push(ack.expect("every send is acked through the outage").msg_id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    setup.cluster.redis.kill();
    let down = Instant::now();
    let mut saw_degraded = false;
    while down.elapsed() < Duration::from_secs(1) {
        saw_degraded |= setup.readiness("room-svc-1").starts_with("degraded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup.cluster.redis.restart().unwrap();
    let restarted = Instant::now();
    while setup.readiness("room-svc-1") != "ready" {
        assert!(
            restarted.elapsed() < PATIENCE,
            "room-svc never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healthy = restarted.elapsed();
    let acked = sending.await.unwrap();
    let (got, dropped) = receive_until(&mut bob_events, &room, *acked.last().unwrap()).await;
    let got: Vec<u64> = got.iter().map(|m| m.msg_id).collect();
    assert_eq!(
        got, acked,
        "bob got every message, in order, through the outage"
    );
    assert_eq!(dropped, 0);
    assert!(saw_degraded, "readiness said degraded while Redis was down");
    println!(
        "redis restart: delivery never stopped; room-svc ready again {healthy:?} after Redis came back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_heals_after_zookeeper_expires_every_session() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = start();
    let room = "patient";
    let (alice, _alice_events) = setup
        .connect(&placed_on("msg-svc-1", &MSG_SVCS, "alice"), "msg-svc-1")
        .await;
    let (bob, mut bob_events) = setup
        .connect(&placed_on("msg-svc-2", &MSG_SVCS, "bob"), "msg-svc-2")
        .await;
    join(&alice, room).await;
    join(&bob, room).await;

    setup.cluster.zookeeper.pause().unwrap();
    // Placement holds while ZooKeeper is unreachable: chat goes on.
    let during = alice
        .send(room, Kind::Chat, "while zookeeper sleeps")
        .await
        .unwrap();
    receive_until(&mut bob_events, room, during.msg_id).await;
    // Past the session timeout, and the nodes held still while ZooKeeper
    // wakes: no ping can revive a session before ZooKeeper's expiry sweep,
    // so every session expires (and with it every registration).
    tokio::time::sleep(SESSION_TIMEOUT + Duration::from_secs(2)).await;
    let nodes = || {
        let cluster = &setup.cluster;
        cluster.msg_svcs.iter().chain(&cluster.room_svcs)
    };
    nodes().for_each(NodeProcess::pause);
    setup.cluster.zookeeper.resume().unwrap();
    until_every_registration_is_gone(&setup).await;
    nodes().for_each(NodeProcess::resume);
    let resumed = Instant::now();
    for node in MSG_SVCS.iter().chain(&ROOM_SVCS) {
        while setup.readiness(node) != "ready" {
            assert!(resumed.elapsed() < PATIENCE, "{node} never re-registered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let healed = resumed.elapsed();
    // Registered again: a newcomer is placed and redirected, and the room
    // works for everyone.
    let carol_id = placed_on("msg-svc-3", &MSG_SVCS, "carol");
    let (carol, mut carol_events) = setup.connect(&carol_id, "msg-svc-1").await;
    assert_eq!(carol.url(), setup.url("msg-svc-3"));
    join(&carol, room).await;
    let (after, _) = send_until_accepted(&alice, room, "after the heal").await;
    receive_until(&mut bob_events, room, after.msg_id).await;
    receive_until(&mut carol_events, room, after.msg_id).await;
    assert!(after.ts > during.ts);
    // Every node lost its connection and its session while ZooKeeper slept.
    for node in MSG_SVCS.iter().chain(&ROOM_SVCS) {
        assert!(
            setup.metric(node, "chatroom_zookeeper_disconnects_total") >= 1,
            "{node} counted its lost connection"
        );
        assert!(
            setup.metric(
                node,
                "chatroom_zookeeper_sessions_lost_total{reason=\"expired\"}",
            ) >= 1,
            "{node} counted its expired session"
        );
    }
    println!(
        "zookeeper session expiry: every node registered and ready {healed:?} after ZooKeeper resumed"
    );
}

/// Waits, with ZooKeeper watches, until no node is registered: every
/// session has expired.
async fn until_every_registration_is_gone(setup: &Setup) {
    let credentials = std::fs::read_to_string(setup.cluster.dir().join("zk-auth"))
        .expect("the cluster's ZooKeeper credentials");
    let client = zookeeper_client::Client::connector()
        .with_auth("digest", credentials.trim().as_bytes())
        .connect(&setup.cluster.zookeeper.addr())
        .await
        .expect("a ZooKeeper session of the test's own");
    for role in ["room-svc", "msg-svc"] {
        let dir = format!("/chatroom/{}/{role}", setup.cluster.name());
        loop {
            let (children, _, watcher) = client
                .get_and_watch_children(&dir)
                .await
                .expect("the role's directory");
            if children.is_empty() {
                break;
            }
            tokio::time::timeout(PATIENCE, watcher.changed())
                .await
                .unwrap_or_else(|_| panic!("{children:?} still registered in {dir}"));
        }
    }
}

#[test]
fn placement_helper_finds_keys_per_node() {
    for node in MSG_SVCS {
        let key = placed_on(node, &MSG_SVCS, "k");
        assert_eq!(placement::owner(&key, &MSG_SVCS), Some(&node));
    }
}

/// Sends `probe`-sized payloads until the node refuses them as too large;
/// how long after `since` that was.
async fn until_too_large(client: &Client, room: &str, since: Instant) -> Duration {
    loop {
        match client.send(room, Kind::Chat, "x".repeat(32)).await {
            Err(ClientError::Server(error)) if error.code == ErrorCode::PayloadTooLarge as i32 => {
                return since.elapsed();
            }
            Ok(_) | Err(ClientError::Server(_)) => {
                assert!(since.elapsed() < PATIENCE, "the new limit never came");
            }
            Err(error) => panic!("probe failed: {error}"),
        }
    }
}

/// Waits for the Kick a ban causes.
async fn expect_banned(events: &mut Events) {
    let kicked = events
        .wait_for(PATIENCE, |e| matches!(e, Event::Kicked { .. }))
        .await
        .expect("the banned viewer is kicked");
    assert!(
        matches!(
            kicked,
            Event::Kicked {
                reason: KickReason::Banned,
                ..
            }
        ),
        "{kicked:?}"
    );
}

/// Calls the admin API until it answers with a success, riding out a
/// room's move between owners (502/503 with Retry-After).
async fn admin_until_ok(
    admin: &AdminClient,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match admin.call(method.clone(), path, body.as_ref()).await {
            Ok(answer) => return answer,
            Err(error) => {
                assert!(Instant::now() < deadline, "{method} {path}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_changes_reach_every_node_at_once_through_any_room_svc_and_outlive_the_owner() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut setup = start();
    let token = setup.cluster.admin_token().unwrap();
    let admin_at = |node: &str| AdminClient::new(&format!("http://{}", setup.http(node)), &token);
    // The room's owner is room-svc-1; every call goes through room-svc-2,
    // which forwards it.
    let (owner, other) = (
        admin_at("room-svc-1").unwrap(),
        admin_at("room-svc-2").unwrap(),
    );
    let room = placed_on("room-svc-1", &ROOM_SVCS, "tuned");
    let users: Vec<String> = MSG_SVCS
        .iter()
        .map(|node| placed_on(node, &MSG_SVCS, &format!("viewer-{node}")))
        .collect();
    let mut clients = Vec::new();
    for (user, node) in users.iter().zip(MSG_SVCS) {
        let (client, events) = setup.connect(user, node).await;
        join(&client, &room).await;
        clients.push((client, events));
    }

    // A limit set through the other room service reaches all three nodes.
    let patched = Instant::now();
    let settings = other
        .call(
            Method::PATCH,
            &format!("/rooms/{room}/config"),
            Some(&json!({"max_payload_bytes": 16})),
        )
        .await
        .expect("patch through a room service that does not own the room");
    let answered = patched.elapsed();
    assert_eq!(settings["overrides"], json!({"max_payload_bytes": 16}));
    let mut took = Vec::new();
    for (client, _) in &clients {
        took.push(until_too_large(client, &room, patched).await);
    }
    println!(
        "admin config change: answered in {answered:?}; in force on {MSG_SVCS:?} after {took:?}"
    );

    // A ban through the other room service kicks at once.
    let banned = Instant::now();
    let victim = &users[2];
    other
        .call(Method::PUT, &format!("/rooms/{room}/bans/{victim}"), None)
        .await
        .expect("ban");
    expect_banned(&mut clients[2].1).await;
    println!("admin ban: kicked {:?} after the call", banned.elapsed());

    // A notice reaches everyone left, on the priority lane.
    let posted = other
        .call(
            Method::POST,
            &format!("/rooms/{room}/notices"),
            Some(&json!({"text": "back at 00:00"})),
        )
        .await
        .expect("notice");
    let notice_id = posted["msg_id"].as_u64().unwrap();
    for (_, events) in &mut clients[..2] {
        let (got, _) = receive_until(events, &room, notice_id).await;
        let notice = got.last().unwrap();
        assert_eq!(notice.lane, Lane::Priority as i32);
        assert_eq!(&notice.payload[..], b"back at 00:00");
    }

    // The busiest rooms come from both room services.
    let elsewhere = placed_on("room-svc-2", &ROOM_SVCS, "elsewhere");
    join(&clients[0].0, &elsewhere).await;
    let top = admin_until_ok(&owner, Method::GET, "/rooms?by=members", None).await;
    let listed: BTreeSet<&str> = top["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(room.as_str()) && listed.contains(elsewhere.as_str()),
        "{top}"
    );
    assert_eq!(top["unreachable"], json!([]));
    let stats = other
        .call(Method::GET, &format!("/rooms/{room}"), None)
        .await
        .expect("stats");
    assert_eq!(stats["members"], 2, "{stats}");
    assert_eq!(stats["bans"], 1, "{stats}");

    // The owner dies: the room's new owner loads the overrides and the ban
    // from Redis.
    setup.cluster.room_svc("room-svc-1").unwrap().kill9();
    let moved = Instant::now();
    let settings =
        admin_until_ok(&other, Method::GET, &format!("/rooms/{room}/config"), None).await;
    let back = moved.elapsed();
    assert_eq!(settings["overrides"], json!({"max_payload_bytes": 16}));
    let stats = admin_until_ok(&other, Method::GET, &format!("/rooms/{room}"), None).await;
    assert_eq!(stats["bans"], 1, "{stats}");
    until_too_large(&clients[0].0, &room, Instant::now()).await;
    println!(
        "admin after the owner's kill -9: the new owner answered with the stored overrides {back:?} after the kill (session timeout {SESSION_TIMEOUT:?})"
    );
    // The ban came along too: a rejoin is kicked again.
    let (banned, banned_events) = &mut clients[2];
    let _ = banned.join(&room, JoinOptions::default()).await;
    expect_banned(banned_events).await;
}
