//! The [`Verifier`]: client tokens checked against the shared secret and the
//! identity providers' keys, with the key files reloaded while running.
//!
//! A token picks its key by `kid`, and the key decides the algorithm: an
//! HS256 token cannot borrow an RSA key's bytes as its secret, nor an RS256
//! token reach the secret. The key set sits behind a lock only long enough
//! to clone an `Arc`, so a reload never waits for a verification.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::keys::{KeyFiles, KeySet};
use super::{
    AuthError, Identity, KeyError, PemKey, TokenAlgorithm, TokenHeader, TokenKey, check_header,
    decode, validation,
};

/// What a [`Verifier`] trusts and checks.
#[derive(Debug, Clone, Default)]
pub struct VerifierConfig {
    /// The shared HS256 secret; tokens without a `kid` naming HS256 use it.
    pub secret: Option<TokenKey>,
    /// Public keys in PEM files.
    pub pem_keys: Vec<PemKey>,
    /// An RFC 7517 JWKS file (`{"keys": [...]}`).
    pub jwks: Option<std::path::PathBuf>,
    /// When set, tokens must carry this `aud` (alone or in an array); when
    /// not, `aud` is ignored.
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`; when not, `iss` is ignored.
    pub issuer: Option<String>,
}

/// Verifies client tokens; clones share the key set and its reloads.
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
}

struct Shared {
    config: VerifierConfig,
    /// One per algorithm, in [`TokenAlgorithm::ALL`] order.
    validations: [Validation; 4],
    keys: RwLock<Arc<KeySet>>,
    /// The digest of key files last refused, so that a bad file is parsed,
    /// counted and reported once rather than at every poll.
    refused: Mutex<Option<[u8; 32]>>,
    reload_failures: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.key_count())
            .field("audience", &self.shared.config.audience)
            .field("issuer", &self.shared.config.issuer)
            .finish_non_exhaustive()
    }
}

impl From<TokenKey> for Verifier {
    /// A verifier of HS256 tokens signed with `key` alone, checking no
    /// audience or issuer.
    fn from(key: TokenKey) -> Self {
        let config = VerifierConfig {
            secret: Some(key),
            ..VerifierConfig::default()
        };
        // With a secret and no key files there is nothing to read or refuse.
        Self::new(config).expect("a secret alone always loads")
    }
}

impl Verifier {
    /// Reads the key files; any bad key refuses them all.
    pub fn new(config: VerifierConfig) -> Result<Self, KeyError> {
        let keys = load(&config)?;
        let audience = config.audience.as_deref();
        let issuer = config.issuer.as_deref();
        let validations = TokenAlgorithm::ALL.map(|alg| validation(alg, audience, issuer));
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                validations,
                keys: RwLock::new(Arc::new(keys)),
                refused: Mutex::new(None),
                reload_failures: AtomicU64::new(0),
            }),
        })
    }

    /// Checks the token's algorithm against its key, its signature, expiry,
    /// audience, issuer and claims, and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = check_header(token)?;
        let keys = Arc::clone(&self.shared.keys.read());
        let key = self.select(&keys, &header)?;
        decode(token, key, &self.shared.validations[header.alg.index()])
    }

    /// The key a token with `header` is checked with.
    fn select<'a>(
        &'a self,
        keys: &'a KeySet,
        header: &TokenHeader,
    ) -> Result<&'a DecodingKey, AuthError> {
        if let Some(kid) = &header.kid {
            let key = keys
                .keys
                .iter()
                .find(|key| key.kid.as_ref() == Some(kid))
                .ok_or(AuthError::UnknownKid)?;
            if key.algorithm != header.alg {
                return Err(AuthError::AlgorithmMismatch);
            }
            return Ok(&key.decoding);
        }
        if header.alg == TokenAlgorithm::Hs256 {
            let secret = self.shared.config.secret.as_ref();
            return secret.map(|key| &key.decoding).ok_or(AuthError::NoKey);
        }
        let mut of_alg = keys.keys.iter().filter(|key| key.algorithm == header.alg);
        match (of_alg.next(), of_alg.next()) {
            (Some(key), None) => Ok(&key.decoding),
            (None, _) => Err(AuthError::NoKey),
            (Some(_), Some(_)) => Err(AuthError::KidRequired),
        }
    }

    /// Reads the key files again and swaps the key set if they changed and
    /// every key loaded: `Ok(true)` when swapped, `Ok(false)` when the files
    /// are as they were at the last reload (a refused version included). On
    /// error the old keys stay and the failure is counted.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let result = self.try_reload();
        if result.is_err() {
            self.shared.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn try_reload(&self) -> Result<bool, KeyError> {
        let config = &self.shared.config;
        let files = KeyFiles::read(&config.pem_keys, config.jwks.as_deref())?;
        let mut refused = self.shared.refused.lock();
        if files.digest == self.shared.keys.read().digest || Some(files.digest) == *refused {
            return Ok(false);
        }
        match files.parse().and_then(|keys| checked(config, keys)) {
            Ok(keys) => {
                *refused = None;
                *self.shared.keys.write() = Arc::new(keys);
                Ok(true)
            }
            Err(error) => {
                *refused = Some(files.digest);
                Err(error)
            }
        }
    }

    /// Polls the key files every `every` (at least a millisecond) until
    /// every clone of this verifier is dropped or the task is aborted.
    pub fn spawn_reload(&self, every: Duration) -> JoinHandle<()> {
        let shared = Arc::downgrade(&self.shared);
        let every = every.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the keys were just loaded.
            ticks.tick().await;
            // An unreadable file fails every poll: warn when the error changes.
            let mut last_error = None;
            loop {
                ticks.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let verifier = Verifier { shared };
                // Key files are small and local: reading them inline costs
                // less than a trip to the blocking pool.
                match verifier.reload() {
                    Ok(true) => info!(keys = verifier.key_count(), "token keys reloaded"),
                    Ok(false) => {}
                    Err(error) => {
                        let message = error.to_string();
                        if last_error.as_ref() != Some(&message) {
                            warn!(
                                %error,
                                failures = verifier.reload_failures(),
                                "token keys not reloaded, the old ones stay"
                            );
                        }
                        last_error = Some(message);
                        continue;
                    }
                }
                last_error = None;
            }
        })
    }

    /// How many reloads failed since start.
    pub fn reload_failures(&self) -> u64 {
        self.shared.reload_failures.load(Ordering::Relaxed)
    }

    /// How many keys verify tokens: the secret, if any, and the files' keys.
    pub fn key_count(&self) -> usize {
        usize::from(self.shared.config.secret.is_some()) + self.shared.keys.read().keys.len()
    }
}

fn load(config: &VerifierConfig) -> Result<KeySet, KeyError> {
    let files = KeyFiles::read(&config.pem_keys, config.jwks.as_deref())?;
    checked(config, files.parse()?)
}

/// Refuses a key set that, with the secret, could verify nothing.
fn checked(config: &VerifierConfig, keys: KeySet) -> Result<KeySet, KeyError> {
    if config.secret.is_none() && keys.keys.is_empty() {
        return Err(KeyError::NoKeys);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
