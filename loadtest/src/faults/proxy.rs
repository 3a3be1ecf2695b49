//! A TCP proxy in front of a room-svc's link listener that can cut chosen
//! msg-svcs off from it. It learns whose link a connection is from the
//! link's first frame (the msg-svc's Hello); while that node is cut, its
//! links are closed and new ones are closed right after their Hello, as a
//! network that lost the route between the two hosts would.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{ToRoomSvc, to_room_svc};
use chatroom_proto::framing::length;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
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

    /// Relays every link to `upstream` until the task is aborted.
    pub fn start(self, upstream: String, cuts: &Cuts) -> JoinHandle<()> {
        let cuts = cuts.0.subscribe();
        tokio::spawn(async move {
            while let Ok((down, _)) = self.listener.accept().await {
                tokio::spawn(relay(down, upstream.clone(), cuts.clone()));
            }
        })
    }
}

async fn relay(mut down: TcpStream, upstream: String, mut cuts: watch::Receiver<BTreeSet<String>>) {
    let mut hello = BytesMut::new();
    let node = match tokio::time::timeout(HELLO_WITHIN, read_hello(&mut down, &mut hello)).await {
        Ok(Ok(node)) => node,
        Ok(Err(error)) => return debug!(%error, "link without a hello; closed"),
        Err(_) => return debug!("link without a hello in time; closed"),
    };
    if cuts.borrow().contains(&node) {
        return debug!(node, "cut off: link closed after its hello");
    }
    let Ok(mut up) = TcpStream::connect(&upstream).await else {
        return debug!(node, upstream, "room-svc unreachable; link closed");
    };
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    if up.write_all(&hello).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
        _ = cuts.wait_for(|cut| cut.contains(&node)) => {
            debug!(node, "cut off: link closed");
        }
    }
}

/// Reads until `buf` holds the link's first frame; returns the node id its
/// Hello names.
async fn read_hello(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<String> {
    loop {
        let len = length::peek_len(buf, MAX_HELLO)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
        if let Some(len) = len
            && buf.len() >= length::PREFIX_LEN + len
        {
            let body = &buf[length::PREFIX_LEN..length::PREFIX_LEN + len];
            let frame = ToRoomSvc::decode(body)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            return match frame.body {
                Some(to_room_svc::Body::Hello(hello)) => Ok(hello.node_id),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the first frame is not a hello",
                )),
            };
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}
