//! chatroom's Rust client: one session to a msg-svc node over WebSocket or
//! QUIC, its rooms and their message feeds. It follows redirects, pulls by
//! itself when notified, applies inline deltas, dedupes by timestamp,
//! reports gaps and pings; the application calls [`Client`] and reads
//! [`Events`].
//!
//! Layout (imports go down this list, never up):
//! - [`connection`]: [`Client::connect`], the [`Client`] handle and the one
//!   task that owns each connection.
//! - [`core`]: the protocol logic with no I/O ([`SessionCore`]): cursors,
//!   pulls, deltas, gaps; the connection task drives it and its tests feed
//!   it frame by frame, with no socket and no clock.
//! - [`transport`]: WebSocket (`ws://`) and QUIC (`quic://`) under the
//!   connection, the frame limits, the embedded server's addresses.
//! - [`events`]: what the application receives ([`Event`], [`Events`]).
//! - [`error`]: why a call failed ([`ClientError`]).
//! - [`token`]: [`dev_token`], tokens for demos and tests.
//! - `examples/chat.rs`: the terminal chat client, built on this API alone
//!   (`cargo run -p chatroom-client --example chat -- --room demo --user alice`).
//!
//! ```no_run
//! use chatroom_client::{Client, ClientConfig, DEFAULT_URL, Event, JoinOptions};
//! use chatroom_proto::v1::Kind;
//!
//! # async fn demo(token: String) -> Result<(), chatroom_client::ClientError> {
//! let (client, mut events) = Client::connect(ClientConfig::new(DEFAULT_URL, token)).await?;
//! client.join("demo", JoinOptions::default()).await?;
//! client.send("demo", Kind::Chat, "hello").await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Message { room, message } => {
//!             println!("{room} {}: {:?}", message.sender, message.payload)
//!         }
//!         Event::Closed { reason } => println!("closed: {reason}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Over QUIC the URL is `quic://host:port` ([`DEFAULT_QUIC_URL`]) and
//! [`ClientConfig::trust`] says which server certificate to trust
//! ([`Trust::CertFile`] or [`Trust::Fingerprint`]).

pub mod connection;
pub mod core;
pub mod error;
pub mod events;
pub mod token;
pub mod transport;

pub use chatroom_cluster::quic::{Fingerprint, Trust};
pub use connection::{Client, ClientConfig, MAX_REDIRECTS, TokenFuture, TokenSource};
pub use core::{CoreConfig, JoinOptions, Output, Reply, SessionCore};
pub use error::ClientError;
pub use events::{CloseReason, Event, Events, RecvError};
pub use token::dev_token;
pub use transport::{
    DEFAULT_QUIC_URL, DEFAULT_URL, MAX_CLIENT_FRAME, MAX_SERVER_FRAME, Transport, UnknownTransport,
};
