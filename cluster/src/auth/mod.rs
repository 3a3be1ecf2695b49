//! Tokens: JWTs with `sub` (the user id), `exp`, `roles`, and optionally room
//! grants, roles in rooms and display info.
//!
//! Layout:
//! - this file: [`AuthError`], [`Identity`], and [`TokenKey`], the shared
//!   HS256 secret that mints tokens (tests, the embedded demo, the `token`
//!   CLI) and verifies them.
//! - [`claims`]: the bounded claims beyond `sub`, `exp` and `roles`
//!   ([`RoomAccess`], [`DisplayInfo`]) and the [`TokenClaims`] builder.
//! - [`keys`]: identity providers' public keys (PEM and JWKS files), each
//!   pinned to one algorithm.
//! - [`verifier`]: the [`Verifier`] that checks client tokens against the
//!   secret and those keys, and reloads the key files without a restart.
//! - `secret`: where the secret and the admin token come from.
//!
//! Only HS256, RS256, ES256 and EdDSA are accepted, each with its own key:
//! `alg: none`, other algorithms, a token naming another algorithm than its
//! key's, unsigned or expired tokens and user ids outside the id grammar are
//! refused with a typed error. The roles `admin` and `system` mean something
//! to the service; other roles are carried along untouched.

pub mod claims;
pub mod keys;
mod secret;
pub mod verifier;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatroom_proto::ids::{IdError, check_id};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use claims::{DisplayInfo, RoomAccess, RoomRoles, TokenClaims};
pub use keys::{KeyError, PemKey, TokenAlgorithm};
pub use secret::{
    AdminToken, SecretError, SecretSource, default_admin_token_file, default_secret_file, state_dir,
};
pub use verifier::{Verifier, VerifierConfig};

/// Shortest secret accepted, in bytes: HS256 with less is guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// Seconds of clock skew tolerated when checking `exp` and `nbf` (and
/// past a session's token expiry before it is closed).
pub const LEEWAY_S: u64 = 5;

/// Why a token or a secret was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not three base64url parts with JSON inside, or no signature.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match the key.
    #[error("bad token signature")]
    BadSignature,
    /// An algorithm the service does not verify, `none` included.
    #[error("token algorithm is not HS256, RS256, ES256 or EdDSA")]
    WrongAlgorithm,
    /// The token names another algorithm than its key's (an RS256 key's
    /// `kid` on an HS256 token, say).
    #[error("token algorithm is not its key's")]
    AlgorithmMismatch,
    /// The token's `kid` names no key.
    #[error("token names an unknown key")]
    UnknownKid,
    /// No key of the token's algorithm (an HS256 token without a secret).
    #[error("no key for the token's algorithm")]
    NoKey,
    /// The token has no `kid` and several keys have its algorithm.
    #[error("token lacks a kid and several keys have its algorithm")]
    KidRequired,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` does not name this service's audience.
    #[error("token is for another audience")]
    WrongAudience,
    /// `iss` is not the trusted issuer.
    #[error("token is from another issuer")]
    WrongIssuer,
    /// A required claim is absent.
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    /// `sub` is not a valid user id.
    #[error("token user id {0}")]
    BadUserId(IdError),
    /// A claim is over one of its bounds.
    #[error("token claim {claim}: {reason}")]
    ClaimTooLarge {
        /// The claim, `info.name` for a field of `info`.
        claim: &'static str,
        /// Which bound.
        reason: &'static str,
    },
    /// A claim is malformed.
    #[error("token claim {claim}: {reason}")]
    BadClaim {
        /// The claim, `info.name` for a field of `info`.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The secret is too short to be safe.
    #[error("a secret or token must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

impl AuthError {
    /// A short label that stays the same across releases, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::UnknownKid => "unknown_kid",
            Self::NoKey => "no_key",
            Self::KidRequired => "kid_required",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::MissingClaim(_) => "missing_claim",
            Self::BadUserId(_) => "bad_user_id",
            Self::ClaimTooLarge { .. } => "claim_too_large",
            Self::BadClaim { .. } => "bad_claim",
            Self::WeakSecret => "weak_secret",
            Self::Sign(_) => "sign_failed",
        }
    }
}

/// Roles the service acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// Platform operators: moderation and admin API; their messages are PRIORITY.
    pub admin: bool,
    /// Trusted backends posting notices; their messages are PRIORITY.
    pub system: bool,
}

impl Roles {
    /// Whether the holder's messages go to the PRIORITY lane and bypass mutes.
    pub fn privileged(self) -> bool {
        self.admin || self.system
    }

    /// Role names as carried in tokens and node frames.
    pub fn names(self) -> Vec<String> {
        let mut names = Vec::new();
        if self.admin {
            names.push("admin".to_owned());
        }
        if self.system {
            names.push("system".to_owned());
        }
        names
    }

    /// Roles named in `names`; unknown names are ignored.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        let has = |role: &str| names.iter().any(|n| n.as_ref() == role);
        Self {
            admin: has("admin"),
            system: has("system"),
        }
    }
}

/// Who a verified token speaks for. Cheap to clone: a session keeps one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim, a valid user id.
    pub user: Arc<str>,
    /// What the user may do beyond chatting.
    pub roles: Roles,
    /// The rooms the token grants and the roles it gives in them; shared
    /// and empty when the token has neither claim.
    pub access: Arc<RoomAccess>,
    /// How the app's backend wants the user shown, if it said.
    pub info: Option<Arc<DisplayInfo>>,
    /// The `exp` claim, in seconds since the Unix epoch: a session outliving
    /// its token can be closed.
    pub expires_at: u64,
}

/// The claims a token is signed with and verified against.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(flatten)]
    extra: claims::ExtraClaims,
}

/// The HS256 secret, ready to mint and verify tokens.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from the shared secret.
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: validation(TokenAlgorithm::Hs256, None, None),
        })
    }

    /// A token for `user` with `roles`, valid for `ttl` from now.
    pub fn mint(&self, user: &str, roles: Roles, ttl: Duration) -> Result<String, AuthError> {
        self.mint_claims(&TokenClaims::new(user).roles(roles), ttl)
    }

    /// A token with `claims`, valid for `ttl` from now. Claims a verifier
    /// would refuse are refused here.
    pub fn mint_claims(&self, claims: &TokenClaims, ttl: Duration) -> Result<String, AuthError> {
        check_id(&claims.user).map_err(AuthError::BadUserId)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub: claims.user.clone(),
            exp: (now + ttl).as_secs(),
            roles: claims.roles.names(),
            extra: claims.extra_claims()?,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AuthError::Sign)
    }

    /// Checks the token's algorithm, signature, expiry and claims and
    /// returns who it speaks for. Only HS256 is accepted; `kid`, `aud` and
    /// `iss` are not looked at.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if check_header(token)?.alg != TokenAlgorithm::Hs256 {
            return Err(AuthError::AlgorithmMismatch);
        }
        decode(token, &self.decoding, &self.validation)
    }
}

/// How tokens of `alg` are validated: `exp` and `sub` required, `exp` and
/// `nbf` checked with [`LEEWAY_S`], `aud` and `iss` checked (and required)
/// only when configured, else ignored.
fn validation(alg: TokenAlgorithm, audience: Option<&str>, issuer: Option<&str>) -> Validation {
    let mut validation = Validation::new(alg.library());
    validation.leeway = LEEWAY_S;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Checks a token with `key` and turns its claims into an [`Identity`].
fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Identity, AuthError> {
    let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
        match e.into_kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
            _ => AuthError::Malformed,
        }
    })?;
    let claims = data.claims;
    check_id(&claims.sub).map_err(AuthError::BadUserId)?;
    Ok(Identity {
        user: claims.sub.into(),
        roles: Roles::from_names(&claims.roles),
        access: claims.extra.access()?,
        info: claims.extra.info()?,
        expires_at: claims.exp,
    })
}

/// The parts of a token's header that choose its key.
#[derive(Debug)]
struct TokenHeader {
    alg: TokenAlgorithm,
    kid: Option<String>,
}

/// Reads `alg` and `kid` and refuses any `alg` but the four by name, before
/// the library parses the header into its own enum (which cannot name
/// `none` and would call it malformed).
fn check_header(token: &str) -> Result<TokenHeader, AuthError> {
    use base64::Engine as _;

    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let header = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    let alg = TokenAlgorithm::from_name(&header.alg).ok_or(AuthError::WrongAlgorithm)?;
    Ok(TokenHeader {
        alg,
        kid: header.kid,
    })
}

#[cfg(test)]
mod tests;
