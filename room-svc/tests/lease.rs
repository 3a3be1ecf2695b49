//! A room service's lease on its ownership, against a real ZooKeeper that
//! the test cuts the node off from: without a lease the node acts for no
//! room (subscribers told, sends and admin operations refused), and with it
//! renewed it serves again.

mod support;

use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::local::{LocalServer, Proxy};
use chatroom_cluster::membership::{NodeInfo, Role, ZkConfig, join_zookeeper};
use chatroom_proto::v1::ErrorCode;
use room_svc::{AdminError, Ownership, RoomService, RoomStore};
use support::*;
use tokio::time::timeout;

/// Waits until `ownership` is sure (or not) of itself; the lease has no
/// event to await, so it is looked at every few milliseconds.
async fn until_sure(ownership: &Ownership, sure: bool) {
    let settled = timeout(Duration::from_secs(30), async {
        while ownership.is_sure() != sure {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "the lease never became sure={sure}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_lease_a_room_service_acts_for_no_room_until_it_is_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let zk = LocalServer::zookeeper(dir.path()).unwrap();
    let proxy = Proxy::start(zk.addr().parse().unwrap()).await.unwrap();
    let config = ZkConfig {
        connect: proxy.addr().to_string(),
        root: "/chatroom/lease".into(),
        session_timeout: Duration::from_secs(4),
        auth: None,
    };
    let me = NodeInfo {
        link_addr: Some("127.0.0.1:1".into()),
        ..NodeInfo::new("r1", Role::RoomSvc)
    };
    let registration = join_zookeeper(config, me).await.unwrap();
    let ownership = Ownership::new("r1", registration.members(), registration.lease());
    until_sure(&ownership, true).await;
    let service = RoomService::start_with(
        quiet_config(2),
        RoomStore::memory(),
        Some(ownership.clone()),
    );
    let mut a = FakeNode::attach(&service, "a");
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    a.send(send_body(send(ROOM, "alice", 1)));
    a.next_ack().await;
    a.next_broadcast().await;

    // Cut from ZooKeeper: the lease runs out (well before the session
    // could expire), and the node owns nothing.
    proxy.cut();
    until_sure(&ownership, false).await;
    a.send(send_body(send(ROOM, "alice", 2)));
    assert_eq!(
        a.next_not_owner().await.room_id,
        ROOM,
        "the room is dropped and its subscribers told"
    );
    let error = a.next_error().await;
    assert_eq!(code(&error), ErrorCode::Overloaded);
    a.send(subscribe(ROOM));
    assert_eq!(a.next_not_owner().await.room_id, ROOM);
    assert_eq!(
        service
            .post_notice(ROOM, "system", Bytes::from_static(b"hello"))
            .await,
        Err(AdminError::OwnershipUnsure)
    );
    assert_eq!(service.stats(ROOM).await, Err(AdminError::OwnershipUnsure));
    a.assert_quiet();

    // Healed within the session: the lease is renewed and the room served.
    proxy.heal();
    until_sure(&ownership, true).await;
    a.subscribe(ROOM).await;
    a.join(ROOM, &["alice"]);
    a.send(send_body(send(ROOM, "alice", 3)));
    a.next_ack().await;
    a.next_broadcast().await;
    registration.leave().await;
}
