//! The reference broker's side of a run: the same users against NATS, one
//! subject per room, each user a subscriber connection, senders publishing
//! stamped payloads.
//!
//! NATS acknowledges nothing and has no lanes: every publish counts as
//! accepted, and a flag byte after the stamp marks the notices chatroom
//! would put in its PRIORITY lane, so both sides are counted alike. A
//! subscriber is drained when it has received as many messages as were
//! published in its room.

use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bot::{self, Phase, Role, Shared};
use super::wire;

/// The flag byte after the stamp: 1 marks a notice.
const NOTICE_FLAG: usize = 8;

/// Plays one user against NATS until the worker's process ends.
pub(crate) async fn run(
    shared: Rc<Shared>,
    user: u64,
    room_index: usize,
    role: Role,
    start_after: Duration,
) {
    let started = Subscriber::start(&shared, user, room_index, role);
    let Some(mut sub) = bot::arrive(&shared, start_after, started).await else {
        return;
    };
    shared.rooms.borrow_mut()[room_index].receivers += 1;
    // NATS has no cursor to resume from: a lost subscriber stays lost.
    if let Err(reason) = sub.live(&shared).await {
        shared.lose(&reason);
        shared.fail(&reason);
    }
}

struct Subscriber {
    stream: TcpStream,
    partial: Vec<u8>,
    room_index: usize,
    subject: String,
    role: Role,
    /// Messages received since subscribing.
    received: u64,
    done: bool,
}

impl Subscriber {
    async fn start(
        shared: &Shared,
        user: u64,
        room_index: usize,
        role: Role,
    ) -> Result<Self, String> {
        let plan = &shared.plan;
        let target = &plan.targets[(user as usize) % plan.targets.len()];
        let addr = target
            .strip_prefix("nats://")
            .ok_or_else(|| format!("not a nats:// url: {target}"))?;
        let source = plan.source_ips[(user as usize) % plan.source_ips.len()];
        let mut stream = bot::connect_from(addr, source).await?;
        let subject = format!("room.{}", plan.rooms[room_index].name);
        let mut partial = Vec::new();
        read_line_into(&mut stream, &mut partial).await?;
        if !partial.starts_with(b"INFO") {
            return Err("no INFO from the server".into());
        }
        partial.clear();
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"swarm\"}}\r\nSUB {subject} 1\r\nPING\r\n"
        );
        stream
            .write_all(hello.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        // PONG means the subscription is in place.
        loop {
            read_line_into(&mut stream, &mut partial).await?;
            let line = std::mem::take(&mut partial);
            if line.starts_with(b"PONG") {
                break;
            }
            if line.starts_with(b"-ERR") {
                return Err(format!(
                    "nats refused: {}",
                    String::from_utf8_lossy(&line).trim()
                ));
            }
        }
        Ok(Self {
            stream,
            partial: Vec::new(),
            room_index,
            subject,
            role,
            received: 0,
            done: false,
        })
    }

    async fn live(&mut self, shared: &Shared) -> Result<(), String> {
        let mut phase = shared.phase.clone();
        let send_every = match self.role {
            Role::Sender(every) | Role::Notifier(every) => Some(every),
            Role::Receiver => None,
        };
        let mut send = tokio::time::interval(send_every.unwrap_or(Duration::from_secs(3600)));
        send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let running = *phase.borrow() == Phase::Running;
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.check_drained(shared);
                }
                _ = send.tick(), if running && send_every.is_some() => self.publish(shared).await?,
                ready = self.stream.readable() => {
                    ready.map_err(|e| e.to_string())?;
                    self.receive(shared).await?;
                    self.check_drained(shared);
                }
            }
        }
    }

    async fn publish(&mut self, shared: &Shared) -> Result<(), String> {
        if *shared.phase.borrow() != Phase::Running {
            return Ok(());
        }
        let notice = matches!(self.role, Role::Notifier(_));
        let mut payload = wire::stamped_payload(
            bot::unix_micros(),
            shared.plan.payload_bytes.max(NOTICE_FLAG + 1),
        );
        payload[NOTICE_FLAG] = u8::from(notice);
        let mut frame = format!("PUB {} {}\r\n", self.subject, payload.len()).into_bytes();
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(b"\r\n");
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut rooms = shared.rooms.borrow_mut();
        let room = &mut rooms[self.room_index];
        room.accepted[usize::from(notice)] += 1;
        room.last_msg_id += 1;
        Ok(())
    }

    fn check_drained(&mut self, shared: &Shared) {
        if self.done {
            return;
        }
        if let Phase::Draining(targets) = &*shared.phase.borrow() {
            let name = &shared.plan.rooms[self.room_index].name;
            if self.received >= targets.get(name).copied().unwrap_or(0) {
                self.done = true;
                shared.done.set(shared.done.get() + 1);
                shared.milestone.notify_one();
            }
        }
    }

    /// Reads what the socket has and handles every complete protocol item.
    async fn receive(&mut self, shared: &Shared) -> Result<(), String> {
        let mut pong = false;
        {
            let mut scratch = shared.scratch.borrow_mut();
            let (filled, eof) = bot::read_after(&self.stream, &mut scratch, &self.partial)?;
            let now = bot::unix_micros();
            let mut delivered = [0u64; 2];
            let mut pos = 0;
            while let Some((item, used)) = next_item(&scratch[pos..filled])? {
                match item {
                    Item::Msg(payload) => {
                        let lane = usize::from(payload.get(NOTICE_FLAG) == Some(&1));
                        delivered[lane] += 1;
                        if let Some(stamp) = wire::read_stamp(payload) {
                            let micros = now.saturating_sub(stamp);
                            shared.second_latency.borrow_mut().record(micros);
                            shared.latency.borrow_mut().record(micros);
                        }
                    }
                    Item::Ping => pong = true,
                    Item::Error(message) => return Err(format!("nats: {message}")),
                    Item::Other => {}
                }
                pos += used;
            }
            bot::keep_rest(&mut self.partial, &scratch[pos..filled]);
            let mut rooms = shared.rooms.borrow_mut();
            let room = &mut rooms[self.room_index];
            room.delivered[0] += delivered[0];
            room.delivered[1] += delivered[1];
            self.received += delivered[0] + delivered[1];
            shared
                .second_delivered
                .set(shared.second_delivered.get() + delivered[0] + delivered[1]);
            if eof {
                return Err("connection closed".into());
            }
        }
        if pong {
            self.stream
                .write_all(b"PONG\r\n")
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        Ok(())
    }
}

/// One item of the NATS protocol from the server.
#[derive(Debug, PartialEq, Eq)]
enum Item<'a> {
    /// A delivered message's payload.
    Msg(&'a [u8]),
    Ping,
    Error(String),
    /// INFO, PONG, +OK.
    Other,
}

/// The first complete item at the start of `buf` and the bytes it used.
fn next_item(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[..end];
    let after_line = end + 2;
    if let Some(rest) = line.strip_prefix(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let size: usize = std::str::from_utf8(rest)
            .ok()
            .and_then(|text| text.split_ascii_whitespace().last())
            .and_then(|size| size.parse().ok())
            .ok_or_else(|| "malformed MSG line".to_owned())?;
        // The scratch buffer holds two of these, so a message always fits.
        if size > wire::MAX_SERVER_FRAME {
            return Err(format!(
                "a {size}-byte MSG is larger than any payload we publish"
            ));
        }
        let total = after_line + size + 2;
        if buf.len() < total {
            return Ok(None);
        }
        return Ok(Some((
            Item::Msg(&buf[after_line..after_line + size]),
            total,
        )));
    }
    let item = if line == b"PING" {
        Item::Ping
    } else if let Some(message) = line.strip_prefix(b"-ERR") {
        Item::Error(String::from_utf8_lossy(message).trim().to_owned())
    } else {
        Item::Other
    };
    Ok(Some((item, after_line)))
}

async fn read_line_into(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    while !buf.ends_with(b"\r\n") {
        if buf.len() > 64 * 1024 {
            return Err("oversized line from the server".into());
        }
        let mut byte = [0u8; 1];
        if stream
            .read(&mut byte)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("closed by the server".into());
        }
        buf.push(byte[0]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_messages_pings_and_errors() {
        let wire = b"INFO {}\r\nMSG room.giant 1 5\r\nhello\r\nPING\r\nMSG room.giant 1 reply 2\r\nhi\r\n-ERR 'Slow Consumer'\r\nMSG room.giant 1 9\r\npart";
        let mut pos = 0;
        let mut items = Vec::new();
        while let Some((item, used)) = next_item(&wire[pos..]).unwrap() {
            items.push(format!("{item:?}"));
            pos += used;
        }
        assert_eq!(
            items,
            [
                "Other",
                "Msg([104, 101, 108, 108, 111])",
                "Ping",
                "Msg([104, 105])",
                "Error(\"'Slow Consumer'\")",
            ]
        );
        assert_eq!(
            &wire[pos..],
            b"MSG room.giant 1 9\r\npart",
            "an incomplete message waits"
        );
        assert!(next_item(b"MSG room.giant 1 x\r\n").is_err());
        assert!(
            next_item(b"MSG room.giant 1 99999999999\r\n").is_err(),
            "bounded"
        );
    }
}
