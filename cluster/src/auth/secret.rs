//! The shared secret and the admin token: where they come from (inline, or
//! a file the embedded server creates on first start) and how the admin
//! token is checked.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{AuthError, MIN_SECRET_LEN, TokenKey};

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
