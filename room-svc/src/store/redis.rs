//! Redis as the second-level store: the key layout, loads (one MULTI/EXEC
//! round trip per room, so a load never sees half a write batch) and the
//! writer task, which turns a batch of coalesced writes into one MULTI/EXEC
//! transaction.
//!
//! Keys of a room, under `chatroom:{cluster}:room:{room_id}:`:
//! - `meta`: HASH `epoch`, `msg_id`, `normal_seq`, `ts`, the stream's newest
//!   position, and `fence`, the term of the newest owner to take the room;
//! - `config`: the room's `RoomOverrides` (what an operator set) as protobuf
//!   bytes, present once set through the admin API;
//! - `mutes`: HASH user → wall-clock microsecond the mute ends (0: until
//!   unmuted);
//! - `bans`, `whitelist`: SETs of users;
//! - `history`: LIST of protobuf `ChatMessage`s, oldest first, trimmed to the
//!   room's `history_size`.
//!
//! Room ids may contain `:`, the suffixes do not, so the keys of two rooms
//! never collide; the cluster name may not contain `:`.
//!
//! A batch whose transaction failed may still have been applied (the
//! connection can break after EXEC was sent). Before retrying, the writer
//! reads the stored positions of the batch's rooms and skips what they show
//! is in: a retry never appends a message twice.
//!
//! Fencing: a load claims the room under the loader's fence (its member
//! view's term) unless a larger fence is stored, and a batch is one Lua
//! script that applies each room's writes only while the stored fence is
//! at most the writer's. So once a newer owner has loaded a room, nothing
//! an older one still sends (after a partition or a stall) reaches the
//! store: its writes are refused, counted, and its worker is told
//! ([`Fenced`]) so it drops the room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::RoomOverrides;
use chatroom_proto::v1::{ChatMessage, Cursor};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::{Instant, sleep, timeout};
use tracing::{Instrument, debug, info, info_span, warn};

use super::writes::{Coalesced, EntryChange, PendingWrites, RoomWrites, StoredPosition};
use super::{Fenced, RedisTarget, StoreCounters, StoreError, StoreHealth};
use crate::core::PersistedRoom;
use crate::core::moderation::List;

const META: &str = "meta";
const CONFIG: &str = "config";
const MUTES: &str = "mutes";
const BANS: &str = "bans";
const WHITELIST: &str = "whitelist";
const HISTORY: &str = "history";

/// Longest cluster name, in bytes.
const MAX_CLUSTER_NAME: usize = 64;

/// The keys of a room, in the order the scripts take them.
const ROOM_KEYS: [&str; 6] = [META, CONFIG, MUTES, BANS, WHITELIST, HISTORY];

/// Applies a batch, room by room, where the writer's fence stands.
const FENCED_WRITE: &str = include_str!("redis/fenced_write.lua");

/// Takes a room under a fence unless a larger one stands.
const CLAIM: &str = include_str!("redis/claim.lua");

/// Most messages one RPUSH in the script carries (Lua's `unpack` has a
/// bounded stack).
const PUSH_CHUNK: usize = 512;

/// How many refusals wait for the workers before the oldest are lost (a
/// worker that misses some drops every room, see `Worker::run`).
const FENCED_QUEUE: usize = 1024;

/// Timings and sizes of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// How long a load may take, retries included, before the room starts
    /// afresh.
    pub load_timeout: Duration,
    /// How long one request (connecting included) may take.
    pub request_timeout: Duration,
    /// How long handed-over writes wait for more to coalesce with. By
    /// default none: workers wait for their writes before they ack, so a
    /// pause here is latency, and what arrives while one batch is being
    /// written coalesces into the next anyway.
    pub flush_interval: Duration,
    /// About how many messages and moderation entries one write batch
    /// carries (whole rooms; at least one).
    pub batch_weight: usize,
    /// The first wait before a failed batch is retried; it doubles per
    /// failure up to `retry_max`.
    pub retry_min: Duration,
    /// The longest wait between retries.
    pub retry_max: Duration,
    /// How long [`RoomStore::flush`](super::RoomStore::flush) waits, and how
    /// long the writer keeps retrying once the store is dropped.
    pub flush_timeout: Duration,
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        Self {
            load_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(1),
            flush_interval: Duration::ZERO,
            batch_weight: 4096,
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(1),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// The Redis store. Cheap to clone; the writer task stops (after a last
/// bounded attempt to write what waits) once every clone is dropped.
#[derive(Debug, Clone)]
pub struct RedisStore {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    conn: ConnectionManager,
    keys: Arc<Keys>,
    config: RedisStoreConfig,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// What the handles and the writer task share.
#[derive(Debug)]
struct Shared {
    // A std mutex: every critical section is a merge or a swap of plain data
    // and none spans an await.
    state: Mutex<State>,
    /// Wakes the writer: writes arrived, or the store was dropped.
    wake: Notify,
    /// The newest submission number whose writes (and all before it) are
    /// stored.
    written: watch::Sender<u64>,
    health: watch::Sender<StoreHealth>,
    counters: Counters,
    /// Rooms whose writes were refused for a newer owner's fence.
    fenced: broadcast::Sender<Fenced>,
}

#[derive(Debug, Default)]
struct State {
    pending: PendingWrites,
    /// The batch being written, so a load sees it until it is stored.
    in_flight: Option<Arc<PendingWrites>>,
    /// Submissions so far.
    submitted: u64,
    /// Every handle is gone.
    closed: bool,
    write_failing: bool,
    load_failing: bool,
}

#[derive(Debug, Default)]
struct Counters {
    batches_written: AtomicU64,
    write_failures: AtomicU64,
    load_failures: AtomicU64,
    history_superseded: AtomicU64,
    moderation_dropped: AtomicU64,
    fenced_writes: AtomicU64,
}

impl Counters {
    fn add(&self, coalesced: Coalesced) {
        self.history_superseded
            .fetch_add(coalesced.history, Ordering::Relaxed);
        self.moderation_dropped
            .fetch_add(coalesced.moderation, Ordering::Relaxed);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a panic in
        // one (a bug) does not make the state unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_health(&self, state: &State) {
        let health = if state.write_failing || state.load_failing {
            StoreHealth::Degraded
        } else {
            StoreHealth::Healthy
        };
        self.health.send_if_modified(|current| {
            let changed = *current != health;
            *current = health;
            changed
        });
    }

    fn count_dropped(&self, coalesced: Coalesced) {
        self.counters.add(coalesced);
        if coalesced.moderation > 0 {
            warn!(
                dropped = coalesced.moderation,
                "moderation changes dropped at the per-room bound while redis is away"
            );
        }
    }
}

/// Key names.
#[derive(Debug)]
struct Keys {
    /// `chatroom:{cluster}:room:`.
    prefix: String,
}

impl Keys {
    fn of(&self, room: &str, suffix: &str) -> String {
        format!("{}{room}:{suffix}", self.prefix)
    }
}

fn check_cluster_name(cluster: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if cluster.is_empty() || cluster.len() > MAX_CLUSTER_NAME || !cluster.chars().all(allowed) {
        return Err(StoreError::BadClusterName(cluster.to_owned()));
    }
    Ok(())
}

/// A client for `target`: its URL, with the password and TLS material laid
/// over it.
fn client(target: &RedisTarget) -> ::redis::RedisResult<::redis::Client> {
    use ::redis::IntoConnectionInfo as _;
    let mut info = target.url.as_str().into_connection_info()?;
    if let Some(password) = &target.password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    if target.ca.is_none() && target.client_cert.is_none() {
        return ::redis::Client::open(info);
    }
    let certificates = ::redis::TlsCertificates {
        client_tls: target.client_cert.clone().map(|(client_cert, client_key)| {
            ::redis::ClientTlsConfig {
                client_cert,
                client_key,
            }
        }),
        root_cert: target.ca.clone(),
    };
    ::redis::Client::build_with_tls(info, certificates)
}

/// Runs one Redis request within `limit`.
async fn request<T, E>(
    limit: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError>
where
    StoreError: From<E>,
{
    match timeout(limit, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::TimedOut(limit)),
    }
}

impl RedisStore {
    pub(super) fn connect(
        target: &RedisTarget,
        cluster: &str,
        config: RedisStoreConfig,
    ) -> Result<Self, StoreError> {
        check_cluster_name(cluster)?;
        let client = client(target).map_err(StoreError::BadUrl)?;
        // No retries inside the manager: loads and the writer retry
        // themselves, within their own bounds.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.request_timeout))
            .set_response_timeout(Some(config.request_timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, manager)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            written: watch::channel(0).0,
            health: watch::channel(StoreHealth::Healthy).0,
            counters: Counters::default(),
            fenced: broadcast::channel(FENCED_QUEUE).0,
        });
        let keys = Arc::new(Keys {
            prefix: format!("chatroom:{cluster}:room:"),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            conn: conn.clone(),
            keys: Arc::clone(&keys),
            config: config.clone(),
        };
        tokio::spawn(writer.run().instrument(info_span!("store_writer", cluster)));
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                conn,
                keys,
                config,
            }),
        })
    }

    pub(super) async fn load(
        &self,
        room: &str,
        fence: u64,
    ) -> Result<Option<PersistedRoom>, StoreError> {
        let config = &self.handle.config;
        let waiting = self.waiting(room);
        let deadline = Instant::now() + config.load_timeout;
        let mut pause = config.retry_min;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let read = self.read(room, fence);
            let error = match request(left.min(config.request_timeout), read).await {
                Ok(stored) => {
                    self.load_done(true);
                    return Ok(match waiting {
                        Some(writes) => writes.apply_to(stored),
                        None => stored,
                    });
                }
                Err(error @ StoreError::Fenced { .. }) => {
                    self.load_done(true);
                    return Err(error);
                }
                Err(error) => error,
            };
            if Instant::now() + pause >= deadline {
                self.load_done(false);
                return Err(error);
            }
            debug!(%error, room, "loading a room failed; retrying");
            sleep(pause).await;
            pause = (pause * 2).min(config.retry_max);
        }
    }

    /// The writes for `room` not known to be stored yet.
    fn waiting(&self, room: &str) -> Option<RoomWrites> {
        let state = self.handle.shared.lock();
        let in_flight = state
            .in_flight
            .as_ref()
            .and_then(|batch| batch.get(room))
            .cloned();
        let pending = state.pending.get(room).cloned();
        match (in_flight, pending) {
            (Some(mut older), Some(newer)) => {
                older.merge_newer(newer);
                Some(older)
            }
            (older, newer) => older.or(newer),
        }
    }

    fn load_done(&self, ok: bool) {
        let shared = &self.handle.shared;
        if !ok {
            shared
                .counters
                .load_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut state = shared.lock();
        state.load_failing = !ok;
        shared.publish_health(&state);
    }

    /// Claims `room` under `fence` and reads everything kept of it, as one
    /// transaction.
    async fn read(&self, room: &str, fence: u64) -> Result<Option<PersistedRoom>, StoreError> {
        type Stored = (
            i64,
            Vec<Option<u64>>,
            Option<Vec<u8>>,
            HashMap<String, u64>,
            Vec<String>,
            Vec<String>,
            Vec<Vec<u8>>,
        );
        let keys = &self.handle.keys;
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(keys.of(room, META))
            .arg(fence)
            .cmd("HMGET")
            .arg(keys.of(room, META))
            .arg("epoch")
            .arg("msg_id")
            .arg("normal_seq")
            .arg("ts")
            .cmd("GET")
            .arg(keys.of(room, CONFIG))
            .cmd("HGETALL")
            .arg(keys.of(room, MUTES))
            .cmd("SMEMBERS")
            .arg(keys.of(room, BANS))
            .cmd("SMEMBERS")
            .arg(keys.of(room, WHITELIST))
            .cmd("LRANGE")
            .arg(keys.of(room, HISTORY))
            .arg(0)
            .arg(-1);
        let mut conn = self.handle.conn.clone();
        let (claim, meta, config, mutes, bans, whitelist, history): Stored =
            pipe.query_async(&mut conn).await?;
        if let Ok(newer) = u64::try_from(claim) {
            return Err(StoreError::Fenced {
                room: room.to_owned(),
                fence: newer,
            });
        }
        let latest = match meta.as_slice() {
            &[Some(epoch), msg_id, normal_seq, ts] => Some(Cursor {
                epoch,
                ts: ts.unwrap_or(0),
                msg_id: msg_id.unwrap_or(0),
                normal_seq: normal_seq.unwrap_or(0),
            }),
            _ => None,
        };
        let overrides = config.and_then(|bytes| match RoomOverrides::decode(bytes.as_slice()) {
            Ok(overrides) => Some(overrides),
            Err(error) => {
                warn!(%error, room, "stored room settings cannot be decoded; ignored");
                None
            }
        });
        let stored_messages = history.len();
        let history: Vec<ChatMessage> = history
            .iter()
            .filter_map(|bytes| ChatMessage::decode(bytes.as_slice()).ok())
            .collect();
        if history.len() < stored_messages {
            warn!(
                room,
                skipped = stored_messages - history.len(),
                "stored messages that cannot be decoded were skipped"
            );
        }
        let found = latest.is_some()
            || overrides.is_some()
            || !mutes.is_empty()
            || !bans.is_empty()
            || !whitelist.is_empty();
        Ok(found.then(|| PersistedRoom {
            latest,
            overrides,
            mutes: mutes
                .into_iter()
                .map(|(user, until)| (user, (until > 0).then_some(until)))
                .collect(),
            bans,
            whitelist,
            history,
        }))
    }

    pub(super) fn submit(&self, writes: PendingWrites) -> Option<u64> {
        if writes.is_empty() {
            return None;
        }
        let shared = &self.handle.shared;
        let (coalesced, submission) = {
            let mut state = shared.lock();
            state.submitted += 1;
            let submission = state.submitted;
            (
                state.pending.merge_submission(writes, submission),
                submission,
            )
        };
        shared.count_dropped(coalesced);
        shared.wake.notify_one();
        Some(submission)
    }

    pub(super) async fn stored(&self, submission: u64) -> bool {
        let shared = &self.handle.shared;
        let mut health = shared.health.subscribe();
        if *health.borrow_and_update() == StoreHealth::Degraded {
            return false;
        }
        let mut written = shared.written.subscribe();
        let wait = async {
            tokio::select! {
                _ = written.wait_for(|&written| written >= submission) => true,
                _ = health.wait_for(|health| *health == StoreHealth::Degraded) => false,
            }
        };
        timeout(self.handle.config.request_timeout, wait)
            .await
            .unwrap_or(false)
    }

    pub(super) fn health(&self) -> StoreHealth {
        *self.handle.shared.health.borrow()
    }

    pub(super) fn watch_health(&self) -> watch::Receiver<StoreHealth> {
        self.handle.shared.health.subscribe()
    }

    pub(super) fn fenced(&self) -> broadcast::Receiver<Fenced> {
        self.handle.shared.fenced.subscribe()
    }

    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let shared = &self.handle.shared;
        let target = shared.lock().submitted;
        let mut written = shared.written.subscribe();
        let limit = self.handle.config.flush_timeout;
        match timeout(limit, written.wait_for(|&written| written >= target)).await {
            // The sender lives in `shared`, which this handle holds, so the
            // wait cannot end for lack of a sender.
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::Unflushed(limit)),
        }
    }

    pub(super) fn counters(&self) -> StoreCounters {
        let counters = &self.handle.shared.counters;
        StoreCounters {
            batches_written: counters.batches_written.load(Ordering::Relaxed),
            write_failures: counters.write_failures.load(Ordering::Relaxed),
            load_failures: counters.load_failures.load(Ordering::Relaxed),
            history_superseded: counters.history_superseded.load(Ordering::Relaxed),
            moderation_dropped: counters.moderation_dropped.load(Ordering::Relaxed),
            fenced_writes: counters.fenced_writes.load(Ordering::Relaxed),
        }
    }
}

/// The task that writes what the handles submit.
struct Writer {
    shared: Arc<Shared>,
    conn: ConnectionManager,
    keys: Arc<Keys>,
    config: RedisStoreConfig,
}

impl Writer {
    async fn run(mut self) {
        debug!("store writer started");
        // The last batch failed: it may have been applied all the same.
        let mut in_doubt = false;
        let mut pause = self.config.retry_min;
        let mut closing_since: Option<Instant> = None;
        while self.work_waits().await {
            if self.shared.lock().closed {
                closing_since.get_or_insert_with(Instant::now);
            } else if !self.config.flush_interval.is_zero() {
                sleep(self.config.flush_interval).await;
            }
            let batch = {
                let mut state = self.shared.lock();
                let batch = Arc::new(state.pending.take_batch(self.config.batch_weight));
                state.in_flight = Some(Arc::clone(&batch));
                batch
            };
            let result = self.write(&batch, in_doubt).await;
            match result {
                Ok(refused) => {
                    self.refused(refused);
                    self.written(batch.len());
                    in_doubt = false;
                    pause = self.config.retry_min;
                }
                Err(error) => {
                    let rooms = self.failed(batch);
                    if closing_since
                        .is_some_and(|since| since.elapsed() >= self.config.flush_timeout)
                    {
                        warn!(%error, rooms, "redis still fails at shutdown; unwritten room state is lost");
                        return;
                    }
                    in_doubt = true;
                    sleep(pause).await;
                    pause = (pause * 2).min(self.config.retry_max);
                }
            }
        }
        debug!("store writer stopped");
    }

    /// A batch of `rooms` is stored.
    fn written(&self, rooms: usize) {
        let mut state = self.shared.lock();
        state.in_flight = None;
        if state.write_failing {
            info!(rooms, "redis takes writes again");
        }
        state.write_failing = false;
        state.load_failing = false;
        let written = state
            .pending
            .oldest_submission()
            .map_or(state.submitted, |oldest| oldest.saturating_sub(1));
        self.shared.written.send_if_modified(|current| {
            let advanced = written > *current;
            *current = (*current).max(written);
            advanced
        });
        self.shared.publish_health(&state);
        self.shared
            .counters
            .batches_written
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Rooms whose writes the store refused for a newer owner's fence:
    /// counted, and their workers told.
    fn refused(&self, refused: Vec<Fenced>) {
        for fenced in refused {
            warn!(room = %fenced.room, fence = fenced.fence, "writes refused: a newer owner holds the room");
            self.shared
                .counters
                .fenced_writes
                .fetch_add(1, Ordering::Relaxed);
            // Nobody listens when no worker runs: nothing to tell then.
            let _ = self.shared.fenced.send(fenced);
        }
    }

    /// A batch failed: it goes back before what arrived meanwhile. Returns
    /// how many rooms now wait.
    fn failed(&self, batch: Arc<PendingWrites>) -> usize {
        let mut state = self.shared.lock();
        state.in_flight = None;
        // The only other reference was `in_flight`, just cleared.
        let mut failed = Arc::try_unwrap(batch).unwrap_or_else(|batch| (*batch).clone());
        let newer = std::mem::take(&mut state.pending);
        let coalesced = failed.merge_newer(newer);
        state.pending = failed;
        let first = !state.write_failing;
        state.write_failing = true;
        self.shared.publish_health(&state);
        let rooms = state.pending.len();
        drop(state);
        self.shared.count_dropped(coalesced);
        self.shared
            .counters
            .write_failures
            .fetch_add(1, Ordering::Relaxed);
        if first {
            warn!(rooms, "writing to redis failed; retrying with backoff");
        }
        rooms
    }

    /// Waits until writes are pending; false once the store is dropped and
    /// nothing is.
    async fn work_waits(&self) -> bool {
        loop {
            {
                let state = self.shared.lock();
                if !state.pending.is_empty() {
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            self.shared.wake.notified().await;
        }
    }

    /// Writes `batch` in one script; the rooms refused for a newer fence.
    async fn write(
        &mut self,
        batch: &PendingWrites,
        in_doubt: bool,
    ) -> Result<Vec<Fenced>, StoreError> {
        let stored = if in_doubt {
            self.stored_positions(batch).await?
        } else {
            HashMap::new()
        };
        let (script, rooms) = (::redis::Script::new(FENCED_WRITE), batch_rooms(batch));
        let mut invocation = script.prepare_invoke();
        fenced_transaction(&mut invocation, &self.keys, batch, &stored);
        let refused: Vec<u64> = request(
            self.config.request_timeout,
            invocation.invoke_async(&mut self.conn),
        )
        .await?;
        Ok(refused
            .chunks_exact(2)
            .filter_map(|pair| {
                let room = rooms.get(usize::try_from(pair[0]).ok()?)?;
                Some(Fenced {
                    room: Arc::clone(room),
                    fence: pair[1],
                })
            })
            .collect())
    }

    /// Where the streams of the batch's rooms stand in Redis.
    async fn stored_positions(
        &mut self,
        batch: &PendingWrites,
    ) -> Result<HashMap<Arc<str>, StoredPosition>, StoreError> {
        let rooms: Vec<&Arc<str>> = batch
            .iter()
            .filter(|(_, writes)| writes.latest.is_some())
            .map(|(room, _)| room)
            .collect();
        if rooms.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = ::redis::pipe();
        for room in &rooms {
            pipe.cmd("HMGET")
                .arg(self.keys.of(room, META))
                .arg("epoch")
                .arg("msg_id");
        }
        let positions: Vec<(Option<u64>, Option<u64>)> = request(
            self.config.request_timeout,
            pipe.query_async(&mut self.conn),
        )
        .await?;
        Ok(rooms
            .into_iter()
            .zip(positions)
            .filter_map(|(room, (epoch, msg_id))| {
                let position = StoredPosition {
                    epoch: epoch?,
                    msg_id: msg_id.unwrap_or(0),
                };
                Some((Arc::clone(room), position))
            })
            .collect())
    }
}

/// The rooms of `batch` in the order [`fenced_transaction`] lays them out.
fn batch_rooms(batch: &PendingWrites) -> Vec<&Arc<str>> {
    batch.iter().map(|(room, _)| room).collect()
}

/// A command for the fenced-write script: its name, its key (by suffix,
/// one of [`ROOM_KEYS`]) and its arguments.
type Command = (&'static str, &'static str, Vec<Vec<u8>>);

fn number(value: impl ToString) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Lays `batch` out as the fenced-write script's keys and arguments,
/// skipping what `stored` shows is in.
fn fenced_transaction(
    invocation: &mut ::redis::ScriptInvocation<'_>,
    keys: &Keys,
    batch: &PendingWrites,
    stored: &HashMap<Arc<str>, StoredPosition>,
) {
    for (room, writes) in batch.iter() {
        for suffix in ROOM_KEYS {
            invocation.key(keys.of(room, suffix));
        }
        let commands = room_commands(writes, stored.get(room).copied());
        invocation.arg(writes.fence).arg(commands.len());
        for (command, suffix, args) in commands {
            // The script's key indexes count from 1.
            let index = 1 + ROOM_KEYS
                .iter()
                .position(|key| *key == suffix)
                .expect("commands name room keys");
            invocation.arg(command).arg(index).arg(args.len());
            for arg in args {
                invocation.arg(arg);
            }
        }
    }
}

/// What storing one room's `writes` takes, skipping what `stored` shows is
/// in.
fn room_commands(writes: &RoomWrites, stored: Option<StoredPosition>) -> Vec<Command> {
    let already = writes.stored(stored);
    let mut room = Vec::new();
    if writes.clear && !already.began {
        for suffix in ROOM_KEYS {
            room.push(("DEL", suffix, Vec::new()));
        }
    } else if writes.reset_history && !already.began {
        room.push(("DEL", HISTORY, Vec::new()));
    }
    if let Some(latest) = writes.latest {
        let fields = [
            ("epoch", latest.epoch),
            ("msg_id", latest.msg_id),
            ("normal_seq", latest.normal_seq),
            ("ts", latest.ts),
        ];
        let args = fields
            .into_iter()
            .flat_map(|(field, value)| [field.as_bytes().to_vec(), number(value)])
            .collect();
        room.push(("HSET", META, args));
    }
    if let Some(overrides) = &writes.overrides {
        room.push(("SET", CONFIG, vec![overrides.encode_to_vec()]));
    }
    for (list, user, change) in writes.moderation() {
        let (command, suffix) = match (list, change) {
            (List::Mutes, EntryChange::Put(_)) => ("HSET", MUTES),
            (List::Mutes, EntryChange::Remove) => ("HDEL", MUTES),
            (List::Bans, EntryChange::Put(_)) => ("SADD", BANS),
            (List::Bans, EntryChange::Remove) => ("SREM", BANS),
            (List::Whitelist, EntryChange::Put(_)) => ("SADD", WHITELIST),
            (List::Whitelist, EntryChange::Remove) => ("SREM", WHITELIST),
        };
        let mut args = vec![user.as_bytes().to_vec()];
        if let (List::Mutes, EntryChange::Put(until_us)) = (list, change) {
            args.push(number(until_us.unwrap_or(0)));
        }
        room.push((command, suffix, args));
    }
    let messages: Vec<Vec<u8>> = writes
        .history
        .iter()
        .filter(|msg| msg.msg_id > already.through_msg_id)
        .map(Message::encode_to_vec)
        .collect();
    for chunk in messages.chunks(PUSH_CHUNK) {
        room.push(("RPUSH", HISTORY, chunk.to_vec()));
    }
    match writes.history_cap {
        Some(0) => room.push(("DEL", HISTORY, Vec::new())),
        Some(cap) => room.push(("LTRIM", HISTORY, vec![number(-i64::from(cap)), number(-1)])),
        None => {}
    }
    room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_checked() {
        for good in ["default", "eu-1", "a.b_c", &"x".repeat(64)] {
            assert!(check_cluster_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a:b", "a b", "{x}", &"x".repeat(65)] {
            assert!(
                matches!(check_cluster_name(bad), Err(StoreError::BadClusterName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_follow_the_schema() {
        let keys = Keys {
            prefix: "chatroom:prod:room:".into(),
        };
        assert_eq!(
            keys.of("stream:1", META),
            "chatroom:prod:room:stream:1:meta"
        );
        assert_eq!(keys.of("s", HISTORY), "chatroom:prod:room:s:history");
    }
}
