//! Who may use the admin API, and for what: named keys with scopes.
//!
//! Keys live in a JSON file (`--admin-keys`) that the node reloads while it
//! runs, so a key is added or revoked without a restart:
//!
//! ```json
//! {"keys": [{"name": "ops-console", "sha256": "<64 hex digits>",
//!            "scopes": ["read", "moderate", "configure", "publish"]}]}
//! ```
//!
//! Only the SHA-256 of each key is kept, so the file holds no secret. The
//! single admin token (`--admin-token`) keeps working beside the file, as a
//! key named [`TOKEN_KEY_NAME`] with every scope. A request is matched to a
//! key by the digest of its bearer token, compared in constant time.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatroom_cluster::auth::AdminToken;
use chatroom_cluster::reload::{ReloadError, Reloaded};
use serde::{Deserialize, Serialize};

/// Most keys a file holds.
pub const MAX_KEYS: usize = 256;

/// Longest key name, in bytes (of `[A-Za-z0-9_.-]`).
pub const MAX_KEY_NAME_BYTES: usize = 64;

/// The name the admin token goes by, in audit records and refusals; no key
/// of the file may take it.
pub const TOKEN_KEY_NAME: &str = "admin-token";

/// How often the keys file is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Random bytes in a key made by [`new_key`].
const NEW_KEY_BYTES: usize = 32;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every read (the GET routes).
    Read,
    /// Mutes, bans and the whitelist.
    Moderate,
    /// Room settings, word lists and closing a room.
    Configure,
    /// Posting notices into rooms.
    Publish,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 4] = [Self::Read, Self::Moderate, Self::Configure, Self::Publish];

    /// The scope's name, as keys files and refusals spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Moderate => "moderate",
            Self::Configure => "configure",
            Self::Publish => "publish",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: what the admin token holds.
    pub const ALL: Self = Self(0b1111);

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |&s| self.contains(s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        Self(scopes.into_iter().fold(0, |set, scope| set | scope.bit()))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// One key as the file spells it, and as [`new_key`] prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Unique in the file; named in audit records.
    pub name: String,
    /// SHA-256 of the key, 64 hex digits.
    pub sha256: String,
    /// What the key may do; at least one.
    pub scopes: Vec<Scope>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

/// Why a keys file (or a key to make) was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Not `{"keys": [...]}` of well-formed entries (an unknown scope or field included).
    #[error("not a keys file: {0}")]
    Json(#[from] serde_json::Error),
    /// More keys than [`MAX_KEYS`].
    #[error("{0} keys, at most {MAX_KEYS} allowed")]
    TooMany(usize),
    /// A name is empty, too long, or has a char outside `[A-Za-z0-9_.-]`.
    #[error("key name {0:?} must be 1 to {MAX_KEY_NAME_BYTES} bytes of A-Z, a-z, 0-9, _, . and -")]
    BadName(String),
    /// A key takes the admin token's name.
    #[error("the key name {TOKEN_KEY_NAME} is the admin token's")]
    ReservedName,
    /// Two keys have the same name.
    #[error("two keys are named {0}")]
    DuplicateName(String),
    /// A `sha256` is not 64 hex digits.
    #[error("the sha256 of key {0} is not 64 hex digits")]
    BadDigest(String),
    /// Two keys have the same digest, so a request could not tell them apart.
    #[error("keys {0} and {1} have the same sha256")]
    DuplicateDigest(String, String),
    /// A key has no scope.
    #[error("key {0} has no scope")]
    NoScopes(String),
}

/// One key, ready to be matched.
#[derive(Clone)]
pub struct AdminKey {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Scopes,
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl AdminKey {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it may do.
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }
}

/// The keys of a keys file, checked.
#[derive(Debug, Clone, Default)]
pub struct AdminKeys {
    keys: Vec<AdminKey>,
}

impl AdminKeys {
    /// Parses and checks a keys file's contents: every bound, unique names
    /// and digests, at least one scope per key.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeysError> {
        let file: KeysFile = serde_json::from_slice(bytes)?;
        if file.keys.len() > MAX_KEYS {
            return Err(KeysError::TooMany(file.keys.len()));
        }
        let mut keys: Vec<AdminKey> = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            check_name(&entry.name)?;
            let digest = parse_digest(&entry.sha256)
                .ok_or_else(|| KeysError::BadDigest(entry.name.clone()))?;
            let scopes: Scopes = entry.scopes.iter().copied().collect();
            if scopes.is_empty() {
                return Err(KeysError::NoScopes(entry.name));
            }
            for other in &keys {
                if *other.name == entry.name {
                    return Err(KeysError::DuplicateName(entry.name));
                }
                if other.digest == digest {
                    return Err(KeysError::DuplicateDigest(
                        other.name.to_string(),
                        entry.name,
                    ));
                }
            }
            keys.push(AdminKey {
                name: entry.name.into(),
                digest,
                scopes,
            });
        }
        Ok(Self { keys })
    }

    /// The key whose digest is `digest`.
    pub fn find(&self, digest: &[u8; 32]) -> Option<&AdminKey> {
        self.keys
            .iter()
            .find(|key| same_digest(&key.digest, digest))
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (every key revoked).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn check_name(name: &str) -> Result<(), KeysError> {
    let well_formed = (1..=MAX_KEY_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !well_formed {
        return Err(KeysError::BadName(name.to_owned()));
    }
    if name == TOKEN_KEY_NAME {
        return Err(KeysError::ReservedName);
    }
    Ok(())
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Compares every byte whatever the first difference, so the time taken
/// tells nothing of where two digests differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads `path` as a keys file, to be watched with [`watch`].
pub fn load(path: impl Into<PathBuf>) -> Result<Reloaded<AdminKeys>, ReloadError> {
    Reloaded::load(path, AdminKeys::parse)
}

/// Checks the keys file every [`RELOAD_EVERY`] until the returned guard is
/// dropped.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn watch(keys: &Reloaded<AdminKeys>) -> KeysWatch {
    KeysWatch(keys.spawn_watch("admin keys", RELOAD_EVERY))
}

/// The task watching a keys file; stops it when dropped.
#[derive(Debug)]
pub struct KeysWatch(tokio::task::JoinHandle<()>);

impl Drop for KeysWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A key of the file or the admin token, as a request presented it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name ([`TOKEN_KEY_NAME`] for the admin token).
    pub key: Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
}

/// Every credential the admin API takes: the admin token and the keys file,
/// either or both.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    token: Option<AdminToken>,
    keys: Option<Reloaded<AdminKeys>>,
}

impl Keyring {
    /// Takes `token` (every scope) and the keys of `keys`, as they are
    /// whenever a request comes.
    pub fn new(token: Option<AdminToken>, keys: Option<Reloaded<AdminKeys>>) -> Self {
        Self { token, keys }
    }

    /// Only the admin token.
    pub fn token(token: AdminToken) -> Self {
        Self::new(Some(token), None)
    }

    /// Whether neither a token nor a keys file is configured: the API is off.
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.keys.is_none()
    }

    /// Whose the presented bearer token is, if anyone's.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Caller> {
        if let Some(token) = &self.token
            && token.verify(presented)
        {
            return Some(Caller {
                key: Arc::from(TOKEN_KEY_NAME),
                scopes: Scopes::ALL,
            });
        }
        let keys = self.keys.as_ref()?.current();
        let key = keys.find(&sha256(presented))?;
        Some(Caller {
            key: Arc::clone(&key.name),
            scopes: key.scopes,
        })
    }
}

/// A fresh random key named `name` with `scopes`: the key, to hand over
/// once, and the entry to add to the keys file.
pub fn new_key(name: &str, scopes: &[Scope]) -> Result<(String, KeyEntry), KeysError> {
    use ring::rand::SecureRandom as _;

    check_name(name)?;
    if scopes.is_empty() {
        return Err(KeysError::NoScopes(name.to_owned()));
    }
    let mut bytes = [0; NEW_KEY_BYTES];
    // The system's random source failing is not something to go on from.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    let key = to_hex(&bytes);
    let mut listed: Vec<Scope> = Vec::new();
    for &scope in scopes {
        if !listed.contains(&scope) {
            listed.push(scope);
        }
    }
    let entry = KeyEntry {
        name: name.to_owned(),
        sha256: to_hex(&sha256(key.as_bytes())),
        scopes: listed,
    };
    Ok((key, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, key: &str, scopes: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "sha256": to_hex(&sha256(key.as_bytes())),
            "scopes": scopes,
        })
    }

    fn parse(keys: &[serde_json::Value]) -> Result<AdminKeys, KeysError> {
        AdminKeys::parse(serde_json::json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn keys_are_found_by_their_digest_with_their_scopes() {
        let keys = parse(&[
            entry("viewer", "viewer-key", &["read"]),
            entry("mods", "mods-key", &["read", "moderate", "read"]),
        ])
        .unwrap();
        assert_eq!(keys.len(), 2);
        let mods = keys.find(&sha256(b"mods-key")).unwrap();
        assert_eq!(mods.name(), "mods");
        assert!(mods.scopes().contains(Scope::Moderate));
        assert!(!mods.scopes().contains(Scope::Configure));
        assert_eq!(format!("{:?}", mods.scopes()), "{Read, Moderate}");
        assert!(keys.find(&sha256(b"other")).is_none());
        // Digests are written in either case.
        let upper = serde_json::json!({
            "name": "upper",
            "sha256": to_hex(&sha256(b"k")).to_uppercase(),
            "scopes": ["publish"],
        });
        assert!(parse(&[upper]).unwrap().find(&sha256(b"k")).is_some());
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_token_has_every_scope_beside_the_keys() {
        let token = AdminToken::new(b"admin-token-0123456789").unwrap();
        let keyring = Keyring::token(token.clone());
        let caller = keyring.authenticate(b"admin-token-0123456789").unwrap();
        assert_eq!(&*caller.key, TOKEN_KEY_NAME);
        assert_eq!(caller.scopes, Scopes::ALL);
        assert!(keyring.authenticate(b"admin-token-012345678").is_none());
        assert!(Keyring::default().is_empty());
        assert!(!keyring.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let file = serde_json::json!({ "keys": [entry("viewer", "viewer-key", &["read"])] });
        std::fs::write(&path, file.to_string()).unwrap();
        let keyring = Keyring::new(Some(token), Some(load(&path).unwrap()));
        let viewer = keyring.authenticate(b"viewer-key").unwrap();
        assert_eq!(&*viewer.key, "viewer");
        assert_eq!(viewer.scopes, [Scope::Read].into_iter().collect());
        assert!(keyring.authenticate(b"admin-token-0123456789").is_some());
        assert!(keyring.authenticate(b"").is_none());
    }

    #[test]
    fn every_bad_file_is_refused() {
        let good = entry("a", "key-a", &["read"]);
        let bad = |keys: &[serde_json::Value]| parse(keys).unwrap_err();
        let many: Vec<_> = (0..=MAX_KEYS)
            .map(|i| entry(&format!("k{i}"), &format!("key-{i}"), &["read"]))
            .collect();
        assert!(matches!(bad(&many), KeysError::TooMany(257)));
        assert!(parse(&many[..MAX_KEYS]).is_ok());
        let long = "n".repeat(MAX_KEY_NAME_BYTES + 1);
        for name in ["", "a b", "ключ", long.as_str()] {
            assert!(matches!(
                bad(&[entry(name, "k", &["read"])]),
                KeysError::BadName(_)
            ));
        }
        assert!(matches!(
            bad(&[entry(TOKEN_KEY_NAME, "k", &["read"])]),
            KeysError::ReservedName
        ));
        assert!(matches!(
            bad(&[good.clone(), entry("a", "key-b", &["read"])]),
            KeysError::DuplicateName(_)
        ));
        assert!(matches!(
            bad(&[good.clone(), entry("b", "key-a", &["moderate"])]),
            KeysError::DuplicateDigest(..)
        ));
        assert!(matches!(
            bad(&[entry("a", "k", &[])]),
            KeysError::NoScopes(_)
        ));
        for digest in ["", "00", &"g".repeat(64), &"0".repeat(63), &"é".repeat(32)] {
            let key = serde_json::json!({"name": "a", "sha256": digest, "scopes": ["read"]});
            assert!(matches!(bad(&[key]), KeysError::BadDigest(_)));
        }
        let unknown_scope =
            serde_json::json!({"name": "a", "sha256": "0".repeat(64), "scopes": ["admin"]});
        assert!(matches!(bad(&[unknown_scope]), KeysError::Json(_)));
        let extra = serde_json::json!({"name": "a", "sha256": "0".repeat(64), "scopes": ["read"], "key": "x"});
        assert!(matches!(bad(&[extra]), KeysError::Json(_)));
        for text in [&b"[]"[..], b"{}", br#"{"keys": [], "more": 1}"#, b"keys"] {
            assert!(matches!(AdminKeys::parse(text), Err(KeysError::Json(_))));
        }
    }

    #[test]
    fn a_new_key_matches_its_entry() {
        let (key, entry) = new_key("ops", &[Scope::Read, Scope::Moderate, Scope::Read]).unwrap();
        assert_eq!(key.len(), 2 * NEW_KEY_BYTES);
        assert_eq!(entry.scopes, [Scope::Read, Scope::Moderate]);
        let file = serde_json::json!({ "keys": [entry] });
        let keys = AdminKeys::parse(file.to_string().as_bytes()).unwrap();
        let found = keys.find(&sha256(key.as_bytes())).unwrap();
        assert_eq!(found.name(), "ops");
        let (other, _) = new_key("ops", &[Scope::Read]).unwrap();
        assert_ne!(key, other);
        assert!(matches!(
            new_key("a b", &[Scope::Read]),
            Err(KeysError::BadName(_))
        ));
        assert!(matches!(new_key("ops", &[]), Err(KeysError::NoScopes(_))));
    }
}
