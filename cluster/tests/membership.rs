//! Membership in ZooKeeper against a real ZooKeeper on a free port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatroom_cluster::local::{LocalServer, Proxy};
use chatroom_cluster::membership::{
    BadZkDigest, Members, MembershipHealth, NodeInfo, Registration, Role, ZkConfig, ZkDigest,
    join_zookeeper,
};
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);

fn node(id: &str, role: Role) -> NodeInfo {
    NodeInfo {
        link_addr: (role == Role::RoomSvc).then(|| format!("127.0.0.1:1{id}")),
        ..NodeInfo::new(id, role)
    }
}

fn config(zk: &LocalServer, timeout: Duration) -> ZkConfig {
    ZkConfig {
        connect: zk.addr(),
        root: "/chatroom/test".into(),
        session_timeout: timeout,
        auth: None,
    }
}

fn ids(members: &Members) -> Vec<&str> {
    members
        .room_svcs
        .iter()
        .chain(&members.msg_svcs)
        .map(|n| n.id.as_str())
        .collect()
}

async fn until(
    view: &mut watch::Receiver<Arc<Members>>,
    what: &str,
    want: impl FnMut(&Arc<Members>) -> bool,
) -> Arc<Members> {
    let seen = tokio::time::timeout(PATIENCE, view.wait_for(want))
        .await
        .map(|members| members.map(|m| m.clone()));
    match seen {
        Ok(members) => members.expect("registration alive"),
        Err(_) => panic!("members never became {what}: {:?}", ids(&view.borrow())),
    }
}

async fn health(registration: &Registration, want: MembershipHealth) {
    let mut health = registration.health();
    tokio::time::timeout(PATIENCE, health.wait_for(|h| *h == want))
        .await
        .unwrap_or_else(|_| panic!("health never became {want:?}"))
        .expect("registration alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_see_each_other_join_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let zk = LocalServer::zookeeper(dir.path()).unwrap();
    let timeout = Duration::from_secs(4);
    let r1 = join_zookeeper(config(&zk, timeout), node("r1", Role::RoomSvc))
        .await
        .unwrap();
    let r2 = join_zookeeper(config(&zk, timeout), node("r2", Role::RoomSvc))
        .await
        .unwrap();
    let m1 = join_zookeeper(config(&zk, timeout), node("m1", Role::MsgSvc))
        .await
        .unwrap();

    let mut view = r1.members();
    let members = until(&mut view, "all three", |m| ids(m) == ["r1", "r2", "m1"]).await;
    assert_eq!(
        members.node("r2").unwrap().link_addr.as_deref(),
        Some("127.0.0.1:1r2")
    );
    assert_eq!(members.user_owner("anyone").unwrap().id, "m1");

    r2.leave().await;
    let started = Instant::now();
    until(&mut view, "without r2", |m| ids(m) == ["r1", "m1"]).await;
    println!(
        "a leaving node vanished from the others' view in {:?}",
        started.elapsed()
    );

    // Dropping a registration closes its session: it leaves too.
    drop(m1);
    until(&mut view, "without m1", |m| ids(m) == ["r1"]).await;
    r1.leave().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_the_same_id_replaces_the_stale_znode() {
    let dir = tempfile::tempdir().unwrap();
    let zk = LocalServer::zookeeper(dir.path()).unwrap();
    // A long session timeout: the first registration's znode would linger.
    let timeout = Duration::from_secs(30);
    let watcher = join_zookeeper(config(&zk, timeout), node("w", Role::MsgSvc))
        .await
        .unwrap();
    let first = join_zookeeper(config(&zk, timeout), node("r1", Role::RoomSvc))
        .await
        .unwrap();
    // The process "dies" without leaving: its session (and znode) stay.
    std::mem::forget(first);
    let mut replacement = node("r1", Role::RoomSvc);
    replacement.link_addr = Some("127.0.0.1:9999".into());
    let _second = join_zookeeper(config(&zk, timeout), replacement)
        .await
        .unwrap();
    let mut view = watcher.members();
    let members = until(&mut view, "the new r1", |m| {
        m.node("r1")
            .is_some_and(|n| n.link_addr.as_deref() == Some("127.0.0.1:9999"))
    })
    .await;
    assert_eq!(ids(&members), ["r1", "w"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_re_register_after_their_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let zk = LocalServer::zookeeper(dir.path()).unwrap();
    let timeout = Duration::from_secs(2);
    let r1 = join_zookeeper(config(&zk, timeout), node("r1", Role::RoomSvc))
        .await
        .unwrap();
    let m1 = join_zookeeper(config(&zk, timeout), node("m1", Role::MsgSvc))
        .await
        .unwrap();
    let mut view = m1.members();
    until(&mut view, "both", |m| ids(m) == ["r1", "m1"]).await;

    // Freeze ZooKeeper past the session timeout: both sessions expire.
    zk.pause().unwrap();
    health(&r1, MembershipHealth::Unreachable).await;
    health(&m1, MembershipHealth::Unreachable).await;
    tokio::time::sleep(timeout * 2).await;
    let resumed = Instant::now();
    zk.resume().unwrap();

    health(&r1, MembershipHealth::Live).await;
    health(&m1, MembershipHealth::Live).await;
    for registration in [&r1, &m1] {
        let mut view = registration.members();
        until(&mut view, "both again", |m| ids(m) == ["r1", "m1"]).await;
    }
    println!(
        "cluster view healed {:?} after ZooKeeper resumed",
        resumed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_from_zookeeper_loses_its_lease_before_the_others_see_it_leave() {
    let dir = tempfile::tempdir().unwrap();
    let zk = LocalServer::zookeeper(dir.path()).unwrap();
    let proxy = Proxy::start(zk.addr().parse().unwrap()).await.unwrap();
    let timeout = Duration::from_secs(4);
    let mut through_proxy = config(&zk, timeout);
    through_proxy.connect = proxy.addr().to_string();
    let r1 = join_zookeeper(through_proxy, node("r1", Role::RoomSvc))
        .await
        .unwrap();
    let m1 = join_zookeeper(config(&zk, timeout), node("m1", Role::MsgSvc))
        .await
        .unwrap();
    let mut view = m1.members();
    let before = until(&mut view, "both", |m| ids(m) == ["r1", "m1"]).await;
    let lease = r1.lease();
    let mut r1_view = r1.members();
    let r1_term = until(&mut r1_view, "both, at r1", |m| ids(m) == ["r1", "m1"])
        .await
        .term;
    assert_eq!(r1_term, before.term, "one view, one term");
    let proven = tokio::time::timeout(PATIENCE, async {
        while !lease.holds(tokio::time::Instant::now(), r1_term) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(proven.is_ok(), "the lease was never renewed");

    // Cut r1 from ZooKeeper only: the others stay connected.
    proxy.cut();
    let cut = tokio::time::Instant::now();
    let after = until(&mut view, "without r1", |m| ids(m) == ["m1"]).await;
    let gone = tokio::time::Instant::now();
    let ended = lease.until().expect("a ZooKeeper lease ends");
    assert!(
        ended < gone,
        "r1's lease ran until {:?} after the cut, but m1 saw it leave {:?} after",
        ended - cut,
        gone - cut
    );
    assert!(!lease.holds(gone, r1_term));
    assert!(
        after.term > before.term,
        "a view without r1 has a larger term"
    );
    println!(
        "cut from ZooKeeper: lease ended {:?} after the cut, the others saw it leave after {:?}",
        ended.saturating_duration_since(cut),
        gone - cut
    );

    // Healed: r1 re-registers in a new session whose views and lease are
    // newer than anything before.
    proxy.heal();
    let back = until(&mut r1_view, "r1 back, at r1", |m| {
        ids(m) == ["r1", "m1"] && m.term > after.term
    })
    .await;
    assert!(
        !lease.holds(tokio::time::Instant::now(), r1_term),
        "the old session's view is not covered"
    );
    let renewed = tokio::time::timeout(PATIENCE, async {
        while !lease.holds(tokio::time::Instant::now(), back.term) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(renewed.is_ok(), "the new session's lease was never renewed");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_digest_credentials_the_cluster_znodes_are_closed_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let zk = LocalServer::zookeeper(dir.path()).unwrap();
    let timeout = Duration::from_secs(4);
    let with = |credentials: &str| ZkConfig {
        auth: Some(ZkDigest::new(credentials).unwrap()),
        ..config(&zk, timeout)
    };
    let r1 = join_zookeeper(with("chatroom:s3cret\n"), node("r1", Role::RoomSvc))
        .await
        .unwrap();
    let m1 = join_zookeeper(with("chatroom:s3cret"), node("m1", Role::MsgSvc))
        .await
        .unwrap();
    until(&mut m1.members(), "both", |m| ids(m) == ["r1", "m1"]).await;

    // Without the credentials, or with others, nothing of the cluster can
    // be read, and no node can register.
    let anonymous = zookeeper_client::Client::connect(&zk.addr()).await.unwrap();
    let intruder = zookeeper_client::Client::connector()
        .with_auth("digest", b"chatroom:guess")
        .connect(&zk.addr())
        .await
        .unwrap();
    for client in [&anonymous, &intruder] {
        for path in [
            "/chatroom/test/room-svc",
            "/chatroom/test/room-svc/r1",
            "/chatroom/test/msg-svc/m1",
        ] {
            assert_eq!(
                client.get_data(path).await.unwrap_err(),
                zookeeper_client::Error::NoAuth,
                "{path}"
            );
        }
        assert_eq!(
            client
                .get_children("/chatroom/test/room-svc")
                .await
                .unwrap_err(),
            zookeeper_client::Error::NoAuth
        );
    }
    assert!(
        join_zookeeper(with("chatroom:guess"), node("r2", Role::RoomSvc))
            .await
            .is_err()
    );
    assert!(
        join_zookeeper(config(&zk, timeout), node("r3", Role::RoomSvc))
            .await
            .is_err()
    );
    // Another cluster, with credentials of its own, shares the ZooKeeper.
    let other = ZkConfig {
        root: "/chatroom/other".into(),
        ..with("other:pass")
    };
    let o1 = join_zookeeper(other, node("o1", Role::RoomSvc))
        .await
        .unwrap();
    until(&mut r1.members(), "unchanged", |m| ids(m) == ["r1", "m1"]).await;
    o1.leave().await;
    m1.leave().await;
    r1.leave().await;
}

#[test]
fn digest_credentials_are_user_colon_password_and_never_printed() {
    assert!(ZkDigest::new("user:pass\n").is_ok());
    for bad in [
        "",
        ":pass",
        "user:",
        "userpass",
        "user:pa\nss",
        "user:pass\n\n",
    ] {
        assert_eq!(ZkDigest::new(bad), Err(BadZkDigest), "{bad:?}");
    }
    let shown = format!("{:?}", ZkDigest::new("user:s3cret").unwrap());
    assert!(!shown.contains("s3cret"), "{shown}");
}
