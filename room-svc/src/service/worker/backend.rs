//! The app's backend in a worker's loop: the word filter every room's
//! messages go through, the moderation hook that holds sends of the hook
//! kinds until the app's verdict, and the webhook events the rooms raise.
//!
//! None of it waits: a held send is handed to the hook with a callback that
//! puts the verdict on the worker's verdict queue (bounded by what is held:
//! at most [`MAX_HELD`](crate::core::MAX_HELD) per room, and the hook's own
//! queue), and the worker stamps it when the verdict comes round. Webhook
//! events are queued by the webhook sender, which drops past its bound.

use std::collections::HashMap;
use std::sync::Arc;

use chatroom_cluster::reload::Reloaded;
use chatroom_proto::cluster::v1::{RoomOverrides, WordAction};
use chatroom_proto::v1::{ChatMessage, Lane, SenderInfo};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::warn;

use crate::core::{FilterAction, Held, NodeIdx, Verdict, WordFilter, WordList};
use crate::hooks::{
    EventKind, HookConfig, HookMessage, HookOutcome, ModerationHook, WebhookConfig, Webhooks,
};

/// What connects a room service to the app's backend; all optional. The
/// room service starts the hook's and the webhook's tasks.
#[derive(Debug, Clone, Default)]
pub struct Backend {
    /// Decides on sends of each room's hook kinds before they are accepted.
    pub hook: Option<HookConfig>,
    /// Where room events go.
    pub webhook: Option<WebhookConfig>,
    /// The word lists every room follows, from a file that is reloaded.
    pub word_lists: Option<Reloaded<Vec<WordList>>>,
}

/// The backend's clients, running: shared by every worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clients {
    pub(crate) hook: Option<ModerationHook>,
    pub(crate) webhooks: Option<Webhooks>,
    pub(crate) word_lists: Option<Reloaded<Vec<WordList>>>,
}

impl Clients {
    /// Starts the hook's and the webhook's tasks on the current runtime.
    pub(crate) fn start(backend: Backend) -> Self {
        Self {
            hook: backend.hook.map(ModerationHook::start),
            webhooks: backend.webhook.map(Webhooks::start),
            word_lists: backend.word_lists,
        }
    }
}

/// A verdict for the send held under `id`.
#[derive(Debug)]
pub(super) struct HookVerdict {
    pub(super) id: u64,
    pub(super) outcome: HookOutcome,
}

/// A send waiting for the hook, and where its answer goes.
#[derive(Debug)]
pub(super) struct HeldSend {
    pub(super) room: Arc<str>,
    /// The room's fence when it was held: a verdict for a room loaded
    /// again since (moved, or closed and re-created) is not applied to it.
    pub(super) fence: u64,
    pub(super) node: NodeIdx,
    pub(super) session_id: u64,
    pub(super) request_id: u64,
    pub(super) held: Held,
}

/// A worker's side of the backend.
pub(super) struct WorkerBackend {
    hook: Option<ModerationHook>,
    webhooks: Option<Webhooks>,
    words: WordDefaults,
    verdicts: mpsc::UnboundedSender<HookVerdict>,
    held: HashMap<u64, HeldSend>,
    next_held: u64,
}

/// The default word lists as last seen, compiled once per change.
struct WordDefaults {
    source: Option<Reloaded<Vec<WordList>>>,
    lists: Arc<Vec<WordList>>,
    /// The defaults alone: what a room without lists of its own uses.
    shared: Arc<WordFilter>,
    /// Bumped at each change, so rooms know to compile theirs again.
    generation: u64,
}

impl WorkerBackend {
    /// The worker's side of the clients, and where its verdicts come in.
    pub(super) fn new(backend: Clients) -> (Self, mpsc::UnboundedReceiver<HookVerdict>) {
        let (verdicts, verdicts_rx) = mpsc::unbounded_channel();
        let mut words = WordDefaults {
            source: backend.word_lists,
            lists: Arc::default(),
            shared: Arc::default(),
            generation: 1,
        };
        words.refresh();
        let backend = Self {
            hook: backend.hook,
            webhooks: backend.webhooks,
            words,
            verdicts,
            held: HashMap::new(),
            next_held: 0,
        };
        (backend, verdicts_rx)
    }

    /// Whether sends of hook kinds wait for the hook.
    pub(super) fn hooked(&self) -> bool {
        self.hook.is_some()
    }

    /// Takes in a change of the default word lists, if any (once per batch).
    pub(super) fn refresh_words(&mut self) {
        self.words.refresh();
    }

    /// The generation of the default lists, for [`filter_for`](Self::filter_for).
    pub(super) fn words_generation(&self) -> u64 {
        self.words.generation
    }

    /// The compiled filter of a room with `overrides`: the defaults, with
    /// the room's own lists laid over them.
    pub(super) fn filter_for(&self, overrides: &RoomOverrides) -> Arc<WordFilter> {
        if overrides.word_lists.is_empty() {
            return Arc::clone(&self.words.shared);
        }
        let own = word_lists(overrides);
        match WordFilter::for_room(&self.words.lists, &own) {
            Ok(filter) => Arc::new(filter),
            Err(error) => {
                // Both sets were checked when they were set; only a
                // matcher that cannot be built gets here.
                warn!(%error, "room word lists not compiled; the defaults apply");
                Arc::clone(&self.words.shared)
            }
        }
    }

    /// Hands a held send to the hook; the verdict comes back on the
    /// verdict queue. `Err` gives the send back when the hook's queue is
    /// full (its sender is told OVERLOADED).
    pub(super) fn hold(&mut self, send: HeldSend) -> Result<(), HeldSend> {
        let Some(hook) = &self.hook else {
            return Err(send);
        };
        let id = self.next_held;
        self.next_held += 1;
        let message = HookMessage {
            room_id: send.room.to_string(),
            sender: send.held.sender().to_owned(),
            sender_info: send.held.sender_info().map(sender_info_json),
            kind: send.held.kind(),
            payload: send.held.payload().clone(),
        };
        let verdicts = self.verdicts.clone();
        let done = Box::new(move |outcome| {
            // The worker is gone: nobody to answer.
            let _ = verdicts.send(HookVerdict { id, outcome });
        });
        match hook.submit(message, done) {
            Ok(()) => {
                self.held.insert(id, send);
                Ok(())
            }
            Err(_) => Err(send),
        }
    }

    /// The held send a verdict is for, with the verdict as the room takes
    /// it.
    pub(super) fn settle(&mut self, verdict: HookVerdict) -> Option<(HeldSend, Verdict)> {
        let send = self.held.remove(&verdict.id)?;
        let verdict = match verdict.outcome {
            HookOutcome::Accept => Verdict::Accept,
            HookOutcome::Reject { reason } => Verdict::Reject(reason),
            HookOutcome::Replace { payload } => Verdict::Replace(payload),
            HookOutcome::Failed(failure) => {
                warn!(room = %send.room, %failure, "no verdict from the moderation hook");
                Verdict::Failed
            }
        };
        Some((send, verdict))
    }

    /// Raises a webhook event, if a webhook is configured.
    pub(super) fn emit(&self, kind: EventKind, room: &str, data: impl FnOnce() -> Value) {
        if let Some(webhooks) = &self.webhooks {
            webhooks.emit(kind, Some(room), data());
        }
    }

    /// Whether webhook events go anywhere.
    pub(super) fn has_webhook(&self) -> bool {
        self.webhooks.is_some()
    }
}

impl WordDefaults {
    fn refresh(&mut self) {
        let Some(source) = &self.source else {
            return;
        };
        let current = source.current();
        if Arc::ptr_eq(&current, &self.lists) {
            return;
        }
        match WordFilter::build(&current) {
            Ok(filter) => {
                self.shared = Arc::new(filter);
                self.lists = current;
                self.generation += 1;
            }
            Err(error) => {
                warn!(%error, "default word lists not compiled; the previous ones stay");
                self.lists = current;
            }
        }
    }
}

/// A room's own word lists, as the filter takes them.
pub(crate) fn word_lists(overrides: &RoomOverrides) -> Vec<WordList> {
    overrides
        .word_lists
        .iter()
        .map(|list| WordList {
            name: list.name.clone(),
            action: match list.action() {
                WordAction::Reject => FilterAction::Reject,
                WordAction::Mask => FilterAction::Mask,
            },
            words: list.words.clone(),
        })
        .collect()
}

/// A word list as the store keeps it.
pub(crate) fn stored_word_list(list: WordList) -> chatroom_proto::cluster::v1::WordList {
    let action = match list.action {
        FilterAction::Reject => WordAction::Reject,
        FilterAction::Mask => WordAction::Mask,
    };
    chatroom_proto::cluster::v1::WordList {
        name: list.name,
        action: action as i32,
        words: list.words,
    }
}

/// How the app's backend described a sender, as its hook and webhook get it.
fn sender_info_json(info: &SenderInfo) -> Value {
    json!({ "name": info.name, "badges": info.badges, "color": info.color })
}

/// An accepted message as the `message.accepted` event carries it: text
/// when the payload is UTF-8, else base64.
pub(super) fn message_json(msg: &ChatMessage) -> Value {
    use base64::Engine as _;

    let mut value = json!({
        "msg_id": msg.msg_id,
        "ts_us": msg.ts,
        "sender": msg.sender,
        "kind": msg.kind,
        "lane": if msg.lane == Lane::Priority as i32 { "priority" } else { "normal" },
    });
    match std::str::from_utf8(&msg.payload) {
        Ok(text) => value["text"] = json!(text),
        Err(_) => {
            value["payload_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&msg.payload));
        }
    }
    if let Some(info) = &msg.sender_info {
        value["sender_info"] = sender_info_json(info);
    }
    value
}
