//! A real HTTP/1.1 server on loopback for the hooks' tests: each request's
//! body is read whole and handed to the test's handler. Stopping it closes
//! the listener and every connection, as a crashed backend would.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A server answering with a handler until stopped or dropped.
#[derive(Debug)]
pub(crate) struct TestServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl TestServer {
    /// Serves `handler` on `addr` (port 0 for any free port).
    pub(crate) async fn start<H, F>(addr: SocketAddr, handler: H) -> Self
    where
        H: Fn(Request<Bytes>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await.expect("bind on loopback");
        let addr = listener.local_addr().expect("a bound address");
        let handler = Arc::new(handler);
        let accept = tokio::spawn(async move {
            // Owned here so that stopping the accept loop aborts every
            // connection with it.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let handler = Arc::clone(&handler);
                        connections.spawn(async move {
                            let service = service_fn(move |request: Request<Incoming>| {
                                let handler = Arc::clone(&handler);
                                async move {
                                    let (parts, body) = request.into_parts();
                                    let body = body.collect().await?.to_bytes();
                                    Ok::<_, hyper::Error>(
                                        handler(Request::from_parts(parts, body)).await,
                                    )
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Self { addr, accept }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn url(&self) -> Uri {
        url_of(self.addr)
    }

    /// Closes the listener and every connection, and waits until they are.
    pub(crate) async fn stop(mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The hook URL of a server at `addr`.
pub(crate) fn url_of(addr: SocketAddr) -> Uri {
    format!("http://{addr}/hook").parse().expect("a valid url")
}

/// A loopback address nothing listens on (bound, then closed).
pub(crate) async fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    listener.local_addr().expect("a bound address")
}

/// A response with `status` and a JSON `body`.
pub(crate) fn json_response(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        CONTENT_TYPE,
        "application/json".parse().expect("a valid header"),
    );
    response
}

/// The receiver's clock, unix seconds.
pub(crate) fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}
