//! Membership in ZooKeeper: each node holds an ephemeral znode
//! `{root}/{role}/{id}` with its [`NodeInfo`] as JSON, and every node watches
//! both role directories.
//!
//! While the session is merely disconnected the last view stands (placement
//! does not move on a blip) and health says `Unreachable`. When the session
//! expires (ZooKeeper lost us for longer than the session timeout) a new
//! session is built, the znode re-created and the watches re-armed. Changes
//! are published after a short quiet period, so a cluster re-registering after
//! a ZooKeeper outage settles before placement follows it.
//!
//! A view's term is the room-svc directory's `pzxid`, the zxid of the last
//! child created or deleted under it: a later view of the room services has
//! a larger one. While a session lives, a task proves it alive every
//! [`RENEW_SHARE`]th of the timeout (a read of our own znode, checked to be
//! ours) and so renews the [`Lease`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use zookeeper_client::{Acls, Client, CreateMode, OneshotWatcher, SessionState};

use super::metrics::{SessionLoss, ZooKeeperMetrics, ZooKeeperOp};
use super::{Lease, Members, MembershipHealth, NodeInfo, Registration, Role};

/// How long member changes must be quiet before they are published.
const SETTLE: Duration = Duration::from_millis(200);
/// After a session expired, how long to wait before publishing the view:
/// every node lost its session at once and re-registers about now, and a
/// view taken before they all did would move rooms back and forth.
const RESETTLE: Duration = Duration::from_secs(1);
/// How often the session is proven alive, as a share of its timeout; well
/// inside the lease's share, so one slow answer does not end the lease.
const RENEW_SHARE: u32 = 8;
/// First and longest pause between attempts to rebuild a lost session.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3));

/// Where and how to reach ZooKeeper.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// `host:port[,host:port…]`.
    pub connect: String,
    /// The cluster's root znode, e.g. `/chatroom/default`.
    pub root: String,
    /// How long ZooKeeper keeps a silent session (and its znode) alive.
    pub session_timeout: Duration,
    /// Digest credentials to authenticate with; with them, the cluster's
    /// znodes are created readable and writable by that identity only.
    pub auth: Option<ZkDigest>,
}

/// ZooKeeper `digest` credentials, `USER:PASSWORD`. Every node of a cluster
/// uses the same ones, so each can read and replace the others' znodes.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkDigest(String);

/// Why digest credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zookeeper credentials must be USER:PASSWORD, both non-empty, on one line")]
pub struct BadZkDigest;

impl ZkDigest {
    /// `USER:PASSWORD`; a trailing newline (a file's) is dropped.
    pub fn new(text: &str) -> Result<Self, BadZkDigest> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        match text.split_once(':') {
            Some((user, password))
                if !user.is_empty() && !password.is_empty() && !text.contains(['\n', '\r']) =>
            {
                Ok(Self(text.to_owned()))
            }
            _ => Err(BadZkDigest),
        }
    }
}

impl std::fmt::Debug for ZkDigest {
    /// The user only: the password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.0.split_once(':').map_or("", |(user, _)| user);
        write!(f, "ZkDigest({user}:…)")
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// ZooKeeper could not be reached or refused an operation.
    #[error("zookeeper at {connect}: {source}")]
    ZooKeeper {
        /// The connect string.
        connect: String,
        /// What went wrong.
        source: zookeeper_client::Error,
    },
    /// The cluster root is not a valid absolute path.
    #[error("cluster root {0:?} must be an absolute znode path like /chatroom/default")]
    BadRoot(String),
}

/// Registers `me` under `config.root` and starts watching the members.
/// Fails if ZooKeeper cannot be reached now; once joined, outages are
/// ridden out in the background.
pub async fn join_zookeeper(
    config: ZkConfig,
    me: NodeInfo,
) -> Result<Registration, MembershipError> {
    if !config.root.starts_with('/') || config.root.ends_with('/') || config.root.len() < 2 {
        return Err(MembershipError::BadRoot(config.root));
    }
    let zk_error = |source| MembershipError::ZooKeeper {
        connect: config.connect.clone(),
        source,
    };
    let session = Session::open(&config, &me).await.map_err(zk_error)?;
    let members = session.members().await.map_err(zk_error)?;
    info!(
        node = %me.id,
        room_svcs = members.0.room_svcs.len(),
        msg_svcs = members.0.msg_svcs.len(),
        "joined the cluster"
    );
    let (members_tx, members_rx) = watch::channel(Arc::new(members.0.clone()));
    let (health_tx, health_rx) = watch::channel(MembershipHealth::Live);
    let (stop_tx, stop_rx) = oneshot::channel();
    let metrics = ZooKeeperMetrics::default();
    let lease = Lease::renewable();
    let task = Watcher {
        config,
        me: me.clone(),
        members: members_tx,
        health: health_tx,
        lease: lease.clone(),
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(task.run(session, members.1, stop_rx));
    Ok(Registration::new(
        me, members_rx, health_rx, lease, stop_tx, task, metrics,
    ))
}

/// One ZooKeeper session with our znode in it.
struct Session {
    client: Client,
    root: String,
    /// Our znode.
    path: String,
    /// Who may use the znodes this session creates: anyone, or with
    /// credentials, only those who hold them.
    acls: Acls<'static>,
}

/// Watches armed on the two role directories.
struct Watches {
    room_svcs: OneshotWatcher,
    msg_svcs: OneshotWatcher,
}

impl Session {
    async fn open(config: &ZkConfig, me: &NodeInfo) -> Result<Self, zookeeper_client::Error> {
        let mut connector = Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.session_timeout);
        if let Some(ZkDigest(credentials)) = &config.auth {
            connector = connector.with_auth("digest", credentials.as_bytes());
        }
        let client = connector.connect(&config.connect).await?;
        let session = Self {
            client,
            root: config.root.clone(),
            path: format!("{}/{}/{}", config.root, me.role.dir(), me.id),
            acls: if config.auth.is_some() {
                Acls::creator_all()
            } else {
                Acls::anyone_all()
            },
        };
        session.register(me).await?;
        Ok(session)
    }

    fn dir(&self, role: Role) -> String {
        format!("{}/{}", self.root, role.dir())
    }

    async fn register(&self, me: &NodeInfo) -> Result<(), zookeeper_client::Error> {
        // Above the cluster's root (`/chatroom`) other clusters, with
        // other credentials, make their own roots.
        if let Some((parent, _)) = self.root.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
            let shared = CreateMode::Persistent.with_acls(Acls::anyone_all());
            self.client.mkdir(parent, &shared).await?;
        }
        let persistent = CreateMode::Persistent.with_acls(self.acls);
        for role in [Role::RoomSvc, Role::MsgSvc] {
            self.client.mkdir(&self.dir(role), &persistent).await?;
        }
        let path = &self.path;
        // Serialising a struct of strings cannot fail.
        let data = serde_json::to_vec(me).expect("node info serialises");
        let ephemeral = CreateMode::Ephemeral.with_acls(self.acls);
        match self.client.create(path, &data, &ephemeral).await {
            Err(zookeeper_client::Error::NodeExists) => {
                // Left by an earlier process with this id whose session has
                // not expired yet (a restart faster than the timeout).
                warn!(%path, "replacing a stale registration with this node id");
                match self.client.delete(path, None).await {
                    Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                    Err(error) => return Err(error),
                }
                self.client.create(path, &data, &ephemeral).await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// Lists both directories and arms a watch on each.
    async fn members(&self) -> Result<(Members, Watches), zookeeper_client::Error> {
        let (room_svcs, term, room_watch) = self.list(Role::RoomSvc).await?;
        let (msg_svcs, _, msg_watch) = self.list(Role::MsgSvc).await?;
        // A zxid is never negative.
        let term = u64::try_from(term).unwrap_or(0);
        let members = Members::new(room_svcs.into_iter().chain(msg_svcs)).with_term(term);
        let watches = Watches {
            room_svcs: room_watch,
            msg_svcs: msg_watch,
        };
        Ok((members, watches))
    }

    /// The nodes in `role`'s directory and the zxid of its last change.
    async fn list(
        &self,
        role: Role,
    ) -> Result<(Vec<NodeInfo>, i64, OneshotWatcher), zookeeper_client::Error> {
        let dir = self.dir(role);
        let (children, stat, watcher) = self.client.get_and_watch_children(&dir).await?;
        let mut nodes = Vec::with_capacity(children.len());
        for child in children {
            match self.client.get_data(&format!("{dir}/{child}")).await {
                Ok((data, _)) => match serde_json::from_slice::<NodeInfo>(&data) {
                    Ok(node) if node.role == role && node.id == child => nodes.push(node),
                    Ok(_) | Err(_) => {
                        warn!(%dir, %child, "ignoring a znode that is not a node record")
                    }
                },
                // Gone between the listing and the read: it left.
                Err(zookeeper_client::Error::NoNode) => {}
                Err(error) => return Err(error),
            }
        }
        Ok((nodes, stat.pzxid, watcher))
    }

    /// Proves the session alive, again and again, renewing `lease`; runs
    /// until dropped. A proof is an answered read of our znode that shows
    /// it is still this session's.
    async fn renew(client: Client, path: String, lease: Lease) {
        let timeout = client.session_timeout();
        let every = timeout / RENEW_SHARE;
        loop {
            let sent = Instant::now();
            match tokio::time::timeout(timeout, client.check_stat(&path)).await {
                Ok(Ok(Some(stat))) if stat.ephemeral_owner == client.session_id().0 => {
                    lease.renew(sent, timeout);
                }
                Ok(Ok(_)) => {
                    warn!(%path, "our znode is gone or not ours; the lease is not renewed")
                }
                Ok(Err(error)) => debug!(%error, "cannot prove the session alive now"),
                Err(_) => debug!("proving the session alive timed out"),
            }
            tokio::time::sleep_until(sent + every).await;
        }
    }
}

struct Watcher {
    config: ZkConfig,
    me: NodeInfo,
    members: watch::Sender<Arc<Members>>,
    health: watch::Sender<MembershipHealth>,
    lease: Lease,
    metrics: ZooKeeperMetrics,
}

impl Watcher {
    async fn run(
        self,
        mut session: Session,
        mut watches: Watches,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            self.lease.begin(self.members.borrow().term);
            let renewing = tokio::spawn(Session::renew(
                session.client.clone(),
                session.path.clone(),
                self.lease.clone(),
            ));
            let outcome = tokio::select! {
                _ = &mut stop => {
                    renewing.abort();
                    self.lease.end();
                    self.leave(&session).await;
                    return;
                }
                outcome = self.follow(&session, watches) => outcome,
            };
            // The session is gone, and what it proved with it; then a new
            // one is built until it sticks.
            renewing.abort();
            self.lease.end();
            self.metrics.session_lost(outcome);
            warn!(node = %self.me.id, reason = outcome.describe(), "zookeeper session lost; re-registering");
            self.health.send_replace(MembershipHealth::Unreachable);
            let mut pause = RETRY.0;
            (session, watches) = loop {
                tokio::select! {
                    _ = &mut stop => return,
                    opened = Session::open(&self.config, &self.me) => match opened {
                        Ok(session) => {
                            tokio::time::sleep(RESETTLE).await;
                            let (members, watches) = match session.members().await {
                                Ok(listed) => listed,
                                Err(error) => {
                                    self.metrics.failed(ZooKeeperOp::List);
                                    debug!(%error, "listing after re-registration failed; retrying");
                                    continue;
                                }
                            };
                            self.publish(members);
                            info!(node = %self.me.id, "re-registered");
                            break (session, watches);
                        }
                        Err(error) => {
                            self.metrics.failed(ZooKeeperOp::Register);
                            debug!(%error, "re-registration failed; retrying");
                        }
                    },
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY.1);
            };
            self.health.send_replace(MembershipHealth::Live);
        }
    }

    /// Follows one session until it is lost; returns why.
    async fn follow(&self, session: &Session, watches: Watches) -> SessionLoss {
        let mut state = session.client.state_watcher();
        let mut armed = Some(watches);
        loop {
            let relist = tokio::select! {
                () = fired(&mut armed) => true,
                changed = state.changed() => match changed {
                    SessionState::Disconnected => {
                        self.metrics.disconnected();
                        self.health.send_replace(MembershipHealth::Unreachable);
                        false
                    }
                    // Back within the session: watches survive, but read
                    // again in case something changed while we were away.
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        self.health.send_replace(MembershipHealth::Live);
                        true
                    }
                    SessionState::Expired => return SessionLoss::Expired,
                    SessionState::AuthFailed => return SessionLoss::AuthFailed,
                    SessionState::Closed => return SessionLoss::Closed,
                },
            };
            if !relist {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            loop {
                match session.members().await {
                    Ok((members, fresh)) => {
                        self.publish(members);
                        armed = Some(fresh);
                        break;
                    }
                    Err(error) => {
                        self.metrics.failed(ZooKeeperOp::List);
                        debug!(%error, "cannot list members yet");
                        // Wait for the session to come back or end.
                        loop {
                            match state.changed().await {
                                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                                    break;
                                }
                                SessionState::Disconnected => self.metrics.disconnected(),
                                SessionState::Expired => return SessionLoss::Expired,
                                SessionState::AuthFailed => return SessionLoss::AuthFailed,
                                SessionState::Closed => return SessionLoss::Closed,
                            }
                        }
                        self.health.send_replace(MembershipHealth::Live);
                    }
                }
            }
        }
    }

    fn publish(&self, members: Members) {
        self.members.send_if_modified(|current| {
            if **current == members {
                false
            } else {
                debug!(
                    room_svcs = members.room_svcs.len(),
                    msg_svcs = members.msg_svcs.len(),
                    "members changed"
                );
                *current = Arc::new(members);
                true
            }
        });
    }

    async fn leave(&self, session: &Session) {
        let path = &session.path;
        match session.client.delete(path, None).await {
            Ok(()) | Err(zookeeper_client::Error::NoNode) => {
                info!(node = %self.me.id, "left the cluster")
            }
            Err(error) => {
                self.metrics.failed(ZooKeeperOp::Leave);
                warn!(%error, "could not remove our registration; it expires with the session")
            }
        }
    }
}

/// Completes when either armed watch fires; never, when none is armed. The
/// watches are taken: if a state change wins the race they are lost, which is
/// fine, as every path out of a disconnection re-lists and re-arms.
async fn fired(armed: &mut Option<Watches>) {
    match armed.take() {
        Some(watches) => {
            tokio::select! {
                _ = watches.room_svcs.changed() => {}
                _ = watches.msg_svcs.changed() => {}
            }
        }
        None => std::future::pending().await,
    }
}
