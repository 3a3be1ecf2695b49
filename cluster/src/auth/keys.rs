//! Public keys of identity providers: PEM files and a JWKS file, read into
//! one [`KeySet`] that is either loaded whole or refused whole.
//!
//! Every key is pinned to one algorithm when it is loaded (the JWK's `alg`,
//! or the one its type implies), so a token can never pick how its key is
//! used. Keys the service cannot verify with, or should not trust (RSA under
//! 2048 bits, encryption keys, private material), refuse the file rather
//! than being skipped, so that a mistake shows at load time.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use spki::der::Decode as _;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

/// Most keys in a key set.
pub const MAX_KEYS: usize = 64;
/// Largest key file read, in bytes: 64 JWKs of RSA-8192 fit many times over.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;
/// Shortest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
/// Longest RSA modulus accepted, in bits: ring verifies no longer ones.
const MAX_RSA_BITS: usize = 8192;

// The object identifiers of SubjectPublicKeyInfo algorithms. Each literal is
// a valid OID; `new_unwrap` runs at compile time.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The signature algorithms tokens may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenAlgorithm {
    /// HMAC-SHA256 with the shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 to 8192 bits.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl TokenAlgorithm {
    /// Every algorithm, in the order of [`index`](Self::index).
    pub(super) const ALL: [Self; 4] = [Self::Hs256, Self::Rs256, Self::Es256, Self::EdDsa];

    /// The algorithm a JOSE `alg` names; `None` for any other, `none`
    /// included.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The JOSE name (`HS256`, `RS256`, `ES256`, `EdDSA`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Position in [`ALL`](Self::ALL), for tables indexed by algorithm.
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn library(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for TokenAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public key in a PEM file (SubjectPublicKeyInfo `PUBLIC KEY`, or PKCS#1
/// `RSA PUBLIC KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemKey {
    /// The file.
    pub path: PathBuf,
    /// The one algorithm tokens signed with this key may name; it must fit
    /// the key's type.
    pub algorithm: TokenAlgorithm,
    /// The `kid` tokens name this key by; without one, tokens of its
    /// algorithm that carry no `kid` use it if it is the only such key.
    pub kid: Option<String>,
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A key file is larger than any key file should be.
    #[error("key file {path} is larger than 1 MiB")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The JWKS file is not JSON with a `keys` array (truncated, say).
    #[error("jwks file {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A JWK is not an object of string parameters.
    #[error("{key}: {source}")]
    Jwk {
        /// Which key.
        key: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A key is not in a form this service reads.
    #[error("{key}: {reason}")]
    Malformed {
        /// Which key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key type other than RSA, EC or OKP.
    #[error("{key}: key type {kty} is not RSA, EC or OKP")]
    UnknownKeyType {
        /// Which key.
        key: String,
        /// The JWK `kty`, or the SubjectPublicKeyInfo algorithm.
        kty: String,
    },
    /// A curve other than P-256 (EC) or Ed25519 (OKP).
    #[error("{key}: curve {crv} is not P-256 or Ed25519")]
    UnsupportedCurve {
        /// Which key.
        key: String,
        /// The JWK `crv`, or the SubjectPublicKeyInfo curve.
        crv: String,
    },
    /// An `alg` other than RS256, ES256 or EdDSA.
    #[error("{key}: algorithm {alg} is not RS256, ES256 or EdDSA")]
    UnsupportedAlgorithm {
        /// Which key.
        key: String,
        /// The algorithm named.
        alg: String,
    },
    /// An algorithm that does not fit the key's type (ES256 for an RSA key).
    #[error("{key}: algorithm {alg} does not fit the key's type")]
    AlgorithmMismatch {
        /// Which key.
        key: String,
        /// The algorithm named.
        alg: TokenAlgorithm,
    },
    /// Two keys share a `kid`, so a token naming it would be ambiguous.
    #[error("{key}: kid {kid} is used by another key")]
    DuplicateKid {
        /// The second key with the `kid`.
        key: String,
        /// The `kid`.
        kid: String,
    },
    /// An RSA modulus shorter than 2048 bits.
    #[error("{key}: rsa key of {bits} bits, fewer than 2048")]
    WeakRsaKey {
        /// Which key.
        key: String,
        /// The modulus length.
        bits: usize,
    },
    /// A JWK whose `use` is not `sig`.
    #[error("{key}: use {use_} is not sig")]
    NotForSigning {
        /// Which key.
        key: String,
        /// The JWK `use`.
        use_: String,
    },
    /// A key carries private parameters: the file was not meant to be public.
    #[error("{key}: holds a private key")]
    PrivateKey {
        /// Which key.
        key: String,
    },
    /// More keys than [`MAX_KEYS`].
    #[error("{count} keys, more than 64")]
    TooManyKeys {
        /// How many there were.
        count: usize,
    },
    /// Neither a secret nor any key: no token could verify.
    #[error("no secret and no key to verify tokens with")]
    NoKeys,
}

/// A key ready to verify tokens of its one algorithm.
pub(super) struct VerifyingKey {
    pub(super) kid: Option<String>,
    pub(super) algorithm: TokenAlgorithm,
    pub(super) decoding: DecodingKey,
}

/// Every key read from the key files, and a digest of those files so that an
/// unchanged file is not parsed again.
pub(super) struct KeySet {
    pub(super) keys: Vec<VerifyingKey>,
    pub(super) digest: [u8; 32],
}

/// The key files' contents, read before anything is parsed.
pub(super) struct KeyFiles {
    pem: Vec<(PemKey, Vec<u8>)>,
    jwks: Option<(PathBuf, Vec<u8>)>,
    pub(super) digest: [u8; 32],
}

impl KeyFiles {
    /// Reads every file, whole, and digests them.
    pub(super) fn read(pem: &[PemKey], jwks: Option<&Path>) -> Result<Self, KeyError> {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut add = |path: &Path, bytes: &[u8]| {
            context.update(path.as_os_str().as_encoded_bytes());
            context.update(&[0]);
            context.update(&(bytes.len() as u64).to_le_bytes());
            context.update(bytes);
        };
        let mut pem_files = Vec::with_capacity(pem.len());
        for key in pem {
            let bytes = read_key_file(&key.path)?;
            add(&key.path, &bytes);
            pem_files.push((key.clone(), bytes));
        }
        let jwks = match jwks {
            Some(path) => {
                let bytes = read_key_file(path)?;
                add(path, &bytes);
                Some((path.to_owned(), bytes))
            }
            None => None,
        };
        let mut digest = [0; 32];
        digest.copy_from_slice(context.finish().as_ref());
        Ok(Self {
            pem: pem_files,
            jwks,
            digest,
        })
    }

    /// Parses every key; one bad key refuses them all.
    pub(super) fn parse(&self) -> Result<KeySet, KeyError> {
        let mut keys = Vec::new();
        for (pem, bytes) in &self.pem {
            let name = pem.path.display().to_string();
            let decoding = parse_pem(&name, bytes, pem.algorithm)?;
            keys.push((
                name,
                VerifyingKey {
                    kid: pem.kid.clone(),
                    algorithm: pem.algorithm,
                    decoding,
                },
            ));
        }
        if let Some((path, bytes)) = &self.jwks {
            keys.extend(parse_jwks(path, bytes)?);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyError::TooManyKeys { count: keys.len() });
        }
        let mut kids = HashSet::new();
        for (name, key) in &keys {
            if let Some(kid) = &key.kid
                && !kids.insert(kid)
            {
                return Err(KeyError::DuplicateKid {
                    key: name.clone(),
                    kid: kid.clone(),
                });
            }
        }
        Ok(KeySet {
            keys: keys.into_iter().map(|(_, key)| key).collect(),
            digest: self.digest,
        })
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::FileTooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// What a public key is, which decides the one algorithm it fits.
fn algorithm_of(decoded: &PublicKey) -> TokenAlgorithm {
    match decoded {
        PublicKey::Rsa(_) => TokenAlgorithm::Rs256,
        PublicKey::P256(_) => TokenAlgorithm::Es256,
        PublicKey::Ed25519(_) => TokenAlgorithm::EdDsa,
    }
}

/// A public key's bytes as ring takes them.
enum PublicKey {
    /// PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// An uncompressed point.
    P256(Vec<u8>),
    /// The 32-byte public key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn decoding(self) -> DecodingKey {
        match self {
            Self::Rsa(der) => DecodingKey::from_rsa_der(&der),
            Self::P256(point) => DecodingKey::from_ec_der(&point),
            Self::Ed25519(key) => DecodingKey::from_ed_der(&key),
        }
    }
}

fn malformed(key: &str, reason: &'static str) -> KeyError {
    KeyError::Malformed {
        key: key.to_owned(),
        reason,
    }
}

fn parse_pem(name: &str, bytes: &[u8], algorithm: TokenAlgorithm) -> Result<DecodingKey, KeyError> {
    let (label, der) =
        spki::der::pem::decode_vec(bytes).map_err(|_| malformed(name, "not a pem file"))?;
    let key = match label {
        "PUBLIC KEY" => parse_spki(name, &der)?,
        "RSA PUBLIC KEY" => PublicKey::Rsa(checked_pkcs1(name, &der)?),
        _ => return Err(malformed(name, "not a PUBLIC KEY or RSA PUBLIC KEY pem")),
    };
    if algorithm_of(&key) != algorithm {
        return Err(KeyError::AlgorithmMismatch {
            key: name.to_owned(),
            alg: algorithm,
        });
    }
    Ok(key.decoding())
}

fn parse_spki(name: &str, der: &[u8]) -> Result<PublicKey, KeyError> {
    let info = SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|_| malformed(name, "not a SubjectPublicKeyInfo"))?;
    let key = info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed(name, "public key is not whole bytes"))?;
    match info.algorithm.oid {
        RSA_ENCRYPTION => Ok(PublicKey::Rsa(checked_pkcs1(name, key)?)),
        EC_PUBLIC_KEY => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| malformed(name, "ec key without a named curve"))?;
            if curve != P256 {
                return Err(KeyError::UnsupportedCurve {
                    key: name.to_owned(),
                    crv: curve.to_string(),
                });
            }
            if key.len() != 65 || key[0] != 4 {
                return Err(malformed(name, "not an uncompressed P-256 point"));
            }
            Ok(PublicKey::P256(key.to_vec()))
        }
        ED25519 => {
            if key.len() != 32 {
                return Err(malformed(name, "ed25519 key is not 32 bytes"));
            }
            Ok(PublicKey::Ed25519(key.to_vec()))
        }
        other => Err(KeyError::UnknownKeyType {
            key: name.to_owned(),
            kty: other.to_string(),
        }),
    }
}

/// The PKCS#1 `RSAPublicKey` in `der`, once its modulus is long enough.
fn checked_pkcs1(name: &str, der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let key = pkcs1::RsaPublicKey::from_der(der)
        .map_err(|_| malformed(name, "not a pkcs#1 rsa public key"))?;
    check_rsa_modulus(name, key.modulus.as_bytes())?;
    Ok(der.to_vec())
}

/// A big-endian integer without its leading zero bytes.
fn minimal(integer: &[u8]) -> &[u8] {
    &integer[integer.iter().take_while(|&&b| b == 0).count()..]
}

fn check_rsa_modulus(name: &str, modulus: &[u8]) -> Result<(), KeyError> {
    let modulus = minimal(modulus);
    let bits = match modulus.first() {
        Some(first) => modulus.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err(KeyError::WeakRsaKey {
            key: name.to_owned(),
            bits,
        });
    }
    if bits > MAX_RSA_BITS {
        return Err(malformed(name, "rsa key longer than 8192 bits"));
    }
    Ok(())
}

/// A JWKS file as far as the key count.
#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// The JWK parameters this service reads; others are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<String>,
}

fn parse_jwks(path: &Path, bytes: &[u8]) -> Result<Vec<(String, VerifyingKey)>, KeyError> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|source| KeyError::Json {
        path: path.to_owned(),
        source,
    })?;
    if set.keys.len() > MAX_KEYS {
        return Err(KeyError::TooManyKeys {
            count: set.keys.len(),
        });
    }
    set.keys
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let mut name = format!("{} key {index}", path.display());
            let jwk: Jwk = serde_json::from_value(value).map_err(|source| KeyError::Jwk {
                key: name.clone(),
                source,
            })?;
            if let Some(kid) = &jwk.kid {
                name = format!("{name} (kid {kid:?})");
            }
            let key = parse_jwk(&name, jwk)?;
            Ok((name, key))
        })
        .collect()
}

fn parse_jwk(name: &str, jwk: Jwk) -> Result<VerifyingKey, KeyError> {
    if let Some(use_) = jwk.use_.filter(|use_| use_ != "sig") {
        return Err(KeyError::NotForSigning {
            key: name.to_owned(),
            use_,
        });
    }
    if jwk.d.is_some() {
        return Err(KeyError::PrivateKey {
            key: name.to_owned(),
        });
    }
    let param = |value: Option<String>, missing: &'static str| -> Result<Vec<u8>, KeyError> {
        let text = value.ok_or_else(|| malformed(name, missing))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| malformed(name, "a parameter is not base64url"))
    };
    let curve = |crv: Option<String>, expected: &str| match crv {
        Some(crv) if crv == expected => Ok(()),
        crv => Err(KeyError::UnsupportedCurve {
            key: name.to_owned(),
            crv: crv.unwrap_or_else(|| "(none)".to_owned()),
        }),
    };
    let (algorithm, decoding) = match jwk.kty.as_str() {
        "RSA" => {
            let n = param(jwk.n, "rsa key without n")?;
            let e = param(jwk.e, "rsa key without e")?;
            // ring takes both integers at their minimal width.
            let (n, e) = (minimal(&n), minimal(&e));
            check_rsa_modulus(name, n)?;
            if e.is_empty() {
                return Err(malformed(name, "rsa exponent is zero"));
            }
            (
                TokenAlgorithm::Rs256,
                DecodingKey::from_rsa_raw_components(n, e),
            )
        }
        "EC" => {
            curve(jwk.crv, "P-256")?;
            let x = param(jwk.x, "ec key without x")?;
            let y = param(jwk.y, "ec key without y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err(malformed(name, "P-256 coordinates are not 32 bytes"));
            }
            let point = [&[4][..], &x, &y].concat();
            (TokenAlgorithm::Es256, PublicKey::P256(point).decoding())
        }
        "OKP" => {
            curve(jwk.crv, "Ed25519")?;
            let x = param(jwk.x, "okp key without x")?;
            if x.len() != 32 {
                return Err(malformed(name, "ed25519 key is not 32 bytes"));
            }
            (TokenAlgorithm::EdDsa, PublicKey::Ed25519(x).decoding())
        }
        other => {
            return Err(KeyError::UnknownKeyType {
                key: name.to_owned(),
                kty: other.to_owned(),
            });
        }
    };
    if let Some(alg) = jwk.alg {
        let named = TokenAlgorithm::from_name(&alg)
            .filter(|&named| named != TokenAlgorithm::Hs256)
            .ok_or_else(|| KeyError::UnsupportedAlgorithm {
                key: name.to_owned(),
                alg,
            })?;
        if named != algorithm {
            return Err(KeyError::AlgorithmMismatch {
                key: name.to_owned(),
                alg: named,
            });
        }
    }
    Ok(VerifyingKey {
        kid: jwk.kid,
        algorithm,
        decoding,
    })
}
