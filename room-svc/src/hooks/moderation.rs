//! The before-send moderation hook: before a message is accepted, the app's
//! backend is asked for a verdict (accept, reject with a reason, or replace
//! the payload).
//!
//! [`ModerationHook::submit`] only queues (refusing with [`HookOverloaded`]
//! at the queue's bound), so one slow backend never holds up a room worker.
//! A dispatcher task forms batches (`batch`: full, or the oldest message
//! waited `batch_delay`) and runs up to `max_in_flight` signed requests at
//! once over keep-alive connections. Each submission's `done` is called
//! exactly once, from the hook's tasks and never under a lock of ours; when
//! the hook shuts down, whatever is pending gets
//! [`HookFailure::Shutdown`]. The JSON is in `wire`.

#[cfg(test)]
mod tests;
mod wire;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::batch::{BatchLimits, Batcher};
use super::http::{BodyFailure, PostFailure, SignedPoster};
use super::sign::SigningSecret;
use super::{HookUrlError, checked_url};

/// Where the hook goes and how it batches, waits and bounds.
#[derive(Debug, Clone)]
pub struct HookConfig {
    url: Uri,
    secret: SigningSecret,
    /// Most messages in one request.
    pub batch_max: usize,
    /// How long a message may wait for its batch to fill.
    pub batch_delay: Duration,
    /// Deadline of one request: connect, answer and its body.
    pub timeout: Duration,
    /// Most requests out at once.
    pub max_in_flight: usize,
    /// Most messages waiting for a request; more are refused.
    pub queue: usize,
    /// Largest answer body read; a larger one is garbage.
    pub max_response_bytes: usize,
}

impl HookConfig {
    /// The hook at `url` signed with `secret`, with the default batching
    /// (32 messages, 2 ms), timeout (300 ms), concurrency (16 requests),
    /// queue (4096 messages) and answer bound (1 MiB).
    pub fn new(url: Uri, secret: SigningSecret) -> Result<Self, HookUrlError> {
        Ok(Self {
            url: checked_url(url)?,
            secret,
            batch_max: 32,
            batch_delay: Duration::from_millis(2),
            timeout: Duration::from_millis(300),
            max_in_flight: 16,
            queue: 4096,
            max_response_bytes: 1 << 20,
        })
    }

    /// Where the hook is.
    pub fn url(&self) -> &Uri {
        &self.url
    }
}

/// A message to judge.
#[derive(Debug, Clone, PartialEq)]
pub struct HookMessage {
    /// The room it is sent to.
    pub room_id: String,
    /// Who sends it.
    pub sender: String,
    /// What the app's token says about the sender, passed through.
    pub sender_info: Option<serde_json::Value>,
    /// The message's kind, as on the wire.
    pub kind: i32,
    /// The payload.
    pub payload: Bytes,
}

/// The verdict on a message, or why there is none (the caller's policy
/// decides whether a failure lets the message through).
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutcome {
    /// Accept it as sent.
    Accept,
    /// Refuse it.
    Reject {
        /// Why, for the sender: at most 256 bytes, no control characters.
        reason: String,
    },
    /// Accept it with this payload instead (at most 64 KiB).
    Replace {
        /// The new payload.
        payload: Bytes,
    },
    /// No verdict.
    Failed(HookFailure),
}

/// Why a message got no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    /// The backend did not answer within the timeout.
    #[error("the moderation hook timed out")]
    Timeout,
    /// No connection to the backend, or it broke before the answer.
    #[error("the moderation hook is unreachable")]
    Unreachable,
    /// The backend answered with a status other than 2xx.
    #[error("the moderation hook answered status {0}")]
    Status(u16),
    /// The answer is not JSON, has the wrong shape, is too large, or its
    /// verdict on this message makes no sense.
    #[error("the moderation hook answered garbage")]
    Garbage,
    /// The answer has no verdict on this message.
    #[error("the moderation hook gave no verdict")]
    Missing,
    /// The hook shut down before a verdict.
    #[error("the moderation hook shut down")]
    Shutdown,
}

/// The hook takes no more messages: its queue is at its bound, or it has
/// shut down. The sender should be told OVERLOADED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the moderation hook is overloaded")]
pub struct HookOverloaded;

/// Called once with a submission's outcome.
pub type HookDone = Box<dyn FnOnce(HookOutcome) + Send>;

/// What the hook counted, for metrics. Every submission taken ends in
/// exactly one of the verdict or failure counters.
#[derive(Debug, Default)]
pub struct HookCounters {
    /// Messages taken by [`ModerationHook::submit`].
    pub submitted: AtomicU64,
    /// Submissions refused with [`HookOverloaded`].
    pub overloaded: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Messages accepted.
    pub accepted: AtomicU64,
    /// Messages rejected.
    pub rejected: AtomicU64,
    /// Messages replaced.
    pub replaced: AtomicU64,
    /// Messages failed with [`HookFailure::Timeout`].
    pub failed_timeout: AtomicU64,
    /// Messages failed with [`HookFailure::Unreachable`].
    pub failed_unreachable: AtomicU64,
    /// Messages failed with [`HookFailure::Status`].
    pub failed_status: AtomicU64,
    /// Messages failed with [`HookFailure::Garbage`].
    pub failed_garbage: AtomicU64,
    /// Messages failed with [`HookFailure::Missing`].
    pub failed_missing: AtomicU64,
    /// Messages failed with [`HookFailure::Shutdown`].
    pub failed_shutdown: AtomicU64,
    /// Verdicts ignored: for ids not in their request, or repeated.
    pub unknown_verdicts: AtomicU64,
    /// Requests out now (a gauge).
    pub in_flight: AtomicU64,
}

impl HookCounters {
    fn record(&self, outcome: &HookOutcome) {
        let counter = match outcome {
            HookOutcome::Accept => &self.accepted,
            HookOutcome::Reject { .. } => &self.rejected,
            HookOutcome::Replace { .. } => &self.replaced,
            HookOutcome::Failed(HookFailure::Timeout) => &self.failed_timeout,
            HookOutcome::Failed(HookFailure::Unreachable) => &self.failed_unreachable,
            HookOutcome::Failed(HookFailure::Status(_)) => &self.failed_status,
            HookOutcome::Failed(HookFailure::Garbage) => &self.failed_garbage,
            HookOutcome::Failed(HookFailure::Missing) => &self.failed_missing,
            HookOutcome::Failed(HookFailure::Shutdown) => &self.failed_shutdown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The moderation hook; cheap to clone. It shuts down on
/// [`shutdown`](Self::shutdown) or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct ModerationHook {
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
}

#[derive(Debug)]
struct Shared {
    /// A std mutex: `submit` must not wait or yield, and every critical
    /// section is a push or a pop, never across an await and never calling
    /// a `done`.
    queue: Mutex<Queue>,
    /// Wakes the dispatcher when a message is queued.
    wake: Notify,
    counters: Arc<HookCounters>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Queue {
    batcher: Batcher<Pending>,
    closed: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere cannot leave the queue half-changed: its methods
        // do not panic between their writes.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A submission waiting for its outcome. Dropped without one (the hook's
/// tasks gone, a request aborted), it answers [`HookFailure::Shutdown`], so
/// `done` runs exactly once whatever happens.
struct Pending {
    message: HookMessage,
    done: Option<HookDone>,
    counters: Arc<HookCounters>,
}

impl Pending {
    fn answer(mut self, outcome: HookOutcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: HookOutcome) {
        if let Some(done) = self.done.take() {
            self.counters.record(&outcome);
            done(outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(HookOutcome::Failed(HookFailure::Shutdown));
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("message", &self.message)
            .field("answered", &self.done.is_none())
            .finish()
    }
}

impl ModerationHook {
    /// Starts the dispatcher task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(config: HookConfig) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                batcher: Batcher::new(BatchLimits {
                    max_items: config.batch_max,
                    max_delay: config.batch_delay,
                    max_in_flight: config.max_in_flight,
                    queue: config.queue,
                }),
                closed: false,
            }),
            wake: Notify::new(),
            counters: Arc::default(),
            stop: stop.clone(),
        });
        let dispatcher = Dispatcher {
            judge: Arc::new(Judge {
                poster: SignedPoster::new(config.url, config.secret, config.timeout),
                timeout: config.timeout,
                max_response_bytes: config.max_response_bytes,
                counters: Arc::clone(&shared.counters),
            }),
            shared: Arc::clone(&shared),
        };
        tokio::spawn(dispatcher.run());
        Self {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Queues `message` for a verdict, which `done` gets later from the
    /// hook's task; refused when the queue is at its bound or the hook has
    /// shut down (then `done` is dropped uncalled).
    pub fn submit(&self, message: HookMessage, done: HookDone) -> Result<(), HookOverloaded> {
        let counters = &self.shared.counters;
        let refused = {
            let mut queue = self.shared.queue();
            if queue.closed {
                Err(done)
            } else {
                let pending = Pending {
                    message,
                    done: Some(done),
                    counters: Arc::clone(counters),
                };
                queue
                    .batcher
                    .push(std::time::Instant::now(), pending)
                    .map_err(|mut pending| {
                        // Cannot fail: set just above and not yet taken.
                        pending.done.take().expect("a fresh submission")
                    })
            }
        };
        match refused {
            Ok(()) => {
                counters.submitted.fetch_add(1, Ordering::Relaxed);
                self.shared.wake.notify_one();
                Ok(())
            }
            Err(_uncalled) => {
                counters.overloaded.fetch_add(1, Ordering::Relaxed);
                Err(HookOverloaded)
            }
        }
    }

    /// Stops the hook: requests out are abandoned and every pending
    /// submission gets [`HookFailure::Shutdown`]; later ones are refused.
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    /// The counters, for metrics.
    pub fn counters(&self) -> &HookCounters {
        &self.shared.counters
    }
}

/// The task forming batches and starting requests.
struct Dispatcher {
    shared: Arc<Shared>,
    judge: Arc<Judge>,
}

impl Dispatcher {
    async fn run(self) {
        let counters = &self.shared.counters;
        let mut requests = JoinSet::new();
        loop {
            let (batches, wake_at) = {
                let mut queue = self.shared.queue();
                let now = std::time::Instant::now();
                let batches: Vec<_> =
                    std::iter::from_fn(|| queue.batcher.poll_batch(now)).collect();
                (batches, queue.batcher.poll_timeout())
            };
            for batch in batches {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                let out = InFlight::start(Arc::clone(counters));
                requests.spawn(Arc::clone(&self.judge).request(batch, out));
            }
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shared.stop.cancelled() => break,
                () = self.shared.wake.notified() => {}
                Some(_) = requests.join_next() => self.shared.queue().batcher.handle_done(),
                () = sleep => {}
            }
        }
        let waiting: Vec<Pending> = {
            let mut queue = self.shared.queue();
            queue.closed = true;
            queue.batcher.drain().collect()
        };
        debug!(
            waiting = waiting.len(),
            in_flight = requests.len(),
            "moderation hook shutting down"
        );
        drop(waiting);
        requests.shutdown().await;
    }
}

/// Counts a request out until dropped, also when the request is aborted,
/// started or not.
struct InFlight(Arc<HookCounters>);

impl InFlight {
    fn start(counters: Arc<HookCounters>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one request needs, shared by all.
struct Judge {
    poster: SignedPoster,
    timeout: Duration,
    max_response_bytes: usize,
    counters: Arc<HookCounters>,
}

impl Judge {
    /// One request for `batch`, answering each of its submissions.
    async fn request(self: Arc<Self>, batch: Vec<Pending>, _out: InFlight) {
        let body = wire::encode(batch.iter().map(|pending| &pending.message));
        let deadline = Instant::now() + self.timeout;
        let answer = self
            .poster
            .post(Bytes::from(body), &[], deadline, self.max_response_bytes)
            .await;
        let failure = match answer {
            Err(PostFailure::Timeout) => HookFailure::Timeout,
            Err(PostFailure::Unreachable) => HookFailure::Unreachable,
            Ok(answer) if !answer.status.is_success() => {
                HookFailure::Status(answer.status.as_u16())
            }
            Ok(answer) => match answer.body {
                Err(BodyFailure::Timeout) => HookFailure::Timeout,
                Err(BodyFailure::Broken) => HookFailure::Unreachable,
                Err(BodyFailure::TooLarge) => HookFailure::Garbage,
                Ok(body) => match wire::decode(&body, batch.len()) {
                    Some(decoded) => {
                        self.counters
                            .unknown_verdicts
                            .fetch_add(decoded.unknown, Ordering::Relaxed);
                        for (pending, outcome) in batch.into_iter().zip(decoded.outcomes) {
                            pending.answer(outcome);
                        }
                        return;
                    }
                    None => HookFailure::Garbage,
                },
            },
        };
        debug!(%failure, messages = batch.len(), "moderation hook request failed");
        for pending in batch {
            pending.answer(HookOutcome::Failed(failure));
        }
    }
}
