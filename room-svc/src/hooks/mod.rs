//! Calls to the app's own backend over HTTP, signed so it knows they come
//! from us.
//!
//! - [`sign`]: the `X-Chatroom-Signature` header, for both sides.
//! - [`webhook`]: [`Webhooks`] POSTs room events in batches, at least once
//!   and in order, retrying while the receiver is away.
//! - [`moderation`]: [`ModerationHook`] asks the backend for a verdict on
//!   each message before it is accepted, batching and pipelining requests.
//! - `batch`: when a batch goes out (sans-I/O, shared by both).
//! - `http`: the signed POST with a deadline and a bounded answer.

mod batch;
mod http;
pub mod moderation;
pub mod sign;
pub mod webhook;

#[cfg(test)]
mod test_server;

use hyper::Uri;

pub use moderation::{
    HookConfig, HookCounters, HookDone, HookFailure, HookMessage, HookOutcome, HookOverloaded,
    ModerationHook,
};
pub use sign::{ShortSecret, SignatureError, SigningSecret};
pub use webhook::{EventKind, FlushTimedOut, WebhookConfig, WebhookCounters, Webhooks};

/// Why a hook's URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookUrlError {
    /// Only `http://` is supported so far (TLS terminates in front of the
    /// backend, or the backend is on a private network).
    #[error("hook url {0} is not http://")]
    NotHttp(Uri),
    /// The URL names no host to connect to.
    #[error("hook url {0} has no host")]
    NoHost(Uri),
}

/// `url` if a hook can POST to it.
fn checked_url(url: Uri) -> Result<Uri, HookUrlError> {
    if url.scheme_str() != Some("http") {
        return Err(HookUrlError::NotHttp(url));
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(HookUrlError::NoHost(url));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_taken() {
        let ok: Uri = "http://backend.internal:8080/chat/events?x=1"
            .parse()
            .expect("valid");
        assert_eq!(checked_url(ok.clone()), Ok(ok));
        let tls: Uri = "https://backend.internal/".parse().expect("valid");
        assert_eq!(checked_url(tls.clone()), Err(HookUrlError::NotHttp(tls)));
        let relative: Uri = "/events".parse().expect("valid");
        assert_eq!(
            checked_url(relative.clone()),
            Err(HookUrlError::NotHttp(relative))
        );
    }
}
