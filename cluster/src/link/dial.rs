//! A msg-svc's side of the node links: one link to each room service in a
//! cluster, and the routing of each frame to its room's owner by placement.
//!
//! One link per room service, kept open and re-opened with backoff. Every
//! link feeds the same downlink channel. When a link comes (back) up the node
//! is told, because the room service forgot this node when the old link
//! dropped and must be re-subscribed (soft state).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chatroom_proto::cluster::v1::{Hello, ToMsgSvc, ToRoomSvc, to_room_svc};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug, info, info_span, warn};

use super::tls::{HANDSHAKE_WITHIN, room_svc_name};
use super::wire;
use super::{DownLink, LinkError, UpLink};
use crate::membership::Members;
use crate::metrics::LinkMetrics;

/// Frames queued per link before senders are refused with `Full`.
const LINK_QUEUE: usize = 65_536;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest pause between attempts to reach a room service.
const RECONNECT: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// A link to a room service came up or went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected and greeted: the room service knows nothing of us yet.
    Up(String),
    /// Lost; frames for its rooms are refused until it is back or its rooms
    /// move.
    Down(String),
}

#[derive(Debug)]
struct RoomLink {
    addr: String,
    tx: mpsc::Sender<ToRoomSvc>,
    up: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for RoomLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A msg-svc's way to the room services: placement plus links. It is the
/// node's [`UpLink`] in a cluster.
#[derive(Debug)]
pub struct RoomLinks {
    me: String,
    members: watch::Receiver<Arc<Members>>,
    links: Mutex<HashMap<String, RoomLink>>,
    down: DownLink,
    events: mpsc::Sender<LinkEvent>,
    metrics: LinkMetrics,
    tls: Option<Arc<ClientConfig>>,
}

/// Where a msg-svc's links go and what they report to.
#[derive(Debug)]
pub struct DialConfig {
    /// This node's id, said in every link's Hello.
    pub me: String,
    /// Where what the room services send goes.
    pub down: DownLink,
    /// Links coming up and going down.
    pub events: mpsc::Sender<LinkEvent>,
    /// Reconnects and refused handshakes are counted here.
    pub metrics: LinkMetrics,
    /// Mutual TLS with the cluster CA; `None`: plaintext links.
    pub tls: Option<Arc<ClientConfig>>,
}

impl RoomLinks {
    /// Opens links to the room services in `members`, following its changes,
    /// as `config` says: each greets its room service, hands what it reads
    /// on, and reports coming up and going down.
    pub fn start(config: DialConfig, members: watch::Receiver<Arc<Members>>) -> Arc<Self> {
        let DialConfig {
            me,
            down,
            events,
            metrics,
            tls,
        } = config;
        let room_links = Arc::new(Self {
            me,
            members: members.clone(),
            links: Mutex::default(),
            down,
            events,
            metrics,
            tls,
        });
        room_links.sync_links(&members.borrow());
        let weak = Arc::downgrade(&room_links);
        let mut changes = members;
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(room_links) = weak.upgrade() else {
                    return;
                };
                let members = changes.borrow_and_update().clone();
                room_links.sync_links(&members);
            }
        });
        room_links
    }

    /// One link per room service in `members`: new ones opened, gone (or
    /// moved) ones closed, and reported down: whatever was in flight on
    /// them will never be answered (a stalled room service, say, that
    /// ZooKeeper gave up on).
    fn sync_links(&self, members: &Members) {
        let mut links = self.links.lock();
        let mut closed = Vec::new();
        links.retain(|id, link| {
            let keep = members
                .room_svcs
                .iter()
                .any(|n| n.id == *id && n.link_addr.as_deref() == Some(link.addr.as_str()));
            if !keep {
                info!(room_svc = %id, "closing the link to a room service that left");
                closed.push(id.clone());
            }
            keep
        });
        if !closed.is_empty() {
            let events = self.events.clone();
            tokio::spawn(async move {
                for id in closed {
                    // Nobody listens once the node is stopping.
                    let _ = events.send(LinkEvent::Down(id)).await;
                }
            });
        }
        for node in &members.room_svcs {
            let Some(addr) = node.link_addr.clone() else {
                warn!(room_svc = %node.id, "room service registered without a link address");
                continue;
            };
            if links.contains_key(&node.id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(LINK_QUEUE);
            let up = Arc::new(AtomicBool::new(false));
            let link = Link {
                me: self.me.clone(),
                peer: node.id.clone(),
                addr: addr.clone(),
                up: Arc::clone(&up),
                down: self.down.clone(),
                events: self.events.clone(),
                metrics: self.metrics.clone(),
                tls: self.tls.clone(),
            };
            let span = info_span!("link", room_svc = %node.id, %addr);
            let task = tokio::spawn(link.run(rx).instrument(span));
            links.insert(node.id.clone(), RoomLink { addr, tx, up, task });
        }
    }
}

impl UpLink for RoomLinks {
    fn try_send(&self, frame: ToRoomSvc) -> Result<(), LinkError> {
        let owner = frame
            .room_id()
            .and_then(|room| self.owner_of(room))
            .ok_or(LinkError::Down)?;
        let links = self.links.lock();
        let link = links.get(&owner).ok_or(LinkError::Down)?;
        if !link.up.load(Ordering::Acquire) {
            return Err(LinkError::Down);
        }
        link.tx.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => LinkError::Full,
            mpsc::error::TrySendError::Closed(_) => LinkError::Down,
        })
    }

    fn owner_of(&self, room_id: &str) -> Option<String> {
        self.members
            .borrow()
            .room_owner(room_id)
            .map(|node| node.id.clone())
    }
}

/// One room service's link, run until the link is dropped.
struct Link {
    me: String,
    peer: String,
    addr: String,
    up: Arc<AtomicBool>,
    down: DownLink,
    events: mpsc::Sender<LinkEvent>,
    metrics: LinkMetrics,
    tls: Option<Arc<ClientConfig>>,
}

impl Link {
    async fn run(self, mut rx: mpsc::Receiver<ToRoomSvc>) {
        let mut pause = RECONNECT.0;
        // Whether the link was ever up: coming up again is a reconnect.
        let mut was_up = false;
        loop {
            let stream =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        debug!(%error, "cannot reach the room service yet");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RECONNECT.1);
                        continue;
                    }
                    Err(_) => {
                        debug!("connecting to the room service timed out");
                        continue;
                    }
                };
            let _ = stream.set_nodelay(true);
            let served = match &self.tls {
                None => self.serve(stream, &mut rx, &mut was_up).await,
                Some(tls) => {
                    let handshake =
                        TlsConnector::from(Arc::clone(tls)).connect(room_svc_name(), stream);
                    match tokio::time::timeout(HANDSHAKE_WITHIN, handshake).await {
                        Ok(Ok(stream)) => self.serve(stream, &mut rx, &mut was_up).await,
                        Ok(Err(error)) => {
                            self.refused(&error.to_string(), &mut pause).await;
                            continue;
                        }
                        Err(_) => {
                            self.refused("no TLS handshake in time", &mut pause).await;
                            continue;
                        }
                    }
                }
            };
            let refused = match served {
                Served::Dropped => return,
                Served::Lost(reason) => {
                    warn!(reason, "link to the room service lost");
                    None
                }
                Served::Refused(reason) => Some(reason),
            };
            self.up.store(false, Ordering::Release);
            let _ = self.events.send(LinkEvent::Down(self.peer.clone())).await;
            // Whatever was queued was meant for the lost connection: the
            // room service forgot us with it.
            while rx.try_recv().is_ok() {}
            match refused {
                Some(reason) => self.refused(&reason, &mut pause).await,
                None => {
                    pause = RECONNECT.0;
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// The TLS handshake failed, on our side or the room service's: counted,
    /// and tried again later (backing off), in case a certificate is being
    /// replaced.
    async fn refused(&self, reason: &str, pause: &mut Duration) {
        self.metrics.refused();
        warn!(reason, "link refused: TLS handshake failed");
        tokio::time::sleep(*pause).await;
        *pause = (*pause * 2).min(RECONNECT.1);
    }

    async fn serve<S>(
        &self,
        stream: S,
        rx: &mut mpsc::Receiver<ToRoomSvc>,
        was_up: &mut bool,
    ) -> Served
    where
        S: AsyncRead + AsyncWrite + Send,
    {
        let (read, write) = tokio::io::split(stream);
        let mut writer = wire::writer::<_, ToMsgSvc, ToRoomSvc>(write);
        let hello = ToRoomSvc {
            body: Some(to_room_svc::Body::Hello(Hello {
                node_id: self.me.clone(),
            })),
        };
        if let Err(error) = writer.send(hello).await {
            return Served::Lost(error.to_string());
        }
        if std::mem::replace(was_up, true) {
            self.metrics.reconnected();
        }
        self.up.store(true, Ordering::Release);
        info!("link to the room service up");
        if self
            .events
            .send(LinkEvent::Up(self.peer.clone()))
            .await
            .is_err()
        {
            return Served::Dropped;
        }
        let mut reader = wire::reader::<_, ToMsgSvc, ToRoomSvc>(read);
        let reading = async {
            let mut heard = false;
            loop {
                match reader.next().await {
                    Some(Ok(frame)) => {
                        heard = true;
                        if self.down.send(frame).await.is_err() {
                            return Served::Dropped;
                        }
                    }
                    None => return Served::Lost("closed by the room service".into()),
                    // In TLS 1.3 the room service judges our certificate
                    // after our side of the handshake is done: its refusal
                    // is an alert in place of the first frame.
                    Some(Err(error)) if !heard && is_tls_alert(&error) => {
                        return Served::Refused(error.to_string());
                    }
                    Some(Err(error)) => return Served::Lost(error.to_string()),
                }
            }
        };
        tokio::select! {
            served = reading => served,
            written = wire::write_frames(&mut writer, rx) => match written {
                // Our end of the queue is gone: the link was dropped.
                Ok(()) => Served::Dropped,
                Err(error) => Served::Lost(error.to_string()),
            },
        }
    }
}

/// Whether `error` is the peer's TLS alert (a refused certificate).
fn is_tls_alert(error: &wire::LinkIoError) -> bool {
    let wire::LinkIoError::Io(error) = error else {
        return false;
    };
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| matches!(tls, rustls::Error::AlertReceived(_)))
}

enum Served {
    /// The link was dropped by the node: stop for good.
    Dropped,
    /// The room service refused our certificate: back off.
    Refused(String),
    /// The connection failed: reconnect.
    Lost(String),
}
