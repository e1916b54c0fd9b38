//! Console sessions and the filtered, newest-first listings the operator console
//! pages read. Sessions keep only the SHA-256 of their id, tied to the token that
//! signed in: a lookup joins the token, so a revoked token ends its sessions at
//! once, whichever process revoked it.

use crate::engine::db;
use crate::rows::Columns;
use serde_json::json;
use sqlx::QueryBuilder;

use super::{EventRow, NewEvent, PtySession, Result, Run, Store, StoreError, append_event};
use happyx_core::util::now_ms;
use happyx_core::vocab::Role;

/// A live console session, joined with its token.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleSessionRow {
    pub token_id: String,
    pub role: Role,
    pub name: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Filters of the runs listing; every `None` matches all.
#[derive(Debug, Default, Clone)]
pub struct RunFilter<'a> {
    pub owner: Option<&'a str>,
    pub status: Option<&'a str>,
    pub requester: Option<&'a str>,
    pub recipe: Option<&'a str>,
    pub risk: Option<&'a str>,
    /// Only ids below this one (the previous page's last id).
    pub before: Option<&'a str>,
    pub limit: i64,
}

/// Filters of the events listing.
#[derive(Debug, Default, Clone)]
pub struct EventFilter<'a> {
    /// Exact code, or a prefix when it ends with `.` (`run.` matches `run.created`).
    pub code: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// `at >= since` (ms).
    pub since: Option<i64>,
    /// `at < until` (ms).
    pub until: Option<i64>,
    /// Only `seq < before`.
    pub before: Option<i64>,
    /// Only `seq > after`.
    pub after: Option<i64>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    pub limit: i64,
}

fn event_from_row(r: &impl Columns) -> Result<EventRow> {
    let data: String = r.col("data")?;
    Ok(EventRow {
        id: r.col("id")?,
        seq: r.col("seq")?,
        at: r.col("at")?,
        code: r.col("code")?,
        actor: r.col("actor")?,
        subject: r.col("subject")?,
        data: serde_json::from_str(&data).map_err(|_| StoreError::Corrupt("events.data"))?,
    })
}

/// `LIKE` pattern matching `prefix` literally.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Store {
    /// Stores a new console session (its id's hash) for `token_id`, records
    /// `console.signed_in`, and drops expired sessions.
    pub async fn create_console_session(
        &self,
        session_hash: &str,
        token_id: &str,
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(dbc)
            .await?.rows_affected());
        db!(tx, dbc => sqlx::query(
            "INSERT INTO console_sessions (session_hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(session_hash)
        .bind(token_id)
        .bind(now)
        .bind(expires_at)
        .execute(dbc)
        .await?.rows_affected());
        let actor = format!("token:{token_id}");
        let ev = NewEvent::new(
            "console.signed_in",
            &actor,
            token_id,
            json!({ "expires_at": expires_at }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session with this hash: unexpired, and its token not revoked.
    pub async fn console_session(&self, session_hash: &str) -> Result<Option<ConsoleSessionRow>> {
        let row = db!(rows read self, dbc => sqlx::query(
            "SELECT s.token_id, t.role, t.name, s.created_at, s.expires_at FROM console_sessions s \
             JOIN tokens t ON t.id = s.token_id \
             WHERE s.session_hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL",
        )
        .bind(session_hash)
        .bind(now_ms())
        .fetch_optional(dbc)
        .await?);
        row.map(|r| {
            Ok(ConsoleSessionRow {
                token_id: r.col("token_id")?,
                role: super::rows::vocab_column(&r, "role", "tokens.role")?,
                name: r.col("name")?,
                created_at: r.col("created_at")?,
                expires_at: r.col("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends a console session; `false` when there was none.
    pub async fn delete_console_session(&self, session_hash: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let row = db!(rows tx, dbc => sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1 RETURNING token_id")
                .bind(session_hash)
                .fetch_optional(dbc)
                .await?);
        let Some(row) = row else {
            return Ok(false);
        };
        let token_id: String = row.col("token_id")?;
        let actor = format!("token:{token_id}");
        append_event(
            &mut tx,
            &NewEvent::new("console.signed_out", &actor, &token_id, json!({})),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Runs matching `f`, newest first.
    pub async fn runs_filtered(&self, f: &RunFilter<'_>) -> Result<Vec<Run>> {
        let rows = db!(rows read self, dbc => {
        let mut q = QueryBuilder::new(format!(
            "SELECT {} FROM agent_runs WHERE 1 = 1",
            super::runs::COLS
        ));
        for (col, v) in [
            ("requested_by", f.owner),
            ("status", f.status),
            ("requested_by", f.requester),
            ("recipe", f.recipe),
            ("risk", f.risk),
        ] {
            if let Some(v) = v {
                q.push(format!(" AND {col} = ")).push_bind(v.to_string());
            }
        }
        if let Some(b) = f.before {
            q.push(" AND id < ").push_bind(b.to_string());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
        q.build().fetch_all(dbc).await?
        });
        rows.iter().map(super::runs::run_from_row).collect()
    }

    /// Events matching `f`, newest first unless `f.ascending`.
    pub async fn events_filtered(&self, f: &EventFilter<'_>) -> Result<Vec<EventRow>> {
        let rows = db!(rows read self, dbc => {
        let mut q = QueryBuilder::new(
            "SELECT id, seq, at, code, actor, subject, data FROM events WHERE 1 = 1",
        );
        if let Some(code) = f.code {
            if code.ends_with('.') {
                q.push(" AND code LIKE ")
                    .push_bind(like_prefix(code))
                    .push(" ESCAPE '\\'");
            } else {
                q.push(" AND code = ").push_bind(code.to_string());
            }
        }
        if let Some(a) = f.actor {
            q.push(" AND actor = ").push_bind(a.to_string());
        }
        if let Some(s) = f.subject {
            q.push(" AND subject = ").push_bind(s.to_string());
        }
        if let Some(s) = f.since {
            q.push(" AND at >= ").push_bind(s);
        }
        if let Some(u) = f.until {
            q.push(" AND at < ").push_bind(u);
        }
        if let Some(b) = f.before {
            q.push(" AND seq < ").push_bind(b);
        }
        if let Some(a) = f.after {
            q.push(" AND seq > ").push_bind(a);
        }
        q.push(if f.ascending {
            " ORDER BY seq LIMIT "
        } else {
            " ORDER BY seq DESC LIMIT "
        })
        .push_bind(f.limit);
        q.build().fetch_all(dbc).await?
        });
        rows.iter().map(event_from_row).collect()
    }

    /// Terminals, newest first, optionally one owner's or in one state.
    pub async fn ptys(
        &self,
        owner: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PtySession>> {
        let rows = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM pty_sessions WHERE ($1 IS NULL OR requested_by = $2) \
             AND ($3 IS NULL OR state = $4) ORDER BY id DESC LIMIT $5",
            super::pty::COLS
        )))
        .bind(owner)
        .bind(owner)
        .bind(state)
        .bind(state)
        .bind(limit)
        .fetch_all(dbc)
        .await?);
        rows.iter().map(super::pty::pty_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("run."), "run.%");
        assert_eq!(like_prefix("a_b%"), "a\\_b\\%%");
    }
}
