//! What a room has done since its state was created: counters kept on the hot
//! path as plain integers, and the snapshot the admin API serves.

use std::collections::BTreeMap;

use chatroom_proto::v1::{Cursor, ErrorCode, Lane};
use serde::ser::{SerializeStruct, Serializer};

/// One slot per `ErrorCode` value.
const CODES: usize = ErrorCode::Internal as usize + 1;

/// Running counters of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) accepted_normal: u64,
    pub(crate) accepted_priority: u64,
    pub(crate) duplicates: u64,
    rejected: [u64; CODES],
    pub(crate) broadcast_frames: u64,
    pub(crate) broadcast_messages: u64,
}

impl Counters {
    pub(crate) fn accepted(&mut self, lane: Lane) {
        match lane {
            Lane::Normal => self.accepted_normal += 1,
            Lane::Priority => self.accepted_priority += 1,
        }
    }

    pub(crate) fn rejected(&mut self, code: i32) {
        let slot = usize::try_from(code).ok().filter(|&c| c < CODES);
        self.rejected[slot.unwrap_or(ErrorCode::Unspecified as usize)] += 1;
    }

    /// Non-zero rejection counts keyed by the code's name in lower case
    /// without its prefix (`rate_limited`).
    pub(crate) fn rejected_by_code(&self) -> BTreeMap<String, u64> {
        self.rejected
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(code, &n)| {
                let name = i32::try_from(code)
                    .ok()
                    .and_then(|code| ErrorCode::try_from(code).ok())
                    .unwrap_or(ErrorCode::Unspecified)
                    .as_str_name();
                let name = name.strip_prefix("ERROR_CODE_").unwrap_or(name);
                (name.to_ascii_lowercase(), n)
            })
            .collect()
    }
}

/// A snapshot of one room for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomStats {
    /// The room.
    pub room_id: String,
    /// Distinct users present on some node.
    pub members: u64,
    /// msg-svc nodes subscribed to the room.
    pub nodes: u64,
    /// Messages accepted into the NORMAL lane.
    pub accepted_normal: u64,
    /// Messages accepted into the PRIORITY lane (notices included).
    pub accepted_priority: u64,
    /// Retries answered with their original ack.
    pub duplicates: u64,
    /// Refused sends by error code (`rate_limited`, `muted`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Broadcast frames sent, one per subscribed node per batch.
    pub broadcast_frames: u64,
    /// Message copies sent in broadcasts, summed over nodes.
    pub broadcast_messages: u64,
    /// Messages in the room's history.
    pub history: u64,
    /// Mutes still running.
    pub mutes: u64,
    /// Banned users.
    pub bans: u64,
    /// Whitelisted users.
    pub whitelist: u64,
    /// The room's newest position.
    #[serde(serialize_with = "cursor_fields")]
    pub latest: Cursor,
}

fn cursor_fields<S: Serializer>(cursor: &Cursor, serializer: S) -> Result<S::Ok, S::Error> {
    let mut fields = serializer.serialize_struct("Cursor", 4)?;
    fields.serialize_field("epoch", &cursor.epoch)?;
    fields.serialize_field("ts", &cursor.ts)?;
    fields.serialize_field("msg_id", &cursor.msg_id)?;
    fields.serialize_field("normal_seq", &cursor.normal_seq)?;
    fields.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_keyed_by_short_names() {
        let mut counters = Counters::default();
        counters.rejected(ErrorCode::RateLimited as i32);
        counters.rejected(ErrorCode::RateLimited as i32);
        counters.rejected(ErrorCode::Muted as i32);
        counters.rejected(77);
        let by_code = counters.rejected_by_code();
        assert_eq!(by_code.len(), 3);
        assert_eq!(by_code["rate_limited"], 2);
        assert_eq!(by_code["muted"], 1);
        assert_eq!(by_code["unspecified"], 1);
    }
}
