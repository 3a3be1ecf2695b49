//! The embedded server: room service and message service in one process,
//! linked by in-process channels, with in-memory state and no ZooKeeper or
//! Redis. What a newcomer runs first and what most tests start. Its HTTP
//! port also serves the admin API and the chat widget with its demo page.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatroom_cluster::auth::{AdminToken, TokenKey};
use chatroom_cluster::metrics;
use room_svc::admin::AdminApi;
use room_svc::{RoomService, RoomServiceConfig};
use tokio::sync::mpsc;
use tracing::info;

use chatroom_cluster::registry::{Members, NodeInfo, Registration, Role};

use crate::node::{ClusterView, MsgNode, NodeConfig};
use crate::server::{Listeners, Running, ServeError};
use crate::widget::{self, DemoSite};

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
    /// The admin API's token; without one the API refuses every request.
    pub admin_token: Option<AdminToken>,
    /// The WebSocket URL the demo page (`/demo`) connects to; default: the
    /// WebSocket listener's.
    pub public_url: Option<String>,
}

/// The embedded server's node id, in both roles.
const NODE_ID: &str = "standalone";

/// A running embedded server.
#[derive(Debug)]
pub struct Standalone {
    running: Running,
    rooms: RoomService,
    /// The in-process membership the node's view comes from.
    _registration: Registration,
}

fn in_process_registration() -> Registration {
    let node = |role| NodeInfo {
        id: NODE_ID.to_owned(),
        role,
        link_addr: None,
        client_url: None,
        quic_url: None,
        http_addr: None,
    };
    let me = node(Role::MsgSvc);
    Registration::in_process(me.clone(), Members::new([me, node(Role::RoomSvc)]))
}

impl Standalone {
    /// Starts serving on `listeners`.
    pub fn start(
        config: StandaloneConfig,
        tokens: TokenKey,
        listeners: Listeners,
    ) -> Result<Self, ServeError> {
        let rooms = RoomService::start(config.rooms);
        let (down_tx, down_rx) = mpsc::channel(DOWNLINK_QUEUE);
        let uplink = rooms.connect_node(NODE_ID, down_tx);
        // One node of each role, in-process: every user is served here.
        let registration = in_process_registration();
        let node = MsgNode::start(
            config.node,
            tokens,
            Arc::new(uplink),
            ClusterView::of(&registration),
        );
        // Both roles' families on the one `/metrics`.
        let mut families = metrics::registry();
        registration.register_metrics(&mut families);
        rooms.register_metrics(&mut families);
        let site = DemoSite {
            node: Arc::clone(&node),
            public_url: config.public_url.map(Arc::from),
            ws_addr: listeners.ws.local_addr()?,
        };
        let routes = AdminApi::new(rooms.clone(), config.admin_token, None)
            .router()
            .merge(widget::routes(site));
        let running = Running::launch(
            node,
            down_rx,
            listeners,
            families,
            Some(routes),
            config.drain_grace,
        )?;
        info!(
            ws_addr = %running.ws_addr(),
            quic_addr = ?running.quic_addr(),
            http_addr = %running.http_addr(),
            "standalone server up"
        );
        Ok(Self {
            running,
            rooms,
            _registration: registration,
        })
    }

    /// Where WebSocket clients connect: `ws://{addr}/ws`.
    pub fn ws_addr(&self) -> SocketAddr {
        self.running.ws_addr()
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        self.running.ws_url()
    }

    /// Where QUIC clients connect, if QUIC is served.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.running.quic_addr()
    }

    /// The QUIC URL (`quic://{addr}`), if QUIC is served.
    pub fn quic_url(&self) -> Option<String> {
        self.quic_addr().map(|addr| format!("quic://{addr}"))
    }

    /// Where the HTTP endpoints are.
    pub fn http_addr(&self) -> SocketAddr {
        self.running.http_addr()
    }

    /// The room service, for in-process administration.
    pub fn rooms(&self) -> &RoomService {
        &self.rooms
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.running.node.sessions.len()
    }

    /// Drains (see [`Running::drain`]) and stops.
    pub async fn shutdown(mut self) {
        self.running.drain().await;
        self.running.stop().await;
    }
}

/// Serves until `shutdown` completes, then drains.
pub async fn run(
    config: StandaloneConfig,
    tokens: TokenKey,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let server = Standalone::start(config, tokens, listeners)?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}
