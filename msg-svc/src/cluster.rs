//! The message service as one node of a cluster: registered in ZooKeeper,
//! serving the users placement gives it (others are redirected), linked to
//! every room service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatroom_cluster::auth::Verifier;
use chatroom_cluster::link::dial::{DialConfig, LinkEvent, RoomLinks};
use chatroom_cluster::link::tls;
use chatroom_cluster::membership::{
    MembershipError, NodeInfo, Registration, Role, ZkConfig, join_zookeeper,
};
use chatroom_cluster::metrics::{self, LinkMetrics};
use tokio::sync::mpsc;
use tracing::info;

use crate::node::NodeConfig;
use crate::server::{LinkEnds, Listeners, ServeError, Server, Surface};
use crate::ws;

/// Frames in flight from the room services to this node.
const DOWNLINK_QUEUE: usize = 65_536;

/// Settings of a clustered msg-svc.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The node's own settings.
    pub node: NodeConfig,
    /// Unique in the cluster.
    pub node_id: String,
    /// Where membership is kept (ZooKeeper).
    pub zookeeper: ZkConfig,
    /// The URL other nodes redirect this node's WebSocket users to; by
    /// default `ws://{ws listen address}/ws`.
    pub public_url: Option<String>,
    /// The URL other nodes redirect this node's QUIC users to; by default
    /// `quic://{quic listen address}` when QUIC is served.
    pub public_quic_url: Option<String>,
    /// How long shutdown waits for clients to leave.
    pub drain_grace: Duration,
    /// Mutual TLS on node links; `None` only with `--link-plaintext`.
    pub link_tls: Option<Arc<tls::ClientConfig>>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listeners could not be read.
    #[error("listeners: {0}")]
    Io(#[from] std::io::Error),
    /// The node could not start serving.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// ZooKeeper could not be joined.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// A running clustered msg-svc.
#[derive(Debug)]
pub struct MsgServer {
    server: Server,
    registration: Registration,
}

impl MsgServer {
    /// Joins the cluster and starts serving on `listeners`.
    pub async fn start(
        config: ClusterConfig,
        tokens: impl Into<Verifier>,
        listeners: Listeners,
    ) -> Result<Self, StartError> {
        let ws_addr = listeners.ws.local_addr()?;
        let http_addr = listeners.http.local_addr()?;
        let quic_addr = listeners
            .quic
            .as_ref()
            .map(|q| q.local_addr())
            .transpose()?;
        let quic_url = config
            .public_quic_url
            .or_else(|| quic_addr.map(|addr| format!("quic://{addr}")));
        let me = NodeInfo {
            id: config.node_id.clone(),
            role: Role::MsgSvc,
            link_addr: None,
            client_url: Some(
                config
                    .public_url
                    .unwrap_or_else(|| format!("ws://{ws_addr}{}", ws::PATH)),
            ),
            quic_url: quic_url.filter(|_| quic_addr.is_some()),
            http_addr: Some(http_addr.to_string()),
        };
        let registration = join_zookeeper(config.zookeeper, me).await?;
        let (down_tx, down_rx) = mpsc::channel(DOWNLINK_QUEUE);
        let (events_tx, mut events) = mpsc::channel(64);
        let link_metrics = LinkMetrics::default();
        let dial = DialConfig {
            me: config.node_id.clone(),
            down: down_tx,
            events: events_tx,
            metrics: link_metrics.clone(),
            tls: config.link_tls,
        };
        let room_links = RoomLinks::start(dial, registration.members());
        let mut families = metrics::registry();
        registration.register_metrics(&mut families);
        link_metrics.register(&mut families);
        let links = LinkEnds {
            up: room_links,
            down: down_rx,
        };
        let surface = Surface {
            metrics: families,
            routes: None,
            drain_grace: config.drain_grace,
        };
        let mut server = Server::start(
            config.node,
            tokens,
            links,
            &registration,
            listeners,
            surface,
        )?;

        // A room service that (re)connected knows nothing of us: subscribe
        // its rooms again. Placement moves re-route rooms the same way.
        let relinked = Arc::clone(&server.node);
        server.spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    LinkEvent::Up(room_svc) => relinked.link_back(&room_svc).await,
                    LinkEvent::Down(room_svc) => relinked.lost_link(&room_svc),
                }
            }
        });
        let moved = Arc::clone(&server.node);
        let mut members = registration.members();
        server.spawn(async move {
            while members.changed().await.is_ok() {
                moved.reconcile().await;
            }
        });
        info!(node = %config.node_id, %ws_addr, ?quic_addr, %http_addr, "msg-svc up");
        Ok(Self {
            server,
            registration,
        })
    }

    /// Where WebSocket clients connect.
    pub fn ws_url(&self) -> String {
        self.server.ws_url()
    }

    /// The WebSocket listen address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.server.ws_addr()
    }

    /// The QUIC listen address, if QUIC is served.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.server.quic_addr()
    }

    /// Where the HTTP endpoints are.
    pub fn http_addr(&self) -> SocketAddr {
        self.server.http_addr()
    }

    /// Drains its clients, leaves the cluster, stops.
    pub async fn shutdown(mut self) {
        self.server.drain().await;
        self.registration.leave().await;
        self.server.stop().await;
    }
}

/// Serves until `shutdown` completes, then drains and leaves the cluster.
pub async fn run(
    config: ClusterConfig,
    tokens: impl Into<Verifier>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let server = MsgServer::start(config, tokens, listeners).await?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}
