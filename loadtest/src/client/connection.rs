//! The socket side: connecting (following redirects) and the one task per
//! connection that owns the WebSocket, runs the [`SessionCore`] on what
//! arrives, answers waiting callers and sends the heartbeat.
//!
//! [`Client`] handles and the task share the core, the outgoing frames and
//! the waiting callers behind one `std::sync::Mutex`: every critical section
//! is a few map operations with no `.await` inside, so a blocking lock is
//! cheaper than an async one, and it lets [`Client::cursor`] answer
//! synchronously, even after the connection ended (to resume elsewhere).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chatroom_proto::Message as _;
use chatroom_proto::v1::{
    self, ClientFrame, ConnectAck, Cursor, JoinAck, PullResult, SendAck, ServerFrame,
    server_frame::Body,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use super::core::{
    CoreConfig, Handshake, JoinOptions, Output, SessionCore, body_name, connect_frame,
    handshake_reply,
};
use super::error::ClientError;
use super::events::{CloseReason, Event, Events};

/// Where the embedded server listens by default.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:7400/ws";
/// Largest client frame the server accepts.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Largest server frame this client accepts.
pub const MAX_SERVER_FRAME: usize = 1024 * 1024;
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 3;

/// Initial read buffer: room for a few notifies; it grows for a large pull
/// result. tungstenite's default (128 KiB, allocated up front) would cost
/// gigabytes over the harness's tens of thousands of connections.
const READ_BUFFER: usize = 4 * 1024;
/// Frames queued with `feed` are written once this much is buffered, or on
/// the flush that ends each batch: one write per batch, not per frame.
const WRITE_BUFFER: usize = 8 * 1024;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Heartbeat used if the server announces none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Silent heartbeat intervals after which the server is taken for gone
/// (the server closes a silent client after the same number).
const SILENT_INTERVALS: u32 = 3;

type Ws = WebSocketStream<TcpStream>;
type Waiter = oneshot::Sender<Result<Body, v1::Error>>;

/// How to connect and behave.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/path` of any msg-svc node.
    pub url: String,
    /// The HS256 token (see [`dev_token`](super::dev_token)).
    pub token: String,
    /// Identifies the device: a second session with the same user and
    /// device replaces the first.
    pub device_id: String,
    /// Pull by itself when behind (the normal client). Off, the client only
    /// applies inline deltas and reports [`Event::Notified`], so a test can
    /// play a client that never pulls.
    pub auto_pull: bool,
    /// `limit` of automatic pulls; 0 lets the server choose.
    pub pull_limit: u32,
    /// How long a request waits for its answer.
    pub request_timeout: Duration,
    /// How long connecting may take, redirects included.
    pub connect_timeout: Duration,
    /// How many frames' worth of events wait for the application before the
    /// connection stops reading (see [`Events`]).
    pub event_capacity: usize,
    /// Local address to connect from (any 127.x.y.z spreads loopback
    /// connections over more source ports); `None` lets the kernel choose.
    pub bind_addr: Option<IpAddr>,
}

impl ClientConfig {
    /// Defaults for everything but the address and the token; the device id
    /// is random, so two clients never replace each other by accident.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            device_id: format!("dev-{:016x}", rand::random::<u64>()),
            auto_pull: true,
            pull_limit: 0,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 256,
            bind_addr: None,
        }
    }
}

/// A handle on one connection. Cheap to clone; the connection closes when
/// [`Client::close`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// Owned by the [`Client`] clones only (not by the task), so that dropping
/// the last one closes the connection.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.request_close();
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the task when `state` has something for it.
    wake: Notify,
    session: Session,
    request_timeout: Duration,
    next_client_msg_id: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Session {
    session_id: u64,
    user_id: String,
    heartbeat: Duration,
    max_rooms: u32,
    url: String,
}

struct State {
    core: SessionCore,
    /// Encoded frames for the task to write.
    outbox: Vec<Bytes>,
    waiters: HashMap<u64, Waiter>,
    closed: Option<CloseReason>,
    close_requested: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still
        // consistent (each section is a handful of inserts and removes).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn request_close(&self) {
        self.lock().close_requested = true;
        self.wake.notify_one();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let session = &self.handle.shared.session;
        f.debug_struct("Client")
            .field("session_id", &session.session_id)
            .field("user_id", &session.user_id)
            .field("url", &session.url)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, follows up to [`MAX_REDIRECTS`] redirects, and sends
    /// Connect; returns once the server accepted the session.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let (ws, ack, url) = tokio::time::timeout(config.connect_timeout, handshake(&config))
            .await
            .map_err(|_| ClientError::Timeout(config.connect_timeout))??;
        let heartbeat = match ack.heartbeat_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(ms.into()),
        };
        let span = tracing::debug_span!("client", user = %ack.user_id, session = ack.session_id);
        let core = SessionCore::new(CoreConfig {
            auto_pull: config.auto_pull,
            pull_limit: config.pull_limit,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                outbox: Vec::new(),
                waiters: HashMap::new(),
                closed: None,
                close_requested: false,
            }),
            wake: Notify::new(),
            session: Session {
                session_id: ack.session_id,
                user_id: ack.user_id,
                heartbeat,
                max_rooms: ack.max_rooms,
                url,
            },
            request_timeout: config.request_timeout,
            // Random start: another client of the same user (another device
            // or process) must not reuse our ids, or the server would take
            // its messages for our retries.
            next_client_msg_id: AtomicU64::new((rand::random::<u64>() >> 2).max(1)),
            task: Mutex::new(None),
        });
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let connection = Connection {
            shared: shared.clone(),
            held: None,
            out: Output::default(),
            outgoing: Vec::new(),
        };
        let task = tokio::spawn(connection.run(ws, events_tx).instrument(span));
        *shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        let client = Client {
            handle: Arc::new(Handle { shared }),
        };
        Ok((client, Events::new(events_rx)))
    }

    /// Joins `room`. A fresh join's `recent` messages are also delivered as
    /// [`Event::Message`]s, so the event stream alone is the room's feed.
    pub async fn join(&self, room: &str, options: JoinOptions) -> Result<JoinAck, ClientError> {
        match self.request(|core| core.join(room, options)).await? {
            Body::JoinAck(ack) => Ok(ack),
            other => Err(unexpected("join_ack", &other)),
        }
    }

    /// Leaves `room`; nothing more is delivered for it.
    pub async fn leave(&self, room: &str) -> Result<(), ClientError> {
        match self.request(|core| core.leave(room)).await? {
            Body::LeaveAck(_) => Ok(()),
            other => Err(unexpected("leave_ack", &other)),
        }
    }

    /// Posts a message with a fresh client message id.
    pub async fn send(
        &self,
        room: &str,
        kind: impl Into<i32>,
        payload: impl Into<Bytes>,
    ) -> Result<SendAck, ClientError> {
        self.send_with_id(room, self.next_client_msg_id(), kind, payload)
            .await
    }

    /// Posts a message with a chosen client message id: a retry with the
    /// same id gets the same ack and is not posted twice.
    pub async fn send_with_id(
        &self,
        room: &str,
        client_msg_id: u64,
        kind: impl Into<i32>,
        payload: impl Into<Bytes>,
    ) -> Result<SendAck, ClientError> {
        let (kind, payload) = (kind.into(), payload.into());
        match self
            .request(|core| core.send(room, client_msg_id, kind, payload))
            .await?
        {
            Body::SendAck(ack) => Ok(ack),
            other => Err(unexpected("send_ack", &other)),
        }
    }

    /// A client message id no other call on this client has used or will
    /// use; for [`Client::send_with_id`].
    pub fn next_client_msg_id(&self) -> u64 {
        self.shared()
            .next_client_msg_id
            .fetch_add(1, Ordering::Relaxed)
    }

    /// A raw Pull: the result goes to the caller only, the room's cursor
    /// and events are left alone.
    pub async fn pull(
        &self,
        room: &str,
        since: Cursor,
        limit: u32,
    ) -> Result<PullResult, ClientError> {
        match self.request(|core| core.pull(room, since, limit)).await? {
            Body::PullResult(result) => Ok(result),
            other => Err(unexpected("pull_result", &other)),
        }
    }

    /// The cursor of a joined room; still readable after the connection
    /// ended, to resume with [`JoinOptions::since`] on a new one.
    pub fn cursor(&self, room: &str) -> Option<Cursor> {
        self.shared().lock().core.cursor(room)
    }

    /// The member count the server last reported for a joined room.
    pub fn member_count(&self, room: &str) -> Option<u64> {
        self.shared().lock().core.member_count(room)
    }

    /// The server's id for this session.
    pub fn session_id(&self) -> u64 {
        self.shared().session.session_id
    }

    /// The user the token speaks for.
    pub fn user_id(&self) -> &str {
        &self.shared().session.user_id
    }

    /// How often a Ping goes out.
    pub fn heartbeat(&self) -> Duration {
        self.shared().session.heartbeat
    }

    /// How many rooms the server lets this session join.
    pub fn max_rooms(&self) -> u32 {
        self.shared().session.max_rooms
    }

    /// The address that accepted the session (after redirects).
    pub fn url(&self) -> &str {
        &self.shared().session.url
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared().lock().closed.clone()
    }

    /// Sends a close frame, waits briefly for the server's, and returns when
    /// the connection task has ended. Requests in flight fail with
    /// [`ClientError::Closed`].
    pub async fn close(&self) {
        let shared = self.shared();
        shared.request_close();
        let task = shared
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // A panicked task has nothing left to clean up.
            let _ = task.await;
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Queues the frame `build` makes and waits for its answer.
    async fn request(
        &self,
        build: impl FnOnce(&mut SessionCore) -> ClientFrame,
    ) -> Result<Body, ClientError> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        let request_id = {
            let mut state = shared.lock();
            if state.closed.is_some() || state.close_requested {
                return Err(ClientError::Closed);
            }
            let frame = build(&mut state.core);
            let len = frame.encoded_len();
            if len > MAX_CLIENT_FRAME {
                state.core.forget(frame.request_id);
                return Err(ClientError::FrameTooLarge(len));
            }
            state.outbox.push(frame.encode_to_vec().into());
            state.waiters.insert(frame.request_id, tx);
            frame.request_id
        };
        shared.wake.notify_one();
        match tokio::time::timeout(shared.request_timeout, rx).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(error))) => Err(ClientError::Server(error)),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                let mut state = shared.lock();
                state.waiters.remove(&request_id);
                state.core.give_up(request_id);
                Err(ClientError::Timeout(shared.request_timeout))
            }
        }
    }
}

fn unexpected(want: &str, got: &Body) -> ClientError {
    ClientError::Protocol(format!("expected {want}, got {}", body_name(Some(got))))
}

/// The connection task's state.
///
/// The event sender is passed alongside, not kept here, so that waiting for
/// room in it and handling a frame can borrow the two separately.
struct Connection {
    shared: Arc<Shared>,
    /// A batch the application had no room for. The socket is not read
    /// until it is delivered, so at most one batch waits here.
    held: Option<Vec<Event>>,
    out: Output,
    /// Encoded frames to write on this turn of the loop.
    outgoing: Vec<Bytes>,
}

impl Connection {
    async fn run(mut self, mut ws: Ws, events: mpsc::Sender<Vec<Event>>) {
        let reason = self.drive(&mut ws, &events).await;
        drop(ws);
        tracing::debug!(%reason, "connection closed");
        {
            let mut state = self.shared.lock();
            state.closed = Some(reason.clone());
            // Dropping the waiters fails their callers with `Closed`.
            state.waiters.clear();
            state.outbox.clear();
        }
        let mut batch = self.held.take().unwrap_or_default();
        batch.push(Event::Closed { reason });
        if let Err(TrySendError::Full(batch)) = events.try_send(batch) {
            // The application is behind: deliver the end when it catches
            // up, without keeping `close()` waiting for that.
            tokio::spawn(async move {
                // It may have dropped its receiver meanwhile: nobody to tell.
                let _ = events.send(batch).await;
            });
        }
    }

    async fn drive(&mut self, ws: &mut Ws, events: &mpsc::Sender<Vec<Event>>) -> CloseReason {
        let heartbeat = self.shared.session.heartbeat;
        // Spread the pings of clients that connected together.
        let first_ping = heartbeat.mul_f64(rand::random_range(0.5..1.0));
        let mut ping = tokio::time::interval_at(Instant::now() + first_ping, heartbeat);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            let close_requested = {
                let mut state = self.shared.lock();
                self.outgoing.append(&mut state.outbox);
                state.close_requested
            };
            if !self.outgoing.is_empty()
                && let Err(error) = write_all(ws, &mut self.outgoing).await
            {
                return CloseReason::Io(error.to_string());
            }
            if close_requested {
                close_with(ws, CloseCode::Normal, "client closing").await;
                return CloseReason::Local;
            }
            tokio::select! {
                biased;
                () = self.shared.wake.notified() => {}
                permit = events.reserve(), if self.held.is_some() => {
                    // Without a receiver the batch has nowhere to go.
                    let batch = self.held.take();
                    if let (Ok(permit), Some(batch)) = (permit, batch) {
                        permit.send(batch);
                    }
                    // The socket was not read meanwhile: that was not the
                    // server's silence.
                    last_heard = Instant::now();
                }
                message = ws.next(), if self.held.is_none() => {
                    last_heard = Instant::now();
                    if let Some(reason) = self.on_message(ws, message, events).await {
                        return reason;
                    }
                }
                _ = ping.tick() => {
                    if self.held.is_none() && last_heard.elapsed() > heartbeat * SILENT_INTERVALS {
                        return CloseReason::ServerSilent;
                    }
                    let frame = {
                        let mut state = self.shared.lock();
                        // Callers that gave up (dropped their future).
                        state.waiters.retain(|_, waiter| !waiter.is_closed());
                        state.core.ping()
                    };
                    self.outgoing.push(frame.encode_to_vec().into());
                }
            }
        }
    }

    /// Handles what the socket yielded; `Some` ends the connection.
    async fn on_message(
        &mut self,
        ws: &mut Ws,
        message: Option<Result<Message, tungstenite::Error>>,
        events: &mpsc::Sender<Vec<Event>>,
    ) -> Option<CloseReason> {
        match message {
            Some(Ok(Message::Binary(bytes))) => match ServerFrame::decode(bytes) {
                Ok(frame) => {
                    self.on_frame(frame, events);
                    None
                }
                Err(error) => {
                    close_with(ws, CloseCode::Protocol, "undecodable frame").await;
                    Some(CloseReason::Protocol(format!("undecodable frame: {error}")))
                }
            },
            Some(Ok(Message::Text(_))) => {
                close_with(ws, CloseCode::Unsupported, "text frames are not used").await;
                Some(CloseReason::Protocol("text frame".into()))
            }
            Some(Ok(Message::Close(frame))) => {
                // Sends the close reply tungstenite queued.
                let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
                let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                    (frame.code.into(), frame.reason.to_string())
                });
                Some(CloseReason::Server { code, reason })
            }
            Some(Ok(_)) => None,
            Some(Err(error)) => Some(CloseReason::Io(error.to_string())),
            None => Some(CloseReason::Io("connection ended".into())),
        }
    }

    fn on_frame(&mut self, frame: ServerFrame, events: &mpsc::Sender<Vec<Event>>) {
        {
            let mut state = self.shared.lock();
            let state = &mut *state;
            state.core.handle(frame, &mut self.out);
            for reply in self.out.replies.drain(..) {
                if let Some(waiter) = state.waiters.remove(&reply.request_id) {
                    // The caller may have stopped waiting: nothing to do.
                    let _ = waiter.send(reply.result);
                }
            }
        }
        for frame in self.out.frames.drain(..) {
            self.outgoing.push(frame.encode_to_vec().into());
        }
        if self.out.events.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.out.events);
        match events.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(batch)) => match &mut self.held {
                Some(held) => held.extend(batch),
                None => self.held = Some(batch),
            },
            // Nobody listens any more.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// Writes the frames and flushes once.
async fn write_all(ws: &mut Ws, frames: &mut Vec<Bytes>) -> Result<(), tungstenite::Error> {
    for frame in frames.drain(..) {
        ws.feed(Message::Binary(frame)).await?;
    }
    ws.flush().await
}

/// Sends a close frame and waits briefly for the server's.
async fn close_with(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Opens sessions until one is accepted or the redirects run out.
async fn handshake(config: &ClientConfig) -> Result<(Ws, ConnectAck, String), ClientError> {
    let hello = Bytes::from(connect_frame(&config.token, &config.device_id).encode_to_vec());
    if hello.len() > MAX_CLIENT_FRAME {
        return Err(ClientError::FrameTooLarge(hello.len()));
    }
    let mut url = config.url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut ws = open(&url, config.bind_addr).await?;
        ws.send(Message::Binary(hello.clone())).await?;
        match handshake_reply(read_frame(&mut ws).await?)? {
            Handshake::Accepted(ack) => return Ok((ws, ack, url)),
            Handshake::Redirect(next) => {
                tracing::debug!(from = %url, to = %next, "redirected");
                url = next;
            }
        }
    }
    Err(ClientError::TooManyRedirects(MAX_REDIRECTS))
}

/// The next protobuf frame, skipping WebSocket control frames.
async fn read_frame(ws: &mut Ws) -> Result<ServerFrame, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return ServerFrame::decode(bytes)
                    .map_err(|e| ClientError::Protocol(format!("undecodable frame: {e}")));
            }
            Some(Ok(Message::Text(_))) => return Err(ClientError::Protocol("text frame".into())),
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

/// A TCP connection to `url`'s host (from `bind` if given) and the
/// WebSocket handshake over it, with buffers sized for chat frames.
async fn open(url: &str, bind: Option<IpAddr>) -> Result<Ws, ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let request = url
        .into_client_request()
        .map_err(|e| invalid(e.to_string()))?;
    match request.uri().scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err(invalid("wss needs TLS, which this client lacks".into())),
        _ => return Err(invalid("the scheme must be ws".into())),
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| invalid("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host.as_str(), port)).await? {
        match connect_tcp(addr, bind).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let (ws, _response) =
                    tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                        .await?;
                return Ok(ws);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))
        .into())
}

async fn connect_tcp(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Room for the batch being written plus one largest frame; a bound,
        // not an allocation.
        .max_write_buffer_size(WRITE_BUFFER + 2 * MAX_CLIENT_FRAME)
        .max_message_size(Some(MAX_SERVER_FRAME))
        .max_frame_size(Some(MAX_SERVER_FRAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_urls_it_cannot_use() {
        for (url, why) in [
            ("wss://127.0.0.1:7400/ws", "TLS"),
            ("http://127.0.0.1:7400/ws", "scheme"),
            ("not a url", ""),
        ] {
            match open(url, None).await {
                Err(ClientError::InvalidUrl { url: got, reason }) => {
                    assert_eq!(got, url);
                    assert!(reason.contains(why), "{url}: {reason}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn connect_fails_cleanly_when_nobody_listens() {
        // Bind then drop a listener: the port is closed, so the connect is
        // refused (not a test against a server).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = ClientConfig::new(format!("ws://127.0.0.1:{port}/ws"), "token");
        match Client::connect(config).await {
            Err(ClientError::Io(error)) => {
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn connect_times_out_when_nothing_answers() {
        // The kernel completes the TCP handshake for a listener that never
        // accepts, so the WebSocket upgrade waits for an answer that never
        // comes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = ClientConfig {
            connect_timeout: Duration::from_millis(200),
            ..ClientConfig::new(format!("ws://127.0.0.1:{port}/ws"), "token")
        };
        match Client::connect(config).await {
            Err(ClientError::Timeout(limit)) => assert_eq!(limit, Duration::from_millis(200)),
            other => panic!("{other:?}"),
        }
        drop(listener);
    }

    #[test]
    fn config_defaults_suit_a_normal_client() {
        let a = ClientConfig::new(DEFAULT_URL, "t");
        let b = ClientConfig::new(DEFAULT_URL, "t");
        assert_ne!(a.device_id, b.device_id, "random device ids");
        assert!(a.auto_pull);
        assert_eq!(a.pull_limit, 0);
    }

    #[test]
    fn websocket_buffers_are_small_and_limits_set() {
        let config = ws_config();
        assert_eq!(config.read_buffer_size, READ_BUFFER);
        assert_eq!(config.max_message_size, Some(MAX_SERVER_FRAME));
        assert_eq!(config.max_frame_size, Some(MAX_SERVER_FRAME));
        assert!(config.max_write_buffer_size > config.write_buffer_size + MAX_CLIENT_FRAME);
    }
}
