//! Framing: how one protobuf frame is delimited on a byte stream.
//!
//! Both codecs are sans-I/O: they look at bytes already read and say "a
//! frame", "need more bytes" or "refuse", checking the declared size against
//! the limit before the caller allocates room for the body.

pub mod length;
pub mod ws;
