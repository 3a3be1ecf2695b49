use super::*;

const EPOCH: u64 = 77;

/// Stamps messages the way room-svc does: msg_id +1 each, normal_seq counting
/// NORMAL messages, ts strictly increasing.
struct Stream {
    msg_id: u64,
    normal_seq: u64,
}

impl Stream {
    fn new() -> Self {
        Self {
            msg_id: 0,
            normal_seq: 0,
        }
    }

    fn next(&mut self, lane: Lane) -> ChatMessage {
        self.msg_id += 1;
        if lane == Lane::Normal {
            self.normal_seq += 1;
        }
        ChatMessage {
            msg_id: self.msg_id,
            ts: 1_000 + self.msg_id * 10,
            normal_seq: self.normal_seq,
            sender: "s".into(),
            lane: lane as i32,
            kind: 0,
            payload: Bytes::from_static(b"hi"),
            client_msg_id: 0,
            sender_info: None,
        }
    }
}

fn ring(normal: usize, priority: usize) -> RoomRing {
    RoomRing::new(Cursor::start(EPOCH), normal, priority)
}

fn ids(sel: &Selection<'_>) -> Vec<u64> {
    sel.entries.iter().map(|e| e.msg_id).collect()
}

fn fill(ring: &mut RoomRing, stream: &mut Stream, lanes: &[Lane]) -> Vec<ChatMessage> {
    lanes
        .iter()
        .map(|&lane| {
            let msg = stream.next(lane);
            ring.append(&msg);
            msg
        })
        .collect()
}

use Lane::{Normal as N, Priority as P};

#[test]
fn capacity_one_keeps_the_newest_and_counts_the_rest() {
    let mut ring = ring(1, 1);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[N, N, N]);
    assert_eq!(ring.len(N), 1);
    assert_eq!(ring.evicted(N), 2);
    let sel = ring.select(&Cursor::start(EPOCH), 100, None);
    assert_eq!(ids(&sel), [3]);
    assert_eq!((sel.dropped, sel.dropped_priority), (2, 0));
    assert_eq!(sel.cursor, ring.latest());
    assert!(!sel.more && !sel.reset);
}

#[test]
fn capacity_zero_stores_nothing_and_counts_everything() {
    let mut ring = ring(0, 4);
    let mut stream = Stream::new();
    let msg = stream.next(N);
    assert_eq!(ring.append(&msg), Appended::Stored { evicted: 1 });
    let sel = ring.select(&Cursor::start(EPOCH), 10, None);
    assert!(sel.entries.is_empty());
    assert_eq!(sel.dropped, 1);
    assert_eq!(sel.cursor.msg_id, 1);
}

#[test]
fn empty_lanes_select_nothing_and_keep_the_cursor() {
    let ring = ring(4, 4);
    let since = Cursor::start(EPOCH);
    let sel = ring.select(&since, 10, None);
    assert!(sel.entries.is_empty());
    assert_eq!(sel.cursor, since);
    assert_eq!((sel.dropped, sel.dropped_priority, sel.more), (0, 0, false));
    assert!(ring.recent(5).is_empty());
}

#[test]
fn a_normal_flood_never_evicts_priority() {
    let mut ring = ring(3, 2);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[P]);
    fill(&mut ring, &mut stream, &[N; 100]);
    assert_eq!(ring.len(P), 1);
    let sel = ring.select(&Cursor::start(EPOCH), 50, None);
    assert_eq!(ids(&sel), [1, 99, 100, 101]);
    assert_eq!((sel.dropped, sel.dropped_priority), (97, 0));
}

#[test]
fn limit_keeps_all_priority_and_the_newest_normal() {
    let mut ring = ring(16, 16);
    let mut stream = Stream::new();
    // ids:                      1  2  3  4  5  6  7
    fill(&mut ring, &mut stream, &[N, P, N, N, P, N, N]);
    let sel = ring.select(&Cursor::start(EPOCH), 4, None);
    assert_eq!(ids(&sel), [2, 5, 6, 7]);
    assert_eq!((sel.dropped, sel.dropped_priority), (3, 0));
    assert_eq!(sel.cursor, ring.latest());
    assert!(!sel.more);
}

#[test]
fn priority_beyond_the_limit_pages_with_more() {
    let mut ring = ring(16, 16);
    let mut stream = Stream::new();
    // ids:                      1  2  3  4  5  6
    fill(&mut ring, &mut stream, &[N, P, N, P, P, N]);
    let first = ring.select(&Cursor::start(EPOCH), 2, None);
    assert_eq!(ids(&first), [2, 4]);
    assert!(first.more);
    assert_eq!(first.cursor.msg_id, 4);
    // NORMAL 1 and 3 lie before the cursor and were not returned.
    assert_eq!((first.dropped, first.dropped_priority), (2, 0));
    let second = ring.select(&first.cursor, 2, None);
    assert_eq!(ids(&second), [5, 6]);
    assert!(!second.more);
    assert_eq!((second.dropped, second.dropped_priority), (0, 0));
    assert_eq!(second.cursor, ring.latest());
}

#[test]
fn a_limit_of_zero_is_treated_as_one() {
    let mut ring = ring(4, 4);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[N, N]);
    let sel = ring.select(&Cursor::start(EPOCH), 0, None);
    assert_eq!(ids(&sel), [2]);
    assert_eq!(sel.dropped, 1);
}

#[test]
fn priority_ring_overflow_is_counted_in_its_own_lane() {
    let mut ring = ring(4, 2);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[P, P, P, N]);
    let sel = ring.select(&Cursor::start(EPOCH), 10, None);
    assert_eq!(ids(&sel), [2, 3, 4]);
    assert_eq!((sel.dropped, sel.dropped_priority), (0, 1));
}

#[test]
fn a_cursor_from_another_epoch_resets() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[N, N, P]);
    let foreign = Cursor {
        epoch: EPOCH + 1,
        ts: 5,
        msg_id: 99,
        normal_seq: 50,
    };
    let sel = ring.select(&foreign, 10, None);
    assert!(sel.reset);
    assert_eq!(ids(&sel), [1, 2, 3]);
    assert_eq!((sel.dropped, sel.dropped_priority), (0, 0));
    assert_eq!(sel.cursor, ring.latest());
}

#[test]
fn upto_bounds_the_selection() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    let msgs = fill(&mut ring, &mut stream, &[N, P, N, N]);
    let upto = Cursor::after(EPOCH, &msgs[1]);
    let sel = ring.select(&Cursor::start(EPOCH), 10, Some(&upto));
    assert_eq!(ids(&sel), [1, 2]);
    assert_eq!(sel.cursor, upto);
}

#[test]
fn a_cursor_at_the_newest_selects_nothing_and_one_past_it_is_reset() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[N, N]);
    let latest = ring.latest();
    let sel = ring.select(&latest, 10, None);
    assert!(sel.entries.is_empty() && !sel.reset);
    assert_eq!(sel.cursor, latest);
    // A cursor the room never handed out is told so, and handed what the
    // ring holds from the start, not left waiting for messages it is
    // already past.
    let ahead = Cursor {
        msg_id: latest.msg_id + 5,
        normal_seq: latest.normal_seq + 5,
        ts: latest.ts + 50,
        ..latest
    };
    let sel = ring.select(&ahead, 10, None);
    assert!(sel.reset);
    assert_eq!(ids(&sel), [1, 2]);
    assert_eq!(sel.cursor, latest);
    assert_eq!((sel.dropped, sel.dropped_priority), (0, 0));
}

#[test]
fn a_cursor_that_contradicts_the_ring_is_reset() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    let msgs = fill(&mut ring, &mut stream, &[N, N, N, N]);
    let honest = Cursor::after(EPOCH, &msgs[1]);
    assert!(!ring.select(&honest, 10, None).reset);
    let forged = [
        // More NORMAL messages than messages.
        Cursor {
            normal_seq: honest.msg_id + 1,
            ..honest
        },
        // Claims a PRIORITY message in a room that had none: its
        // dropped count would be impossible.
        Cursor {
            normal_seq: honest.normal_seq - 1,
            ..honest
        },
        // Another time for a message the ring holds.
        Cursor {
            ts: honest.ts + 1,
            ..honest
        },
        // At the newest msg_id, but not the newest position.
        Cursor {
            ts: ring.latest().ts - 1,
            ..ring.latest()
        },
    ];
    for since in forged {
        let sel = ring.select(&since, 10, None);
        assert!(sel.reset, "{since:?} taken at its word");
        assert_eq!((sel.dropped, sel.dropped_priority), (0, 0));
    }
}

#[test]
fn replays_are_ignored() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    let msgs = fill(&mut ring, &mut stream, &[N, P]);
    assert_eq!(ring.append(&msgs[0]), Appended::Stale);
    assert_eq!(ring.append(&msgs[1]), Appended::Stale);
    assert_eq!(ring.len(N) + ring.len(P), 2);
}

#[test]
fn resize_evicts_the_oldest() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[N, N, N, P, P]);
    ring.resize(1, 1);
    assert_eq!(ring.evicted(N), 2);
    assert_eq!(ring.evicted(P), 1);
    assert_eq!(ids(&ring.select(&Cursor::start(EPOCH), 10, None)), [3, 5]);
}

#[test]
fn recent_merges_lanes_oldest_first() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    fill(&mut ring, &mut stream, &[N, P, N, P, N]);
    let recent: Vec<u64> = ring.recent(3).iter().map(|e| e.msg_id).collect();
    assert_eq!(recent, [3, 4, 5]);
    assert_eq!(ring.recent(50).len(), 5);
}

#[test]
fn equal_timestamps_across_lanes_keep_every_message() {
    let mut ring = ring(8, 8);
    let mut stream = Stream::new();
    let mut a = stream.next(N);
    let mut b = stream.next(P);
    a.ts = 500;
    b.ts = 500;
    ring.append(&a);
    ring.append(&b);
    assert_eq!(
        ring.select(&Cursor::start(EPOCH), 10, None).entries.len(),
        2
    );
}

#[test]
fn a_stream_longer_than_its_history_counts_the_gap() {
    let mut stream = Stream::new();
    let all: Vec<ChatMessage> = [N, N, P, N, N].iter().map(|&l| stream.next(l)).collect();
    let mut tail = ring(8, 8);
    for msg in &all[3..] {
        tail.append(msg);
    }
    tail.observe(Cursor::after(EPOCH, &all[1]));
    assert_eq!(
        tail.latest(),
        Cursor::after(EPOCH, &all[4]),
        "observe never moves back"
    );
    let sel = tail.select(&Cursor::after(EPOCH, &all[0]), 10, None);
    assert_eq!(ids(&sel), [4, 5]);
    assert_eq!((sel.dropped, sel.dropped_priority), (1, 1));

    let mut empty = ring(8, 8);
    empty.observe(Cursor::after(EPOCH, &all[4]));
    let sel = empty.select(&Cursor::start(EPOCH), 10, None);
    assert!(sel.entries.is_empty());
    assert_eq!((sel.dropped, sel.dropped_priority), (4, 1));
}
