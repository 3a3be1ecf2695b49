//! Every session on the node, by id and by user and device.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::notifier::SessionId;
use crate::session::Session;

const ID_SHARDS: usize = 16;

/// A user already holds the most sessions allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManySessions;

type IdShard = Mutex<HashMap<SessionId, Arc<Session>>>;

/// A user's sessions on this node: (device, session) pairs.
type Devices = Vec<(Arc<str>, SessionId)>;

/// The node's sessions. Lookups by id (routing acks) are sharded; the
/// user index is only touched at connect and close.
#[derive(Debug)]
pub(crate) struct SessionTable {
    by_id: Box<[IdShard]>,
    by_user: Mutex<HashMap<Arc<str>, Devices>>,
    count: AtomicUsize,
    /// Signalled when the last session goes.
    emptied: Notify,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self {
            by_id: (0..ID_SHARDS).map(|_| Mutex::default()).collect(),
            by_user: Mutex::default(),
            count: AtomicUsize::new(0),
            emptied: Notify::new(),
        }
    }
}

impl SessionTable {
    fn shard(&self, id: SessionId) -> &IdShard {
        &self.by_id[(id % ID_SHARDS as u64) as usize]
    }

    pub(crate) fn insert(&self, session: Arc<Session>) {
        if self
            .shard(session.id)
            .lock()
            .insert(session.id, session)
            .is_none()
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, id: SessionId) -> Option<Arc<Session>> {
        self.shard(id).lock().get(&id).cloned()
    }

    /// Forgets a session (and its device registration).
    pub(crate) fn remove(&self, session: &Session) {
        if self.shard(session.id).lock().remove(&session.id).is_some()
            && self.count.fetch_sub(1, Ordering::Relaxed) == 1
        {
            self.emptied.notify_waiters();
        }
        let Some(identity) = session.identity() else {
            return;
        };
        let mut users = self.by_user.lock();
        if let Some(devices) = users.get_mut(&identity.user) {
            devices.retain(|(_, id)| *id != session.id);
            if devices.is_empty() {
                users.remove(&identity.user);
            }
        }
    }

    /// Registers `session` as `user`'s `device`. Returns the session it
    /// replaces (same user and device), if any.
    pub(crate) fn register_device(
        &self,
        user: &Arc<str>,
        device: &Arc<str>,
        session: SessionId,
        max_per_user: usize,
    ) -> Result<Option<SessionId>, TooManySessions> {
        let mut users = self.by_user.lock();
        let devices = users.entry(user.clone()).or_default();
        if let Some(slot) = devices.iter_mut().find(|(d, _)| d == device) {
            return Ok(Some(std::mem::replace(&mut slot.1, session)));
        }
        if devices.len() >= max_per_user {
            return Err(TooManySessions);
        }
        devices.push((device.clone(), session));
        Ok(None)
    }

    /// The user's sessions on this node.
    pub(crate) fn of_user(&self, user: &str) -> Vec<Arc<Session>> {
        let ids: Vec<SessionId> = self
            .by_user
            .lock()
            .get(user)
            .map(|devices| devices.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// A snapshot of every session.
    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.by_id
            .iter()
            .flat_map(|shard| shard.lock().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until no session is left, at most `patience`; true if none is.
    pub(crate) async fn wait_empty(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.len() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return self.len() == 0;
            }
        }
    }
}
