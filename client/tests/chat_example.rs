//! The chat example as a user runs it: the built program against a scripted
//! msg-svc on a real socket (port 0), its stdin and stdout piped. What is
//! checked is what the README promises: the join line, the backfill, typed
//! lines sent and shown, and the exit codes (0 when the user leaves by
//! Ctrl-D or Ctrl-C, 1 on a kick or a lost connection, 64 on a
//! configuration that cannot work).
//!
//! Examples have no `CARGO_BIN_EXE_*`, and `cargo test` builds this one only
//! as a test harness (`test = true`), so the program is built here with
//! cargo, into the target directory and profile this test runs from.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use chatroom_proto::Message as _;
use chatroom_proto::v1::{
    ChatMessage, ClientFrame, ConnectAck, Cursor, Delta, JoinAck, KickReason, Kicked, Kind, Lane,
    LeaveAck, Notify, Pong, SendAck, ServerFrame, client_frame, server_frame,
};
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How long any one step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);
const ROOM: &str = "demo";
const EPOCH: u64 = 3;
/// The room's first message: 12:03:04 UTC on some day, in µs.
const FIRST_TS: u64 = (19_000 * 86_400 + 12 * 3600 + 3 * 60 + 4) * 1_000_000;

/// The chat example's program, built once per test run.
fn chat_program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        // This test runs from <target>/<profile dir>/deps/.
        let exe = std::env::current_exe().expect("the test knows its own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test runs from <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("a profile dir has a parent");
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("profile dir {}", profile_dir.display()),
        };
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--locked", "-p", "chatroom-client"])
            .args(["--example", "chat", "--profile", profile, "--target-dir"])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Cargo set these for running this test; the build must see the
        // caller's environment instead, or build scripts that watch one of
        // them (ring's watches CARGO_MANIFEST_DIR) would rerun here, and
        // again at the next `cargo test`.
        for (name, _) in std::env::vars_os() {
            if is_set_for_tests(&name.to_string_lossy()) {
                cargo.env_remove(name);
            }
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the chat example: {status}");
        profile_dir
            .join("examples")
            .join(format!("chat{}", std::env::consts::EXE_SUFFIX))
    })
}

/// Whether cargo sets the variable `name` for a test it runs.
fn is_set_for_tests(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ]
        .contains(&name)
}

/// The chat program with `args`, none of the `CHATROOM_*` settings of the
/// environment, and its standard streams piped.
fn chat(args: &[&str]) -> Child {
    let mut command = Command::new(chat_program());
    command.args(args).env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CHATROOM_") {
            command.env_remove(name);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the chat program starts")
}

/// What the scripted server does once the session has joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Echoes every message sent to the room back as a delta.
    Echo,
    /// Removes the session from the room (banned).
    Kick,
    /// Drops the connection without a close frame.
    Vanish,
}

/// A msg-svc that speaks just enough of the protocol for one chat session,
/// reporting every frame the client sends.
struct ScriptedServer {
    url: String,
    seen: mpsc::UnboundedReceiver<client_frame::Body>,
    task: JoinHandle<()>,
}

impl ScriptedServer {
    async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(listener, script, seen_tx));
        Self { url, seen, task }
    }

    /// The next frame body the client sent that `wanted` accepts.
    async fn saw(&mut self, wanted: impl Fn(&client_frame::Body) -> bool) -> client_frame::Body {
        let wait = async {
            loop {
                let body = self.seen.recv().await.expect("the server is running");
                if wanted(&body) {
                    return body;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("the client sent the frame in time")
    }
}

fn cursor(n: u64) -> Cursor {
    Cursor {
        epoch: EPOCH,
        ts: FIRST_TS + (n - 1) * 1_000_000,
        msg_id: n,
        normal_seq: n,
    }
}

fn message(n: u64, sender: &str, text: &str) -> ChatMessage {
    ChatMessage {
        msg_id: n,
        ts: cursor(n).ts,
        normal_seq: n,
        sender: sender.into(),
        lane: Lane::Normal as i32,
        kind: Kind::Chat as i32,
        payload: text.as_bytes().to_vec().into(),
        client_msg_id: n,
        sender_info: None,
    }
}

fn frame(request_id: u64, body: server_frame::Body) -> ServerFrame {
    ServerFrame {
        request_id,
        body: Some(body),
    }
}

async fn serve(
    listener: TcpListener,
    script: Script,
    seen: mpsc::UnboundedSender<client_frame::Body>,
) {
    let (stream, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    // Message 1 is the backfill; the session's messages follow.
    let mut last = 1;
    while let Some(Ok(incoming)) = ws.next().await {
        let Message::Binary(bytes) = incoming else {
            continue;
        };
        let request = ClientFrame::decode(bytes).unwrap();
        let Some(body) = request.body else { continue };
        let id = request.request_id;
        let mut replies = Vec::new();
        let mut joined = false;
        match &body {
            client_frame::Body::Connect(_) => replies.push(frame(
                id,
                server_frame::Body::ConnectAck(ConnectAck {
                    session_id: 1,
                    heartbeat_ms: 30_000,
                    user_id: "alice".into(),
                    max_rooms: 16,
                    token_expires_at_ms: 0,
                }),
            )),
            client_frame::Body::Join(join) => {
                joined = true;
                replies.push(frame(
                    id,
                    server_frame::Body::JoinAck(JoinAck {
                        room_id: join.room_id.clone(),
                        latest: Some(cursor(1)),
                        member_count: 1,
                        recent: vec![message(1, "bob", "welcome")],
                        ..JoinAck::default()
                    }),
                ));
            }
            client_frame::Body::Send(send) => {
                let since = cursor(last);
                last += 1;
                let text = String::from_utf8_lossy(&send.payload).into_owned();
                replies.push(frame(
                    id,
                    server_frame::Body::SendAck(SendAck {
                        msg_id: last,
                        ts: cursor(last).ts,
                        lane: Lane::Normal as i32,
                    }),
                ));
                replies.push(frame(
                    0,
                    server_frame::Body::Notify(Notify {
                        room_id: send.room_id.clone(),
                        latest: Some(cursor(last)),
                        delta: Some(Delta {
                            since: Some(since),
                            messages: vec![message(last, "alice", &text)],
                            ..Delta::default()
                        }),
                        member_count: 1,
                    }),
                ));
            }
            client_frame::Body::Leave(leave) => replies.push(frame(
                id,
                server_frame::Body::LeaveAck(LeaveAck {
                    room_id: leave.room_id.clone(),
                }),
            )),
            client_frame::Body::Ping(_) => {
                replies.push(frame(id, server_frame::Body::Pong(Pong::default())))
            }
            client_frame::Body::Pull(_) | client_frame::Body::Refresh(_) => {}
        }
        // The test may have stopped listening: the frame still gets its answer.
        let _ = seen.send(body);
        for reply in replies {
            let bytes = reply.encode_to_vec();
            if ws.send(Message::Binary(bytes.into())).await.is_err() {
                return;
            }
        }
        if joined {
            match script {
                Script::Echo => {}
                Script::Kick => {
                    let kicked = frame(
                        0,
                        server_frame::Body::Kicked(Kicked {
                            room_id: ROOM.into(),
                            reason: KickReason::Banned as i32,
                            message: "spam".into(),
                        }),
                    );
                    let bytes = kicked.encode_to_vec();
                    if ws.send(Message::Binary(bytes.into())).await.is_err() {
                        return;
                    }
                }
                Script::Vanish => return,
            }
        }
    }
}

/// Reads the next line of stdout; it must be `want`.
async fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, want: &str) {
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("the chat printed in time")
        .expect("stdout is readable");
    assert_eq!(line.as_deref(), Some(want));
}

/// Waits for the program to exit; its exit code and its stderr. Its stdin
/// stays open until then (unless the caller took it), so only the server
/// can end the session.
async fn exit_of(mut child: Child) -> (Option<i32>, String) {
    let stdin = child.stdin.take();
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("the chat exited in time")
        .expect("the chat ran");
    drop(stdin);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How the user leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    EndOfInput,
    Interrupt,
}

/// Joins, sees the backfill, sends a line and sees it come back, then
/// leaves as `how` says: exit 0, the room left first.
async fn chat_and_leave(how: Leave) {
    let mut server = ScriptedServer::start(Script::Echo).await;
    let mut child = chat(&["--server", &server.url, "--token", "t", "--room", ROOM]);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    expect_line(
        &mut lines,
        "*** alice joined demo (1 here); type to chat, Ctrl-D to leave",
    )
    .await;
    expect_line(&mut lines, "[12:03:04] bob: welcome").await;
    stdin.write_all("hello bob 👋\n".as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    let sent = server
        .saw(|body| matches!(body, client_frame::Body::Send(_)))
        .await;
    let client_frame::Body::Send(sent) = sent else {
        unreachable!("filtered to sends")
    };
    assert_eq!(sent.room_id, ROOM);
    assert_eq!(sent.kind, Kind::Chat as i32);
    assert_eq!(&sent.payload[..], "hello bob 👋".as_bytes());
    expect_line(&mut lines, "[12:03:05] alice: hello bob 👋").await;

    match how {
        Leave::EndOfInput => drop(stdin),
        Leave::Interrupt => {
            let pid = child.id().expect("the chat is running");
            kill(Pid::from_raw(pid.try_into().unwrap()), Signal::SIGINT).unwrap();
        }
    }
    expect_line(&mut lines, "*** leaving demo").await;
    server
        .saw(|body| matches!(body, client_frame::Body::Leave(leave) if leave.room_id == ROOM))
        .await;
    let (code, stderr) = exit_of(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    server.task.abort();
}

#[tokio::test]
async fn end_of_input_leaves_the_room_and_exits_0() {
    chat_and_leave(Leave::EndOfInput).await;
}

#[tokio::test]
async fn ctrl_c_leaves_the_room_and_exits_0() {
    chat_and_leave(Leave::Interrupt).await;
}

/// The server ends the session as `script` says: exit 1, and stderr says
/// `why`.
async fn ended_by_the_server(script: Script, why: &str) {
    let server = ScriptedServer::start(script).await;
    let child = chat(&["--server", &server.url, "--token", "t", "--room", ROOM]);
    let (code, stderr) = exit_of(child).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
}

#[tokio::test]
async fn a_kick_exits_1_and_says_why() {
    ended_by_the_server(Script::Kick, "removed from demo: banned (spam)").await;
}

#[tokio::test]
async fn a_lost_connection_exits_1() {
    ended_by_the_server(Script::Vanish, "disconnected").await;
}

#[tokio::test]
async fn a_token_that_cannot_be_minted_exits_64() {
    let child = chat(&[
        "--room",
        ROOM,
        "--user",
        "alice",
        "--token-secret-file",
        "/nonexistent/chatroom/token-secret",
    ]);
    let (code, stderr) = exit_of(child).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("cannot mint a token"), "{stderr}");
}

#[tokio::test]
async fn bad_log_flags_exit_64() {
    let child = chat(&["--room", ROOM, "--token", "t", "--log", "[unclosed"]);
    let (code, stderr) = exit_of(child).await;
    assert_eq!(code, Some(64), "{stderr}");
}
