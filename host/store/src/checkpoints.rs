//! Signed checkpoints of the event chain (`checkpoints`, see [`crate::checkpoint`]): taking
//! one when the head moved, keeping only the newest, and the reads that check one.

use sqlx::Row;

use super::{Result, Store, StoreError};
use crate::audit;
use crate::checkpoint::{Checkpoint, VERSION};
use crate::signing::HostKey;
use happyx_core::util::now_ms;

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Checkpoint> {
    Ok(Checkpoint {
        version: VERSION,
        seq: r.try_get("seq")?,
        head_sha256: r.try_get("head_hash")?,
        at: r.try_get("at")?,
        public_key: r.try_get("public_key")?,
        signature: r.try_get("signature")?,
    })
}

impl Store {
    /// Signs the chain's head with `key` and stores the checkpoint, unless the head has not
    /// moved past the newest checkpoint (then `None`; also for an empty log). Keeps only the
    /// newest `keep` checkpoints. One write transaction, so the head cannot move meanwhile.
    pub async fn take_checkpoint(&self, key: &HostKey, keep: u32) -> Result<Option<Checkpoint>> {
        let mut tx = self.begin().await?;
        let head: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let Some((seq, hash)) = head else {
            return Ok(None);
        };
        let (newest,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM checkpoints")
            .fetch_one(&mut *tx)
            .await?;
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
        sqlx::query(
            "INSERT INTO checkpoints (seq, head_hash, at, public_key, signature) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(cp.seq)
        .bind(&cp.head_sha256)
        .bind(cp.at)
        .bind(&cp.public_key)
        .bind(&cp.signature)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM checkpoints WHERE seq NOT IN \
             (SELECT seq FROM checkpoints ORDER BY seq DESC LIMIT ?)",
        )
        .bind(i64::from(keep))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(cp))
    }

    /// The newest stored checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(
            "SELECT seq, head_hash, at, public_key, signature FROM checkpoints \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Stored checkpoints with `seq >= from_seq`, oldest first, at most `limit`.
    pub async fn checkpoints_from(&self, from_seq: i64, limit: i64) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT seq, head_hash, at, public_key, signature FROM checkpoints \
             WHERE seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(from_seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The stored chain hash of the event at `seq`, if that event exists.
    pub async fn event_hash_at(&self, seq: i64) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT hash FROM events WHERE seq = ?")
                .bind(seq)
                .fetch_optional(&self.read)
                .await?;
        Ok(row
            .and_then(|(h,)| h)
            .filter(|h| audit::parse_hash(h).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewEvent;

    #[tokio::test]
    async fn a_checkpoint_only_when_the_head_moved_and_only_the_newest_kept() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path(), &Default::default())
            .await
            .expect("open");
        let key = HostKey::load_or_create(tmp.path()).expect("key");
        let ev = || NewEvent::new("test.event", "t", "s", serde_json::json!({}));
        // An empty log has no head to sign.
        let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(&store.read)
            .await
            .expect("count");
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
