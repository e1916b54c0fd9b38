//! The hosts that serve this database, and which host owns each run and terminal.
//!
//! Children and PTY holders are processes of the host that started them; every other host
//! answers API calls about them from the database, and forwards to the owner what only the
//! owner can do (see the host's `cluster` module). So each run and terminal row names its
//! owner (`host_id`), and each host has a `hosts` row: where the others reach it
//! (`advertise_url`), its version and its loaded plugins.
//!
//! **Liveness is a lock, not a timestamp.** On PostgreSQL a serving host holds a session-level
//! advisory lock keyed by its id ([`Exclusive::Host`]) on a connection of its own, for as long
//! as it serves. A host that dies, even by kill -9, loses that connection and the server drops
//! the lock; another host reads the lock table (`pg_locks`, joined with `pg_stat_activity` for
//! the claiming connection's application name, so that a sweep holding the lock for a moment
//! does not count) to learn that it is gone, with no heartbeat writes and no clock to trust.
//! The hosts must share a database role (or have `pg_read_all_stats`) to see each other's
//! connections. Two processes cannot serve as one host: the second
//! finds the lock held. On SQLite the one serving host is the only host.
//!
//! **What happens to a dead host's work**: its runs cannot finish (their children died with
//! it, or have no one to report to), so a surviving host marks them `lost`
//! ([`Store::mark_runs_of_gone_hosts_lost`]) while holding the dead host's lock, so the owner
//! cannot come back mid-way. Its terminals' holders outlive it and wait: the owner adopts
//! them when it starts again, as a single host does after a restart.

use serde_json::json;

use crate::engine::db;
use crate::exclusive::{Exclusive, ExclusiveGuard};
use crate::rows::Columns;

use happyx_core::util::now_ms;

use super::{NewEvent, Result, Store, StoreError, append_event};

/// A host as its `hosts` row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// Stable per data dir: derived from the host's signing key.
    pub id: String,
    /// Where the other hosts reach this one (`http://10.0.0.5:7878`).
    pub advertise_url: String,
    pub version: String,
    pub started_at: i64,
    /// Loaded plugins: kind → SHA-256 (a JSON object).
    pub plugins: serde_json::Value,
    /// When `plugins` was last written (start or reload), Unix ms.
    pub plugins_at: i64,
}

fn host_from_row(r: &impl Columns) -> Result<HostRecord> {
    let plugins: String = r.col("plugins")?;
    Ok(HostRecord {
        id: r.col("id")?,
        advertise_url: r.col("advertise_url")?,
        version: r.col("version")?,
        started_at: r.col("started_at")?,
        plugins: serde_json::from_str(&plugins)
            .map_err(|_| StoreError::Corrupt("hosts.plugins"))?,
        plugins_at: r.col("plugins_at")?,
    })
}

/// The `application_name` of the connection holding host `id`'s claim.
fn application_name(id: &str) -> String {
    format!("happyx-host:{id}")
}

/// How often, and how far apart, a starting host tries to claim its id.
const CLAIM_ATTEMPTS: u32 = 10;
const CLAIM_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

const HOST_COLUMNS: &str = "id, advertise_url, version, started_at, plugins, plugins_at";

/// The notification channel that tells every host a plugin reload happened (PostgreSQL
/// `LISTEN`/`NOTIFY`; the payload is the reloading host's id).
pub const PLUGINS_CHANNEL: &str = "happyx_plugins";

impl Store {
    /// This store as host `id`'s: the runs and terminals it creates are owned by `id`, and
    /// unfinished work at start means `id`'s.
    pub fn for_host(mut self, id: &str) -> Store {
        self.host = Some(id.into());
        self
    }

    /// The host this store acts for, if any.
    pub fn host_id(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Claims the host's id for this process (see the module docs): `None` when another live
    /// process serves as this host. Its row is written with the start's deployment record
    /// ([`Store::record_deployment`]).
    /// Another host's sweep holds the lock for a moment (one transaction) while it marks a gone
    /// host's runs, so a host restarting just then tries again for a few seconds; a process
    /// that really serves as this host holds it for good.
    pub async fn claim_host(&self, id: &str) -> Result<Option<ExclusiveGuard>> {
        let name = application_name(id);
        for attempt in 0..CLAIM_ATTEMPTS {
            let named = self.try_exclusive_as(Exclusive::host(id), Some(&name));
            if let Some(guard) = named.await? {
                return Ok(Some(guard));
            }
            if attempt + 1 < CLAIM_ATTEMPTS {
                tokio::time::sleep(CLAIM_PAUSE).await;
            }
        }
        Ok(None)
    }

    /// Writes (or rewrites) host `host`'s row, inside the start's transaction.
    pub(crate) async fn upsert_host(tx: &mut crate::Tx, host: &HostRecord) -> Result<()> {
        db!(tx, dbc => sqlx::query(
            "INSERT INTO hosts (id, advertise_url, version, started_at, plugins, plugins_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET advertise_url = excluded.advertise_url, \
             version = excluded.version, started_at = excluded.started_at, \
             plugins = excluded.plugins, plugins_at = excluded.plugins_at",
        )
        .bind(&host.id)
        .bind(&host.advertise_url)
        .bind(&host.version)
        .bind(host.started_at)
        .bind(host.plugins.to_string())
        .bind(host.plugins_at)
        .execute(dbc)
        .await?.rows_affected());
        Ok(())
    }

    /// Records host `id`'s plugins after a reload with the reload's event, in one transaction;
    /// with `announce`, tells the other hosts (on PostgreSQL, `NOTIFY` on
    /// [`PLUGINS_CHANNEL`], delivered when the transaction commits).
    pub async fn record_plugin_reload(
        &self,
        id: &str,
        plugins: &serde_json::Value,
        event: &NewEvent<'_>,
        announce: bool,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query("UPDATE hosts SET plugins = $1, plugins_at = $2 WHERE id = $3")
            .bind(plugins.to_string())
            .bind(now_ms())
            .bind(id)
            .execute(dbc)
            .await?.rows_affected());
        append_event(&mut tx, event).await?;
        if announce && let crate::engine::Tx::Postgres(pg) = &mut tx {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PLUGINS_CHANNEL)
                .bind(id)
                .execute(&mut **pg)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every registered host, by id.
    pub async fn hosts(&self) -> Result<Vec<HostRecord>> {
        let rows = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLUMNS} FROM hosts ORDER BY id"
        )))
        .fetch_all(dbc)
        .await?);
        rows.iter().map(host_from_row).collect()
    }

    /// Host `id`'s row, if it ever registered.
    pub async fn host(&self, id: &str) -> Result<Option<HostRecord>> {
        let row = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(dbc)
        .await?);
        row.as_ref().map(host_from_row).transpose()
    }

    /// Whether host `id` is serving now: this store's own host always is; on PostgreSQL,
    /// another host is while it holds its lock. On SQLite no other host exists.
    pub async fn host_alive(&self, id: &str) -> Result<bool> {
        if self.host_id() == Some(id) {
            return Ok(true);
        }
        if !self.is_shared() {
            return Ok(false);
        }
        let key = Exclusive::host_key(id);
        // Read from the lock table rather than by taking the lock: no connection of its own,
        // and never in the way of the host starting. Only the host's own claim counts (its
        // connection carries the host's application name), not a sweep holding the lock for a
        // moment. A bigint advisory key shows as its high and low halves, with objsubid 1.
        let (held,): (bool,) = db!(read self, dbc => sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid::text::bigint = $1 AND l.objid::text::bigint = $2 AND l.objsubid = 1 \
             AND a.application_name = $3)",
        )
        .bind(((key as u64) >> 32) as i64)
        .bind(((key as u64) & 0xffff_ffff) as i64)
        .bind(application_name(id))
        .fetch_one(dbc)
        .await?);
        Ok(held)
    }

    /// Marks `lost` the unfinished runs of every other host that is no longer serving (see
    /// the module docs), each with a `run.lost` event naming the gone host. Returns how many.
    pub async fn mark_runs_of_gone_hosts_lost(&self) -> Result<u64> {
        if !self.is_shared() {
            return Ok(0);
        }
        let owners: Vec<(String,)> = db!(read self, dbc => sqlx::query_as(
            "SELECT DISTINCT host_id FROM agent_runs \
             WHERE status IN ('queued', 'running') AND host_id IS NOT NULL AND host_id <> $1",
        )
        .bind(self.host_id().unwrap_or(""))
        .fetch_all(dbc)
        .await?);
        let mut lost = 0;
        for (owner,) in owners {
            // Held while the runs are marked: the owner cannot start again meanwhile.
            let Some(guard) = self.try_exclusive(Exclusive::host(&owner)).await? else {
                continue;
            };
            let marked = self
                .mark_unfinished_runs_lost_of(Some(&owner), "host_gone")
                .await;
            guard.release().await;
            lost += marked?;
        }
        Ok(lost)
    }

    /// Marks `lost` the queued and running runs of `owner` (and, for this store's own host,
    /// those written before owners were recorded), each with its `run.lost` event.
    pub(crate) async fn mark_unfinished_runs_lost_of(
        &self,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        let own = owner.is_some() && owner == self.host_id();
        let ids: Vec<(String,)> = db!(tx, dbc => sqlx::query_as(
            "SELECT id FROM agent_runs WHERE status IN ('queued', 'running') \
             AND (host_id = $1 OR ($2 AND host_id IS NULL) OR $1 IS NULL) ORDER BY id",
        )
        .bind(owner)
        .bind(own || owner.is_none())
        .fetch_all(dbc)
        .await?);
        let now = now_ms();
        for (id,) in &ids {
            db!(tx, dbc => sqlx::query(
                "UPDATE agent_runs SET status = 'lost', finished_at = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(dbc)
            .await?.rows_affected());
            let data = match owner {
                Some(h) if !own => json!({ "reason": reason, "host_id": h }),
                _ => json!({ "reason": reason }),
            };
            append_event(&mut tx, &NewEvent::new("run.lost", "host", id, data)).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str) -> crate::Run {
        crate::Run::queued(
            id.into(),
            "echo".into(),
            happyx_core::vocab::Risk::Low,
            None,
            "token:agent".into(),
            now_ms(),
        )
    }

    /// Two hosts' stores on one database: a host is alive while it holds its claim, a second
    /// claim of the same id is refused, and once the host is gone the other marks its
    /// unfinished runs lost, and only its own.
    #[tokio::test]
    async fn a_gone_hosts_runs_are_marked_lost_by_another_and_only_its_own() {
        let Some(cfg) = crate::test_support::postgres_storage().await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Store::open(dir.path(), &cfg)
            .await
            .expect("a")
            .for_host("h-a");
        let b = Store::open(dir.path(), &cfg)
            .await
            .expect("b")
            .for_host("h-b");
        let claim_a = a.claim_host("h-a").await.expect("claim").expect("free");
        let _claim_b = b.claim_host("h-b").await.expect("claim").expect("free");
        assert!(b.host_alive("h-a").await.expect("alive"));
        assert!(!b.host_alive("h-nobody").await.expect("alive"));
        for (store, id) in [(&a, "run-a"), (&b, "run-b")] {
            store
                .create_run(&run(id), None, "h")
                .await
                .expect("create run");
        }
        // While A serves, B's sweep leaves its run alone.
        assert_eq!(b.mark_runs_of_gone_hosts_lost().await.expect("sweep"), 0);
        claim_a.release().await;
        assert!(!b.host_alive("h-a").await.expect("alive"));
        // Someone else holding A's lock (a sweep) does not make A alive.
        let sweep = b.try_exclusive(Exclusive::host("h-a")).await.expect("try");
        assert!(sweep.is_some());
        assert!(!b.host_alive("h-a").await.expect("alive"));
        sweep.expect("held").release().await;
        assert_eq!(b.mark_runs_of_gone_hosts_lost().await.expect("sweep"), 1);
        let status = |id: &'static str| {
            let b = b.clone();
            async move { b.run(id).await.expect("read").expect("exists").status }
        };
        assert_eq!(status("run-a").await, happyx_core::vocab::RunStatus::Lost);
        assert_eq!(status("run-b").await, happyx_core::vocab::RunStatus::Queued);
        // A again: its id is free to claim.
        assert!(a.claim_host("h-a").await.expect("claim").is_some());
    }
}
