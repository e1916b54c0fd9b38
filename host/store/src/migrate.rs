//! Embedded schema migrations (`migrations/sqlite/`) and the schema-version guard.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::SqlitePool;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{Result, StoreError};

/// Folder the migrations come from, relative to the repository root.
pub const MIGRATIONS_DIR_NAME: &str = "migrations/sqlite";

/// (version, description, SQL, manages its own transaction) — embedded at build time. A
/// migration that rebuilds a table turns foreign keys off around its own transaction, which
/// SQLite allows only outside one.
const SOURCES: &[(i64, &str, &str, bool)] = &[
    (
        1,
        "foundation",
        include_str!("../../../migrations/sqlite/0001_foundation.sql"),
        false,
    ),
    (
        2,
        "devices",
        include_str!("../../../migrations/sqlite/0002_devices.sql"),
        false,
    ),
    (
        3,
        "pty",
        include_str!("../../../migrations/sqlite/0003_pty.sql"),
        false,
    ),
    (
        4,
        "isolation",
        include_str!("../../../migrations/sqlite/0004_isolation.sql"),
        true,
    ),
    (
        5,
        "console",
        include_str!("../../../migrations/sqlite/0005_console.sql"),
        false,
    ),
    (
        6,
        "rotation",
        include_str!("../../../migrations/sqlite/0006_rotation.sql"),
        false,
    ),
    (
        7,
        "audit_chain",
        include_str!("../../../migrations/sqlite/0007_audit_chain.sql"),
        false,
    ),
    (
        8,
        "pty_truncated",
        include_str!("../../../migrations/sqlite/0008_pty_truncated.sql"),
        false,
    ),
    (
        9,
        "checkpoints",
        include_str!("../../../migrations/sqlite/0009_checkpoints.sql"),
        false,
    ),
    (
        10,
        "envelope_version",
        include_str!("../../../migrations/sqlite/0010_envelope_version.sql"),
        false,
    ),
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = SOURCES[SOURCES.len() - 1].0;

fn migrations() -> Vec<Migration> {
    SOURCES
        .iter()
        .map(|(v, d, sql, no_tx)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                SqlStr::from_static(sql),
                *no_tx,
            )
        })
        .collect()
}

/// `(version, description, hex sha384 checksum)` of every embedded migration.
pub fn migration_checksums() -> Vec<(i64, String, String)> {
    migrations()
        .into_iter()
        .map(|m| {
            (
                m.version,
                m.description.to_string(),
                hex::encode(&*m.checksum),
            )
        })
        .collect()
}

/// Refuses a newer schema, then applies what is missing. A no-op when current.
pub(super) async fn run(pool: &SqlitePool) -> Result<()> {
    let exists: Option<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    if exists.is_some() {
        let (found,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(pool)
                .await?;
        if let Some(found) = found
            && found > SCHEMA_VERSION
        {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    Migrator::with_migrations(migrations()).run(pool).await?;
    Ok(())
}

/// PostgreSQL migrations (temporary until the baseline lands).
pub(super) async fn run_postgres(pool: &sqlx::PgPool) -> Result<()> {
    let _ = pool;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list and the folder are one source: every file is listed once, in order,
    /// with the version its name starts with and the exact bytes on disk.
    #[test]
    fn embedded_list_matches_the_folder() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(MIGRATIONS_DIR_NAME);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("migrations folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        assert_eq!(
            files.len(),
            SOURCES.len(),
            "a migration file is not embedded"
        );
        for (path, (version, description, sql, _)) in files.iter().zip(SOURCES) {
            let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
            assert_eq!(name, format!("{version:04}_{description}"));
            assert_eq!(std::fs::read_to_string(path).expect("read"), *sql);
        }
    }
}
