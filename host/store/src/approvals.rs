//! Approvals: request, decide, and the one-transaction use of a one-time token.
//!
//! The store executes; it does not judge. Whether an approval may be decided, withdrawn or
//! spent is a rule of the server's approvals module, passed in as a `judge` that runs on the
//! stored facts inside the same write transaction (so a concurrent change cannot slip between
//! the check and the write). A judge that refuses rolls the transaction back: nothing is
//! written.

use crate::engine::db;
use serde_json::{Value, json};

use super::{
    Approval, NewEvent, NewPty, NewTicket, PtySession, Result, Run, Store, StoreError,
    append_event, pty, runs,
};
use crate::rows::{Columns, FromColumns, vocab_column};
use happyx_core::util::{new_id, now_ms, random_bytes};
use happyx_core::vocab::{ActionKind, ApprovalStatus};

/// A pending approval to persist.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub id: String,
    pub kind: ActionKind,
    pub action_hash: String,
    pub action: Value,
    /// SHA-256 of the requester's one-time token; the token itself is never stored.
    pub token_hash: String,
    pub requester: String,
    pub expires_at: i64,
    pub max_pending: i64,
}

/// What presenting a one-time token came to.
#[derive(Debug, Clone, PartialEq)]
pub enum UseOutcome<R> {
    /// The use committed: what it created exists and the token is spent.
    Used(Granted),
    /// The judge refused the use (nothing was written).
    Refused(R),
    /// No approval has this token, or a concurrent use spent it first (nothing was written).
    Unknown,
}

/// The stored facts a presented one-time token is judged on, read inside the use's
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub kind: ActionKind,
    pub action_hash: String,
    pub requester: String,
    pub status: ApprovalStatus,
    pub expires_at: i64,
    /// Whether the approval's scope nonce is still the one it was issued with.
    pub nonce_fresh: bool,
}

/// What a successful use creates, in the use's own transaction.
#[derive(Debug, Clone)]
pub enum UseEffect<'a> {
    /// An agent run (kind `run`), with the client's idempotency key.
    CreateRun {
        run: &'a Run,
        idempotency_key: Option<&'a str>,
    },
    /// A PTY session (kind `pty`), in state `starting`.
    CreatePty { pty: &'a NewPty },
    /// A WebSocket attach ticket (kind `attach`), bound to one PTY and mode.
    IssueAttachTicket { ticket: &'a NewTicket },
}

/// What a committed use created.
#[derive(Debug, Clone, PartialEq)]
pub enum Granted {
    Run(Box<Run>),
    Pty(Box<PtySession>),
    /// The id of the issued attach ticket.
    AttachTicket(String),
}

/// A presented one-time token, the exact action it must match, and its effect.
#[derive(Debug, Clone)]
pub struct ApprovalUse<'a> {
    pub token_hash: &'a str,
    /// The identity presenting the token: only the one that asked may spend it.
    pub requester: &'a str,
    pub kind: ActionKind,
    pub action_hash: &'a str,
    pub effect: UseEffect<'a>,
}

/// The stored status, typed; an unknown value is a corrupt row, never a panic.
fn status_of(r: &impl Columns) -> Result<ApprovalStatus> {
    let text: String = r.col("status")?;
    text.parse()
        .map_err(|_| StoreError::Corrupt("approvals.status"))
}

fn approval_from_row(r: &impl Columns) -> Result<Approval> {
    let action: String = r.col("action")?;
    Ok(Approval {
        id: r.col("id")?,
        kind: vocab_column(r, "kind", "approvals.kind")?,
        action_hash: r.col("action_hash")?,
        action: serde_json::from_str(&action)
            .map_err(|_| StoreError::Corrupt("approvals.action"))?,
        requester: r.col("requester")?,
        status: status_of(r)?,
        decider: r.col("decider")?,
        decided_at: r.col("decided_at")?,
        scope: r.col("scope")?,
        expires_at: r.col("expires_at")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
    })
}

impl FromColumns for Approval {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        approval_from_row(r)
    }
}

const COLS: &str = "id, kind, action_hash, action, requester, status, decider, decided_at, scope, \
                    expires_at, created_at, updated_at";

fn fresh_nonce() -> String {
    hex::encode(random_bytes::<16>())
}

/// The stored facts of the approval whose token hashes to `token_hash`: (approval id, scope,
/// record), read in `tx`.
async fn token_record(
    tx: &mut crate::Tx,
    token_hash: &str,
) -> Result<Option<(String, String, TokenRecord)>> {
    let row = db!(rows tx, dbc => sqlx::query(
        "SELECT a.id, a.kind, a.action_hash, a.requester, a.status, a.expires_at, a.scope, a.nonce, n.value AS current_nonce \
         FROM approvals a LEFT JOIN nonces n ON n.scope = a.scope WHERE a.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(dbc)
    .await?);
    let Some(row) = row else {
        return Ok(None);
    };
    let nonce: String = row.col("nonce")?;
    let current: Option<String> = row.col("current_nonce")?;
    let record = TokenRecord {
        kind: vocab_column(&row, "kind", "approvals.kind")?,
        action_hash: row.col("action_hash")?,
        requester: row.col("requester")?,
        status: status_of(&row)?,
        expires_at: row.col("expires_at")?,
        nonce_fresh: current.as_deref() == Some(nonce.as_str()),
    };
    Ok(Some((row.col("id")?, row.col("scope")?, record)))
}

impl Store {
    /// Persists a pending approval, its scope nonce and its event. Refuses with
    /// `TooManyPending` past the requester's cap.
    pub async fn create_approval(&self, a: &NewApproval) -> Result<Approval> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let (pending,): (i64,) = db!(tx, dbc => sqlx::query_as(
            "SELECT COUNT(*) FROM approvals WHERE requester = $1 AND status = 'pending' AND expires_at > $2",
        )
        .bind(&a.requester)
        .bind(now)
        .fetch_one(dbc)
        .await?);
        if pending >= a.max_pending {
            return Err(StoreError::TooManyPending);
        }
        // A one-off approval is its own scope; its nonce rotates when it is used.
        let scope = format!("approval:{}", a.id);
        let nonce = fresh_nonce();
        db!(tx, dbc => sqlx::query("INSERT INTO nonces (scope, value, updated_at) VALUES ($1, $2, $3)")
            .bind(&scope)
            .bind(&nonce)
            .bind(now)
            .execute(dbc)
            .await?.rows_affected());
        db!(tx, dbc => sqlx::query(
            "INSERT INTO approvals (id, kind, action_hash, action, token_hash, requester, status, \
             decider, decided_at, scope, nonce, expires_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', NULL, NULL, $7, $8, $9, $10, $11)",
        )
        .bind(&a.id)
        .bind(a.kind.as_str())
        .bind(&a.action_hash)
        .bind(a.action.to_string())
        .bind(&a.token_hash)
        .bind(&a.requester)
        .bind(&scope)
        .bind(&nonce)
        .bind(a.expires_at)
        .bind(now)
        .bind(now)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "approval.requested",
            &a.requester,
            &a.id,
            json!({ "kind": a.kind, "action_hash": a.action_hash, "expires_at": a.expires_at }),
        );
        append_event(&mut tx, &ev).await?;
        let row = db!(rows tx, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM approvals WHERE id = $1"
        )))
        .bind(&a.id)
        .fetch_one(dbc)
        .await?);
        let out = approval_from_row(&row)?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn approval(&self, id: &str) -> Result<Option<Approval>> {
        self.lookup(&format!("SELECT {COLS} FROM approvals WHERE id = $1"), id)
            .await
    }

    /// Approvals, newest first, optionally of one status (`pending` also hides expired ones).
    pub async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: i64,
    ) -> Result<Vec<Approval>> {
        let status = status.map(ApprovalStatus::as_str);
        let rows = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM approvals WHERE ($1 IS NULL OR status = $2) \
             AND ($3 IS DISTINCT FROM 'pending' OR expires_at > $4) ORDER BY id DESC LIMIT $5"
        )))
        .bind(status)
        .bind(status)
        .bind(status)
        .bind(now_ms())
        .bind(limit)
        .fetch_all(dbc)
        .await?);
        rows.iter().map(approval_from_row).collect()
    }

    /// Approves or denies an approval if `judge` (given the stored approval and the time)
    /// allows it; `Ok(Err(refusal))` writes nothing. `NotFound` for an unknown id.
    pub async fn decide_approval<R>(
        &self,
        id: &str,
        decider: &str,
        approve: bool,
        judge: impl FnOnce(&Approval, i64) -> Result<(), R>,
    ) -> Result<Result<Approval, R>> {
        let (status, code) = if approve {
            (ApprovalStatus::Approved, "approval.approved")
        } else {
            (ApprovalStatus::Denied, "approval.denied")
        };
        let data = |a: &Approval| json!({ "requester": a.requester, "kind": a.kind });
        self.end_pending(id, decider, status, code, data, judge)
            .await
    }

    /// The requester takes back an approval if `judge` allows it: it ends `denied` with the
    /// requester as decider (its token can never be spent), with an `approval.withdrawn`
    /// event. `Ok(Err(refusal))` writes nothing. `NotFound` for an unknown id.
    pub async fn withdraw_approval<R>(
        &self,
        id: &str,
        requester: &str,
        judge: impl FnOnce(&Approval, i64) -> Result<(), R>,
    ) -> Result<Result<Approval, R>> {
        let data = |a: &Approval| json!({ "kind": a.kind });
        let status = ApprovalStatus::Denied;
        self.end_pending(id, requester, status, "approval.withdrawn", data, judge)
            .await
    }

    /// Ends a pending approval as `status`, decided by `actor`, with event `code` (its data
    /// drawn from the stored approval), in one transaction — if `judge`, given the stored
    /// approval and the time, allows it; a refusal writes nothing.
    async fn end_pending<R>(
        &self,
        id: &str,
        actor: &str,
        status: ApprovalStatus,
        code: &'static str,
        data: impl FnOnce(&Approval) -> serde_json::Value,
        judge: impl FnOnce(&Approval, i64) -> Result<(), R>,
    ) -> Result<Result<Approval, R>> {
        let mut tx = self.begin().await?;
        let row = db!(rows tx, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM approvals WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(dbc)
        .await?);
        let Some(a) = row.as_ref().map(approval_from_row).transpose()? else {
            return Err(StoreError::NotFound);
        };
        let now = now_ms();
        if let Err(refusal) = judge(&a, now) {
            return Ok(Err(refusal));
        }
        db!(tx, dbc => sqlx::query(
            "UPDATE approvals SET status = $1, decider = $2, decided_at = $3, updated_at = $4 \
             WHERE id = $5 AND status = $6",
        )
        .bind(status.as_str())
        .bind(actor)
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(ApprovalStatus::Pending.as_str())
        .execute(dbc)
        .await?.rows_affected());
        append_event(&mut tx, &NewEvent::new(code, actor, id, data(&a))).await?;
        tx.commit().await?;
        Ok(Ok(Approval {
            status,
            decider: Some(actor.into()),
            decided_at: Some(now),
            updated_at: now,
            ..a
        }))
    }

    /// Spends a one-time token, in ONE write transaction: look the approval up
    /// by the token's hash and let `judge` check it against the stored facts (kind, action
    /// hash, requester, decision, expiry, scope nonce); insert `approval_uses` (UNIQUE on the
    /// use hash); create the run; mark the approval used; rotate the scope's nonce; append
    /// events. A refusal rolls back, so a refused use writes nothing.
    ///
    /// A presentation the judge refuses on the last committed state is refused before the
    /// write lock is taken: a token's facts only move one way (pending → approved → used or
    /// expired; a scope's nonce only rotates), so what is refused now would be refused under
    /// the lock too. Of many contenders for one token, only those that read it unspent queue
    /// for the lock; there the token is read and judged again, and one of them spends it.
    pub async fn use_approval<R>(
        &self,
        u: &ApprovalUse<'_>,
        judge: impl Fn(&TokenRecord, i64) -> Result<(), R>,
    ) -> Result<UseOutcome<R>> {
        {
            let mut read = self.begin_read().await?;
            let seen = token_record(&mut read, u.token_hash).await;
            read.rollback().await?;
            match seen? {
                None => return Ok(UseOutcome::Unknown),
                Some((_, _, record)) => {
                    if let Err(refusal) = judge(&record, now_ms()) {
                        return Ok(UseOutcome::Refused(refusal));
                    }
                }
            }
        }
        let mut tx = self.begin().await?;
        let Some((approval_id, scope, record)) = token_record(&mut tx, u.token_hash).await? else {
            return Ok(UseOutcome::Unknown);
        };
        let now = now_ms();
        if let Err(refusal) = judge(&record, now) {
            return Ok(UseOutcome::Refused(refusal));
        }
        let inserted = db!(tx, dbc => sqlx::query(
            "INSERT INTO approval_uses (id, use_hash, approval_id, run_id, used_at) VALUES ($1, $2, $3, NULL, $4) \
             ON CONFLICT (use_hash) DO NOTHING",
        )
        .bind(new_id())
        .bind(u.token_hash)
        .bind(&approval_id)
        .bind(now)
        .execute(dbc)
        .await?.rows_affected());
        if inserted != 1 {
            return Ok(UseOutcome::Unknown);
        }
        let (granted, target) = match &u.effect {
            UseEffect::CreateRun {
                run,
                idempotency_key,
            } => {
                let run = Run {
                    approval_id: Some(approval_id.clone()),
                    ..(*run).clone()
                };
                runs::insert_run(
                    &mut tx,
                    &run,
                    *idempotency_key,
                    u.action_hash,
                    self.host_id(),
                )
                .await?;
                db!(tx, dbc => sqlx::query("UPDATE approval_uses SET run_id = $1 WHERE use_hash = $2")
                    .bind(&run.id)
                    .bind(u.token_hash)
                    .execute(dbc)
                    .await?.rows_affected());
                let id = run.id.clone();
                (Granted::Run(Box::new(run)), id)
            }
            UseEffect::CreatePty { pty: p } => {
                let mut p = (*p).clone();
                p.session.approval_id = Some(approval_id.clone());
                pty::insert_pty(&mut tx, &p, self.host_id()).await?;
                db!(tx, dbc => sqlx::query("UPDATE approval_uses SET pty_id = $1 WHERE use_hash = $2")
                    .bind(&p.session.id)
                    .bind(u.token_hash)
                    .execute(dbc)
                    .await?.rows_affected());
                let id = p.session.id.clone();
                (Granted::Pty(Box::new(p.session)), id)
            }
            UseEffect::IssueAttachTicket { ticket } => {
                pty::insert_ticket(&mut tx, ticket, Some(&approval_id)).await?;
                db!(tx, dbc => sqlx::query("UPDATE approval_uses SET pty_id = $1 WHERE use_hash = $2")
                    .bind(&ticket.pty_id)
                    .bind(u.token_hash)
                    .execute(dbc)
                    .await?.rows_affected());
                (
                    Granted::AttachTicket(ticket.id.clone()),
                    ticket.pty_id.clone(),
                )
            }
        };
        db!(tx, dbc => sqlx::query("UPDATE approvals SET status = 'used', updated_at = $1 WHERE id = $2 AND status = 'approved'")
            .bind(now)
            .bind(&approval_id)
            .execute(dbc)
            .await?.rows_affected());
        db!(tx, dbc => sqlx::query("UPDATE nonces SET value = $1, updated_at = $2 WHERE scope = $3")
            .bind(fresh_nonce())
            .bind(now)
            .bind(&scope)
            .execute(dbc)
            .await?.rows_affected());
        let ev = NewEvent::new(
            "approval.used",
            "host",
            &approval_id,
            json!({ "target": target, "kind": record.kind }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(UseOutcome::Used(granted))
    }

    /// Number of `approval_uses` rows for an approval (tests and evidence).
    pub async fn approval_use_count(&self, approval_id: &str) -> Result<i64> {
        let (n,): (i64,) = db!(read self, dbc => sqlx::query_as("SELECT COUNT(*) FROM approval_uses WHERE approval_id = $1")
                .bind(approval_id)
                .fetch_one(dbc)
                .await?);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    //! The race test for one-time tokens, run against the real use and against
    //! a deliberately naive read-then-write version kept here, to show that the
    //! test can fail.

    use std::sync::Arc;

    use super::*;
    use crate::testing::every_engine;

    fn run_row(id: &str) -> Run {
        Run::queued(
            id.into(),
            "shell".into(),
            happyx_core::vocab::Risk::High,
            None,
            "token:agent".into(),
            now_ms(),
        )
    }

    /// Creates and approves an approval for `action_hash`; returns its token hash.
    async fn approved(s: &Store, kind: ActionKind, action_hash: &str) -> (String, String) {
        let id = new_id();
        let token_hash = hex::encode(random_bytes::<32>());
        s.create_approval(&NewApproval {
            id: id.clone(),
            kind,
            action_hash: action_hash.into(),
            action: json!({}),
            token_hash: token_hash.clone(),
            requester: "token:agent".into(),
            expires_at: now_ms() + 60_000,
            max_pending: 1000,
        })
        .await
        .expect("create");
        s.decide_approval(&id, "token:operator", true, |_, _| Ok::<(), No>(()))
            .await
            .expect("approve")
            .expect("approved");
        (id, token_hash)
    }

    /// The refusal of the judges in these tests.
    #[derive(Debug, Clone, PartialEq)]
    struct No;

    /// A judge for these tests: the use's binding, an approved decision, no expiry and a
    /// fresh nonce (the server's own rules are tested in its approvals module).
    fn bound<'a>(u: &'a ApprovalUse<'a>) -> impl Fn(&TokenRecord, i64) -> Result<(), No> + 'a {
        move |r, now| {
            let ok = r.kind == u.kind
                && r.action_hash == u.action_hash
                && r.requester == u.requester
                && r.status == ApprovalStatus::Approved
                && r.expires_at > now
                && r.nonce_fresh;
            if ok { Ok(()) } else { Err(No) }
        }
    }

    async fn runs_for(s: &Store, approval_id: &str) -> i64 {
        let (n,): (i64,) = db!(read s, dbc => sqlx::query_as(
            "SELECT COUNT(*) FROM agent_runs WHERE approval_id = $1",
        )
        .bind(approval_id)
        .fetch_one(dbc)
        .await
        .expect("count"));
        n
    }

    /// The naive version: checks the approval outside any lock, then writes.
    async fn naive_use(s: Store, token_hash: String, run: Run) -> UseOutcome<No> {
        let row: Option<(String, String)> = db!(read s, dbc => sqlx::query_as(
            "SELECT id, status FROM approvals WHERE token_hash = $1",
        )
        .bind(&token_hash)
        .fetch_optional(dbc)
        .await
        .ok()
        .flatten());
        let Some((approval_id, status)) = row else {
            return UseOutcome::Unknown;
        };
        if status != "approved" {
            return UseOutcome::Unknown;
        }
        tokio::task::yield_now().await;
        let Ok(mut tx) = s.begin().await else {
            return UseOutcome::Unknown;
        };
        let run = Run {
            approval_id: Some(approval_id.clone()),
            ..run
        };
        if runs::insert_run(&mut tx, &run, None, "h", None)
            .await
            .is_err()
        {
            return UseOutcome::Unknown;
        }
        let _ = db!(tx, dbc => sqlx::query("UPDATE approvals SET status = 'used' WHERE id = $1")
            .bind(&approval_id)
            .execute(dbc)
            .await
            .map(|r| r.rows_affected()));
        match tx.commit().await {
            Ok(()) => UseOutcome::Used(Granted::Run(Box::new(run))),
            Err(_) => UseOutcome::Unknown,
        }
    }

    /// 64 concurrent presentations of one approved token; returns (uses that
    /// succeeded, runs created).
    async fn race(s: &Store, naive: bool) -> (usize, i64) {
        let (approval_id, token_hash) = approved(s, ActionKind::Run, "h").await;
        let token_hash = Arc::new(token_hash);
        let mut handles = Vec::new();
        for _ in 0..64 {
            let (s, th) = (s.clone(), token_hash.clone());
            handles.push(tokio::spawn(async move {
                let run = run_row(&new_id());
                if naive {
                    naive_use(s, (*th).clone(), run).await
                } else {
                    let u = ApprovalUse {
                        token_hash: &th,
                        requester: "token:agent",
                        kind: ActionKind::Run,
                        action_hash: "h",
                        effect: UseEffect::CreateRun {
                            run: &run,
                            idempotency_key: None,
                        },
                    };
                    s.use_approval(&u, bound(&u))
                        .await
                        .unwrap_or(UseOutcome::Unknown)
                }
            }));
        }
        let mut ok = 0;
        for h in handles {
            if matches!(h.await.expect("join"), UseOutcome::Used(_)) {
                ok += 1;
            }
        }
        (ok, runs_for(s, &approval_id).await)
    }

    every_engine! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn one_token_is_used_exactly_once_under_64_contenders(s) {
            for _ in 0..10 {
                let (ok, runs) = race(&s, false).await;
                assert_eq!((ok, runs), (1, 1));
            }
        }
    }

    /// Two hosts' stores on one PostgreSQL database (each its own pool, as two processes):
    /// 1,000 approved tokens, each presented by 32 contenders through each host at once.
    /// Every token is spent exactly once, for exactly one run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_thousand_tokens_raced_over_two_hosts_are_each_spent_once() {
        let Some(cfg) = crate::test_support::postgres_storage().await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = [
            Store::open(dir.path(), &cfg).await.expect("host a"),
            Store::open(dir.path(), &cfg).await.expect("host b"),
        ];
        const TOKENS: usize = 1000;
        const PER_HOST: usize = 32;
        // Tokens are approved and raced a few at a time (each well within its expiry), all
        // their contenders at once.
        const AT_ONCE: usize = 4;
        for chunk in (0..TOKENS).collect::<Vec<_>>().chunks(AT_ONCE) {
            let mut tokens = vec![(String::new(), String::new()); TOKENS];
            for &t in chunk {
                tokens[t] = approved(&hosts[t % 2], ActionKind::Run, "h").await;
            }
            let tokens = Arc::new(tokens);
            let mut handles = Vec::new();
            for &t in chunk {
                for c in 0..2 * PER_HOST {
                    let (s, tokens) = (hosts[c % 2].clone(), tokens.clone());
                    handles.push(tokio::spawn(async move {
                        let run = run_row(&new_id());
                        let u = ApprovalUse {
                            token_hash: &tokens[t].1,
                            requester: "token:agent",
                            kind: ActionKind::Run,
                            action_hash: "h",
                            effect: UseEffect::CreateRun {
                                run: &run,
                                idempotency_key: None,
                            },
                        };
                        (
                            t,
                            matches!(s.use_approval(&u, bound(&u)).await, Ok(UseOutcome::Used(_))),
                        )
                    }));
                }
            }
            let mut used = [0usize; AT_ONCE];
            for h in handles {
                let (t, ok) = h.await.expect("join");
                used[t % AT_ONCE] += usize::from(ok);
            }
            for &t in chunk {
                let n = used[t % AT_ONCE];
                assert_eq!(n, 1, "token {t} was spent {n} times");
            }
        }
        let (runs,): (i64,) = db!(read hosts[1], dbc => sqlx::query_as(
            "SELECT COUNT(DISTINCT approval_id) FROM agent_runs WHERE approval_id IS NOT NULL",
        )
        .fetch_one(dbc)
        .await
        .expect("count"));
        let (all,): (i64,) = db!(read hosts[1], dbc => sqlx::query_as(
            "SELECT COUNT(*) FROM agent_runs",
        )
        .fetch_one(dbc)
        .await
        .expect("count"));
        assert_eq!(
            (runs, all),
            (TOKENS as i64, TOKENS as i64),
            "one run per token"
        );
    }

    every_engine! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn the_race_test_catches_a_naive_read_then_write(s) {
            let mut worst = 0;
            for _ in 0..10 {
                let (ok, runs) = race(&s, true).await;
                worst = worst.max(ok).max(runs as usize);
            }
            assert!(
                worst > 1,
                "the naive version was never caught double-spending; the race test is too weak"
            );
        }
    }

    every_engine! {
    #[tokio::test]
        async fn a_token_for_one_action_does_not_authorise_another(s) {
            let (approval_id, th) = approved(&s, ActionKind::Run, "hash-a").await;
            let before = s.last_event_seq().await.expect("seq");
            for (kind, hash) in [
                (ActionKind::Run, "hash-b"),
                (ActionKind::Pty, "hash-a"),
                (ActionKind::Attach, "hash-a"),
            ] {
                let run = run_row(&new_id());
                let u = ApprovalUse {
                    token_hash: &th,
                    requester: "token:agent",
                    kind,
                    action_hash: hash,
                    effect: UseEffect::CreateRun {
                        run: &run,
                        idempotency_key: None,
                    },
                };
                assert_eq!(
                    s.use_approval(&u, bound(&u)).await.expect("use"),
                    UseOutcome::Refused(No)
                );
            }
            assert_eq!(
                s.last_event_seq().await.expect("seq"),
                before,
                "a refused use wrote an event"
            );
            assert_eq!(s.approval_use_count(&approval_id).await.expect("count"), 0);
            assert_eq!(runs_for(&s, &approval_id).await, 0);
            // The right action still works once.
            let run = run_row(&new_id());
            let u = ApprovalUse {
                token_hash: &th,
                requester: "token:agent",
                kind: ActionKind::Run,
                action_hash: "hash-a",
                effect: UseEffect::CreateRun {
                    run: &run,
                    idempotency_key: None,
                },
            };
            assert!(matches!(
                s.use_approval(&u, bound(&u)).await.expect("use"),
                UseOutcome::Used(_)
            ));
            assert_eq!(
                s.use_approval(&u, bound(&u)).await.expect("use"),
                UseOutcome::Refused(No)
            );
        }
    }

    every_engine! {
    #[tokio::test]
        async fn a_refusing_judge_writes_nothing(s) {
            let (id, th) = approved(&s, ActionKind::Run, "h").await;
            let before = s.last_event_seq().await.expect("seq");
            let run = run_row(&new_id());
            let u = ApprovalUse {
                token_hash: &th,
                requester: "token:agent",
                kind: ActionKind::Run,
                action_hash: "h",
                effect: UseEffect::CreateRun {
                    run: &run,
                    idempotency_key: None,
                },
            };
            let out = s.use_approval(&u, |_, _| Err(No)).await.expect("use");
            assert_eq!(out, UseOutcome::Refused(No));
            let out = s
                .decide_approval(&id, "token:op", false, |_, _| Err(No))
                .await
                .expect("decide");
            assert_eq!(out, Err(No));
            let out = s
                .withdraw_approval(&id, "token:agent", |_, _| Err(No))
                .await
                .expect("withdraw");
            assert_eq!(out, Err(No));
            assert_eq!(s.last_event_seq().await.expect("seq"), before);
            assert_eq!(s.approval_use_count(&id).await.expect("count"), 0);
            assert_eq!(runs_for(&s, &id).await, 0);
            let a = s.approval(&id).await.expect("read").expect("approval");
            assert_eq!(a.status, ApprovalStatus::Approved);
            // The judge sees the stored facts.
            let seen = s
                .use_approval(&u, |r, now| {
                    assert_eq!(
                        (
                            r.kind.as_str(),
                            r.action_hash.as_str(),
                            r.requester.as_str()
                        ),
                        ("run", "h", "token:agent")
                    );
                    assert!(
                        r.status == ApprovalStatus::Approved && r.nonce_fresh && r.expires_at > now
                    );
                    Ok::<(), No>(())
                })
                .await
                .expect("use");
            assert!(matches!(seen, UseOutcome::Used(_)));
            // Spent: the second use never reaches an `approved` record.
            let again = s.use_approval(&u, bound(&u)).await.expect("use");
            assert_eq!(again, UseOutcome::Refused(No));
        }
    }

    every_engine! {
    #[tokio::test]
        async fn pending_cap_per_requester(s) {
            let mk = |i: usize| NewApproval {
                id: new_id(),
                kind: ActionKind::Run,
                action_hash: format!("h{i}"),
                action: json!({}),
                token_hash: format!("{i:064}"),
                requester: "token:agent".into(),
                expires_at: now_ms() + 60_000,
                max_pending: 3,
            };
            for i in 0..3 {
                s.create_approval(&mk(i)).await.expect("under the cap");
            }
            assert!(matches!(
                s.create_approval(&mk(3)).await,
                Err(StoreError::TooManyPending)
            ));
            // Listed by status, and all of them.
            let pending = s
                .approvals(Some(ApprovalStatus::Pending), 10)
                .await
                .expect("list");
            assert_eq!(pending.len(), 3);
            assert_eq!(s.approvals(None, 2).await.expect("list").len(), 2);
            let approved = s
                .approvals(Some(ApprovalStatus::Approved), 10)
                .await
                .expect("list");
            assert!(approved.is_empty());
        }
    }
}
