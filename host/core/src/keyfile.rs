//! The one way HappyX loads or creates a secret key file: 32 random bytes,
//! mode 0600, in a directory the caller names (`pty/holder.key`,
//! `enroll-secret.key`, the plugin cache's `cache.key`, the export signing key
//! `host-signing.key`).
//!
//! - **Creation is race-free.** The key is written to a temporary file
//!   (`O_CREAT | O_EXCL`, 0600), made durable, then hard-linked to its name,
//!   which fails if the name exists: the file appears whole or not at all, and
//!   of two processes racing, the loser reads the winner's key. Both end up
//!   with the same key.
//! - **An existing file is checked, never replaced.** It must be a regular
//!   file (a symlink is not followed), neither group- nor other-accessible
//!   (`mode & 0o077 == 0`), and exactly 32 bytes. Anything else is a
//!   [`KeyFileError`] naming the path and the fix: a short or damaged key is
//!   not silently regenerated, because everything made with the old key
//!   (live terminal holders, signatures, cache entries) would stop working.
//!
//! Key bytes are held in [`Zeroizing`] memory and never printed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};
use zeroize::Zeroizing;

/// Length of every key file, in bytes.
pub const KEY_LEN: usize = 32;

/// A key read from or written to a key file.
pub type Key = Zeroizing<[u8; KEY_LEN]>;

/// Why a key file could not be used. Messages name the path and what to do;
/// never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "key file {path} holds {len} bytes, not {KEY_LEN}; happyx never replaces a key file by itself: \
         restore the right file, or remove it to have a new key created (everything made with the old key stops working)"
    )]
    WrongSize { path: PathBuf, len: u64 },
    #[error(
        "key file {path} has mode {mode:04o}: group or others may access it; run `chmod 600 {path}` \
         (and consider the key exposed if others could read it)"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is not a regular file (a symlink, directory or device); \
         put the key file itself there, or remove it to have a new key created"
    )]
    NotRegular { path: PathBuf },
}

impl KeyFileError {
    /// A stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "key_file_io",
            Self::WrongSize { .. } => "key_file_wrong_size",
            Self::TooOpen { .. } => "key_file_mode",
            Self::NotRegular { .. } => "key_file_not_regular",
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::WrongSize { path, .. }
            | Self::TooOpen { path, .. }
            | Self::NotRegular { path } => path,
        }
    }
}

/// How many times a lost creation race is retried before giving up (the
/// winner's file is complete as soon as its name exists, so one suffices).
const ATTEMPTS: usize = 4;

/// Loads `dir/name`, creating it with a fresh random key if it does not exist.
pub fn load_or_create(dir: &Path, name: &str) -> Result<Key, KeyFileError> {
    let d = open_dir(dir, name)?;
    load_or_create_at(&d, &dir.join(name), name)
}

/// Loads `dir/name` if it exists (`Ok(None)` if not), with the same checks.
pub fn load_existing(dir: &Path, name: &str) -> Result<Option<Key>, KeyFileError> {
    let path = dir.join(name);
    let d = match File::open(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(KeyFileError::Io { path, error }),
    };
    match open_existing(&d, name, &path)? {
        Some(f) => read_checked(f, &path).map(Some),
        None => Ok(None),
    }
}

/// [`load_or_create`] inside an already open directory (e.g. a
/// `cap_std::fs::Dir`); `path` is how errors name the file.
pub fn load_or_create_at<D: AsFd>(dir: D, path: &Path, name: &str) -> Result<Key, KeyFileError> {
    let dir = dir.as_fd();
    for _ in 0..ATTEMPTS {
        if let Some(f) = open_existing(dir, name, path)? {
            return read_checked(f, path);
        }
        if let Some(key) = create(dir, name, path)? {
            return Ok(key);
        }
        // Lost the race: the winner's complete file is there now; read it.
    }
    Err(KeyFileError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other("the key file keeps appearing and disappearing"),
    })
}

fn open_dir(dir: &Path, name: &str) -> Result<File, KeyFileError> {
    File::open(dir).map_err(|error| KeyFileError::Io {
        path: dir.join(name),
        error,
    })
}

fn io_err(path: &Path, e: Errno) -> KeyFileError {
    KeyFileError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::from(e),
    }
}

/// Opens the file without following a symlink; `None` if it does not exist.
fn open_existing<D: AsFd>(dir: D, name: &str, path: &Path) -> Result<Option<File>, KeyFileError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP) | Err(Errno::ENXIO) => Err(KeyFileError::NotRegular {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path, e)),
    }
}

fn read_checked(mut f: File, path: &Path) -> Result<Key, KeyFileError> {
    let io = |error| KeyFileError::Io {
        path: path.to_path_buf(),
        error,
    };
    let meta = f.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(KeyFileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.size() != KEY_LEN as u64 {
        return Err(KeyFileError::WrongSize {
            path: path.to_path_buf(),
            len: meta.size(),
        });
    }
    let mut key: Key = Zeroizing::new([0u8; KEY_LEN]);
    f.read_exact(key.as_mut()).map_err(io)?;
    // It grew between the stat and the read: not a key file we trust.
    let mut extra = [0u8; 1];
    if f.read(&mut extra).map_err(io)? != 0 {
        return Err(KeyFileError::WrongSize {
            path: path.to_path_buf(),
            len: meta.size() + 1,
        });
    }
    Ok(key)
}

/// Writes a new key under a temporary name and links it to `name`.
/// `Ok(None)` when another process created `name` first.
fn create<D: AsFd + Copy>(dir: D, name: &str, path: &Path) -> Result<Option<Key>, KeyFileError> {
    let key: Key = Zeroizing::new(crate::util::random_bytes::<KEY_LEN>());
    let tmp = format!(
        ".{name}.{}.tmp",
        hex::encode(crate::util::random_bytes::<8>())
    );
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
        .map_err(|e| io_err(path, e))?;
    let mut f = File::from(fd);
    let written = (|| {
        // The umask may only have narrowed 0600; make it exact.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(key.as_ref())?;
        f.sync_all()
    })();
    drop(f);
    let linked = written
        .map_err(|error| KeyFileError::Io {
            path: path.to_path_buf(),
            error,
        })
        .and_then(
            |()| match linkat(dir, tmp.as_str(), dir, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) => Ok(false),
                Err(e) => Err(io_err(path, e)),
            },
        );
    let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    if !linked? {
        return Ok(None);
    }
    // The directory entry is durable once the directory is synced. `dir` may be
    // an `O_PATH` handle (cap-std's), which cannot be synced itself.
    let d = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(path, e))?;
    nix::unistd::fsync(&d).map_err(|e| io_err(path, e))?;
    tracing::info!(path = %path.display(), "created key file");
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    const NAME: &str = "test.key";

    fn write(dir: &Path, bytes: &[u8], mode: u32) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dir.join(NAME))
            .expect("create");
        f.write_all(bytes).expect("write");
        std::fs::set_permissions(dir.join(NAME), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }

    #[test]
    fn creates_0600_then_loads_the_same_key() {
        let tmp = tempfile::tempdir().expect("tmp");
        let a = load_or_create(tmp.path(), NAME).expect("create");
        let meta = std::fs::metadata(tmp.path().join(NAME)).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let b = load_or_create(tmp.path(), NAME).expect("load");
        assert_eq!(*a, *b);
        assert_eq!(
            load_existing(tmp.path(), NAME)
                .expect("existing")
                .map(|k| *k),
            Some(*a)
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [NAME]);
    }

    #[test]
    fn load_existing_does_not_create() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(load_existing(tmp.path(), NAME).expect("ok").is_none());
        assert!(!tmp.path().join(NAME).exists());
        assert!(
            load_existing(&tmp.path().join("missing"), NAME)
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn short_and_long_files_are_refused_and_kept() {
        for len in [0usize, 1, KEY_LEN - 1, KEY_LEN + 1, 64] {
            let tmp = tempfile::tempdir().expect("tmp");
            let bytes = vec![7u8; len];
            write(tmp.path(), &bytes, 0o600);
            let e = load_or_create(tmp.path(), NAME).expect_err("refused");
            assert_eq!(e.code(), "key_file_wrong_size", "{len}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(&tmp.path().join(NAME).display().to_string()));
            assert!(msg.contains(&format!("holds {len} bytes")), "{msg}");
            assert!(msg.contains("remove it"), "{msg}");
            assert_eq!(
                std::fs::read(tmp.path().join(NAME)).expect("read"),
                bytes,
                "never regenerated"
            );
            assert!(load_existing(tmp.path(), NAME).is_err());
        }
    }

    #[test]
    fn exactly_32_bytes_at_0600_and_0400_are_accepted() {
        for mode in [0o600, 0o400] {
            let tmp = tempfile::tempdir().expect("tmp");
            write(tmp.path(), &[3u8; KEY_LEN], mode);
            let k = load_or_create(tmp.path(), NAME).expect("accepted");
            assert_eq!(*k, [3u8; KEY_LEN]);
        }
    }

    #[test]
    fn group_or_other_access_is_refused() {
        for mode in [0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o644, 0o666] {
            let tmp = tempfile::tempdir().expect("tmp");
            write(tmp.path(), &[1u8; KEY_LEN], mode);
            let e = load_or_create(tmp.path(), NAME).expect_err("refused");
            assert_eq!(e.code(), "key_file_mode", "{mode:o}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
            assert!(!e.to_string().contains("0303"), "no key bytes");
        }
    }

    #[test]
    fn symlinks_directories_and_fifos_are_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let target = tmp.path().join("real.key");
        std::fs::write(&target, [5u8; KEY_LEN]).expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&target, tmp.path().join(NAME)).expect("symlink");
        let e = load_or_create(tmp.path(), NAME).expect_err("symlink refused");
        assert_eq!(e.code(), "key_file_not_regular", "{e}");

        let tmp = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::symlink(tmp.path().join("dangling"), tmp.path().join(NAME))
            .expect("symlink");
        let e = load_or_create(tmp.path(), NAME).expect_err("dangling symlink refused");
        assert_eq!(e.code(), "key_file_not_regular", "{e}");
        assert!(
            !tmp.path().join("dangling").exists(),
            "not created through it"
        );

        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(tmp.path().join(NAME)).expect("mkdir");
        std::fs::set_permissions(
            tmp.path().join(NAME),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        let e = load_or_create(tmp.path(), NAME).expect_err("dir refused");
        assert_eq!(e.code(), "key_file_not_regular", "{e}");

        let tmp = tempfile::tempdir().expect("tmp");
        nix::unistd::mkfifo(&tmp.path().join(NAME), Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let e = load_or_create(tmp.path(), NAME).expect_err("fifo refused");
        assert_eq!(e.code(), "key_file_not_regular", "{e}");
    }

    #[test]
    fn racing_threads_all_get_the_same_key() {
        for _ in 0..20 {
            let tmp = tempfile::tempdir().expect("tmp");
            let barrier = std::sync::Barrier::new(16);
            let keys: Vec<[u8; KEY_LEN]> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..16)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            *load_or_create(tmp.path(), NAME).expect("load or create")
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect()
            });
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
            let on_disk = std::fs::read(tmp.path().join(NAME)).expect("read");
            assert_eq!(on_disk, keys[0]);
            assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 1);
        }
    }

    #[test]
    fn errors_never_show_the_key() {
        let tmp = tempfile::tempdir().expect("tmp");
        write(tmp.path(), &[0xAB; KEY_LEN], 0o644);
        let e = load_or_create(tmp.path(), NAME).expect_err("refused");
        let shown = format!("{e} {e:?}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }
}
