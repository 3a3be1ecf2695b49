//! What a worker process is asked to do, and what it and the coordinator
//! say to each other: JSON lines, the plan first on the worker's stdin, then
//! commands; events on its stdout.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use chatroom_cluster::quic::Trust;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::stats::{Latency, Tally};

/// A room of the scenario: its users are the contiguous ids
/// `first_user .. first_user + users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRoom {
    /// Room id.
    pub name: String,
    /// Its first user id.
    pub first_user: u64,
    /// How many users it has.
    pub users: u64,
    /// The first `senders` of its users send.
    pub senders: u64,
    /// Messages per second the senders send together.
    pub rate: f64,
    /// A system notice (PRIORITY) this often, ms; 0 for none. A `system`
    /// user of the room sends them.
    pub notice_every_ms: u64,
}

/// Which client plays the users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// The harness's lean client: frames scanned in place, for scale.
    #[default]
    Swarm,
    /// The Rust client library, as an application uses it: every frame
    /// decoded; far more CPU per message, for checking the two agree.
    Library,
}

/// What the target speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// chatroom, over WebSocket or QUIC.
    #[default]
    Chatroom,
    /// NATS, the reference broker: one subject per room.
    Nats,
}

/// A worker's share of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    /// Index of this worker.
    pub worker: u32,
    /// What the target speaks.
    pub protocol: Protocol,
    /// Which client plays chatroom users.
    pub client: ClientKind,
    /// URLs to connect to (their scheme says the transport); bot `i` tries
    /// `targets[i % len]` and follows redirects.
    pub targets: Vec<String>,
    /// QUIC: the server certificate file to trust.
    #[serde(default)]
    pub quic_cert: Option<PathBuf>,
    /// QUIC: or the server certificate's SHA-256 fingerprint.
    #[serde(default)]
    pub quic_fingerprint: Option<String>,
    /// Local addresses to connect from, round-robin.
    pub source_ips: Vec<Ipv4Addr>,
    /// The HS256 secret to mint the users' tokens with.
    pub token_secret: String,
    /// Every room of the scenario.
    pub rooms: Vec<PlanRoom>,
    /// The users this worker plays: `first_user .. first_user + users`.
    pub first_user: u64,
    /// How many.
    pub users: u64,
    /// New connections per second this worker opens at most.
    pub connect_per_s: u32,
    /// Bytes per message payload (at least 8: the send stamp).
    pub payload_bytes: usize,
    /// Users that drop their connection and resume by cursor, as a share.
    pub reconnect_fraction: f64,
    /// How often each of those drops, ms (0: never).
    pub reconnect_every_ms: u64,
    /// Join everyone only after `go` (join-storm measures joins alone).
    pub join_on_go: bool,
    /// Which of its users' roles this worker plays.
    pub plays: Plays,
}

/// Which roles a worker plays among its users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plays {
    /// Everyone.
    #[default]
    All,
    /// Only the senders and notice senders (a process of their own, so
    /// the receive load elsewhere cannot slow the offered rate).
    Senders,
    /// Everyone but them.
    Receivers,
}

impl WorkerPlan {
    /// How QUIC users trust the server, if the plan says.
    pub fn trust(&self) -> Result<Option<Trust>, String> {
        if let Some(file) = &self.quic_cert {
            return Ok(Some(Trust::CertFile(file.clone())));
        }
        self.quic_fingerprint
            .as_deref()
            .map(|pin| pin.parse().map(Trust::Fingerprint))
            .transpose()
            .map_err(|e| e.to_string())
    }

    /// The room of `user`.
    pub fn room_of(&self, user: u64) -> Option<&PlanRoom> {
        let index = self
            .rooms
            .partition_point(|r| r.first_user + r.users <= user);
        self.rooms.get(index).filter(|r| user >= r.first_user)
    }
}

/// Commands from the coordinator, one per line on the worker's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Start the measured phase: senders send (and, with `join_on_go`,
    /// everyone joins).
    Go,
    /// Senders stop; report what was accepted.
    StopSending,
    /// Receive until every room's newest message (by msg_id; for NATS, a
    /// count of messages) has arrived, at most `patience_ms`; then report.
    Drain {
        targets: BTreeMap<String, u64>,
        patience_ms: u64,
    },
}

/// Events from a worker, one per line on its stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Every user is connected and joined (or failed to).
    Ready {
        connected: u64,
        failed: u64,
        /// From the first connect to the last join.
        connect_s: f64,
        /// Why connections failed, by reason, when some did.
        failures: BTreeMap<String, u64>,
    },
    /// One second of the measured phase.
    Second {
        t: u32,
        delivered: u64,
        /// Joins acknowledged in that second.
        joined: u64,
        latency: Latency,
    },
    /// Senders stopped: what the rooms accepted from this worker.
    Sent { tally: Tally },
    /// Everything: receivers' counts added to the senders'.
    Done {
        tally: Tally,
        latency: Latency,
        /// Receivers that did not reach their room's newest message in time.
        behind: u64,
        /// Connections that ended before the end (kicked, reset), by why.
        lost_connections: BTreeMap<String, u64>,
        /// Of those, how many came back and resumed by cursor.
        resumed: u64,
        /// Seconds from `go` to this worker's last JoinAck.
        last_join_s: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_map_to_their_rooms() {
        let room = |name: &str, first_user, users| PlanRoom {
            name: name.into(),
            first_user,
            users,
            senders: 1,
            rate: 1.0,
            notice_every_ms: 0,
        };
        let plan = WorkerPlan {
            worker: 0,
            protocol: Protocol::Chatroom,
            client: ClientKind::Swarm,
            targets: Vec::new(),
            quic_cert: None,
            quic_fingerprint: Some("ab".repeat(32)),
            source_ips: Vec::new(),
            token_secret: String::new(),
            rooms: vec![room("a", 0, 5), room("b", 5, 1), room("c", 6, 10)],
            first_user: 0,
            users: 16,
            connect_per_s: 1,
            payload_bytes: 8,
            reconnect_fraction: 0.0,
            reconnect_every_ms: 0,
            join_on_go: false,
            plays: Plays::All,
        };
        let names: Vec<&str> = (0..16)
            .map(|u| plan.room_of(u).unwrap().name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "a", "a", "a", "a", "a", "b", "c", "c", "c", "c", "c", "c", "c", "c", "c", "c"
            ]
        );
        assert!(plan.room_of(16).is_none());
        let pinned = plan.trust().unwrap();
        assert!(matches!(pinned, Some(Trust::Fingerprint(pin)) if pin.0 == [0xab; 32]));
        let bad = WorkerPlan {
            quic_fingerprint: Some("not hex".into()),
            ..plan
        };
        assert!(bad.trust().is_err());
    }

    #[test]
    fn commands_and_events_are_json_lines() {
        let drain = Command::Drain {
            targets: BTreeMap::from([("giant".to_owned(), 42)]),
            patience_ms: 5_000,
        };
        let line = serde_json::to_string(&drain).unwrap();
        assert_eq!(
            line,
            r#"{"cmd":"drain","targets":{"giant":42},"patience_ms":5000}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), drain);
        let second = Event::Second {
            t: 3,
            delivered: 10,
            joined: 0,
            latency: Latency::default(),
        };
        let line = serde_json::to_string(&second).unwrap();
        assert!(line.starts_with(r#"{"event":"second","t":3"#), "{line}");
        assert!(matches!(
            serde_json::from_str::<Event>(&line).unwrap(),
            Event::Second { t: 3, .. }
        ));
    }
}
