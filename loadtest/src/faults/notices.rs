//! Admin notices posted through every room service's admin API while the
//! faults happen, into the harness's rooms: the admin path is a way in of
//! its own (a room service answers for rooms it does not own by passing
//! the request on), and a stale owner must not stamp through it either.
//! Every notice answered 201 is owed to every receiver of its room, like a
//! send the harness made; the history checker catches any `msg_id` given
//! to two messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often a notice is posted (through each room service in turn).
const EVERY: Duration = Duration::from_millis(200);
/// How long one request may take before its outcome counts as unknown.
const WITHIN: Duration = Duration::from_secs(3);

/// What became of one notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201: stamped.
    Posted,
    /// Refused before anything was stamped, by error code (or `unreachable`
    /// when nothing answered the connect).
    Refused(String),
    /// Perhaps stamped, perhaps not: the answer was lost, or the room's
    /// owner did not answer the room service it was passed to.
    Unknown(String),
}

/// Every notice's outcome, in order.
#[derive(Debug, Default)]
pub struct NoticeLog {
    /// When, into which room, and what became of it.
    pub entries: Vec<(Instant, String, Outcome)>,
}

impl NoticeLog {
    /// Notices posted (201), per room.
    pub fn posted(&self) -> BTreeMap<String, u64> {
        self.count(|outcome| matches!(outcome, Outcome::Posted))
    }

    /// Notices whose outcome is unknown, per room.
    pub fn unknown(&self) -> BTreeMap<String, u64> {
        self.count(|outcome| matches!(outcome, Outcome::Unknown(_)))
    }

    fn count(&self, which: impl Fn(&Outcome) -> bool) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for (_, room, outcome) in &self.entries {
            if which(outcome) {
                *counts.entry(room.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Refusals and unknowns between `from` and `to`: how many, by code,
    /// and the seconds from the first to the last of them.
    pub fn refused_between(&self, from: Instant, to: Instant) -> (BTreeMap<String, u64>, f64) {
        let mut codes = BTreeMap::new();
        let (mut first, mut last) = (None, None);
        for (at, _, outcome) in &self.entries {
            let code = match outcome {
                Outcome::Posted => continue,
                Outcome::Refused(code) | Outcome::Unknown(code) => code,
            };
            if *at < from || *at > to {
                continue;
            }
            *codes.entry(code.clone()).or_default() += 1;
            first.get_or_insert(*at);
            last = Some(*at);
        }
        let span = first
            .zip(last)
            .map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        (codes, span)
    }
}

/// The notices' task; stopping it returns the log.
#[derive(Debug)]
pub struct Notices {
    log: Arc<Mutex<NoticeLog>>,
    task: JoinHandle<()>,
}

impl Notices {
    /// Posts a notice every [`EVERY`] through each of `admins` (room
    /// services' HTTP addresses) in turn, into each of `rooms` in turn.
    pub fn start(admins: Vec<String>, token: String, rooms: Vec<String>) -> Self {
        let log = Arc::new(Mutex::new(NoticeLog::default()));
        let entries = Arc::clone(&log);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            for n in 0usize.. {
                tick.tick().await;
                // Every room through every room service.
                let admin = &admins[n % admins.len()];
                let room = &rooms[(n / admins.len()) % rooms.len()];
                let text = format!("admin notice {n} via {admin}");
                let outcome = post(admin, &token, room, &text).await;
                if let Ok(mut log) = entries.lock() {
                    log.entries.push((Instant::now(), room.clone(), outcome));
                }
            }
        });
        Self { log, task }
    }

    /// Stops posting; what happened.
    pub async fn stop(self) -> NoticeLog {
        self.task.abort();
        // Once the task has ended, nothing is added after the log is taken.
        let _ = self.task.await;
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One notice, by hand-written HTTP/1.1 (the admin API's client belongs to
/// the room service, which this suite drives only as a process).
async fn post(admin: &str, token: &str, room: &str, text: &str) -> Outcome {
    let Ok(Ok(mut stream)) = tokio::time::timeout(WITHIN, TcpStream::connect(admin)).await else {
        return Outcome::Refused("unreachable".into());
    };
    let body = serde_json::json!({ "text": text }).to_string();
    let request = format!(
        "POST /admin/v1/rooms/{room}/notices HTTP/1.1\r\nHost: {admin}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(WITHIN, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => return Outcome::Unknown("connection lost".into()),
        Err(_) => return Outcome::Unknown("no answer".into()),
    };
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0);
    let code = answer
        .split_once("\"code\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| format!("http {status}"), |(code, _)| code.to_owned());
    match status {
        201 => Outcome::Posted,
        // The owner was asked and did not answer: it may have stamped.
        502 => Outcome::Unknown(code),
        _ => Outcome::Refused(code),
    }
}
