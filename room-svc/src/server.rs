//! A room-svc process in a cluster: registered in ZooKeeper, rooms kept in
//! Redis, links from every msg-svc, health, readiness and metrics over HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use chatroom_cluster::auth::AdminToken;
use chatroom_cluster::link::accept::serve_links;
use chatroom_cluster::link::tls;
use chatroom_cluster::membership::{
    MembershipError, MembershipHealth, NodeInfo, Role, ZkConfig, join_zookeeper,
};
use chatroom_cluster::metrics::{self, LinkMetrics, Registry};
use chatroom_cluster::reload::Reloaded;
use chatroom_cluster::serve;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::keys::{self, AdminKeys};
use crate::admin::{AdminApi, Keyring, Peers};
use crate::core::{ConfigError, ConfigPatch, default_room_config, resolve, validate_config};
use crate::service::{Ownership, RoomService, RoomServiceConfig};
use crate::store::{RedisTarget, RoomStore, StoreError, StoreHealth};
use chatroom_proto::cluster::v1::{RoomConfig, RoomOverrides};

mod args;

pub use args::{ArgsError, BackendArgs, BackendArgsError, OpsArgs, ServeArgs};

/// How long shutdown waits for webhook events still queued to be delivered.
pub const WEBHOOK_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Settings of a clustered room-svc.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Unique in the cluster.
    pub node_id: String,
    /// The cluster's name (its Redis keys and ZooKeeper root).
    pub cluster: String,
    /// Where membership is kept (ZooKeeper).
    pub zookeeper: ZkConfig,
    /// Where Redis is and how to prove who we are to it.
    pub redis: RedisTarget,
    /// Workers, queues, room defaults.
    pub rooms: RoomServiceConfig,
    /// The address msg-svc nodes are told to link to; by default the link
    /// listener's.
    pub public_link_addr: Option<String>,
    /// The operators' token; without it or keys the admin API refuses
    /// every request.
    pub admin_token: Option<AdminToken>,
    /// The operators' named keys with their scopes, from a watched file.
    pub admin_keys: Option<Reloaded<AdminKeys>>,
    /// Mutual TLS on node links; `None` only with `--link-plaintext`.
    pub link_tls: Option<Arc<tls::ServerConfig>>,
}

/// Why the room defaults file was refused.
#[derive(Debug, thiserror::Error)]
pub enum DefaultsError {
    /// It could not be read.
    #[error("room defaults {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// It is not a JSON object of settings.
    #[error("room defaults {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: serde_json::Error,
    },
    /// It is JSON, but not an object.
    #[error("room defaults {0}: expected a JSON object of settings")]
    NotAnObject(PathBuf),
    /// A setting is out of bounds.
    #[error("room defaults {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: ConfigError,
    },
}

/// The settings of rooms nobody configured: the built-in defaults with the
/// fields of the JSON object in `path` laid over them (the same fields and
/// values the admin API's config PATCH takes), checked against the bounds.
pub fn load_room_defaults(path: &Path) -> Result<RoomConfig, DefaultsError> {
    let text = std::fs::read(path).map_err(|source| DefaultsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let json = |source| DefaultsError::Json {
        path: path.to_owned(),
        source,
    };
    let patch: ConfigPatch = match serde_json::from_slice(&text).map_err(json)? {
        object @ serde_json::Value::Object(_) => serde_json::from_value(object).map_err(json)?,
        _ => return Err(DefaultsError::NotAnObject(path.to_owned())),
    };
    let mut overrides = RoomOverrides::default();
    patch.apply(&mut overrides);
    let defaults = resolve(&default_room_config(), &overrides);
    validate_config(&defaults).map_err(|source| DefaultsError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok(defaults)
}

/// Bound sockets to serve on.
#[derive(Debug)]
pub struct Listeners {
    /// Node links from msg-svc nodes.
    pub links: TcpListener,
    /// Health, readiness and metrics.
    pub http: TcpListener,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listeners could not be read.
    #[error("listeners: {0}")]
    Io(#[from] std::io::Error),
    /// ZooKeeper could not be joined.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The Redis URL or cluster name is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
struct Health {
    rooms: RoomService,
    ownership: Ownership,
    membership: watch::Receiver<MembershipHealth>,
    metrics: Arc<Registry>,
    draining: CancellationToken,
}

/// Joins the cluster, serves until `shutdown`, then leaves: out of ZooKeeper
/// first (so its rooms move at once), then links closed, then every pending
/// write flushed to Redis.
pub async fn run(
    config: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let link_addr: SocketAddr = listeners.links.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let store = RoomStore::redis(&config.redis, &config.cluster)?;
    let me = NodeInfo {
        id: config.node_id.clone(),
        role: Role::RoomSvc,
        link_addr: Some(
            config
                .public_link_addr
                .unwrap_or_else(|| link_addr.to_string()),
        ),
        client_url: None,
        quic_url: None,
        http_addr: Some(http_addr.to_string()),
    };
    let registration = join_zookeeper(config.zookeeper, me).await?;
    let ownership = Ownership::new(
        config.node_id.clone(),
        registration.members(),
        registration.lease(),
    );
    let rooms = RoomService::start_with(config.rooms, store, Some(ownership.clone()));
    let mut families = metrics::registry();
    registration.register_metrics(&mut families);
    rooms.register_metrics(&mut families);
    if let Some(keys) = &config.admin_keys {
        crate::metrics::register_reloads(&mut families, "admin_keys", keys);
    }
    let link_metrics = LinkMetrics::default();
    link_metrics.register(&mut families);
    let stop = CancellationToken::new();
    let health = Health {
        rooms: rooms.clone(),
        ownership,
        membership: registration.health(),
        metrics: Arc::new(families),
        draining: CancellationToken::new(),
    };
    let links = tokio::spawn(serve_links(
        rooms.clone(),
        listeners.links,
        config.link_tls,
        link_metrics,
        stop.clone(),
    ));
    let peers = Peers::new(config.node_id.clone(), registration.members());
    let _keys_watch = config.admin_keys.as_ref().map(keys::watch);
    let keyring = Keyring::new(config.admin_token, config.admin_keys);
    let admin = AdminApi::new(rooms.clone(), keyring, Some(peers));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(scrape))
        .with_state(health.clone())
        .merge(admin.router());
    let http = tokio::spawn(serve::http(listeners.http, app, stop.clone()));
    info!(node = %config.node_id, %link_addr, %http_addr, "room-svc up");

    shutdown.await;
    health.draining.cancel();
    registration.leave().await;
    stop.cancel();
    let _ = links.await;
    if let Err(error) = rooms.flush().await {
        warn!(%error, "some writes did not reach redis before shutdown");
    }
    if let Some(webhooks) = rooms.webhooks() {
        let deadline = tokio::time::Instant::now() + WEBHOOK_FLUSH;
        if let Err(error) = webhooks.flush(deadline).await {
            warn!(%error, "some webhook events were not delivered before shutdown");
        }
    }
    let _ = http.await;
    info!("stopped");
    Ok(())
}

/// Every family of the node, in the OpenMetrics text format.
async fn scrape(State(health): State<Health>) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&health.metrics),
    )
}

/// 200 while serving (`degraded` and why when Redis or ZooKeeper is
/// unreachable: live traffic still flows); 503 while draining, and while
/// the node cannot be sure of its ownership (no lease from ZooKeeper: it
/// refuses every room then, so the admin API should ask another).
async fn ready(State(health): State<Health>) -> (StatusCode, String) {
    if health.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
    }
    if !health.ownership.is_sure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "ownership unsure: no lease from zookeeper\n".into(),
        );
    }
    let mut problems = Vec::new();
    if health.rooms.store_health() == StoreHealth::Degraded {
        problems.push("redis unreachable");
    }
    if *health.membership.borrow() != MembershipHealth::Live {
        problems.push("zookeeper unreachable");
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::OK,
            format!("degraded: {}\n", problems.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {

    use chatroom_cluster::membership::{Lease, Members};

    use super::*;

    fn health(lease: Lease) -> Health {
        let (_, members) = watch::channel(Arc::new(Members::default()));
        Health {
            rooms: RoomService::start(RoomServiceConfig::default()),
            ownership: Ownership::new("r1", members, lease),
            membership: watch::channel(MembershipHealth::Unreachable).1,
            metrics: Arc::new(metrics::registry()),
            draining: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn readiness_says_so_when_the_node_is_not_sure_of_its_ownership() {
        let (status, body) = ready(State(health(Lease::forever()))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "degraded: zookeeper unreachable\n");
        // A lease not held: ZooKeeper has not answered lately.
        let (status, body) = ready(State(health(Lease::renewable()))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "ownership unsure: no lease from zookeeper\n");
    }
}
