//! Entry points for the fuzz targets (the `chatroom-fuzz` crate): the admin
//! API's request checks, which are private to this crate, so the targets
//! drive the code the API runs. Not an API.

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue};
use chatroom_cluster::auth::AdminToken;
use serde::de::DeserializeOwned;

use crate::admin::{self, ApiError};

/// A request body as the admin API reads it into a `T` (a config patch, a
/// mute, a notice).
pub fn admin_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    admin::parse_body(body)
}

/// Whether a request with this `Authorization` header's value gets past the
/// admin API's check against `token`.
pub fn admin_authorized(token: &AdminToken, authorization: &[u8]) -> bool {
    let Ok(value) = HeaderValue::from_bytes(authorization) else {
        return false;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    admin::caller(&admin::Keyring::token(token.clone()), &headers).is_some()
}
