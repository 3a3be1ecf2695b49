//! The lifecycle step by step: joiners waiting for the owner, subscriptions
//! following placement, presence reports, closing and reaping.

use super::*;
use crate::room::fixtures::message;

const TIMERS: Timers = Timers {
    subscribe_timeout: 100,
    grace: 1_000,
};

/// A room, the time, and what its link does with frames.
struct Room {
    lifecycle: RoomLifecycle<u32>,
    now: u64,
}

impl Room {
    fn new() -> Self {
        Self {
            lifecycle: RoomLifecycle::new(TIMERS),
            now: 0,
        }
    }

    /// A room placed at `owner`, its Subscribe sent.
    fn placed(owner: &str) -> Self {
        let mut room = Self::new();
        room.feed(Event::Owner(Some(owner.into())));
        assert_eq!(room.transmit(false), [subscribe(false, &[])]);
        room
    }

    /// A room placed at `owner` and live, with nobody in it.
    fn live(owner: &str) -> Self {
        let mut room = Self::placed(owner);
        room.feed(Event::Subscribed(ack(1, 0, 3)));
        room.ring_ops();
        room.actions();
        room
    }

    fn feed(&mut self, event: Event<u32>) {
        self.lifecycle.handle(self.now, event);
    }

    fn join(&mut self, user: &str, waiter: u32) {
        self.feed(Event::Join {
            user: user.into(),
            waiter,
            granted: true,
        });
    }

    /// A session of `user` whose token grants no access to the room.
    fn join_ungranted(&mut self, user: &str, waiter: u32) {
        self.feed(Event::Join {
            user: user.into(),
            waiter,
            granted: false,
        });
    }

    fn leave(&mut self, user: &str) {
        self.feed(Event::Leave { user: user.into() });
    }

    /// What goes out over a link that takes everything.
    fn transmit(&mut self, flush_presence: bool) -> Vec<Transmit> {
        let mut sent = Vec::new();
        self.lifecycle.transmit(flush_presence, &mut |transmit| {
            sent.push(transmit);
            Ok(())
        });
        sorted(sent)
    }

    /// What is offered to a link that refuses everything.
    fn transmit_refused(&mut self, flush_presence: bool) -> Vec<Transmit> {
        let mut offered = Vec::new();
        self.lifecycle.transmit(flush_presence, &mut |transmit| {
            offered.push(transmit);
            Err(LinkError::Full)
        });
        sorted(offered)
    }

    fn actions(&mut self) -> Vec<Action<u32>> {
        std::iter::from_fn(|| self.lifecycle.poll_action()).collect()
    }

    fn ring_ops(&mut self) -> Vec<RingOp> {
        std::iter::from_fn(|| self.lifecycle.poll_ring()).collect()
    }
}

/// Lists in a transmit sorted, as they come from a map, and report numbers
/// left out (the tests of counts look at them).
fn sorted(transmits: Vec<Transmit>) -> Vec<Transmit> {
    transmits
        .into_iter()
        .map(|transmit| match transmit {
            Transmit::Subscribe {
                live, mut present, ..
            } => {
                present.sort();
                Transmit::Subscribe {
                    live,
                    present,
                    seq: 0,
                }
            }
            Transmit::Membership {
                mut joined,
                mut left,
                ..
            } => {
                joined.sort();
                left.sort();
                Transmit::Membership {
                    joined,
                    left,
                    seq: 0,
                }
            }
            other => other,
        })
        .collect()
}

fn subscribe(live: bool, present: &[&str]) -> Transmit {
    Transmit::Subscribe {
        live,
        present: present.iter().map(|u| u.to_string()).collect(),
        seq: 0,
    }
}

fn membership(joined: &[&str], left: &[&str]) -> Transmit {
    Transmit::Membership {
        joined: joined.iter().map(|u| u.to_string()).collect(),
        left: left.iter().map(|u| u.to_string()).collect(),
        seq: 0,
    }
}

fn config(normal_ring: u32) -> RoomConfig {
    RoomConfig {
        normal_ring,
        priority_ring: 4,
        round_interval_ms: 100,
        max_payload_bytes: 4096,
        ..RoomConfig::default()
    }
}

/// The owner's SubscribeAck for stream `epoch` at `msg_id`, with `members`
/// room-wide.
fn ack(epoch: u64, msg_id: u64, members: u64) -> SubscribeAck {
    SubscribeAck {
        room_id: "room".into(),
        latest: Some(Cursor {
            epoch,
            ts: 1_000 + msg_id,
            msg_id,
            normal_seq: msg_id,
        }),
        config: Some(config(8)),
        member_count: members,
        history: (1..=msg_id).map(message).collect(),
        fence: 1,
        membership_seq: 0,
    }
}

/// The owner's SubscribeAck for an empty private room.
fn private_ack() -> SubscribeAck {
    SubscribeAck {
        config: Some(RoomConfig {
            private: true,
            ..config(8)
        }),
        ..ack(1, 0, 0)
    }
}

/// A broadcast of `msg_id` from an owner with `fence`.
fn broadcast(msg_id: u64, fence: u64) -> Event<u32> {
    Event::Broadcast {
        messages: vec![message(msg_id)],
        fence,
    }
}

fn admitted(waiter: u32, members: u64) -> Action<u32> {
    Action::Admit(
        waiter,
        Admission {
            config: config(8),
            member_count: members,
        },
    )
}

#[test]
fn a_joiner_waits_for_the_owners_answer_then_is_let_in_counted() {
    let mut room = Room::new();
    room.join("alice", 1);
    assert_eq!(
        room.actions(),
        [],
        "nothing to let in before the owner answers"
    );
    assert_eq!(
        room.transmit(true),
        [],
        "no owner known: nowhere to subscribe"
    );
    room.feed(Event::Owner(Some("r1".into())));
    assert_eq!(room.transmit(true), [subscribe(false, &[])]);
    assert_eq!(room.lifecycle.subscribed_at(), Some("r1"));

    room.feed(Event::Subscribed(ack(7, 2, 3)));
    assert_eq!(
        room.ring_ops(),
        [RingOp::Fill {
            fresh: true,
            normal: 8,
            priority: 4,
            history: vec![message(1), message(2)],
            latest: ack(7, 2, 3).latest.unwrap(),
        }]
    );
    assert_eq!(
        room.actions(),
        [
            Action::Timing(RoundConfig::of(&config(8))),
            admitted(1, 4),
            Action::Wake,
        ]
    );
    assert_eq!(room.transmit(false), [], "presence waits for a flush");
    assert!(room.lifecycle.presence_pending());
    assert_eq!(room.transmit(true), [membership(&["alice"], &[])]);
    assert!(!room.lifecycle.presence_pending());
}

#[test]
fn a_live_room_lets_joiners_in_at_once_counting_each_user_once() {
    let mut room = Room::live("r1");
    room.join("alice", 1);
    room.join("alice", 2);
    room.join("bob", 3);
    assert_eq!(
        room.actions(),
        [admitted(1, 4), admitted(2, 4), admitted(3, 5)],
        "each joiner counts itself and the joins before it; a second session of alice's \
         is not a new member"
    );
    assert_eq!(room.transmit(true), [membership(&["alice", "bob"], &[])]);
    room.leave("alice");
    assert_eq!(
        room.transmit(true),
        [],
        "alice is still here on her other session"
    );
    room.leave("alice");
    assert_eq!(room.transmit(true), [membership(&[], &["alice"])]);
    assert_eq!(
        room.lifecycle.rejoin(),
        Ok(Admission {
            config: config(8),
            member_count: 4
        }),
        "the owner's 3, and bob"
    );
}

/// The reports a transmit makes, by number.
fn reports(room: &mut Room) -> Vec<u64> {
    let mut seqs = Vec::new();
    room.lifecycle.transmit(true, &mut |transmit| {
        if let Transmit::Membership { seq, .. } = transmit {
            seqs.push(seq);
        }
        Ok(())
    });
    seqs
}

fn count_update(members: u64, membership_seq: u64) -> Event<u32> {
    Event::Updated(RoomUpdate {
        room_id: "room".into(),
        config: None,
        member_count: members,
        closed: false,
        membership_seq,
        fence: 1,
    })
}

#[test]
fn the_count_is_the_owners_with_every_change_here_it_does_not_include_yet() {
    // The owner counts 3 users on other nodes.
    let mut room = Room::live("r1");
    room.join("alice", 1);
    room.join("bob", 2);
    room.actions();
    assert_eq!(room.lifecycle.member_count(), 5, "unreported joins count");
    let [first] = reports(&mut room)[..] else {
        panic!("one report");
    };
    assert_eq!(room.lifecycle.member_count(), 5, "reported ones too");
    room.join("cy", 3);
    room.actions();
    let [second] = reports(&mut room)[..] else {
        panic!("one report");
    };
    assert!(second > first, "reports are numbered in order");

    // The owner's count from before the reports: two more elsewhere.
    room.feed(count_update(5, 0));
    assert_eq!(room.lifecycle.member_count(), 8);
    // With the first report in: alice and bob are in the owner's count.
    room.feed(count_update(7, first));
    assert_eq!(room.lifecycle.member_count(), 8);
    // With both in, the owner says 7: it refused cy (banned).
    room.feed(count_update(7, second));
    assert_eq!(room.lifecycle.member_count(), 7);
    // Pongs and Notifies read the same count a joiner is let in with.
    room.join("alice", 4);
    assert_eq!(room.actions(), [admitted(4, 7)]);
}

#[test]
fn an_update_from_an_owner_that_lost_the_room_is_ignored() {
    let mut room = Room::live("r1");
    room.feed(Event::Subscribed(SubscribeAck {
        fence: 2,
        ..ack(1, 0, 3)
    }));
    room.ring_ops();
    room.actions();
    // The old owner (fence 1) still pushes a count, and a close.
    room.feed(count_update(40, 0));
    room.feed(Event::Updated(RoomUpdate {
        closed: true,
        ..RoomUpdate::default()
    }));
    assert_eq!(room.actions(), [Action::Stale, Action::Stale]);
    assert_eq!(room.lifecycle.member_count(), 3);
    room.join("alice", 1);
    assert_eq!(room.actions(), [admitted(1, 4)], "still open");
}

#[test]
fn a_move_keeps_the_count_until_the_new_owners_ack_takes_over() {
    let mut room = Room::live("r1");
    room.join("alice", 1);
    room.actions();
    reports(&mut room);
    room.feed(count_update(4, u64::MAX));
    assert_eq!(room.lifecycle.member_count(), 4);

    // Placement moves the room: the Subscribe carries alice, and until the
    // new owner answers, the old owner's count of the others stands.
    room.feed(Event::Owner(Some("r2".into())));
    assert_eq!(room.transmit(false), [subscribe(true, &["alice"])]);
    room.join("bob", 2);
    assert_eq!(room.actions(), [admitted(2, 5)]);
    // The new owner counts 3 elsewhere, neither alice nor bob yet.
    room.feed(Event::Subscribed(SubscribeAck {
        fence: 2,
        ..ack(1, 0, 3)
    }));
    assert_eq!(room.lifecycle.member_count(), 5);
}

#[test]
fn presence_undone_before_a_report_is_not_reported() {
    let mut room = Room::live("r1");
    room.join("alice", 1);
    room.leave("alice");
    assert_eq!(room.transmit(true), []);
    room.join("bob", 2);
    assert_eq!(room.transmit(true), [membership(&["bob"], &[])]);
    room.leave("bob");
    room.join("bob", 3);
    assert_eq!(room.transmit(true), [], "bob left and came back: no change");
}

#[test]
fn a_user_the_owner_took_out_is_reported_again_when_back() {
    let mut room = Room::live("r1");
    room.join("mallory", 1);
    room.join("ann", 2);
    assert_eq!(room.transmit(true), [membership(&["ann", "mallory"], &[])]);
    // Banned: the owner dropped mallory itself, then kicked her here.
    room.feed(Event::Removed {
        user: "mallory".into(),
    });
    room.leave("mallory");
    room.join("mallory", 3);
    assert_eq!(
        room.transmit(true),
        [membership(&["mallory"], &[])],
        "back: the owner must hear it (and kick her again)"
    );
    room.feed(Event::Removed {
        user: "mallory".into(),
    });
    room.leave("mallory");
    assert_eq!(room.transmit(true), [], "the owner knows she is out");
}

#[test]
fn a_refused_membership_report_is_kept_for_the_next_flush() {
    let mut room = Room::live("r1");
    room.join("alice", 1);
    assert_eq!(room.transmit_refused(true), [membership(&["alice"], &[])]);
    assert!(room.lifecycle.presence_pending());
    room.join("bob", 2);
    assert_eq!(room.transmit(true), [membership(&["alice", "bob"], &[])]);
}

#[test]
fn it_subscribes_once_per_owner_and_again_only_once_forgotten() {
    let mut room = Room::live("r1");
    room.join("alice", 1);
    room.transmit(true);
    room.feed(Event::Owner(Some("r1".into())));
    assert_eq!(room.transmit(true), [], "already subscribed there");
    room.feed(Event::LinkBack("r2".into()));
    assert_eq!(room.transmit(true), [], "another room service's link");

    room.feed(Event::LinkBack("r1".into()));
    assert_eq!(room.lifecycle.subscribed_at(), None);
    assert_eq!(
        room.transmit(true),
        [subscribe(true, &["alice"])],
        "the owner forgot us: subscribe again, with everyone present"
    );

    room.feed(Event::Owner(Some("r2".into())));
    room.join("bob", 2);
    assert_eq!(
        room.transmit(true),
        [subscribe(true, &["alice", "bob"])],
        "moved: the new owner learns everyone present from the Subscribe"
    );
    assert_eq!(room.lifecycle.subscribed_at(), Some("r2"));
}

#[test]
fn a_refusal_waits_for_placement_to_be_asked_again() {
    let mut room = Room::live("r1");
    room.feed(Event::NotOwner);
    assert_eq!(room.lifecycle.subscribed_at(), None);
    assert_eq!(room.transmit(true), [], "not straight back to the refuser");
    room.feed(Event::Owner(Some("r1".into())));
    assert_eq!(room.transmit(true), [subscribe(true, &[])]);
}

#[test]
fn a_subscribe_the_link_refuses_is_tried_again_with_who_is_present_then() {
    let mut room = Room::new();
    room.feed(Event::Owner(Some("r1".into())));
    room.join("alice", 1);
    assert_eq!(room.transmit_refused(true), [subscribe(false, &[])]);
    assert_eq!(room.lifecycle.subscribed_at(), None);
    assert!(!room.lifecycle.presence_pending());
    room.feed(Event::Subscribed(ack(1, 0, 0)));
    room.actions();
    assert_eq!(
        room.transmit(true),
        [subscribe(true, &["alice"])],
        "alice came in meanwhile: the Subscribe carries her"
    );
    assert_eq!(room.transmit(true), []);
}

#[test]
fn a_new_ack_keeps_a_live_ring_of_the_same_stream_only() {
    let mut room = Room::live("r1");
    room.feed(Event::Subscribed(ack(1, 2, 3)));
    assert!(matches!(
        room.ring_ops()[..],
        [RingOp::Fill { fresh: false, .. }]
    ));
    room.feed(Event::Subscribed(ack(2, 0, 3)));
    assert!(
        matches!(room.ring_ops()[..], [RingOp::Fill { fresh: true, .. }]),
        "a rebuilt stream replaces the ring"
    );
}

#[test]
fn broadcasts_reach_only_a_live_ring() {
    let mut room = Room::placed("r1");
    room.feed(broadcast(1, 1));
    assert_eq!(room.ring_ops(), []);
    assert_eq!(room.actions(), []);
    room.feed(Event::Subscribed(ack(1, 1, 0)));
    room.ring_ops();
    room.actions();
    room.feed(broadcast(2, 1));
    assert_eq!(room.ring_ops(), [RingOp::Append(vec![message(2)])]);
    assert_eq!(room.actions(), [Action::Wake]);
}

#[test]
fn an_owner_that_lost_the_room_is_not_heard_once_a_newer_one_was() {
    let mut room = Room::placed("r1");
    room.feed(Event::Subscribed(ack(1, 1, 0)));
    room.ring_ops();
    room.actions();
    // A newer owner (fence 5) answers; then the old one (fence 1), cut
    // off or stalled, still broadcasts and acks.
    room.feed(Event::Subscribed(SubscribeAck {
        fence: 5,
        ..ack(1, 2, 0)
    }));
    assert!(matches!(room.ring_ops()[..], [RingOp::Fill { .. }]));
    room.actions();
    assert!(room.lifecycle.is_stale(1));
    assert!(!room.lifecycle.is_stale(5));
    room.feed(broadcast(3, 1));
    assert_eq!(room.ring_ops(), [], "a stale broadcast is not appended");
    assert_eq!(room.actions(), [Action::Stale]);
    room.feed(Event::Subscribed(ack(1, 3, 0)));
    assert_eq!(room.ring_ops(), [], "nor is a stale ack");
    assert_eq!(room.actions(), [Action::Stale]);
    room.feed(broadcast(3, 5));
    assert_eq!(room.ring_ops(), [RingOp::Append(vec![message(3)])]);
    assert_eq!(room.actions(), [Action::Wake]);
}

#[test]
fn new_settings_resize_the_ring_and_retime_the_shards() {
    let mut room = Room::live("r1");
    room.feed(Event::Updated(RoomUpdate {
        room_id: "room".into(),
        config: Some(config(2)),
        member_count: 9,
        closed: false,
        membership_seq: 0,
        fence: 1,
    }));
    assert_eq!(
        room.ring_ops(),
        [RingOp::Resize {
            normal: 2,
            priority: 4
        }]
    );
    assert_eq!(
        room.actions(),
        [Action::Timing(RoundConfig::of(&config(2)))]
    );
    assert_eq!(room.lifecycle.member_count(), 9);
    assert_eq!(room.lifecycle.config(), &config(2));
}

#[test]
fn joiners_past_the_deadline_are_turned_away_and_the_grace_begins() {
    let mut room = Room::placed("r1");
    room.join("alice", 1);
    room.now = 40;
    room.join("bob", 2);
    assert_eq!(room.lifecycle.poll_timeout(), Some(100));
    room.now = 99;
    room.feed(Event::Tick);
    assert_eq!(room.actions(), []);
    room.now = 100;
    room.feed(Event::Tick);
    assert_eq!(room.actions(), [Action::Refuse(1, JoinRefusal::NoAnswer)]);
    assert_eq!(room.lifecycle.poll_timeout(), Some(140));
    room.now = 140;
    room.feed(Event::Tick);
    assert_eq!(room.actions(), [Action::Refuse(2, JoinRefusal::NoAnswer)]);
    assert_eq!(
        room.lifecycle.poll_timeout(),
        Some(140 + TIMERS.grace),
        "nobody left: the grace period runs"
    );
}

#[test]
fn closing_turns_away_the_waiting_and_the_later_joiners() {
    let mut room = Room::placed("r1");
    room.join("alice", 1);
    room.feed(Event::Updated(RoomUpdate {
        room_id: "room".into(),
        config: None,
        member_count: 0,
        closed: true,
        membership_seq: 0,
        fence: 1,
    }));
    assert_eq!(
        room.actions(),
        [Action::Refuse(1, JoinRefusal::Closed), Action::Close]
    );
    room.join("bob", 2);
    assert_eq!(room.actions(), [Action::Refuse(2, JoinRefusal::Closed)]);
    room.feed(Event::Owner(Some("r2".into())));
    room.feed(Event::Subscribed(ack(1, 0, 0)));
    assert_eq!(room.transmit(true), [], "a closed room subscribes nowhere");
    assert_eq!(room.ring_ops(), []);
    assert_eq!(room.lifecycle.rejoin(), Err(JoinRefusal::Closed));
}

#[test]
fn an_empty_room_goes_after_its_grace_and_unsubscribes() {
    let mut room = Room::live("r1");
    room.join("alice", 1);
    assert_eq!(room.actions(), [admitted(1, 4)]);
    room.now = 10;
    room.leave("alice");
    assert_eq!(room.lifecycle.poll_timeout(), Some(10 + TIMERS.grace));
    room.now = 9 + TIMERS.grace;
    room.feed(Event::Reap);
    assert!(!room.lifecycle.is_gone());
    room.now = 10 + TIMERS.grace;
    room.feed(Event::Reap);
    assert!(room.lifecycle.is_gone());
    assert_eq!(room.transmit(true), [Transmit::Unsubscribe]);
    assert_eq!(room.transmit(true), [], "once");
    room.join("bob", 2);
    assert_eq!(room.actions(), [Action::Refuse(2, JoinRefusal::Gone)]);
    assert_eq!(room.lifecycle.poll_timeout(), None);
}

#[test]
fn a_joiner_ends_the_grace() {
    let mut room = Room::live("r1");
    room.join("alice", 1);
    room.leave("alice");
    room.now = 500;
    room.join("bob", 2);
    assert_eq!(room.lifecycle.poll_timeout(), None);
    room.now = 10 * TIMERS.grace;
    room.feed(Event::Reap);
    assert!(!room.lifecycle.is_gone(), "bob is in");
    room.leave("bob");
    assert_eq!(room.lifecycle.poll_timeout(), Some(room.now + TIMERS.grace));
}

#[test]
fn a_room_nobody_here_ever_got_into_is_not_kept() {
    let mut room = Room::placed("r1");
    room.join("alice", 1);
    room.now = 100;
    room.feed(Event::Tick);
    room.actions();
    room.now = 100 + TIMERS.grace;
    room.feed(Event::Reap);
    assert!(room.lifecycle.is_gone());
    assert_eq!(room.transmit(false), [Transmit::Unsubscribe]);
}

#[test]
fn a_private_room_turns_away_joiners_without_a_grant_and_counts_only_the_granted() {
    let mut room = Room::placed("r1");
    room.join_ungranted("mallory", 1);
    room.join("alice", 2);
    room.feed(Event::Subscribed(private_ack()));
    room.ring_ops();
    let actions = room.actions();
    assert!(actions.contains(&Action::Refuse(1, JoinRefusal::Private)));
    assert!(actions.iter().any(
        |action| matches!(action, Action::Admit(2, admission) if admission.member_count == 1)
    ));
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::Admit(1, _)))
    );
    assert_eq!(room.transmit(true), [membership(&["alice"], &[])]);

    // Live: the same at once, and nothing of the room is told.
    room.join_ungranted("mallory", 3);
    assert_eq!(room.actions(), [Action::Refuse(3, JoinRefusal::Private)]);
    assert_eq!(room.transmit(true), []);
    assert_eq!(room.lifecycle.member_count(), 1);
}

#[test]
fn a_room_whose_only_joiner_was_turned_away_is_reaped_after_its_grace() {
    let mut room = Room::placed("r1");
    room.join_ungranted("mallory", 1);
    room.feed(Event::Subscribed(private_ack()));
    room.ring_ops();
    room.actions();
    assert_eq!(room.lifecycle.poll_timeout(), Some(TIMERS.grace));
    room.now = TIMERS.grace;
    room.feed(Event::Reap);
    assert!(room.lifecycle.is_gone());
}
