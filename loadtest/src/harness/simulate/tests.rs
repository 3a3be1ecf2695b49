use std::time::Duration;

use super::*;
use crate::harness::scenario::zipf_sizes;

/// A fast room: short rounds and pull timeout, so a one-second run sees many
/// rounds and laggards get re-notified and pull several times; limits high
/// enough for the rates below.
fn quick_room() -> RoomConfig {
    RoomConfig {
        round_interval_ms: 20,
        pull_timeout_ms: 150,
        normal_per_s: 20_000,
        normal_burst: 20_000,
        priority_per_s: 1_000,
        priority_burst: 1_000,
        ..default_room_config()
    }
}

/// `users` over `rooms` rooms of Zipf sizes, 2,000 msg/s in all (by room
/// size) and a notice every 50 ms in each room.
fn small(users: u64, rooms: u64) -> SimSpec {
    let mut first_user = 0;
    let rooms = zipf_sizes(users, rooms, 1.0)
        .into_iter()
        .enumerate()
        .map(|(index, size)| {
            let room = PlanRoom {
                name: format!("room-{index}"),
                first_user,
                users: size,
                senders: 1,
                rate: 2_000.0 * size as f64 / users as f64,
                notice_every_ms: 50,
            };
            first_user += size;
            room
        })
        .collect();
    SimSpec {
        scenario: "giant-room".into(),
        rooms,
        duration: Duration::from_secs(1),
        payload_bytes: 64,
        shards: 2,
        room: quick_room(),
        laggards: 0.05,
    }
}

/// Every delivery owed was made or reported dropped, PRIORITY lost nothing
/// and reached every session, and nobody was left behind.
fn assert_exact(outcome: &Outcome) {
    let report = &outcome.report;
    let (normal, priority) = (report.lanes.normal, report.lanes.priority);
    assert_eq!(normal.lost, 0, "{}", report.summary());
    assert_eq!(priority.lost, 0, "{}", report.summary());
    assert!(
        normal.delivered > 0 && priority.delivered > 0,
        "{normal:?} {priority:?}"
    );
    assert_eq!(priority.dropped, 0);
    assert_eq!(priority.delivered, priority.expected);
    assert_eq!(
        outcome.short_of_priority, 0,
        "every session got every notice"
    );
    assert_eq!(outcome.behind, 0);
    assert_eq!(outcome.counters.kicked, 0);
    assert_eq!(outcome.counters.stale_deltas, 0);
}

#[test]
fn giant_room_accounts_exactly_and_laggards_pull() {
    let outcome = simulate(&small(2_000, 1));
    assert_exact(&outcome);
    let report = &outcome.report;
    assert_eq!(report.scenario, "giant-room");
    assert_eq!(report.transport, "simulated");
    assert_eq!(
        (report.real_connections, report.simulated_users),
        (0, 2_000)
    );
    assert_eq!(
        report.lanes.normal.expected,
        report.lanes.normal.accepted * 2_000
    );
    assert!(report.delivered_per_s > 0.0 && report.accepted_per_s > 0.0);
    assert!(report.latency_ms.p50 > 0.0, "{:?}", report.latency_ms);
    assert_eq!(report.timeline.len(), 1);
    // 100 laggards refuse every other push, get re-notified, and pull.
    assert!(outcome.counters.refused > 0);
    assert!(outcome.counters.pulls > 0);
    assert!(report.server.rss_kb_per_idle_conn.is_some());
    assert!(
        report.notes.iter().any(|n| n.contains("caught up")),
        "{:?}",
        report.notes
    );
}

#[test]
fn plain_notifies_are_answered_by_pulls_that_report_drops() {
    // Nothing inlined: every round is Notify → Pull. 10,000 msg/s in 20 ms
    // rounds is 200 a round, twice the pull default, so the pull keeps the
    // newest 100 and reports the rest dropped.
    let mut spec = SimSpec {
        laggards: 0.0,
        room: RoomConfig {
            inline_max_bytes: 0,
            ..quick_room()
        },
        ..small(500, 1)
    };
    spec.rooms[0].rate = 10_000.0;
    let outcome = simulate(&spec);
    assert_exact(&outcome);
    let normal = outcome.report.lanes.normal;
    assert!(normal.dropped > 0, "{normal:?}");
    assert_eq!(outcome.counters.refused, 0);
    assert!(outcome.counters.pulls >= 500, "{:?}", outcome.counters);
}

#[test]
fn ring_evictions_reach_laggards_as_exact_drops() {
    // A 16-message ring turns over in 8 ms at 2,000 msg/s: a laggard that
    // pulls 150 ms after being refused finds most of what it missed gone,
    // and the cursor arithmetic still accounts for every message.
    let spec = SimSpec {
        laggards: 0.2,
        room: RoomConfig {
            normal_ring: 16,
            ..quick_room()
        },
        ..small(1_000, 1)
    };
    let outcome = simulate(&spec);
    assert_exact(&outcome);
    assert!(outcome.report.lanes.normal.dropped > 0);
    assert!(
        outcome
            .report
            .notes
            .iter()
            .any(|n| n.contains("aged out of the rings")),
        "{:?}",
        outcome.report.notes
    );
}

#[test]
fn many_rooms_account_exactly() {
    let outcome = simulate(&SimSpec {
        scenario: "many-rooms".into(),
        ..small(3_000, 20)
    });
    assert_exact(&outcome);
    assert_eq!(outcome.report.scenario, "many-rooms");
    let sizes = zipf_sizes(3_000, 20, 1.0);
    let note = format!("20 rooms of {} to {} sessions", sizes[19], sizes[0]);
    assert!(
        outcome.report.notes.iter().any(|n| n.starts_with(&note)),
        "{:?}",
        outcome.report.notes
    );
    // Every room had its own notices: 20 per second each.
    let priority = outcome.report.lanes.priority;
    assert!(priority.accepted >= 20 * 19, "{priority:?}");
}

#[test]
fn laggards_are_an_even_exact_fraction() {
    let count = |fraction: f64| (0..10_000).filter(|&id| is_laggard(id, fraction)).count();
    assert_eq!(count(0.0), 0);
    assert_eq!(count(0.01), 100);
    assert_eq!(count(0.25), 2_500);
    assert_eq!(count(1.0), 10_000);
    // Spread out: one in every hundred ids.
    assert_eq!((0..100).filter(|&id| is_laggard(id, 0.01)).count(), 1);
}

#[test]
fn a_room_over_its_limit_refuses_as_room_svc_does() {
    // The flood: ten times the room's default limit.
    let mut spec = SimSpec {
        room: RoomConfig {
            round_interval_ms: 20,
            ..default_room_config()
        },
        laggards: 0.0,
        ..small(200, 1)
    };
    spec.rooms[0].rate = 2_000.0;
    let outcome = simulate(&spec);
    assert_exact(&outcome);
    let report = &outcome.report;
    let limited = report.refused.get("RATE_LIMITED").copied().unwrap_or(0);
    assert!(limited > 1_000, "{:?}", report.refused);
    // Burst plus rate for the phase, and a send or two of scheduling slack.
    assert!(
        report.lanes.normal.accepted <= 200 + 200 + 2,
        "{:?}",
        report.lanes
    );
}

#[test]
fn spec_is_made_consistent() {
    let spec = |users: u64| SimSpec {
        shards: 0,
        duration: Duration::ZERO,
        ..small(users, 9)
    };
    let plan = Plan::of(&spec(5));
    assert_eq!(plan.sizes, vec![1; 5]);
    assert_eq!(plan.users, 5);
    assert_eq!(plan.shards, 1);
    assert_eq!(plan.window, Duration::from_millis(1));
    let defaults = Plan::of(&SimSpec {
        room: default_room_config(),
        ..small(1_000, 1)
    });
    assert_eq!(defaults.fanout.round.interval_ms, 100);
    assert_eq!(defaults.fanout.inline_max, 32 * 1024);
    assert_eq!(
        (
            defaults.fanout.pull_limit,
            defaults.fanout.max_delta_messages
        ),
        (100, 200)
    );
}

#[test]
fn the_cli_bounds_what_it_simulates() {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        run: RunArgs,
    }
    let of = |scenario: Scenario, flags: &[&str]| {
        let argv = ["loadtest", "--simulate"].iter().chain(flags);
        SimSpec::of(&scenario, &Args::parse_from(argv).run)
    };
    let spec = of(Scenario::GiantRoom, &["--users", "1000000"]).unwrap();
    assert_eq!(spec.rooms[0].users, 1_000_000);
    assert_eq!(spec.scenario, "giant-room");
    assert!(of(Scenario::GiantRoom, &["--users", "0"]).is_err());
    assert!(of(Scenario::GiantRoom, &["--users", "20000001"]).is_err());
    assert!(of(Scenario::GiantRoom, &["--laggards", "1.5"]).is_err());
    let storm = Scenario::ReconnectStorm {
        fraction: 0.1,
        every_ms: 1_000,
    };
    assert!(of(storm, &[]).is_err());
}
