//! The node's HTTP surface: liveness, readiness and metrics, and in the
//! embedded server the admin API.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::{MsgNode, Readiness};

/// Serves HTTP, with the routes of `admin` if given, until `stop`.
pub(crate) async fn serve(
    node: Arc<MsgNode>,
    listener: TcpListener,
    admin: Option<Router>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(node);
    if let Some(admin) = admin {
        app = app.merge(admin);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn metrics(State(node): State<Arc<MsgNode>>) -> String {
    let members = node.view.members.borrow().clone();
    node.metrics
        .render(node.sessions.len(), node.room_count(), &members)
}

/// 200 while serving (the body says `degraded` and why when something the
/// node depends on is unreachable but clients are still served), 503 while
/// draining.
async fn ready(State(node): State<Arc<MsgNode>>) -> (StatusCode, String) {
    match node.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n".into()),
        Readiness::Degraded(why) => (StatusCode::OK, format!("degraded: {why}\n")),
        Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into()),
    }
}
