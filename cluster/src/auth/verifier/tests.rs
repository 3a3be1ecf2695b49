use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::{Value, json};
use spki::der::asn1::BitStringRef;
use spki::der::{Decode as _, Encode as _};
use spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef};

use super::*;
use crate::auth::Roles;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const RSA_PRIVATE: &[u8] = include_bytes!("../testdata/rsa2048.key.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../testdata/rsa2048.pub.pem");
const RSA_1024_PUBLIC: &[u8] = include_bytes!("../testdata/rsa1024.pub.pem");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/testdata")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({ "sub": "alice", "exp": now() + 3600 })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A real key pair: what signs, and the public half as a JWK and a PEM.
struct TestKey {
    alg: TokenAlgorithm,
    encoding: EncodingKey,
    jwk: Value,
    pem: String,
}

impl TestKey {
    fn rsa() -> Self {
        Self {
            alg: TokenAlgorithm::Rs256,
            encoding: EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            jwk: rsa_jwk(RSA_PUBLIC),
            pem: String::from_utf8(RSA_PUBLIC.to_vec()).unwrap(),
        }
    }

    fn ec() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let p256 = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
        Self {
            alg: TokenAlgorithm::Es256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
            pem: spki_pem("1.2.840.10045.2.1", Some(&p256), point),
        }
    }

    fn ed() -> Self {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        Self {
            alg: TokenAlgorithm::EdDsa,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(public) }),
            pem: spki_pem("1.3.101.112", None, public),
        }
    }

    /// The JWK with `kid` and the other parameters in `extra`.
    fn jwk(&self, kid: &str, extra: Value) -> Value {
        let mut jwk = self.jwk.clone();
        let object = jwk.as_object_mut().unwrap();
        object.insert("kid".into(), kid.into());
        object.extend(extra.as_object().unwrap().clone());
        jwk
    }

    fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg.library());
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn rsa_jwk(pem: &[u8]) -> Value {
    let (_, der) = spki::der::pem::decode_vec(pem).unwrap();
    let info = SubjectPublicKeyInfoRef::from_der(&der).unwrap();
    let rsa = pkcs1::RsaPublicKey::from_der(info.subject_public_key.raw_bytes()).unwrap();
    json!({
        "kty": "RSA",
        "n": b64(rsa.modulus.as_bytes()),
        "e": b64(rsa.public_exponent.as_bytes()),
    })
}

fn spki_pem(oid: &str, curve: Option<&ObjectIdentifier>, key: &[u8]) -> String {
    let info = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: ObjectIdentifier::new_unwrap(oid),
            parameters: curve.map(Into::into),
        },
        subject_public_key: BitStringRef::from_bytes(key).unwrap(),
    };
    let der = info.to_der().unwrap();
    spki::der::pem::encode_string("PUBLIC KEY", spki::der::pem::LineEnding::LF, &der).unwrap()
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn with_jwks(path: &Path) -> VerifierConfig {
    VerifierConfig {
        jwks: Some(path.to_owned()),
        ..VerifierConfig::default()
    }
}

fn pem_key(path: PathBuf, algorithm: TokenAlgorithm, kid: Option<&str>) -> PemKey {
    PemKey {
        path,
        algorithm,
        kid: kid.map(str::to_owned),
    }
}

#[test]
fn jwks_tokens_of_every_algorithm_verify_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec, ed) = (TestKey::rsa(), TestKey::ec(), TestKey::ed());
    let keys = [
        rsa.jwk("r1", json!({ "alg": "RS256", "use": "sig" })),
        ec.jwk("e1", json!({})),
        ed.jwk("d1", json!({ "alg": "EdDSA" })),
    ];
    let path = write(dir.path(), "jwks.json", jwks(&keys));
    let config = VerifierConfig {
        secret: Some(TokenKey::new(SECRET).unwrap()),
        ..with_jwks(&path)
    };
    let verifier = Verifier::new(config).unwrap();
    assert_eq!(verifier.key_count(), 4);
    for (key, kid) in [(&rsa, "r1"), (&ec, "e1"), (&ed, "d1")] {
        let who = verifier.verify(&key.token(Some(kid), &claims())).unwrap();
        assert_eq!(&*who.user, "alice", "{kid}");
        // A kid-less token finds the only key of its algorithm.
        assert!(
            verifier.verify(&key.token(None, &claims())).is_ok(),
            "{kid}"
        );
    }
    let hs256 = TokenKey::new(SECRET)
        .unwrap()
        .mint("bob", Roles::default(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(&*verifier.verify(&hs256).unwrap().user, "bob");
    let forged = TestKey::ec().token(Some("e1"), &claims());
    assert!(matches!(
        verifier.verify(&forged),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn pem_keys_verify_their_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec, ed) = (TestKey::rsa(), TestKey::ec(), TestKey::ed());
    let config = VerifierConfig {
        pem_keys: vec![
            pem_key(fixture("rsa2048.pub.pem"), TokenAlgorithm::Rs256, None),
            pem_key(
                fixture("rsa2048.pkcs1.pub.pem"),
                TokenAlgorithm::Rs256,
                Some("pkcs1"),
            ),
            pem_key(
                write(dir.path(), "ec.pem", &ec.pem),
                TokenAlgorithm::Es256,
                None,
            ),
            pem_key(
                write(dir.path(), "ed.pem", &ed.pem),
                TokenAlgorithm::EdDsa,
                Some("ed"),
            ),
        ],
        ..VerifierConfig::default()
    };
    let verifier = Verifier::new(config).unwrap();
    assert!(
        verifier
            .verify(&rsa.token(Some("pkcs1"), &claims()))
            .is_ok()
    );
    assert!(matches!(
        verifier.verify(&rsa.token(None, &claims())),
        Err(AuthError::KidRequired)
    ));
    assert!(verifier.verify(&ec.token(None, &claims())).is_ok());
    assert!(verifier.verify(&ed.token(Some("ed"), &claims())).is_ok());
    assert!(verifier.verify(&ed.token(None, &claims())).is_ok());

    let single = VerifierConfig {
        pem_keys: vec![pem_key(
            fixture("rsa2048.pub.pem"),
            TokenAlgorithm::Rs256,
            None,
        )],
        ..VerifierConfig::default()
    };
    let verifier = Verifier::new(single).unwrap();
    assert!(verifier.verify(&rsa.token(None, &claims())).is_ok());
    assert!(matches!(
        verifier.verify(&ec.token(None, &claims())),
        Err(AuthError::NoKey)
    ));
    let hs256 = TokenKey::new(SECRET)
        .unwrap()
        .mint("bob", Roles::default(), Duration::from_secs(60))
        .unwrap();
    assert!(matches!(verifier.verify(&hs256), Err(AuthError::NoKey)));
}

#[test]
fn unknown_kids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ed = TestKey::ed();
    let path = write(dir.path(), "jwks.json", jwks(&[ed.jwk("a", json!({}))]));
    let verifier = Verifier::new(with_jwks(&path)).unwrap();
    assert!(matches!(
        verifier.verify(&ed.token(Some("b"), &claims())),
        Err(AuthError::UnknownKid)
    ));
}

#[test]
fn a_token_cannot_use_its_key_with_another_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec) = (TestKey::rsa(), TestKey::ec());
    let path = write(
        dir.path(),
        "jwks.json",
        jwks(&[rsa.jwk("r1", json!({})), ec.jwk("e1", json!({}))]),
    );
    let with_secret = VerifierConfig {
        secret: Some(TokenKey::new(SECRET).unwrap()),
        ..with_jwks(&path)
    };
    let pem_secret = VerifierConfig {
        pem_keys: vec![pem_key(
            fixture("rsa2048.pub.pem"),
            TokenAlgorithm::Rs256,
            None,
        )],
        ..VerifierConfig::default()
    };
    // HS256 signed with the RSA public key's PEM bytes as the secret.
    let confused = |kid: Option<&str>| {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(RSA_PUBLIC)).unwrap()
    };
    for config in [with_jwks(&path), with_secret, pem_secret] {
        let verifier = Verifier::new(config).unwrap();
        assert!(verifier.verify(&confused(None)).is_err());
        assert!(verifier.verify(&confused(Some("r1"))).is_err());
    }
    let verifier = Verifier::new(with_jwks(&path)).unwrap();
    assert!(matches!(
        verifier.verify(&confused(Some("r1"))),
        Err(AuthError::AlgorithmMismatch)
    ));
    assert!(matches!(
        verifier.verify(&confused(None)),
        Err(AuthError::NoKey)
    ));
    assert!(matches!(
        verifier.verify(&rsa.token(Some("e1"), &claims())),
        Err(AuthError::AlgorithmMismatch)
    ));
    let secret_only = VerifierConfig {
        secret: Some(TokenKey::new(SECRET).unwrap()),
        ..VerifierConfig::default()
    };
    let verifier = Verifier::new(secret_only).unwrap();
    assert!(matches!(
        verifier.verify(&confused(None)),
        Err(AuthError::BadSignature)
    ));
    assert!(matches!(
        verifier.verify(&rsa.token(None, &claims())),
        Err(AuthError::NoKey)
    ));
}

#[test]
fn keys_are_pinned_to_the_algorithm_their_type_fits() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = TestKey::rsa();
    let refused = |keys: &[Value]| {
        let path = write(dir.path(), "jwks.json", jwks(keys));
        Verifier::new(with_jwks(&path)).unwrap_err()
    };
    assert!(matches!(
        refused(&[rsa.jwk("r", json!({ "alg": "ES256" }))]),
        KeyError::AlgorithmMismatch {
            alg: TokenAlgorithm::Es256,
            ..
        }
    ));
    for alg in ["HS256", "RS512", "none"] {
        assert!(matches!(
            refused(&[rsa.jwk("r", json!({ "alg": alg }))]),
            KeyError::UnsupportedAlgorithm { .. }
        ));
    }
    let wrong_pem = VerifierConfig {
        pem_keys: vec![pem_key(
            fixture("rsa2048.pub.pem"),
            TokenAlgorithm::Es256,
            None,
        )],
        ..VerifierConfig::default()
    };
    assert!(matches!(
        Verifier::new(wrong_pem),
        Err(KeyError::AlgorithmMismatch { .. })
    ));
    let hs256_pem = VerifierConfig {
        pem_keys: vec![pem_key(
            fixture("rsa2048.pub.pem"),
            TokenAlgorithm::Hs256,
            None,
        )],
        ..VerifierConfig::default()
    };
    assert!(matches!(
        Verifier::new(hs256_pem),
        Err(KeyError::AlgorithmMismatch { .. })
    ));
}

#[test]
fn bad_key_files_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec, ed) = (TestKey::rsa(), TestKey::ec(), TestKey::ed());
    let refused = |contents: &str| {
        let path = write(dir.path(), "jwks.json", contents);
        Verifier::new(with_jwks(&path)).unwrap_err()
    };
    let good = jwks(&[rsa.jwk("r1", json!({})), ed.jwk("d1", json!({}))]);
    let truncated = refused(&good[..good.len() / 2]);
    assert!(matches!(truncated, KeyError::Json { .. }), "{truncated}");
    assert!(matches!(refused("[]"), KeyError::Json { .. }));

    let error = refused(&jwks(&[
        ed.jwk("d1", json!({})),
        json!({ "kty": "oct", "kid": "s", "k": "c2VjcmV0" }),
    ]));
    assert!(
        matches!(&error, KeyError::UnknownKeyType { key, kty } if kty == "oct" && key.contains("key 1 (kid \"s\")")),
        "{error}"
    );
    let error = refused(&jwks(&[ec.jwk("e1", json!({ "crv": "P-384" }))]));
    assert!(
        matches!(&error, KeyError::UnsupportedCurve { crv, .. } if crv == "P-384"),
        "{error}"
    );
    let error = refused(&jwks(&[ed.jwk("x", json!({ "crv": "X25519" }))]));
    assert!(
        matches!(error, KeyError::UnsupportedCurve { .. }),
        "{error}"
    );
    let error = refused(&jwks(&[
        rsa.jwk("same", json!({})),
        ed.jwk("same", json!({})),
    ]));
    assert!(
        matches!(&error, KeyError::DuplicateKid { kid, key } if kid == "same" && key.contains("key 1")),
        "{error}"
    );
    let weak = TestKey {
        jwk: rsa_jwk(RSA_1024_PUBLIC),
        ..TestKey::rsa()
    };
    let error = refused(&jwks(&[weak.jwk("weak", json!({}))]));
    assert!(
        matches!(&error, KeyError::WeakRsaKey { bits: 1024, key } if key.contains("weak")),
        "{error}"
    );
    let error = refused(&jwks(&[rsa.jwk("enc", json!({ "use": "enc" }))]));
    assert!(matches!(error, KeyError::NotForSigning { .. }), "{error}");
    let error = refused(&jwks(&[ec.jwk("p", json!({ "d": "c2VjcmV0" }))]));
    assert!(matches!(error, KeyError::PrivateKey { .. }), "{error}");
    let error = refused(&jwks(&[ec.jwk("short", json!({ "x": "AAAA" }))]));
    assert!(matches!(error, KeyError::Malformed { .. }), "{error}");
    let error = refused(&jwks(&[json!({ "kty": "RSA", "n": 5, "e": "AQAB" })]));
    assert!(matches!(error, KeyError::Jwk { .. }), "{error}");
    let many: Vec<Value> = (0..65)
        .map(|i| ed.jwk(&format!("k{i}"), json!({})))
        .collect();
    assert!(matches!(
        refused(&jwks(&many)),
        KeyError::TooManyKeys { count: 65 }
    ));
    assert!(matches!(refused(&jwks(&[])), KeyError::NoKeys));
    assert!(Verifier::new(with_jwks(&write(dir.path(), "ok.json", jwks(&many[..64])))).is_ok());

    let weak_pem = VerifierConfig {
        pem_keys: vec![pem_key(
            fixture("rsa1024.pub.pem"),
            TokenAlgorithm::Rs256,
            None,
        )],
        ..VerifierConfig::default()
    };
    let error = Verifier::new(weak_pem).unwrap_err();
    assert!(
        matches!(&error, KeyError::WeakRsaKey { bits: 1024, key } if key.ends_with("rsa1024.pub.pem")),
        "{error}"
    );
    let private_pem = VerifierConfig {
        pem_keys: vec![pem_key(
            fixture("rsa2048.key.pem"),
            TokenAlgorithm::Rs256,
            None,
        )],
        ..VerifierConfig::default()
    };
    assert!(matches!(
        Verifier::new(private_pem),
        Err(KeyError::Malformed { .. })
    ));
    let missing = with_jwks(&dir.path().join("absent.json"));
    assert!(matches!(Verifier::new(missing), Err(KeyError::Io { .. })));
}

#[test]
fn aud_and_iss_are_checked_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let ed = TestKey::ed();
    let path = write(dir.path(), "jwks.json", jwks(&[ed.jwk("d", json!({}))]));
    let with = |extra: Value| {
        let mut claims = claims();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ed.token(Some("d"), &claims)
    };
    let open = Verifier::new(with_jwks(&path)).unwrap();
    assert!(open.verify(&with(json!({}))).is_ok());
    assert!(
        open.verify(&with(json!({ "aud": "elsewhere", "iss": "x" })))
            .is_ok()
    );

    let strict = Verifier::new(VerifierConfig {
        audience: Some("chat".into()),
        issuer: Some("https://idp.example".into()),
        ..with_jwks(&path)
    })
    .unwrap();
    let both = json!({ "aud": "chat", "iss": "https://idp.example" });
    assert!(strict.verify(&with(both)).is_ok());
    let in_array = json!({ "aud": ["web", "chat"], "iss": "https://idp.example" });
    assert!(strict.verify(&with(in_array)).is_ok());
    let cases = [
        (json!({ "iss": "https://idp.example" }), "missing_claim"),
        (
            json!({ "aud": "web", "iss": "https://idp.example" }),
            "wrong_audience",
        ),
        (json!({ "aud": "chat" }), "missing_claim"),
        (
            json!({ "aud": "chat", "iss": "https://evil" }),
            "wrong_issuer",
        ),
    ];
    for (extra, reason) in cases {
        let error = strict.verify(&with(extra.clone())).unwrap_err();
        assert_eq!(error.reason(), reason, "{extra}");
    }
    let expired = json!({ "exp": now() - 60, "aud": "chat", "iss": "https://idp.example" });
    assert!(matches!(
        strict.verify(&with(expired)),
        Err(AuthError::Expired)
    ));
}

#[test]
fn a_rotation_takes_effect_on_reload_and_a_bad_file_keeps_the_old_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (TestKey::ed(), TestKey::ec());
    let path = write(dir.path(), "jwks.json", jwks(&[old.jwk("old", json!({}))]));
    let verifier = Verifier::new(with_jwks(&path)).unwrap();
    let old_token = old.token(Some("old"), &claims());
    let new_token = new.token(Some("new"), &claims());
    assert!(verifier.verify(&old_token).is_ok());
    assert!(!verifier.reload().unwrap());

    write(dir.path(), "jwks.json", "{\"keys\": [");
    assert!(matches!(verifier.reload(), Err(KeyError::Json { .. })));
    assert_eq!(verifier.reload_failures(), 1);
    assert!(verifier.verify(&old_token).is_ok());
    // The same bad file is not parsed or counted again.
    assert!(!verifier.reload().unwrap());
    assert_eq!(verifier.reload_failures(), 1);

    let both = jwks(&[old.jwk("old", json!({})), new.jwk("new", json!({}))]);
    write(dir.path(), "jwks.json", both);
    assert!(verifier.reload().unwrap());
    assert_eq!(verifier.key_count(), 2);
    assert!(verifier.verify(&old_token).is_ok() && verifier.verify(&new_token).is_ok());

    write(dir.path(), "jwks.json", jwks(&[new.jwk("new", json!({}))]));
    let clone = verifier.clone();
    assert!(clone.reload().unwrap());
    assert!(matches!(
        verifier.verify(&old_token),
        Err(AuthError::UnknownKid)
    ));
    assert!(verifier.verify(&new_token).is_ok());

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(verifier.reload(), Err(KeyError::Io { .. })));
    assert!(matches!(verifier.reload(), Err(KeyError::Io { .. })));
    assert_eq!(verifier.reload_failures(), 3);
    assert!(verifier.verify(&new_token).is_ok());
}

/// Waits until `check` holds, failing the test after ten seconds.
async fn eventually(check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_reload_task_polls_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (TestKey::ed(), TestKey::ed());
    let path = write(dir.path(), "jwks.json", jwks(&[old.jwk("old", json!({}))]));
    let verifier = Verifier::new(with_jwks(&path)).unwrap();
    let task = verifier.spawn_reload(Duration::from_millis(10));
    let new_token = new.token(Some("new"), &claims());

    write(dir.path(), "jwks.json", jwks(&[new.jwk("new", json!({}))]));
    eventually(|| verifier.verify(&new_token).is_ok()).await;
    write(dir.path(), "jwks.json", "not json");
    eventually(|| verifier.reload_failures() > 0).await;
    assert!(verifier.verify(&new_token).is_ok());

    drop(verifier);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the task ends once the verifier is dropped")
        .unwrap();
}
