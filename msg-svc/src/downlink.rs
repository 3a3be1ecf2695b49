//! Frames from the room owners: what is about a room (subscription acks,
//! broadcasts, room updates, refusals) goes to the room's lifecycle; send
//! results go back to their sessions; kicks take users out of rooms.

use std::sync::Arc;

use chatroom_cluster::link::DownLinkRx;
use chatroom_cluster::time;
use chatroom_proto::cluster::v1::{Kick, SendResult, send_result, to_msg_svc};
use chatroom_proto::v1::{self, ErrorCode, KickReason, server_frame};
use tracing::{debug, warn};

use crate::node::{MsgNode, kicked_frame};
use crate::room::{Event, JoinWaiter};

/// What a sender whose ack came from a stale owner is told to wait.
const STALE_RETRY_AFTER_MS: u32 = 200;

/// Processes frames from the room owners until the link closes.
pub(crate) async fn run(node: Arc<MsgNode>, mut rx: DownLinkRx) {
    while let Some(frame) = rx.recv().await {
        let Some(body) = frame.body else {
            warn!("empty frame from a room service");
            continue;
        };
        match body {
            to_msg_svc::Body::SubscribeAck(ack) => {
                let id = ack.room_id.clone();
                to_room(&node, &id, Event::Subscribed(ack)).await;
            }
            to_msg_svc::Body::Broadcast(broadcast) => {
                node.metrics.broadcast(broadcast.messages.len());
                let event = Event::Broadcast {
                    messages: broadcast.messages,
                    fence: broadcast.fence,
                };
                to_room(&node, &broadcast.room_id, event).await;
            }
            to_msg_svc::Body::SendResult(result) => send_result(&node, result),
            to_msg_svc::Body::Kick(kick) => kicked(&node, kick).await,
            to_msg_svc::Body::RoomUpdate(update) => {
                let id = update.room_id.clone();
                to_room(&node, &id, Event::Updated(update)).await;
            }
            to_msg_svc::Body::NotOwner(not_owner) => {
                debug!(room = %not_owner.room_id, "subscription refused by a room service that does not own the room");
                to_room(&node, &not_owner.room_id, Event::NotOwner).await;
            }
        }
    }
    debug!("room service link closed");
}

/// Feeds a frame about room `id` to the room, if it is here.
async fn to_room(node: &MsgNode, id: &str, event: Event<JoinWaiter>) {
    let Some(room) = node.room(id) else {
        debug!(room = id, "frame for a room no longer here");
        return;
    };
    let followup = room.drive(time::mono_millis(), [event], node.uplink.as_ref(), false);
    node.carry_out(&room, followup).await;
}

fn send_result(node: &MsgNode, mut result: SendResult) {
    let acked = matches!(result.outcome, Some(send_result::Outcome::Ack(_)));
    if acked
        && node
            .room(&result.room_id)
            .is_some_and(|room| room.lifecycle().is_stale(result.fence))
    {
        // Stamped by an owner that lost the room: nobody will see the
        // message. The client retries with the same client_msg_id.
        node.metrics.stale_frame();
        let error = v1::Error::new(
            ErrorCode::Overloaded,
            "the room moved to another room service; retry",
        )
        .retry_after(STALE_RETRY_AFTER_MS);
        result.outcome = Some(send_result::Outcome::Error(error));
    }
    node.metrics.send_result(result.outcome.as_ref());
    let Some(session) = node.sessions.get(result.session_id) else {
        return;
    };
    if !session.settle_send(result.request_id) {
        // Already answered when its link dropped; a retry with the same
        // client_msg_id gets this same outcome from the owner's dedupe.
        return;
    }
    let body = match result.outcome {
        Some(send_result::Outcome::Ack(ack)) => server_frame::Body::SendAck(ack),
        Some(send_result::Outcome::Error(error)) => server_frame::Body::Error(error),
        None => server_frame::Body::Error(v1::Error::new(
            ErrorCode::Internal,
            "room service sent no outcome",
        )),
    };
    session.reply(result.request_id, body);
}

/// Removes `user`'s sessions here from the room and tells them why.
async fn kicked(node: &MsgNode, kick: Kick) {
    let reason = KickReason::try_from(kick.reason).unwrap_or(KickReason::Unspecified);
    // The owner took the user out already: what it holds of this node's
    // presence changed on its side.
    let user: Arc<str> = kick.user_id.as_str().into();
    to_room(node, &kick.room_id, Event::Removed { user }).await;
    for session in node.sessions.of_user(&kick.user_id) {
        let room = {
            let mut rooms = session.rooms();
            let Some(index) = rooms.iter().position(|room| *room.id == *kick.room_id) else {
                continue;
            };
            rooms.swap_remove(index)
        };
        session.reply(0, kicked_frame(&kick.room_id, reason, &kick.message));
        node.leave(&session, &room).await;
    }
}
