//! Embedded schema migrations (`migrations/sqlite/`) and the schema-version guard.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::SqlitePool;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{Result, StoreError};

/// Folder the migrations come from, relative to the repository root.
pub const MIGRATIONS_DIR_NAME: &str = "migrations/sqlite";

/// (version, description, SQL) — embedded at build time.
const SOURCES: &[(i64, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../../../migrations/sqlite/0001_foundation.sql"),
    ),
    (
        2,
        "devices",
        include_str!("../../../migrations/sqlite/0002_devices.sql"),
    ),
    (
        3,
        "pty",
        include_str!("../../../migrations/sqlite/0003_pty.sql"),
    ),
    (
        4,
        "console",
        include_str!("../../../migrations/sqlite/0004_console.sql"),
    ),
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = SOURCES[SOURCES.len() - 1].0;

fn migrations() -> Vec<Migration> {
    SOURCES
        .iter()
        .map(|(v, d, sql)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                SqlStr::from_static(sql),
                false,
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
