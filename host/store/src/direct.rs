//! Direct point reads: a lookup by key, run on the calling thread.
//!
//! sqlx drives each SQLite connection from a worker thread of its own: a query is a message to
//! that thread and its rows a message back, two thread hand-offs (futex wake-ups and sleeps)
//! per statement. For a lookup by primary key the hand-offs cost more CPU than SQLite's own
//! work; on an authenticated `GET /v1/tasks/{id}` they were about a quarter of what the host
//! spent on the request. The short lookups on the request path (a record by id, a token row
//! the token cache does not hold) therefore run here: on a few plain SQLite connections
//! (rusqlite, linked against the same SQLite library as sqlx), opened read-only and used
//! synchronously by the task that asks. Listings, scans and every write stay on sqlx's pools.
//!
//! **Never waits.** `busy_timeout` is 0 and the pool is fixed ([`CONNECTIONS`]): a read that
//! finds no free connection, a database it may not read this instant (a checkpoint resetting
//! the WAL, another process holding an exclusive lock) or any other SQLite failure reports
//! `None`, and the caller takes the pooled path, which waits, retries and reports errors as it
//! always did. Only a read that ran (a row decoded, or no row) is final. The work done on the
//! calling thread is therefore one B-tree descent in pages SQLite or the kernel already caches,
//! microseconds, like the JSON parsing around it.
//!
//! **Same answers.** The connections are opened read-only on the same file, in WAL mode, as
//! the read pool's are: each statement reads the last committed state when it starts, so a
//! record committed before the lookup is found by either path. Rows are decoded by the same
//! functions for both paths ([`crate::rows::Columns`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};

use crate::{Result, StoreError};

/// Connections opened at most (idle ones are kept for reuse).
pub(crate) const CONNECTIONS: usize = 8;

/// The direct-read connections of one database file.
pub(crate) struct Direct {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Connections open now, idle or in use.
    open: AtomicUsize,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

impl Direct {
    pub(crate) fn new(path: &Path) -> Direct {
        Direct {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
        }
    }

    /// Runs `sql` (one `?` parameter, bound to `key`) and decodes its first row.
    /// `Some(Ok(None))`: no row; `Some(Ok(Some(_)))`: the decoded row; `Some(Err(_))`: the row is
    /// corrupt ([`StoreError::Corrupt`]); `None`: the read could not run without waiting, or
    /// SQLite failed, and the caller should take the pooled path.
    pub(crate) fn one<T>(
        &self,
        sql: &str,
        key: &str,
        decode: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Option<Result<Option<T>>> {
        let conn = self.take()?;
        let answer = read_one(&conn, sql, key, decode);
        match answer {
            Some(_) => self.give_back(conn),
            // A connection that failed is not reused.
            None => self.discard(conn),
        }
        answer
    }

    /// An idle connection, or a new one while fewer than [`CONNECTIONS`] are open.
    fn take(&self) -> Option<Connection> {
        if let Some(conn) = self.idle.lock().ok()?.pop() {
            return Some(conn);
        }
        // Reserve a slot before opening, so concurrent callers cannot open more than the cap.
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < CONNECTIONS).then_some(n + 1)
            })
            .ok()?;
        match open(&self.path) {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::debug!(error = %e, "direct read connection could not be opened");
                self.open.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        match self.idle.lock() {
            Ok(mut idle) => idle.push(conn),
            Err(_) => self.discard(conn),
        }
    }

    fn discard(&self, conn: Connection) {
        drop(conn);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections open now (idle or in use), for tests.
    #[cfg(test)]
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::ZERO)?;
    Ok(conn)
}

fn read_one<T>(
    conn: &Connection,
    sql: &str,
    key: &str,
    decode: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Option<Result<Option<T>>> {
    let mut stmt = conn.prepare_cached(sql).ok()?;
    let mut rows = stmt.query([key]).ok()?;
    match rows.next() {
        Ok(None) => Some(Ok(None)),
        Ok(Some(row)) => match decode(row) {
            Ok(v) => Some(Ok(Some(v))),
            // A column SQLite could not hand over as the type asked for: let the pooled
            // path read it and report it as it always did.
            Err(StoreError::Direct(_)) => None,
            Err(e) => Some(Err(e)),
        },
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).expect("create");
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER NOT NULL);
             INSERT INTO t VALUES ('a', 1);",
        )
        .expect("schema");
        (dir, path)
    }

    fn v(r: &Row<'_>) -> Result<i64> {
        Ok(r.get("v")?)
    }

    #[test]
    fn reads_a_row_or_its_absence_and_reuses_connections() {
        let (_dir, path) = db();
        let d = Direct::new(&path);
        let sql = "SELECT v FROM t WHERE id = $1";
        assert_eq!(d.one(sql, "a", v).expect("ran").expect("row"), Some(1));
        assert_eq!(d.one(sql, "b", v).expect("ran").expect("no row"), None);
        assert_eq!(d.open_connections(), 1, "one connection, reused");
    }

    #[test]
    fn a_failing_read_falls_back_and_frees_its_connection() {
        let (_dir, path) = db();
        let d = Direct::new(&path);
        assert!(d.one("SELECT nope FROM t WHERE id = $1", "a", v).is_none());
        // A column the type cannot take is left to the pooled path too.
        let text = |r: &Row<'_>| -> Result<Vec<i64>> { Ok(vec![r.get::<_, i64>("id")?]) };
        assert!(d.one("SELECT id FROM t WHERE id = $1", "a", text).is_none());
        assert_eq!(d.open_connections(), 0, "failed connections are closed");
        // A decoder's own verdict (a corrupt value) is final.
        let corrupt = |_: &Row<'_>| -> Result<i64> { Err(StoreError::Corrupt("t.v")) };
        assert!(matches!(
            d.one("SELECT v FROM t WHERE id = $1", "a", corrupt),
            Some(Err(StoreError::Corrupt("t.v")))
        ));
    }

    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("absent.db");
        let d = Direct::new(&path);
        assert!(d.one("SELECT 1 WHERE $1 = ''", "", |_| Ok(())).is_none());
        assert!(!path.exists(), "a read-only open must not create the file");
    }

    #[test]
    fn a_database_locked_exclusively_is_left_to_the_pooled_path_at_once() {
        let (_dir, path) = db();
        let holder = Connection::open(&path).expect("open");
        holder
            .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; UPDATE t SET v = 2;")
            .expect("lock");
        let d = Direct::new(&path);
        let t0 = std::time::Instant::now();
        assert!(d.one("SELECT v FROM t WHERE id = $1", "a", v).is_none());
        assert!(t0.elapsed() < Duration::from_secs(1), "it waited");
    }

    /// Many threads at once never open more than the cap, and every read that ran is right.
    #[test]
    fn concurrent_readers_stay_within_the_cap() {
        let (_dir, path) = db();
        let d = std::sync::Arc::new(Direct::new(&path));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    let mut ran = 0;
                    for _ in 0..500 {
                        if let Some(r) = d.one("SELECT v FROM t WHERE id = $1", "a", v) {
                            assert_eq!(r.expect("read"), Some(1));
                            ran += 1;
                        }
                        assert!(d.open_connections() <= CONNECTIONS);
                    }
                    ran
                })
            })
            .collect();
        let ran: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert!(ran > 0);
        assert!(d.open_connections() <= CONNECTIONS);
    }
}

/// The store's lookups through both paths, on a real store.
#[cfg(test)]
mod store_tests {
    use happyx_core::util::{new_id, now_ms};
    use happyx_core::vocab::{
        ActionKind, PermissionStatus, Risk, Role, SessionKind, SessionStatus, TaskStatus,
    };
    use serde_json::json;

    use crate::config::StorageConfig;
    use crate::{NewApproval, Permission, Run, Session, Store, Task, TokenRow};

    async fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Store::open(tmp.path(), &StorageConfig::default())
            .await
            .expect("open");
        (tmp, s)
    }

    fn task(id: &str) -> Task {
        Task {
            id: id.into(),
            title: format!("task {id}"),
            description: "d".into(),
            status: TaskStatus::Open,
            created_by: "token:a".into(),
            created_at: 1,
            updated_at: 2,
        }
    }

    /// Every lookup answers the same through the direct path and the read pool: the record,
    /// and `None` for an id that does not exist.
    #[tokio::test]
    async fn direct_and_pooled_lookups_give_the_same_records() {
        let (_tmp, s) = store().await;
        let pooled = s.pooled_reads_only();
        s.create_task(&task("t1")).await.expect("task");
        s.create_session(&Session {
            id: "s1".into(),
            name: "s".into(),
            kind: SessionKind::Encrypted,
            status: SessionStatus::Open,
            task_id: Some("t1".into()),
            epoch: 3,
            rotation_required_since: Some(7),
            created_by: "token:a".into(),
            created_at: 1,
            updated_at: 1,
        })
        .await
        .expect("session");
        s.create_permission(&Permission {
            id: "p1".into(),
            subject: "tok".into(),
            action: "pty.drive".into(),
            scope: "*".into(),
            status: PermissionStatus::Active,
            granted_by: "token:o".into(),
            expires_at: Some(99),
            created_at: 1,
            updated_at: 1,
        })
        .await
        .expect("permission");
        let run = Run::queued(
            "r1".into(),
            "echo".into(),
            Risk::High,
            Some("s1".into()),
            "token:a".into(),
            now_ms(),
        );
        s.create_run(&run, Some("idem"), "hash").await.expect("run");
        s.create_token(
            &TokenRow {
                id: "tok1".into(),
                name: Some("n".into()),
                role: Role::Agent,
                secret_hash: "h".into(),
                created_at: 1,
                revoked_at: None,
            },
            "test",
        )
        .await
        .expect("token");
        let approval = new_id();
        s.create_approval(&NewApproval {
            id: approval.clone(),
            kind: ActionKind::Run,
            action_hash: "ah".into(),
            action: json!({"recipe": "echo", "argv": ["a", "b"]}),
            token_hash: "th".into(),
            requester: "token:a".into(),
            expires_at: now_ms() + 60_000,
            max_pending: 10,
        })
        .await
        .expect("approval");
        crate::testing::new_pty(&s, "pty1", Some("ab")).await;

        macro_rules! same {
            ($method:ident, $id:expr) => {{
                let by_direct = s.$method($id).await.expect("direct");
                let by_pool = pooled.$method($id).await.expect("pooled");
                assert!(
                    by_direct.is_some(),
                    "{} {} not found",
                    stringify!($method),
                    $id
                );
                assert_eq!(by_direct, by_pool, "{}", stringify!($method));
                assert_eq!(s.$method("missing").await.expect("direct"), None);
                assert_eq!(pooled.$method("missing").await.expect("pooled"), None);
            }};
        }
        same!(task, "t1");
        same!(session, "s1");
        same!(permission, "p1");
        same!(run, "r1");
        same!(token, "tok1");
        same!(approval, approval.as_str());
        same!(pty, "pty1");
        assert_eq!(s.run("r1").await.expect("run").expect("row"), run);
    }

    /// 64 tasks at once, each creating records and reading every one back at once: a record
    /// committed before a lookup starts is always found, whether the lookup ran directly or
    /// fell back to the pool (more readers than direct connections make both happen).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_committed_record_is_found_by_every_concurrent_lookup() {
        let (_tmp, s) = store().await;
        let workers: Vec<_> = (0..64)
            .map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in 0..20 {
                        let id = format!("w{w}-{i}");
                        s.create_task(&task(&id)).await.expect("create");
                        for _ in 0..5 {
                            let got = s.task(&id).await.expect("read").expect("found");
                            assert_eq!(got.title, format!("task {id}"));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("worker");
        }
        let direct = s.direct.as_ref().expect("direct reads on");
        assert!(direct.open_connections() <= super::CONNECTIONS);
        assert!(direct.open_connections() > 0, "no lookup ran directly");
    }
}
