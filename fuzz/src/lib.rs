//! Fuzz targets for every decoder a peer reaches: one plain function per
//! target, driving the services' own code (through their hidden `fuzzing`
//! modules where it is private) and asserting what must hold for any input:
//! no panic (overflow checks on), buffers bounded by the limits in force, and
//! a stream cut into reads anywhere decodes as it does whole.
//!
//! Layout:
//! - [`input`]: how a target reads its bytes: a setting, where the stream is
//!   cut into reads, then the stream.
//! - the targets, one module each: [`ws`] (the upgrade request, then
//!   WebSocket frames), [`quic`] (length-prefixed stream frames),
//!   [`client`] (a client frame and the checks before it is acted on),
//!   [`cluster`] (node link frames both ways and what the receiving side
//!   does with them first), [`token`] (client tokens and the admin bearer
//!   token), [`admin`] (the admin API's config patch).
//! - [`seeds`]: the seed corpus, generated from the schema; `src/bin/seed.rs`
//!   writes it to `corpus/<target>/`, and `tests/corpus.rs` checks it is
//!   current and replays it with `regressions/<target>/`.
//! - `fuzz_targets/`: the libFuzzer binaries (feature `libfuzzer`), one line
//!   each; `scripts/fuzz` builds and runs them.

pub mod admin;
pub mod client;
pub mod cluster;
pub mod input;
pub mod quic;
pub mod seeds;
pub mod token;
pub mod ws;

pub use admin::admin_config;
pub use client::client_frame;
pub use cluster::cluster_frames;
pub use quic::quic_frames;
pub use token::token;
pub use ws::{ws_frames, ws_handshake};

/// A target: its name (of its binary and its corpus directory) and its
/// function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 7] = [
    ("ws_handshake", ws_handshake),
    ("ws_frames", ws_frames),
    ("quic_frames", quic_frames),
    ("client_frame", client_frame),
    ("cluster_frames", cluster_frames),
    ("token", token),
    ("admin_config", admin_config),
];
