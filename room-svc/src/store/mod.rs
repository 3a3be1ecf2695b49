//! The second-level store (DESIGN §2, Redis): per room the stream position,
//! the config set through the admin API, moderation and a capped recent
//! history, so a room survives a room service restart and a move to another
//! node.
//!
//! [`RoomStore`] is either nothing ([`RoomStore::Memory`], the embedded mode:
//! nothing persists, loads find nothing) or Redis ([`RedisStore`]). A load is
//! one round trip. Workers hand writes over ([`RoomStore::submit`]), they
//! are coalesced per room ([`writes`]), and a writer task sends them in
//! batches, retrying with backoff while Redis is away. While the store keeps
//! up, a worker waits for its writes ([`RoomStore::stored`]) before it acks
//! or broadcasts what they hold, so what anybody was told of survives its
//! owner's death; while Redis is away, nothing waits on it.
//!
//! - [`writes`]: the coalesced writes and their bounds (sans-I/O).
//! - `redis`: the key layout, loads and the writer task.

mod redis;
pub(crate) mod writes;

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

pub use self::redis::{RedisStore, RedisStoreConfig};
use crate::core::PersistedRoom;
use writes::PendingWrites;

/// Where Redis is and how the room service proves itself to it.
#[derive(Clone, Default)]
pub struct RedisTarget {
    /// `redis://[user@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// The AUTH password (with the URL's user, if any), kept out of the URL
    /// and so out of command lines.
    pub password: Option<String>,
    /// PEM certificates to trust for `rediss://` instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key (PEM), for a Redis that requires
    /// them (`tls-auth-clients`).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTarget {
    /// Redis at `url`, with nothing more to prove.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    /// The URL, and whether secrets are set: never the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// Whether the store keeps up, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    /// Loads and writes succeed (or nothing has been tried yet).
    Healthy,
    /// A load or write failed and no write has succeeded since: rooms start
    /// afresh instead of being restored, and writes wait in memory.
    Degraded,
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The Redis URL, or its TLS settings, cannot be used.
    #[error("invalid redis target: {0}")]
    BadUrl(::redis::RedisError),
    /// The cluster name cannot be part of a key.
    #[error("cluster name {0:?} must be 1 to 64 bytes of [A-Za-z0-9_.-]")]
    BadClusterName(String),
    /// Redis failed the request.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    TimedOut(Duration),
    /// Writes handed over were still not written when the wait ended.
    #[error("writes still waiting for redis after {0:?}")]
    Unflushed(Duration),
    /// A newer owner has taken the room: a larger fence stands.
    #[error("room {room} is held by a newer owner (fence {fence})")]
    Fenced {
        /// The room.
        room: String,
        /// The fence that stands.
        fence: u64,
    },
}

/// A room whose writes the store refused: a newer owner took it under a
/// larger fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    /// The room.
    pub room: Arc<str>,
    /// The fence that stands.
    pub fence: u64,
}

/// What the store has done and dropped since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounters {
    /// Write batches stored.
    pub batches_written: u64,
    /// Write batches that failed (and were kept for a retry).
    pub write_failures: u64,
    /// Loads that failed after their retries (the room started afresh).
    pub load_failures: u64,
    /// Messages that fell out of a room's history window before being
    /// written (superseded: the stored history drops them too).
    pub history_superseded: u64,
    /// Moderation changes dropped at the per-room bound while Redis was
    /// away (still in force in memory, missing from the store).
    pub moderation_dropped: u64,
    /// Rooms' writes refused because a newer owner had taken the room.
    pub fenced_writes: u64,
}

/// Where rooms are kept beyond memory.
#[derive(Debug, Clone)]
pub enum RoomStore {
    /// Nowhere: the embedded mode.
    Memory,
    /// In Redis.
    Redis(RedisStore),
}

impl RoomStore {
    /// Nothing persists; every load finds nothing.
    pub fn memory() -> Self {
        Self::Memory
    }

    /// Redis at `target`, keys under `chatroom:{cluster}:`, with the
    /// default timings. Connects lazily: Redis may be down now.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the writer task is spawned here).
    pub fn redis(target: &RedisTarget, cluster: &str) -> Result<Self, StoreError> {
        Self::redis_with(target, cluster, RedisStoreConfig::default())
    }

    /// Redis as [`redis`](Self::redis), with the given timings.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn redis_with(
        target: &RedisTarget,
        cluster: &str,
        config: RedisStoreConfig,
    ) -> Result<Self, StoreError> {
        RedisStore::connect(target, cluster, config).map(Self::Redis)
    }

    /// Whether anything is kept (and so rooms are loaded before use).
    pub fn persists(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Takes `room` under `fence` (the loader's member view term) and
    /// returns what is kept of it, with the writes still waiting for it
    /// applied on top; `None` when nothing is. [`StoreError::Fenced`] when
    /// a newer owner has taken it: from then on the store refuses every
    /// write fenced below that. Retries within a bounded time (see
    /// [`RedisStoreConfig::load_timeout`]), then fails.
    pub async fn load(&self, room: &str, fence: u64) -> Result<Option<PersistedRoom>, StoreError> {
        match self {
            Self::Memory => Ok(None),
            Self::Redis(store) => store.load(room, fence).await,
        }
    }

    /// The rooms whose writes are refused from now on, as they are; `None`
    /// for a store that keeps nothing.
    pub fn fenced(&self) -> Option<broadcast::Receiver<Fenced>> {
        match self {
            Self::Memory => None,
            Self::Redis(store) => Some(store.fenced()),
        }
    }

    /// Hands writes over; never waits. The submission's number, to wait
    /// for with [`stored`](Self::stored); `None` when nothing is kept.
    pub(crate) fn submit(&self, writes: PendingWrites) -> Option<u64> {
        match self {
            Self::Memory => None,
            Self::Redis(store) => store.submit(writes),
        }
    }

    /// Waits until `submission` (and every one before it) is written:
    /// true then; false at once while the store is degraded, when it
    /// becomes so meanwhile, or after a request's timeout. A write refused
    /// for a newer owner's fence counts as written; the refusal is told
    /// through [`fenced`](Self::fenced) first.
    pub(crate) async fn stored(&self, submission: u64) -> bool {
        match self {
            Self::Memory => true,
            Self::Redis(store) => store.stored(submission).await,
        }
    }

    /// The store's health now.
    pub fn health(&self) -> StoreHealth {
        match self {
            Self::Memory => StoreHealth::Healthy,
            Self::Redis(store) => store.health(),
        }
    }

    /// The store's health, updated on every change.
    pub fn watch_health(&self) -> watch::Receiver<StoreHealth> {
        match self {
            Self::Memory => watch::channel(StoreHealth::Healthy).1,
            Self::Redis(store) => store.watch_health(),
        }
    }

    /// Waits until every write handed over so far is stored, or gives up
    /// after [`RedisStoreConfig::flush_timeout`].
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory => Ok(()),
            Self::Redis(store) => store.flush().await,
        }
    }

    /// What the store has done and dropped.
    pub fn counters(&self) -> StoreCounters {
        match self {
            Self::Memory => StoreCounters::default(),
            Self::Redis(store) => store.counters(),
        }
    }
}
