//! The storage section of the host configuration (`[storage]` in `happyx.toml`): how the
//! database is opened. It lives with the store, which is its only reader; the host's
//! configuration embeds it as `storage` and documents every key in `examples/happyx.toml`.

use serde::{Deserialize, Serialize};

/// `synchronous` pragma for the SQLite database.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is fsynced: an acknowledged write survives power loss.
    Full,
    /// WAL commits are fsynced at checkpoints: an acknowledged write survives a
    /// process crash (kill -9) but the last commits may be lost on power loss.
    Normal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `full` (default) or `normal`; see `examples/happyx.toml`.
    pub synchronous: Synchronous,
    /// How long a writer waits for another process's write lock.
    pub busy_timeout_ms: u64,
    /// Read connections in the pool (writes go through one connection).
    pub read_connections: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout_ms: 10_000,
            read_connections: 8,
        }
    }
}
