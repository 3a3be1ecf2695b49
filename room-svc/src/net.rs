//! Node links, room side: accepts msg-svc connections, reads each one's
//! Hello, and carries frames between the socket and the room service. A
//! closed link detaches its node at once; the node subscribes again when it
//! reconnects.

use std::time::Duration;

use chatroom_cluster::link::wire::{self, FrameReader};
use chatroom_cluster::serve;
use chatroom_proto::cluster::v1::{ToRoomSvc, to_room_svc};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::service::RoomService;

/// Frames queued for one msg-svc before the room workers wait on it.
const DOWN_QUEUE: usize = 65_536;
/// How long a new link may take to say who it is.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// Accepts links until `stop`.
pub(crate) async fn serve_links(
    rooms: RoomService,
    listener: TcpListener,
    stop: CancellationToken,
) {
    while let Some((stream, remote)) = serve::accept(&listener, &stop).await {
        let _ = stream.set_nodelay(true);
        let span = info_span!("link", %remote);
        tokio::spawn(link(rooms.clone(), stream, stop.clone()).instrument(span));
    }
}

async fn link(rooms: RoomService, stream: TcpStream, stop: CancellationToken) {
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let node_id = match tokio::time::timeout(HELLO_WITHIN, reader.next::<ToRoomSvc>()).await {
        Ok(Ok(Some(ToRoomSvc {
            body: Some(to_room_svc::Body::Hello(hello)),
        }))) if chatroom_proto::ids::check_id(&hello.node_id).is_ok() => hello.node_id,
        other => {
            debug!(?other, "link closed: no valid Hello first");
            return;
        }
    };
    let (down_tx, mut down_rx) = mpsc::channel(DOWN_QUEUE);
    let port = rooms.connect_node(&node_id, down_tx);
    info!(node = %node_id, "msg-svc linked");
    let reading = async {
        loop {
            match reader.next::<ToRoomSvc>().await {
                Ok(Some(frame)) => {
                    if port.send(frame).await.is_err() {
                        return "the room service stopped".to_owned();
                    }
                }
                Ok(None) => return "closed by the msg-svc".to_owned(),
                Err(error) => return error.to_string(),
            }
        }
    };
    let reason = tokio::select! {
        () = stop.cancelled() => "shutting down".to_owned(),
        reason = reading => reason,
        written = wire::write_frames(write, &mut down_rx) => match written {
            Ok(()) => "the room service dropped the node".to_owned(),
            Err(error) => error.to_string(),
        },
    };
    rooms.disconnect(&port).await;
    info!(node = %node_id, %reason, "msg-svc link closed");
}
