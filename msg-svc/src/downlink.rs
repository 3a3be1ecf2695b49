//! Frames from the room owners: subscription acks fill rings, broadcasts
//! append to them and wake the shards, send results go back to their
//! sessions, kicks and room updates change memberships.

use std::sync::Arc;

use chatroom_cluster::link::DownLinkRx;
use chatroom_proto::cluster::v1::{
    Broadcast, Kick, RoomUpdate, SendResult, SubscribeAck, send_result, to_msg_svc,
};
use chatroom_proto::v1::{self, ErrorCode, KickReason, Kicked, server_frame};
use tracing::{debug, warn};

use crate::node::MsgNode;
use crate::notifier::RoundConfig;
use crate::room::{RoomKey, Subscription};
use crate::shard::ShardCmd;

/// Processes frames from the room owners until the link closes.
pub(crate) async fn run(node: Arc<MsgNode>, mut rx: DownLinkRx) {
    while let Some(frame) = rx.recv().await {
        let Some(body) = frame.body else {
            warn!("empty frame from a room service");
            continue;
        };
        match body {
            to_msg_svc::Body::SubscribeAck(ack) => subscribed(&node, ack).await,
            to_msg_svc::Body::Broadcast(broadcast) => broadcast_arrived(&node, broadcast).await,
            to_msg_svc::Body::SendResult(result) => send_result(&node, result),
            to_msg_svc::Body::Kick(kick) => kicked(&node, kick).await,
            to_msg_svc::Body::RoomUpdate(update) => room_updated(&node, update).await,
            to_msg_svc::Body::NotOwner(not_owner) => refused(&node, &not_owner.room_id),
        }
    }
    debug!("room service link closed");
}

async fn subscribed(node: &MsgNode, ack: SubscribeAck) {
    let Some(room) = node.room(&ack.room_id) else {
        debug!(room = %ack.room_id, "ack for a room no longer here");
        return;
    };
    let config = ack.config.unwrap_or_default();
    let evicted = room.activate(
        ack.latest.unwrap_or_default(),
        config.clone(),
        ack.member_count,
        &ack.history,
    );
    node.metrics.evicted(evicted);
    let round = RoundConfig::of(&config);
    node.to_all_shards(|| ShardCmd::Config {
        room: RoomKey(Arc::clone(&room)),
        config: round,
    })
    .await;
    node.mark_dirty(&room).await;
}

async fn broadcast_arrived(node: &MsgNode, broadcast: Broadcast) {
    node.metrics.broadcast(broadcast.messages.len());
    let Some(room) = node.room(&broadcast.room_id) else {
        return;
    };
    if !matches!(room.state.lock().subscription, Subscription::Active) {
        return;
    }
    let evicted = room.append(&broadcast.messages);
    node.metrics.evicted(evicted);
    room.downstream.evicted(evicted);
    node.mark_dirty(&room).await;
}

fn send_result(node: &MsgNode, result: SendResult) {
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

async fn room_updated(node: &MsgNode, update: RoomUpdate) {
    let Some(room) = node.room(&update.room_id) else {
        return;
    };
    if update.closed {
        room.state.lock().subscription = Subscription::Closed;
        node.remove_room(&room);
        for session in node.sessions.all() {
            let removed = {
                let mut rooms = session.rooms();
                let before = rooms.len();
                rooms.retain(|r| !Arc::ptr_eq(r, &room));
                before != rooms.len()
            };
            if removed {
                session.reply(
                    0,
                    kicked_frame(&room.id, KickReason::RoomClosed, "the room was closed"),
                );
                node.leave(&session, &room).await;
            }
        }
        node.to_all_shards(|| ShardCmd::Forget(RoomKey(Arc::clone(&room))))
            .await;
        return;
    }
    room.state.lock().member_count = update.member_count;
    if let Some(config) = update.config {
        let round = RoundConfig::of(&config);
        let evicted = room.reconfigure(config);
        node.metrics.evicted(evicted);
        room.downstream.evicted(evicted);
        node.to_all_shards(|| ShardCmd::Config {
            room: RoomKey(Arc::clone(&room)),
            config: round,
        })
        .await;
    }
}

/// The room service asked does not own the room (placement moved it):
/// subscribe again once our view of the owner changes or on the next pass.
fn refused(node: &MsgNode, room_id: &str) {
    let Some(room) = node.room(room_id) else {
        return;
    };
    room.state.lock().owner = None;
    debug!(
        room = room_id,
        "subscription refused by a room service that does not own the room"
    );
}

fn kicked_frame(room_id: &str, reason: KickReason, message: &str) -> server_frame::Body {
    server_frame::Body::Kicked(Kicked {
        room_id: room_id.to_owned(),
        reason: reason as i32,
        message: message.to_owned(),
    })
}
