//! Devices, their versioned public keys, enrollment codes and revocation.
//!
//! Only public keys (base64) and hashes of enrollment codes are stored here.

use crate::engine::db;
use crate::rows::Columns;
use serde_json::json;

use super::envelopes::require_rotation;
use super::{NewEvent, Result, Store, append_event};
use crate::rows::vocab_column;
use happyx_core::util::now_ms;
use happyx_core::vocab::DeviceStatus;

/// One key version of a device (public halves only).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceKeyRow {
    pub device_id: String,
    pub key_version: i64,
    /// Ed25519 public key, canonical base64.
    pub signing_public: String,
    /// X25519 public key, canonical base64.
    pub hpke_public: String,
    pub fingerprint: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A device and its key versions (metadata for operators).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub id: String,
    pub name: Option<String>,
    pub status: DeviceStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub keys: Vec<DeviceKeyRow>,
}

/// A key version together with its device's status.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    pub key: DeviceKeyRow,
    pub device_status: DeviceStatus,
}

impl KeyState {
    /// Whether both the device and this key version are live.
    pub fn is_live(&self) -> bool {
        self.device_status == DeviceStatus::Active && self.key.revoked_at.is_none()
    }
}

/// An enrollment code to store (its hash only).
#[derive(Clone)]
pub struct NewEnrollment {
    pub id: String,
    /// Hex of the domain-separated SHA-256 of the code.
    pub code_hash: String,
    /// `enroll` or `reenroll`.
    pub kind: &'static str,
    pub device_id: Option<String>,
    pub name: Option<String>,
    pub issued_by: String,
    pub expires_at: i64,
    pub created_at: i64,
}

happyx_core::debug_fields!(NewEnrollment {
    id,
    kind,
    device_id,
    expires_at
});

/// A new key version to record at enrollment.
#[derive(Debug, Clone)]
pub struct NewDeviceKey {
    pub key_version: i64,
    pub signing_public: String,
    pub hpke_public: String,
    pub fingerprint: String,
}

/// What claiming an enrollment code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// The device (new, or re-enrolled) now has this key version.
    Enrolled { device_id: String, key_version: i64 },
    /// The code is unknown, used or expired (one answer for all three).
    InvalidCode,
    /// A re-enrollment must present a key version above every existing one.
    KeyVersionTooLow { minimum: i64 },
    /// A new device's keys must be version 1.
    KeyVersionNotOne,
}

fn key_from_row(r: &impl Columns) -> Result<DeviceKeyRow> {
    Ok(DeviceKeyRow {
        device_id: r.col("device_id")?,
        key_version: r.col("key_version")?,
        signing_public: r.col("signing_public")?,
        hpke_public: r.col("hpke_public")?,
        fingerprint: r.col("fingerprint")?,
        created_at: r.col("created_at")?,
        revoked_at: r.col("revoked_at")?,
    })
}

const KEY_COLS: &str = "k.device_id, k.key_version, k.signing_public, k.hpke_public, k.fingerprint, \
                        k.created_at, k.revoked_at";

impl Store {
    /// Stores an enrollment code's hash and its `enrollment.created` event.
    pub async fn create_enrollment(&self, e: &NewEnrollment) -> Result<()> {
        let mut tx = self.begin().await?;
        db!(tx, dbc => sqlx::query(
            "INSERT INTO enrollments (id, code_hash, kind, device_id, name, issued_by, expires_at, used_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)",
        )
        .bind(&e.id)
        .bind(&e.code_hash)
        .bind(e.kind)
        .bind(&e.device_id)
        .bind(&e.name)
        .bind(&e.issued_by)
        .bind(e.expires_at)
        .bind(e.created_at)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            "enrollment.created",
            &e.issued_by,
            &e.id,
            json!({ "kind": e.kind, "device_id": e.device_id, "expires_at": e.expires_at }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims the code (single use) and records the device's new key version, in one
    /// transaction. Nothing changes unless the outcome is `Enrolled`.
    pub async fn complete_enrollment(
        &self,
        code_hash: &str,
        key: &NewDeviceKey,
        name: Option<&str>,
    ) -> Result<EnrollOutcome> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let claimed = db!(rows tx, dbc => sqlx::query(
            "UPDATE enrollments SET used_at = $1 \
             WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING id, kind, device_id, name",
        )
        .bind(now)
        .bind(code_hash)
        .bind(now)
        .fetch_optional(dbc)
        .await?);
        let Some(row) = claimed else {
            return Ok(EnrollOutcome::InvalidCode);
        };
        let enrollment_id: String = row.col("id")?;
        let kind: String = row.col("kind")?;
        let target: Option<String> = row.col("device_id")?;
        let issued_name: Option<String> = row.col("name")?;
        let (device_id, code) = match (kind.as_str(), target) {
            ("reenroll", Some(device_id)) => {
                let (max,): (Option<i64>,) = db!(tx, dbc => sqlx::query_as("SELECT MAX(key_version) FROM device_keys WHERE device_id = $1")
                        .bind(&device_id)
                        .fetch_one(dbc)
                        .await?);
                let max = max.unwrap_or(0);
                if key.key_version <= max {
                    return Ok(EnrollOutcome::KeyVersionTooLow { minimum: max + 1 });
                }
                db!(tx, dbc => sqlx::query(
                    "UPDATE device_keys SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&device_id)
                .execute(dbc)
                .await?.rows_affected());
                // Its earlier key versions hold the current epochs' keys of its sessions.
                require_rotation(&mut tx, &device_id, &device_id, "key_revoked", now).await?;
                db!(tx, dbc => sqlx::query(
                    "UPDATE devices SET status = 'active', updated_at = $1, revoked_at = NULL, \
                     revoked_by = NULL, revoke_reason = NULL WHERE id = $2",
                )
                .bind(now)
                .bind(&device_id)
                .execute(dbc)
                .await?.rows_affected());
                (device_id, "device.reenrolled")
            }
            _ => {
                if key.key_version != 1 {
                    return Ok(EnrollOutcome::KeyVersionNotOne);
                }
                let device_id = happyx_core::util::new_id();
                db!(tx, dbc => sqlx::query(
                    "INSERT INTO devices (id, name, status, created_at, updated_at) VALUES ($1, $2, 'active', $3, $4)",
                )
                .bind(&device_id)
                .bind(name.map(str::to_owned).or(issued_name))
                .bind(now)
                .bind(now)
                .execute(dbc)
                .await?.rows_affected());
                (device_id, "device.enrolled")
            }
        };
        db!(tx, dbc => sqlx::query(
            "INSERT INTO device_keys (device_id, key_version, signing_public, hpke_public, fingerprint, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&device_id)
        .bind(key.key_version)
        .bind(&key.signing_public)
        .bind(&key.hpke_public)
        .bind(&key.fingerprint)
        .bind(now)
        .execute(dbc)
        .await?.rows_affected());
        let ev = NewEvent::new(
            code,
            &device_id,
            &device_id,
            json!({ "enrollment_id": enrollment_id, "key_version": key.key_version, "fingerprint": key.fingerprint }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(EnrollOutcome::Enrolled {
            device_id,
            key_version: key.key_version,
        })
    }

    async fn device_keys_of(&self, device_id: &str) -> Result<Vec<DeviceKeyRow>> {
        let q = format!(
            "SELECT {KEY_COLS} FROM device_keys k WHERE k.device_id = $1 ORDER BY k.key_version"
        );
        let rows = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(device_id)
            .fetch_all(dbc)
            .await?);
        rows.iter().map(key_from_row).collect()
    }

    fn device_from_row(r: &impl Columns, keys: Vec<DeviceKeyRow>) -> Result<DeviceRow> {
        Ok(DeviceRow {
            id: r.col("id")?,
            name: r.col("name")?,
            status: vocab_column(r, "status", "devices.status")?,
            created_at: r.col("created_at")?,
            updated_at: r.col("updated_at")?,
            revoked_at: r.col("revoked_at")?,
            revoked_by: r.col("revoked_by")?,
            revoke_reason: r.col("revoke_reason")?,
            keys,
        })
    }

    /// One device with its key versions.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>> {
        let row = db!(rows read self, dbc => sqlx::query("SELECT * FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(dbc)
            .await?);
        match row {
            None => Ok(None),
            Some(r) => {
                let keys = self.device_keys_of(id).await?;
                Self::device_from_row(&r, keys).map(Some)
            }
        }
    }

    /// Every device, oldest first, with its key versions.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>> {
        let rows = db!(rows read self, dbc => sqlx::query("SELECT * FROM devices ORDER BY created_at, id")
            .fetch_all(dbc)
            .await?);
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.col("id")?;
            let keys = self.device_keys_of(&id).await?;
            out.push(Self::device_from_row(r, keys)?);
        }
        Ok(out)
    }

    /// One key version and its device's status.
    pub async fn key_state(&self, device_id: &str, key_version: i64) -> Result<Option<KeyState>> {
        let q = format!(
            "SELECT {KEY_COLS}, d.status AS device_status FROM device_keys k \
             JOIN devices d ON d.id = k.device_id WHERE k.device_id = $1 AND k.key_version = $2"
        );
        let row = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(device_id)
            .bind(key_version)
            .fetch_optional(dbc)
            .await?);
        row.map(|r| {
            Ok(KeyState {
                key: key_from_row(&r)?,
                device_status: vocab_column(&r, "device_status", "devices.status")?,
            })
        })
        .transpose()
    }

    /// The newest live key of an active device.
    pub async fn live_key(&self, device_id: &str) -> Result<Option<DeviceKeyRow>> {
        let q = format!(
            "SELECT {KEY_COLS} FROM device_keys k JOIN devices d ON d.id = k.device_id \
             WHERE k.device_id = $1 AND k.revoked_at IS NULL AND d.status = 'active' \
             ORDER BY k.key_version DESC LIMIT 1"
        );
        let row = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(device_id)
            .fetch_optional(dbc)
            .await?);
        row.as_ref().map(key_from_row).transpose()
    }

    /// Revokes a device and all its key versions (who, when, why) with a `device.revoked`
    /// event, and marks every encrypted session it is a member of in the current epoch as
    /// owing a rotation (`session.rotation_required` events), all in one transaction.
    /// Revoking a revoked device changes nothing. `None` if there is no such device.
    pub async fn revoke_device(
        &self,
        id: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Option<DeviceRow>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let changed = db!(tx, dbc => sqlx::query(
            "UPDATE devices SET status = 'revoked', updated_at = $1, revoked_at = $2, revoked_by = $3, \
             revoke_reason = $4 WHERE id = $5 AND status = 'active'",
        )
        .bind(now)
        .bind(now)
        .bind(actor)
        .bind(reason)
        .bind(id)
        .execute(dbc)
        .await?.rows_affected());
        if changed == 1 {
            let keys = db!(tx, dbc => sqlx::query(
                "UPDATE device_keys SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(dbc)
            .await?.rows_affected());
            let ev = NewEvent::new(
                "device.revoked",
                actor,
                id,
                json!({ "keys_revoked": keys, "reason": reason }),
            );
            append_event(&mut tx, &ev).await?;
            require_rotation(&mut tx, id, actor, "device_revoked", now).await?;
        }
        tx.commit().await?;
        self.device(id).await
    }
}
