use super::*;

const EPOCH: u64 = 5;
const CONFIG: RoundConfig = RoundConfig {
    interval_ms: 100,
    pull_timeout_ms: 2_000,
    slow_consumer_notifies: 3,
};

fn at(msg_id: u64) -> Cursor {
    Cursor {
        epoch: EPOCH,
        ts: msg_id * 10,
        msg_id,
        normal_seq: msg_id,
    }
}

/// A room at `latest` that inlines gaps of up to `inline_max` messages.
struct Source {
    latest: Cursor,
    inline_max: u64,
    built: Vec<String>,
}

impl Source {
    fn new(latest: u64, inline_max: u64) -> Self {
        Self {
            latest: at(latest),
            inline_max,
            built: Vec::new(),
        }
    }
}

impl RoundSource for Source {
    type Frame = String;

    fn latest(&self) -> Cursor {
        self.latest
    }

    fn delta(&mut self, since: &Cursor) -> Option<String> {
        let gap = self.latest.msg_id.saturating_sub(since.msg_id);
        (since.epoch == self.latest.epoch && gap <= self.inline_max).then(|| {
            let frame = format!("delta {}..{}", since.msg_id, self.latest.msg_id);
            self.built.push(frame.clone());
            frame
        })
    }

    fn plain(&mut self) -> String {
        self.built.push("plain".into());
        "plain".into()
    }
}

/// What each session received in a round, in member order.
type Log = Vec<(u32, String)>;

fn run(
    n: &mut Notifier<&'static str, u32>,
    now: u64,
    source: &mut Source,
    refuse: &[u32],
) -> (RoundStats, Log) {
    let mut log = Vec::new();
    let stats = n.round(&"room", now, source, |action| {
        let (who, what) = match action {
            Action::Deliver(h, f) | Action::Notify(h, f) => (*h, f.clone()),
            Action::Kick(h) => (*h, "kick".to_owned()),
        };
        log.push((who, what));
        if refuse.contains(&who) {
            Delivery::Refused
        } else {
            Delivery::Accepted
        }
    });
    log.sort();
    (stats, log)
}

fn notifier(members: &[(u32, u64)]) -> Notifier<&'static str, u32> {
    let mut n = Notifier::new();
    for &(session, cursor) in members {
        n.join("room", CONFIG, u64::from(session), session, at(cursor));
    }
    n
}

#[test]
fn one_frame_per_member_per_round_shared_by_equal_cursors() {
    let mut n = notifier(&[(1, 10), (2, 10), (3, 10), (4, 7)]);
    let mut source = Source::new(20, 64);
    let (stats, log) = run(&mut n, 0, &mut source, &[]);
    assert_eq!(
        log,
        [
            (1, "delta 10..20".to_owned()),
            (2, "delta 10..20".to_owned()),
            (3, "delta 10..20".to_owned()),
            (4, "delta 7..20".to_owned()),
        ]
    );
    assert_eq!(stats.delivered, 4);
    assert_eq!(stats.frames_built, 2);
    assert_eq!(source.built.len(), 2);
}

#[test]
fn coalesced_counts_what_one_frame_bundles_beyond_its_first_message() {
    let mut n = notifier(&[(1, 10), (2, 19), (3, 0)]);
    let mut source = Source::new(20, 16);
    let (stats, _) = run(&mut n, 0, &mut source, &[]);
    // Deltas 10..20 and 19..20, a plain notify for the 20 behind.
    assert_eq!((stats.delivered, stats.notified), (2, 1));
    assert_eq!(stats.coalesced, 9 + 19);

    // The pulling member's repeat notify bundles nothing new; a member
    // whose frame was refused bundled nothing.
    source.latest = at(23);
    let (stats, log) = run(&mut n, 2_000, &mut source, &[2]);
    assert_eq!(log.len(), 3);
    assert_eq!((stats.delivered, stats.notified, stats.refused), (1, 1, 1));
    assert_eq!(stats.coalesced, 2);
}

#[test]
fn members_at_the_latest_get_nothing() {
    let mut n = notifier(&[(1, 20), (2, 19)]);
    let (_, log) = run(&mut n, 0, &mut Source::new(20, 64), &[]);
    assert_eq!(log, [(2, "delta 19..20".to_owned())]);
    // Having been delivered, the member is now at the latest.
    n.mark_dirty(&"room");
    let (_, log) = run(&mut n, 100, &mut Source::new(20, 64), &[]);
    assert!(log.is_empty());
}

#[test]
fn a_large_gap_notifies_plainly_and_suppresses_until_pulled() {
    let mut n = notifier(&[(1, 0)]);
    let (stats, log) = run(&mut n, 0, &mut Source::new(100, 10), &[]);
    assert_eq!(log, [(1, "plain".to_owned())]);
    assert_eq!(stats.notified, 1);

    n.mark_dirty(&"room");
    let (stats, log) = run(&mut n, 100, &mut Source::new(101, 10), &[]);
    assert!(log.is_empty(), "pulling members get no new notify");
    assert_eq!(stats.suppressed, 1);

    n.pulled(&"room", 1, at(101), false, 0);
    n.mark_dirty(&"room");
    let (_, log) = run(&mut n, 200, &mut Source::new(103, 10), &[]);
    assert_eq!(log, [(1, "delta 101..103".to_owned())]);
}

#[test]
fn a_member_pulling_on_gets_no_delta_its_next_pull_returns_too() {
    let mut n = notifier(&[(1, 0)]);
    run(&mut n, 0, &mut Source::new(100, 10), &[]);
    // Its pull stopped short of the newest: it pulls again from 60.
    n.pulled(&"room", 1, at(60), true, 50);
    n.mark_dirty(&"room");
    let (stats, log) = run(&mut n, 100, &mut Source::new(62, 10), &[]);
    assert!(log.is_empty(), "no delta from 60 while it pulls from 60");
    assert_eq!(stats.suppressed, 1);
    // Its last pull reaches the newest: deltas resume after it.
    n.pulled(&"room", 1, at(102), false, 150);
    n.mark_dirty(&"room");
    let (_, log) = run(&mut n, 200, &mut Source::new(104, 10), &[]);
    assert_eq!(log, [(1, "delta 102..104".to_owned())]);
}

#[test]
fn renotifies_after_the_pull_timeout_and_kicks_after_n() {
    let mut n = notifier(&[(1, 0), (2, 0)]);
    let mut source = Source::new(50, 0);
    let (_, log) = run(&mut n, 0, &mut source, &[]);
    assert_eq!(log.len(), 2);
    // Session 2 pulls each time; session 1 never does.
    n.pulled(&"room", 2, at(50), false, 0);

    // The pull makes the room worth a look at the next round.
    assert_eq!(n.next_wakeup(), Some(100));
    let (stats, log) = run(&mut n, 100, &mut source, &[]);
    assert!(log.is_empty());
    assert_eq!(stats.suppressed, 1);
    assert_eq!(n.next_wakeup(), Some(2_000));
    assert!(n.due(1_999).is_empty(), "nothing due before the timeout");

    assert_eq!(n.due(2_000), ["room"]);
    let (_, log) = run(&mut n, 2_000, &mut source, &[]);
    assert_eq!(log, [(1, "plain".to_owned())], "second notify");
    let (_, log) = run(&mut n, 4_000, &mut source, &[]);
    assert_eq!(log, [(1, "plain".to_owned())], "third notify");
    let (stats, log) = run(&mut n, 6_000, &mut source, &[]);
    assert_eq!(log, [(1, "kick".to_owned())]);
    assert_eq!(stats.kicked, 1);
    assert_eq!(n.member_count(&"room"), 1);
}

#[test]
fn pulling_resets_the_unanswered_count() {
    let mut n = notifier(&[(1, 0)]);
    let mut source = Source::new(50, 0);
    run(&mut n, 0, &mut source, &[]);
    run(&mut n, 2_000, &mut source, &[]);
    run(&mut n, 4_000, &mut source, &[]);
    n.pulled(&"room", 1, at(40), false, 0);
    let (_, log) = run(&mut n, 4_100, &mut source, &[]);
    assert_eq!(
        log,
        [(1, "plain".to_owned())],
        "notified afresh, not kicked"
    );
}

#[test]
fn a_backed_up_socket_counts_as_unanswered() {
    let mut n = notifier(&[(1, 0), (2, 0)]);
    let mut source = Source::new(5, 64);
    let (stats, _) = run(&mut n, 0, &mut source, &[1]);
    assert_eq!((stats.delivered, stats.refused), (1, 1));
    // Refused again at each timeout, then kicked.
    source.latest = at(6);
    let (_, log) = run(&mut n, 2_000, &mut source, &[1]);
    assert_eq!(log, [(1, "plain".to_owned()), (2, "delta 5..6".to_owned())]);
    run(&mut n, 4_000, &mut source, &[1]);
    let (stats, log) = run(&mut n, 6_000, &mut source, &[1]);
    assert_eq!(log, [(1, "kick".to_owned())]);
    assert_eq!(stats.kicked, 1);
}

#[test]
fn rounds_respect_the_interval() {
    let mut n = notifier(&[(1, 0)]);
    assert_eq!(n.due(0), ["room"], "a joiner's room is looked at at once");
    run(&mut n, 0, &mut Source::new(1, 64), &[]);
    n.mark_dirty(&"room");
    assert!(n.due(99).is_empty());
    assert_eq!(n.next_wakeup(), Some(100));
    assert_eq!(n.due(100), ["room"]);
}

#[test]
fn idle_rooms_are_not_pending() {
    let mut n = notifier(&[(1, 0)]);
    run(&mut n, 0, &mut Source::new(0, 64), &[]);
    assert_eq!(n.next_wakeup(), None);
    assert!(n.due(u64::MAX).is_empty());
}

#[test]
fn a_member_of_another_epoch_is_behind() {
    let mut n = Notifier::new();
    let old = Cursor {
        epoch: EPOCH - 1,
        ..at(90)
    };
    n.join("room", CONFIG, 1, 1u32, old);
    let (_, log) = run(&mut n, 0, &mut Source::new(3, 64), &[]);
    assert_eq!(
        log,
        [(1, "plain".to_owned())],
        "the source cannot inline across epochs"
    );
}

#[test]
fn leave_rejoin_and_forget() {
    let mut n = notifier(&[(1, 0), (2, 0)]);
    assert!(n.leave(&"room", 1));
    assert!(!n.leave(&"room", 1));
    assert_eq!(n.member_count(&"room"), 1);
    n.join("room", CONFIG, 2, 2, at(7));
    assert_eq!(n.member_count(&"room"), 1, "rejoining replaces");
    let (_, log) = run(&mut n, 0, &mut Source::new(8, 64), &[]);
    assert_eq!(log, [(2, "delta 7..8".to_owned())]);
    assert!(n.leave(&"room", 2));
    assert_eq!(n.next_wakeup(), None);
    n.join("room", CONFIG, 3, 3, at(0));
    n.forget(&"room");
    assert_eq!(n.member_count(&"room"), 0);
    assert!(n.due(u64::MAX).is_empty());
}

#[test]
fn swap_removal_keeps_slots_consistent() {
    let mut n = notifier(&[(1, 0), (2, 0), (3, 0), (4, 0)]);
    n.leave(&"room", 1);
    n.leave(&"room", 3);
    n.pulled(&"room", 4, at(9), false, 0);
    let (_, log) = run(&mut n, 0, &mut Source::new(10, 64), &[]);
    assert_eq!(
        log,
        [(2, "delta 0..10".to_owned()), (4, "delta 9..10".to_owned())]
    );
}

#[test]
fn a_renotify_waits_for_the_round_interval() {
    // Session 1 is far behind (a plain notify, then pulling); session 2
    // takes deltas.
    let mut n = notifier(&[(1, 0), (2, 95)]);
    let mut source = Source::new(100, 10);
    run(&mut n, 0, &mut source, &[]);
    source.latest = at(101);
    n.mark_dirty(&"room");
    let (_, log) = run(&mut n, 1_950, &mut source, &[]);
    assert_eq!(log, [(2, "delta 100..101".to_owned())]);
    source.latest = at(102);
    n.mark_dirty(&"room");
    // Session 1's pull timeout ends at 2000, 50 ms after session 2's last
    // frame: the renotify waits for the next round, so that no member gets
    // two frames within one interval.
    assert!(n.due(2_000).is_empty());
    assert_eq!(n.next_wakeup(), Some(2_050));
    let (_, log) = run(&mut n, 2_050, &mut source, &[]);
    assert_eq!(
        log,
        [(1, "plain".to_owned()), (2, "delta 101..102".to_owned())]
    );
}
