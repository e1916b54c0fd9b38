//! Signed checkpoints of the event chain (`checkpoints`, see [`crate::checkpoint`]): taking
//! one when the head moved, keeping only the newest, and the reads that check one.

use crate::engine::db;
use crate::rows::Columns;

use super::{Result, Store, StoreError};
use crate::audit;
use crate::checkpoint::{Checkpoint, VERSION};
use crate::signing::HostKey;
use happyx_core::util::now_ms;

fn from_row(r: &impl Columns) -> Result<Checkpoint> {
    Ok(Checkpoint {
        version: VERSION,
        seq: r.col("seq")?,
        head_sha256: r.col("head_hash")?,
        at: r.col("at")?,
        public_key: r.col("public_key")?,
        signature: r.col("signature")?,
    })
}

impl Store {
    /// Signs the chain's head with `key` and stores the checkpoint, unless the head has not
    /// moved past the newest checkpoint (then `None`; also for an empty log). Keeps only the
    /// newest `keep` checkpoints. One write transaction, so the head cannot move meanwhile.
    pub async fn take_checkpoint(&self, key: &HostKey, keep: u32) -> Result<Option<Checkpoint>> {
        let mut tx = self.begin().await?;
        let head: Option<(i64, Option<String>)> = db!(tx, dbc => sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(dbc)
                .await?);
        let Some((seq, hash)) = head else {
            return Ok(None);
        };
        let (newest,): (Option<i64>,) = db!(tx, dbc => sqlx::query_as("SELECT MAX(seq) FROM checkpoints")
            .fetch_one(dbc)
            .await?);
        if let Some(newest) = newest
            && seq <= newest
        {
            if seq < newest {
                tracing::warn!(
                    head_seq = seq,
                    checkpoint_seq = newest,
                    "the event log ends before the newest signed checkpoint; not signing"
                );
            }
            return Ok(None);
        }
        let Some(cp) = hash
            .as_deref()
            .and_then(|h| Checkpoint::sign(key, seq, h, now_ms()))
        else {
            return Err(StoreError::Corrupt("events.hash"));
        };
        db!(tx, dbc => sqlx::query(
            "INSERT INTO checkpoints (seq, head_hash, at, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(cp.seq)
        .bind(&cp.head_sha256)
        .bind(cp.at)
        .bind(&cp.public_key)
        .bind(&cp.signature)
        .execute(dbc)
        .await?.rows_affected());
        db!(tx, dbc => sqlx::query(
            "DELETE FROM checkpoints WHERE seq NOT IN \
             (SELECT seq FROM checkpoints ORDER BY seq DESC LIMIT $1)",
        )
        .bind(i64::from(keep))
        .execute(dbc)
        .await?.rows_affected());
        tx.commit().await?;
        Ok(Some(cp))
    }

    /// The newest stored checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let row = db!(rows read self, dbc => sqlx::query(
            "SELECT seq, head_hash, at, public_key, signature FROM checkpoints \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(dbc)
        .await?);
        row.as_ref().map(from_row).transpose()
    }

    /// Stored checkpoints with `seq >= from_seq`, oldest first, at most `limit`.
    pub async fn checkpoints_from(&self, from_seq: i64, limit: i64) -> Result<Vec<Checkpoint>> {
        let rows = db!(rows read self, dbc => sqlx::query(
            "SELECT seq, head_hash, at, public_key, signature FROM checkpoints \
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(from_seq)
        .bind(limit)
        .fetch_all(dbc)
        .await?);
        rows.iter().map(from_row).collect()
    }

    /// The stored chain hash of the event at `seq`, if that event exists.
    pub async fn event_hash_at(&self, seq: i64) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> = db!(read self, dbc => sqlx::query_as("SELECT hash FROM events WHERE seq = $1")
                .bind(seq)
                .fetch_optional(dbc)
                .await?);
        Ok(row
            .and_then(|(h,)| h)
            .filter(|h| audit::parse_hash(h).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewEvent;

    crate::testing::every_engine! {
        #[tokio::test]
        async fn a_checkpoint_only_when_the_head_moved_and_only_the_newest_kept(store) {
            checkpoints_follow_the_head(&store).await;
        }
    }

    async fn checkpoints_follow_the_head(store: &Store) {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = HostKey::load_or_create(tmp.path()).expect("key");
        let ev = || NewEvent::new("test.event", "t", "s", serde_json::json!({}));
        // An empty log has no head to sign.
        let n: (i64,) = db!(read store, dbc => sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(dbc)
            .await
            .expect("count"));
        if n.0 == 0 {
            assert!(store.take_checkpoint(&key, 2).await.expect("cp").is_none());
        }
        let mut seqs = Vec::new();
        for _ in 0..3 {
            let seq = store.append_event(&ev()).await.expect("append");
            let cp = store
                .take_checkpoint(&key, 2)
                .await
                .expect("cp")
                .expect("moved");
            assert_eq!(cp.seq, seq);
            assert_eq!(
                Some(cp.head_sha256.clone()),
                store.event_hash_at(seq).await.expect("hash")
            );
            cp.verify(&[key.public()]).expect("signed by the host key");
            // Not again while the head stays.
            assert!(store.take_checkpoint(&key, 2).await.expect("cp").is_none());
            seqs.push(seq);
        }
        // keep = 2: exactly the newest two remain.
        let kept: Vec<i64> = store
            .checkpoints_from(0, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(kept, seqs[1..].to_vec());
        assert_eq!(
            store
                .latest_checkpoint()
                .await
                .expect("latest")
                .map(|c| c.seq),
            seqs.last().copied()
        );
    }
}
