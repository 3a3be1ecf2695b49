//! Shared by the integration tests: fake msg-svc nodes attached over real
//! bounded channels (the embedded mode's transport), frame builders, and a
//! Redis server of the test's own with a store on it.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::link::{DownLinkRx, UpLink};
use chatroom_cluster::local::LocalServer;
use chatroom_proto::cluster::v1::{
    Broadcast, Kick, Membership, NotOwner, RoomConfig, RoomUpdate, SendRequest, SendResult,
    Subscribe, SubscribeAck, ToMsgSvc, ToRoomSvc, send_result, to_msg_svc, to_room_svc,
};
use chatroom_proto::v1::{Cursor, ErrorCode, Kind, SendAck};
use room_svc::core::{ConfigPatch, default_room_config};
use room_svc::{
    AdminError, ConfigChange, NodePort, RedisStoreConfig, RedisTarget, RoomService,
    RoomServiceConfig, RoomStore,
};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::timeout;

pub const ROOM: &str = "stream-1";
pub const GUARD: Duration = Duration::from_secs(10);

pub struct FakeNode {
    pub port: NodePort,
    pub down: DownLinkRx,
}

impl FakeNode {
    pub fn attach(service: &RoomService, id: &str) -> Self {
        Self::attach_with_capacity(service, id, 1024)
    }

    pub fn attach_with_capacity(service: &RoomService, id: &str, capacity: usize) -> Self {
        let (tx, down) = mpsc::channel(capacity);
        Self {
            port: service.connect_node(id, tx),
            down,
        }
    }

    pub fn send(&self, body: to_room_svc::Body) {
        self.port
            .try_send(ToRoomSvc { body: Some(body) })
            .expect("queued");
    }

    pub async fn subscribe(&mut self, room: &str) -> SubscribeAck {
        self.send(subscribe(room));
        match self.next().await {
            to_msg_svc::Body::SubscribeAck(ack) => ack,
            other => panic!("expected a SubscribeAck, got {other:?}"),
        }
    }

    pub fn join(&self, room: &str, users: &[&str]) {
        self.send(membership(room, users, &[]));
    }

    pub async fn next(&mut self) -> to_msg_svc::Body {
        let frame: ToMsgSvc = timeout(GUARD, self.down.recv())
            .await
            .expect("a frame in time")
            .expect("the downlink is open");
        frame.body.expect("a frame body")
    }

    pub async fn next_result(&mut self) -> SendResult {
        match self.next().await {
            to_msg_svc::Body::SendResult(result) => result,
            other => panic!("expected a SendResult, got {other:?}"),
        }
    }

    pub async fn next_ack(&mut self) -> SendAck {
        match self.next_result().await.outcome {
            Some(send_result::Outcome::Ack(ack)) => ack,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    pub async fn next_error(&mut self) -> chatroom_proto::v1::Error {
        match self.next_result().await.outcome {
            Some(send_result::Outcome::Error(error)) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    pub async fn next_broadcast(&mut self) -> Broadcast {
        match self.next().await {
            to_msg_svc::Body::Broadcast(broadcast) => broadcast,
            other => panic!("expected a Broadcast, got {other:?}"),
        }
    }

    pub async fn next_update(&mut self) -> RoomUpdate {
        match self.next().await {
            to_msg_svc::Body::RoomUpdate(update) => update,
            other => panic!("expected a RoomUpdate, got {other:?}"),
        }
    }

    pub async fn next_kick(&mut self) -> Kick {
        match self.next().await {
            to_msg_svc::Body::Kick(kick) => kick,
            other => panic!("expected a Kick, got {other:?}"),
        }
    }

    /// Nothing is waiting. Call after an admin call on the same room
    /// returned: its answer comes after everything sent before it.
    pub fn assert_quiet(&mut self) {
        match self.down.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }
}

pub fn subscribe(room: &str) -> to_room_svc::Body {
    to_room_svc::Body::Subscribe(Subscribe {
        room_id: room.into(),
        latest: None,
    })
}

pub fn membership(room: &str, joined: &[&str], left: &[&str]) -> to_room_svc::Body {
    numbered_membership(room, 0, joined, left)
}

/// A presence report numbered `seq`, as a msg-svc numbers them.
pub fn numbered_membership(
    room: &str,
    seq: u64,
    joined: &[&str],
    left: &[&str],
) -> to_room_svc::Body {
    to_room_svc::Body::Membership(Membership {
        room_id: room.into(),
        joined: joined.iter().map(|u| u.to_string()).collect(),
        left: left.iter().map(|u| u.to_string()).collect(),
        seq,
    })
}

pub fn send(room: &str, sender: &str, request_id: u64) -> SendRequest {
    SendRequest {
        room_id: room.into(),
        sender: sender.into(),
        sender_roles: Vec::new(),
        session_id: 77,
        request_id,
        client_msg_id: 0,
        kind: Kind::Chat as i32,
        payload: Bytes::from(format!("message {request_id}")),
        sender_info: None,
    }
}

pub fn send_body(request: SendRequest) -> to_room_svc::Body {
    to_room_svc::Body::Send(request)
}

/// A service whose member-count pushes never come during a test (only the
/// test of those pushes wants them).
pub fn start(workers: usize) -> RoomService {
    RoomService::start(quiet_config(workers))
}

pub fn quiet_config(workers: usize) -> RoomServiceConfig {
    RoomServiceConfig {
        workers,
        member_update_interval: Duration::from_secs(3600),
        ..RoomServiceConfig::default()
    }
}

pub fn config_with(edit: impl FnOnce(&mut RoomConfig)) -> RoomConfig {
    let mut config = default_room_config();
    edit(&mut config);
    config
}

/// Overrides every setting of `room` with `config`'s; the config now in
/// force.
pub async fn set_config(
    service: &RoomService,
    room: &str,
    config: RoomConfig,
) -> Result<RoomConfig, AdminError> {
    let patch = ConfigPatch::from_config(&config);
    let settings = service
        .configure_room(room, ConfigChange::Patch(patch))
        .await?;
    Ok(settings.config)
}

pub fn code(error: &chatroom_proto::v1::Error) -> ErrorCode {
    ErrorCode::try_from(error.code).expect("a known error code")
}

/// A Redis server in a directory of its own; dropping it stops the server.
pub struct TestRedis {
    pub server: LocalServer,
    _dir: TempDir,
}

impl TestRedis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let server = LocalServer::redis(dir.path()).expect("redis-server starts");
        Self { server, _dir: dir }
    }

    pub fn url(&self) -> String {
        self.server.redis_url()
    }

    /// A store on this server under `cluster`, with timings short enough
    /// for tests.
    pub fn store(&self, cluster: &str) -> RoomStore {
        RoomStore::redis_with(&RedisTarget::url(self.url()), cluster, test_store_config())
            .expect("a valid store")
    }

    /// A plain connection, to look at what the store wrote.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

pub fn test_store_config() -> RedisStoreConfig {
    RedisStoreConfig {
        load_timeout: Duration::from_millis(600),
        request_timeout: Duration::from_millis(300),
        retry_max: Duration::from_millis(200),
        flush_timeout: Duration::from_secs(1),
        ..RedisStoreConfig::default()
    }
}

/// A subscribe that reports the node's newest position.
pub fn subscribe_from(room: &str, latest: Cursor) -> to_room_svc::Body {
    to_room_svc::Body::Subscribe(Subscribe {
        room_id: room.into(),
        latest: Some(latest),
    })
}

impl FakeNode {
    pub async fn subscribe_from(&mut self, room: &str, latest: Cursor) -> SubscribeAck {
        self.send(subscribe_from(room, latest));
        match self.next().await {
            to_msg_svc::Body::SubscribeAck(ack) => ack,
            other => panic!("expected a SubscribeAck, got {other:?}"),
        }
    }

    pub async fn next_not_owner(&mut self) -> NotOwner {
        match self.next().await {
            to_msg_svc::Body::NotOwner(not_owner) => not_owner,
            other => panic!("expected a NotOwner, got {other:?}"),
        }
    }
}
