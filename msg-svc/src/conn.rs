//! What both transports do with a connection's frames once decoded.

use std::sync::Arc;

use chatroom_proto::Message;
use chatroom_proto::framing::ws::close_code;
use chatroom_proto::v1::{self, ClientFrame, ErrorCode, KickReason};

use crate::handler;
use crate::node::MsgNode;
use crate::session::Session;

/// Frames decoded from one read, and what the read saw besides.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Decoded frames, or why one could not be decoded.
    pub(crate) frames: Vec<Result<ClientFrame, String>>,
    /// The connection cannot go on.
    pub(crate) fatal: Option<Fatal>,
    /// The client closed its side.
    pub(crate) eof: bool,
}

/// Why a connection cannot go on.
#[derive(Debug)]
pub(crate) struct Fatal {
    /// WebSocket close code; over QUIC, the application error code.
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// An error frame to send before closing.
    pub(crate) error: Option<v1::Error>,
}

impl Fatal {
    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        Self {
            code: close_code::PROTOCOL_ERROR,
            reason: reason.into(),
            error: None,
        }
    }

    pub(crate) fn too_big(reason: String) -> Self {
        Self {
            code: close_code::MESSAGE_TOO_BIG,
            error: Some(v1::Error::new(ErrorCode::BadRequest, &reason)),
            reason,
        }
    }
}

/// Runs a batch of decoded frames; false when the connection must end.
pub(crate) async fn handle_batch(
    node: &MsgNode,
    session: &Arc<Session>,
    malformed: &mut u32,
    batch: Batch,
) -> bool {
    for item in batch.frames {
        match item {
            Ok(frame) => {
                session.touch(chatroom_cluster::time::mono_millis());
                *malformed = 0;
                // Boxed: requests are rare next to deliveries and idle
                // connections many, so the handler's future must not size
                // every connection task's.
                Box::pin(handler::handle(node, session, frame)).await;
            }
            Err(problem) => {
                *malformed += 1;
                handler::answer_error(session, 0, v1::Error::new(ErrorCode::BadRequest, problem));
                if *malformed >= node.config.malformed_limit {
                    session.kick(KickReason::Protocol, "repeated malformed frames");
                }
            }
        }
    }
    if let Some(fatal) = batch.fatal {
        if let Some(error) = fatal.error {
            handler::answer_error(session, 0, error);
        }
        session.close_with(KickReason::Protocol, fatal.code, &fatal.reason);
    }
    !batch.eof
}

pub(crate) fn decode_client_frame(payload: &[u8]) -> Result<ClientFrame, String> {
    ClientFrame::decode(payload).map_err(|error| format!("undecodable frame: {error}"))
}
