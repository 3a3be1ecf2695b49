//! Property tests of a room's lifecycle: generated histories of joins,
//! leaves, placement moves, lost links, refusals, owner answers, closes,
//! time and links that refuse frames, and owners old and new (fences),
//! checked against what the owners have been told, what every joiner
//! heard, and the member count (the owner's, with what it lacks of this
//! node).

use std::collections::{HashMap, HashSet};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::room::fixtures::message;

const TIMERS: Timers = Timers {
    subscribe_timeout: 300,
    grace: 500,
};
const USERS: [&str; 4] = ["ann", "bo", "cy", "di"];
const OWNERS: [&str; 3] = ["r0", "r1", "r2"];

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    /// The owner takes a user out (a ban).
    Removed(usize),
    /// One of the sessions let in leaves (by index, modulo how many).
    Leave(usize),
    Owner(Option<usize>),
    LinkBack(usize),
    NotOwner,
    /// An owner with `fence` answers a Subscribe; the stream may have
    /// been rebuilt. Its count has `others` users on other nodes and this
    /// node's reports up to one of those sent (`upto`, from the last one
    /// confirmed on).
    Ack {
        new_epoch: bool,
        fence: u64,
        others: u64,
        upto: usize,
    },
    /// The owner pushes its count, as for `Ack`.
    Count {
        others: u64,
        upto: usize,
    },
    /// An owner with `fence` broadcasts.
    Broadcast {
        fence: u64,
    },
    Close,
    /// Time passes, then the node's tick.
    Wait(u64),
    Reap,
    /// The node transmits; the link takes frames or refuses them.
    Transmit {
        flush: bool,
        link_ok: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..USERS.len()).prop_map(Op::Join),
        4 => any::<usize>().prop_map(Op::Leave),
        1 => (0..USERS.len()).prop_map(Op::Removed),
        3 => prop::option::weighted(0.9, 0..OWNERS.len()).prop_map(Op::Owner),
        2 => (0..OWNERS.len()).prop_map(Op::LinkBack),
        1 => Just(Op::NotOwner),
        3 => (prop::bool::weighted(0.2), 0..4u64, 0..5u64, any::<usize>())
            .prop_map(|(new_epoch, fence, others, upto)| Op::Ack {
                new_epoch,
                fence,
                others,
                upto
            }),
        3 => (0..5u64, any::<usize>()).prop_map(|(others, upto)| Op::Count { others, upto }),
        2 => (0..4u64).prop_map(|fence| Op::Broadcast { fence }),
        1 => Just(Op::Close),
        3 => (0..400u64).prop_map(Op::Wait),
        2 => Just(Op::Reap),
        6 => (any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(flush, link_ok)| Op::Transmit { flush, link_ok }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    Live,
    Closed,
    Gone,
}

/// The room as the rules say it must be, and what the owners were told.
struct Model {
    now: u64,
    stage: Stage,
    epoch: u64,
    ring_epoch: Option<u64>,
    /// Placement's owner as last told (cleared by a refusal).
    owner: Option<usize>,
    /// Where the room's last Subscribe went, until that owner forgot it.
    subscribed_at: Option<usize>,
    /// What each owner holds of this node's presence.
    views: [HashSet<String>; 3],
    /// Joiners waiting: waiter -> (user, asked at).
    waiting: HashMap<u32, (usize, u64)>,
    /// Sessions let in, by user.
    admitted: Vec<usize>,
    /// Every waiter's verdict.
    answered: HashMap<u32, bool>,
    empty_since: Option<u64>,
    unsubscribed: bool,
    closes: u32,
    next_waiter: u32,
    /// The newest owner's fence heard.
    fence: u64,
    /// Frames from stale owners, not reported yet.
    stale: u32,
    /// The reports made to the owner subscribed at, in order: number, and
    /// how many users of this node the owner has after it (starting from
    /// none, before the Subscribe's presence).
    sent: Vec<(u64, usize)>,
    /// The last of `sent` a count included.
    confirmed: usize,
    /// Users on other nodes in the owner's last count, once a count of the
    /// owner subscribed at was taken.
    others: Option<u64>,
    /// The owner took a user out (a ban) since the Subscribe: until the
    /// user's sessions here are kicked, the count may differ.
    removed: bool,
}

impl Model {
    fn present(&self) -> HashSet<String> {
        self.admitted.iter().map(|&u| USERS[u].to_owned()).collect()
    }

    fn is_empty(&self) -> bool {
        self.admitted.is_empty() && self.waiting.is_empty()
    }

    fn alive(&self) -> bool {
        matches!(self.stage, Stage::Pending | Stage::Live)
    }

    /// The owner `at` no longer holds anything of this node.
    fn forgotten_by(&mut self, at: usize) {
        if self.subscribed_at == Some(at) {
            self.subscribed_at = None;
            self.others = None;
        }
        self.views[at].clear();
    }

    /// An owner's count: `others` elsewhere and this node's reports up to
    /// one of those not yet confirmed; with the report number it gives.
    fn count(&mut self, others: u64, upto: usize) -> (u64, u64) {
        if self.subscribed_at.is_none() || self.sent.is_empty() {
            self.others = None;
            return (others, 0);
        }
        let at = self.confirmed + upto % (self.sent.len() - self.confirmed);
        self.confirmed = at;
        self.others = Some(others);
        let (seq, here) = self.sent[at];
        (others + here as u64, seq)
    }

    /// What the room must count now, when it can be known here.
    fn expected_count(&self, joining: Option<usize>) -> Option<u64> {
        let others = self.others.filter(|_| self.alive() && !self.removed)?;
        let mut present = self.present();
        if let Some(user) = joining {
            present.insert(USERS[user].to_owned());
        }
        Some(others + present.len() as u64)
    }
}

/// Checks the actions the room asked for against the model.
fn check_actions(room: &mut RoomLifecycle<u32>, model: &mut Model) -> Result<(), TestCaseError> {
    while let Some(action) = room.poll_action() {
        match action {
            Action::Admit(waiter, admission) => {
                prop_assert_eq!(model.stage, Stage::Live, "let in while not live");
                let (user, _) = model
                    .waiting
                    .remove(&waiter)
                    .ok_or_else(|| TestCaseError::fail(format!("{waiter} let in twice")))?;
                prop_assert!(model.answered.insert(waiter, true).is_none());
                if let Some(count) = model.expected_count(Some(user)) {
                    prop_assert_eq!(admission.member_count, count, "a joiner's count");
                }
                model.admitted.push(user);
            }
            Action::Refuse(waiter, refusal) => {
                let (_, asked) = model
                    .waiting
                    .remove(&waiter)
                    .ok_or_else(|| TestCaseError::fail(format!("{waiter} answered twice")))?;
                prop_assert!(model.answered.insert(waiter, false).is_none());
                match refusal {
                    JoinRefusal::NoAnswer => prop_assert!(
                        model.now >= asked + TIMERS.subscribe_timeout,
                        "turned away before its deadline"
                    ),
                    JoinRefusal::Closed => prop_assert_eq!(model.stage, Stage::Closed),
                    JoinRefusal::Gone => prop_assert_eq!(model.stage, Stage::Gone),
                    JoinRefusal::Private => prop_assert!(false, "no room here is private"),
                }
            }
            Action::Close => {
                model.closes += 1;
                prop_assert_eq!(model.closes, 1, "closed once");
            }
            Action::Stale => {
                prop_assert!(model.stale > 0, "a frame reported stale that was not");
                model.stale -= 1;
            }
            Action::Timing(_) | Action::Wake => {}
        }
    }
    prop_assert_eq!(model.stale, 0, "a stale owner's frame went unreported");
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut room: RoomLifecycle<u32> = RoomLifecycle::new(TIMERS);
    let mut model = Model {
        now: 0,
        stage: Stage::Pending,
        epoch: 1,
        ring_epoch: None,
        owner: None,
        subscribed_at: None,
        views: Default::default(),
        waiting: HashMap::new(),
        admitted: Vec::new(),
        answered: HashMap::new(),
        empty_since: None,
        unsubscribed: false,
        closes: 0,
        next_waiter: 0,
        fence: 0,
        stale: 0,
        sent: Vec::new(),
        confirmed: 0,
        others: None,
        removed: false,
    };
    let mut msg_id = 0;
    // The node makes a room for its first joiner.
    for op in std::iter::once(Op::Join(0)).chain(ops) {
        match op {
            Op::Join(user) => {
                let waiter = model.next_waiter;
                model.next_waiter += 1;
                model.waiting.insert(waiter, (user, model.now));
                room.handle(
                    model.now,
                    Event::Join {
                        user: USERS[user].into(),
                        waiter,
                        granted: true,
                    },
                );
            }
            Op::Removed(user) => {
                if let Some(at) = model.subscribed_at {
                    model.views[at].remove(USERS[user]);
                }
                model.removed = true;
                room.handle(
                    model.now,
                    Event::Removed {
                        user: USERS[user].into(),
                    },
                );
            }
            Op::Leave(index) => {
                if model.admitted.is_empty() {
                    continue;
                }
                let user = model.admitted.swap_remove(index % model.admitted.len());
                room.handle(
                    model.now,
                    Event::Leave {
                        user: USERS[user].into(),
                    },
                );
            }
            Op::Owner(owner) => {
                model.owner = owner;
                room.handle(model.now, Event::Owner(owner.map(|o| OWNERS[o].to_owned())));
            }
            Op::LinkBack(owner) => {
                model.forgotten_by(owner);
                room.handle(model.now, Event::LinkBack(OWNERS[owner].to_owned()));
            }
            Op::NotOwner => {
                if let Some(at) = model.subscribed_at {
                    model.forgotten_by(at);
                }
                model.owner = None;
                room.handle(model.now, Event::NotOwner);
            }
            Op::Ack {
                new_epoch,
                fence,
                others,
                upto,
            } => {
                if new_epoch {
                    model.epoch += 1;
                }
                let stale = fence < model.fence;
                let known = (model.others, model.confirmed);
                let (member_count, membership_seq) = model.count(others, upto);
                if stale || !model.alive() {
                    // Ignored: what the room counts stays as it was.
                    (model.others, model.confirmed) = known;
                }
                let latest = Cursor::after(model.epoch, &message(msg_id));
                room.handle(
                    model.now,
                    Event::Subscribed(SubscribeAck {
                        room_id: "room".into(),
                        latest: Some(latest),
                        config: Some(RoomConfig {
                            normal_ring: 4,
                            priority_ring: 2,
                            ..RoomConfig::default()
                        }),
                        member_count,
                        history: Vec::new(),
                        fence,
                        membership_seq,
                    }),
                );
                let ops: Vec<RingOp> = std::iter::from_fn(|| room.poll_ring()).collect();
                if stale {
                    prop_assert!(ops.is_empty(), "a stale owner's ack changed the ring");
                    model.stale += 1;
                } else if model.alive() {
                    model.fence = fence;
                    let fresh = model.stage != Stage::Live || model.ring_epoch != Some(model.epoch);
                    prop_assert!(
                        matches!(&ops[..], [RingOp::Fill { fresh: f, .. }] if *f == fresh),
                        "ack filled {:?}, fresh should be {}",
                        ops,
                        fresh
                    );
                    model.ring_epoch = Some(model.epoch);
                    model.stage = Stage::Live;
                } else {
                    model.fence = fence;
                    prop_assert!(ops.is_empty(), "a closed or gone room's ring changed");
                }
            }
            Op::Broadcast { fence } => {
                msg_id += 1;
                let messages = vec![message(msg_id)];
                room.handle(model.now, Event::Broadcast { messages, fence });
                let ops: Vec<RingOp> = std::iter::from_fn(|| room.poll_ring()).collect();
                let stale = fence < model.fence;
                if stale {
                    model.stale += 1;
                } else {
                    model.fence = fence;
                }
                prop_assert_eq!(
                    ops.len(),
                    usize::from(!stale && model.stage == Stage::Live),
                    "only a live ring takes broadcasts, and only from a current owner"
                );
            }
            Op::Count { others, upto } => {
                let known = (model.others, model.confirmed);
                let (member_count, membership_seq) = model.count(others, upto);
                if !model.alive() {
                    (model.others, model.confirmed) = known;
                }
                room.handle(
                    model.now,
                    Event::Updated(RoomUpdate {
                        room_id: "room".into(),
                        config: None,
                        member_count,
                        closed: false,
                        membership_seq,
                        fence: model.fence,
                    }),
                );
            }
            Op::Close => {
                room.handle(
                    model.now,
                    Event::Updated(RoomUpdate {
                        room_id: "room".into(),
                        config: None,
                        member_count: 0,
                        closed: true,
                        membership_seq: 0,
                        fence: model.fence,
                    }),
                );
                if model.alive() {
                    model.stage = Stage::Closed;
                }
            }
            Op::Wait(ms) => {
                model.now += ms;
                room.handle(model.now, Event::Tick);
            }
            Op::Reap => {
                let due = model.stage != Stage::Gone
                    && model.is_empty()
                    && model
                        .empty_since
                        .is_some_and(|since| model.now >= since + TIMERS.grace);
                room.handle(model.now, Event::Reap);
                prop_assert_eq!(room.is_gone(), due || model.stage == Stage::Gone);
                if due {
                    model.unsubscribed = model.stage != Stage::Closed;
                    model.stage = Stage::Gone;
                    model.subscribed_at = None;
                }
            }
            Op::Transmit { flush, link_ok } => {
                let mut sent = Vec::new();
                room.transmit(flush, &mut |transmit| {
                    sent.push(transmit);
                    if link_ok {
                        Ok(())
                    } else {
                        Err(LinkError::Full)
                    }
                });
                for transmit in sent {
                    match transmit {
                        Transmit::Unsubscribe => {
                            prop_assert!(
                                std::mem::take(&mut model.unsubscribed),
                                "an unsubscribe owed once, by a room gone"
                            );
                        }
                        Transmit::Subscribe { present, seq, .. } => {
                            prop_assert!(model.alive(), "a closed or gone room subscribed");
                            let owner = model.owner.ok_or_else(|| {
                                TestCaseError::fail("subscribed with no owner known")
                            })?;
                            prop_assert_ne!(
                                model.subscribed_at,
                                Some(owner),
                                "subscribed twice at one owner"
                            );
                            let present: HashSet<String> = present.into_iter().collect();
                            prop_assert_eq!(&present, &model.present());
                            if link_ok {
                                model.subscribed_at = Some(owner);
                                model.sent = vec![(0, 0), (seq, present.len())];
                                model.confirmed = 0;
                                model.others = None;
                                model.removed = false;
                                model.views[owner] = present;
                            }
                        }
                        Transmit::Membership { joined, left, seq } => {
                            let at = model.subscribed_at.ok_or_else(|| {
                                TestCaseError::fail("presence reported while subscribed nowhere")
                            })?;
                            if link_ok {
                                let view = &mut model.views[at];
                                for user in joined {
                                    prop_assert!(view.insert(user), "a join reported twice");
                                }
                                for user in left {
                                    prop_assert!(view.remove(&user), "a leave reported twice");
                                }
                                let last = model.sent.last().map_or(0, |&(seq, _)| seq);
                                prop_assert!(seq > last, "reports numbered in order");
                                model.sent.push((seq, view.len()));
                            }
                        }
                    }
                }
                // Converged: subscribed where placement says, and that owner
                // knows exactly who is here.
                if flush
                    && link_ok
                    && model.alive()
                    && let Some(owner) = model.owner
                {
                    prop_assert_eq!(room.subscribed_at(), Some(OWNERS[owner]));
                    prop_assert_eq!(&model.views[owner], &model.present());
                }
            }
        }
        check_actions(&mut room, &mut model)?;
        prop_assert_eq!(room.subscribed_at(), model.subscribed_at.map(|o| OWNERS[o]));
        if model.stage == Stage::Live
            && let Some(count) = model.expected_count(None)
        {
            prop_assert_eq!(room.member_count(), count, "the room's count");
        }
        if model.is_empty() {
            model.empty_since.get_or_insert(model.now);
        } else {
            model.empty_since = None;
        }
        for &(_, asked) in model.waiting.values() {
            prop_assert!(
                model.now < asked + TIMERS.subscribe_timeout,
                "a joiner waits past its deadline"
            );
        }
    }
    // Every joiner still waiting hears once the owner answers, or in time.
    room.handle(
        model.now,
        Event::Subscribed(SubscribeAck {
            room_id: "room".into(),
            latest: Some(Cursor::start(model.epoch)),
            config: Some(RoomConfig::default()),
            member_count: 0,
            history: Vec::new(),
            fence: model.fence,
            membership_seq: 0,
        }),
    );
    model.others = None;
    if model.alive() {
        model.stage = Stage::Live;
    }
    model.now += TIMERS.subscribe_timeout;
    room.handle(model.now, Event::Tick);
    check_actions(&mut room, &mut model)?;
    prop_assert!(
        model.waiting.is_empty(),
        "joiners never answered: {:?}",
        model.waiting
    );
    prop_assert_eq!(model.answered.len() as u32, model.next_waiter);
    Ok(())
}

proptest! {
    /// For any history: every joiner is answered exactly once (let in only
    /// when the room is live, turned away only past its deadline or when
    /// the room is closed or gone); a Subscribe goes to an owner only when
    /// the room is not subscribed there, carrying exactly who is present;
    /// every presence change reaches the owner subscribed at once, and
    /// after a flush over a working link the room is subscribed where
    /// placement says and that owner knows exactly who is here; the ring
    /// is replaced only for a new stream or a room not yet live; the room
    /// goes only when nobody has been in it for the grace period; and once
    /// the owner subscribed at has given a count, the room's count (and
    /// every joiner's) is that owner's users elsewhere plus who is here.
    #[test]
    fn owners_and_joiners_are_told_the_truth_once(ops in vec(op(), 1..80)) {
        run(ops)?;
    }
}
