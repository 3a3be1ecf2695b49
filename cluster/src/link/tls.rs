//! Mutual TLS on node links: both ends prove they belong to the cluster.
//!
//! Every node holds a certificate signed by the cluster's CA, naming its
//! role: [`ROOM_SVC_NAME`] or [`MSG_SVC_NAME`]. A msg-svc dials a room
//! service and accepts only a certificate of the CA valid for `room-svc`; a
//! room service accepts only a client certificate of the CA valid for
//! `msg-svc`. So a peer without such a certificate can neither inject frames
//! into rooms nor pose as a room service to a msg-svc, and the frames are
//! encrypted. TLS 1.3 only, with the ring provider, like QUIC.
//!
//! Plaintext links exist only behind `--link-plaintext`: nothing is assumed
//! by default. [`generate`] writes a CA and one certificate per role (what
//! `room-svc link-certs` and the local cluster use).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
pub use rustls::{ClientConfig, ServerConfig};

use crate::quic::{TlsError, provider, read_certs, write_atomically};

/// The name a room service's link certificate must be valid for.
pub const ROOM_SVC_NAME: &str = "room-svc";
/// The name a msg-svc's link certificate must be valid for.
pub const MSG_SVC_NAME: &str = "msg-svc";
/// How long a link's TLS handshake may take.
pub const HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);

/// How a node secures its links: the flags every cluster node takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LinkTlsArgs {
    /// The cluster CA's certificate (PEM): node links accept only peers
    /// whose certificate it signed.
    #[arg(long, env = "CHATROOM_LINK_CA")]
    pub link_ca: Option<PathBuf>,
    /// This node's link certificate (PEM, leaf first), signed by the
    /// cluster CA for `room-svc` or `msg-svc` (its role).
    #[arg(long, env = "CHATROOM_LINK_CERT")]
    pub link_cert: Option<PathBuf>,
    /// The private key of --link-cert (PEM).
    #[arg(long, env = "CHATROOM_LINK_KEY")]
    pub link_key: Option<PathBuf>,
    /// Node links in plaintext, unauthenticated: anyone who reaches a room
    /// service's link port can act as a msg-svc. Only for a network nobody
    /// else reaches.
    #[arg(
        long,
        env = "CHATROOM_LINK_PLAINTEXT",
        conflicts_with_all = ["link_ca", "link_cert", "link_key"]
    )]
    pub link_plaintext: bool,
}

/// Why the link flags give no way to secure links.
#[derive(Debug, thiserror::Error)]
pub enum LinkTlsError {
    /// Neither certificates nor `--link-plaintext`.
    #[error(
        "node links need --link-ca, --link-cert and --link-key (the cluster CA and this \
         node's certificate; `room-svc link-certs DIR` makes a set), or --link-plaintext \
         on a network nobody else reaches"
    )]
    Unconfigured,
    /// A file could not be read, or rustls refused what it holds.
    #[error("link tls: {0}")]
    Tls(#[from] TlsError),
}

impl From<rustls::Error> for LinkTlsError {
    fn from(error: rustls::Error) -> Self {
        Self::Tls(TlsError::Rustls(error))
    }
}

impl LinkTlsArgs {
    /// Flags for certificates in `dir` as [`generate`] writes them for
    /// `role` (`room-svc` or `msg-svc`).
    pub fn from_dir(dir: &Path, role: &str) -> Self {
        let files = dir.join(role);
        Self {
            link_ca: Some(files.join("ca.crt")),
            link_cert: Some(files.join("tls.crt")),
            link_key: Some(files.join("tls.key")),
            link_plaintext: false,
        }
    }

    /// The flags as command-line arguments, for starting a node.
    pub fn to_args(&self) -> Vec<String> {
        if self.link_plaintext {
            return vec!["--link-plaintext".into()];
        }
        let mut args = Vec::new();
        for (flag, path) in [
            ("--link-ca", &self.link_ca),
            ("--link-cert", &self.link_cert),
            ("--link-key", &self.link_key),
        ] {
            if let Some(path) = path {
                args.extend([flag.to_owned(), path.display().to_string()]);
            }
        }
        args
    }

    /// A room service's side: `None` for plaintext links, else the TLS
    /// settings of each accepted link, requiring a msg-svc certificate.
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>, LinkTlsError> {
        let Some((roots, identity)) = self.load()? else {
            return Ok(None);
        };
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|error| TlsError::Verifier(error.to_string()))?;
        let verifier = Arc::new(Named {
            inner,
            name: ServerName::try_from(MSG_SVC_NAME).expect("a valid DNS name"),
        });
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain, identity.key)?;
        Ok(Some(Arc::new(config)))
    }

    /// A msg-svc's side: `None` for plaintext links, else the TLS settings
    /// of each link it dials, requiring a room service's certificate.
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, LinkTlsError> {
        let Some((roots, identity)) = self.load()? else {
            return Ok(None);
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|error| TlsError::Verifier(error.to_string()))?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(identity.chain, identity.key)?;
        Ok(Some(Arc::new(config)))
    }

    fn load(&self) -> Result<Option<(RootCertStore, Identity)>, LinkTlsError> {
        if self.link_plaintext {
            return Ok(None);
        }
        let (Some(ca), Some(cert), Some(key)) = (&self.link_ca, &self.link_cert, &self.link_key)
        else {
            return Err(LinkTlsError::Unconfigured);
        };
        let mut roots = RootCertStore::empty();
        for der in read_certs(ca)? {
            roots.add(der)?;
        }
        let chain = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Pem {
            path: key.clone(),
            what: "private key",
            reason: error.to_string(),
        })?;
        Ok(Some((roots, Identity { chain, key })))
    }
}

/// The name a room service's certificate is checked against.
pub fn room_svc_name() -> ServerName<'static> {
    ServerName::try_from(ROOM_SVC_NAME).expect("a valid DNS name")
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A client certificate verifier that also requires the certificate to be
/// valid for one name: a room service's certificate, though signed by the
/// same CA, cannot link as a msg-svc.
#[derive(Debug)]
struct Named {
    inner: Arc<dyn ClientCertVerifier>,
    name: ServerName<'static>,
}

impl ClientCertVerifier for Named {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?
            .verify_is_valid_for_subject_name(&self.name)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Writes a new cluster CA and a link certificate per role into `dir`, in
/// the layout of a Kubernetes TLS secret with its CA:
///
/// - `dir/ca.crt`, `dir/ca.key`: the CA (keep the key offline);
/// - `dir/room-svc/{ca.crt,tls.crt,tls.key}`: a room service's files;
/// - `dir/msg-svc/{ca.crt,tls.crt,tls.key}`: a msg-svc's files.
///
/// Certificates are valid from now for `valid_for`; keys are ECDSA P-256,
/// written readable by their owner only.
pub fn generate(dir: &Path, cluster: &str, valid_for: Duration) -> Result<(), TlsError> {
    let now = time_now();
    let until = now + valid_for;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("chatroom {cluster} link CA"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now;
    ca_params.not_after = until;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    create_dir(dir)?;
    write_atomically(&dir.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
    write_atomically(
        &dir.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let issuer = Issuer::new(ca_params, ca_key);
    for role in [ROOM_SVC_NAME, MSG_SVC_NAME] {
        let mut params = CertificateParams::new(vec![role.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("chatroom {cluster} {role}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now;
        params.not_after = until;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let role_dir = dir.join(role);
        create_dir(&role_dir)?;
        write_atomically(&role_dir.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
        write_atomically(&role_dir.join("tls.crt"), cert.pem().as_bytes(), 0o644)?;
        write_atomically(
            &role_dir.join("tls.key"),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::File {
        path: dir.to_owned(),
        source,
    })
}

/// Now, a minute back: a peer whose clock is a little behind still accepts
/// a certificate made this moment.
fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - Duration::from_secs(60)
}
