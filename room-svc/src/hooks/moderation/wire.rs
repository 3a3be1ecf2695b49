//! The moderation hook's JSON, both ways (no I/O).
//!
//! Request: `{"messages":[{"id":"m1","room_id":..,"sender":..,
//! "sender_info":<json or null>,"kind":0,"text":".."}]}`, with
//! `"payload_base64"` (standard alphabet, padded) instead of `"text"` when
//! the payload is not UTF-8. Ids are `m1`, `m2`, ... in request order.
//!
//! Answer: `{"verdicts":[{"id":"m1","action":"accept"},
//! {"id":"m2","action":"reject","reason":".."},
//! {"id":"m3","action":"replace","text":".."}]}` (or `"payload_base64"` for
//! a replace). Unknown fields are ignored.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{HookFailure, HookMessage, HookOutcome};

/// Longest reject reason kept, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 256;

/// Largest replacement payload taken, in bytes.
pub(crate) const MAX_REPLACE_BYTES: usize = 64 << 10;

#[derive(Serialize)]
struct RequestBody<'a> {
    messages: Vec<WireMessage<'a>>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    id: String,
    room_id: &'a str,
    sender: &'a str,
    sender_info: Option<&'a serde_json::Value>,
    kind: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

#[derive(Deserialize)]
struct AnswerBody {
    verdicts: Vec<WireVerdict>,
}

#[derive(Deserialize)]
struct WireVerdict {
    id: String,
    action: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
}

/// The id of the message at `index` in a request.
fn id_of(index: usize) -> String {
    format!("m{}", index + 1)
}

/// The request body for `messages`, in order.
pub(crate) fn encode<'a>(messages: impl Iterator<Item = &'a HookMessage>) -> Vec<u8> {
    let messages = messages
        .enumerate()
        .map(|(index, message)| {
            let text = std::str::from_utf8(&message.payload).ok();
            WireMessage {
                id: id_of(index),
                room_id: &message.room_id,
                sender: &message.sender,
                sender_info: message.sender_info.as_ref(),
                kind: message.kind,
                text,
                payload_base64: text.is_none().then(|| BASE64.encode(&message.payload)),
            }
        })
        .collect();
    // Cannot fail: strings, numbers and JSON values, whose map keys are
    // strings.
    serde_json::to_vec(&RequestBody { messages }).expect("messages serialize")
}

/// What an answer says about a request of `count` messages.
#[derive(Debug, PartialEq)]
pub(crate) struct Decoded {
    /// One outcome per message, in request order.
    pub(crate) outcomes: Vec<HookOutcome>,
    /// Verdicts ignored: for ids not in the request, or repeating one.
    pub(crate) unknown: u64,
}

/// The outcomes in `body` for a request of `count` messages; `None` when
/// it is not JSON of the expected shape. A message without a verdict is
/// [`HookFailure::Missing`]; a verdict that makes no sense (an unknown
/// action, a replace without one payload or too large)
/// [`HookFailure::Garbage`].
pub(crate) fn decode(body: &[u8], count: usize) -> Option<Decoded> {
    let answer: AnswerBody = serde_json::from_slice(body).ok()?;
    let index: HashMap<String, usize> = (0..count).map(|i| (id_of(i), i)).collect();
    let mut outcomes: Vec<Option<HookOutcome>> = (0..count).map(|_| None).collect();
    let mut unknown = 0;
    for verdict in answer.verdicts {
        match index.get(&verdict.id) {
            Some(&i) if outcomes[i].is_none() => outcomes[i] = Some(outcome(verdict)),
            _ => unknown += 1,
        }
    }
    Some(Decoded {
        outcomes: outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(HookOutcome::Failed(HookFailure::Missing)))
            .collect(),
        unknown,
    })
}

fn outcome(verdict: WireVerdict) -> HookOutcome {
    match verdict.action.as_str() {
        "accept" => HookOutcome::Accept,
        "reject" => HookOutcome::Reject {
            reason: clean_reason(verdict.reason.as_deref().unwrap_or_default()),
        },
        "replace" => {
            let payload = match (verdict.text, verdict.payload_base64) {
                (Some(text), None) => Some(Bytes::from(text)),
                (None, Some(encoded)) => BASE64.decode(encoded).ok().map(Bytes::from),
                _ => None,
            };
            match payload {
                Some(payload) if payload.len() <= MAX_REPLACE_BYTES => {
                    HookOutcome::Replace { payload }
                }
                _ => HookOutcome::Failed(HookFailure::Garbage),
            }
        }
        _ => HookOutcome::Failed(HookFailure::Garbage),
    }
}

/// `reason` without control characters, cut to [`MAX_REASON_BYTES`] on a
/// character boundary: it is shown to the sender and logged.
fn clean_reason(reason: &str) -> String {
    let mut clean = String::new();
    for c in reason.chars().filter(|c| !c.is_control()) {
        if clean.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        clean.push(c);
    }
    clean
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn message(payload: &'static [u8]) -> HookMessage {
        HookMessage {
            room_id: "lobby".into(),
            sender: "u1".into(),
            sender_info: None,
            kind: 3,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn encodes_text_or_base64() {
        let mut with_info = message(b"hello");
        with_info.sender_info = Some(json!({"name": "Ann"}));
        let messages = [with_info, message(b"\xff\x00")];
        let body: Value = serde_json::from_slice(&encode(messages.iter())).expect("json");
        assert_eq!(
            body,
            json!({"messages": [
                {"id": "m1", "room_id": "lobby", "sender": "u1", "sender_info": {"name": "Ann"},
                 "kind": 3, "text": "hello"},
                {"id": "m2", "room_id": "lobby", "sender": "u1", "sender_info": null,
                 "kind": 3, "payload_base64": "/wA="},
            ]})
        );
    }

    #[test]
    fn decodes_each_action() {
        let body = json!({"verdicts": [
            {"id": "m3", "action": "replace", "payload_base64": "/wA="},
            {"id": "m1", "action": "accept", "extra": true},
            {"id": "m2", "action": "reject", "reason": "spam"},
            {"id": "m4", "action": "replace", "text": "cleaned"},
        ]});
        let decoded = decode(body.to_string().as_bytes(), 5).expect("valid");
        assert_eq!(
            decoded,
            Decoded {
                outcomes: vec![
                    HookOutcome::Accept,
                    HookOutcome::Reject {
                        reason: "spam".into()
                    },
                    HookOutcome::Replace {
                        payload: Bytes::from_static(b"\xff\x00")
                    },
                    HookOutcome::Replace {
                        payload: Bytes::from_static(b"cleaned")
                    },
                    HookOutcome::Failed(HookFailure::Missing),
                ],
                unknown: 0,
            }
        );
    }

    #[test]
    fn unknown_and_repeated_ids_are_ignored_and_counted() {
        let body = json!({"verdicts": [
            {"id": "m1", "action": "accept"},
            {"id": "m1", "action": "reject"},
            {"id": "m9", "action": "reject"},
            {"id": "m01", "action": "reject"},
            {"id": "x", "action": "reject"},
        ]});
        let decoded = decode(body.to_string().as_bytes(), 2).expect("valid");
        assert_eq!(
            decoded.outcomes,
            vec![
                HookOutcome::Accept,
                HookOutcome::Failed(HookFailure::Missing)
            ]
        );
        assert_eq!(decoded.unknown, 4);
    }

    #[test]
    fn senseless_verdicts_are_garbage_for_their_message() {
        let too_big = "x".repeat(MAX_REPLACE_BYTES + 1);
        let body = json!({"verdicts": [
            {"id": "m1", "action": "shrug"},
            {"id": "m2", "action": "replace"},
            {"id": "m3", "action": "replace", "text": "a", "payload_base64": "YQ=="},
            {"id": "m4", "action": "replace", "payload_base64": "not base64!"},
            {"id": "m5", "action": "replace", "text": too_big},
            {"id": "m6", "action": "replace", "text": "x".repeat(MAX_REPLACE_BYTES)},
        ]});
        let decoded = decode(body.to_string().as_bytes(), 6).expect("valid");
        let garbage = HookOutcome::Failed(HookFailure::Garbage);
        assert_eq!(&decoded.outcomes[..5], &vec![garbage; 5][..]);
        assert!(
            matches!(&decoded.outcomes[5], HookOutcome::Replace { payload } if payload.len() == MAX_REPLACE_BYTES)
        );
    }

    #[test]
    fn wrong_shapes_are_refused() {
        for body in [
            "not json",
            "{}",
            r#"{"verdicts": {}}"#,
            r#"{"verdicts": [{"id": 1, "action": "accept"}]}"#,
            r#"{"verdicts": [{"id": "m1"}]}"#,
        ] {
            assert_eq!(decode(body.as_bytes(), 1), None, "{body}");
        }
    }

    #[test]
    fn reasons_lose_control_characters_and_are_bounded() {
        assert_eq!(clean_reason("no\u{7}\n\tbell\u{1b}[31m"), "nobell[31m");
        let long = "é".repeat(200);
        let clean = clean_reason(&long);
        assert_eq!(clean.len(), MAX_REASON_BYTES);
        let odd = format!("a{}", "é".repeat(200));
        assert_eq!(
            clean_reason(&odd).len(),
            MAX_REASON_BYTES - 1,
            "cut on a boundary"
        );
        assert_eq!(clean_reason(""), "");
    }
}
