//! The seed corpus: valid encodings of every frame type, built from the
//! generated types so the seeds follow the schema, plus edge cases (limits,
//! refusals, cut streams). `src/bin/seed.rs` writes them to
//! `corpus/<target>/<name>`; `tests/corpus.rs` fails when the files there
//! differ from these.

use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{
    Broadcast, Hello, Kick, Membership, NotOwner, RoomConfig, RoomReport, RoomUpdate, SendRequest,
    SendResult, Subscribe, SubscribeAck, ToMsgSvc, ToRoomSvc, Unsubscribe, send_result, to_msg_svc,
    to_room_svc,
};
use chatroom_proto::framing::length;
use chatroom_proto::framing::ws::{self, HeaderBytes, OpCode, close_code};
use chatroom_proto::v1::{
    ChatMessage, ClientFrame, Connect, Cursor, Join, KickReason, Kind, Lane, Leave, Ping, Pull,
    Refresh, Send, SendAck, SenderInfo, client_frame,
};

use crate::client::EPOCH;
use crate::cluster::ROOM;
use crate::input::Input;
use crate::token::{ADMIN_TOKEN, Mode, signed};
use crate::ws::ALLOWED_ORIGIN;

/// One seed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target it is for.
    pub target: &'static str,
    /// Its file name in the target's corpus directory.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, list: Vec<(String, Vec<u8>)>| {
        seeds.extend(list.into_iter().map(|(name, bytes)| Seed {
            target,
            name,
            bytes,
        }));
    };
    add("ws_handshake", ws_handshake());
    add("ws_frames", ws_frames());
    add("quic_frames", quic_frames());
    add("client_frame", client_frame());
    add("cluster_frames", cluster_frames());
    add("token", token());
    add("admin_config", admin_config());
    seeds
}

/// A token for `alice` with the admin role, signed with the targets' secret,
/// expiring in 2100.
fn valid_token() -> String {
    signed(
        br#"{"alg":"HS256","typ":"JWT"}"#,
        br#"{"sub":"alice","exp":4102444800,"roles":["admin"]}"#,
    )
}

/// A token with every claim the service reads: room grants, room roles and
/// display info.
fn token_with_claims() -> String {
    signed(
        br#"{"alg":"HS256","typ":"JWT"}"#,
        br##"{"sub":"alice","exp":4102444800,"rooms":["lobby","vip:*"],"room_roles":{"lobby":["moderator"]},"info":{"name":"Alice","badges":["vip"],"color":"#ff8800"}}"##,
    )
}

fn cursor(msg_id: u64) -> Cursor {
    Cursor {
        epoch: EPOCH,
        ts: 1000 + 10 * msg_id,
        msg_id,
        normal_seq: msg_id - msg_id / 3,
    }
}

/// One client frame of every kind, and a few that are refused.
fn client_frames() -> Vec<(&'static str, ClientFrame)> {
    use client_frame::Body;
    let frame = |request_id, body| ClientFrame {
        request_id,
        body: Some(body),
    };
    let send = |kind: i32, payload: Vec<u8>| Send {
        room_id: "lobby".into(),
        client_msg_id: 42,
        kind,
        payload: payload.into(),
    };
    vec![
        (
            "connect",
            frame(
                1,
                Body::Connect(Connect {
                    token: valid_token(),
                    device_id: "phone-1".into(),
                }),
            ),
        ),
        (
            "connect-bad-device",
            frame(
                1,
                Body::Connect(Connect {
                    token: "not.a.token".into(),
                    device_id: "phone 1".into(),
                }),
            ),
        ),
        (
            "join",
            frame(
                2,
                Body::Join(Join {
                    room_id: "lobby".into(),
                    since: None,
                    backfill: 20,
                }),
            ),
        ),
        (
            "join-since",
            frame(
                2,
                Body::Join(Join {
                    room_id: "lobby".into(),
                    since: Some(cursor(30)),
                    backfill: 0,
                }),
            ),
        ),
        (
            "join-bad-room",
            frame(
                2,
                Body::Join(Join {
                    room_id: "lob/by".into(),
                    since: None,
                    backfill: 1000,
                }),
            ),
        ),
        (
            "leave",
            frame(
                3,
                Body::Leave(Leave {
                    room_id: "lobby".into(),
                }),
            ),
        ),
        (
            "send",
            frame(4, Body::Send(send(Kind::Chat as i32, b"hi!".to_vec()))),
        ),
        ("send-custom", frame(4, Body::Send(send(1001, vec![0; 64])))),
        (
            "send-reserved-kind",
            frame(4, Body::Send(send(7, Vec::new()))),
        ),
        (
            "send-too-large",
            frame(4, Body::Send(send(Kind::Gift as i32, vec![b'x'; 4097]))),
        ),
        (
            "pull",
            frame(
                5,
                Body::Pull(Pull {
                    room_id: "lobby".into(),
                    since: Some(cursor(10)),
                    limit: 5,
                }),
            ),
        ),
        (
            "pull-other-epoch",
            frame(
                5,
                Body::Pull(Pull {
                    room_id: "lobby".into(),
                    since: Some(Cursor::start(EPOCH + 1)),
                    limit: 0,
                }),
            ),
        ),
        (
            "pull-no-cursor",
            frame(
                5,
                Body::Pull(Pull {
                    room_id: "lobby".into(),
                    since: None,
                    limit: 500,
                }),
            ),
        ),
        ("ping", frame(6, Body::Ping(Ping {}))),
        (
            "refresh",
            frame(
                8,
                Body::Refresh(Refresh {
                    token: token_with_claims(),
                }),
            ),
        ),
        (
            "no-body",
            ClientFrame {
                request_id: 7,
                body: None,
            },
        ),
    ]
}

/// A masked WebSocket frame as a client sends it.
fn ws_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    ws::masked_frame(opcode, fin, payload, [0x12, 0x34, 0x56, 0x78])
}

fn upgrade_request(extra_headers: &str) -> String {
    format!(
        "GET /ws?v=1 HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    )
}

fn ws_handshake() -> Vec<(String, Vec<u8>)> {
    let origin = |origin: &str| upgrade_request(&format!("Origin: {origin}\r\n"));
    // Header bytes that bring the request just under the 8 KiB limit.
    let padding = format!("X-Padding: {}\r\n", "p".repeat(7_900));
    let mut with_frame = upgrade_request("").into_bytes();
    with_frame.extend(ws_frame(OpCode::Ping, true, b"early"));
    let cases: Vec<(&str, u8, Vec<usize>, Vec<u8>)> = vec![
        ("upgrade", 0, vec![], upgrade_request("").into_bytes()),
        (
            "upgrade-cut",
            0,
            vec![3, 17, 40],
            upgrade_request("").into_bytes(),
        ),
        ("upgrade-then-frame", 0, vec![], with_frame),
        (
            "origin-any",
            1,
            vec![],
            origin("https://else.example").into_bytes(),
        ),
        (
            "origin-allowed",
            2,
            vec![],
            origin(ALLOWED_ORIGIN).into_bytes(),
        ),
        (
            "origin-refused",
            2,
            vec![],
            origin("https://evil.example").into_bytes(),
        ),
        (
            "near-the-limit",
            0,
            vec![],
            upgrade_request(&padding).into_bytes(),
        ),
        (
            "post",
            0,
            vec![],
            upgrade_request("").replacen("GET", "POST", 1).into_bytes(),
        ),
        (
            "wrong-path",
            0,
            vec![],
            upgrade_request("")
                .replacen("/ws?v=1", "/chat", 1)
                .into_bytes(),
        ),
        (
            "version-8",
            0,
            vec![],
            upgrade_request("")
                .replacen("Version: 13", "Version: 8", 1)
                .into_bytes(),
        ),
        (
            "no-key",
            0,
            vec![],
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n"
                .to_vec(),
        ),
        (
            "incomplete",
            0,
            vec![],
            b"GET /ws HTTP/1.1\r\nHost: x\r\n".to_vec(),
        ),
        (
            "not-http",
            0,
            vec![],
            b"\x16\x03\x01\x00\xa5\x01\x00".to_vec(),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, setting, reads, stream)| {
            (name.to_owned(), Input::compose(setting, &reads, &stream))
        })
        .collect()
}

/// Settings of the WebSocket target: which frame limit.
const WS_16: u8 = 0;
const WS_1K: u8 = 2;
const WS_64K: u8 = 3;

fn ws_frames() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = client_frames()
        .into_iter()
        .map(|(name, frame)| {
            let wire = ws_frame(OpCode::Binary, true, &frame.encode_to_vec());
            (name.to_owned(), Input::compose(WS_64K, &[], &wire))
        })
        .collect();
    let ping = ClientFrame {
        request_id: 9,
        body: Some(client_frame::Body::Ping(Ping {})),
    }
    .encode_to_vec();
    let mut fragmented = ws_frame(OpCode::Binary, false, &ping[..1]);
    fragmented.extend(ws_frame(OpCode::Ping, true, b"between"));
    fragmented.extend(ws_frame(OpCode::Continuation, false, &[]));
    fragmented.extend(ws_frame(OpCode::Continuation, true, &ping[1..]));
    let mut text = ws_frame(OpCode::Text, false, b"hel");
    text.extend(ws_frame(OpCode::Continuation, true, b"lo"));
    let mut controls = ws_frame(OpCode::Ping, true, b"are you there");
    controls.extend(ws_frame(OpCode::Pong, true, b""));
    controls.extend(ws_frame(
        OpCode::Close,
        true,
        &ws::close_payload(close_code::GOING_AWAY, "bye"),
    ));
    controls.extend(ws_frame(OpCode::Binary, true, &ping));
    let mut long_length = ws_frame(OpCode::Binary, true, &ping);
    // The same frame with its length in the 64-bit form.
    long_length.splice(1..2, [0x80 | 127, 0, 0, 0, 0, 0, 0, 0, ping.len() as u8]);
    let mut unmasked = HeaderBytes::new(OpCode::Binary, ping.len(), None)
        .as_slice()
        .to_vec();
    unmasked.extend_from_slice(&ping);
    let all: Vec<u8> = client_frames()
        .into_iter()
        .flat_map(|(_, frame)| ws_frame(OpCode::Binary, true, &frame.encode_to_vec()))
        .collect();
    let cases: Vec<(&str, u8, Vec<usize>, Vec<u8>)> = vec![
        ("fragmented", WS_64K, vec![], fragmented.clone()),
        ("fragmented-cut", WS_64K, vec![1, 2, 5, 9], fragmented),
        ("text", WS_64K, vec![], text),
        ("controls", WS_64K, vec![], controls),
        ("length-64bit", WS_64K, vec![], long_length),
        (
            "length-16bit",
            WS_1K,
            vec![],
            ws_frame(OpCode::Binary, true, &[0; 300]),
        ),
        (
            "over-the-limit",
            WS_16,
            vec![],
            ws_frame(OpCode::Binary, true, &[0; 17]),
        ),
        (
            "fragments-over-the-limit",
            WS_16,
            vec![],
            [
                ws_frame(OpCode::Binary, false, &[0; 10]),
                ws_frame(OpCode::Continuation, true, &[0; 10]),
            ]
            .concat(),
        ),
        ("unmasked", WS_64K, vec![], unmasked),
        (
            "reserved-bits",
            WS_64K,
            vec![],
            vec![0xc2, 0x80, 0, 0, 0, 0],
        ),
        (
            "reserved-opcode",
            WS_64K,
            vec![],
            vec![0x83, 0x80, 0, 0, 0, 0],
        ),
        (
            "stray-continuation",
            WS_64K,
            vec![],
            ws_frame(OpCode::Continuation, true, b"x"),
        ),
        ("all-cut", WS_64K, vec![1, 6, 7, 100, 256], all),
    ];
    seeds.extend(cases.into_iter().map(|(name, setting, reads, stream)| {
        (name.to_owned(), Input::compose(setting, &reads, &stream))
    }));
    seeds
}

/// A body with its length prefix.
fn prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = length::prefix(body.len())
        .expect("seed bodies are small")
        .to_vec();
    out.extend_from_slice(body);
    out
}

/// Settings of the QUIC target: which frame limit.
const QUIC_16: u8 = 0;
const QUIC_64K: u8 = 2;

fn quic_frames() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = client_frames()
        .into_iter()
        .map(|(name, frame)| {
            let wire = prefixed(&frame.encode_to_vec());
            (name.to_owned(), Input::compose(QUIC_64K, &[], &wire))
        })
        .collect();
    let all: Vec<u8> = client_frames()
        .into_iter()
        .flat_map(|(_, frame)| prefixed(&frame.encode_to_vec()))
        .collect();
    let cases: Vec<(&str, u8, Vec<usize>, Vec<u8>)> = vec![
        ("all-cut", QUIC_64K, vec![1, 2, 3, 50, 256], all),
        ("empty-frame", QUIC_64K, vec![], prefixed(&[])),
        ("garbage", QUIC_64K, vec![], prefixed(&[0xff; 5])),
        ("over-the-limit", QUIC_16, vec![], prefixed(&[0; 17])),
        (
            "huge-prefix",
            QUIC_64K,
            vec![2],
            u32::MAX.to_be_bytes().to_vec(),
        ),
    ];
    seeds.extend(cases.into_iter().map(|(name, setting, reads, stream)| {
        (name.to_owned(), Input::compose(setting, &reads, &stream))
    }));
    seeds
}

fn client_frame() -> Vec<(String, Vec<u8>)> {
    client_frames()
        .into_iter()
        .map(|(name, frame)| (name.to_owned(), frame.encode_to_vec()))
        .collect()
}

fn message(msg_id: u64, lane: Lane) -> ChatMessage {
    ChatMessage {
        msg_id,
        ts: 5000 + msg_id,
        normal_seq: msg_id,
        sender: "bob".into(),
        lane: lane as i32,
        kind: Kind::Chat as i32,
        payload: b"hello".to_vec().into(),
        client_msg_id: msg_id,
        sender_info: msg_id.is_multiple_of(2).then(|| SenderInfo {
            name: "Bob".into(),
            badges: vec!["vip".into()],
            color: "#336699".into(),
        }),
    }
}

fn to_room_svc_frames() -> Vec<(&'static str, ToRoomSvc)> {
    use to_room_svc::Body;
    let frame = |body| ToRoomSvc { body: Some(body) };
    vec![
        (
            "hello",
            frame(Body::Hello(Hello {
                node_id: "msg-1".into(),
            })),
        ),
        (
            "subscribe",
            frame(Body::Subscribe(Subscribe {
                room_id: ROOM.into(),
                latest: Some(Cursor {
                    epoch: 9,
                    ts: 5000,
                    msg_id: 12,
                    normal_seq: 10,
                }),
            })),
        ),
        (
            "membership",
            frame(Body::Membership(Membership {
                room_id: ROOM.into(),
                joined: vec!["alice".into(), "bob".into(), "bad id".into()],
                left: vec!["carol".into()],
                seq: 2,
            })),
        ),
        (
            "send",
            frame(Body::Send(SendRequest {
                room_id: ROOM.into(),
                sender: "alice".into(),
                sender_roles: vec!["system".into()],
                session_id: 1,
                request_id: 2,
                client_msg_id: 3,
                kind: Kind::Chat as i32,
                payload: b"hello".to_vec().into(),
                sender_info: Some(SenderInfo {
                    name: "Alice".into(),
                    badges: Vec::new(),
                    color: String::new(),
                }),
            })),
        ),
        (
            "report",
            frame(Body::Report(RoomReport {
                room_id: ROOM.into(),
                delivered: 100,
                skipped_normal: 3,
                skipped_priority: 1,
                evicted_normal: 2,
                evicted_priority: 0,
                slow_consumer_kicks: 1,
            })),
        ),
        (
            "unsubscribe",
            frame(Body::Unsubscribe(Unsubscribe {
                room_id: ROOM.into(),
            })),
        ),
    ]
}

fn to_msg_svc_frames() -> Vec<(&'static str, ToMsgSvc)> {
    use to_msg_svc::Body;
    let frame = |body| ToMsgSvc { body: Some(body) };
    let config = RoomConfig {
        normal_ring: 4,
        priority_ring: 2,
        ..room_svc::core::default_room_config()
    };
    vec![
        (
            "subscribe-ack",
            frame(Body::SubscribeAck(SubscribeAck {
                room_id: ROOM.into(),
                latest: Some(Cursor {
                    epoch: 9,
                    ts: 5006,
                    msg_id: 6,
                    normal_seq: 6,
                }),
                config: Some(config.clone()),
                member_count: 2,
                history: (1..=6).map(|id| message(id, Lane::Normal)).collect(),
                fence: 3,
                membership_seq: 1,
            })),
        ),
        (
            "broadcast",
            frame(Body::Broadcast(Broadcast {
                room_id: ROOM.into(),
                messages: vec![message(7, Lane::Normal), message(8, Lane::Priority)],
                fence: 3,
            })),
        ),
        (
            "stale-broadcast",
            frame(Body::Broadcast(Broadcast {
                room_id: ROOM.into(),
                messages: vec![message(7, Lane::Normal)],
                fence: 2,
            })),
        ),
        (
            "room-update",
            frame(Body::RoomUpdate(RoomUpdate {
                room_id: ROOM.into(),
                config: Some(RoomConfig {
                    normal_ring: 1,
                    ..config
                }),
                member_count: 5,
                closed: false,
                membership_seq: 2,
                fence: 3,
            })),
        ),
        (
            "send-result",
            frame(Body::SendResult(SendResult {
                session_id: 1,
                request_id: 2,
                outcome: Some(send_result::Outcome::Ack(SendAck {
                    msg_id: 7,
                    ts: 5007,
                    lane: Lane::Normal as i32,
                })),
                room_id: ROOM.into(),
                fence: 3,
            })),
        ),
        (
            "kick",
            frame(Body::Kick(Kick {
                room_id: ROOM.into(),
                user_id: "bob".into(),
                reason: KickReason::Banned as i32,
                message: "banned".into(),
            })),
        ),
        (
            "not-owner",
            frame(Body::NotOwner(NotOwner {
                room_id: ROOM.into(),
            })),
        ),
    ]
}

/// Settings of the cluster target: the direction.
const TO_ROOM_SVC: u8 = 0;
const TO_MSG_SVC: u8 = 1;

fn cluster_frames() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let up: Vec<(&str, Vec<u8>)> = to_room_svc_frames()
        .into_iter()
        .map(|(name, frame)| (name, prefixed(&frame.encode_to_vec())))
        .collect();
    let down: Vec<(&str, Vec<u8>)> = to_msg_svc_frames()
        .into_iter()
        .map(|(name, frame)| (name, prefixed(&frame.encode_to_vec())))
        .collect();
    for (direction, setting, frames) in [("up", TO_ROOM_SVC, &up), ("down", TO_MSG_SVC, &down)] {
        for (name, wire) in frames {
            seeds.push((
                format!("{direction}-{name}"),
                Input::compose(setting, &[], wire),
            ));
        }
        let all: Vec<u8> = frames.iter().flat_map(|(_, wire)| wire.clone()).collect();
        let mut truncated = all.clone();
        truncated.truncate(all.len() - 3);
        seeds.push((
            format!("{direction}-all-cut"),
            Input::compose(setting, &[2, 9, 30, 200], &all),
        ));
        seeds.push((
            format!("{direction}-truncated"),
            Input::compose(setting, &[], &truncated),
        ));
    }
    // A node reports about once a second: two reports of a room it joined.
    let reports: Vec<u8> = ["subscribe", "report", "report"]
        .iter()
        .flat_map(|name| up.iter().find(|(seed, _)| seed == name))
        .flat_map(|(_, wire)| wire.clone())
        .collect();
    seeds.push((
        "up-reports".into(),
        Input::compose(TO_ROOM_SVC, &[], &reports),
    ));
    seeds.push((
        "up-over-the-limit".into(),
        Input::compose(TO_ROOM_SVC, &[], &u32::MAX.to_be_bytes()),
    ));
    seeds
}

fn token() -> Vec<(String, Vec<u8>)> {
    let mode = |mode: Mode, rest: &[u8]| [&[mode as u8][..], rest].concat();
    let signed_parts = |header: &str, claims: &str| {
        mode(
            Mode::Signed,
            &[header.as_bytes(), &[0xff], claims.as_bytes()].concat(),
        )
    };
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("valid", mode(Mode::Raw, valid_token().as_bytes())),
        ("garbage", mode(Mode::Raw, b"not a token")),
        (
            "signed-valid",
            signed_parts(
                hs256,
                r#"{"sub":"alice","exp":4102444800,"roles":["system"]}"#,
            ),
        ),
        (
            "signed-expired",
            signed_parts(hs256, r#"{"sub":"alice","exp":1000}"#),
        ),
        (
            "signed-bad-user",
            signed_parts(hs256, r#"{"sub":"a b","exp":4102444800}"#),
        ),
        ("signed-no-exp", signed_parts(hs256, r#"{"sub":"alice"}"#)),
        (
            "signed-alg-none",
            signed_parts(r#"{"alg":"none"}"#, r#"{"sub":"alice","exp":4102444800}"#),
        ),
        (
            "signed-hs512",
            signed_parts(r#"{"alg":"HS512"}"#, r#"{"sub":"alice","exp":4102444800}"#),
        ),
        ("mint", mode(Mode::Mint, b"alice")),
        ("mint-admin", [&[Mode::Mint as u8 | 4][..], b"ops"].concat()),
        ("mint-bad-user", mode(Mode::Mint, b"caf\xc3\xa9")),
        (
            "bearer",
            mode(Mode::Bearer, format!("Bearer {ADMIN_TOKEN}").as_bytes()),
        ),
        (
            "bearer-spaced",
            mode(Mode::Bearer, format!("bearer   {ADMIN_TOKEN} ").as_bytes()),
        ),
        (
            "bearer-wrong",
            mode(Mode::Bearer, b"Bearer 0123456789abcdef0"),
        ),
        ("basic", mode(Mode::Bearer, b"Basic YWRtaW46YWRtaW4=")),
    ];
    cases
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes))
        .collect()
}

fn admin_config() -> Vec<(String, Vec<u8>)> {
    let every_field = r#"{"normal_per_s": 100, "normal_burst": 100, "priority_per_s": 10,
        "priority_burst": 10, "normal_ring": 1024, "priority_ring": 128,
        "max_payload_bytes": 2048, "round_interval_ms": 200, "pull_timeout_ms": 3000,
        "slow_consumer_notifies": 3, "history_size": 50, "inline_max_bytes": 1024,
        "slow_mode_ms": 5000, "priority_kinds": ["gift", "notice", 1001]}"#;
    let cases = [
        ("one-field", r#"{"normal_per_s": 500}"#),
        ("every-field", every_field),
        (
            "clear",
            r#"{"normal_per_s": null, "history_size": null, "priority_kinds": null}"#,
        ),
        ("no-priority-kinds", r#"{"priority_kinds": []}"#),
        ("closed-lane", r#"{"normal_per_s": 0, "normal_burst": 0}"#),
        ("out-of-range", r#"{"max_payload_bytes": 70000}"#),
        ("reserved-kind", r#"{"priority_kinds": [4]}"#),
        ("unknown-field", r#"{"normal_per_sec": 10}"#),
        ("negative", r#"{"normal_ring": -1}"#),
        ("not-an-object", "[1, 2]"),
        ("null", "null"),
        ("empty", " \n"),
    ];
    cases
        .into_iter()
        .map(|(name, body)| (name.to_owned(), body.as_bytes().to_vec()))
        .collect()
}
