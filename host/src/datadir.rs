//! The data dir: created 0700, and held by one `serve` at a time through an
//! exclusive `flock` on `happyx.lock` (released by the kernel if the process dies).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "happyx.lock";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data dir {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {path} is not usable: {source}")]
    Unusable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {path} is already served by another happyx process{pid}; stop it first")]
    Locked { path: PathBuf, pid: String },
}

impl DataDirError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Create { .. } => "data_dir_create",
            Self::Unusable { .. } => "data_dir_unusable",
            Self::Locked { .. } => "data_dir_locked",
        }
    }
}

/// Creates `path` (mode 0700) if missing and tightens an existing one to 0700.
pub fn ensure(path: &Path) -> Result<PathBuf, DataDirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| DataDirError::Create {
            path: path.into(),
            source,
        })?;
    let unusable = |source| DataDirError::Unusable {
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unusable)?;
    if !meta.is_dir() {
        return Err(unusable(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(unusable)?;
    }
    // Prove we can list it (an unreadable dir fails here, with its path).
    std::fs::read_dir(path).map_err(unusable)?;
    path.canonicalize().map_err(unusable)
}

/// The held lock; dropping it releases the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: Flock<File>,
}

/// Takes the serve lock or explains who holds it.
pub fn lock(path: &Path) -> Result<DataDirLock, DataDirError> {
    let lock_path = path.join(LOCK_FILE);
    let unusable = |source| DataDirError::Unusable {
        path: path.into(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(unusable)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let _ = lock.set_len(0);
            let _ = writeln!(lock, "{}", std::process::id());
            let _ = lock.sync_all();
            Ok(DataDirLock { _lock: lock })
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&lock_path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            Err(DataDirError::Locked {
                path: path.into(),
                pid,
            })
        }
        Err((_, errno)) => Err(unusable(std::io::Error::from(errno))),
    }
}

/// Takes the serve lock like [`lock`] but leaves the lock file's content
/// alone (for operator commands such as `import` that must not change a data
/// dir they end up refusing).
pub fn lock_quiet(path: &Path) -> Result<DataDirLock, DataDirError> {
    let lock_path = path.join(LOCK_FILE);
    let unusable = |source| DataDirError::Unusable {
        path: path.into(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(unusable)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DataDirLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(DataDirError::Locked {
            path: path.into(),
            pid: std::fs::read_to_string(&lock_path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default(),
        }),
        Err((_, errno)) => Err(unusable(std::io::Error::from(errno))),
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// This machine's boot id (changes on every reboot), or "unknown".
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0700_and_locks_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        let p = ensure(&dir).expect("ensure");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let held = lock(&p).expect("first lock");
        let err = lock(&p).expect_err("second lock must fail");
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("already served"), "{err}");
        drop(held);
        lock(&p).expect("lock after release");
    }

    #[test]
    fn the_quiet_lock_excludes_serve_and_leaves_the_file_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = ensure(tmp.path()).expect("ensure");
        let held = lock(&p).expect("serve lock");
        let before = std::fs::read(p.join(LOCK_FILE)).expect("read");
        let err = lock_quiet(&p).expect_err("served");
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        drop(held);
        let quiet = lock_quiet(&p).expect("quiet lock");
        assert_eq!(std::fs::read(p.join(LOCK_FILE)).expect("read"), before);
        assert!(
            lock(&p).is_err(),
            "serve is refused while an import holds it"
        );
        drop(quiet);
    }

    #[test]
    fn a_file_is_not_a_data_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("file");
        std::fs::write(&f, b"x").expect("write");
        assert!(ensure(&f).is_err());
    }
}
