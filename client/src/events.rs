//! What a connection tells the application: room messages, gaps, kicks and
//! the end of the session, in the order the server's frames produced them.
//!
//! The connection hands events over one frame's worth at a time (one channel
//! operation per frame, not per message); [`Events`] yields them one by one.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chatroom_proto::v1::{self, ChatMessage, Cursor, KickReason};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A room message, delivered once, in timestamp order per room.
    Message {
        /// The room it was posted in.
        room: Arc<str>,
        /// The message as the server stamped it.
        message: ChatMessage,
    },
    /// Messages this client will never get (evicted, or skipped to stay
    /// current); sent before the messages that follow the gap.
    Dropped {
        /// The room.
        room: Arc<str>,
        /// NORMAL-lane messages lost, by design of the lane.
        normal: u64,
        /// PRIORITY-lane messages lost (only if that ring itself overflowed).
        priority: u64,
    },
    /// The room's stream was rebuilt without its history: the cursor could
    /// not resume exactly, so messages may be missing before what follows.
    Reset {
        /// The room.
        room: Arc<str>,
    },
    /// A Notify frame arrived (reported with or without automatic pulls),
    /// ahead of the messages its delta carried.
    Notified {
        /// The room.
        room: Arc<str>,
        /// The room's newest position.
        latest: Cursor,
        /// Whether its inline delta was applied (no pull needed).
        inline: bool,
    },
    /// The server removed the session from a room, or is closing it.
    Kicked {
        /// The room, or `None` when the whole session is being closed.
        room: Option<Arc<str>>,
        /// Why.
        reason: KickReason,
        /// The server's explanation.
        message: String,
        /// The room's cursor when the kick came, to resume with after a rejoin.
        last_cursor: Option<Cursor>,
    },
    /// A server error no caller was waiting for: an automatic pull refused,
    /// or an error pushed with request id 0.
    Error {
        /// The room concerned, when known.
        room: Option<Arc<str>>,
        /// The server's error.
        error: v1::Error,
    },
    /// The connection ended; always the last event.
    Closed {
        /// Why it ended.
        reason: CloseReason,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// [`Client::close`](crate::Client::close) was called or every handle was dropped.
    #[error("closed by the client")]
    Local,
    /// The server sent a WebSocket close frame.
    #[error("closed by the server ({code}{}{reason})", if reason.is_empty() { "" } else { ": " })]
    Server {
        /// The close code (1005 when the frame had none).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The socket failed or ended without a closing handshake.
    #[error("connection lost: {0}")]
    Io(String),
    /// The server sent something outside the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Nothing came from the server for three heartbeat intervals.
    #[error("server silent for three heartbeat intervals")]
    ServerSilent,
}

/// Why [`Events`] gave no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing (or nothing matching) arrived in time.
    #[error("no event within {0:?}")]
    Timeout(Duration),
    /// The connection is gone and every event has been taken.
    #[error("event stream ended")]
    Ended,
}

/// The receiving end of a connection's events.
///
/// Bounded: the connection buffers at most `ClientConfig::event_capacity`
/// frames' worth of events. When the application falls behind, the
/// connection stops reading its socket until there is room again: nothing is
/// dropped here, the server sees a slow reader (and may kick it as a slow
/// consumer), and heartbeats still go out. Replies to requests come through
/// the same socket, so drain events on a task other than the one awaiting
/// `join`/`send`, or those calls may time out.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Vec<Event>>,
    batch: std::vec::IntoIter<Event>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<Vec<Event>>) -> Self {
        Self {
            rx,
            batch: Vec::new().into_iter(),
        }
    }

    /// The next event; `None` once [`Event::Closed`] has been taken.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.batch.next() {
                return Some(event);
            }
            // Cancel-safe: a batch is only taken out of the channel when this
            // future completes.
            self.batch = self.rx.recv().await?.into_iter();
        }
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.batch.next() {
                return Some(event);
            }
            self.batch = self.rx.try_recv().ok()?.into_iter();
        }
    }

    /// The next event, waiting at most `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Event, RecvError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(RecvError::Ended),
            Err(_) => Err(RecvError::Timeout(timeout)),
        }
    }

    /// The first event for which `wanted` is true within `timeout`; the
    /// events before it are discarded.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Event, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Some(event)) if wanted(&event) => return Ok(event),
                Ok(Some(_)) => {}
                Ok(None) => return Err(RecvError::Ended),
                Err(_) => return Err(RecvError::Timeout(timeout)),
            }
        }
    }

    /// The next message in `room` within `timeout`, discarding other events.
    pub async fn next_message(
        &mut self,
        room: &str,
        timeout: Duration,
    ) -> Result<ChatMessage, RecvError> {
        let event = self
            .wait_for(
                timeout,
                |e| matches!(e, Event::Message { room: r, .. } if &**r == room),
            )
            .await?;
        match event {
            Event::Message { message, .. } => Ok(message),
            // `wait_for` only returns events the predicate accepted.
            _ => unreachable!("wait_for returned an event it was not asked for"),
        }
    }

    /// Every event that is ready now.
    pub fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.batch.next() {
                return Poll::Ready(Some(event));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.batch = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(room: &str) -> Event {
        Event::Reset { room: room.into() }
    }

    #[tokio::test]
    async fn yields_batches_one_event_at_a_time() {
        let (tx, rx) = mpsc::channel(4);
        let mut events = Events::new(rx);
        tx.send(vec![reset("a"), reset("b")]).await.unwrap();
        tx.send(vec![]).await.unwrap();
        tx.send(vec![reset("c")]).await.unwrap();
        assert_eq!(events.recv().await, Some(reset("a")));
        assert_eq!(events.try_recv(), Some(reset("b")));
        assert_eq!(events.drain(), vec![reset("c")]);
        assert_eq!(events.try_recv(), None);
        drop(tx);
        assert_eq!(events.recv().await, None);
        assert_eq!(
            events.recv_timeout(Duration::from_millis(1)).await,
            Err(RecvError::Ended)
        );
    }

    #[tokio::test]
    async fn wait_for_skips_and_times_out() {
        let (tx, rx) = mpsc::channel(4);
        let mut events = Events::new(rx);
        tx.send(vec![reset("a"), reset("b")]).await.unwrap();
        let got = events
            .wait_for(Duration::from_secs(5), |e| *e == reset("b"))
            .await;
        assert_eq!(got, Ok(reset("b")));
        let timeout = Duration::from_millis(20);
        assert_eq!(
            events.next_message("a", timeout).await,
            Err(RecvError::Timeout(timeout))
        );
    }
}
