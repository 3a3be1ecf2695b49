//! Webhooks: room events POSTed as JSON to the app's backend.
//!
//! [`Webhooks::emit`] stamps an event (a unique id, the time) and queues it;
//! it never waits and never fails: past the queue's bound the event is
//! dropped and counted. One task sends the queue in batches, one request at
//! a time, so a receiver sees batches in order. A batch that fails (no
//! connection, no answer in time, a status other than 2xx) is sent again,
//! whole, after a jittered pause growing to `backoff_max`, for as long as
//! the service runs; events queue behind it. Delivery is therefore at least
//! once: a receiver that dedupes by event id sees each event once.
//!
//! A request:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! User-Agent: chatroom/<version>
//! X-Chatroom-Signature: t=<unix s>,v1=<hex hmac-sha256 of "<t>.<body>">
//! X-Chatroom-Delivery: dlv_<32 hex digits, new for every attempt>
//!
//! {"events":[{"id":"evt_<32 hex>","type":"room.occupancy","ts_us":1700000000000000,
//!             "room_id":"lobby","data":{...}}, ...]}
//! ```
//!
//! `room_id` is `null` for events of no room. The policy lives in
//! `outbox` (sans-I/O); this module carries it out.

mod outbox;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::http::{PostFailure, SignedPoster, random_id};
use super::sign::SigningSecret;
use super::{HookUrlError, checked_url};
use outbox::Outbox;

/// The header naming one attempt at delivering a batch (new on every
/// retry), for the receiver's logs.
pub const DELIVERY_HEADER: &str = "x-chatroom-delivery";

/// Most bytes of an answer read: receivers answer with a status, and a
/// short body is read so the connection can be kept.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// What happened, as the `type` of an event. The strings are part of the
/// wire format and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// How many are in a room.
    RoomOccupancy,
    /// Joins and leaves, batched.
    RoomJoins,
    /// A message was accepted.
    MessageAccepted,
    /// A mute, ban, kick, recall, pin or config change: who, what, before
    /// and after.
    Moderation,
    /// A room was closed.
    RoomClosed,
    /// An operation through the admin API.
    AdminAudit,
}

impl EventKind {
    /// The event's `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomOccupancy => "room.occupancy",
            Self::RoomJoins => "room.joins",
            Self::MessageAccepted => "message.accepted",
            Self::Moderation => "moderation",
            Self::RoomClosed => "room.closed",
            Self::AdminAudit => "admin.audit",
        }
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Where webhooks go and how they are batched and retried.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    url: Uri,
    secret: SigningSecret,
    /// Most events in one request.
    pub batch_max: usize,
    /// How long an event may wait for its batch to fill.
    pub batch_delay: Duration,
    /// Most events waiting; more are dropped and counted.
    pub queue: usize,
    /// Deadline of one request: connect, answer and its body.
    pub timeout: Duration,
    /// The first pause after a failure.
    pub backoff_min: Duration,
    /// The longest pause after failures.
    pub backoff_max: Duration,
}

impl WebhookConfig {
    /// Webhooks to `url` signed with `secret`, with the default batching
    /// (100 events, 200 ms), queue (100 000 events), timeout (5 s) and
    /// backoff (100 ms to 30 s).
    pub fn new(url: Uri, secret: SigningSecret) -> Result<Self, HookUrlError> {
        Ok(Self {
            url: checked_url(url)?,
            secret,
            batch_max: 100,
            batch_delay: Duration::from_millis(200),
            queue: 100_000,
            timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        })
    }

    /// Where the events go.
    pub fn url(&self) -> &Uri {
        &self.url
    }
}

/// What the webhooks counted, for metrics.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Events handed to [`Webhooks::emit`].
    pub emitted: AtomicU64,
    /// Events dropped because the queue was at its bound.
    pub dropped: AtomicU64,
    /// Events delivered (a 2xx answered their batch).
    pub delivered: AtomicU64,
    /// Requests that got no connection, or lost it before an answer.
    pub failed_connect: AtomicU64,
    /// Requests not answered within the timeout.
    pub failed_timeout: AtomicU64,
    /// Requests answered with a status other than 2xx.
    pub failed_status: AtomicU64,
    /// Attempts that resent a failed batch.
    pub retries: AtomicU64,
    /// Events waiting or in the batch out (a gauge).
    pub queued: AtomicU64,
}

/// [`Webhooks::flush`] ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{undelivered} webhook events were not delivered before the deadline")]
pub struct FlushTimedOut {
    /// Events of those to flush still undelivered.
    pub undelivered: u64,
}

/// The webhook sender; cheap to clone. The task stops when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
}

#[derive(Debug)]
struct Shared {
    /// A std mutex: `emit` must not wait or yield, and every critical
    /// section is a push, a pop or a count, never across an await.
    outbox: Mutex<Outbox<Event>>,
    /// Wakes the sender when an event is queued.
    wake: Notify,
    /// How many events are delivered, for [`Webhooks::flush`].
    delivered: watch::Sender<u64>,
    counters: WebhookCounters,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox<Event>> {
        // A panic elsewhere cannot leave the outbox half-changed: its methods
        // do not panic between their writes.
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Serialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: EventKind,
    ts_us: u64,
    room_id: Option<String>,
    data: serde_json::Value,
}

#[derive(Serialize)]
struct Body<'a> {
    events: &'a [Event],
}

impl Webhooks {
    /// Starts the sender task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(config: WebhookConfig) -> Self {
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(
                config.batch_max,
                config.batch_delay,
                config.queue,
                config.backoff_min,
                config.backoff_max,
            )),
            wake: Notify::new(),
            delivered: watch::Sender::new(0),
            counters: WebhookCounters::default(),
        });
        let stop = CancellationToken::new();
        let sender = Sender {
            shared: Arc::clone(&shared),
            poster: SignedPoster::new(config.url, config.secret, config.timeout),
            timeout: config.timeout,
            stop: stop.clone(),
        };
        tokio::spawn(sender.run());
        Self {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Queues an event of `kind` about `room_id` (`None`: of no room); past
    /// the queue's bound it is dropped and counted instead.
    pub fn emit(&self, kind: EventKind, room_id: Option<&str>, data: serde_json::Value) {
        let counters = &self.shared.counters;
        counters.emitted.fetch_add(1, Ordering::Relaxed);
        let event = Event {
            id: random_id("evt_"),
            kind,
            ts_us: unix_micros(),
            room_id: room_id.map(str::to_owned),
            data,
        };
        let refused = {
            let mut outbox = self.shared.outbox();
            let pushed = outbox.push(std::time::Instant::now(), event);
            counters
                .queued
                .store(outbox.len() as u64, Ordering::Relaxed);
            pushed.err()
        };
        if refused.is_some() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.wake.notify_one();
        }
    }

    /// Waits until every event queued before the call is delivered, or
    /// `deadline` passes (for shutdown and tests).
    pub async fn flush(&self, deadline: Instant) -> Result<(), FlushTimedOut> {
        let target = self.shared.outbox().accepted();
        let mut delivered = self.shared.delivered.subscribe();
        let reached = tokio::time::timeout_at(deadline, delivered.wait_for(|n| *n >= target)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(FlushTimedOut {
                undelivered: target.saturating_sub(*self.shared.delivered.borrow()),
            }),
        }
    }

    /// The counters, for metrics.
    pub fn counters(&self) -> &WebhookCounters {
        &self.shared.counters
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Timeout,
    Status(u16),
}

/// The task sending batches.
struct Sender {
    shared: Arc<Shared>,
    poster: SignedPoster,
    timeout: Duration,
    stop: CancellationToken,
}

impl Sender {
    async fn run(self) {
        loop {
            let (transmit, wake_at) = {
                let mut outbox = self.shared.outbox();
                let transmit = outbox.poll_transmit(std::time::Instant::now());
                (transmit, outbox.poll_timeout())
            };
            let Some(transmit) = transmit else {
                let sleep = async {
                    match wake_at {
                        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = self.shared.wake.notified() => {}
                    () = sleep => {}
                }
                continue;
            };
            let counters = &self.shared.counters;
            if transmit.attempt > 0 {
                counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let result = tokio::select! {
                () = self.stop.cancelled() => return,
                result = self.send(&transmit.items) => result,
            };
            let mut outbox = self.shared.outbox();
            match result {
                Ok(()) => {
                    let count = outbox.handle_delivered();
                    counters
                        .delivered
                        .fetch_add(count as u64, Ordering::Relaxed);
                    counters
                        .queued
                        .store(outbox.len() as u64, Ordering::Relaxed);
                    let delivered = outbox.delivered();
                    drop(outbox);
                    self.shared.delivered.send_replace(delivered);
                }
                Err(failure) => {
                    let counter = match failure {
                        Failure::Connect => &counters.failed_connect,
                        Failure::Timeout => &counters.failed_timeout,
                        Failure::Status(_) => &counters.failed_status,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let pause = outbox.handle_failed(std::time::Instant::now(), rand::random());
                    drop(outbox);
                    if transmit.attempt == 0 {
                        warn!(
                            ?failure,
                            events = transmit.items.len(),
                            ?pause,
                            "webhook delivery failed, retrying"
                        );
                    } else {
                        debug!(
                            ?failure,
                            attempt = transmit.attempt,
                            ?pause,
                            "webhook delivery failed again"
                        );
                    }
                }
            }
        }
    }

    async fn send(&self, events: &[Event]) -> Result<(), Failure> {
        // Cannot fail: events hold strings, numbers and JSON values, whose
        // map keys are strings.
        let body = serde_json::to_vec(&Body { events }).expect("events serialize");
        // Cannot fail: the id is ASCII letters, digits and an underscore.
        let delivery = HeaderValue::try_from(random_id("dlv_")).expect("an ascii id");
        let deadline = Instant::now() + self.timeout;
        let extra = [(HeaderName::from_static(DELIVERY_HEADER), delivery)];
        match self
            .poster
            .post(Bytes::from(body), &extra, deadline, MAX_ANSWER_BYTES)
            .await
        {
            Err(PostFailure::Unreachable) => Err(Failure::Connect),
            Err(PostFailure::Timeout) => Err(Failure::Timeout),
            Ok(answer) if answer.status.is_success() => Ok(()),
            Ok(answer) => Err(Failure::Status(answer.status.as_u16())),
        }
    }
}

/// Wall-clock microseconds, the events' timestamps.
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}
