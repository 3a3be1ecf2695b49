//! Who is in a room and on which msg-svc nodes: soft state rebuilt from the
//! nodes' membership reports. A user on two devices may be present on two
//! nodes and still counts once.

use std::collections::HashMap;

/// A msg-svc node attached to this room service, numbered when it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIdx(pub u32);

impl std::fmt::Display for NodeIdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

/// The nodes one member is present on: almost always exactly one, so that
/// case needs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Presence {
    One(NodeIdx),
    Many(Vec<NodeIdx>),
}

impl Presence {
    fn nodes(&self) -> &[NodeIdx] {
        match self {
            Self::One(node) => std::slice::from_ref(node),
            Self::Many(nodes) => nodes,
        }
    }

    fn add(&mut self, node: NodeIdx) {
        match self {
            Self::One(only) if *only == node => {}
            Self::One(only) => *self = Self::Many(vec![*only, node]),
            Self::Many(nodes) if nodes.contains(&node) => {}
            Self::Many(nodes) => nodes.push(node),
        }
    }

    /// Removes `node`; whether the member is now present nowhere.
    fn remove(&mut self, node: NodeIdx) -> bool {
        match self {
            Self::One(only) => *only == node,
            Self::Many(nodes) => {
                nodes.retain(|&n| n != node);
                match nodes.as_slice() {
                    [] => true,
                    &[only] => {
                        *self = Self::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// The members of one room.
#[derive(Debug, Default)]
pub struct RoomMembers {
    users: HashMap<Box<str>, Presence>,
}

impl RoomMembers {
    /// No members.
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct users present on at least one node.
    pub fn count(&self) -> usize {
        self.users.len()
    }

    /// Whether `user` is present on some node.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The nodes `user` is present on (empty when absent).
    pub fn nodes_of(&self, user: &str) -> &[NodeIdx] {
        self.users.get(user).map_or(&[], Presence::nodes)
    }

    /// Marks `user` present on `node`.
    pub fn join(&mut self, user: &str, node: NodeIdx) {
        match self.users.get_mut(user) {
            Some(presence) => presence.add(node),
            None => {
                self.users.insert(user.into(), Presence::One(node));
            }
        }
    }

    /// Marks `user` absent from `node`.
    pub fn leave(&mut self, user: &str, node: NodeIdx) {
        if let Some(presence) = self.users.get_mut(user)
            && presence.remove(node)
        {
            self.users.remove(user);
        }
    }

    /// Removes `user` from every node; the nodes they were on.
    pub fn remove_user(&mut self, user: &str) -> Vec<NodeIdx> {
        self.users
            .remove(user)
            .map(|presence| presence.nodes().to_vec())
            .unwrap_or_default()
    }

    /// Removes every member's presence on `node`. Walks all members: nodes
    /// leave rarely, members join and leave often.
    pub fn remove_node(&mut self, node: NodeIdx) {
        self.users.retain(|_, presence| !presence.remove(node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeIdx = NodeIdx(1);
    const B: NodeIdx = NodeIdx(2);

    #[test]
    fn a_user_on_two_nodes_counts_once() {
        let mut members = RoomMembers::new();
        members.join("alice", A);
        members.join("alice", B);
        members.join("alice", B);
        assert_eq!(members.count(), 1);
        assert_eq!(members.nodes_of("alice"), &[A, B]);
        members.leave("alice", A);
        assert_eq!(members.nodes_of("alice"), &[B]);
        assert!(members.contains("alice"));
        members.leave("alice", B);
        assert!(!members.contains("alice"));
        assert_eq!(members.count(), 0);
        assert_eq!(members.nodes_of("alice"), &[] as &[NodeIdx]);
    }

    #[test]
    fn leaving_a_node_one_is_not_on_changes_nothing() {
        let mut members = RoomMembers::new();
        members.join("alice", A);
        members.leave("alice", B);
        members.leave("bob", A);
        assert_eq!(members.nodes_of("alice"), &[A]);
    }

    #[test]
    fn removing_a_node_keeps_members_present_elsewhere() {
        let mut members = RoomMembers::new();
        members.join("alice", A);
        members.join("alice", B);
        members.join("bob", A);
        members.join("carol", B);
        members.remove_node(A);
        assert_eq!(members.count(), 2);
        assert_eq!(members.nodes_of("alice"), &[B]);
        assert!(!members.contains("bob"));
    }

    #[test]
    fn removing_a_user_reports_their_nodes() {
        let mut members = RoomMembers::new();
        members.join("alice", A);
        members.join("alice", B);
        assert_eq!(members.remove_user("alice"), vec![A, B]);
        assert_eq!(members.remove_user("alice"), vec![]);
        assert_eq!(members.count(), 0);
    }
}
