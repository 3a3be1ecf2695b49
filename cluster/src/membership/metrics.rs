//! Membership's own families: the live nodes by role, and what ZooKeeper
//! put the registration through.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Members, Role};
use crate::metrics::{Counter, Labelled, Registry, Sampled};

/// Registers `chatroom_cluster_members{role}`: the live nodes in `members`
/// by role, read when scraped.
pub(crate) fn register_members(registry: &mut Registry, members: watch::Receiver<Arc<Members>>) {
    let by_role = move || {
        let members = members.borrow();
        vec![
            (Role::RoomSvc.dir(), members.room_svcs.len() as u64),
            (Role::MsgSvc.dir(), members.msg_svcs.len() as u64),
        ]
    };
    registry.register(
        "cluster_members",
        "Live nodes this node sees in the cluster's membership, by role",
        Sampled::gauges_by("role", by_role),
    );
}

/// What ZooKeeper put the registration through; counted by its watcher.
#[derive(Debug, Clone)]
pub(crate) struct ZooKeeperMetrics {
    disconnects: Counter,
    sessions_lost: Labelled<Counter>,
    errors: Labelled<Counter>,
}

/// Why a ZooKeeper session was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionLoss {
    Expired,
    AuthFailed,
    Closed,
}

impl SessionLoss {
    /// For logs.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::AuthFailed => "authentication failed",
            Self::Closed => "closed",
        }
    }
}

/// A ZooKeeper operation of the registration's that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZooKeeperOp {
    /// Registering this node in a new session.
    Register,
    /// Listing the members.
    List,
    /// Removing this node's registration when it leaves.
    Leave,
}

impl Default for ZooKeeperMetrics {
    fn default() -> Self {
        Self {
            disconnects: Counter::default(),
            sessions_lost: Labelled::new("reason", ["expired", "auth_failed", "closed"]),
            errors: Labelled::new("op", ["register", "list", "leave"]),
        }
    }
}

impl ZooKeeperMetrics {
    pub(crate) fn disconnected(&self) {
        self.disconnects.inc();
    }

    pub(crate) fn session_lost(&self, why: SessionLoss) {
        self.sessions_lost.series(why as usize).inc();
    }

    pub(crate) fn failed(&self, op: ZooKeeperOp) {
        self.errors.series(op as usize).inc();
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "zookeeper_disconnects",
            "Times the connection to ZooKeeper dropped (the session may outlive it)",
            self.disconnects.clone(),
        );
        self.sessions_lost.register(
            registry,
            "zookeeper_sessions_lost",
            "ZooKeeper sessions lost, by reason (expired: ZooKeeper dropped this node \
             for longer than the session timeout); the node then registers again",
        );
        self.errors.register(
            registry,
            "zookeeper_errors",
            "Failed ZooKeeper operations, by operation: registering this node in a new \
             session, listing the members, removing the registration when leaving",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::NodeInfo;
    use crate::metrics::{registry, render};

    #[test]
    fn members_are_counted_by_role_as_seen_now() {
        let node = NodeInfo::new;
        let (tx, rx) = watch::channel(Arc::new(Members::default()));
        let mut registry = registry();
        register_members(&mut registry, rx);
        assert!(render(&registry).contains(
            "chatroom_cluster_members{role=\"room-svc\"} 0\n\
             chatroom_cluster_members{role=\"msg-svc\"} 0\n"
        ));
        tx.send_replace(Arc::new(Members::new([
            node("r1", Role::RoomSvc),
            node("m1", Role::MsgSvc),
            node("m2", Role::MsgSvc),
        ])));
        assert!(render(&registry).contains(
            "chatroom_cluster_members{role=\"room-svc\"} 1\n\
             chatroom_cluster_members{role=\"msg-svc\"} 2\n"
        ));
    }

    #[test]
    fn zookeeper_troubles_are_counted_by_reason_and_operation() {
        let metrics = ZooKeeperMetrics::default();
        let mut registry = registry();
        metrics.register(&mut registry);
        metrics.disconnected();
        metrics.session_lost(SessionLoss::Expired);
        metrics.failed(ZooKeeperOp::List);
        metrics.failed(ZooKeeperOp::List);
        let text: Vec<String> = render(&registry).lines().map(str::to_owned).collect();
        for expected in [
            "chatroom_zookeeper_disconnects_total 1",
            "chatroom_zookeeper_sessions_lost_total{reason=\"expired\"} 1",
            "chatroom_zookeeper_sessions_lost_total{reason=\"closed\"} 0",
            "chatroom_zookeeper_errors_total{op=\"list\"} 2",
            "chatroom_zookeeper_errors_total{op=\"register\"} 0",
        ] {
            assert!(
                text.contains(&expected.to_owned()),
                "{expected} in {text:?}"
            );
        }
    }
}
