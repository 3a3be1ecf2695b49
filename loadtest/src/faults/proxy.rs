//! A TCP proxy in front of a room-svc's link listener that can cut chosen
//! msg-svcs off from it. It learns whose link a connection is from the
//! link's first frame (the msg-svc's Hello, read with the node link's
//! codec); while that node is cut, its links are closed and new ones are
//! closed right after their Hello, as a network that lost the route between
//! the two hosts would.
//!
//! Node links are mutual TLS, so the proxy reads the Hello the way a host
//! holding the cluster's link certificates could: it ends the msg-svc's TLS
//! as a room service would and opens its own to the room service as a
//! msg-svc would (test infrastructure with the cluster's keys, not an
//! attack on them).

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chatroom_cluster::link::tls::{self, ClientConfig, ServerConfig};
use chatroom_cluster::link::wire::LinkCodec;
use chatroom_proto::cluster::v1::{ToMsgSvc, ToRoomSvc, to_room_svc};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::{Encoder, FramedRead};
use tracing::debug;

/// Largest Hello frame read; a link's Hello is a node id.
const MAX_HELLO: usize = 4 * 1024;
/// How long a new link may take to say Hello.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// The msg-svc node ids cut off from every proxied room-svc.
#[derive(Debug)]
pub struct Cuts(watch::Sender<BTreeSet<String>>);

impl Default for Cuts {
    fn default() -> Self {
        Self(watch::Sender::new(BTreeSet::new()))
    }
}

impl Cuts {
    /// Cuts `node` off: its links close now and cannot be reopened.
    pub fn cut(&self, node: &str) {
        self.0.send_modify(|cut| {
            cut.insert(node.to_owned());
        });
    }

    /// Lets `node` reconnect.
    pub fn heal(&self, node: &str) {
        self.0.send_modify(|cut| {
            cut.remove(node);
        });
    }
}

/// The TLS both sides of a proxied link speak: the proxy ends the msg-svc's
/// as a room service and opens the room service's as a msg-svc.
#[derive(Debug, Clone)]
pub struct ProxyTls {
    /// A room service's settings (its certificate).
    pub accept: Arc<ServerConfig>,
    /// A msg-svc's settings (its certificate).
    pub connect: Arc<ClientConfig>,
}

/// Either end of a relayed link, in TLS or not.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A proxy's listener, bound before the room-svc behind it starts (so the
/// room-svc can register the proxy's address as its own).
#[derive(Debug)]
pub struct LinkProxy {
    listener: TcpListener,
}

impl LinkProxy {
    /// Binds a loopback port.
    pub async fn bind() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self { listener })
    }

    /// Where msg-svcs should connect.
    pub fn addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Relays every link to `upstream` until the task is aborted, in TLS
    /// on both sides when `tls` is given.
    pub fn start(self, upstream: String, cuts: &Cuts, tls: Option<ProxyTls>) -> JoinHandle<()> {
        let cuts = cuts.0.subscribe();
        tokio::spawn(async move {
            while let Ok((down, _)) = self.listener.accept().await {
                let _ = down.set_nodelay(true);
                tokio::spawn(relay(down, upstream.clone(), cuts.clone(), tls.clone()));
            }
        })
    }
}

async fn relay(
    down: TcpStream,
    upstream: String,
    cuts: watch::Receiver<BTreeSet<String>>,
    tls: Option<ProxyTls>,
) {
    let down: Box<dyn Io> = match &tls {
        None => Box::new(down),
        Some(tls) => {
            let accepting = TlsAcceptor::from(Arc::clone(&tls.accept)).accept(down);
            match tokio::time::timeout(HELLO_WITHIN, accepting).await {
                Ok(Ok(down)) => Box::new(down),
                Ok(Err(error)) => return debug!(%error, "link without a valid handshake; closed"),
                Err(_) => return debug!("link without a handshake in time; closed"),
            }
        }
    };
    relay_link(down, upstream, cuts, tls.map(|tls| tls.connect)).await;
}

async fn connect_up(upstream: &str, tls: Option<Arc<ClientConfig>>) -> io::Result<Box<dyn Io>> {
    let up = TcpStream::connect(upstream).await?;
    let _ = up.set_nodelay(true);
    Ok(match tls {
        None => Box::new(up),
        Some(config) => Box::new(
            TlsConnector::from(config)
                .connect(tls::room_svc_name(), up)
                .await?,
        ),
    })
}

async fn relay_link(
    down: Box<dyn Io>,
    upstream: String,
    mut cuts: watch::Receiver<BTreeSet<String>>,
    tls: Option<Arc<ClientConfig>>,
) {
    let mut link = FramedRead::new(down, LinkCodec::<ToRoomSvc, ToMsgSvc>::with_max(MAX_HELLO));
    let hello = match tokio::time::timeout(HELLO_WITHIN, link.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(error))) => return debug!(%error, "link without a hello; closed"),
        Ok(None) => return debug!("link closed before its hello"),
        Err(_) => return debug!("link without a hello in time; closed"),
    };
    let Some(to_room_svc::Body::Hello(greeting)) = &hello.body else {
        return debug!("the link's first frame is not a hello; closed");
    };
    let node = greeting.node_id.clone();
    if cuts.borrow().contains(&node) {
        return debug!(node, "cut off: link closed after its hello");
    }
    // As a msg-svc would: a room service that does not finish its side
    // of the handshake in time (stopped, say) is not linked to.
    let Ok(Ok(mut up)) = tokio::time::timeout(HELLO_WITHIN, connect_up(&upstream, tls)).await
    else {
        return debug!(node, upstream, "room-svc unreachable; link closed");
    };
    // The room-svc gets the Hello as sent (a Hello re-encodes to the same
    // bytes), then whatever the msg-svc sent after it.
    let parts = link.into_parts();
    let mut down = parts.io;
    let mut first = BytesMut::new();
    if LinkCodec::<ToMsgSvc, ToRoomSvc>::default()
        .encode(hello, &mut first)
        .is_err()
    {
        return;
    }
    first.extend_from_slice(&parts.read_buf);
    if up.write_all(&first).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
        _ = cuts.wait_for(|cut| cut.contains(&node)) => {
            debug!(node, "cut off: link closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use chatroom_proto::cluster::v1::{Hello, Unsubscribe};
    use tokio::io::AsyncReadExt;

    use super::*;

    fn framed(frames: &[ToRoomSvc]) -> Vec<u8> {
        let mut codec = LinkCodec::<ToMsgSvc, ToRoomSvc>::default();
        let mut out = BytesMut::new();
        for frame in frames {
            codec.encode(frame.clone(), &mut out).unwrap();
        }
        out.to_vec()
    }

    #[tokio::test]
    async fn a_link_is_relayed_byte_for_byte_until_its_node_is_cut() {
        let room_svc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = LinkProxy::bind().await.unwrap();
        let proxy_addr = proxy.addr().unwrap();
        let cuts = Cuts::default();
        let relaying = proxy.start(room_svc.local_addr().unwrap().to_string(), &cuts, None);

        // The Hello and the frame after it arrive in one read.
        let stream = framed(&[
            ToRoomSvc {
                body: Some(to_room_svc::Body::Hello(Hello {
                    node_id: "m1".into(),
                })),
            },
            ToRoomSvc {
                body: Some(to_room_svc::Body::Unsubscribe(Unsubscribe {
                    room_id: "lobby".into(),
                })),
            },
        ]);
        let mut msg_svc = TcpStream::connect(proxy_addr).await.unwrap();
        msg_svc.write_all(&stream).await.unwrap();
        let (mut linked, _) = room_svc.accept().await.unwrap();
        let mut relayed = vec![0; stream.len()];
        linked.read_exact(&mut relayed).await.unwrap();
        assert_eq!(relayed, stream);

        cuts.cut("m1");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(HELLO_WITHIN, linked.read_to_end(&mut rest))
            .await
            .expect("the cut closes the link");
        assert!(closed.is_err() || rest.is_empty());
        relaying.abort();
    }
}
