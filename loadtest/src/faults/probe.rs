//! End-to-end probes: is the service up for users? A round posts one
//! message in each probe room and waits until a member on every msg-svc has
//! it. Probes have rooms of their own, so the harness's accounting in its
//! rooms is untouched.

use std::collections::BTreeSet;
use std::time::Duration;

use chatroom_client::{Client, ClientConfig, Event, Events, JoinOptions};
use chatroom_cluster::auth::{Roles, TokenKey};
use chatroom_cluster::placement;
use chatroom_proto::v1::Kind;
use tokio::time::Instant;

/// How long connecting a probe may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(3);
/// How long a send's ack and its deliveries may take.
const ROUND_WITHIN: Duration = Duration::from_secs(2);
/// Candidate users tried when looking for one that lands on each msg-svc.
const CANDIDATES: u32 = 256;

/// One probe user's connection, rebuilt after any failure.
struct Member {
    user: String,
    /// The msg-svc it belongs on, for messages.
    home: String,
    link: Option<(Client, Events)>,
}

/// A sender and a member on each msg-svc, in the probe rooms.
pub struct Probe {
    urls: Vec<String>,
    key: TokenKey,
    rooms: Vec<String>,
    sender: Member,
    receivers: Vec<Member>,
    round: u64,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("rooms", &self.rooms)
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A receiver on each msg-svc (`homes`: node id and client URL, every
    /// msg-svc of the whole cluster) and a sender, in `rooms`; clients
    /// enter through any of `urls` and follow redirects home.
    pub fn new(
        urls: Vec<String>,
        homes: &[(String, String)],
        key: TokenKey,
        rooms: Vec<String>,
    ) -> Result<Self, String> {
        let ids: Vec<&str> = homes.iter().map(|(id, _)| id.as_str()).collect();
        let mut receivers = Vec::new();
        for (id, url) in homes {
            let user = (0..CANDIDATES)
                .map(|n| format!("probe-r{n}"))
                .find(|user| placement::owner(user, &ids) == Some(&id.as_str()))
                .ok_or_else(|| format!("no probe user among {CANDIDATES} lands on {id}"))?;
            receivers.push(Member {
                user,
                home: url.clone(),
                link: None,
            });
        }
        let sender = Member {
            user: "probe-sender".into(),
            home: String::new(),
            link: None,
        };
        Ok(Self {
            urls,
            key,
            rooms,
            sender,
            receivers,
            round: 0,
        })
    }

    /// One round: a message in every probe room, seen by every receiver.
    /// A member whose connection failed is reconnected on the next round.
    pub async fn round(&mut self) -> Result<(), String> {
        self.round += 1;
        let payload = format!("probe round {}", self.round);
        for member in std::iter::once(&mut self.sender).chain(&mut self.receivers) {
            if member.link.is_none() {
                member.link = Some(join(&self.urls, &self.key, &member.user, &self.rooms).await?);
            }
        }
        let deadline = Instant::now() + ROUND_WITHIN;
        let mut wanted: BTreeSet<(String, u64)> = BTreeSet::new();
        let (sender, _) = self.sender.link.as_ref().expect("connected just above");
        for room in &self.rooms {
            match tokio::time::timeout_at(deadline, sender.send(room, Kind::Chat, payload.clone()))
                .await
            {
                Ok(Ok(ack)) => {
                    wanted.insert((room.clone(), ack.msg_id));
                }
                Ok(Err(error)) => {
                    self.sender.link = None;
                    return Err(format!("probe send in {room}: {error}"));
                }
                Err(_) => {
                    self.sender.link = None;
                    return Err(format!("probe send in {room}: no ack in {ROUND_WITHIN:?}"));
                }
            }
        }
        for receiver in &mut self.receivers {
            let (_, events) = receiver.link.as_mut().expect("connected just above");
            let mut missing = wanted.clone();
            while !missing.is_empty() {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(Event::Message { room, message })) => {
                        missing.remove(&(room.to_string(), message.msg_id));
                    }
                    Ok(Some(Event::Closed { reason })) => {
                        receiver.link = None;
                        return Err(format!("probe {} closed: {reason}", receiver.user));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        receiver.link = None;
                        return Err(format!("probe {} ended", receiver.user));
                    }
                    Err(_) => {
                        receiver.link = None;
                        return Err(format!(
                            "probe {} on {} missed {} of {} messages",
                            receiver.user,
                            receiver.home,
                            missing.len(),
                            wanted.len()
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Connects `user` through the first of `urls` that answers, following
/// redirects to the user's msg-svc.
async fn connect(urls: &[String], key: &TokenKey, user: &str) -> Result<(Client, Events), String> {
    let token = key
        .mint(user, Roles::default(), Duration::from_secs(24 * 3600))
        .map_err(|e| format!("probe token: {e}"))?;
    let mut last = String::from("no msg-svc url");
    for url in urls {
        let mut config = ClientConfig::new(url.clone(), token.clone());
        config.connect_timeout = CONNECT_WITHIN;
        config.request_timeout = ROUND_WITHIN;
        match Client::connect(config).await {
            Ok(connected) => return Ok(connected),
            Err(error) => last = format!("probe {user} via {url}: {error}"),
        }
    }
    Err(last)
}

async fn join(
    urls: &[String],
    key: &TokenKey,
    user: &str,
    rooms: &[String],
) -> Result<(Client, Events), String> {
    let (client, events) = connect(urls, key, user).await?;
    for room in rooms {
        client
            .join(room, JoinOptions::default())
            .await
            .map_err(|e| format!("probe {user} joining {room}: {e}"))?;
    }
    Ok((client, events))
}
