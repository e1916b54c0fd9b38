//! One `deployments` row per host start, with the host's `hosts` row and its `host.started`
//! event in the same transaction.

use crate::engine::db;
use serde_json::json;

use super::{Deployment, HostRecord, NewEvent, Result, Store, append_event};

impl Store {
    /// Records a host start: its deployment, the host's row (where the other hosts reach it,
    /// see `hosts`) and one `host.started` event.
    pub async fn record_deployment(&self, d: &Deployment, host: &HostRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        Store::upsert_host(&mut tx, host).await?;
        db!(tx, dbc => sqlx::query(
            "INSERT INTO deployments (id, started_at, version, schema_version, config_hash, plugin_hashes, boot_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&d.id)
        .bind(d.started_at)
        .bind(&d.version)
        .bind(d.schema_version)
        .bind(&d.config_hash)
        .bind(d.plugin_hashes.to_string())
        .bind(&d.boot_id)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "host.started",
            "host",
            &d.id,
            json!({
                "version": d.version,
                "config_hash": d.config_hash,
                "plugins": d.plugin_hashes,
                "host_id": host.id,
                "advertise_url": host.advertise_url,
            }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn deployment_count(&self) -> Result<i64> {
        let (n,): (i64,) = db!(read self, dbc => sqlx::query_as("SELECT COUNT(*) FROM deployments")
            .fetch_one(dbc)
            .await?);
        Ok(n)
    }
}
