//! The embedded server: the room service and a message service in one
//! process, linked by in-process channels, with in-memory state and no
//! ZooKeeper or Redis. What a newcomer runs first (`chatroom`), what the
//! widget's demo uses, and what most end-to-end tests start. Its HTTP port
//! also serves the admin API and the chat widget with its demo page.
//!
//! Layout: [`Embedded`] wires the two services together; [`cli`] holds the
//! binary's flags and banner; `widget` serves the widget's bundle and demo
//! page. Both services are the libraries a cluster runs, unchanged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatroom_cluster::auth::{AdminToken, TokenKey, Verifier};
use chatroom_cluster::membership::{Members, NodeInfo, Registration, Role};
use chatroom_cluster::metrics;
use chatroom_cluster::reload::Reloaded;
use msg_svc::{LinkEnds, Listeners, NodeConfig, ServeError, Server, Surface};
use room_svc::admin::keys::{self, AdminKeys, KeysWatch};
use room_svc::admin::{AdminApi, Keyring};
use room_svc::{RoomService, RoomServiceConfig};
use tokio::sync::mpsc;
use tracing::info;

use crate::widget::DemoSite;

pub mod cli;
mod widget;

/// Frames in flight from the room service to the message service.
const DOWNLINK_QUEUE: usize = 65_536;

/// Settings of the embedded server.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedConfig {
    /// The message-service side.
    pub node: NodeConfig,
    /// The room-service side, with the default room settings.
    pub rooms: RoomServiceConfig,
    /// How long shutdown waits for clients to leave.
    pub drain_grace: Duration,
    /// The admin API's token; without it or keys the API refuses every
    /// request.
    pub admin_token: Option<AdminToken>,
    /// The admin API's named keys with their scopes, from a watched file.
    pub admin_keys: Option<Reloaded<AdminKeys>>,
    /// The WebSocket URL the demo page (`/demo`) connects to; default: the
    /// WebSocket listener's.
    pub public_url: Option<String>,
    /// How client tokens are verified (an identity provider's keys beside
    /// the secret); default: the secret the server mints demo tokens with.
    pub verifier: Option<Verifier>,
}

/// The embedded server's node id, in both roles.
const NODE_ID: &str = "standalone";

/// A running embedded server.
#[derive(Debug)]
pub struct Embedded {
    server: Server,
    rooms: RoomService,
    /// The in-process membership the node's view comes from.
    _registration: Registration,
    /// Rereads the admin keys file while the server runs.
    _keys_watch: Option<KeysWatch>,
}

fn in_process_registration() -> Registration {
    let node = |role| NodeInfo::new(NODE_ID, role);
    let me = node(Role::MsgSvc);
    Registration::in_process(me.clone(), Members::new([me, node(Role::RoomSvc)]))
}

impl Embedded {
    /// Starts serving on `listeners`.
    pub fn start(
        config: EmbeddedConfig,
        tokens: TokenKey,
        listeners: Listeners,
    ) -> Result<Self, ServeError> {
        let rooms = RoomService::start(config.rooms);
        let (down_tx, down_rx) = mpsc::channel(DOWNLINK_QUEUE);
        let links = LinkEnds {
            up: Arc::new(rooms.connect_node(NODE_ID, down_tx)),
            down: down_rx,
        };
        // One node of each role, in-process: every user is served here.
        let registration = in_process_registration();
        // Both roles' families on the one `/metrics`.
        let mut families = metrics::registry();
        registration.register_metrics(&mut families);
        rooms.register_metrics(&mut families);
        if let Some(keys) = &config.admin_keys {
            room_svc::metrics::register_reloads(&mut families, "admin_keys", keys);
        }
        let site = DemoSite {
            tokens: tokens.clone(),
            public_url: config.public_url.map(Arc::from),
            ws_addr: listeners.ws.local_addr()?,
        };
        let keys_watch = config.admin_keys.as_ref().map(keys::watch);
        let keyring = Keyring::new(config.admin_token, config.admin_keys);
        let routes = AdminApi::new(rooms.clone(), keyring, None)
            .router()
            .merge(widget::routes(site));
        let surface = Surface {
            metrics: families,
            routes: Some(routes),
            drain_grace: config.drain_grace,
        };
        let verifier = config.verifier.unwrap_or_else(|| tokens.into());
        let server = Server::start(
            config.node,
            verifier,
            links,
            &registration,
            listeners,
            surface,
        )?;
        info!(
            ws_addr = %server.ws_addr(),
            quic_addr = ?server.quic_addr(),
            http_addr = %server.http_addr(),
            "embedded server up"
        );
        Ok(Self {
            server,
            rooms,
            _registration: registration,
            _keys_watch: keys_watch,
        })
    }

    /// Where WebSocket clients connect: `ws://{addr}/ws`.
    pub fn ws_addr(&self) -> SocketAddr {
        self.server.ws_addr()
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        self.server.ws_url()
    }

    /// Where QUIC clients connect, if QUIC is served.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.server.quic_addr()
    }

    /// The QUIC URL (`quic://{addr}`), if QUIC is served.
    pub fn quic_url(&self) -> Option<String> {
        self.quic_addr().map(|addr| format!("quic://{addr}"))
    }

    /// Where the HTTP endpoints are.
    pub fn http_addr(&self) -> SocketAddr {
        self.server.http_addr()
    }

    /// The room service, for in-process administration.
    pub fn rooms(&self) -> &RoomService {
        &self.rooms
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.server.session_count()
    }

    /// Drains (see [`Server::drain`]) and stops.
    pub async fn shutdown(mut self) {
        self.server.drain().await;
        self.server.stop().await;
        if let Some(webhooks) = self.rooms.webhooks() {
            let deadline = tokio::time::Instant::now() + room_svc::server::WEBHOOK_FLUSH;
            if let Err(error) = webhooks.flush(deadline).await {
                tracing::warn!(%error, "some webhook events were not delivered before shutdown");
            }
        }
    }
}

/// Serves until `shutdown` completes, then drains.
pub async fn run(
    config: EmbeddedConfig,
    tokens: TokenKey,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let server = Embedded::start(config, tokens, listeners)?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}
