//! The node's HTTP surface: liveness, readiness and metrics, and in the
//! embedded server the admin API and the chat widget with its demo page.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::routing::get;
use chatroom_cluster::metrics::{self, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::{MsgNode, Readiness};

/// What the handlers read.
#[derive(Debug, Clone)]
struct HttpState {
    node: Arc<MsgNode>,
    metrics: Arc<Registry>,
}

/// Serves HTTP until `stop`: `/metrics` renders `metrics`, and the mode's
/// own `routes` are served too if given.
pub(crate) async fn serve(
    node: Arc<MsgNode>,
    metrics: Registry,
    listener: TcpListener,
    routes: Option<Router>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let surface = HttpState {
        node,
        metrics: Arc::new(metrics),
    };
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(scrape))
        .with_state(surface);
    if let Some(routes) = routes {
        app = app.merge(routes);
    }
    chatroom_cluster::serve::http(listener, app, stop).await;
    Ok(())
}

/// Every family of the node, in the OpenMetrics text format.
async fn scrape(State(surface): State<HttpState>) -> ([(HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&surface.metrics),
    )
}

/// 200 while serving (the body says `degraded` and why when something the
/// node depends on is unreachable but clients are still served), 503 while
/// draining.
async fn ready(State(surface): State<HttpState>) -> (StatusCode, String) {
    match surface.node.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n".into()),
        Readiness::Degraded(why) => (StatusCode::OK, format!("degraded: {why}\n")),
        Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into()),
    }
}
