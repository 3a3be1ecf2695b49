//! Membership: which nodes are alive, and so who owns what.
//!
//! A node joins with its [`NodeInfo`] and gets a [`Registration`]: a live
//! view of the [`Members`] (every node computes placement from it) and the
//! registration's health. Two implementations sit behind it: a fixed,
//! in-process membership for the embedded server, and ZooKeeper (an
//! ephemeral znode per node under the cluster root, watched by every node,
//! re-created after a session expiry).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::metrics::Registry;
use crate::placement;

mod args;
mod lease;
mod metrics;
mod zookeeper;

use metrics::ZooKeeperMetrics;

pub use args::{JoinArgs, JoinArgsError};
pub use lease::Lease;
pub use zookeeper::{BadZkDigest, MembershipError, ZkConfig, ZkDigest, join_zookeeper};

/// What a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Owns rooms.
    RoomSvc,
    /// Serves clients.
    MsgSvc,
}

impl Role {
    /// The role's directory under the cluster root.
    pub fn dir(self) -> &'static str {
        match self {
            Self::RoomSvc => "room-svc",
            Self::MsgSvc => "msg-svc",
        }
    }
}

/// A live node as membership records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique within the cluster.
    pub id: String,
    /// What it plays.
    pub role: Role,
    /// Where msg-svc nodes open their links (room-svc), `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_addr: Option<String>,
    /// Where clients connect (msg-svc), e.g. `ws://127.0.0.1:7400/ws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
    /// Where QUIC clients connect (msg-svc), e.g. `quic://127.0.0.1:7402`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic_url: Option<String>,
    /// Health, readiness and (later) admin and metrics, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
}

impl NodeInfo {
    /// Node `id` in `role`, with no address registered yet.
    pub fn new(id: impl Into<String>, role: Role) -> Self {
        Self {
            id: id.into(),
            role,
            link_addr: None,
            client_url: None,
            quic_url: None,
            http_addr: None,
        }
    }
}

impl AsRef<str> for NodeInfo {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

/// The live nodes, each list sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Nodes owning rooms.
    pub room_svcs: Vec<NodeInfo>,
    /// Nodes serving clients.
    pub msg_svcs: Vec<NodeInfo>,
    /// Which view of the room services this is: it grows with every change
    /// to them (in ZooKeeper, the zxid of the last change to their
    /// directory), so an owner of a room in a later view always holds a
    /// larger term than any owner before it. 0 in a fixed membership.
    pub term: u64,
}

impl Members {
    /// Members from any list of nodes.
    pub fn new(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        let mut members = Self::default();
        for node in nodes {
            match node.role {
                Role::RoomSvc => members.room_svcs.push(node),
                Role::MsgSvc => members.msg_svcs.push(node),
            }
        }
        members.room_svcs.sort_by(|a, b| a.id.cmp(&b.id));
        members.msg_svcs.sort_by(|a, b| a.id.cmp(&b.id));
        members
    }

    /// The same members as view `term`.
    #[must_use]
    pub fn with_term(mut self, term: u64) -> Self {
        self.term = term;
        self
    }

    /// The room service that owns `room`.
    pub fn room_owner(&self, room: &str) -> Option<&NodeInfo> {
        placement::owner(room, &self.room_svcs)
    }

    /// The message service that serves `user`.
    pub fn user_owner(&self, user: &str) -> Option<&NodeInfo> {
        placement::owner(user, &self.msg_svcs)
    }

    /// A node by id, in either role.
    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.room_svcs
            .iter()
            .chain(&self.msg_svcs)
            .find(|n| n.id == id)
    }
}

/// How the node's registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipHealth {
    /// Registered and watching: the member view is current.
    Live,
    /// ZooKeeper cannot be reached; the member view is the last one known
    /// and placement does not move until it can be refreshed.
    Unreachable,
}

/// A node's place in the cluster: the member view and its health. Dropping
/// it leaves the cluster (the ZooKeeper session closes, the znode goes with
/// it); [`leave`](Self::leave) does so at once and waits.
#[derive(Debug)]
pub struct Registration {
    me: NodeInfo,
    members: watch::Receiver<Arc<Members>>,
    health: watch::Receiver<MembershipHealth>,
    lease: Lease,
    /// Ends the background task, if any, when sent or dropped.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// What ZooKeeper put the registration through, for a ZooKeeper one.
    zookeeper: Option<ZooKeeperMetrics>,
}

impl Registration {
    /// A fixed membership: the embedded server's.
    pub fn in_process(me: NodeInfo, members: Members) -> Self {
        let (_, members) = watch::channel(Arc::new(members));
        let (_, health) = watch::channel(MembershipHealth::Live);
        Self {
            me,
            members,
            health,
            lease: Lease::forever(),
            stop: None,
            task: None,
            zookeeper: None,
        }
    }

    pub(crate) fn new(
        me: NodeInfo,
        members: watch::Receiver<Arc<Members>>,
        health: watch::Receiver<MembershipHealth>,
        lease: Lease,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
        zookeeper: ZooKeeperMetrics,
    ) -> Self {
        Self {
            me,
            members,
            health,
            lease,
            stop: Some(stop),
            task: Some(task),
            zookeeper: Some(zookeeper),
        }
    }

    /// Removes this node from the cluster now and waits until it is done.
    pub async fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// This node.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    /// The member view, updated on every change.
    pub fn members(&self) -> watch::Receiver<Arc<Members>> {
        self.members.clone()
    }

    /// The registration's health, updated on every change.
    pub fn health(&self) -> watch::Receiver<MembershipHealth> {
        self.health.clone()
    }

    /// How long this node may act on the member view (see [`Lease`]):
    /// for ever in a fixed membership, while ZooKeeper has recently proven
    /// the session alive in a ZooKeeper one.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// Registers the registration's families: `chatroom_cluster_members`
    /// (every node shows the same numbers once membership has settled)
    /// and, for a ZooKeeper registration, `chatroom_zookeeper_*`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        metrics::register_members(registry, self.members.clone());
        if let Some(zookeeper) = &self.zookeeper {
            zookeeper.register(registry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_by_role_and_id_and_place_keys() {
        let members = Members::new([
            NodeInfo::new("r2", Role::RoomSvc),
            NodeInfo::new("m1", Role::MsgSvc),
            NodeInfo::new("r1", Role::RoomSvc),
        ]);
        assert_eq!(
            members
                .room_svcs
                .iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        assert_eq!(members.user_owner("alice").unwrap().id, "m1");
        assert!(members.room_owner("lobby").is_some());
        assert_eq!(members.node("r2").unwrap().role, Role::RoomSvc);
        assert!(Members::default().room_owner("lobby").is_none());
    }

    #[test]
    fn node_info_round_trips_as_json() {
        let mut info = NodeInfo::new("m1", Role::MsgSvc);
        info.client_url = Some("ws://127.0.0.1:7400/ws".into());
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(
            json,
            r#"{"id":"m1","role":"msg-svc","client_url":"ws://127.0.0.1:7400/ws"}"#
        );
        assert_eq!(serde_json::from_str::<NodeInfo>(&json).unwrap(), info);
    }
}
