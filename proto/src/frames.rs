//! Constructors and small predicates on the generated types, so every service
//! builds errors, replies and kinds the same way.

use crate::cluster::v1::{ToRoomSvc, to_room_svc};
use crate::v1::{self, ErrorCode, Kind, server_frame};

impl ErrorCode {
    /// The largest code this build knows: counters keep one slot per code
    /// up to it.
    pub const LAST: Self = Self::ContentRejected;
}

impl v1::Error {
    /// An error with a human message and no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// Adds when the client may try again.
    pub fn retry_after(mut self, ms: u32) -> Self {
        self.retry_after_ms = ms;
        self
    }
}

impl v1::ServerFrame {
    /// A frame answering `request_id`.
    pub fn reply(request_id: u64, body: server_frame::Body) -> Self {
        Self {
            request_id,
            body: Some(body),
        }
    }

    /// An error answering `request_id` (0 when it answers no request).
    pub fn error(request_id: u64, error: v1::Error) -> Self {
        Self::reply(request_id, server_frame::Body::Error(error))
    }
}

impl Kind {
    /// Whether `kind` is a named kind or in the application range.
    pub fn is_allowed(kind: i32) -> bool {
        kind >= Kind::CustomMin as i32 || (Kind::Chat as i32..=Kind::Notice as i32).contains(&kind)
    }
}

impl ToRoomSvc {
    /// The room the frame is about: every body but a link's Hello names one.
    pub fn room_id(&self) -> Option<&str> {
        use to_room_svc::Body;
        Some(match self.body.as_ref()? {
            Body::Subscribe(sub) => &sub.room_id,
            Body::Unsubscribe(unsub) => &unsub.room_id,
            Body::Membership(membership) => &membership.room_id,
            Body::Send(send) => &send.room_id,
            Body::Report(report) => &report.room_id,
            Body::Hello(_) => return None,
        })
    }
}

impl v1::Cursor {
    /// The position before the first message of `epoch`.
    pub fn start(epoch: u64) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
    }

    /// The position just after `msg`.
    pub fn after(epoch: u64, msg: &v1::ChatMessage) -> Self {
        Self {
            epoch,
            ts: msg.ts,
            msg_id: msg.msg_id,
            normal_seq: msg.normal_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_named_ones_or_custom() {
        for kind in [0, 1, 2, 3, 1000, 1001, i32::MAX] {
            assert!(Kind::is_allowed(kind), "{kind}");
        }
        for kind in [-1, 4, 999, i32::MIN] {
            assert!(!Kind::is_allowed(kind), "{kind}");
        }
    }
}
