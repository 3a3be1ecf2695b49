//! The chatroom client: one session to a msg-svc, over WebSocket or QUIC,
//! its rooms and their message feeds.
//!
//! - [`core`]: the protocol logic with no I/O ([`SessionCore`]), driven by
//!   the socket task here and, later, by the harness's simulated sessions.
//! - [`connection`]: [`Client::connect`] and the task owning the connection.
//! - [`transport`]: WebSocket (`ws://`) and QUIC (`quic://`) under it.
//! - [`events`]: what the application receives ([`Event`], [`Events`]).
//! - [`error`]: why a call failed ([`ClientError`]).
//! - [`token`]: [`dev_token`] for demos and tests.
//!
//! ```no_run
//! # async fn demo(token: String) -> Result<(), chatroom_client::ClientError> {
//! use chatroom_client::{Client, ClientConfig, Event, JoinOptions};
//! use chatroom_proto::v1::Kind;
//!
//! let (client, mut events) = Client::connect(ClientConfig::new(
//!     chatroom_client::DEFAULT_URL,
//!     token,
//! ))
//! .await?;
//! client.join("demo", JoinOptions::default()).await?;
//! client.send("demo", Kind::Chat, "hello").await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message { message, .. } = event {
//!         println!("{}: {:?}", message.sender, message.payload);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod connection;
pub mod core;
pub mod error;
pub mod events;
pub mod token;
pub mod transport;

pub use connection::{Client, ClientConfig, MAX_REDIRECTS};
pub use core::{CoreConfig, JoinOptions, Output, Reply, SessionCore};
pub use error::ClientError;
pub use events::{CloseReason, Event, Events, RecvError};
pub use token::dev_token;
pub use transport::{
    DEFAULT_QUIC_URL, DEFAULT_URL, MAX_CLIENT_FRAME, MAX_SERVER_FRAME, Transport, UnknownTransport,
};
