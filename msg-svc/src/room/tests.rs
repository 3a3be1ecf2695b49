//! A room driven as the node drives it: what reaches the link, and in what
//! order, and what a joiner finds in the ring once let in.

use chatroom_cluster::link::LinkError;
use chatroom_proto::cluster::v1::{RoomConfig, SendRequest, SubscribeAck};

use super::*;
use crate::room::fixtures::message;

const TIMERS: Timers = Timers {
    subscribe_timeout: 1_000,
    grace: 1_000,
};

/// A link that records what it takes, or refuses everything.
#[derive(Debug, Default)]
struct Recorder {
    frames: Mutex<Vec<ToRoomSvc>>,
    refusing: std::sync::atomic::AtomicBool,
}

impl UpLink for Recorder {
    fn try_send(&self, frame: ToRoomSvc) -> Result<(), LinkError> {
        if self.refusing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LinkError::Full);
        }
        self.frames.lock().push(frame);
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<to_room_svc::Body> {
        std::mem::take(&mut *self.frames.lock())
            .into_iter()
            .filter_map(|frame| frame.body)
            .collect()
    }
}

fn ack(msg_id: u64) -> SubscribeAck {
    SubscribeAck {
        room_id: "lobby".into(),
        latest: Some(Cursor::after(3, &message(msg_id))),
        config: Some(RoomConfig {
            normal_ring: 10,
            priority_ring: 10,
            ..RoomConfig::default()
        }),
        member_count: 0,
        history: (1..=msg_id).map(message).collect(),
        fence: 0,
        membership_seq: 0,
    }
}

fn join(
    user: &str,
) -> (
    Event<JoinWaiter>,
    oneshot::Receiver<Result<Admission, JoinRefusal>>,
) {
    let (waiter, verdict) = oneshot::channel();
    let event = Event::Join {
        user: user.into(),
        waiter,
        granted: true,
    };
    (event, verdict)
}

#[test]
fn a_joiner_is_let_in_with_the_ring_already_filled() {
    let room = LocalRoom::new("lobby".into(), TIMERS);
    let link = Recorder::default();
    let (event, mut verdict) = join("alice");
    let owner = Event::Owner(Some("r1".into()));
    let followup = room.drive(0, [owner, event], &link, false);
    assert!(matches!(
        &link.take()[..],
        [to_room_svc::Body::Subscribe(Subscribe { latest: None, .. })]
    ));
    assert!(followup.actions.is_empty(), "waits for the owner");

    let followup = room.drive(1, [Event::Subscribed(ack(3))], &link, false);
    for action in followup.actions {
        if let Action::Admit(waiter, admission) = action {
            // The ring is filled before anyone hears they are in.
            assert_eq!(room.latest().msg_id, 3);
            assert_eq!(room.ring.read().len(chatroom_proto::v1::Lane::Normal), 3);
            waiter.send(Ok(admission)).unwrap();
        }
    }
    assert_eq!(verdict.try_recv().unwrap().unwrap().member_count, 1);
}

#[test]
fn a_send_follows_the_rooms_subscribe_and_presence_on_the_link() {
    let room = LocalRoom::new("lobby".into(), TIMERS);
    let link = Recorder::default();
    let (event, _verdict) = join("alice");
    room.drive(0, [event], &link, false);
    room.drive(1, [Event::Subscribed(ack(2))], &link, false);
    assert!(link.take().is_empty(), "no owner known yet");

    let (_, sent) = room.drive_then(
        2,
        [Event::Owner(Some("r1".into()))],
        &link,
        true,
        |lifecycle| {
            let send = ToRoomSvc {
                body: Some(to_room_svc::Body::Send(SendRequest {
                    room_id: "lobby".into(),
                    sender: "alice".into(),
                    ..SendRequest::default()
                })),
            };
            link.try_send(send)
                .map(|()| lifecycle.subscribed_at().map(str::to_owned))
        },
    );
    assert_eq!(sent, Ok(Some("r1".to_owned())));
    let frames = link.take();
    assert!(
        matches!(
            &frames[..],
            [
                to_room_svc::Body::Subscribe(Subscribe { latest: Some(latest), .. }),
                to_room_svc::Body::Membership(Membership { joined, .. }),
                to_room_svc::Body::Send(_),
            ] if latest.msg_id == 2 && joined == &["alice".to_owned()]
        ),
        "{frames:?}"
    );
}

#[test]
fn frames_a_full_link_refused_go_out_with_the_next_flush() {
    let room = LocalRoom::new("lobby".into(), TIMERS);
    let link = Recorder::default();
    room.drive(0, [Event::Owner(Some("r1".into()))], &link, false);
    room.drive(1, [Event::Subscribed(ack(1))], &link, false);
    link.take();
    link.refusing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (event, _verdict) = join("alice");
    let followup = room.drive(2, [event], &link, true);
    assert!(followup.presence_pending, "kept for the next flush");
    link.refusing
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let followup = room.drive(3, [], &link, true);
    assert!(!followup.presence_pending);
    assert!(matches!(
        &link.take()[..],
        [to_room_svc::Body::Membership(Membership { joined, .. })] if joined == &["alice".to_owned()]
    ));
}
