//! A msg-svc whose room moved to a newer owner while the old one, cut off
//! or stalled, still sends: a real msg-svc with a real WebSocket client,
//! and the room services played by the test through the node's link ends.
//! The old owner's broadcasts never reach the client, its ack of a send is
//! turned into a retry, and both are counted.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatroom_cluster::auth::{Roles, TokenKey};
use chatroom_cluster::link::{LinkError, UpLink};
use chatroom_cluster::membership::{Members, NodeInfo, Registration, Role};
use chatroom_cluster::metrics;
use chatroom_proto::cluster::v1::{
    Broadcast, SendResult, SubscribeAck, ToMsgSvc, ToRoomSvc, send_result, to_msg_svc, to_room_svc,
};
use chatroom_proto::v1::{
    ChatMessage, Connect, Cursor, ErrorCode, SendAck, client_frame, server_frame,
};
use msg_svc::{LinkEnds, Listeners, NodeConfig, Server, Surface};
use support::{PATIENCE, RawClient, SECRET, http_get};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

const ROOM: &str = "lobby";

/// What the node sends up, for the test to answer as a room service.
#[derive(Debug)]
struct Up(mpsc::UnboundedSender<ToRoomSvc>);

impl UpLink for Up {
    fn try_send(&self, frame: ToRoomSvc) -> Result<(), LinkError> {
        self.0.send(frame).map_err(|_| LinkError::Down)
    }
}

fn message(msg_id: u64, text: &'static str) -> ChatMessage {
    ChatMessage {
        msg_id,
        ts: 1_000 + msg_id,
        normal_seq: msg_id,
        sender: "someone".into(),
        payload: Bytes::from_static(text.as_bytes()),
        ..ChatMessage::default()
    }
}

fn down(body: to_msg_svc::Body) -> ToMsgSvc {
    ToMsgSvc { body: Some(body) }
}

async fn next_up(up: &mut mpsc::UnboundedReceiver<ToRoomSvc>) -> to_room_svc::Body {
    timeout(PATIENCE, up.recv())
        .await
        .expect("a frame up in time")
        .expect("the node runs")
        .body
        .expect("a body")
}

#[tokio::test]
async fn a_stale_owner_is_not_heard_once_a_newer_one_answered() {
    let tokens = TokenKey::new(SECRET).unwrap();
    let (up_tx, mut up) = mpsc::unbounded_channel();
    let (to_node, down_rx) = mpsc::channel(64);
    let me = NodeInfo::new("m1", Role::MsgSvc);
    let registration = Registration::in_process(
        me.clone(),
        Members::new([me, NodeInfo::new("r1", Role::RoomSvc)]),
    );
    let listeners = Listeners {
        ws: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        quic: None,
        http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let surface = Surface {
        metrics: metrics::registry(),
        routes: None,
        drain_grace: Duration::ZERO,
    };
    let links = LinkEnds {
        up: Arc::new(Up(up_tx)),
        down: down_rx,
    };
    let server = Server::start(
        NodeConfig::default(),
        tokens.clone(),
        links,
        &registration,
        listeners,
        surface,
    )
    .unwrap();

    let mut client = RawClient::connect(&server.ws_url()).await;
    let token = tokens
        .mint("alice", Roles::default(), Duration::from_secs(600))
        .unwrap();
    client
        .request(client_frame::Body::Connect(Connect {
            token,
            device_id: String::new(),
        }))
        .await;
    client.frame().await;

    // The room's owner, in its newest term (5), answers the subscribe.
    let join = tokio::spawn(async move {
        let ack = client.join(ROOM).await;
        (client, ack)
    });
    loop {
        if let to_room_svc::Body::Subscribe(subscribe) = next_up(&mut up).await {
            assert_eq!(subscribe.room_id, ROOM);
            break;
        }
    }
    let subscribed = SubscribeAck {
        room_id: ROOM.into(),
        latest: Some(Cursor::start(7)),
        config: Some(room_svc::core::default_room_config()),
        member_count: 1,
        history: Vec::new(),
        fence: 5,
        membership_seq: 0,
    };
    to_node
        .send(down(to_msg_svc::Body::SubscribeAck(subscribed)))
        .await
        .unwrap();
    let (mut client, _) = join.await.unwrap();
    let broadcast = |msg: ChatMessage, fence| {
        down(to_msg_svc::Body::Broadcast(Broadcast {
            room_id: ROOM.into(),
            messages: vec![msg],
            fence,
        }))
    };
    to_node.send(broadcast(message(1, "one"), 5)).await.unwrap();
    assert_eq!(client.delta(ROOM).await, [message(1, "one")]);

    // The old owner (term 3) still broadcasts msg_id 2, then the current
    // one does: the client sees only the current owner's.
    to_node
        .send(broadcast(message(2, "stale"), 3))
        .await
        .unwrap();
    to_node.send(broadcast(message(2, "two"), 5)).await.unwrap();
    assert_eq!(client.delta(ROOM).await, [message(2, "two")]);

    // The old owner acks a send: the client is told to retry instead.
    let request = client
        .request(client_frame::Body::Send(chatroom_proto::v1::Send {
            room_id: ROOM.into(),
            client_msg_id: 1,
            kind: 0,
            payload: Bytes::from_static(b"hi"),
        }))
        .await;
    let send = loop {
        if let to_room_svc::Body::Send(send) = next_up(&mut up).await {
            break send;
        }
    };
    let result = SendResult {
        session_id: send.session_id,
        request_id: send.request_id,
        outcome: Some(send_result::Outcome::Ack(SendAck {
            msg_id: 3,
            ts: 1_003,
            lane: 0,
        })),
        room_id: ROOM.into(),
        fence: 3,
    };
    to_node
        .send(down(to_msg_svc::Body::SendResult(result)))
        .await
        .unwrap();
    match client.reply(request).await {
        server_frame::Body::Error(error) => {
            assert_eq!(error.code(), ErrorCode::Overloaded);
            assert!(error.retry_after_ms > 0);
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let text = http_get(server.http_addr(), "/metrics").await;
    assert!(
        text.contains("chatroom_stale_owner_frames_total 2\n"),
        "{text}"
    );
    server.stop().await;
}
