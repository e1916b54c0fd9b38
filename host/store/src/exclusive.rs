//! Work only one host may do at a time, such as the retention pass.
//!
//! On SQLite the data dir has one serving host (its serve lock), so the guard is always
//! granted. On PostgreSQL several hosts share the database: the guard is a session-level
//! advisory lock (`pg_try_advisory_lock`) held on a connection of its own, taken without
//! waiting. The lock lives as long as that connection: dropping the guard closes it, and a host
//! that dies (even by kill -9) loses its connection, so the server releases the lock and
//! another host takes the work over at its next attempt.

use sqlx::{Connection, PgConnection};

use crate::{Engine, Result, Store};

/// A piece of work that runs on one host at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusive {
    /// The retention pass (`happyx prune` and the server's pruner).
    Retention,
    /// Serving as one host (see `hosts`): held by the serving process for its whole life.
    /// The key is derived from the host's id ([`Exclusive::host`]).
    Host(i64),
}

impl Exclusive {
    /// Serving as host `id`.
    pub fn host(id: &str) -> Exclusive {
        Exclusive::Host(Self::host_key(id))
    }

    /// The advisory lock key of host `id`: the first 8 bytes of a SHA-256 of its id.
    pub(crate) fn host_key(id: &str) -> i64 {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("happyx-host\n{id}").as_bytes());
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(key)
    }

    /// The advisory lock key: the ASCII of `HAPPYX:` and a letter per kind of work, or a
    /// host's derived key.
    fn key(self) -> i64 {
        match self {
            Exclusive::Retention => 0x4841_5050_5958_3a52,
            Exclusive::Host(key) => key,
        }
    }
}

/// Held while the work runs; see the module docs.
#[derive(Debug)]
pub struct ExclusiveGuard {
    /// The connection holding the PostgreSQL lock; `None` on SQLite.
    conn: Option<PgConnection>,
}

impl ExclusiveGuard {
    /// Ends the work: unlocks and closes the connection (dropping the guard does the same,
    /// less politely).
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Unlocked before the connection closes: the server ends a closed session a moment
            // later, and others would see the lock held until then.
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

impl Store {
    /// The guard for `what` when no other host holds it, else `None`. Never waits.
    pub async fn try_exclusive(&self, what: Exclusive) -> Result<Option<ExclusiveGuard>> {
        self.try_exclusive_as(what, None).await
    }

    /// [`Store::try_exclusive`] on a connection named `application_name` (as
    /// `pg_stat_activity` shows it), so that others can tell this holder from someone holding
    /// the same lock for a moment (see `hosts`).
    pub(crate) async fn try_exclusive_as(
        &self,
        what: Exclusive,
        application_name: Option<&str>,
    ) -> Result<Option<ExclusiveGuard>> {
        match &self.engine {
            Engine::Sqlite { .. } => Ok(Some(ExclusiveGuard { conn: None })),
            Engine::Postgres { pool } => {
                // A connection of its own, out of the pool: returned to the pool it would keep
                // the lock for whoever used it next.
                let mut conn = pool.acquire().await?.detach();
                if let Some(name) = application_name {
                    sqlx::query("SELECT set_config('application_name', $1, false)")
                        .bind(name)
                        .execute(&mut conn)
                        .await?;
                }
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(what.key())
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    Ok(Some(ExclusiveGuard { conn: Some(conn) }))
                } else {
                    let _ = conn.close().await;
                    Ok(None)
                }
            }
        }
    }

    /// Whether other hosts may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres { .. })
    }

    /// The PostgreSQL pool, for what needs a connection of its own such as `LISTEN`
    /// (`None` on SQLite).
    pub fn postgres_pool(&self) -> Option<sqlx::PgPool> {
        match &self.engine {
            Engine::Postgres { pool } => Some(pool.clone()),
            Engine::Sqlite { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn on_sqlite_the_one_host_always_gets_it() {
        let (_dir, s) = crate::testing::sqlite().await;
        assert!(!s.is_shared());
        let first = s.try_exclusive(Exclusive::Retention).await.expect("try");
        let second = s.try_exclusive(Exclusive::Retention).await.expect("try");
        assert!(first.is_some() && second.is_some());
    }

    /// Two hosts' stores on one database: while one holds the work, the other is refused at
    /// once; released (or its connection gone, as when its host dies), the other gets it.
    #[tokio::test]
    async fn on_postgres_one_host_at_a_time_and_the_other_takes_over() {
        let Some(cfg) = crate::test_support::postgres_storage().await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Store::open(dir.path(), &cfg).await.expect("open a");
        let b = Store::open(dir.path(), &cfg).await.expect("open b");
        assert!(a.is_shared());
        let held = a.try_exclusive(Exclusive::Retention).await.expect("try");
        assert!(held.is_some());
        assert!(
            b.try_exclusive(Exclusive::Retention)
                .await
                .expect("try")
                .is_none()
        );
        // Still refused while held, also to the holder's own store on another connection.
        assert!(
            a.try_exclusive(Exclusive::Retention)
                .await
                .expect("try")
                .is_none()
        );
        held.expect("held").release().await;
        let taken = b.try_exclusive(Exclusive::Retention).await.expect("try");
        assert!(taken.is_some(), "released, the other host gets it");
        // Dropped without release (the host died): the server ends the session and the lock.
        drop(taken);
        let mut again = None;
        for _ in 0..100 {
            again = a.try_exclusive(Exclusive::Retention).await.expect("try");
            if again.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(again.is_some(), "a dropped holder's lock is released");
    }
}
