//! The sans-I/O core of the room service: plain data structures that decide,
//! with time passed in by the caller. No tasks, sockets or clock reads here,
//! so tests and the simulation drive the very same code deterministically.
//!
//! - [`room`]: [`RoomState`], one room's state and its accept / stamp logic,
//!   and [`PersistedRoom`], what the store keeps to rebuild it.
//! - [`members`]: who is present on which msg-svc node.
//! - [`moderation`]: mutes, bans and the whitelist.
//! - [`limiter`]: the per-lane upstream limiter (governor GCRA, passed-in time).
//! - [`dedupe`]: acks of recent messages, for senders' retries.
//! - [`clock`]: the strictly increasing room clock.
//! - [`config`]: per-room settings, defaults and bounds.
//! - [`wordfilter`]: word lists compiled for matching (mask or reject).
//! - [`stats`]: counters and the operators' snapshot.

pub mod clock;
pub mod config;
pub mod dedupe;
pub mod limiter;
pub mod members;
pub mod moderation;
pub mod room;
pub mod slowmode;
pub mod stats;
pub mod wordfilter;

pub use clock::RoomClock;
pub use config::{
    ConfigError, ConfigPatch, Field, KindName, default_room_config, resolve, validate_config,
};
pub use members::NodeIdx;
pub use moderation::{ModerationError, MuteLeft};
pub use room::{
    Accepted, CatchUp, Held, MAX_HELD, Now, PersistedRoom, PresenceChange, Publish, RoomState,
    SendInput, Verdict,
};
pub use stats::{RankBy, RoomStats, RoomSummary};
pub use wordfilter::{
    FilterAction, FilterError, Filtered, WordFilter, WordList, parse_lists_file, validate_lists,
};
