//! The data dir: created 0700, and held by one `serve` at a time through an
//! exclusive POSIX record lock (`fcntl(F_SETLK)`) on `happyx.lock`. Unlike
//! `flock`, a record lock belongs to the process, not to the open file: a
//! forked child (a run, a PTY holder) never holds it, so the kernel releases
//! it the moment the host dies, even by kill -9.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    #[error(
        "there is no HappyX data dir at {path} (no {file} in it); happyx serve creates one. \
         Is --data-dir (or data_dir in --config) right?"
    )]
    Missing { path: PathBuf, file: &'static str },
}

impl DataDirError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Create { .. } => "data_dir_create",
            Self::Unusable { .. } => "data_dir_unusable",
            Self::Locked { .. } => "data_dir_locked",
            Self::Missing { .. } => "data_dir_missing",
        }
    }
}

/// An existing data dir, for every command but `serve` and `import`: a mistyped path is
/// refused instead of becoming a new, empty data dir. With SQLite it must hold its database;
/// with PostgreSQL (`storage.url`) the database is elsewhere and the data dir (host key,
/// plugin cache, terminal sockets) must hold the lock file `serve` leaves.
pub fn existing(
    path: &Path,
    storage: &crate::config::StorageConfig,
) -> Result<PathBuf, DataDirError> {
    let marker = match storage.url {
        None => crate::store::DB_FILE,
        Some(_) => LOCK_FILE,
    };
    if !path.join(marker).is_file() {
        return Err(DataDirError::Missing {
            path: path.into(),
            file: marker,
        });
    }
    ensure(path)
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

/// The held lock; dropping it (closing the file) releases the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes an exclusive write lock on the whole file without waiting.
fn try_lock(file: &File) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_SETLK with a valid, fully initialised `flock` on an open fd.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Takes the serve lock or explains who holds it; records our pid in it.
pub fn lock(path: &Path) -> Result<DataDirLock, DataDirError> {
    take(path, true)
}

/// Takes the serve lock like [`lock`] but leaves the lock file's content
/// alone (for operator commands such as `import` that must not change a data
/// dir they end up refusing).
pub fn lock_quiet(path: &Path) -> Result<DataDirLock, DataDirError> {
    take(path, false)
}

fn take(path: &Path, write_pid: bool) -> Result<DataDirLock, DataDirError> {
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
    match try_lock(&file) {
        Ok(()) => {
            if write_pid {
                let mut f = &file;
                let _ = file.set_len(0);
                let _ = writeln!(f, "{}", std::process::id());
                let _ = file.sync_all();
            }
            Ok(DataDirLock { _file: file })
        }
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
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
        Err(errno) => Err(unusable(std::io::Error::from(errno))),
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
        let pid = std::fs::read_to_string(p.join(LOCK_FILE)).expect("lock file");
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(held);
        // Record locks are per process, so refusal of a second process is
        // shown end to end (tests/tests/e2e/foundation.rs); here: re-acquirable.
        lock(&p).expect("lock after release");
    }

    #[test]
    fn the_quiet_lock_leaves_the_file_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = ensure(tmp.path()).expect("ensure");
        drop(lock(&p).expect("serve lock"));
        let before = std::fs::read(p.join(LOCK_FILE)).expect("read");
        let quiet = lock_quiet(&p).expect("quiet lock");
        assert_eq!(std::fs::read(p.join(LOCK_FILE)).expect("read"), before);
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
