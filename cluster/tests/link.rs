//! Both sides of a node link over real loopback sockets: a msg-svc's
//! `RoomLinks` dialing a room service's `serve_links`, with the room service
//! played by channels; in plaintext and with mutual TLS, and peers without
//! a valid certificate refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chatroom_cluster::link::accept::{RoomEnd, serve_links};
use chatroom_cluster::link::dial::{DialConfig, LinkEvent, RoomLinks};
use chatroom_cluster::link::tls::{self, ClientConfig, LinkTlsArgs, ServerConfig};
use chatroom_cluster::link::{DownLink, LinkError, UpLink};
use chatroom_cluster::membership::{Members, NodeInfo, Role};
use chatroom_cluster::metrics::{self, LinkMetrics};
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{
    Hello, NotOwner, Subscribe, ToMsgSvc, ToRoomSvc, to_msg_svc, to_room_svc,
};
use chatroom_proto::framing::length;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
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
    metrics: LinkMetrics,
    stop: CancellationToken,
    serving: JoinHandle<()>,
}

impl RoomSvc {
    /// Links secured by `tls`, or plaintext without.
    fn start(listener: TcpListener, tls: Option<Arc<ServerConfig>>) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let metrics = LinkMetrics::default();
        let serving = tokio::spawn(serve_links(
            Rooms(tx),
            listener,
            tls,
            metrics.clone(),
            stop.clone(),
        ));
        Self {
            seen,
            metrics,
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

/// msg-svc m1's links to the room services in `members`, secured by `tls`.
fn dial(
    members: watch::Receiver<Arc<Members>>,
    tls: Option<Arc<ClientConfig>>,
) -> (
    Arc<RoomLinks>,
    mpsc::Receiver<ToMsgSvc>,
    mpsc::Receiver<LinkEvent>,
    LinkMetrics,
) {
    let (down_tx, down) = mpsc::channel(16);
    let (events_tx, events) = mpsc::channel(16);
    let metrics = LinkMetrics::default();
    let config = DialConfig {
        me: "m1".into(),
        down: down_tx,
        events: events_tx,
        metrics: metrics.clone(),
        tls,
    };
    (RoomLinks::start(config, members), down, events, metrics)
}

/// A cluster CA with a certificate per role, in a directory of its own.
fn certificates(cluster: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tls::generate(dir.path(), cluster, Duration::from_secs(3600)).unwrap();
    dir
}

/// Waits until `metrics` has counted `count` refused handshakes: the
/// refusal is counted just after the peer is told.
async fn refused(metrics: &LinkMetrics, count: u64) {
    within(async {
        while metrics.refused_count() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(metrics.refused_count(), count);
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
async fn frames_cross_both_ways_and_a_lost_link_comes_back_in_plaintext() {
    let plaintext = LinkTlsArgs {
        link_plaintext: true,
        ..LinkTlsArgs::default()
    };
    frames_cross_both_ways_and_a_lost_link_comes_back(&plaintext, &plaintext).await;
}

#[tokio::test]
async fn frames_cross_both_ways_and_a_lost_link_comes_back_with_mutual_tls() {
    let dir = certificates("test");
    let room_svc = LinkTlsArgs::from_dir(dir.path(), tls::ROOM_SVC_NAME);
    let msg_svc = LinkTlsArgs::from_dir(dir.path(), tls::MSG_SVC_NAME);
    assert!(room_svc.server_config().unwrap().is_some());
    frames_cross_both_ways_and_a_lost_link_comes_back(&room_svc, &msg_svc).await;
}

async fn frames_cross_both_ways_and_a_lost_link_comes_back(
    room_svc_side: &LinkTlsArgs,
    msg_svc_side: &LinkTlsArgs,
) {
    let server_tls = room_svc_side.server_config().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut room_svc = RoomSvc::start(listener, server_tls.clone());
    let (links, mut down, mut events, link_metrics) =
        dial(members("r1", addr), msg_svc_side.client_config().unwrap());

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
    let mut room_svc = RoomSvc::start(listener, server_tls);
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
    assert_eq!(room_svc.metrics.refused_count(), 0);
    assert_eq!(link_metrics.refused_count(), 0);
    room_svc.stop().await;
}

#[tokio::test]
async fn a_link_without_a_valid_hello_first_is_closed_unattached() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let room_svc = RoomSvc::start(listener, None);
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
    let mut room_svc = RoomSvc::start(listener, None);
    let (view, members) = {
        let members = members("r1", addr);
        let view = watch::channel(Arc::clone(&members.borrow()));
        (view.0, view.1)
    };
    let (links, _down, mut events, _metrics) = dial(members, None);
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

#[tokio::test]
async fn a_peer_without_a_valid_certificate_is_refused_and_counted() {
    let dir = certificates("test");
    let stranger = certificates("other");
    let ours = |role| LinkTlsArgs::from_dir(dir.path(), role);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_tls = ours(tls::ROOM_SVC_NAME).server_config().unwrap();
    let mut room_svc = RoomSvc::start(listener, server_tls);
    let hello = ToRoomSvc {
        body: Some(to_room_svc::Body::Hello(Hello {
            node_id: "intruder".into(),
        })),
    };
    let mut hello_bytes = BytesMut::new();
    length::encode(&hello.encode_to_vec(), usize::MAX, &mut hello_bytes).unwrap();

    // A plaintext Hello: no TLS at all.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&hello_bytes).await.unwrap();
    let mut rest = Vec::new();
    let _ = within(stream.read_to_end(&mut rest)).await;
    refused(&room_svc.metrics, 1).await;

    // TLS, but as a client of: another cluster's CA; our CA with a room
    // service's certificate (not a msg-svc's); our CA and no certificate.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
        for cert in <rustls::pki_types::CertificateDer as PemObject>::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(roots)
    };
    let no_certificate =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let clients = [
        LinkTlsArgs::from_dir(stranger.path(), tls::MSG_SVC_NAME)
            .client_config()
            .unwrap()
            .unwrap(),
        ours(tls::ROOM_SVC_NAME).client_config().unwrap().unwrap(),
        Arc::new(no_certificate),
    ];
    for (tried, client) in clients.into_iter().enumerate() {
        let stream = TcpStream::connect(addr).await.unwrap();
        let connector = TlsConnector::from(client);
        // In TLS 1.3 the client's certificate is judged after the client
        // thinks the handshake done: the refusal shows when it reads.
        if let Ok(mut stream) = within(connector.connect(tls::room_svc_name(), stream)).await {
            let _ = stream.write_all(&hello_bytes).await;
            let mut rest = Vec::new();
            let read = within(stream.read_to_end(&mut rest)).await;
            assert!(read.is_err() || rest.is_empty(), "refused, attempt {tried}");
        }
        refused(&room_svc.metrics, 2 + tried as u64).await;
    }
    assert!(room_svc.seen.try_recv().is_err(), "nothing was attached");

    // A msg-svc of this cluster does not link to a room service whose
    // certificate another CA signed, and counts it.
    let impostor_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let impostor_addr = impostor_listener.local_addr().unwrap();
    let impostor_tls = LinkTlsArgs::from_dir(stranger.path(), tls::ROOM_SVC_NAME)
        .server_config()
        .unwrap();
    let impostor = RoomSvc::start(impostor_listener, impostor_tls);
    let (links, _down, mut events, dial_metrics) = dial(
        members("r1", impostor_addr),
        ours(tls::MSG_SVC_NAME).client_config().unwrap(),
    );
    refused(&dial_metrics, 1).await;
    assert!(events.try_recv().is_err(), "the link never came up");
    assert_eq!(links.try_send(subscribe("lobby")), Err(LinkError::Down));
    drop(links);
    let mut seen = impostor.stop().await;
    assert!(seen.try_recv().is_err(), "nothing was attached");

    // A msg-svc that trusts this cluster's CA but shows another's
    // certificate: its side of the handshake completes, the room service's
    // refusal comes as an alert, and the msg-svc counts it and backs off.
    let forged = LinkTlsArgs {
        link_ca: Some(dir.path().join("ca.crt")),
        ..LinkTlsArgs::from_dir(stranger.path(), tls::MSG_SVC_NAME)
    };
    let refused_before = room_svc.metrics.refused_count();
    let (links, _down, _events, dial_metrics) =
        dial(members("r1", addr), forged.client_config().unwrap());
    refused(&dial_metrics, 1).await;
    drop(links);
    assert!(room_svc.metrics.refused_count() > refused_before);
    assert!(room_svc.seen.try_recv().is_err(), "nothing was attached");

    // And a msg-svc of this cluster still links.
    let (links, _down, mut events, _metrics) = dial(
        members("r1", addr),
        ours(tls::MSG_SVC_NAME).client_config().unwrap(),
    );
    let _room_down = linked(&mut events, &mut room_svc).await;
    drop(links);
    room_svc.stop().await;
}

#[test]
fn links_are_neither_secured_nor_plaintext_unless_told() {
    let none = LinkTlsArgs::default();
    assert!(matches!(
        none.server_config(),
        Err(tls::LinkTlsError::Unconfigured)
    ));
    assert!(matches!(
        none.client_config(),
        Err(tls::LinkTlsError::Unconfigured)
    ));
    let missing = LinkTlsArgs::from_dir(std::path::Path::new("/nonexistent"), "msg-svc");
    assert!(matches!(
        missing.client_config(),
        Err(tls::LinkTlsError::Tls(_))
    ));
}
