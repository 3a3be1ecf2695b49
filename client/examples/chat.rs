//! The terminal chat client, an example of the client library: a human in
//! one room from the terminal. Joins, prints the backfill and every message
//! as it arrives (one line each), and sends each line typed on stdin as a
//! chat message. Ctrl-D or Ctrl-C leaves.
//!
//! ```sh
//! cargo run -p chatroom-client --example chat -- --room demo --user alice
//! cargo run -p chatroom-client --example chat -- --room demo --user bob --transport quic
//! ```
//!
//! Exits 0 when the user leaves (Ctrl-D, Ctrl-C), 1 when the server removes
//! the session from the room or the connection is lost, and 64 when the
//! configuration cannot work (a token cannot be minted, bad log flags).
//!
//! Everything the server sends is printed through [`clean`], so no message
//! can move the cursor, recolour or retitle the terminal.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chatroom_client::error::describe;
use chatroom_client::token::{Roles, SecretSource};
use chatroom_client::{
    Client, ClientConfig, ClientError, Event, Fingerprint, JoinOptions, Transport, Trust, dev_token,
};
use chatroom_cluster::auth::default_secret_file;
use chatroom_cluster::telemetry::{self, LogArgs};
use chatroom_proto::v1::{self, ChatMessage, ErrorCode, KickReason, Kind, Lane};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use tokio::sync::mpsc;

/// Exit status for a configuration that cannot work (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// Lifetime of a minted token: a long chat session outlives an hour.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// chatroom terminal chat client: prints a room's messages as they arrive
/// and sends each line typed; Ctrl-D or Ctrl-C leaves.
#[derive(Debug, Parser)]
#[command(name = "chat", version)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    chat: ChatArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init(&cli.log) {
        eprintln!("chat: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let token = match token(&cli.chat) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("chat: {error:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli.chat, token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The chat client's flags.
#[derive(Debug, Clone, clap::Args)]
struct ChatArgs {
    /// msg-svc address, ws://HOST:PORT/ws or quic://HOST:PORT; default: the
    /// embedded server's, for --transport.
    #[arg(long, env = "CHATROOM_SERVER")]
    server: Option<String>,
    /// How to connect; default: what --server names, else ws.
    #[arg(long, env = "CHATROOM_TRANSPORT", value_parser = transport_flag())]
    transport: Option<Transport>,
    /// QUIC: trust the server certificate in this PEM file (a CA or the
    /// server's own). Default: the embedded server's, for a server on this
    /// machine.
    #[arg(long, env = "CHATROOM_QUIC_CERT_FILE", conflicts_with = "fingerprint")]
    cert: Option<PathBuf>,
    /// QUIC: trust the server certificate with this SHA-256 fingerprint
    /// (as the embedded server prints it).
    #[arg(long, env = "CHATROOM_QUIC_FINGERPRINT")]
    fingerprint: Option<Fingerprint>,
    /// Room to join.
    #[arg(long, env = "CHATROOM_ROOM")]
    room: String,
    /// User to mint a token for (ignored with --token: the token names the user).
    #[arg(long, env = "CHATROOM_USER", required_unless_present = "token")]
    user: Option<String>,
    /// Token to connect with; minted from the secret file when absent.
    #[arg(long, env = "CHATROOM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Secret to mint tokens with: the embedded server's (`--standalone`) by default.
    #[arg(long, env = "CHATROOM_TOKEN_SECRET_FILE", default_value_os_t = default_secret_file())]
    token_secret_file: PathBuf,
    /// Role to put in a minted token; repeat it or separate with commas.
    #[arg(
        long = "role",
        env = "CHATROOM_ROLE",
        value_enum,
        value_delimiter = ','
    )]
    roles: Vec<Role>,
    /// Device id; random by default, so two terminals never replace each other.
    #[arg(long, env = "CHATROOM_DEVICE")]
    device: Option<String>,
    /// Recent messages to show on joining; 0 takes the server's default.
    #[arg(long, env = "CHATROOM_BACKFILL", default_value_t = 0)]
    backfill: u32,
}

/// A role to mint into the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    /// Platform operator: messages go to the PRIORITY lane.
    Admin,
    /// Trusted backend: may post notices, PRIORITY lane.
    System,
}

/// `--transport`: a [`Transport`] by name, the names listed in `--help`.
fn transport_flag() -> impl TypedValueParser<Value = Transport> {
    PossibleValuesParser::new(Transport::ALL.map(Transport::name)).try_map(|name| name.parse())
}

/// The token to connect with: `--token`, else one minted for `--user`.
fn token(args: &ChatArgs) -> anyhow::Result<String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    let user = args
        .user
        .as_deref()
        .context("give --user (or CHATROOM_USER) to mint a token, or --token")?;
    let roles = Roles {
        admin: args.roles.contains(&Role::Admin),
        system: args.roles.contains(&Role::System),
    };
    let secret = SecretSource::File(args.token_secret_file.clone());
    // One line: the secret error already names the file and the cause.
    dev_token(&secret, user, roles, TOKEN_TTL).map_err(|error| {
        anyhow!(
            "cannot mint a token: {error} (start the server with --standalone to create \
             its secret, or pass --token)"
        )
    })
}

/// The server address `--server` and `--transport` name together.
fn server_url(args: &ChatArgs) -> anyhow::Result<String> {
    match (&args.server, args.transport) {
        (None, transport) => Ok(transport.unwrap_or_default().default_url().to_owned()),
        (Some(url), None) => Ok(url.clone()),
        (Some(url), Some(transport)) => {
            let named = Transport::of(url)?;
            if named != transport {
                anyhow::bail!(
                    "--server {url} is {} but --transport says {}",
                    named.name(),
                    transport.name()
                );
            }
            Ok(url.clone())
        }
    }
}

/// Chats until stdin ends or Ctrl-C (`Ok`), or until the server closes the
/// session or removes it from the room (`Err`).
async fn run(args: &ChatArgs, token: String) -> anyhow::Result<()> {
    let server = server_url(args)?;
    let mut config = ClientConfig::new(&server, token);
    config.trust = match (&args.cert, args.fingerprint) {
        (Some(file), _) => Some(Trust::CertFile(file.clone())),
        (None, Some(pin)) => Some(Trust::Fingerprint(pin)),
        (None, None) => None,
    };
    if let Some(device) = &args.device {
        config.device_id.clone_from(device);
    }
    let (client, mut events) = Client::connect(config)
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    let room = args.room.as_str();
    let options = JoinOptions {
        since: None,
        backfill: args.backfill,
    };
    let ack = client
        .join(room, options)
        .await
        .with_context(|| format!("cannot join {room}"))?;
    println!(
        "*** {} joined {room} ({} here); type to chat, Ctrl-D to leave",
        clean(client.user_id()),
        ack.member_count
    );

    let mut sender = tokio::spawn(send_lines(client.clone(), room.to_owned(), read_stdin()));
    let mut sender_done = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Closed { reason }) => {
                    break Err(anyhow!("disconnected: {}", clean(&reason.to_string())));
                }
                Some(Event::Kicked { room: Some(kicked), reason, message, .. })
                    if &*kicked == room =>
                {
                    break Err(anyhow!("removed from {room}: {}", kick_text(reason, &message)));
                }
                Some(event) => {
                    if let Some(line) = render_event(&event) {
                        println!("{line}");
                    }
                }
                None => break Err(anyhow!("disconnected")),
            },
            _ = &mut ctrl_c => break Ok(()),
            stdin_ended = &mut sender, if !sender_done => {
                sender_done = true;
                // A panicked sender counts as the end of input.
                if stdin_ended.unwrap_or(true) {
                    break Ok(());
                }
                // Otherwise the connection closed: its event follows.
            }
        }
    };
    if outcome.is_ok() {
        println!("*** leaving {room}");
        if let Err(error) = client.leave(room).await {
            eprintln!("! could not leave {room}: {error}");
        }
    }
    sender.abort();
    client.close().await;
    outcome
}

/// Sends each line; `true` when stdin ended, `false` when the connection did.
async fn send_lines(client: Client, room: String, mut lines: mpsc::Receiver<String>) -> bool {
    while let Some(line) = lines.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        match client.send(&room, Kind::Chat, line).await {
            Ok(_) => {}
            Err(ClientError::Closed) => return false,
            Err(ClientError::Server(error)) => println!("! not sent: {}", refusal(&error)),
            Err(error) => println!("! not sent: {error}"),
        }
    }
    true
}

/// Lines typed on stdin. A plain thread, not tokio's stdin: a pending read
/// on that would hold up the runtime's shutdown until Enter is pressed.
fn read_stdin() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.blocking_send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// One line for an event, or `None` for those a human need not see.
fn render_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Message { message, .. } => render_message(message),
        Event::Dropped {
            normal, priority, ..
        } => {
            let mut text = String::new();
            if *normal > 0 {
                text = format!("… {normal} {} skipped", plural(*normal, "message"));
            }
            if *priority > 0 {
                let sep = if text.is_empty() { "… " } else { ", " };
                text.push_str(&format!(
                    "{sep}{priority} priority {} lost",
                    plural(*priority, "message")
                ));
            }
            text
        }
        Event::Reset { room } => {
            format!("*** {room} was rebuilt without its history: messages may be missing")
        }
        Event::Notified { .. } => return None,
        Event::Kicked {
            room: Some(room),
            reason,
            message,
            ..
        } => format!("*** removed from {room}: {}", kick_text(*reason, message)),
        Event::Kicked {
            room: None,
            reason,
            message,
            ..
        } => format!(
            "*** the server is closing the session: {}",
            kick_text(*reason, message)
        ),
        Event::Error {
            room: Some(room),
            error,
        } => format!("! {room}: {}", refusal(error)),
        Event::Error { room: None, error } => format!("! {}", refusal(error)),
        Event::Closed { reason } => format!("*** disconnected: {}", clean(&reason.to_string())),
    })
}

/// `[12:03:04] alice: hello`; `★` marks the PRIORITY lane. Times are UTC.
fn render_message(message: &ChatMessage) -> String {
    let time = clock(message.ts);
    let star = if message.lane == Lane::Priority as i32 {
        "★ "
    } else {
        ""
    };
    let sender = clean(&message.sender);
    let text = payload_text(&message.payload);
    match Kind::try_from(message.kind) {
        Ok(Kind::Chat | Kind::Notice) => format!("[{time}] {star}{sender}: {text}"),
        Ok(Kind::Like) => format!("[{time}] {star}{sender} sent a like"),
        Ok(Kind::Gift) if message.payload.is_empty() => {
            format!("[{time}] {star}{sender} sent a gift")
        }
        Ok(Kind::Gift) => format!("[{time}] {star}{sender} sent a gift: {text}"),
        _ => format!("[{time}] {star}{sender} [kind {}]: {text}", message.kind),
    }
}

/// Why the server refused, for a human: `rate limited; try again in 1.5 s`.
fn refusal(error: &v1::Error) -> String {
    let mut text = match error.code() {
        ErrorCode::RateLimited => "rate limited".to_owned(),
        ErrorCode::Muted => "you are muted".to_owned(),
        ErrorCode::Banned => "you are banned".to_owned(),
        ErrorCode::PayloadTooLarge => "message too long".to_owned(),
        ErrorCode::NotJoined => "not in the room".to_owned(),
        ErrorCode::Forbidden => "not allowed".to_owned(),
        ErrorCode::Overloaded => "server overloaded".to_owned(),
        _ => {
            let bare = v1::Error {
                message: String::new(),
                retry_after_ms: 0,
                ..error.clone()
            };
            describe(&bare)
        }
    };
    if !error.message.is_empty() {
        text.push_str(&format!(" ({})", clean(&error.message)));
    }
    if error.retry_after_ms > 0 {
        let secs = f64::from(error.retry_after_ms) / 1000.0;
        text.push_str(&format!("; try again in {secs:.1} s"));
    }
    text
}

fn kick_text(reason: KickReason, message: &str) -> String {
    let why = match reason {
        KickReason::Unspecified => "no reason given",
        KickReason::SlowConsumer => "too slow to keep up",
        KickReason::Banned => "banned",
        KickReason::Replaced => "replaced by a newer session on the same device",
        KickReason::HeartbeatTimeout => "heartbeat timeout",
        KickReason::RoomClosed => "room closed",
        KickReason::Shutdown => "server shutting down",
        KickReason::Protocol => "protocol violation",
    };
    if message.is_empty() {
        why.to_owned()
    } else {
        format!("{why} ({})", clean(message))
    }
}

/// The payload as text if it is UTF-8, else its size.
fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => clean(text),
        Err(_) => format!("<{} bytes>", payload.len()),
    }
}

/// `text` safe to print: line breaks and tabs become spaces, other control
/// characters (C0, DEL, C1: terminal escapes) and invisible bidirectional or
/// zero-width formatting characters become U+FFFD.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() || is_invisible_format(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// `HH:MM:SS` (UTC) of a room timestamp in microseconds.
fn clock(ts_micros: u64) -> String {
    let secs = ts_micros / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use clap::Parser;

    fn message(sender: &str, lane: Lane, kind: i32, payload: &[u8]) -> ChatMessage {
        ChatMessage {
            msg_id: 1,
            // 12:03:04 UTC on some day.
            ts: ((19_000 * 86_400 + 12 * 3600 + 3 * 60 + 4) * 1_000_000) + 123,
            normal_seq: 1,
            sender: sender.into(),
            lane: lane as i32,
            kind,
            payload: Bytes::copy_from_slice(payload),
            client_msg_id: 7,
        }
    }

    #[test]
    fn messages_render_one_line_each() {
        let chat = message("alice", Lane::Normal, Kind::Chat as i32, b"hello");
        assert_eq!(render_message(&chat), "[12:03:04] alice: hello");
        let notice = message(
            "system",
            Lane::Priority,
            Kind::Notice as i32,
            "stream starts in 5 min".as_bytes(),
        );
        assert_eq!(
            render_message(&notice),
            "[12:03:04] ★ system: stream starts in 5 min"
        );
        let like = message("bob", Lane::Normal, Kind::Like as i32, b"");
        assert_eq!(render_message(&like), "[12:03:04] bob sent a like");
        let gift = message("bob", Lane::Priority, Kind::Gift as i32, b"rocket");
        assert_eq!(
            render_message(&gift),
            "[12:03:04] ★ bob sent a gift: rocket"
        );
        let custom = message("app", Lane::Normal, 1042, b"{}");
        assert_eq!(render_message(&custom), "[12:03:04] app [kind 1042]: {}");
    }

    #[test]
    fn binary_payloads_print_their_size() {
        let blob = message("bob", Lane::Normal, Kind::Chat as i32, &[0xff, 0xfe, 0x00]);
        assert_eq!(render_message(&blob), "[12:03:04] bob: <3 bytes>");
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        let evil = "hi\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202e}txt.exe\r\nnext\u{7f}";
        let out = clean(evil);
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert!(!out.contains('\u{202e}'));
        assert_eq!(
            out,
            "hi\u{fffd}]0;pwned\u{fffd}\u{fffd}[2J\u{fffd}31m\u{fffd}txt.exe  next\u{fffd}"
        );
        let msg = message(
            "eve\u{1b}",
            Lane::Normal,
            Kind::Chat as i32,
            evil.as_bytes(),
        );
        assert!(!render_message(&msg).chars().any(|c| c.is_control()));
        assert_eq!(clean("café 你好 👋"), "café 你好 👋");
    }

    #[test]
    fn gaps_kicks_and_errors_are_spelled_out() {
        let room: std::sync::Arc<str> = "demo".into();
        let dropped = |normal, priority| Event::Dropped {
            room: room.clone(),
            normal,
            priority,
        };
        assert_eq!(
            render_event(&dropped(12, 0)).unwrap(),
            "… 12 messages skipped"
        );
        assert_eq!(render_event(&dropped(1, 0)).unwrap(), "… 1 message skipped");
        assert_eq!(
            render_event(&dropped(3, 1)).unwrap(),
            "… 3 messages skipped, 1 priority message lost"
        );
        assert_eq!(
            render_event(&dropped(0, 2)).unwrap(),
            "… 2 priority messages lost"
        );
        let kicked = Event::Kicked {
            room: Some(room.clone()),
            reason: KickReason::Banned,
            message: "spam\u{1b}[31m".into(),
            last_cursor: None,
        };
        assert_eq!(
            render_event(&kicked).unwrap(),
            "*** removed from demo: banned (spam\u{fffd}[31m)"
        );
        let limited = Event::Error {
            room: Some(room.clone()),
            error: v1::Error::new(ErrorCode::RateLimited, "slow down").retry_after(1500),
        };
        assert_eq!(
            render_event(&limited).unwrap(),
            "! demo: rate limited (slow down); try again in 1.5 s"
        );
        let internal = v1::Error::new(ErrorCode::Internal, "");
        assert_eq!(refusal(&internal), "internal");
        let notified = Event::Notified {
            room,
            latest: v1::Cursor::default(),
            inline: false,
        };
        assert_eq!(render_event(&notified), None);
    }

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        chat: ChatArgs,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let args = Wrapper::try_parse_from([
            "chat", "--room", "demo", "--user", "alice", "--role", "admin", "--role", "system",
        ])
        .unwrap()
        .chat;
        assert_eq!(server_url(&args).unwrap(), chatroom_client::DEFAULT_URL);
        assert_eq!(args.roles, [Role::Admin, Role::System]);
        assert_eq!(args.token_secret_file, default_secret_file());
        assert!(Wrapper::try_parse_from(["chat", "--room", "demo"]).is_err());
        let with_token =
            Wrapper::try_parse_from(["chat", "--room", "demo", "--token", "t"]).unwrap();
        assert_eq!(token(&with_token.chat).unwrap(), "t");
    }

    #[test]
    fn transport_and_server_agree_or_are_refused() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["chat", "--room", "demo", "--token", "t"];
            argv.extend_from_slice(extra);
            Wrapper::try_parse_from(argv).map(|w| w.chat)
        };
        let quic = parse(&["--transport", "quic"]).unwrap();
        assert_eq!(
            server_url(&quic).unwrap(),
            chatroom_client::DEFAULT_QUIC_URL
        );
        let named = parse(&["--server", "quic://127.0.0.1:9"]).unwrap();
        assert_eq!(server_url(&named).unwrap(), "quic://127.0.0.1:9");
        let mismatch = parse(&["--server", "ws://127.0.0.1:9/ws", "--transport", "quic"]).unwrap();
        let error = server_url(&mismatch).unwrap_err().to_string();
        assert!(error.contains("--transport says quic"), "{error}");
        let pinned = parse(&["--transport", "quic", "--fingerprint", &"ab".repeat(32)]).unwrap();
        assert_eq!(pinned.fingerprint, Some(Fingerprint([0xab; 32])));
        assert!(parse(&["--fingerprint", "nope"]).is_err());
        assert!(parse(&["--cert", "c.pem", "--fingerprint", &"ab".repeat(32)]).is_err());
    }

    #[test]
    fn minting_without_the_secret_file_says_what_to_do() {
        let args = Wrapper::try_parse_from([
            "chat",
            "--room",
            "demo",
            "--user",
            "alice",
            "--token-secret-file",
            "/nonexistent/chatroom/secret",
        ])
        .unwrap()
        .chat;
        let error = format!("{:#}", token(&args).unwrap_err());
        assert!(error.contains("--standalone"), "{error}");
    }
}
