//! What the chat client prints: one line per event, with everything the
//! server sent made safe for a terminal first ([`clean`]).

use chatroom_client::Event;
use chatroom_client::error::describe;
use chatroom_proto::v1::{self, ChatMessage, ErrorCode, KickReason, Kind, Lane};

/// One line for an event, or `None` for those a human need not see.
pub(crate) fn render_event(event: &Event) -> Option<String> {
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
/// A sender the app's backend named shows as `Alice [vip] (alice)`.
fn render_message(message: &ChatMessage) -> String {
    let time = clock(message.ts);
    let star = if message.lane == Lane::Priority as i32 {
        "★ "
    } else {
        ""
    };
    let sender = sender_text(message);
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

/// The sender's display name and badges when their token gave some, with
/// the user id (which is what identifies them); else the user id.
fn sender_text(message: &ChatMessage) -> String {
    let id = clean(&message.sender);
    let Some(info) = message
        .sender_info
        .as_ref()
        .filter(|info| !info.name.is_empty())
    else {
        return id;
    };
    let badges: String = info
        .badges
        .iter()
        .map(|badge| format!(" [{}]", clean(badge)))
        .collect();
    format!("{}{badges} ({id})", clean(&info.name))
}

/// Why the server refused, for a human: `rate limited; try again in 1.5 s`.
pub(crate) fn refusal(error: &v1::Error) -> String {
    let mut text = match error.code() {
        ErrorCode::RateLimited => "rate limited".to_owned(),
        ErrorCode::Muted => "you are muted".to_owned(),
        ErrorCode::Banned => "you are banned".to_owned(),
        ErrorCode::PayloadTooLarge => "message too long".to_owned(),
        ErrorCode::NotJoined => "not in the room".to_owned(),
        ErrorCode::Forbidden => "not allowed".to_owned(),
        ErrorCode::Overloaded => "server overloaded".to_owned(),
        ErrorCode::ContentRejected => "message refused by the room's moderation".to_owned(),
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

pub(crate) fn kick_text(reason: KickReason, message: &str) -> String {
    let why = match reason {
        KickReason::Unspecified => "no reason given",
        KickReason::SlowConsumer => "too slow to keep up",
        KickReason::Banned => "banned",
        KickReason::Replaced => "replaced by a newer session on the same device",
        KickReason::HeartbeatTimeout => "heartbeat timeout",
        KickReason::RoomClosed => "room closed",
        KickReason::Shutdown => "server shutting down",
        KickReason::Protocol => "protocol violation",
        KickReason::TokenExpired => "token expired",
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
pub(crate) fn clean(text: &str) -> String {
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
            sender_info: None,
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
}
