//! QUIC for clients: the protocol name, the server's TLS identity, how a
//! client decides to trust it, and the transport settings both ends use.
//!
//! TLS 1.3 only, with the ring provider. A server presents a certificate
//! from files, or one it generated for itself (the embedded server). A
//! client trusts a certificate file (a CA, or the server's own
//! self-signed certificate) or pins the server certificate's SHA-256
//! fingerprint; there is no trust-everything mode.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The ALPN name of the protocol this build speaks. A new incompatible
/// version of the client protocol gets a new name, so old and new clients
/// fail at the handshake instead of mid-session.
pub const ALPN: &[u8] = b"chatroom/1";

/// Where the embedded server listens for QUIC by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7402";

/// Where the embedded server writes the certificate it generates, and where
/// a client looks for it when told nothing else.
pub fn default_cert_file() -> PathBuf {
    crate::auth::state_dir().join("quic-cert.pem")
}

/// Why a TLS identity or trust could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A file held no usable PEM item of the kind wanted.
    #[error("{path}: no {what} found in PEM ({reason})")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A self-signed certificate could not be generated.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, key or settings.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// No certificate verifier could be made from the trusted roots.
    #[error("certificate verifier: {0}")]
    Verifier(String),
    /// The configuration does not suit QUIC.
    #[error("quic: {0}")]
    Quic(String),
}

/// A certificate chain and its private key: what a server presents.
#[derive(Debug)]
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        let key_pem = read_file(key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            what: "private key",
            reason: e.to_string(),
        })?;
        Ok(Self { chain, key })
    }

    /// A fresh self-signed certificate for `names` (DNS names or IP
    /// addresses), valid for the life of the process that made it.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(|e| TlsError::Quic(e.to_owned()))?;
        Ok(Self {
            chain: vec![certified.cert.der().clone()],
            key,
        })
    }

    /// The SHA-256 fingerprint of the leaf certificate: what a client pins.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.chain[0])
    }

    /// The chain as PEM, leaf first.
    pub fn cert_pem(&self) -> String {
        self.chain
            .iter()
            .map(|der| pem("CERTIFICATE", der))
            .collect()
    }

    /// Writes the chain to `path` as PEM, replacing the file whole so a
    /// reader never sees half of it.
    pub fn write_cert(&self, path: &Path) -> Result<(), TlsError> {
        write_atomically(path, self.cert_pem().as_bytes(), 0o644)
    }

    /// Writes the private key to `path` as PEM, readable by its owner only.
    pub fn write_key(&self, path: &Path) -> Result<(), TlsError> {
        let der = match &self.key {
            PrivateKeyDer::Pkcs8(key) => key.secret_pkcs8_der(),
            _ => return Err(TlsError::Quic("only PKCS#8 keys can be written".into())),
        };
        write_atomically(path, pem("PRIVATE KEY", der).as_bytes(), 0o600)
    }
}

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    /// Upper-case hex pairs joined by colons, as `openssl x509 -fingerprint
    /// -sha256` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a fingerprint did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 fingerprint is 64 hex digits (colons allowed): {0}")]
pub struct BadFingerprint(String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Hex digits in either case, with or without colons, with or without
    /// a `sha256:` prefix.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadFingerprint(text.to_owned());
        let digits: Vec<u8> = text
            .trim()
            .trim_start_matches("sha256:")
            .bytes()
            .filter(|&b| b != b':')
            .collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

/// What a client trusts the server's certificate by. Neither is a default:
/// the application says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A PEM file of certificates taken as roots: a CA, or the server's own
    /// self-signed certificate. The server's name is checked against it.
    CertFile(PathBuf),
    /// The SHA-256 fingerprint of the server's certificate. The name is not
    /// checked: the pin is stronger than a name.
    Fingerprint(Fingerprint),
}

/// Transport settings of a client-facing QUIC endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections go when nothing arrives for this long; the server sets
    /// it past its heartbeat deadline, so a session that stops pinging is
    /// closed with its reason before QUIC drops it silently.
    pub idle_timeout: Duration,
    /// Largest client frame; the receive window holds two.
    pub max_frame: usize,
    /// Bytes sent and not yet acknowledged, per connection: what a slow
    /// reader can make the server buffer in QUIC before our own queue
    /// (and its slow-consumer bound) takes over.
    pub send_window: u64,
}

/// The server's QUIC settings: `identity`, our ALPN, one session stream per
/// connection. One more bidirectional stream and one unidirectional stream
/// are allowed at the QUIC level only so that a client opening them is seen
/// and closed with a reason rather than left blocked.
pub fn server_config(
    identity: &TlsIdentity,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let window = VarInt::from_u64(2 * (limits.max_frame as u64 + 4)).unwrap_or(VarInt::MAX);
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(2))
        .max_concurrent_uni_streams(VarInt::from_u32(1))
        .stream_receive_window(window)
        .receive_window(window)
        .send_window(limits.send_window)
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(Some(idle_timeout(limits.idle_timeout)?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The endpoint settings of a server presenting `identity`. The stateless
/// reset key and the key that signs connection IDs are derived from the
/// identity's private key, so a node restarted with the same certificate
/// recognises its predecessor's connection IDs and answers their packets
/// with a stateless reset the clients accept: they reconnect at their next
/// packet instead of waiting out the idle timeout.
pub fn endpoint_config(identity: &TlsIdentity) -> quinn::EndpointConfig {
    let derive = |purpose: &[u8]| {
        let mut material = ring::digest::Context::new(&ring::digest::SHA256);
        material.update(b"chatroom quic ");
        material.update(purpose);
        material.update(identity.key.secret_der());
        material.finish()
    };
    let reset = derive(b"stateless reset key\0");
    let cid = derive(b"connection id key\0");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    config.cid_generator(move || -> Box<dyn quinn::ConnectionIdGenerator> {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// A client's QUIC settings: trust as given, ALPN `alpn` (ours unless a
/// test wants another), idle timeout `idle` (the server's, if shorter,
/// wins), no streams or datagrams accepted from the server.
pub fn client_config(
    trust: &Trust,
    alpn: &[u8],
    idle: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        Trust::CertFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: *pin,
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(Some(idle_timeout(idle)?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The server name to verify for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError::Quic(format!("not a valid server name: {host}")))
}

fn idle_timeout(idle: Duration) -> Result<IdleTimeout, TlsError> {
    IdleTimeout::try_from(idle).map_err(|_| TlsError::Quic(format!("idle timeout {idle:?}")))
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the certificate with the pinned fingerprint, and checks
/// that the server holds its key (the handshake signature).
#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {seen} is not the pinned {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let bad = |reason: String| TlsError::Pem {
        path: path.to_owned(),
        what: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("the file has no CERTIFICATE section".into()));
    }
    Ok(certs)
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        // Base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |source| TlsError::File {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    drop(file);
    std::fs::rename(&temp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(40),
            max_frame: 64 * 1024,
            send_window: 512 * 1024,
        }
    }

    #[test]
    fn fingerprints_print_and_parse_both_ways() {
        let fingerprint = Fingerprint::of(b"certificate bytes");
        let text = fingerprint.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
        let bare = text.replace(':', "").to_lowercase();
        assert_eq!(bare.parse::<Fingerprint>(), Ok(fingerprint));
        assert_eq!(
            format!("sha256:{bare}").parse::<Fingerprint>(),
            Ok(fingerprint)
        );
        for bad in [
            "",
            "abc",
            &bare[2..],
            &format!("{bare}00"),
            &bare.replace('a', "g"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_self_signed_identity_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let identity = TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (cert, key) = (dir.path().join("c/cert.pem"), dir.path().join("c/key.pem"));
        identity.write_cert(&cert).unwrap();
        identity.write_key(&key).unwrap();
        let loaded = TlsIdentity::load(&cert, &key).unwrap();
        assert_eq!(loaded.fingerprint(), identity.fingerprint());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        server_config(&loaded, &limits()).unwrap();
        client_config(&Trust::CertFile(cert), ALPN, Duration::from_secs(40)).unwrap();
    }

    #[test]
    fn unreadable_or_empty_files_say_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = TlsIdentity::load(&missing, &missing).unwrap_err();
        assert!(matches!(&error, TlsError::File { path, .. } if *path == missing));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let error = client_config(
            &Trust::CertFile(empty.clone()),
            ALPN,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(&error, TlsError::Pem { path, what: "certificate", .. } if *path == empty),
            "{error}"
        );
    }
}
