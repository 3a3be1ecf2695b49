//! Settings kept in a file that operators change while the node runs
//! (admin keys, default word lists): read once at start, then polled, and
//! swapped in only when the new file parses, so a bad edit keeps the last
//! good version in force and is reported instead of taking effect.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

/// Most bytes read from a watched file: these files hold keys and lists,
/// and a file past this is a mistake, not a setting.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// Why a watched file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The contents do not parse.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
}

type Parse<T> = dyn Fn(&[u8]) -> Result<T, String> + Send + Sync;

struct Inner<T> {
    path: PathBuf,
    parse: Box<Parse<T>>,
    current: RwLock<Arc<T>>,
    /// The bytes `current` was parsed from, or the last bad bytes seen (so
    /// a bad file is reported once, not at every poll).
    seen: Mutex<Vec<u8>>,
    failures: AtomicU64,
}

/// A value parsed from a file, swapped for the file's newer contents when
/// they parse. Cheap to clone; every clone sees the same value.
pub struct Reloaded<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Reloaded<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for Reloaded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloaded")
            .field("path", &self.inner.path)
            .field("failures", &self.inner.failures.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Reloaded<T> {
    /// Reads and parses `path`; the file must be good at start.
    pub fn load<E: fmt::Display>(
        path: impl Into<PathBuf>,
        parse: impl Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Self, ReloadError> {
        let path = path.into();
        let parse: Box<Parse<T>> = Box::new(move |bytes| parse(bytes).map_err(|e| e.to_string()));
        let bytes = read(&path)?;
        let value = parse(&bytes).map_err(|reason| ReloadError::Invalid {
            path: path.clone(),
            reason,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                parse,
                current: RwLock::new(Arc::new(value)),
                seen: Mutex::new(bytes),
                failures: AtomicU64::new(0),
            }),
        })
    }

    /// The value in force.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.inner.current.read())
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reloads that failed since the start.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Reads the file again: `Ok(true)` when new contents parsed and are
    /// in force, `Ok(false)` when the contents did not change (or are the
    /// bad ones already reported). An error keeps the value in force and
    /// counts a failure.
    pub fn check(&self) -> Result<bool, ReloadError> {
        let result = self.try_check();
        if result.is_err() {
            self.inner.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn try_check(&self) -> Result<bool, ReloadError> {
        let inner = &self.inner;
        let bytes = read(&inner.path)?;
        let mut seen = inner.seen.lock();
        if *seen == bytes {
            return Ok(false);
        }
        let parsed = (inner.parse)(&bytes);
        *seen = bytes;
        let value = parsed.map_err(|reason| ReloadError::Invalid {
            path: inner.path.clone(),
            reason,
        })?;
        *inner.current.write() = Arc::new(value);
        Ok(true)
    }

    /// Checks the file every `every` until the returned task is aborted,
    /// logging each swap and each refusal (`what` names the file's role).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_watch(&self, what: &'static str, every: Duration) -> tokio::task::JoinHandle<()> {
        let watched = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match watched.check() {
                    Ok(true) => info!(file = %watched.path().display(), what, "reloaded"),
                    Ok(false) => {}
                    Err(error) => warn!(%error, what, "kept the previous version"),
                }
            }
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ReloadError> {
    use std::io::Read as _;

    let io = |source| ReloadError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReloadError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(bytes: &[u8]) -> Result<u32, String> {
        std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    }

    #[test]
    fn swaps_in_good_contents_and_keeps_the_last_good_on_a_bad_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let watched = Reloaded::load(&path, number).unwrap();
        assert_eq!(*watched.current(), 1);
        assert!(!watched.check().unwrap());

        std::fs::write(&path, "2").unwrap();
        assert!(watched.check().unwrap());
        assert_eq!(*watched.clone().current(), 2);

        std::fs::write(&path, "two").unwrap();
        assert!(matches!(watched.check(), Err(ReloadError::Invalid { .. })));
        assert_eq!(*watched.current(), 2);
        assert_eq!(watched.failures(), 1);
        // The same bad contents are not reported again.
        assert!(!watched.check().unwrap());

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watched.check(), Err(ReloadError::Io { .. })));
        assert_eq!(*watched.current(), 2);
        assert_eq!(watched.failures(), 2);

        std::fs::write(&path, "3").unwrap();
        assert!(watched.check().unwrap());
        assert_eq!(*watched.current(), 3);
    }

    #[test]
    fn refuses_a_bad_or_oversized_file_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "x").unwrap();
        assert!(matches!(
            Reloaded::load(&path, number),
            Err(ReloadError::Invalid { .. })
        ));
        let big = vec![b'1'; usize::try_from(MAX_FILE_BYTES).unwrap() + 1];
        std::fs::write(&path, big).unwrap();
        assert!(matches!(
            Reloaded::load(&path, number),
            Err(ReloadError::TooLarge { .. })
        ));
        assert!(matches!(
            Reloaded::load(dir.path().join("absent"), number),
            Err(ReloadError::Io { .. })
        ));
    }
}
