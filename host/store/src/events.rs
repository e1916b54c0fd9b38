//! The append-only, gap-free audit log.

use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use sqlx::QueryBuilder;

use super::{EventRow, Result, Store, StoreError, Tx, db};
use crate::audit::{self, ChainError, ChainSummary, EventFields, Verifier};
use crate::engine::{Conn, Engine};
use crate::rows::{Columns, FromColumns};
use happyx_core::progress::Progress;
use happyx_core::util::{new_id, now_ms};

/// An event to append in the same transaction as the change it records.
/// `data` must be public-safe: identifiers, counters, hashes; never secrets.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub code: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub data: Value,
}

impl<'a> NewEvent<'a> {
    pub fn new(code: &'a str, actor: &'a str, subject: &'a str, data: Value) -> Self {
        Self {
            code,
            actor,
            subject,
            data,
        }
    }
}

/// The newest event's `(seq, hash)`, else the prune anchor's, else `(0, genesis)`: what the
/// next event chains to. A malformed stored hash (only a tampered database has one) chains
/// from the genesis value; the break stays visible to `happyx audit verify`.
async fn chain_tip(tx: &mut Tx) -> Result<(i64, [u8; 32])> {
    let row: Option<(i64, Option<String>)> = db!(tx, c => sqlx::query_as(
        "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(c)
    .await?);
    let row = match row {
        Some(r) => Some(r),
        None => db!(tx, c => sqlx::query_as("SELECT seq, hash FROM event_anchor WHERE id = 1")
            .fetch_optional(c)
            .await?)
        .map(|(seq, hash): (i64, String)| (seq, Some(hash))),
    };
    Ok(match row {
        None => (0, audit::GENESIS),
        Some((seq, hash)) => (
            seq,
            hash.as_deref()
                .and_then(audit::parse_hash)
                .unwrap_or(audit::GENESIS),
        ),
    })
}

/// `(seq, hash)` of the newest event as this process's last append left it: a hint that spares
/// the next append its read of the chain tip. Never trusted: the INSERT that uses it only
/// writes while the newest stored event is still exactly this one (checked in the same
/// statement, under the write lock), and on a miss the append reads the tip and chains from
/// that. A miss (another process such as the CLI appended meanwhile, a transaction rolled
/// back, a second store in this process) costs one statement and never changes what is
/// written. A process-wide slot, because appends run on any write connection the store hands
/// out (one per store, and a process normally has one store).
static TIP_HINT: Mutex<Option<(i64, [u8; 32])>> = Mutex::new(None);

fn tip_hint() -> Option<(i64, [u8; 32])> {
    *TIP_HINT.lock().unwrap_or_else(PoisonError::into_inner)
}

fn set_tip_hint(tip: (i64, [u8; 32])) {
    *TIP_HINT.lock().unwrap_or_else(PoisonError::into_inner) = Some(tip);
}

/// Appends inside an open write transaction; returns the new sequence number.
/// Gap-free because the engine's write lock ([`crate::engine`]) is held from the transaction's
/// start to its commit; the row's chain
/// hash ([`crate::audit`]) is computed here, chained to the newest row, in the same transaction.
pub(super) async fn append(tx: &mut Tx, ev: &NewEvent<'_>) -> Result<i64> {
    Ok(append_first(tx, ev).await?.0)
}

/// Appends `evs` in order inside an open write transaction, chained in memory after the first
/// (whose tip is hinted or read once), the rest in multi-row INSERTs; returns the last
/// sequence number, `None` when `evs` is empty. What a writer that records several events in
/// one transaction calls, instead of [`append`] per event (a statement each).
pub(super) async fn append_all(tx: &mut Tx, evs: &[NewEvent<'_>]) -> Result<Option<i64>> {
    let Some((first, rest)) = evs.split_first() else {
        return Ok(None);
    };
    let tip = append_first(tx, first).await?;
    let tip = insert_chained(tx, rest, tip).await?;
    set_tip_hint(tip);
    Ok(Some(tip.0))
}

/// Appends the first event of a transaction: after the hinted tip when the hint still holds,
/// else after the tip read from the database. Returns the new tip.
async fn append_first(tx: &mut Tx, ev: &NewEvent<'_>) -> Result<(i64, [u8; 32])> {
    if let Some(tip) = tip_hint()
        && let Some(next) = insert_after(tx, ev, tip, true).await?
    {
        set_tip_hint(next);
        return Ok(next);
    }
    let tip = chain_tip(tx).await?;
    append_after(tx, ev, tip).await
}

/// Appends `ev` after `tip` (the `(seq, hash)` read or checked in this same transaction, or
/// what the previous call returned); returns the new tip.
async fn append_after(
    tx: &mut Tx,
    ev: &NewEvent<'_>,
    tip: (i64, [u8; 32]),
) -> Result<(i64, [u8; 32])> {
    let next = insert_after(tx, ev, tip, false)
        .await?
        .ok_or(StoreError::EventNotAppended)?;
    set_tip_hint(next);
    Ok(next)
}

/// One event ready to insert: its generated fields and its chain hash.
struct Chained {
    id: String,
    seq: i64,
    at: i64,
    data: String,
    hash: [u8; 32],
}

/// Gives `ev` its id, time and `seq`, and hashes it chained to `(prev_seq, prev)`.
fn chain(ev: &NewEvent<'_>, (prev_seq, prev): (i64, [u8; 32])) -> Chained {
    let (id, at, data, seq) = (new_id(), now_ms(), ev.data.to_string(), prev_seq + 1);
    let hash = audit::event_hash(
        &prev,
        &EventFields {
            seq,
            id: &id,
            at,
            code: ev.code,
            actor: ev.actor,
            subject: ev.subject,
            data: &data,
        },
    );
    Chained {
        id,
        seq,
        at,
        data,
        hash,
    }
}

/// Inserts `ev` chained to `tip`. With `checked`, only while the newest stored event is `tip`
/// (`None` when it is not, and nothing was written).
async fn insert_after(
    tx: &mut Tx,
    ev: &NewEvent<'_>,
    tip: (i64, [u8; 32]),
    checked: bool,
) -> Result<Option<(i64, [u8; 32])>> {
    let sql = if checked {
        "INSERT INTO events (id, seq, at, code, actor, subject, data, hash) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
         WHERE ($9, $10) = (SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1)"
    } else {
        "INSERT INTO events (id, seq, at, code, actor, subject, data, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    };
    let Chained {
        id,
        seq,
        at,
        data,
        hash,
    } = chain(ev, tip);
    let written = db!(tx, conn => {
        let mut q = sqlx::query(sql)
            .bind(&id)
            .bind(seq)
            .bind(at)
            .bind(ev.code)
            .bind(ev.actor)
            .bind(ev.subject)
            .bind(&data)
            .bind(hex::encode(hash));
        if checked {
            q = q.bind(tip.0).bind(hex::encode(tip.1));
        }
        q.execute(conn).await?.rows_affected()
    });
    Ok((written == 1).then_some((seq, hash)))
}

/// Events per multi-row INSERT of [`Store::append_events`] (8 parameters each; SQLite allows
/// 32,766 per statement).
const INSERT_ROWS: usize = 100;

/// Inserts `evs` chained one to the next from `tip`, [`INSERT_ROWS`] per statement; returns
/// the new tip.
async fn insert_chained(
    tx: &mut Tx,
    evs: &[NewEvent<'_>],
    mut tip: (i64, [u8; 32]),
) -> Result<(i64, [u8; 32])> {
    for part in evs.chunks(INSERT_ROWS) {
        let rows: Vec<(Chained, &NewEvent<'_>)> = part
            .iter()
            .map(|ev| {
                let c = chain(ev, tip);
                tip = (c.seq, c.hash);
                (c, ev)
            })
            .collect();
        db!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO events (id, seq, at, code, actor, subject, data, hash) ",
            );
            qb.push_values(&rows, |mut b, (c, ev)| {
                b.push_bind(c.id.clone())
                    .push_bind(c.seq)
                    .push_bind(c.at)
                    .push_bind(ev.code.to_owned())
                    .push_bind(ev.actor.to_owned())
                    .push_bind(ev.subject.to_owned())
                    .push_bind(c.data.clone())
                    .push_bind(hex::encode(c.hash));
            });
            qb.build().execute(conn).await?.rows_affected()
        });
    }
    Ok(tip)
}

/// Rows read per batch when walking the chain: what bounds the memory of a walk.
const CHAIN_BATCH: i64 = 10_000;

/// Walks the events oldest first, [`CHAIN_BATCH`] rows at a time, with the columns the chain
/// covers: the one row pager of the backfill and the chain check.
#[derive(Debug)]
struct EventPager {
    after: i64,
}

impl Default for EventPager {
    fn default() -> Self {
        Self { after: i64::MIN }
    }
}

impl EventPager {
    /// The next batch; empty once the walk is done.
    async fn next(&mut self, tx: &mut impl Conn) -> Result<Vec<ChainRow>> {
        let rows: Vec<ChainRow> = db!(tx, c => sqlx::query(
            "SELECT id, seq, at, code, actor, subject, data, hash FROM events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(self.after)
        .bind(CHAIN_BATCH)
        .fetch_all(c)
        .await?
        .iter()
        .map(ChainRow::from_columns)
        .collect::<Result<_>>()?);
        if let Some(last) = rows.last() {
            self.after = last.seq;
        }
        Ok(rows)
    }
}

/// A paged event: the fields its chain hash covers, and its stored hash.
struct ChainRow {
    seq: i64,
    id: String,
    at: i64,
    code: String,
    actor: String,
    subject: String,
    data: String,
    hash: Option<String>,
}

impl FromColumns for ChainRow {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        Ok(ChainRow {
            seq: r.col("seq")?,
            id: r.col("id")?,
            at: r.col("at")?,
            code: r.col("code")?,
            actor: r.col("actor")?,
            subject: r.col("subject")?,
            data: r.col("data")?,
            hash: r.col("hash")?,
        })
    }
}

impl ChainRow {
    /// The chained fields, borrowed, and the stored hash.
    fn fields(&self) -> (EventFields<'_>, Option<&str>) {
        (
            EventFields {
                seq: self.seq,
                id: &self.id,
                at: self.at,
                code: &self.code,
                actor: &self.actor,
                subject: &self.subject,
                data: &self.data,
            },
            self.hash.as_deref(),
        )
    }
}

/// Hashes the events a database had before the chain existed, once: while
/// `event_hash_backfill` holds its row (put there by migration 0007), rows without a hash
/// get one, in `seq` order, chained from the first event (a log whose oldest events were
/// already pruned gets an anchor at the seq before its first one, with the genesis value).
/// One transaction; the marker row goes with it, so a hash removed later is never refilled.
pub(super) async fn backfill_hashes(engine: &Engine) -> Result<u64> {
    let mut tx = engine.begin().await?;
    let (owed,): (i64,) = db!(tx, c => sqlx::query_as("SELECT COUNT(*) FROM event_hash_backfill")
        .fetch_one(c)
        .await?);
    if owed == 0 {
        return Ok(0);
    }
    let anchor: Option<(i64,)> = db!(tx, c => sqlx::query_as(
        "SELECT seq FROM event_anchor WHERE id = 1",
    )
    .fetch_optional(c)
    .await?);
    if anchor.is_none() {
        let (first,): (Option<i64>,) = db!(tx, c => sqlx::query_as("SELECT MIN(seq) FROM events")
            .fetch_one(c)
            .await?);
        if let Some(first) = first.filter(|f| *f > 1) {
            db!(tx, c => sqlx::query("INSERT INTO event_anchor (id, seq, hash) VALUES (1, $1, $2)")
                .bind(first - 1)
                .bind(hex::encode(audit::GENESIS))
                .execute(c)
                .await?
                .rows_affected());
        }
    }
    let mut prev = audit::GENESIS;
    let mut filled = 0u64;
    let mut pager = EventPager::default();
    loop {
        let rows = pager.next(&mut tx).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let (ev, stored) = r.fields();
            if let Some(h) = stored.and_then(audit::parse_hash) {
                prev = h;
                continue;
            }
            prev = audit::event_hash(&prev, &ev);
            db!(tx, c => sqlx::query("UPDATE events SET hash = $1 WHERE seq = $2")
                .bind(hex::encode(prev))
                .bind(ev.seq)
                .execute(c)
                .await?
                .rows_affected());
            filled += 1;
        }
    }
    db!(tx, c => sqlx::query("DELETE FROM event_hash_backfill")
        .execute(c)
        .await?
        .rows_affected());
    tx.commit().await?;
    if filled > 0 {
        tracing::info!(
            events = filled,
            "hashed the existing event log into its chain"
        );
    }
    Ok(filled)
}

/// Walks the whole chain on `conn` (inside the caller's transaction, for a consistent
/// view), oldest first. The outer error is a storage failure; the inner one the first
/// bad `seq`.
pub(crate) async fn verify_chain_on(
    tx: &mut impl Conn,
    progress: &Progress,
) -> Result<std::result::Result<ChainSummary, ChainError>> {
    let anchor: Option<(i64, String)> = db!(tx, c => sqlx::query_as(
        "SELECT seq, hash FROM event_anchor WHERE id = 1",
    )
    .fetch_optional(c)
    .await?);
    let mut v = match Verifier::new(anchor.as_ref().map(|(s, h)| (*s, h.as_str()))) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let mut pager = EventPager::default();
    loop {
        let rows = pager.next(tx).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let (ev, hash) = r.fields();
            if let Err(e) = v.push(&ev, hash) {
                return Ok(Err(e));
            }
        }
        progress.inc(rows.len() as u64);
    }
    Ok(Ok(v.finish()))
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

impl Store {
    /// Appends one event in its own transaction (for changes that are only events).
    pub async fn append_event(&self, ev: &NewEvent<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        let seq = append(&mut tx, ev).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Appends several events in one transaction; returns the last sequence number.
    pub async fn append_events(&self, evs: &[NewEvent<'_>]) -> Result<i64> {
        let mut tx = self.begin().await?;
        let last = append_all(&mut tx, evs).await?;
        tx.commit().await?;
        Ok(last.unwrap_or(0))
    }

    /// Events with `seq > after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<EventRow>> {
        db!(read self, c => sqlx::query(
            "SELECT id, seq, at, code, actor, subject, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await?
        .iter()
        .map(event_from_row)
        .collect())
    }

    /// Checks the whole event chain from the prune anchor to the newest event, in one read
    /// transaction. The outer error is a storage failure; the inner one the first bad `seq`.
    pub async fn verify_chain(
        &self,
        progress: &Progress,
    ) -> Result<std::result::Result<ChainSummary, ChainError>> {
        let (n,): (i64,) = db!(read self, c => sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(c)
            .await?);
        progress.add_total(n.max(0) as u64);
        let mut tx = self.begin_read().await?;
        let out = verify_chain_on(&mut tx, progress).await?;
        tx.rollback().await?;
        Ok(out)
    }

    /// The chain's head `(seq, hex hash)` and anchor `(seq, hex hash)`, as stored (not
    /// checked): what `/public/evidence` publishes. `(0, genesis)` stands for none.
    pub async fn chain_head(&self) -> Result<((i64, String), (i64, String))> {
        let mut tx = self.begin_read().await?;
        let anchor: (i64, String) = db!(tx, c => sqlx::query_as(
            "SELECT seq, hash FROM event_anchor WHERE id = 1",
        )
        .fetch_optional(c)
        .await?)
        .unwrap_or_else(|| (0, hex::encode(audit::GENESIS)));
        let head: Option<(i64, Option<String>)> = db!(tx, c => sqlx::query_as(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(c)
        .await?);
        tx.rollback().await?;
        let head = match head {
            Some((seq, hash)) => (seq, hash.unwrap_or_default()),
            None => anchor.clone(),
        };
        Ok((head, anchor))
    }

    /// Highest sequence number, 0 when the log is empty.
    pub async fn last_event_seq(&self) -> Result<i64> {
        let (seq,): (Option<i64>,) = db!(read self, c => sqlx::query_as("SELECT MAX(seq) FROM events")
            .fetch_one(c)
            .await?);
        Ok(seq.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    //! The chain tip hint under writers it cannot see: a rolled-back transaction, and a second
    //! process appending to the same data dir (the CLI while the server runs). Each test also
    //! runs against a deliberately naive append kept here, which trusts its in-memory head, to
    //! show that the test can fail.

    use std::process::Command;

    use serde_json::json;

    use super::*;
    use crate::config::{StorageConfig, Synchronous};
    use crate::testing::every_engine;
    use happyx_core::progress::Progress;

    /// Events each child process appends.
    const PER_CHILD: usize = 400;
    /// Set in a child process: `naive|checked:<data dir>`.
    const CHILD_ENV: &str = "HAPPYX_TEST_APPEND_CHILD";

    fn cfg() -> StorageConfig {
        StorageConfig {
            synchronous: Synchronous::Normal,
            ..StorageConfig::default()
        }
    }

    fn ev(i: usize) -> NewEvent<'static> {
        NewEvent::new("test.appended", "test", "chain", json!({ "i": i }))
    }

    /// The naive version: chains from the head this process remembers, without checking it.
    async fn naive_append(s: &Store, ev: &NewEvent<'_>) -> Result<i64> {
        let mut tx = s.begin().await?;
        let tip = match tip_hint() {
            Some(tip) => tip,
            None => chain_tip(&mut tx).await?,
        };
        let next = append_after(&mut tx, ev, tip).await?;
        tx.commit().await?;
        Ok(next.0)
    }

    async fn append(s: &Store, i: usize, naive: bool) -> Result<i64> {
        if naive {
            naive_append(s, &ev(i)).await
        } else if i % 10 == 9 {
            s.append_events(&[ev(i), ev(i)]).await
        } else {
            s.append_event(&ev(i)).await
        }
    }

    /// Whether the log is whole: it verifies and holds exactly `want` events numbered 1..=want.
    async fn whole(s: &Store, want: usize) -> bool {
        let verified = s.verify_chain(&Progress::hidden()).await.expect("read");
        let seqs: Vec<i64> = s
            .events_after(0, i64::MAX)
            .await
            .expect("events")
            .iter()
            .map(|e| e.seq)
            .collect();
        verified.is_ok() && seqs == (1..=want as i64).collect::<Vec<_>>()
    }

    /// Appends, rolls one transaction back after its append, appends again; whole?
    async fn rollback_then_append(s: &Store, naive: bool) -> bool {
        let mut ok = true;
        for i in 0..20 {
            ok &= append(s, i, naive).await.is_ok();
            let mut tx = s.begin().await.expect("begin");
            super::append(&mut tx, &ev(1000 + i)).await.expect("append");
            tx.rollback().await.expect("rollback");
        }
        // i = 9 and 19 append a pair.
        ok && whole(s, 22).await
    }

    every_engine! {
        #[tokio::test]
        async fn a_rolled_back_append_leaves_the_chain_whole(s) {
            assert!(rollback_then_append(&s, false).await);
        }

        #[tokio::test]
        async fn the_rollback_test_catches_a_naive_head(s) {
            assert!(
                !rollback_then_append(&s, true).await,
                "the naive head was never caught; the rollback test is too weak"
            );
        }

        #[tokio::test]
        async fn batches_around_the_insert_size_chain_whole(s) {
            batches_chain_whole(&s).await;
        }
    }

    async fn batches_chain_whole(s: &Store) {
        let mut want = 0;
        for n in [
            1,
            INSERT_ROWS,
            INSERT_ROWS + 1,
            INSERT_ROWS + 2,
            2 * INSERT_ROWS + 7,
        ] {
            let evs: Vec<NewEvent> = (0..n).map(ev).collect();
            want += n;
            assert_eq!(s.append_events(&evs).await.expect("append"), want as i64);
            s.append_event(&ev(0)).await.expect("append");
            want += 1;
        }
        assert_eq!(s.append_events(&[]).await.expect("empty"), 0);
        assert!(whole(s, want).await);
    }

    /// Not a test of its own: the body of each appending child process.
    #[tokio::test]
    #[ignore = "run as a child process by the two-process tests"]
    async fn append_child() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let (mode, place) = spec.split_once(':').expect("spec");
        let s = open_at(place).await;
        for i in 0..PER_CHILD {
            append(&s, i, mode == "naive").await.expect("append");
        }
        s.close().await;
    }

    /// The store at `place`: a PostgreSQL URL, else a data dir.
    async fn open_at(place: &str) -> Store {
        let cfg = StorageConfig {
            url: place
                .starts_with("postgres")
                .then(|| crate::config::DatabaseUrl::parse(place).expect("url")),
            ..cfg()
        };
        Store::open(std::path::Path::new(place), &cfg)
            .await
            .expect("open")
    }

    /// Two processes append `PER_CHILD` events each to one fresh database (a data dir's SQLite,
    /// or a PostgreSQL database when `postgres`) at the same time; true when both succeed and
    /// the log is whole. `None`: no PostgreSQL cluster (skipped).
    async fn two_processes(naive: bool, postgres: bool) -> Option<bool> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let place = if postgres {
            crate::test_support::postgres_database().await?
        } else {
            tmp.path().display().to_string()
        };
        let s = open_at(&place).await;
        let spec = format!("{}:{place}", if naive { "naive" } else { "checked" });
        let exe = std::env::current_exe().expect("test binary");
        // The child's test name, derived rather than spelled: a name that matches no test
        // would run nothing and succeed.
        let child = format!(
            "{}::append_child",
            module_path!().split_once("::").expect("crate::module").1
        );
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", &child, "--ignored", "--test-threads=1"])
                    .env(CHILD_ENV, &spec)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let mut ok = true;
        for mut c in children {
            ok &= c.wait().expect("wait").success();
        }
        // Every tenth append of a child is a pair.
        Some(ok && whole(&s, 2 * (PER_CHILD + PER_CHILD / 10)).await)
    }

    #[tokio::test]
    async fn two_processes_appending_at_once_make_one_whole_chain() {
        assert_eq!(two_processes(false, false).await, Some(true));
    }

    #[tokio::test]
    async fn the_two_process_test_catches_a_naive_head() {
        assert_eq!(
            two_processes(true, false).await,
            Some(false),
            "the naive head was never caught; the two-process test is too weak"
        );
    }

    #[tokio::test]
    async fn two_processes_appending_at_once_to_postgres_make_one_whole_chain() {
        assert_ne!(two_processes(false, true).await, Some(false));
    }

    #[tokio::test]
    async fn the_two_process_postgres_test_catches_a_naive_head() {
        assert_ne!(
            two_processes(true, true).await,
            Some(true),
            "the naive head was never caught; the two-process test is too weak"
        );
    }
}
