//! The store: every SQL statement HappyX runs lives in this crate, and it is
//! the only code that knows the database engine: SQLite in the data dir by default, or a
//! PostgreSQL database several hosts share ([`engine`] says how one body of code runs on both). It also owns
//! what the stored history is made of: the event chain ([`audit`]), signed
//! checkpoints ([`checkpoint`]), the host signing key ([`signing`]) and the
//! `[storage]` configuration ([`config`]). It depends on no HTTP framework and
//! no plugin runtime (`cargo tree -p happyx-store` shows neither axum nor
//! wasmtime).
//!
//! Domain modules call whole units of work (`create_task`, `use_approval`, …);
//! each is one transaction that also appends its audit event, on either engine, so no
//! caller knows which engine it runs on. On SQLite, writes go through a single-connection
//! pool (SQLite allows one writer; queueing in-process is fairer than spinning on
//! `SQLITE_BUSY`), reads through a separate pool, except lookups by id, which run on the
//! calling thread when they can (module `direct`). Every write transaction holds the engine's
//! write lock from its start: `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock
//! on PostgreSQL.

mod approvals;
pub mod audit;
pub mod checkpoint;
mod checkpoints;
pub mod config;
mod console;
mod deployments;
mod devices;
mod direct;
pub(crate) mod engine;
mod envelopes;
mod events;
mod exclusive;
mod hosts;
mod migrate;
mod pty;
mod records;
mod retention;
mod rows;
mod runs;
pub mod signing;
mod stats;
// Compiled in every build (not behind a feature), so the store has one feature set wherever
// it is built and nothing is compiled twice; hidden from the documentation.
#[doc(hidden)]
pub mod test_support;
#[cfg(test)]
mod testing;
mod token_cache;
mod tokens;
pub mod transfer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub(crate) use engine::{Engine, Tx, db};

pub use approvals::{ApprovalUse, Granted, NewApproval, TokenRecord, UseEffect, UseOutcome};
pub use console::{ConsoleSessionRow, EventFilter, RunFilter};
pub use devices::{DeviceKeyRow, DeviceRow, EnrollOutcome, KeyState, NewDeviceKey, NewEnrollment};
pub use envelopes::{
    EnvelopeStats, IngestItem, IngestLimits, IngestVerdict, SenderStats, StoredEnvelope,
    WrappedKeyRow,
};
pub use events::NewEvent;
pub(crate) use events::verify_chain_on;
pub use exclusive::{Exclusive, ExclusiveGuard};
pub use hosts::{HostRecord, PLUGINS_CHANNEL};
pub use migrate::{
    MIGRATIONS_DIR_NAME, POSTGRES_DIR_NAME, SCHEMA_VERSION, migration_checksums,
    postgres_migration_checksums,
};
pub use records::Owner;
pub use retention::{ItemMeta, retention_kinds};
pub use rows::*;
pub use stats::{PruneRecord, RedactionTotals, StatusCount};

use crate::config::{StorageConfig, Synchronous};

/// Name of the database file inside the data dir.
pub const DB_FILE: &str = "happyx.db";

/// A storage failure. `Display` never contains stored values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// An error of the direct-read binding. A lookup whose direct read fails this way takes
    /// the read pool instead (the `direct` module), so callers see the pool's answer, not this.
    #[error("database error: {0}")]
    Direct(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database schema (version {found}) is newer than this happyx supports (version {supported}); \
         run a newer happyx or restore an export made by this version"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// A whole-database read (an export) of a PostgreSQL database at another schema version:
    /// its table list is this version's.
    #[error(
        "the database schema is version {found} and this happyx reads version {supported};          start a host of this version once (it migrates the database) or use the matching happyx"
    )]
    SchemaMismatch { found: i64, supported: i64 },
    #[error("not found")]
    NotFound,
    /// The requester is at its cap of pending approvals.
    #[error("conflict: too_many_pending")]
    TooManyPending,
    /// The requester already used this idempotency key.
    #[error("conflict: idempotency_key")]
    IdempotencyKeyReuse,
    /// The PTY is no longer in state `starting`.
    #[error("conflict: not_starting")]
    NotStarting,
    /// A transcript chunk does not start where the stored transcript ends.
    #[error("conflict: transcript_gap")]
    TranscriptGap,
    /// Every uid of the configured child range is taken.
    #[error("conflict: uid_range_exhausted")]
    UidRangeExhausted,
    /// The audit chain's tip moved while an event was appended.
    #[error("conflict: the event was not appended")]
    EventNotAppended,
    /// A session with this id exists.
    #[error("conflict: a session with this id exists")]
    SessionExists,
    /// A recipient device or key version of a rotation was revoked meanwhile.
    #[error("conflict: a recipient device or key version is revoked")]
    RecipientRevoked,
    /// A concurrent rotation moved the session's epoch.
    #[error("conflict: the session's epoch changed")]
    EpochChanged,
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Db(_) | Self::Direct(_) => "storage_error",
            Self::Migrate(_) => "migration_failed",
            Self::SchemaTooNew { .. } => "schema_too_new",
            Self::SchemaMismatch { .. } => "schema_mismatch",
            Self::NotFound => "not_found",
            Self::TooManyPending => "too_many_pending",
            Self::IdempotencyKeyReuse => "idempotency_key_reuse",
            Self::NotStarting => "pty_not_starting",
            Self::TranscriptGap => "transcript_gap",
            Self::UidRangeExhausted => "uid_range_exhausted",
            Self::EventNotAppended => "event_not_appended",
            Self::SessionExists => "session_exists",
            Self::RecipientRevoked => "recipient_revoked",
            Self::EpochChanged => "epoch_changed",
            Self::Corrupt(_) => "storage_corrupt",
        }
    }

    /// True for a refusal because of the state of stored records (HTTP 409 unless a caller
    /// knows better), as opposed to a storage failure.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::TooManyPending
                | Self::IdempotencyKeyReuse
                | Self::NotStarting
                | Self::TranscriptGap
                | Self::UidRangeExhausted
                | Self::EventNotAppended
                | Self::SessionExists
                | Self::RecipientRevoked
                | Self::EpochChanged
        )
    }

    /// True when the error is a violated UNIQUE constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Db(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    engine: Engine,
    /// The SQLite database file; `None` on PostgreSQL.
    path: Option<std::sync::Arc<Path>>,
    /// Token rows for authentication; see [`token_cache`]. `None` on PostgreSQL, where a
    /// revocation may come from another host: every authentication reads the row.
    token_cache: Option<std::sync::Arc<token_cache::TokenCache>>,
    /// Lookups by key on the caller's thread; see [`direct`]. `None`: every read is pooled
    /// (always on PostgreSQL).
    direct: Option<std::sync::Arc<direct::Direct>>,
    /// The host this store acts for ([`Store::for_host`]): owner of the runs and terminals it
    /// creates. `None` in commands and tests that act for no host.
    host: Option<std::sync::Arc<str>>,
}

impl Store {
    /// Opens the configured database (creating the SQLite one in `data_dir` if needed) and
    /// applies the embedded migrations. Refuses a database whose schema is newer than ours.
    pub async fn open(data_dir: &Path, cfg: &StorageConfig) -> Result<Self> {
        match &cfg.url {
            Some(url) => Self::open_postgres(url, cfg).await,
            None => Self::open_sqlite(data_dir, cfg).await,
        }
    }

    /// Connects to the PostgreSQL database `url` names and brings its schema up to date
    /// (several hosts may do so at once: the migrator holds an advisory lock).
    async fn open_postgres(url: &config::DatabaseUrl, cfg: &StorageConfig) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url.expose())?;
        let pool = PgPoolOptions::new()
            // Writers hold the one write lock in turn; reads need their own connections.
            .max_connections(cfg.read_connections.saturating_add(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        migrate::run_postgres(&pool).await?;
        let engine = Engine::Postgres { pool };
        events::backfill_hashes(&engine).await?;
        Ok(Self {
            engine,
            path: None,
            token_cache: None,
            direct: None,
            host: None,
        })
    }

    async fn open_sqlite(data_dir: &Path, cfg: &StorageConfig) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let sync = match cfg.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        };
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .foreign_keys(true)
            .busy_timeout(Duration::from_millis(cfg.busy_timeout_ms))
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", "1000");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await?;
        migrate::run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(cfg.read_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        let engine = Engine::Sqlite { write, read };
        events::backfill_hashes(&engine).await?;
        private_files(&path);
        let token_cache = Some(std::sync::Arc::new(token_cache::TokenCache::open(data_dir)));
        let direct = Some(std::sync::Arc::new(direct::Direct::new(&path)));
        Ok(Self {
            engine,
            path: Some(path.into()),
            token_cache,
            direct,
            host: None,
        })
    }

    /// The same store with every read on the read pool (no direct reads), for tests and
    /// benchmarks that compare the two paths.
    #[doc(hidden)]
    pub fn pooled_reads_only(&self) -> Store {
        Store {
            direct: None,
            ..self.clone()
        }
    }

    /// The row `sql` (one `$1` parameter, bound to `key`) selects, if any: a direct read
    /// ([`direct`]) when one can run at once, else the read pool.
    async fn lookup<T: rows::FromColumns>(&self, sql: &str, key: &str) -> Result<Option<T>> {
        if let Some(direct) = &self.direct
            && let Some(answer) = direct.one(sql, key, |r| T::from_columns(r))
        {
            return answer;
        }
        db!(read self, c => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(T::from_columns)
            .transpose())
    }

    /// Path of the SQLite database file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `(version, description, hex sha384 checksum)` of the migrations of this store's engine.
    pub fn migration_checksums(&self) -> Vec<(i64, String, String)> {
        match self.engine {
            Engine::Sqlite { .. } => migration_checksums(),
            Engine::Postgres { .. } => postgres_migration_checksums(),
        }
    }

    /// Bytes the database takes: the SQLite file and its WAL, or PostgreSQL's
    /// `pg_database_size`.
    pub async fn storage_bytes(&self) -> Result<u64> {
        match &self.engine {
            Engine::Sqlite { .. } => {
                let Some(db) = self.path() else {
                    return Ok(0);
                };
                let mut wal = db.as_os_str().to_owned();
                wal.push("-wal");
                Ok([db.as_os_str().to_owned(), wal]
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum())
            }
            Engine::Postgres { pool } => {
                let (n,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                    .fetch_one(pool)
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    }

    /// Closes the pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.engine.close().await;
    }

    /// Starts a write transaction holding the engine's write lock from its first statement.
    async fn begin(&self) -> Result<Tx> {
        self.engine.begin().await
    }

    /// Starts a read-only transaction with one consistent view; see [`Engine::begin_read`].
    async fn begin_read(&self) -> Result<Tx> {
        self.engine.begin_read().await
    }

    /// The SQLite write pool, for benchmarks that compare against raw statements; `None` on
    /// PostgreSQL.
    #[doc(hidden)]
    pub fn raw_write_pool(&self) -> Option<&SqlitePool> {
        match &self.engine {
            Engine::Sqlite { write, .. } => Some(write),
            Engine::Postgres { .. } => None,
        }
    }
}

/// Appends one event inside `tx`; see [`events`].
async fn append_event(tx: &mut Tx, ev: &NewEvent<'_>) -> Result<i64> {
    events::append(tx, ev).await
}

/// Appends events in order inside `tx`, many per statement; see [`events::append_all`].
async fn append_events_in(tx: &mut Tx, evs: &[NewEvent<'_>]) -> Result<Option<i64>> {
    events::append_all(tx, evs).await
}

/// Makes the database, its WAL and shared-memory file 0600, also where an older host left
/// them 0644 (the data dir is 0700, but nothing in it is meant for other users).
fn private_files(db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let p = std::path::PathBuf::from(name);
        if let Ok(meta) = std::fs::metadata(&p)
            && meta.permissions().mode() & 0o077 != 0
            && let Err(e) = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(file = %p.display(), error = %e, "cannot make a database file private");
        }
    }
}
