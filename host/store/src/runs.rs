//! Agent runs: public metadata in `agent_runs`, raw output chunks in the private
//! `agent_run_outputs`.

use crate::engine::{Tx, db};
use serde_json::json;

use crate::rows::{Columns, FromColumns, vocab_column};
use happyx_core::vocab::{OutputStream, RunStatus};

use super::{NewEvent, OutputChunk, Page, Result, Run, Store, StoreError, append_event};
use happyx_core::util::{new_id, now_ms};

pub(super) fn run_from_row(r: &impl Columns) -> Result<Run> {
    Ok(Run {
        id: r.col("id")?,
        recipe: r.col("recipe")?,
        risk: vocab_column(r, "risk", "agent_runs.risk")?,
        status: vocab_column(r, "status", "agent_runs.status")?,
        exit_code: r.col("exit_code")?,
        session_id: r.col("session_id")?,
        requested_by: r.col("requested_by")?,
        approval_id: r.col("approval_id")?,
        stdout_bytes: r.col("stdout_bytes")?,
        stderr_bytes: r.col("stderr_bytes")?,
        findings: r.col("findings")?,
        unredacted_chunks: r.col("unredacted_chunks")?,
        truncated: r.col::<i64>("truncated")? != 0,
        created_at: r.col("created_at")?,
        started_at: r.col("started_at")?,
        finished_at: r.col("finished_at")?,
        updated_at: r.col("updated_at")?,
        error: r.col("error")?,
        recipe_plugin_sha256: r.col("recipe_plugin_sha256")?,
        host_id: r.col("host_id")?,
    })
}

impl FromColumns for Run {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        run_from_row(r)
    }
}

pub(super) const COLS: &str = "id, recipe, risk, status, exit_code, session_id, requested_by, approval_id, \
    stdout_bytes, stderr_bytes, findings, unredacted_chunks, truncated, created_at, started_at, \
    finished_at, updated_at, error, recipe_plugin_sha256, host_id";

/// Inserts a run row and its `run.created` event inside `conn`'s transaction.
/// `host` owns it: the host whose child runs it.
pub(super) async fn insert_run(
    conn: &mut Tx,
    run: &Run,
    idempotency_key: Option<&str>,
    action_hash: &str,
    host: Option<&str>,
) -> Result<()> {
    db!(conn, dbc => sqlx::query(
        "INSERT INTO agent_runs (id, recipe, risk, status, exit_code, session_id, requested_by, approval_id, \
         idempotency_key, action_hash, created_at, updated_at, recipe_plugin_sha256, host_id) \
         VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&run.id)
    .bind(&run.recipe)
    .bind(run.risk.as_str())
    .bind(run.status.as_str())
    .bind(&run.session_id)
    .bind(&run.requested_by)
    .bind(&run.approval_id)
    .bind(idempotency_key)
    .bind(action_hash)
    .bind(run.created_at)
    .bind(run.updated_at)
    .bind(&run.recipe_plugin_sha256)
    .bind(host)
    .execute(dbc)
    .await?.rows_affected());
    let ev = NewEvent::new(
        "run.created",
        &run.requested_by,
        &run.id,
        json!({ "recipe": run.recipe, "risk": run.risk, "approval_id": run.approval_id }),
    );
    append_event(conn, &ev).await?;
    Ok(())
}

impl Store {
    /// Creates a run that needs no approval. With an idempotency key already
    /// used by the same requester, returns `IdempotencyKeyReuse`.
    pub async fn create_run(
        &self,
        run: &Run,
        idempotency_key: Option<&str>,
        action_hash: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        match insert_run(&mut tx, run, idempotency_key, action_hash, self.host_id()).await {
            Err(e) if e.is_unique_violation() => {
                return Err(StoreError::IdempotencyKeyReuse);
            }
            other => other?,
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn run(&self, id: &str) -> Result<Option<Run>> {
        self.lookup(&format!("SELECT {COLS} FROM agent_runs WHERE id = $1"), id)
            .await
    }

    /// The run a requester created under an idempotency key, with its action hash.
    pub async fn run_by_idempotency_key(
        &self,
        requester: &str,
        key: &str,
    ) -> Result<Option<(Run, String)>> {
        let row = db!(rows write self, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS}, action_hash FROM agent_runs WHERE requested_by = $1 AND idempotency_key = $2"
        )))
        .bind(requester)
        .bind(key)
        .fetch_optional(dbc)
        .await?);
        match row {
            Some(r) => Ok(Some((run_from_row(&r)?, r.col("action_hash")?))),
            None => Ok(None),
        }
    }

    pub async fn runs(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<Run>> {
        let rows = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM agent_runs WHERE ($1 IS NULL OR id > $2) AND ($3 IS NULL OR requested_by = $4) \
             ORDER BY id LIMIT $5"
        )))
        .bind(after)
        .bind(after)
        .bind(owner)
        .bind(owner)
        .bind(limit + 1)
        .fetch_all(dbc)
        .await?);
        let mut items = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        let next = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// `queued` → `running`.
    pub async fn mark_run_started(&self, id: &str, pid: Option<u32>) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        db!(tx, dbc => sqlx::query("UPDATE agent_runs SET status = 'running', started_at = $1, updated_at = $2 WHERE id = $3 AND status = 'queued'")
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(dbc)
            .await?.rows_affected());
        let ev = NewEvent::new("run.started", "host", id, json!({ "pid": pid }));
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends one output chunk and moves the run's public counters with it.
    pub async fn append_run_output(
        &self,
        run_id: &str,
        c: &OutputChunk,
        truncated: bool,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query(
            "INSERT INTO agent_run_outputs (id, run_id, stream, chunk_index, byte_offset, length, data, redacted, \
             findings, policy_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(new_id())
        .bind(run_id)
        .bind(c.stream.as_str())
        .bind(c.chunk_index)
        .bind(c.byte_offset)
        .bind(c.data.len() as i64)
        .bind(&c.data)
        .bind(&c.redacted)
        .bind(c.findings)
        .bind(&c.policy_hash)
        .bind(now_ms())
        .execute(dbc)
        .await?.rows_affected());
        let (out, err) = if c.stream == OutputStream::Stdout {
            (c.data.len() as i64, 0)
        } else {
            (0, c.data.len() as i64)
        };
        db!(tx, dbc => sqlx::query(
            "UPDATE agent_runs SET stdout_bytes = stdout_bytes + $1, stderr_bytes = stderr_bytes + $2, \
             findings = findings + $3, unredacted_chunks = unredacted_chunks + $4, \
             truncated = CASE WHEN truncated > $5 THEN truncated ELSE $5 END, updated_at = $6 \
             WHERE id = $7",
        )
        .bind(out)
        .bind(err)
        .bind(c.findings)
        .bind(i64::from(c.redacted.is_none()))
        .bind(i64::from(truncated))
        .bind(now_ms())
        .bind(run_id)
        .execute(dbc)
        .await?.rows_affected());
        tx.commit().await?;
        Ok(())
    }

    /// Marks output truncated without a chunk (the cap was reached exactly).
    pub async fn mark_run_truncated(&self, run_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query("UPDATE agent_runs SET truncated = 1, updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(run_id)
            .execute(dbc)
            .await?.rows_affected());
        tx.commit().await?;
        Ok(())
    }

    /// `running`/`queued` → a final status, with its event.
    pub async fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        exit_code: Option<i64>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        db!(tx, dbc => sqlx::query(
            "UPDATE agent_runs SET status = $1, exit_code = $2, finished_at = $3, updated_at = $4 \
             WHERE id = $5 AND status IN ('queued', 'running')",
        )
        .bind(status.as_str())
        .bind(exit_code)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "run.finished",
            "host",
            id,
            json!({ "status": status, "exit_code": exit_code }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `queued` → `spawn_failed`: the program could not be started (`error` says why, in the
    /// words of the operating system). Recorded in the run, its event and the API, so the
    /// requester sees the reason without the server log.
    pub async fn fail_run_spawn(&self, id: &str, error: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        db!(tx, dbc => sqlx::query(
            "UPDATE agent_runs SET status = 'spawn_failed', error = $1, started_at = $2, finished_at = $3, \
             updated_at = $4 WHERE id = $5 AND status IN ('queued', 'running')",
        )
        .bind(error)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "run.finished",
            "host",
            id,
            json!({ "status": RunStatus::SpawnFailed, "exit_code": null, "error": error }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The uid (and gid) the children of `actor` run as: allocated once, in one transaction
    /// with its event, as the next unused value of `lo..=hi`, and never reused.
    pub async fn child_uid(&self, actor: &str, lo: u32, hi: u32) -> Result<u32> {
        if let Some((uid,)) = db!(read self, dbc => sqlx::query_as::<_, (i64,)>("SELECT uid FROM child_identities WHERE actor = $1")
                .bind(actor)
                .fetch_optional(dbc)
                .await?)
        {
            return u32::try_from(uid).map_err(|_| StoreError::Corrupt("child_identities.uid"));
        }
        let mut tx = self.begin().await?;
        // Another writer may have allocated it between the read and this transaction.
        if let Some((uid,)) = db!(tx, dbc => sqlx::query_as::<_, (i64,)>("SELECT uid FROM child_identities WHERE actor = $1")
                .bind(actor)
                .fetch_optional(dbc)
                .await?)
        {
            return u32::try_from(uid).map_err(|_| StoreError::Corrupt("child_identities.uid"));
        }
        let (next,): (Option<i64>,) = db!(tx, dbc => sqlx::query_as("SELECT MAX(uid) + 1 FROM child_identities WHERE uid BETWEEN $1 AND $2")
                .bind(i64::from(lo))
                .bind(i64::from(hi))
                .fetch_one(dbc)
                .await?);
        let uid = next.unwrap_or(i64::from(lo));
        if uid > i64::from(hi) {
            return Err(StoreError::UidRangeExhausted);
        }
        db!(tx, dbc => sqlx::query("INSERT INTO child_identities (actor, uid, created_at) VALUES ($1, $2, $3)")
            .bind(actor)
            .bind(uid)
            .bind(now_ms())
            .execute(dbc)
            .await?.rows_affected());
        let ev = NewEvent::new(
            "identity.uid_allocated",
            "host",
            actor,
            json!({ "uid": uid }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        u32::try_from(uid).map_err(|_| StoreError::Corrupt("child_identities.uid"))
    }

    /// At start: runs this host (see [`Store::for_host`]; without one, any host) left queued
    /// or running are `lost`.
    pub async fn mark_unfinished_runs_lost(&self) -> Result<u64> {
        self.mark_unfinished_runs_lost_of(self.host_id(), "restart")
            .await
    }

    /// A run's output chunks in order (private).
    pub async fn run_output(&self, run_id: &str) -> Result<Vec<OutputChunk>> {
        let rows = db!(rows read self, dbc => sqlx::query(
            "SELECT stream, chunk_index, byte_offset, data, redacted, findings, policy_hash \
             FROM agent_run_outputs WHERE run_id = $1 ORDER BY chunk_index",
        )
        .bind(run_id)
        .fetch_all(dbc)
        .await?);
        rows.iter()
            .map(|r| {
                Ok(OutputChunk {
                    stream: vocab_column(r, "stream", "agent_run_outputs.stream")?,
                    chunk_index: r.col("chunk_index")?,
                    byte_offset: r.col("byte_offset")?,
                    data: r.col("data")?,
                    redacted: r.col("redacted")?,
                    findings: r.col("findings")?,
                    policy_hash: r.col("policy_hash")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// Replaces the masked copy of one stored chunk (a secret that began in it
    /// was completed by the next chunk).
    pub async fn update_run_output_redaction(
        &self,
        run_id: &str,
        chunk_index: i64,
        redacted: &[u8],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query(
            "UPDATE agent_run_outputs SET redacted = $1 WHERE run_id = $2 AND chunk_index = $3",
        )
        .bind(redacted)
        .bind(run_id)
        .bind(chunk_index)
        .execute(dbc)
        .await?.rows_affected());
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use happyx_core::vocab::Risk;

    /// Writes `value` into `column` of the row `id` of `table`, past the table's CHECK
    /// constraint, as a damaged or foreign database could hold it.
    async fn damage_in(s: &Store, table: &str, column: &str, value: &str, id: &str) {
        let mut c = s
            .raw_write_pool()
            .expect("a SQLite store")
            .acquire()
            .await
            .expect("conn");
        sqlx::query("PRAGMA ignore_check_constraints = ON")
            .execute(&mut *c)
            .await
            .expect("pragma");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET {column} = $1 WHERE id = $2"
        )))
        .bind(value)
        .bind(id)
        .execute(&mut *c)
        .await
        .expect("update");
        sqlx::query("PRAGMA ignore_check_constraints = OFF")
            .execute(&mut *c)
            .await
            .expect("pragma");
    }

    async fn damage(s: &Store, column: &str, value: &str, id: &str) {
        damage_in(s, "agent_runs", column, value, id).await;
    }

    #[tokio::test]
    async fn an_unknown_stored_run_status_or_risk_is_a_corrupt_row() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Store::open(tmp.path(), &StorageConfig::default())
            .await
            .expect("open");
        let run = Run::queued(
            "r1".into(),
            "echo".into(),
            Risk::Medium,
            None,
            "token:a".into(),
            now_ms(),
        );
        s.create_run(&run, None, "hash").await.expect("create");
        let back = s.run("r1").await.expect("read").expect("row");
        assert_eq!((back.status, back.risk), (RunStatus::Queued, Risk::Medium));

        damage(&s, "status", "paused", "r1").await;
        // Both read paths (direct and pooled) decode with the same function.
        for s in [&s, &s.pooled_reads_only()] {
            let e = s.run("r1").await.expect_err("an unknown status is refused");
            assert!(
                matches!(e, StoreError::Corrupt("agent_runs.status")),
                "{e:?}"
            );
            assert_eq!(e.code(), "storage_corrupt");
        }
        assert!(
            s.runs(None, None, 10).await.is_err(),
            "listings refuse it too"
        );

        damage(&s, "status", "running", "r1").await;
        damage(&s, "risk", "HIGH", "r1").await;
        for s in [&s, &s.pooled_reads_only()] {
            let e = s.run("r1").await.expect_err("an unknown risk is refused");
            assert!(matches!(e, StoreError::Corrupt("agent_runs.risk")), "{e:?}");
        }
    }

    #[tokio::test]
    async fn unknown_stored_task_session_and_permission_values_are_corrupt_rows() {
        use crate::{Permission, Session, Task};
        use happyx_core::vocab::{PermissionStatus, SessionKind, SessionStatus, TaskStatus};
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Store::open(tmp.path(), &StorageConfig::default())
            .await
            .expect("open");
        s.create_task(&Task {
            id: "t1".into(),
            title: "t".into(),
            description: String::new(),
            status: TaskStatus::Open,
            created_by: "token:a".into(),
            created_at: 1,
            updated_at: 1,
        })
        .await
        .expect("task");
        s.create_session(&Session {
            id: "s1".into(),
            name: "s".into(),
            kind: SessionKind::Terminal,
            status: SessionStatus::Open,
            task_id: None,
            epoch: 0,
            rotation_required_since: None,
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
            expires_at: None,
            created_at: 1,
            updated_at: 1,
        })
        .await
        .expect("permission");
        let t = s.task("t1").await.expect("read").expect("row");
        assert_eq!(t.status, TaskStatus::Open);

        damage_in(&s, "tasks", "status", "archived", "t1").await;
        let e = s
            .pooled_reads_only()
            .task("t1")
            .await
            .expect_err("unknown task status, pooled");
        assert!(matches!(e, StoreError::Corrupt("tasks.status")), "{e:?}");
        let e = s.task("t1").await.expect_err("unknown task status");
        assert!(matches!(e, StoreError::Corrupt("tasks.status")), "{e:?}");
        damage_in(&s, "sessions", "kind", "pty", "s1").await;
        let e = s.session("s1").await.expect_err("unknown session kind");
        assert!(matches!(e, StoreError::Corrupt("sessions.kind")), "{e:?}");
        damage_in(&s, "permissions", "status", "expired", "p1").await;
        let e = s
            .permission("p1")
            .await
            .expect_err("unknown permission status");
        assert!(
            matches!(e, StoreError::Corrupt("permissions.status")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn an_unknown_stored_role_is_a_corrupt_token_row() {
        use crate::TokenRow;
        use happyx_core::vocab::Role;
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Store::open(tmp.path(), &StorageConfig::default())
            .await
            .expect("open");
        let row = TokenRow {
            id: "tok1".into(),
            name: None,
            role: Role::Viewer,
            secret_hash: "h".into(),
            created_at: 1,
            revoked_at: None,
        };
        s.create_token(&row, "test").await.expect("token");
        let back = s.token("tok1").await.expect("read").expect("row");
        assert_eq!(back.role, Role::Viewer);
        damage_in(&s, "tokens", "role", "admin", "tok1").await;
        for e in [
            s.token("tok1").await.expect_err("unknown role"),
            s.pooled_reads_only()
                .token("tok1")
                .await
                .expect_err("unknown role, pooled"),
            s.token_for_auth("tok1").await.expect_err("unknown role"),
        ] {
            assert!(matches!(e, StoreError::Corrupt("tokens.role")), "{e:?}");
        }
    }
}
