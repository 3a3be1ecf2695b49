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
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chatroom_cluster::quic::Trust;
use chatroom_proto::Message as _;
use chatroom_proto::framing::ws::close_code;
use chatroom_proto::v1::{
    self, ClientFrame, ConnectAck, Cursor, JoinAck, PullResult, SendAck, ServerFrame,
    server_frame::Body,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::core::{
    CoreConfig, Handshake, JoinOptions, Output, SessionCore, body_name, connect_frame,
    handshake_reply,
};
use crate::error::ClientError;
use crate::events::{CloseReason, Event, Events};
use crate::transport::{Dial, Incoming, MAX_CLIENT_FRAME, Wire};

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 3;

/// Heartbeat used if the server announces none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Silent heartbeat intervals after which the server is taken for gone
/// (the server closes a silent client after the same number).
const SILENT_INTERVALS: u32 = 3;

/// Longest a token is refreshed ahead of its expiry.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

type Waiter = oneshot::Sender<Result<Body, v1::Error>>;

/// What a [`TokenSource`] yields: a fresh token, or why none could be had.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Where fresh tokens come from (the app's backend, usually): called
/// before the session's token expires, so the session lives on (see
/// [`ClientConfig::token_source`]).
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenSource {
    /// A source calling `fetch` for each new token.
    pub fn new(fetch: impl Fn() -> TokenFuture + Send + Sync + 'static) -> Self {
        Self(Arc::new(fetch))
    }

    async fn fetch(&self) -> Result<String, String> {
        (self.0)().await
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource(..)")
    }
}

/// How to connect and behave.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/path` or `quic://host:port` of any msg-svc node.
    pub url: String,
    /// QUIC: how to trust the server's certificate. `None` trusts the
    /// certificate the embedded server wrote on this machine (for a server
    /// on loopback), and nothing else.
    pub trust: Option<Trust>,
    /// The token (see [`dev_token`](crate::dev_token) for a development
    /// one).
    pub token: String,
    /// Fresh tokens before the current one expires: with one, the client
    /// refreshes the session by itself (about a minute ahead, or halfway
    /// through a short token's life), so it is not closed at the expiry.
    pub token_source: Option<TokenSource>,
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
            trust: None,
            token: token.into(),
            token_source: None,
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
    /// When the session's token expires, ms since the Unix epoch (0:
    /// unknown).
    token_expires_at_ms: AtomicU64,
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
        let (wire, ack, url) = tokio::time::timeout(config.connect_timeout, handshake(&config))
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
            token_expires_at_ms: AtomicU64::new(ack.token_expires_at_ms),
            task: Mutex::new(None),
        });
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let connection = Connection {
            shared: shared.clone(),
            held: None,
            out: Output::default(),
            outgoing: Vec::new(),
        };
        let task = tokio::spawn(connection.run(wire, events_tx).instrument(span));
        *shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        let client = Client {
            handle: Arc::new(Handle { shared }),
        };
        if let Some(source) = config.token_source {
            tokio::spawn(keep_token_fresh(Arc::downgrade(&client.handle), source));
        }
        Ok((client, Events::new(events_rx)))
    }

    /// Hands the server a newer token for the same user; the session then
    /// lives until its expiry (returned, ms since the Unix epoch).
    pub async fn refresh(&self, token: &str) -> Result<u64, ClientError> {
        match self.request(|core| core.refresh(token)).await? {
            Body::RefreshAck(ack) => {
                self.shared()
                    .token_expires_at_ms
                    .store(ack.token_expires_at_ms, Ordering::Relaxed);
                Ok(ack.token_expires_at_ms)
            }
            other => Err(unexpected("refresh_ack", &other)),
        }
    }

    /// When the session's token expires, as the server said.
    pub fn token_expires_at(&self) -> Option<SystemTime> {
        match self.shared().token_expires_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
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

    /// Closes (normal closure), waits briefly for the server, and returns when
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

/// Refreshes the session's token from `source` ahead of each expiry, for
/// as long as the client lives and its connection is open. A failed fetch
/// or refresh is tried again, more often as the expiry nears.
async fn keep_token_fresh(handle: Weak<Handle>, source: TokenSource) {
    loop {
        let Some(expires_at) = handle
            .upgrade()
            .and_then(|handle| Client { handle }.token_expires_at())
        else {
            return;
        };
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(left.saturating_sub(REFRESH_AHEAD.min(left / 2))).await;
        let refreshed = match source.fetch().await {
            Ok(token) => {
                let Some(handle) = handle.upgrade() else {
                    return;
                };
                let client = Client { handle };
                match client.refresh(&token).await {
                    Ok(_) => Ok(()),
                    Err(ClientError::Closed) => return,
                    Err(error) => Err(error.to_string()),
                }
            }
            Err(error) => Err(error),
        };
        if let Err(error) = refreshed {
            tracing::warn!(%error, "token refresh failed; trying again");
            let left = expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(
                (left / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
            )
            .await;
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
    async fn run(mut self, mut wire: Wire, events: mpsc::Sender<Vec<Event>>) {
        let reason = self.drive(&mut wire, &events).await;
        drop(wire);
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

    async fn drive(&mut self, wire: &mut Wire, events: &mpsc::Sender<Vec<Event>>) -> CloseReason {
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
                && let Err(error) = wire.send(&mut self.outgoing).await
            {
                return CloseReason::Io(error.to_string());
            }
            if close_requested {
                wire.close(close_code::NORMAL, "client closing").await;
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
                incoming = wire.next(), if self.held.is_none() => {
                    last_heard = Instant::now();
                    if let Some(reason) = self.on_incoming(wire, incoming, events).await {
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

    /// Handles what the connection yielded; `Some` ends it.
    async fn on_incoming(
        &mut self,
        wire: &mut Wire,
        incoming: Result<Incoming, CloseReason>,
        events: &mpsc::Sender<Vec<Event>>,
    ) -> Option<CloseReason> {
        match incoming {
            Ok(Incoming::Frame(bytes)) => match ServerFrame::decode(bytes) {
                Ok(frame) => {
                    self.on_frame(frame, events);
                    None
                }
                Err(error) => {
                    wire.close(close_code::PROTOCOL_ERROR, "undecodable frame")
                        .await;
                    Some(CloseReason::Protocol(format!("undecodable frame: {error}")))
                }
            },
            Ok(Incoming::Closed { code, reason }) => Some(CloseReason::Server { code, reason }),
            Err(reason) => Some(reason),
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

/// Opens sessions until one is accepted or the redirects run out.
async fn handshake(config: &ClientConfig) -> Result<(Wire, ConnectAck, String), ClientError> {
    let hello = Bytes::from(connect_frame(&config.token, &config.device_id).encode_to_vec());
    if hello.len() > MAX_CLIENT_FRAME {
        return Err(ClientError::FrameTooLarge(hello.len()));
    }
    let dial = Dial {
        trust: config.trust.as_ref(),
        bind_addr: config.bind_addr,
    };
    let mut url = config.url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut wire = Wire::open(&url, dial).await?;
        wire.send(&mut vec![hello.clone()]).await?;
        match handshake_reply(read_frame(&mut wire).await?)? {
            Handshake::Accepted(ack) => return Ok((wire, ack, url)),
            Handshake::Redirect(next) => {
                tracing::debug!(from = %url, to = %next, "redirected");
                url = next;
            }
        }
    }
    Err(ClientError::TooManyRedirects(MAX_REDIRECTS))
}

/// The next frame, decoded.
async fn read_frame(wire: &mut Wire) -> Result<ServerFrame, ClientError> {
    match wire.next().await {
        Ok(Incoming::Frame(bytes)) => ServerFrame::decode(bytes)
            .map_err(|e| ClientError::Protocol(format!("undecodable frame: {e}"))),
        Ok(Incoming::Closed { .. }) => Err(ClientError::Closed),
        Err(CloseReason::Protocol(why)) => Err(ClientError::Protocol(why)),
        Err(reason) => Err(ClientError::Io(std::io::Error::other(reason.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::DEFAULT_URL;

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
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused)
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
}
