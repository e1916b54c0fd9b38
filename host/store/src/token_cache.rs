//! The verified-token cache: token rows as last read, so that authenticating a
//! request costs a hash and a lookup instead of a query, without ever serving a
//! revoked token after its revocation returned.
//!
//! Revocation is signalled through the *revocation epoch*, a file beside the
//! database (`revocations`, 8 bytes, 0600). Every committed revocation, by any
//! process on the data dir (the host's API, `happyx token revoke` while it
//! serves), writes a fresh random value into it *after* its commit and before
//! it returns. Each use of the cache reads the 8 bytes (one `pread`, no query)
//! and trusts an entry only if it was filled under the same value; the epoch is
//! read *before* the row, so a revocation committed between the two leaves the
//! entry under a stale epoch. A process that dies between its commit and the
//! epoch write leaves entries that expire after [`TTL`]. Random values rather
//! than a counter: two processes revoking at once cannot write the same value
//! back (a counter read-increment-write could).
//!
//! Rows that are missing are never cached (a token created by the CLI while
//! the host serves must work at once); the cache holds at most [`CAPACITY`]
//! rows and is emptied when full.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::TokenRow;

/// Name of the revocation-epoch file inside the data dir.
pub const EPOCH_FILE: &str = "revocations";
/// Longest an entry is trusted, whatever the epoch says.
pub const TTL: Duration = Duration::from_secs(30);
/// Most rows held at once.
pub const CAPACITY: usize = 10_000;

/// See the module docs.
pub struct TokenCache {
    epoch: Epoch,
    rows: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    row: TokenRow,
    epoch: u64,
    at: Instant,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.rows.lock().map(|r| r.len()).unwrap_or(0);
        f.debug_struct("TokenCache")
            .field("epoch_file", &self.epoch.path)
            .field("held", &held)
            .finish()
    }
}

impl TokenCache {
    pub fn open(data_dir: &Path) -> TokenCache {
        TokenCache {
            epoch: Epoch::open(data_dir),
            rows: Mutex::new(HashMap::new()),
        }
    }

    /// The epoch to fill under; `None` when the file cannot be read (the cache
    /// is then bypassed).
    pub fn epoch(&self) -> Option<u64> {
        self.epoch.read()
    }

    /// The cached row of `id`, if it was filled under `epoch` less than [`TTL`] ago.
    pub fn get(&self, id: &str, epoch: u64) -> Option<TokenRow> {
        let rows = self.rows.lock().ok()?;
        rows.get(id)
            .filter(|e| e.epoch == epoch && e.at.elapsed() < TTL)
            .map(|e| e.row.clone())
    }

    /// Keeps `row` as read under `epoch` (read before the row was).
    pub fn put(&self, row: &TokenRow, epoch: u64) {
        if let Ok(mut rows) = self.rows.lock() {
            if rows.len() >= CAPACITY && !rows.contains_key(&row.id) {
                rows.clear();
            }
            rows.insert(
                row.id.clone(),
                Entry {
                    row: row.clone(),
                    epoch,
                    at: Instant::now(),
                },
            );
        }
    }

    /// Called after a revocation committed: every process's entries go stale.
    pub fn revoked(&self) {
        self.epoch.bump();
        if let Ok(mut rows) = self.rows.lock() {
            rows.clear();
        }
    }
}

/// The 8-byte epoch file.
#[derive(Debug)]
struct Epoch {
    path: PathBuf,
    file: Option<File>,
}

impl Epoch {
    fn open(data_dir: &Path) -> Epoch {
        let path = data_dir.join(EPOCH_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path);
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e,
                    "cannot open the revocation epoch; tokens are checked against the database on every request");
                None
            }
        };
        Epoch { path, file }
    }

    fn read(&self) -> Option<u64> {
        let mut buf = [0u8; 8];
        let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
        // A file never written reads short: epoch 0 until the first revocation.
        Some(if n == 8 { u64::from_le_bytes(buf) } else { 0 })
    }

    fn bump(&self) {
        let mut buf = [0u8; 8];
        let written = getrandom::fill(&mut buf)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|()| match &self.file {
                Some(f) => f.write_all_at(&buf, 0),
                None => Err(std::io::Error::other("not open")),
            });
        if let Err(e) = written {
            // Other processes' entries then last until their TTL; say so.
            tracing::warn!(file = %self.path.display(), error = %e,
                "cannot write the revocation epoch; other processes may accept the revoked token for up to 30 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> TokenRow {
        TokenRow {
            id: id.into(),
            name: None,
            role: happyx_core::vocab::Role::Agent,
            secret_hash: "00".repeat(32),
            created_at: 0,
            revoked_at: None,
        }
    }

    /// Two caches on one data dir stand for two processes: a revocation in one makes the
    /// other's entries stale at once, through the file alone.
    #[test]
    fn a_revocation_in_another_process_makes_entries_stale() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = TokenCache::open(dir.path());
        let cli = TokenCache::open(dir.path());
        let e = host.epoch().expect("epoch");
        host.put(&row("tok_a"), e);
        assert!(host.get("tok_a", host.epoch().expect("epoch")).is_some());
        cli.revoked();
        let now = host.epoch().expect("epoch");
        assert_ne!(now, e);
        assert!(
            host.get("tok_a", now).is_none(),
            "stale after the revocation"
        );
    }

    /// The naive cache (one that trusts its entries without comparing the epoch) is what the
    /// test above catches: shown here so that the test is known to be able to fail.
    #[test]
    fn the_epoch_check_is_what_catches_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = TokenCache::open(dir.path());
        let e = host.epoch().expect("epoch");
        host.put(&row("tok_a"), e);
        TokenCache::open(dir.path()).revoked();
        assert!(
            host.get("tok_a", e).is_some(),
            "a naive reader still finds it"
        );
    }

    #[test]
    fn full_caches_are_emptied_and_missing_files_bypass() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = TokenCache::open(dir.path());
        for i in 0..CAPACITY {
            c.put(&row(&format!("tok_{i}")), 0);
        }
        c.put(&row("tok_new"), 0);
        assert!(c.get("tok_0", 0).is_none());
        assert!(c.get("tok_new", 0).is_some());
        let gone = TokenCache::open(&dir.path().join("no-such-dir"));
        assert_eq!(gone.epoch(), None);
    }
}
