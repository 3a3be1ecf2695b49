//! A room service's side of the node links: accepts msg-svc connections,
//! reads each one's Hello, and carries frames between the socket and the
//! room service. A closed link detaches its node at once; the node
//! subscribes again when it reconnects.
//!
//! The room service is seen through [`RoomEnd`], which room-svc implements
//! (this crate cannot depend on it) and tests implement with channels.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatroom_proto::cluster::v1::{ToMsgSvc, ToRoomSvc, to_room_svc};
use futures_util::StreamExt;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::tls::HANDSHAKE_WITHIN;
use super::wire;
use super::{DownLink, LinkError};
use crate::metrics::LinkMetrics;
use crate::serve;

/// Frames queued for one msg-svc before the room workers wait on it.
const DOWN_QUEUE: usize = 65_536;
/// How long a new link may take to say who it is.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// A room service as the links it accepts see it.
pub trait RoomEnd: Clone + Send + Sync + 'static {
    /// What a linked node's frames are handed to.
    type Port: Send + Sync + 'static;

    /// Attaches the msg-svc that said Hello as `node_id`; what the rooms
    /// send it goes to `down`.
    fn attach(&self, node_id: &str, down: DownLink) -> Self::Port;

    /// Hands one of the node's frames to its room, waiting while the room is
    /// busy, so that a busy room slows the link's reader. An error closes the
    /// link.
    fn deliver(
        &self,
        port: &Self::Port,
        frame: ToRoomSvc,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Detaches the node whose link closed: it is forgotten everywhere until
    /// it links again and subscribes anew.
    fn detach(&self, port: &Self::Port) -> impl Future<Output = ()> + Send;
}

/// Accepts links until `stop`; each runs until it closes or `stop`. With
/// `tls`, a link must first complete the handshake with a msg-svc's
/// certificate of the cluster CA; one that does not is closed and counted
/// in `metrics`. Without it, links are plaintext.
pub async fn serve_links<R: RoomEnd>(
    rooms: R,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    metrics: LinkMetrics,
    stop: CancellationToken,
) {
    while let Some((stream, remote)) = serve::accept(&listener, &stop).await {
        let _ = stream.set_nodelay(true);
        let span = info_span!("link", %remote);
        let (rooms, stop) = (rooms.clone(), stop.clone());
        let Some(tls) = tls
            .as_ref()
            .map(|config| TlsAcceptor::from(Arc::clone(config)))
        else {
            tokio::spawn(link(rooms, stream, stop).instrument(span));
            continue;
        };
        let metrics = metrics.clone();
        let secured = async move {
            match tokio::time::timeout(HANDSHAKE_WITHIN, tls.accept(stream)).await {
                Ok(Ok(stream)) => link(rooms, stream, stop).await,
                Ok(Err(error)) => {
                    metrics.refused();
                    warn!(%error, "link refused: TLS handshake failed");
                }
                Err(_) => {
                    metrics.refused();
                    warn!("link refused: no TLS handshake within {HANDSHAKE_WITHIN:?}");
                }
            }
        };
        tokio::spawn(secured.instrument(span));
    }
}

async fn link<R, S>(rooms: R, stream: S, stop: CancellationToken)
where
    R: RoomEnd,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let mut reader = wire::reader::<_, ToRoomSvc, ToMsgSvc>(read);
    let node_id = match tokio::time::timeout(HELLO_WITHIN, reader.next()).await {
        Ok(Some(Ok(ToRoomSvc {
            body: Some(to_room_svc::Body::Hello(hello)),
        }))) if chatroom_proto::ids::check_id(&hello.node_id).is_ok() => hello.node_id,
        other => {
            debug!(?other, "link closed: no valid Hello first");
            return;
        }
    };
    let (down_tx, mut down_rx) = mpsc::channel(DOWN_QUEUE);
    let port = rooms.attach(&node_id, down_tx);
    info!(node = %node_id, "msg-svc linked");
    let reading = async {
        loop {
            match reader.next().await {
                Some(Ok(frame)) => {
                    if rooms.deliver(&port, frame).await.is_err() {
                        return "the room service stopped".to_owned();
                    }
                }
                None => return "closed by the msg-svc".to_owned(),
                Some(Err(error)) => return error.to_string(),
            }
        }
    };
    let mut writer = wire::writer::<_, ToRoomSvc, ToMsgSvc>(write);
    let reason = tokio::select! {
        () = stop.cancelled() => "shutting down".to_owned(),
        reason = reading => reason,
        written = wire::write_frames(&mut writer, &mut down_rx) => match written {
            Ok(()) => "the room service dropped the node".to_owned(),
            Err(error) => error.to_string(),
        },
    };
    rooms.detach(&port).await;
    info!(node = %node_id, %reason, "msg-svc link closed");
}
