//! What every serving process needs: accepting connections until told to
//! stop, serving its HTTP port with bounds, and hearing that it is told to
//! stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Most HTTP connections a node holds at once; more are closed on accept.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers (from the
/// connection's start, or the end of the previous response).
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The next connection, or `None` once `stop` is cancelled. A failing
/// accept (out of descriptors, say) backs off briefly instead of spinning.
pub async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves `router` over HTTP/1.1 on `listener` until `stop`, then lets
/// requests in progress finish. Unlike `axum::serve`, it bounds what a
/// client can hold: [`MAX_HTTP_CONNECTIONS`] connections, and
/// [`HTTP_HEADER_TIMEOUT`] to send a request's headers, so a slow or silent
/// client cannot keep a connection for ever.
pub async fn http(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    while let Some((stream, remote)) = accept(&listener, &stop).await {
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%remote, "http connection limit reached; closed");
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HTTP_HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                debug!(%remote, %error, "http connection ended");
            }
        });
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}
