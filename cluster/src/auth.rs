//! Tokens: HS256 JWTs with `sub` (the user id), `exp` and `roles`.
//!
//! Only HS256 is accepted; `alg: none`, other algorithms, unsigned or expired
//! tokens and user ids outside the id grammar are refused with a typed error.
//! The roles `admin` and `system` mean something to the service; other roles
//! are carried along untouched.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatroom_proto::ids::{IdError, check_id};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest secret accepted, in bytes: HS256 with less is guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// Seconds of clock skew tolerated when checking `exp`.
const LEEWAY_S: u64 = 5;

/// Why a token or a secret was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not three base64url parts with JSON inside, or no signature.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match the secret.
    #[error("bad token signature")]
    BadSignature,
    /// An algorithm other than HS256, including `none`.
    #[error("token algorithm is not HS256")]
    WrongAlgorithm,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// A required claim is absent.
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    /// `sub` is not a valid user id.
    #[error("token user id {0}")]
    BadUserId(IdError),
    /// The secret is too short to be safe.
    #[error("a secret or token must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Sign(jsonwebtoken::errors::Error),
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

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim, a valid user id.
    pub user: Arc<str>,
    /// What the user may do beyond chatting.
    pub roles: Roles,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    roles: Vec<String>,
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
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// A token for `user` with `roles`, valid for `ttl` from now.
    pub fn mint(&self, user: &str, roles: Roles, ttl: Duration) -> Result<String, AuthError> {
        check_id(user).map_err(AuthError::BadUserId)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub: user.to_owned(),
            exp: (now + ttl).as_secs(),
            roles: roles.names(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AuthError::Sign)
    }

    /// Checks the token's algorithm, signature and expiry and returns who it
    /// speaks for.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        check_algorithm(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.into_kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                _ => AuthError::Malformed,
            })?;
        check_id(&data.claims.sub).map_err(AuthError::BadUserId)?;
        Ok(Identity {
            user: data.claims.sub.into(),
            roles: Roles::from_names(&data.claims.roles),
        })
    }
}

/// Refuses any `alg` but HS256 by name, before the library parses the header
/// into its own enum (which cannot name `none` and would call it malformed).
fn check_algorithm(token: &str) -> Result<(), AuthError> {
    use base64::Engine as _;

    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
    }
    let header = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.alg == "HS256" {
        Ok(())
    } else {
        Err(AuthError::WrongAlgorithm)
    }
}

/// Where the token secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Given directly (flag or environment).
    Inline(String),
    /// Read from a file; the embedded server creates it with a random secret when
    /// absent.
    File(PathBuf),
}

impl SecretSource {
    /// The key, reading the file if needed. With `create` a missing file is
    /// written with a fresh random secret (mode 0600); the flag tells whether
    /// that happened.
    pub fn load(&self, create: bool) -> Result<(TokenKey, bool), SecretError> {
        let (secret, created) = self.bytes(create)?;
        Ok((TokenKey::new(&secret)?, created))
    }

    /// The operators' token (same rules as [`load`](Self::load)).
    pub fn load_admin(&self, create: bool) -> Result<(AdminToken, bool), SecretError> {
        let (secret, created) = self.bytes(create)?;
        Ok((AdminToken::new(&secret)?, created))
    }

    /// The secret's bytes, and whether the file was created for it (same
    /// rules as [`load`](Self::load)): 64 random hex digits when made.
    pub fn bytes(&self, create: bool) -> Result<(Vec<u8>, bool), SecretError> {
        match self {
            Self::Inline(secret) => Ok((secret.as_bytes().to_vec(), false)),
            Self::File(path) => read_secret_file(path, create),
        }
    }
}

/// The bearer token operators present to the admin API. Only its SHA-256 is
/// kept, and a presented token is checked by comparing digests in constant
/// time.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token of at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(token: &[u8]) -> Result<Self, AuthError> {
        if token.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        Ok(Self {
            digest: sha256(token),
        })
    }

    /// Whether `presented` is this token.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let digest = sha256(presented);
        let differing = self
            .digest
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differing == 0
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Why the secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading or writing the secret file failed.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The secret itself is unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Where the embedded server keeps its files (token secret, generated
/// certificate): `chatroom` under `$XDG_STATE_HOME` (or `~/.local/state`),
/// else under the temp directory.
pub fn state_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("chatroom")
}

/// The default secret file of the embedded server.
pub fn default_secret_file() -> PathBuf {
    state_dir().join("token-secret")
}

/// The default admin token file of the embedded server.
pub fn default_admin_token_file() -> PathBuf {
    state_dir().join("admin-token")
}

fn read_secret_file(path: &Path, create: bool) -> Result<(Vec<u8>, bool), SecretError> {
    let io_err = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((text.trim().as_bytes().to_vec(), false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err)?;
            }
            let secret: String = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            match write_new_private(path, secret.as_bytes()) {
                Ok(()) => Ok((secret.into_bytes(), true)),
                // Another process created it first: use theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_secret_file(path, false),
                Err(e) => Err(io_err(e)),
            }
        }
        Err(e) => Err(io_err(e)),
    }
}

fn write_new_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> TokenKey {
        TokenKey::new(SECRET).unwrap()
    }

    fn b64(json: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn far_future() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    }

    #[test]
    fn admin_tokens_match_only_themselves() {
        let token = AdminToken::new(SECRET).unwrap();
        assert!(token.verify(SECRET));
        assert!(!token.verify(b"0123456789abcdef0123456789abcdeF"));
        assert!(!token.verify(b""));
        assert!(matches!(
            AdminToken::new(b"short"),
            Err(AuthError::WeakSecret)
        ));
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }

    #[test]
    fn minted_tokens_verify_with_their_roles() {
        let key = key();
        let token = key
            .mint(
                "alice",
                Roles {
                    admin: true,
                    system: false,
                },
                Duration::from_secs(60),
            )
            .unwrap();
        let who = key.verify(&token).unwrap();
        assert_eq!(&*who.user, "alice");
        assert!(who.roles.admin && !who.roles.system);
    }

    #[test]
    fn refuses_a_token_signed_with_another_secret() {
        let other = TokenKey::new(b"another-secret-of-32-bytes-000000").unwrap();
        let token = other
            .mint("alice", Roles::default(), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(key().verify(&token), Err(AuthError::BadSignature)));
    }

    #[test]
    fn refuses_expired_tokens() {
        let key = key();
        let claims = Claims {
            sub: "alice".into(),
            exp: far_future() - 7200,
            roles: Vec::new(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key.encoding).unwrap();
        assert!(matches!(key.verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn refuses_alg_none_and_unsigned_tokens() {
        let body = b64(&format!(r#"{{"sub":"alice","exp":{}}}"#, far_future()));
        let none = format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        assert!(matches!(
            key().verify(&none),
            Err(AuthError::WrongAlgorithm)
        ));
        let unsigned = format!("{}.{body}", b64(r#"{"alg":"HS256","typ":"JWT"}"#));
        assert!(matches!(key().verify(&unsigned), Err(AuthError::Malformed)));
        let empty_sig = format!("{}.{body}.", b64(r#"{"alg":"HS256","typ":"JWT"}"#));
        assert!(matches!(
            key().verify(&empty_sig),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn refuses_other_algorithms_and_garbage() {
        let body = b64(&format!(r#"{{"sub":"alice","exp":{}}}"#, far_future()));
        let hs512 = format!("{}.{body}.c2ln", b64(r#"{"alg":"HS512","typ":"JWT"}"#));
        assert!(matches!(
            key().verify(&hs512),
            Err(AuthError::WrongAlgorithm)
        ));
        assert!(matches!(
            key().verify("not a token"),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(key().verify(""), Err(AuthError::Malformed)));
    }

    #[test]
    fn refuses_bad_user_ids_and_weak_secrets() {
        assert!(matches!(
            key().mint("a b", Roles::default(), Duration::from_secs(1)),
            Err(AuthError::BadUserId(_))
        ));
        assert!(matches!(
            TokenKey::new(b"short"),
            Err(AuthError::WeakSecret)
        ));
    }

    #[test]
    fn secret_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/token-secret");
        let source = SecretSource::File(path.clone());
        let (first, created) = source.load(true).unwrap();
        assert!(created);
        let (second, created_again) = source.load(true).unwrap();
        assert!(!created_again);
        let token = first
            .mint("bob", Roles::default(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(&*second.verify(&token).unwrap().user, "bob");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let missing = SecretSource::File(dir.path().join("absent"));
        assert!(matches!(missing.load(false), Err(SecretError::Io { .. })));
    }
}
