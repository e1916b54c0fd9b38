//! Test support for the PostgreSQL engine, for this crate's tests and other crates' (compiled in
//! every build, hidden from the docs, so the store has one feature set): a fresh, empty
//! database per test on the cluster that
//! `TEST_POSTGRES_URL` names, so tests never see each other's rows and can run in
//! parallel. `scripts/pg-cluster.sh start DIR` starts a throw-away cluster and prints the URL to
//! put there; `.ci/run` does so for every CI run.
//!
//! Without that variable the PostgreSQL tests skip, loudly, except under CI (`CI` set), where a
//! missing cluster is a failure: CI always has one.

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// The environment variable holding the admin URL of the test cluster: a role that may create
/// databases (`postgres://happyx:PASSWORD@127.0.0.1:PORT/postgres` from `scripts/pg-cluster.sh`).
pub const POSTGRES_URL_VAR: &str = "TEST_POSTGRES_URL";

/// Whether `TEST_POSTGRES_URL` is set (to something).
pub fn postgres_url_configured() -> bool {
    std::env::var_os(POSTGRES_URL_VAR).is_some_and(|v| !v.is_empty())
}

/// Creates a database `happyx_test_<16 random hex digits>` on the test cluster and returns its
/// URL: the admin URL with the database path replaced. `None` when `TEST_POSTGRES_URL` is
/// unset, after printing a `SKIPPED:` line on stderr; the caller returns at once. The databases
/// are left in place: the cluster is thrown away whole (`scripts/pg-cluster.sh stop DIR`).
///
/// # Panics
///
/// When `TEST_POSTGRES_URL` is unset and `CI` is set, and when the cluster cannot be
/// reached or refuses the database: a test with a configured cluster fails rather than skips.
pub async fn postgres_database() -> Option<String> {
    let admin = match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let msg = format!(
                "SKIPPED: the PostgreSQL tests need {POSTGRES_URL_VAR}, the admin URL of a cluster; \
                 `scripts/pg-cluster.sh start DIR` starts a throw-away one and prints it \
                 (`scripts/pg-cluster.sh stop DIR` removes it); .ci/run does both"
            );
            eprintln!("\n\n!!!!!!!! {msg} !!!!!!!!\n");
            assert!(
                std::env::var_os("CI").is_none(),
                "{msg}; under CI this is a failure"
            );
            return None;
        }
    };
    match create_database(&admin, "happyx_test").await {
        Ok(url) => Some(url),
        // The error names the database, never the URL (it holds a password).
        Err(e) => panic!("on the cluster in {POSTGRES_URL_VAR}: {e}"),
    }
}

/// Creates a database `<prefix>_<16 random hex digits>` through the admin URL `admin` (a role
/// that may create databases) and returns its URL: `admin` with the database path replaced.
/// Errors name the database, never the URL. Used by the tests and by `happyx-load bench
/// --part cluster`, which drops it again with [`drop_database`].
pub async fn create_database(admin: &str, prefix: &str) -> Result<String, String> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| format!("no randomness for a database name: {e}"))?;
    let name = format!("{prefix}_{}", hex::encode(suffix));
    let mut conn = PgConnection::connect(admin)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .map_err(|e| format!("cannot create database {name}: {e}"))?;
    // Closing politely only saves the server a broken-connection log line.
    let _ = conn.close().await;
    Ok(with_database(admin, &name))
}

/// Drops the database that `url` (from [`create_database`]) names, through `admin`, ending its
/// remaining connections.
pub async fn drop_database(admin: &str, url: &str) -> Result<(), String> {
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .ok_or_else(|| "the URL names no database this module made".to_string())?;
    let mut conn = PgConnection::connect(admin)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    conn.execute(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await
    .map_err(|e| format!("cannot drop database {name}: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// A storage configuration on a fresh database from [`postgres_database`] (otherwise the
/// defaults), or `None` (skipped) without a cluster.
pub async fn postgres_storage() -> Option<crate::config::StorageConfig> {
    let url = postgres_database().await?;
    let url = match crate::config::DatabaseUrl::parse(&url) {
        Ok(url) => url,
        Err(e) => panic!("the cluster in {POSTGRES_URL_VAR} gives no usable URL: {e}"),
    };
    Some(crate::config::StorageConfig {
        url: Some(url),
        ..crate::config::StorageConfig::default()
    })
}

/// `url` with its path (the database) replaced by `/name`; user, password, host, port and query
/// kept.
fn with_database(url: &str, name: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority + i);
    let rest = url[path..].find(['?', '#']).map_or(url.len(), |i| path + i);
    format!("{}/{name}{}", &url[..path], &url[rest..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_replaces_the_path_only() {
        let db = "happyx_test_0123456789abcdef";
        for (admin, fresh) in [
            (
                "postgres://happyx:pw@127.0.0.1:5432/postgres",
                "postgres://happyx:pw@127.0.0.1:5432/happyx_test_0123456789abcdef",
            ),
            (
                "postgres://u:p@h:1/postgres?sslmode=disable",
                "postgres://u:p@h:1/happyx_test_0123456789abcdef?sslmode=disable",
            ),
            (
                "postgres://u@h",
                "postgres://u@h/happyx_test_0123456789abcdef",
            ),
            (
                "postgresql://u@h?application_name=x",
                "postgresql://u@h/happyx_test_0123456789abcdef?application_name=x",
            ),
            (
                "postgres:///postgres?host=/tmp/pg",
                "postgres:///happyx_test_0123456789abcdef?host=/tmp/pg",
            ),
        ] {
            assert_eq!(with_database(admin, db), fresh, "{admin}");
        }
    }

    /// A database from the helper is fresh and reachable with the URL it returns.
    #[tokio::test]
    async fn a_fresh_database_per_call() {
        let Some(first) = postgres_database().await else {
            return;
        };
        assert!(postgres_url_configured());
        let second = postgres_database().await.expect("configured");
        assert_ne!(first, second);
        let mut conn = PgConnection::connect(&first).await.expect("connect");
        let (db, tables): (String, i64) = sqlx::query_as(
            "SELECT current_database()::text, \
             (SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public')",
        )
        .fetch_one(&mut conn)
        .await
        .expect("query");
        assert!(first.ends_with(&format!("/{db}")), "{first}");
        assert!(db.starts_with("happyx_test_") && db.len() == "happyx_test_".len() + 16);
        assert_eq!(tables, 0);
    }
}
