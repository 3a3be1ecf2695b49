//! Request signing: the app's backend checks that a webhook or moderation
//! request comes from us and is fresh.
//!
//! The header is `X-Chatroom-Signature: t=<unix seconds>,v1=<hex>`, where
//! `<hex>` is the lowercase hex HMAC-SHA256 of `"<t>.<raw body>"` under the
//! shared secret. Binding the timestamp into the MAC lets a receiver refuse
//! replays outside a window; several `v1=` entries may be present so a
//! sender can sign with an old and a new secret while one is rotated.

use std::fmt;
use std::time::Duration;

use ring::hmac;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-chatroom-signature";

/// How far a signature's timestamp may be from the receiver's clock unless
/// told otherwise: long enough for clock skew and retries in flight, short
/// enough that a captured request cannot be replayed later.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// Fewest bytes a secret may have: shorter ones can be guessed offline from
/// one captured request.
pub const MIN_SECRET_BYTES: usize = 16;

/// A shared secret, ready to sign with. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningSecret {
    key: hmac::Key,
}

/// A secret shorter than [`MIN_SECRET_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a signing secret needs at least {MIN_SECRET_BYTES} bytes, this one has {0}")]
pub struct ShortSecret(pub usize);

/// Why a signature header does not vouch for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<digits>` followed by `v1=<64 hex digits>` entries.
    #[error("malformed signature header")]
    Malformed,
    /// The header has a timestamp but no `v1=` entry.
    #[error("no v1 signature in the header")]
    NoSignature,
    /// The timestamp is further from now than the window allows.
    #[error("signature timestamp {signed_at} is outside the window around {now}")]
    OutsideWindow {
        /// The header's timestamp, unix seconds.
        signed_at: u64,
        /// The receiver's clock, unix seconds.
        now: u64,
    },
    /// No `v1=` entry is the MAC of this body under this secret.
    #[error("signature does not match")]
    Mismatch,
}

impl SigningSecret {
    /// The secret `bytes`, refused when shorter than [`MIN_SECRET_BYTES`].
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, ShortSecret> {
        let bytes = bytes.as_ref();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(ShortSecret(bytes.len()));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The `X-Chatroom-Signature` value for `body` sent at `unix_s`.
pub fn sign(secret: &SigningSecret, unix_s: u64, body: &[u8]) -> String {
    let tag = hmac::sign(&secret.key, &signed_payload(unix_s, body));
    let mut header = format!("t={unix_s},v1=");
    for byte in tag.as_ref() {
        header.push(char::from(HEX[usize::from(byte >> 4)]));
        header.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    header
}

/// Checks, on the receiving side, that `header` signs `body` under `secret`
/// and that its timestamp is within `window` of `now_unix_s` either way.
/// Entries other than `t` and `v1` are ignored, so new schemes can be added
/// beside `v1` without breaking receivers.
pub fn verify(
    secret: &SigningSecret,
    header: &str,
    body: &[u8],
    now_unix_s: u64,
    window: Duration,
) -> Result<(), SignatureError> {
    let mut signed_at = None;
    let mut tags = Vec::new();
    for entry in header.split(',') {
        let (name, value) = entry
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match name {
            "t" => {
                if signed_at.is_some()
                    || value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(SignatureError::Malformed);
                }
                signed_at = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "v1" => tags.push(decode_tag(value).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let signed_at = signed_at.ok_or(SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    if signed_at.abs_diff(now_unix_s) > window.as_secs() {
        return Err(SignatureError::OutsideWindow {
            signed_at,
            now: now_unix_s,
        });
    }
    let payload = signed_payload(signed_at, body);
    if tags
        .iter()
        .any(|tag| hmac::verify(&secret.key, &payload, tag).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `"<t>.<body>"`, what the MAC covers.
fn signed_payload(unix_s: u64, body: &[u8]) -> Vec<u8> {
    let t = unix_s.to_string();
    let mut payload = Vec::with_capacity(t.len() + 1 + body.len());
    payload.extend_from_slice(t.as_bytes());
    payload.push(b'.');
    payload.extend_from_slice(body);
    payload
}

/// A SHA-256 tag from 64 hex digits (either case).
fn decode_tag(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut tag = [0; 32];
    for (byte, pair) in tag.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SigningSecret {
        SigningSecret::new(text).expect("long enough")
    }

    #[test]
    fn signs_the_timestamp_and_body() {
        // HMAC-SHA256("0123456789abcdef", "1700000000.{}"), from openssl.
        let header = sign(&secret("0123456789abcdef"), 1_700_000_000, b"{}");
        assert_eq!(
            header,
            "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
        assert_eq!(
            verify(
                &secret("0123456789abcdef"),
                &header,
                b"{}",
                1_700_000_000,
                DEFAULT_WINDOW
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_short_secrets() {
        assert_eq!(
            SigningSecret::new("fifteen bytes!!").unwrap_err(),
            ShortSecret(15)
        );
        assert!(SigningSecret::new("sixteen bytes!!!").is_ok());
    }

    #[test]
    fn tampered_body_or_other_secret_mismatch() {
        let key = secret("a secret of some length");
        let header = sign(&key, 100, b"{\"a\":1}");
        assert_eq!(
            verify(&key, &header, b"{\"a\":2}", 100, DEFAULT_WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &secret("another secret entirely"),
                &header,
                b"{\"a\":1}",
                100,
                DEFAULT_WINDOW
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_outside_the_window_are_refused_both_ways() {
        let key = secret("a secret of some length");
        let header = sign(&key, 10_000, b"x");
        assert_eq!(verify(&key, &header, b"x", 10_300, DEFAULT_WINDOW), Ok(()));
        assert_eq!(verify(&key, &header, b"x", 9_700, DEFAULT_WINDOW), Ok(()));
        assert_eq!(
            verify(&key, &header, b"x", 10_301, DEFAULT_WINDOW),
            Err(SignatureError::OutsideWindow {
                signed_at: 10_000,
                now: 10_301
            })
        );
        assert_eq!(
            verify(&key, &header, b"x", 9_699, DEFAULT_WINDOW),
            Err(SignatureError::OutsideWindow {
                signed_at: 10_000,
                now: 9_699
            })
        );
    }

    #[test]
    fn any_v1_entry_may_match_while_a_secret_rotates() {
        let old = secret("the old secret, still valid");
        let new = secret("the new secret, now in use");
        let by_old = sign(&old, 5, b"body");
        let by_new = sign(&new, 5, b"body");
        let both = format!(
            "{by_old},{}",
            by_new.split_once(',').expect("two entries").1
        );
        assert_eq!(verify(&old, &both, b"body", 5, DEFAULT_WINDOW), Ok(()));
        assert_eq!(verify(&new, &both, b"body", 5, DEFAULT_WINDOW), Ok(()));
        let with_future_scheme = format!("{by_new},v2=abc");
        assert_eq!(
            verify(&new, &with_future_scheme, b"body", 5, DEFAULT_WINDOW),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let key = secret("a secret of some length");
        for header in [
            "",
            "v1=00",
            "t=,v1=00",
            "t=-5,v1=00",
            "t=5",
            "t=5,v1=zz",
            "t=5,t=6,v1=00",
        ] {
            let result = verify(&key, header, b"", 5, DEFAULT_WINDOW);
            assert!(
                matches!(
                    result,
                    Err(SignatureError::Malformed | SignatureError::NoSignature)
                ),
                "{header:?}: {result:?}"
            );
        }
        assert_eq!(
            verify(&key, "t=5", b"", 5, DEFAULT_WINDOW),
            Err(SignatureError::NoSignature)
        );
    }
}
