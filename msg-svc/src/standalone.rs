//! The embedded server: room service and message service in one process,
//! linked by in-process channels, with in-memory state and no ZooKeeper or
//! Redis. What a newcomer runs first and what most tests start.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatroom_cluster::auth::TokenKey;
use room_svc::{RoomService, RoomServiceConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::node::{MsgNode, NodeConfig};
use crate::{downlink, http, ws};

/// Frames in flight from the room service to the message service.
const DOWNLINK_QUEUE: usize = 65_536;

/// Settings of the embedded server.
#[derive(Debug, Clone, Default)]
pub struct StandaloneConfig {
    /// The message-service side.
    pub node: NodeConfig,
    /// The room-service side, with the default room settings.
    pub rooms: RoomServiceConfig,
    /// How long shutdown waits for clients to leave.
    pub drain_grace: Duration,
}

/// Bound sockets to serve on (bind to port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// WebSocket clients, at `/ws`.
    pub ws: TcpListener,
    /// Health now; admin and metrics later.
    pub http: TcpListener,
}

/// A running embedded server.
#[derive(Debug)]
pub struct Standalone {
    ws_addr: SocketAddr,
    http_addr: SocketAddr,
    rooms: RoomService,
    node: Arc<MsgNode>,
    /// Stops the accept loop; cancelled first on shutdown.
    accepting: CancellationToken,
    /// Stops everything else.
    stop: CancellationToken,
    tasks: JoinSet<()>,
    drain_grace: Duration,
}

impl Standalone {
    /// Starts serving on `listeners`.
    pub fn start(
        config: StandaloneConfig,
        tokens: TokenKey,
        listeners: Listeners,
    ) -> io::Result<Self> {
        let ws_addr = listeners.ws.local_addr()?;
        let http_addr = listeners.http.local_addr()?;
        let rooms = RoomService::start(config.rooms);
        let (down_tx, down_rx) = mpsc::channel(DOWNLINK_QUEUE);
        let uplink = rooms.connect_node("standalone", down_tx);
        let node = MsgNode::start(config.node, tokens, Arc::new(uplink));
        let stop = CancellationToken::new();
        let accepting = stop.child_token();
        let mut tasks = JoinSet::new();
        node.spawn_housekeeping(stop.clone());
        tasks.spawn(downlink::run(Arc::clone(&node), down_rx));
        tasks.spawn(ws::serve(
            Arc::clone(&node),
            listeners.ws,
            accepting.clone(),
        ));
        let (http_node, http_stop) = (Arc::clone(&node), stop.clone());
        tasks.spawn(async move {
            if let Err(error) = http::serve(http_node, listeners.http, http_stop).await {
                warn!(%error, "http server failed");
            }
        });
        info!(%ws_addr, %http_addr, "standalone server up");
        Ok(Self {
            ws_addr,
            http_addr,
            rooms,
            node,
            accepting,
            stop,
            tasks,
            drain_grace: config.drain_grace,
        })
    }

    /// Where WebSocket clients connect: `ws://{addr}/ws`.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.ws_addr, ws::PATH)
    }

    /// Where the HTTP endpoints are.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The room service, for in-process administration.
    pub fn rooms(&self) -> &RoomService {
        &self.rooms
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.node.sessions.len()
    }

    /// Drains and stops: readiness fails, no new connection is accepted,
    /// clients are told to go (WebSocket close "going away"), and the server
    /// waits up to the drain grace for them to leave before stopping every task.
    pub async fn shutdown(mut self) {
        self.accepting.cancel();
        self.node.drain();
        if !self.node.sessions.wait_empty(self.drain_grace).await {
            warn!(
                left = self.node.sessions.len(),
                "drain grace over; closing the rest"
            );
        }
        self.stop.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        info!("stopped");
    }
}

/// Serves until `shutdown` completes, then drains.
pub async fn run(
    config: StandaloneConfig,
    tokens: TokenKey,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let server = Standalone::start(config, tokens, listeners)?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}
