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
//! Everything the server sends is printed through [`render::clean`], so no
//! message can move the cursor, recolour or retitle the terminal.
//!
//! - this file: the program, the session loop, stdin;
//! - [`args`]: the flags, the token and the server address they make;
//! - [`render`]: what is printed for each event.

// The example's root is this file, so its modules are found by path.
#[path = "chat/args.rs"]
mod args;
#[path = "chat/render.rs"]
mod render;

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use chatroom_client::{Client, ClientConfig, ClientError, Event, JoinOptions, Trust};
use chatroom_cluster::telemetry::{self, LogArgs};
use chatroom_proto::v1::Kind;
use clap::Parser;
use tokio::sync::mpsc;

use args::{ChatArgs, server_url, token};
use render::{clean, kick_text, refusal, render_event};

/// Exit status for a configuration that cannot work (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

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
