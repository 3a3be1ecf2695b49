//! Both sides of a node link over real loopback sockets: a msg-svc's
//! `RoomLinks` dialing a room service's `serve_links`, with the room service
//! played by channels.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chatroom_cluster::link::accept::{RoomEnd, serve_links};
use chatroom_cluster::link::dial::{LinkEvent, RoomLinks};
use chatroom_cluster::link::{DownLink, LinkError, UpLink};
use chatroom_cluster::membership::{Members, NodeInfo, Role};
use chatroom_cluster::metrics::{self, LinkMetrics};
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{
    Hello, NotOwner, Subscribe, ToMsgSvc, ToRoomSvc, to_msg_svc, to_room_svc,
};
use chatroom_proto::framing::length;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);

/// What the room service saw of its links.
#[derive(Debug)]
enum Seen {
    Attached(String, DownLink),
    Frame(String, ToRoomSvc),
    Detached(String),
}

/// A room service that reports everything to the test; a port is the
/// node's id.
#[derive(Debug, Clone)]
struct Rooms(mpsc::UnboundedSender<Seen>);

impl RoomEnd for Rooms {
    type Port = String;

    fn attach(&self, node_id: &str, down: DownLink) -> String {
        let _ = self.0.send(Seen::Attached(node_id.into(), down));
        node_id.into()
    }

    async fn deliver(&self, port: &String, frame: ToRoomSvc) -> Result<(), LinkError> {
        self.0
            .send(Seen::Frame(port.clone(), frame))
            .map_err(|_| LinkError::Down)
    }

    async fn detach(&self, port: &String) {
        let _ = self.0.send(Seen::Detached(port.clone()));
    }
}

/// A room service accepting links on `listener` until `stop`.
struct RoomSvc {
    seen: mpsc::UnboundedReceiver<Seen>,
    stop: CancellationToken,
    serving: JoinHandle<()>,
}

impl RoomSvc {
    fn start(listener: TcpListener) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(serve_links(Rooms(tx), listener, stop.clone()));
        Self {
            seen,
            stop,
            serving,
        }
    }

    async fn next(&mut self) -> Seen {
        within(self.seen.recv())
            .await
            .expect("the room service runs")
    }

    /// Stops accepting and closes every link; returns what was not looked
    /// at yet.
    async fn stop(self) -> mpsc::UnboundedReceiver<Seen> {
        self.stop.cancel();
        within(self.serving).await.unwrap();
        self.seen
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("in time")
}

fn members(room_svc: &str, addr: SocketAddr) -> watch::Receiver<Arc<Members>> {
    let node = NodeInfo {
        id: room_svc.into(),
        role: Role::RoomSvc,
        link_addr: Some(addr.to_string()),
        client_url: None,
        quic_url: None,
        http_addr: None,
    };
    watch::channel(Arc::new(Members::new([node]))).1
}

/// Waits for the link from msg-svc m1 to room service r1 to come up and
/// for m1 to be attached; returns m1's way down, which the test keeps:
/// dropping it closes the link.
async fn linked(events: &mut mpsc::Receiver<LinkEvent>, room_svc: &mut RoomSvc) -> DownLink {
    assert_eq!(
        within(events.recv()).await,
        Some(LinkEvent::Up("r1".into()))
    );
    let Seen::Attached(node, down) = room_svc.next().await else {
        panic!("a link's Hello attaches its node first");
    };
    assert_eq!(node, "m1");
    down
}

fn subscribe(room: &str) -> ToRoomSvc {
    ToRoomSvc {
        body: Some(to_room_svc::Body::Subscribe(Subscribe {
            room_id: room.into(),
            latest: None,
        })),
    }
}

fn not_owner(room: &str) -> ToMsgSvc {
    ToMsgSvc {
        body: Some(to_msg_svc::Body::NotOwner(NotOwner {
            room_id: room.into(),
        })),
    }
}

#[tokio::test]
async fn frames_cross_both_ways_and_a_lost_link_comes_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut room_svc = RoomSvc::start(listener);
    let (down_tx, mut down) = mpsc::channel(16);
    let (events_tx, mut events) = mpsc::channel(16);
    let link_metrics = LinkMetrics::default();
    let links = RoomLinks::start(
        "m1".into(),
        members("r1", addr),
        down_tx,
        events_tx,
        link_metrics.clone(),
    );

    let room_down = linked(&mut events, &mut room_svc).await;
    assert_eq!(links.owner_of("lobby").as_deref(), Some("r1"));
    links.try_send(subscribe("lobby")).unwrap();
    links.try_send(subscribe("stage")).unwrap();
    for room in ["lobby", "stage"] {
        assert!(matches!(
            room_svc.next().await,
            Seen::Frame(node, frame) if node == "m1" && frame == subscribe(room)
        ));
    }
    room_down.send(not_owner("lobby")).await.unwrap();
    assert_eq!(within(down.recv()).await, Some(not_owner("lobby")));

    // The room service goes away: the link is down, and frames for its
    // rooms are refused.
    room_svc.stop().await;
    assert_eq!(
        within(events.recv()).await,
        Some(LinkEvent::Down("r1".into()))
    );
    assert_eq!(links.try_send(subscribe("lobby")), Err(LinkError::Down));

    // Back on the same address: the link reconnects and says so.
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut room_svc = RoomSvc::start(listener);
    let _room_down = linked(&mut events, &mut room_svc).await;
    links.try_send(subscribe("lobby")).unwrap();
    assert!(matches!(room_svc.next().await, Seen::Frame(_, frame) if frame == subscribe("lobby")));
    let mut registry = metrics::registry();
    link_metrics.register(&mut registry);
    assert!(
        metrics::render(&registry).contains("chatroom_link_reconnects_total 1\n"),
        "{}",
        metrics::render(&registry)
    );

    // The msg-svc drops its links: the room service detaches the node.
    drop(links);
    assert!(matches!(room_svc.next().await, Seen::Detached(node) if node == "m1"));
    room_svc.stop().await;
}

#[tokio::test]
async fn a_link_without_a_valid_hello_first_is_closed_unattached() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let room_svc = RoomSvc::start(listener);
    let hello = |node: &str| ToRoomSvc {
        body: Some(to_room_svc::Body::Hello(Hello {
            node_id: node.into(),
        })),
    };
    for first in [subscribe("lobby"), hello("not an id"), hello("")] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut wire = BytesMut::new();
        length::encode(&first.encode_to_vec(), usize::MAX, &mut wire).unwrap();
        stream.write_all(&wire).await.unwrap();
        let mut rest = Vec::new();
        let read = within(stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "closed without a word after {first:?}"
        );
    }
    let mut seen = room_svc.stop().await;
    assert!(seen.try_recv().is_err(), "nothing was attached");
}

#[tokio::test]
async fn a_link_to_a_room_service_that_left_is_reported_down_even_while_it_hangs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut room_svc = RoomSvc::start(listener);
    let (down_tx, _down) = mpsc::channel(16);
    let (events_tx, mut events) = mpsc::channel(16);
    let (view, members) = {
        let members = members("r1", addr);
        let view = watch::channel(Arc::clone(&members.borrow()));
        (view.0, view.1)
    };
    let links = RoomLinks::start(
        "m1".into(),
        members,
        down_tx,
        events_tx,
        LinkMetrics::default(),
    );
    let _room_down = linked(&mut events, &mut room_svc).await;
    links.try_send(subscribe("lobby")).unwrap();
    assert!(matches!(room_svc.next().await, Seen::Frame(_, frame) if frame == subscribe("lobby")));

    // The room service answers nothing more (stalled) but keeps its
    // connection; membership drops it. Whatever was in flight to it must
    // be answered by the msg-svc, so the link is reported down.
    view.send_replace(Arc::new(Members::default()));
    assert_eq!(
        within(events.recv()).await,
        Some(LinkEvent::Down("r1".into()))
    );
    assert_eq!(links.try_send(subscribe("lobby")), Err(LinkError::Down));
    drop(links);
    room_svc.stop().await;
}
