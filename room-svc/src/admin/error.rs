//! The admin API's errors: a status, a stable machine-readable code and a
//! message for people, as `{"error": {"code": …, "message": …}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::keys::Scope;
use crate::core::ModerationError;
use crate::service::AdminError;

/// What a refused admin request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable, snake_case: what went wrong, for programs.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Seconds to wait before trying again, when waiting helps.
    pub retry_after_s: Option<u32>,
}

/// The JSON body of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, snake_case.
    pub code: String,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// The same, telling the caller to try again after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// A malformed request (400).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// No token, or the wrong one (401).
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token or key is required: Authorization: Bearer <token>",
        )
    }

    /// A known key without the scope the route needs (403).
    pub fn insufficient_scope(scope: Scope, key: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this request needs the {scope} scope, which key {key} does not have"),
        )
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        let message = error.to_string();
        match error {
            AdminError::BadRoomId(_) => Self::bad_request("bad_room_id", message),
            AdminError::BadUserId(_) => Self::bad_request("bad_user_id", message),
            AdminError::InvalidConfig(_) => Self::bad_request("invalid_config", message),
            AdminError::InvalidWordLists(_) => Self::bad_request("invalid_word_lists", message),
            AdminError::NoticeRefused(_) => Self::bad_request("notice_refused", message),
            AdminError::PublishRefused(_) => Self::bad_request("publish_refused", message),
            AdminError::UnknownRoom(_) => Self::new(StatusCode::NOT_FOUND, "unknown_room", message),
            AdminError::Moderation(ModerationError::Full(_)) => {
                Self::new(StatusCode::CONFLICT, "list_full", message)
            }
            AdminError::NotOwner(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_owner", message).retry_after(1)
            }
            AdminError::OwnershipUnsure => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ownership_unsure", message)
                    .retry_after(1)
            }
            AdminError::Stopped => Self::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"chatroom admin\""),
            );
        }
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
