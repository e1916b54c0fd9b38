//! The device directory: one private folder (mode 0700) holding every secret a device has, each
//! in a 0600 JSON file written atomically (temporary file, fsync, rename, fsync of the folder).
//!
//! ```text
//! DIR/device.json                    {"keyVersion","signingSeed","hpkeSecret","deviceId"?}
//! DIR/sessions/<id>/lock             empty; flock(2)ed around every change in the session
//! DIR/sessions/<id>/sequence.json    {"last": u64} — last sequence handed out for sending
//! DIR/sessions/<id>/peers.json       {"<deviceId>": "<fingerprint>", ...} — pinned peers
//! DIR/sessions/<id>/keys.json        {"<epoch>": "<base64 content key>", ...}
//! ```
//!
//! Loading refuses a folder or file that group or others may access, naming it and its mode.
//! [`DeviceDir::next_sequence`] persists the new value under an exclusive lock before returning
//! it, so two processes on one device never hand out the same sequence, and a crash after it
//! returns can only skip a number, never repeat one.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use happyx_envelope::limits::is_valid_id;
use happyx_envelope::{ContentKey, CryptoError, DeviceKeys, DevicePublicKeys, Fingerprint};

const DEVICE_FILE: &str = "device.json";
const SESSIONS_DIR: &str = "sessions";
const LOCK_FILE: &str = "lock";
const SEQUENCE_FILE: &str = "sequence.json";
const PEERS_FILE: &str = "peers.json";
const KEYS_FILE: &str = "keys.json";
/// Largest state file read back (they hold keys, ids and counters only).
const MAX_STATE_FILE_LEN: u64 = 1024 * 1024;

/// Why the device directory could not be used. Messages name files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file or folder is open to group or others.
    #[error(
        "{} has mode {mode:04o}; it must not be accessible by group or others (chmod {want:o} {})",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The file or folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        want: u32,
    },
    /// `keygen` found keys already there.
    #[error("{} already holds device keys; refusing to overwrite them", path.display())]
    AlreadyExists {
        /// The existing key file.
        path: PathBuf,
    },
    /// No device keys in the folder.
    #[error("{} does not exist; run `happyx device keygen --dir DIR` first", path.display())]
    NoKeys {
        /// The missing key file.
        path: PathBuf,
    },
    /// A state file is not what this code writes.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A path is a symbolic link or not the expected kind of file.
    #[error("{} is not a regular {kind}", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// `file` or `folder`.
        kind: &'static str,
    },
    /// A session or device id is not valid.
    #[error("invalid {what} id")]
    InvalidId {
        /// `session` or `device`.
        what: &'static str,
    },
    /// A peer's keys were not pinned for this session.
    #[error("device {device_id} is not pinned for session {session_id}")]
    PeerNotPinned {
        /// The session.
        session_id: String,
        /// The peer.
        device_id: String,
    },
    /// A peer's keys differ from the fingerprint pinned at open-session.
    #[error(
        "keys of device {device_id} in session {session_id} have fingerprint {actual}, \
         but {pinned} was pinned"
    )]
    FingerprintMismatch {
        /// The session.
        session_id: String,
        /// The peer.
        device_id: String,
        /// The pinned fingerprint.
        pinned: Fingerprint,
        /// The fingerprint of the keys presented.
        actual: Fingerprint,
    },
    /// Pinning a different fingerprint for an already pinned peer.
    #[error(
        "device {device_id} is already pinned with another fingerprint in session {session_id}"
    )]
    PinConflict {
        /// The session.
        session_id: String,
        /// The peer.
        device_id: String,
    },
    /// The per-session sequence counter cannot advance.
    #[error("sequence counter of session {session_id} is exhausted")]
    SequenceExhausted {
        /// The session.
        session_id: String,
    },
    /// Key generation failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl KeystoreError {
    /// A stable code for CLI messages and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io_error",
            Self::InsecurePermissions { .. } => "insecure_permissions",
            Self::AlreadyExists { .. } => "keys_exist",
            Self::NoKeys { .. } => "no_keys",
            Self::Corrupt { .. } => "corrupt_state",
            Self::NotRegular { .. } => "not_regular",
            Self::InvalidId { .. } => "invalid_id",
            Self::PeerNotPinned { .. } => "peer_not_pinned",
            Self::FingerprintMismatch { .. } => "fingerprint_mismatch",
            Self::PinConflict { .. } => "pin_conflict",
            Self::SequenceExhausted { .. } => "sequence_exhausted",
            Self::Crypto(e) => e.code(),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `device.json`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeviceFile {
    key_version: u64,
    signing_seed: String,
    hpke_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
}

impl Drop for DeviceFile {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.signing_seed.zeroize();
        self.hpke_secret.zeroize();
    }
}

/// `sequence.json`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SequenceFile {
    last: u64,
}

/// An opened device directory.
#[derive(Debug)]
pub struct DeviceDir {
    dir: PathBuf,
    keys: DeviceKeys,
    device_id: Option<String>,
}

impl DeviceDir {
    /// Creates `dir` (mode 0700) if missing and new keys for `key_version` in it (mode 0600).
    /// Refuses a folder that already holds keys, or one open to group or others.
    pub fn keygen(dir: &Path, key_version: u64) -> Result<Self, KeystoreError> {
        create_private_dir(dir)?;
        check_dir(dir)?;
        let path = dir.join(DEVICE_FILE);
        if fs::symlink_metadata(&path).is_ok() {
            return Err(KeystoreError::AlreadyExists { path });
        }
        let keys = DeviceKeys::generate(key_version)?;
        let this = Self {
            dir: dir.to_path_buf(),
            keys,
            device_id: None,
        };
        this.write_device_file(true)?;
        Ok(this)
    }

    /// Opens an existing device directory, refusing wider permissions than 0700/0600.
    pub fn open(dir: &Path) -> Result<Self, KeystoreError> {
        check_dir(dir)?;
        let path = dir.join(DEVICE_FILE);
        if fs::symlink_metadata(&path).is_err() {
            return Err(KeystoreError::NoKeys { path });
        }
        let file: DeviceFile = read_json(&path)?;
        let corrupt = |reason: &str| KeystoreError::Corrupt {
            path: path.clone(),
            reason: reason.into(),
        };
        let seed = decode_secret(&file.signing_seed).ok_or_else(|| corrupt("bad signingSeed"))?;
        let hpke = decode_secret(&file.hpke_secret).ok_or_else(|| corrupt("bad hpkeSecret"))?;
        if let Some(id) = &file.device_id
            && !is_valid_id(id)
        {
            return Err(corrupt("bad deviceId"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            keys: DeviceKeys::from_secret_bytes(file.key_version, &seed, &hpke),
            device_id: file.device_id.clone(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The device's secret keys.
    pub fn keys(&self) -> &DeviceKeys {
        &self.keys
    }

    /// The device's public keys.
    pub fn public_keys(&self) -> DevicePublicKeys {
        self.keys.public()
    }

    /// The device's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.keys.fingerprint()
    }

    /// The id the server assigned at enrollment, if enrolled.
    pub fn device_id(&self) -> Option<&str> {
        self.device_id.as_deref()
    }

    /// Records the id the server assigned at enrollment.
    pub fn set_device_id(&mut self, device_id: &str) -> Result<(), KeystoreError> {
        if !is_valid_id(device_id) {
            return Err(KeystoreError::InvalidId { what: "device" });
        }
        self.device_id = Some(device_id.to_owned());
        self.write_device_file(false)
    }

    fn write_device_file(&self, create_new: bool) -> Result<(), KeystoreError> {
        let file = DeviceFile {
            key_version: self.keys.key_version(),
            signing_seed: happyx_envelope::b64_encode(&*self.keys.signing_seed()),
            hpke_secret: happyx_envelope::b64_encode(&*self.keys.hpke_secret()),
            device_id: self.device_id.clone(),
        };
        let path = self.dir.join(DEVICE_FILE);
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).map_err(|e| {
            KeystoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?);
        write_atomic(&path, &json, create_new)
    }

    /// Hands out the next send sequence of `session_id` (starting at 1). The new value is on
    /// disk (fsynced) before it is returned, under an exclusive lock shared by every process
    /// using this folder: post the envelope only after this returns.
    pub fn next_sequence(&self, session_id: &str) -> Result<u64, KeystoreError> {
        let session = self.session_dir(session_id, true)?;
        let _lock = lock_session(&session)?;
        let path = session.join(SEQUENCE_FILE);
        let current: SequenceFile = read_json_opt(&path)?.unwrap_or_default();
        let next = current
            .last
            .checked_add(1)
            .ok_or_else(|| KeystoreError::SequenceExhausted {
                session_id: session_id.to_owned(),
            })?;
        write_json(&path, &SequenceFile { last: next })?;
        Ok(next)
    }

    /// The last sequence handed out for `session_id` (0 if none).
    pub fn last_sequence(&self, session_id: &str) -> Result<u64, KeystoreError> {
        let session = self.session_dir(session_id, false)?;
        let path = session.join(SEQUENCE_FILE);
        Ok(read_json_opt::<SequenceFile>(&path)?
            .unwrap_or_default()
            .last)
    }

    /// Pins peers' fingerprints for `session_id` (done at open-session). Pinning the same
    /// fingerprint again is a no-op; a different one for a pinned device is refused.
    pub fn pin_peers(
        &self,
        session_id: &str,
        peers: &[(String, Fingerprint)],
    ) -> Result<(), KeystoreError> {
        for (device_id, _) in peers {
            if !is_valid_id(device_id) {
                return Err(KeystoreError::InvalidId { what: "device" });
            }
        }
        let session = self.session_dir(session_id, true)?;
        let _lock = lock_session(&session)?;
        let path = session.join(PEERS_FILE);
        let mut pins: BTreeMap<String, Fingerprint> = read_json_opt(&path)?.unwrap_or_default();
        for (device_id, fp) in peers {
            match pins.get(device_id) {
                Some(existing) if existing != fp => {
                    return Err(KeystoreError::PinConflict {
                        session_id: session_id.to_owned(),
                        device_id: device_id.clone(),
                    });
                }
                _ => {
                    pins.insert(device_id.clone(), *fp);
                }
            }
        }
        write_json(&path, &pins)
    }

    /// The fingerprints pinned for `session_id`.
    pub fn pinned_peers(
        &self,
        session_id: &str,
    ) -> Result<BTreeMap<String, Fingerprint>, KeystoreError> {
        let session = self.session_dir(session_id, false)?;
        Ok(read_json_opt(&session.join(PEERS_FILE))?.unwrap_or_default())
    }

    /// Checks a peer's keys (as the host presents them) against the fingerprint pinned for
    /// `session_id`; call it for every envelope sender and key wrapper before trusting them.
    pub fn check_peer(
        &self,
        session_id: &str,
        device_id: &str,
        keys: &DevicePublicKeys,
    ) -> Result<(), KeystoreError> {
        let pins = self.pinned_peers(session_id)?;
        let pinned = pins
            .get(device_id)
            .ok_or_else(|| KeystoreError::PeerNotPinned {
                session_id: session_id.to_owned(),
                device_id: device_id.to_owned(),
            })?;
        let actual = keys.fingerprint();
        if *pinned != actual {
            return Err(KeystoreError::FingerprintMismatch {
                session_id: session_id.to_owned(),
                device_id: device_id.to_owned(),
                pinned: *pinned,
                actual,
            });
        }
        Ok(())
    }

    /// Keeps the content key of (`session_id`, `epoch`) this device has unwrapped.
    pub fn store_content_key(
        &self,
        session_id: &str,
        epoch: u64,
        key: &ContentKey,
    ) -> Result<(), KeystoreError> {
        let session = self.session_dir(session_id, true)?;
        let _lock = lock_session(&session)?;
        let path = session.join(KEYS_FILE);
        let mut keys = read_keys(&path)?;
        keys.0.insert(
            epoch.to_string(),
            happyx_envelope::b64_encode(key.as_bytes()),
        );
        let json = Zeroizing::new(serde_json::to_vec_pretty(&keys).map_err(|e| {
            KeystoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?);
        write_atomic(&path, &json, false)
    }

    /// The content key of (`session_id`, `epoch`), if this device holds it.
    pub fn content_key(
        &self,
        session_id: &str,
        epoch: u64,
    ) -> Result<Option<ContentKey>, KeystoreError> {
        let session = self.session_dir(session_id, false)?;
        let path = session.join(KEYS_FILE);
        let keys = read_keys(&path)?;
        match keys.0.get(&epoch.to_string()) {
            None => Ok(None),
            Some(text) => decode_secret(text)
                .map(|bytes| Some(ContentKey::from_bytes(*bytes)))
                .ok_or_else(|| KeystoreError::Corrupt {
                    path,
                    reason: format!("bad key for epoch {epoch}"),
                }),
        }
    }

    /// `DIR/sessions/<id>`, created (0700) when `create`, permission-checked when present.
    fn session_dir(&self, session_id: &str, create: bool) -> Result<PathBuf, KeystoreError> {
        if !is_valid_id(session_id) {
            return Err(KeystoreError::InvalidId { what: "session" });
        }
        let sessions = self.dir.join(SESSIONS_DIR);
        let session = sessions.join(session_id);
        for d in [&sessions, &session] {
            if create {
                create_private_dir(d)?;
            }
            if fs::symlink_metadata(d).is_ok() {
                check_dir(d)?;
            }
        }
        Ok(session)
    }
}

/// `keys.json`: epoch → base64 content key; wiped from memory when dropped.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
struct KeyMap(BTreeMap<String, String>);

impl Drop for KeyMap {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.values_mut().for_each(|v| v.zeroize());
    }
}

fn read_keys(path: &Path) -> Result<KeyMap, KeystoreError> {
    Ok(read_json_opt(path)?.unwrap_or_default())
}

fn decode_secret(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    happyx_envelope::b64_decode_32(text).map(Zeroizing::new)
}

/// Creates `dir` with mode 0700 if it does not exist (its parents with the default mode).
fn create_private_dir(dir: &Path) -> Result<(), KeystoreError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(io_err(dir)(e)),
            }
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Refuses a folder that is a symlink, not a folder, or open to group or others.
fn check_dir(dir: &Path) -> Result<(), KeystoreError> {
    let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(KeystoreError::NotRegular {
            path: dir.to_path_buf(),
            kind: "folder",
        });
    }
    check_mode(dir, meta.permissions().mode(), 0o700)
}

fn check_mode(path: &Path, mode: u32, want: u32) -> Result<(), KeystoreError> {
    let mode = mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    Ok(())
}

/// Opens and checks a state file; `None` if it does not exist.
fn open_checked(path: &Path) -> Result<Option<File>, KeystoreError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeystoreError::NotRegular {
                path: path.to_path_buf(),
                kind: "file",
            });
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(KeystoreError::NotRegular {
            path: path.to_path_buf(),
            kind: "file",
        });
    }
    check_mode(path, meta.permissions().mode(), 0o600)?;
    if meta.len() > MAX_STATE_FILE_LEN {
        return Err(KeystoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_STATE_FILE_LEN} bytes"),
        });
    }
    Ok(Some(file))
}

fn read_json_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, KeystoreError> {
    let Some(file) = open_checked(path)? else {
        return Ok(None);
    };
    let mut bytes = Zeroizing::new(Vec::new());
    io::Read::read_to_end(&mut io::Read::take(file, MAX_STATE_FILE_LEN), &mut bytes)
        .map_err(io_err(path))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| KeystoreError::Corrupt {
            path: path.to_path_buf(),
            // Only the position: the text may contain key material.
            reason: format!(
                "not valid JSON for this file (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, KeystoreError> {
    read_json_opt(path)?.ok_or_else(|| KeystoreError::NoKeys {
        path: path.to_path_buf(),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), KeystoreError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| KeystoreError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &json, false)
}

/// Writes `bytes` to a fresh 0600 temporary file beside `path`, fsyncs it, renames it over
/// `path` (or, with `create_new`, links it into place only if `path` does not exist) and fsyncs
/// the folder.
fn write_atomic(path: &Path, bytes: &[u8], create_new: bool) -> Result<(), KeystoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|_| CryptoError::Rng)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        if create_new {
            // link(2) fails if the target exists: never overwrite existing keys.
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    KeystoreError::AlreadyExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_err(path)(e)
                }
            })?;
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        } else {
            fs::rename(&tmp, path).map_err(io_err(path))?;
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Takes the exclusive lock of a session folder; released when the guard drops.
fn lock_session(session: &Path) -> Result<Flock<File>, KeystoreError> {
    let path = session.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_err(&path))?;
    let meta = file.metadata().map_err(io_err(&path))?;
    check_mode(&path, meta.permissions().mode(), 0o600)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| KeystoreError::Io {
        path,
        source: io::Error::from(errno),
    })
}

#[cfg(test)]
mod tests;
