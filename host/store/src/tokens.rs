//! Bearer-token rows: create, look up by id (through the verified-token cache for
//! authentication), list, revoke.

use serde_json::json;

use super::{NewEvent, Result, Store, StoreError, TokenRow, append_event, db};
use crate::rows::{Columns, FromColumns};
use happyx_core::util::now_ms;

fn token_from_row(r: &impl Columns) -> Result<TokenRow> {
    Ok(TokenRow {
        id: r.col("id")?,
        name: r.col("name")?,
        role: super::rows::vocab_column(r, "role", "tokens.role")?,
        secret_hash: r.col("secret_hash")?,
        created_at: r.col("created_at")?,
        revoked_at: r.col("revoked_at")?,
    })
}

impl FromColumns for TokenRow {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        token_from_row(r)
    }
}

const COLS: &str = "id, name, role, secret_hash, created_at, revoked_at";

impl Store {
    /// Stores a new token (its secret's hash only) and its `token.created` event.
    pub async fn create_token(&self, row: &TokenRow, actor: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, c => sqlx::query(
            "INSERT INTO tokens (id, name, role, secret_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(row.role.as_str())
        .bind(&row.secret_hash)
        .bind(row.created_at)
        .execute(c)
        .await?
        .rows_affected());
        let ev = NewEvent::new(
            "token.created",
            actor,
            &row.id,
            json!({ "role": row.role, "name": row.name }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The token row for authenticating a request: from the verified-token cache when no
    /// revocation happened since it was read (module `token_cache`), else from the database.
    pub async fn token_for_auth(&self, id: &str) -> Result<Option<TokenRow>> {
        let Some(cache) = &self.token_cache else {
            return self.token(id).await;
        };
        let epoch = cache.epoch();
        if let Some(e) = epoch
            && let Some(row) = cache.get(id, e)
        {
            return Ok(Some(row));
        }
        let row = self.token(id).await?;
        if let (Some(e), Some(r)) = (epoch, &row) {
            cache.put(r, e);
        }
        Ok(row)
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        self.lookup(&format!("SELECT {COLS} FROM tokens WHERE id = $1"), id)
            .await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let q = format!("SELECT {COLS} FROM tokens ORDER BY created_at, id");
        db!(read self, c => sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_all(c)
            .await?
            .iter()
            .map(token_from_row)
            .collect())
    }

    /// Revokes a token; revoking twice is a no-op that reports `false`.
    pub async fn revoke_token(&self, id: &str, actor: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let done = db!(tx, c => sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(c)
        .await?
        .rows_affected());
        if done == 0 {
            let exists: Option<(String,)> = db!(tx, c => sqlx::query_as(
                "SELECT id FROM tokens WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(c)
            .await?);
            return match exists {
                Some(_) => Ok(false),
                None => Err(StoreError::NotFound),
            };
        }
        append_event(
            &mut tx,
            &NewEvent::new("token.revoked", actor, id, json!({})),
        )
        .await?;
        tx.commit().await?;
        // After the commit, before returning: no process trusts a row read before it.
        if let Some(cache) = &self.token_cache {
            cache.revoked();
        }
        Ok(true)
    }
}
