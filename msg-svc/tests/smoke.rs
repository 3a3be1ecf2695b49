mod support;

use chatroom_proto::v1::{Join, server_frame};
use support::{RawClient, TestServer};

#[tokio::test]
async fn connect_and_join() {
    let server = TestServer::start().await;
    let (mut client, ack) = RawClient::login(&server, "alice").await;
    assert!(
        matches!(ack.body, Some(server_frame::Body::ConnectAck(_))),
        "{ack:?}"
    );
    let id = client
        .request(chatroom_proto::v1::client_frame::Body::Join(Join {
            room_id: "lobby".into(),
            since: None,
            backfill: 0,
        }))
        .await;
    let ack = client.frame().await;
    assert_eq!(ack.request_id, id);
    assert!(
        matches!(ack.body, Some(server_frame::Body::JoinAck(_))),
        "{ack:?}"
    );
    server.server.shutdown().await;
}
