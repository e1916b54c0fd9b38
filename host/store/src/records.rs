//! Tasks, sessions and permissions: create, get, list with paging, status updates.

use crate::engine::db;
use serde_json::json;

use super::{
    NewEvent, Page, Permission, PtySession, Result, Session, Store, StoreError, Task, append_event,
};
use crate::rows::{Columns, FromColumns, vocab_column};
use happyx_core::util::now_ms;
use happyx_core::vocab::{PermissionStatus, SessionStatus, TaskStatus};

fn task_from_row(r: &impl Columns) -> Result<Task> {
    Ok(Task {
        id: r.col("id")?,
        title: r.col("title")?,
        description: r.col("description")?,
        status: vocab_column(r, "status", "tasks.status")?,
        created_by: r.col("created_by")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
    })
}

impl FromColumns for Task {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        task_from_row(r)
    }
}

fn session_from_row(r: &impl Columns) -> Result<Session> {
    Ok(Session {
        id: r.col("id")?,
        name: r.col("name")?,
        kind: vocab_column(r, "kind", "sessions.kind")?,
        status: vocab_column(r, "status", "sessions.status")?,
        task_id: r.col("task_id")?,
        epoch: r.col("epoch")?,
        rotation_required_since: r.col("rotation_required_since")?,
        created_by: r.col("created_by")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
    })
}

impl FromColumns for Session {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        session_from_row(r)
    }
}

fn permission_from_row(r: &impl Columns) -> Result<Permission> {
    Ok(Permission {
        id: r.col("id")?,
        subject: r.col("subject")?,
        action: r.col("action")?,
        scope: r.col("scope")?,
        status: vocab_column(r, "status", "permissions.status")?,
        granted_by: r.col("granted_by")?,
        expires_at: r.col("expires_at")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
    })
}

impl FromColumns for Permission {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        permission_from_row(r)
    }
}

/// A listing filter: rows created by `owner` only, when set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner<'a>(pub Option<&'a str>);

impl Store {
    async fn page<T>(
        &self,
        table: &'static str,
        owner_col: &'static str,
        owner: Owner<'_>,
        after: Option<&str>,
        limit: i64,
        map: fn(&crate::engine::Row) -> Result<T>,
    ) -> Result<Page<T>>
    where
        T: HasId,
    {
        let q = format!(
            "SELECT * FROM {table} WHERE ($1 IS NULL OR id > $2) AND ($3 IS NULL OR {owner_col} = $4) \
             ORDER BY id LIMIT $5"
        );
        let rows = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(after)
            .bind(after)
            .bind(owner.0)
            .bind(owner.0)
            .bind(limit + 1)
            .fetch_all(dbc)
            .await?);
        let mut items = rows.iter().map(map).collect::<Result<Vec<T>>>()?;
        let next = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|t| t.id().to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub async fn create_task(&self, t: &Task) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query(
            "INSERT INTO tasks (id, title, description, status, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(&t.title)
        .bind(&t.description)
        .bind(t.status.as_str())
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "task.created",
            &t.created_by,
            &t.id,
            json!({ "status": t.status }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn task(&self, id: &str) -> Result<Option<Task>> {
        self.lookup("SELECT * FROM tasks WHERE id = $1", id).await
    }

    pub async fn tasks(
        &self,
        owner: Owner<'_>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<Task>> {
        self.page("tasks", "created_by", owner, after, limit, task_from_row)
            .await
    }

    /// Sets a task's status; returns the updated task.
    pub async fn set_task_status(&self, id: &str, status: TaskStatus, actor: &str) -> Result<Task> {
        self.set_status("tasks", "task.status_changed", id, status.as_str(), actor)
            .await?;
        self.task(id).await?.ok_or(StoreError::NotFound)
    }

    pub async fn create_session(&self, s: &Session) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query(
            "INSERT INTO sessions (id, name, kind, status, task_id, epoch, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&s.id)
        .bind(&s.name)
        .bind(s.kind.as_str())
        .bind(s.status.as_str())
        .bind(&s.task_id)
        .bind(s.epoch)
        .bind(&s.created_by)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "session.created",
            &s.created_by,
            &s.id,
            json!({ "kind": s.kind, "task_id": s.task_id }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>> {
        self.lookup("SELECT * FROM sessions WHERE id = $1", id)
            .await
    }

    pub async fn sessions(
        &self,
        owner: Owner<'_>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<Session>> {
        self.page(
            "sessions",
            "created_by",
            owner,
            after,
            limit,
            session_from_row,
        )
        .await
    }

    /// Terminals by id order, one page (for the public terminal listing).
    pub async fn pty_page(&self, after: Option<&str>, limit: i64) -> Result<Page<PtySession>> {
        self.page(
            "pty_sessions",
            "requested_by",
            Owner(None),
            after,
            limit,
            super::pty::pty_from_row,
        )
        .await
    }

    pub async fn set_session_status(
        &self,
        id: &str,
        status: SessionStatus,
        actor: &str,
    ) -> Result<Session> {
        let status = status.as_str();
        self.set_status("sessions", "session.status_changed", id, status, actor)
            .await?;
        self.session(id).await?.ok_or(StoreError::NotFound)
    }

    pub async fn create_permission(&self, p: &Permission) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query(
            "INSERT INTO permissions (id, subject, action, scope, status, granted_by, expires_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&p.id)
        .bind(&p.subject)
        .bind(&p.action)
        .bind(&p.scope)
        .bind(p.status.as_str())
        .bind(&p.granted_by)
        .bind(p.expires_at)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "permission.granted",
            &p.granted_by,
            &p.id,
            json!({ "subject": p.subject, "action": p.action, "scope": p.scope, "expires_at": p.expires_at }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn permission(&self, id: &str) -> Result<Option<Permission>> {
        self.lookup("SELECT * FROM permissions WHERE id = $1", id)
            .await
    }

    pub async fn permissions(&self, after: Option<&str>, limit: i64) -> Result<Page<Permission>> {
        self.page(
            "permissions",
            "granted_by",
            Owner(None),
            after,
            limit,
            permission_from_row,
        )
        .await
    }

    pub async fn set_permission_status(
        &self,
        id: &str,
        status: PermissionStatus,
        actor: &str,
    ) -> Result<Permission> {
        self.set_status(
            "permissions",
            "permission.status_changed",
            id,
            status.as_str(),
            actor,
        )
        .await?;
        self.permission(id).await?.ok_or(StoreError::NotFound)
    }

    /// Updates `status` of one row and appends `code`, in one transaction.
    /// Setting the status it already has changes nothing and writes no event.
    async fn set_status(
        &self,
        table: &'static str,
        code: &'static str,
        id: &str,
        status: &str,
        actor: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let q = format!("SELECT status FROM {table} WHERE id = $1");
        let old: Option<(String,)> = db!(tx, dbc => sqlx::query_as(sqlx::AssertSqlSafe(q))
            .bind(id)
            .fetch_optional(dbc)
            .await?);
        let Some((old,)) = old else {
            return Err(StoreError::NotFound);
        };
        if old == status {
            return Ok(());
        }
        let q = format!("UPDATE {table} SET status = $1, updated_at = $2 WHERE id = $3");
        db!(tx, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(status)
            .bind(now_ms())
            .bind(id)
            .execute(dbc)
            .await?.rows_affected());
        let ev = NewEvent::new(code, actor, id, json!({ "from": old, "to": status }));
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Rows that page by id.
pub trait HasId {
    fn id(&self) -> &str;
}

impl HasId for Task {
    fn id(&self) -> &str {
        &self.id
    }
}
impl HasId for Session {
    fn id(&self) -> &str {
        &self.id
    }
}
impl HasId for PtySession {
    fn id(&self) -> &str {
        &self.id
    }
}
impl HasId for Permission {
    fn id(&self) -> &str {
        &self.id
    }
}
