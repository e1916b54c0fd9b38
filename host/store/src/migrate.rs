//! Embedded schema migrations and the schema-version guard, for both engines: SQLite's
//! (`migrations/sqlite/`, one file per version from 1) and PostgreSQL's
//! (`migrations/postgres/`, a baseline at version 10, then one file per version). Both folders
//! define the same schema at every version they share; the tests here prove it for the newest.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{PgPool, SqlStr, SqlitePool};

use super::{Result, StoreError};

#[cfg(test)]
mod introspect;

/// Folder the SQLite migrations come from, relative to the repository root.
pub const MIGRATIONS_DIR_NAME: &str = "migrations/sqlite";

/// Folder the PostgreSQL migrations come from, relative to the repository root.
pub const POSTGRES_DIR_NAME: &str = "migrations/postgres";

/// An embedded migration: (version, description, SQL, manages its own transaction).
type Source = (i64, &'static str, &'static str, bool);

/// The SQLite migrations, embedded at build time. A migration that rebuilds a table turns
/// foreign keys off around its own transaction, which SQLite allows only outside one.
const SOURCES: &[Source] = &[
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
    (
        11,
        "hosts",
        include_str!("../../../migrations/sqlite/0011_hosts.sql"),
        false,
    ),
];

/// The PostgreSQL migrations, embedded at build time. PostgreSQL support starts at version 10:
/// its first file creates that version's schema whole.
const POSTGRES_SOURCES: &[Source] = &[
    (
        10,
        "baseline",
        include_str!("../../../migrations/postgres/0010_baseline.sql"),
        false,
    ),
    (
        11,
        "hosts",
        include_str!("../../../migrations/postgres/0011_hosts.sql"),
        false,
    ),
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = SOURCES[SOURCES.len() - 1].0;

// Both engines reach the same newest version: a version added to one folder is added to both.
const _: () = assert!(POSTGRES_SOURCES[POSTGRES_SOURCES.len() - 1].0 == SCHEMA_VERSION);

fn migrations() -> Vec<Migration> {
    to_migrations(SOURCES)
}

fn postgres_migrations() -> Vec<Migration> {
    to_migrations(POSTGRES_SOURCES)
}

fn to_migrations(sources: &[Source]) -> Vec<Migration> {
    sources
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

/// `(version, description, hex sha384 checksum)` of every embedded SQLite migration.
pub fn migration_checksums() -> Vec<(i64, String, String)> {
    checksums(migrations())
}

/// [`migration_checksums`] of the PostgreSQL migrations: what a host on PostgreSQL publishes.
pub fn postgres_migration_checksums() -> Vec<(i64, String, String)> {
    checksums(postgres_migrations())
}

fn checksums(migrations: Vec<Migration>) -> Vec<(i64, String, String)> {
    migrations
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

/// [`run`] for PostgreSQL: refuses a newer schema, then applies what is missing. A no-op when
/// current. sqlx's PostgreSQL migrator holds an advisory lock (keyed by the database) while it
/// applies, so two hosts opening one database at once apply each migration once.
pub(super) async fn run_postgres(pool: &PgPool) -> Result<()> {
    // `to_regclass` resolves through the search path, as the migrator's own unqualified
    // `_sqlx_migrations` does.
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if exists {
        let (found,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
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
    Migrator::with_migrations(postgres_migrations())
        .run(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgPoolOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::introspect::{self, ColumnType, Schema};
    use super::*;
    use crate::test_support;

    /// Each embedded list and its folder are one source: every file is listed once, in order,
    /// with the version its name starts with and the exact bytes on disk.
    #[test]
    fn embedded_lists_match_their_folders() {
        for (dir_name, sources) in [
            (MIGRATIONS_DIR_NAME, SOURCES),
            (POSTGRES_DIR_NAME, POSTGRES_SOURCES),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(dir_name);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .expect("migrations folder")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect();
            files.sort();
            assert_eq!(
                files.len(),
                sources.len(),
                "a migration file in {dir_name} is not embedded"
            );
            for (path, (version, description, sql, _)) in files.iter().zip(sources) {
                let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
                assert_eq!(name, format!("{version:04}_{description}"), "in {dir_name}");
                assert_eq!(std::fs::read_to_string(path).expect("read"), *sql);
            }
        }
        let postgres = postgres_migration_checksums();
        assert_eq!(postgres.len(), POSTGRES_SOURCES.len());
        assert_eq!(
            (postgres[0].0, postgres[0].1.as_str(), postgres[0].2.len()),
            (10, "baseline", 96)
        );
    }

    async fn migrated_sqlite(dir: &tempfile::TempDir) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("schema.db"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open sqlite");
        run(&pool).await.expect("sqlite migrations");
        pool
    }

    async fn postgres_pool(url: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .expect("connect to the test database")
    }

    fn assert_same(sqlite: &Schema, postgres: &Schema) {
        let diff = introspect::differences("sqlite", sqlite, "postgres", postgres);
        assert!(
            diff.is_empty(),
            "migrations/sqlite and migrations/postgres differ at version {SCHEMA_VERSION}:\n  {}",
            diff.join("\n  ")
        );
    }

    /// `migrations/sqlite` (all of it) and `migrations/postgres` (all of it) define the same
    /// schema: tables, columns in order with their types, NOT NULL and defaults, primary keys,
    /// unique column sets, foreign keys with their actions, indexes, CHECKs, and the rows the
    /// migrations themselves insert.
    #[tokio::test]
    async fn postgres_schema_matches_sqlite() {
        let Some(url) = test_support::postgres_database().await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = migrated_sqlite(&dir).await;
        let pg = postgres_pool(&url).await;
        run_postgres(&pg).await.expect("postgres migrations");

        let sqlite_schema = introspect::sqlite(&sqlite).await.expect("read sqlite");
        let postgres_schema = introspect::postgres(&pg).await.expect("read postgres");
        // The comparison sees the whole schema, not an empty or partial read of it.
        assert_eq!(sqlite_schema.len(), 29, "{:?}", sqlite_schema.keys());
        let runs = &sqlite_schema["agent_runs"];
        assert_eq!(runs.columns.len(), 22);
        assert!(!runs.foreign_keys.is_empty() && !runs.checks.is_empty());
        assert_same(&sqlite_schema, &postgres_schema);
    }

    /// The comparison fails on a dropped column, a changed CHECK literal, a changed type, a
    /// changed ON DELETE action and a renamed index, and says where.
    #[tokio::test]
    async fn the_schema_comparison_reports_differences() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = migrated_sqlite(&dir).await;
        let model = introspect::sqlite(&sqlite).await.expect("read sqlite");
        assert!(introspect::differences("a", &model, "b", &model).is_empty());

        let mut changed = model.clone();
        let tokens = changed.get_mut("tokens").expect("tokens");
        tokens.columns.retain(|c| c.name != "revoked_at");
        let role = tokens.checks.pop_first().expect("a check on tokens");
        assert!(role.expr.contains("'viewer'"), "{}", role.expr);
        tokens.checks.insert(introspect::Check {
            expr: role.expr.replace("'viewer'", "'admin'"),
            ..role
        });
        let outputs = changed.get_mut("agent_run_outputs").expect("outputs");
        let data = outputs.columns.iter_mut().find(|c| c.name == "data");
        data.expect("data").ty = ColumnType::Other("postgres integer".into());
        let console = changed.get_mut("console_sessions").expect("console");
        let key = console.foreign_keys.pop_first().expect("a foreign key");
        console.foreign_keys.insert(introspect::ForeignKey {
            on_delete: "NO ACTION".into(),
            ..key
        });
        let events = changed.get_mut("events").expect("events");
        let at = events.indexes.remove("events_at").expect("events_at");
        events.indexes.insert("events_time".into(), at);

        let diff = introspect::differences("sqlite", &model, "postgres", &changed);
        let text = diff.join("\n");
        let expect = [
            "table tokens: column 6: sqlite `revoked_at integer`, postgres `(none)`",
            "table tokens: check only in sqlite: CHECK (role in ('agent', 'operator', 'viewer'))",
            "table tokens: check only in postgres: CHECK (role in ('agent', 'operator', 'admin'))",
            "table agent_run_outputs: column 7: sqlite `data blob NOT NULL`, postgres `data postgres integer NOT NULL`",
            "table console_sessions: foreign key only in sqlite: (token_id) -> tokens (id) ON DELETE CASCADE",
            "table console_sessions: foreign key only in postgres: (token_id) -> tokens (id) ON DELETE NO ACTION",
            "table events: index only in sqlite: events_at (at)",
            "table events: index only in postgres: events_time (at)",
        ];
        for line in expect {
            assert!(
                diff.iter().any(|d| d.starts_with(line)),
                "missing `{line}` in:\n{text}"
            );
        }
        assert_eq!(diff.len(), expect.len(), "{text}");
    }

    /// Applying twice is a no-op; two hosts migrating one fresh database at once both succeed
    /// (the migrator's advisory lock); a database migrated past this binary is refused.
    #[tokio::test]
    async fn postgres_migrations_apply_once_and_refuse_a_newer_schema() {
        let Some(url) = test_support::postgres_database().await else {
            return;
        };
        let (a, b) = (postgres_pool(&url).await, postgres_pool(&url).await);
        let (ra, rb) = tokio::join!(run_postgres(&a), run_postgres(&b));
        ra.expect("first host");
        rb.expect("second host");
        run_postgres(&a).await.expect("again");
        let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&a)
            .await
            .expect("count");
        assert_eq!(applied, POSTGRES_SOURCES.len() as i64);

        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, 'from the future', TRUE, '\\x00', 0)",
        )
        .bind(SCHEMA_VERSION + 1)
        .execute(&a)
        .await
        .expect("insert");
        match run_postgres(&a).await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}
