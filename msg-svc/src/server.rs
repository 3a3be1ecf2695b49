//! What every msg-svc runs, whichever mode: the node's tasks (downlink,
//! housekeeping, WebSocket and HTTP listeners) and the ordered shutdown.
//! [`Server`] is also how another program embeds a node (the embedded
//! server links it to an in-process room service).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatroom_cluster::auth::Verifier;
use chatroom_cluster::link::{DownLinkRx, UpLink};
use chatroom_cluster::membership::Registration;
use chatroom_cluster::metrics::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::node::{ClusterView, MsgNode, NodeConfig};
use crate::quic::{self, QuicError, QuicListener};
use crate::{downlink, http, ws};

/// Bound sockets to serve on (bind to port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// WebSocket clients, at `/ws`.
    pub ws: TcpListener,
    /// QUIC clients, if served.
    pub quic: Option<QuicListener>,
    /// Health, readiness and metrics.
    pub http: TcpListener,
}

/// Why a node could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener's address could not be read.
    #[error("listeners: {0}")]
    Io(#[from] io::Error),
    /// The QUIC endpoint could not start.
    #[error(transparent)]
    Quic(#[from] QuicError),
}

/// How a node reaches the room services: it hands frames for a room's
/// owner to `up`, and the room services' frames arrive on `down`.
#[derive(Debug)]
pub struct LinkEnds {
    /// Frames up, routed to each room's owner.
    pub up: Arc<dyn UpLink>,
    /// Frames down, from every room service.
    pub down: DownLinkRx,
}

/// What a node serves besides its clients.
#[derive(Debug)]
pub struct Surface {
    /// The families `/metrics` shows besides the node's own.
    pub metrics: Registry,
    /// More routes for the HTTP listener (the embedded server's admin API
    /// and widget).
    pub routes: Option<axum::Router>,
    /// How long shutdown waits for clients to leave.
    pub drain_grace: Duration,
}

/// A serving node.
#[derive(Debug)]
pub struct Server {
    pub(crate) node: Arc<MsgNode>,
    ws_addr: SocketAddr,
    quic_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    /// Closed last, so clients are told the server went away.
    quic: Option<quinn::Endpoint>,
    /// Stops the accept loop; cancelled first on shutdown.
    accepting: CancellationToken,
    /// Stops everything else.
    stop: CancellationToken,
    tasks: JoinSet<()>,
    drain_grace: Duration,
}

impl Server {
    /// Starts a node on `listeners`, linked to the room services by
    /// `links`, serving the users `registration`'s members give it.
    pub fn start(
        config: NodeConfig,
        tokens: impl Into<Verifier>,
        links: LinkEnds,
        registration: &Registration,
        listeners: Listeners,
        surface: Surface,
    ) -> Result<Self, ServeError> {
        let node = MsgNode::start(
            config,
            tokens.into(),
            links.up,
            ClusterView::of(registration),
        );
        Self::launch(node, links.down, listeners, surface)
    }

    /// Starts the node's tasks on `listeners`, with frames from the room
    /// services arriving on `down`.
    fn launch(
        node: Arc<MsgNode>,
        down: DownLinkRx,
        listeners: Listeners,
        surface: Surface,
    ) -> Result<Self, ServeError> {
        let Surface {
            mut metrics,
            routes,
            drain_grace,
        } = surface;
        let ws_addr = listeners.ws.local_addr()?;
        let http_addr = listeners.http.local_addr()?;
        let quic = match listeners.quic {
            Some(listener) => Some(quic::endpoint(listener, &node.config)?),
            None => None,
        };
        let quic_addr = quic.as_ref().map(quinn::Endpoint::local_addr).transpose()?;
        let stop = CancellationToken::new();
        let accepting = stop.child_token();
        let mut tasks = JoinSet::new();
        node.spawn_housekeeping(stop.clone());
        tasks.spawn(downlink::run(Arc::clone(&node), down));
        tasks.spawn(ws::serve(
            Arc::clone(&node),
            listeners.ws,
            accepting.clone(),
        ));
        if let Some(endpoint) = &quic {
            tasks.spawn(quic::serve(
                Arc::clone(&node),
                endpoint.clone(),
                accepting.clone(),
            ));
        }
        node.register_metrics(&mut metrics);
        let (http_node, http_stop) = (Arc::clone(&node), stop.clone());
        tasks.spawn(async move {
            let served = http::serve(http_node, metrics, listeners.http, routes, http_stop);
            if let Err(error) = served.await {
                warn!(%error, "http server failed");
            }
        });
        Ok(Self {
            node,
            ws_addr,
            quic_addr,
            http_addr,
            quic,
            accepting,
            stop,
            tasks,
            drain_grace,
        })
    }

    /// Runs `task` until shutdown.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Where WebSocket clients connect: `ws://{addr}/ws`.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.ws_addr, ws::PATH)
    }

    /// The QUIC endpoint's address, if QUIC is served.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic_addr
    }

    /// Where the HTTP endpoints are.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.node.sessions.len()
    }

    /// Drains: readiness fails, no new connection is accepted, clients are
    /// told to go (close code 1001, "going away"), and the node waits up to
    /// the drain grace for them to leave. The caller stops the rest.
    pub async fn drain(&mut self) {
        self.accepting.cancel();
        self.node.drain();
        if !self.node.sessions.wait_empty(self.drain_grace).await {
            warn!(
                left = self.node.sessions.len(),
                "drain grace over; closing the rest"
            );
        }
    }

    /// Stops every task.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if let Some(endpoint) = self.quic.take() {
            endpoint.close(
                quinn::VarInt::from(chatroom_proto::framing::ws::close_code::GOING_AWAY),
                b"server stopped",
            );
        }
        info!("stopped");
    }
}
