//! Revocation rotates session keys, against the real store: revoking a member (or re-enrolling
//! it, which revokes its earlier key versions) marks exactly the sessions it is a member of in
//! the current epoch, in the revocation's transaction; the current epoch is accepted until the
//! grace has passed and refused `rotation_required` from its exact edge on; a rotation clears
//! the mark, never wraps to a revoked device, and of two concurrent rotations one wins.

use super::ingest_tests::{enroll, rows};
use crate::config::StorageConfig;
use crate::envelope::enrollment_code_hash;
use crate::store::{
    EnrollOutcome, IngestItem, IngestLimits, IngestVerdict, NewDeviceKey, NewEnrollment, Session,
    Store, StoreError,
};
use crate::util::{new_id, now_ms};

const GRACE: i64 = 5_000;
const LIMITS: IngestLimits = IngestLimits {
    window_ms: 1_000_000_000_000,
    rotation_grace_ms: GRACE,
};

async fn open_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::open(tmp.path(), &StorageConfig::default())
        .await
        .expect("store");
    (tmp, store)
}

/// A new encrypted session at epoch 0 with `members` (the first one wraps the key).
pub(super) async fn session(store: &Store, members: &[&String]) -> String {
    let id = new_id();
    let now = now_ms();
    store
        .create_encrypted_session(
            &Session {
                id: id.clone(),
                name: "rotation".into(),
                kind: happyx_core::vocab::SessionKind::Encrypted,
                status: happyx_core::vocab::SessionStatus::Open,
                task_id: None,
                epoch: 0,
                rotation_required_since: None,
                created_by: "test".into(),
                created_at: now,
                updated_at: now,
            },
            &rows(&id, 0, members),
        )
        .await
        .expect("session");
    id
}

/// An envelope of `sender` as the writer gets it (the signature is checked before, not here).
pub(super) fn item(session: &str, sender: &str, epoch: i64, sequence: i64) -> IngestItem {
    IngestItem {
        v: 1,
        session_id: session.into(),
        sender_device_id: sender.into(),
        key_version: 1,
        epoch,
        sequence,
        created_at: now_ms(),
        nonce: vec![0; 24],
        ciphertext: vec![0; 16],
        signature: vec![0; 64],
        size: 200,
    }
}

async fn since(store: &Store, id: &str) -> Option<i64> {
    store
        .session(id)
        .await
        .expect("read")
        .expect("session")
        .rotation_required_since
}

async fn events(store: &Store, code: &str) -> Vec<crate::store::EventRow> {
    store
        .events_after(0, 10_000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.code == code)
        .collect()
}

#[tokio::test]
async fn revoking_a_member_marks_its_current_sessions_only_in_the_same_transaction() {
    let (_tmp, store) = open_store().await;
    let (a, _) = enroll(&store, 0).await;
    let (b, _) = enroll(&store, 1).await;
    let (c, _) = enroll(&store, 2).await;
    let with_c = session(&store, &[&a, &b, &c]).await;
    let without_c = session(&store, &[&a, &b]).await;
    let rotated_out = session(&store, &[&a, &c]).await;
    store
        .rotate_session(&rotated_out, 0, &rows(&rotated_out, 1, &[&a]), "test")
        .await
        .expect("rotate C out");

    let revoked = store
        .revoke_device(&c, "token:op", Some("lost"))
        .await
        .expect("revoke")
        .expect("device");
    let at = revoked.revoked_at.expect("revoked_at");
    assert_eq!(since(&store, &with_c).await, Some(at));
    assert_eq!(since(&store, &without_c).await, None);
    assert_eq!(since(&store, &rotated_out).await, None);
    let marks = events(&store, "session.rotation_required").await;
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].subject, with_c);
    assert_eq!(marks[0].data["device_id"], c.as_str());
    assert_eq!(marks[0].data["reason"], "device_revoked");
    // The revocation's own event precedes it, in the same transaction (consecutive seqs).
    let revocation = &events(&store, "device.revoked").await[0];
    assert_eq!(marks[0].seq, revocation.seq + 1);

    // Revoking again changes nothing: the grace does not restart.
    store
        .revoke_device(&c, "token:op", None)
        .await
        .expect("revoke again");
    assert_eq!(since(&store, &with_c).await, Some(at));
    assert_eq!(events(&store, "session.rotation_required").await.len(), 1);
}

#[tokio::test]
async fn the_current_epoch_is_refused_from_the_exact_end_of_the_grace() {
    let (_tmp, store) = open_store().await;
    let (a, _) = enroll(&store, 0).await;
    let (b, _) = enroll(&store, 1).await;
    let (c, _) = enroll(&store, 2).await;
    let s = session(&store, &[&a, &b, &c]).await;
    let at = store
        .revoke_device(&c, "token:op", None)
        .await
        .expect("revoke")
        .and_then(|d| d.revoked_at)
        .expect("revoked_at");

    // One millisecond before the end of the grace: accepted, single and batched alike.
    let v = store
        .ingest_batch_at(&[item(&s, &a, 0, 1)], LIMITS, at + GRACE - 1)
        .await
        .expect("ingest");
    assert!(matches!(v[0], IngestVerdict::Accepted { .. }), "{v:?}");
    let v = store
        .ingest_batch_at(
            &[item(&s, &a, 0, 2), item(&s, &b, 0, 1)],
            LIMITS,
            at + GRACE - 1,
        )
        .await
        .expect("ingest");
    assert!(
        v.iter()
            .all(|v| matches!(v, IngestVerdict::Accepted { .. })),
        "{v:?}"
    );
    // At the end of the grace and after it: refused, and nothing stored.
    let before = store.envelope_count().await.expect("count");
    for now in [at + GRACE, at + GRACE + 60_000] {
        let v = store
            .ingest_batch_at(&[item(&s, &a, 0, 3), item(&s, &b, 0, 2)], LIMITS, now)
            .await
            .expect("ingest");
        assert_eq!(
            v,
            vec![IngestVerdict::RotationRequired { current: 0 }; 2],
            "at {now}"
        );
    }
    assert_eq!(store.envelope_count().await.expect("count"), before);
    // The revoked device itself is still `revoked_key`, whatever the grace.
    let v = store
        .ingest_batch_at(&[item(&s, &c, 0, 1)], LIMITS, at)
        .await
        .expect("ingest");
    assert_eq!(v, vec![IngestVerdict::Revoked]);
    let rejected = events(&store, "envelope.rejected").await;
    assert_eq!(
        rejected
            .iter()
            .filter(|e| e.data["code"] == "rotation_required")
            .count(),
        4
    );

    // A survivor rotates: the mark clears, the new epoch is accepted however late, and the old
    // one is now `stale_epoch` (superseded), not `rotation_required`.
    store
        .rotate_session(&s, 0, &rows(&s, 1, &[&a, &b]), "device:a")
        .await
        .expect("rotate");
    assert_eq!(since(&store, &s).await, None);
    let late = at + GRACE + 3_600_000;
    let v = store
        .ingest_batch_at(&[item(&s, &a, 1, 10), item(&s, &b, 0, 10)], LIMITS, late)
        .await
        .expect("ingest");
    assert!(matches!(v[0], IngestVerdict::Accepted { .. }), "{v:?}");
    assert_eq!(v[1], IngestVerdict::StaleEpoch { current: 1 });
}

#[tokio::test]
async fn a_rotation_never_wraps_to_a_revoked_device_and_keeps_the_mark_if_refused() {
    let (_tmp, store) = open_store().await;
    let (a, _) = enroll(&store, 0).await;
    let (b, _) = enroll(&store, 1).await;
    let (c, _) = enroll(&store, 2).await;
    let s = session(&store, &[&a, &b, &c]).await;
    store
        .revoke_device(&c, "token:op", None)
        .await
        .expect("revoke");
    let marked = since(&store, &s).await;
    assert!(marked.is_some());
    // As if the caller's checks ran before the revocation committed.
    let err = store
        .rotate_session(&s, 0, &rows(&s, 1, &[&a, &b, &c]), "device:a")
        .await
        .expect_err("a revoked recipient");
    assert!(matches!(err, StoreError::RecipientRevoked), "{err:?}");
    let after = store.session(&s).await.expect("read").expect("session");
    assert_eq!((after.epoch, after.rotation_required_since), (0, marked));
    assert!(
        store
            .session_members(&s, 1)
            .await
            .expect("members")
            .is_empty()
    );
    assert!(events(&store, "session.rotated").await.is_empty());
}

#[tokio::test]
async fn of_two_concurrent_rotations_exactly_one_wins() {
    let (_tmp, store) = open_store().await;
    let (a, _) = enroll(&store, 0).await;
    let (b, _) = enroll(&store, 1).await;
    let (c, _) = enroll(&store, 2).await;
    for _ in 0..8 {
        let s = session(&store, &[&a, &b, &c]).await;
        let (by_a, by_b) = (rows(&s, 1, &[&a, &b]), rows(&s, 1, &[&b, &a]));
        let (ra, rb) = tokio::join!(
            store.rotate_session(&s, 0, &by_a, "device:a"),
            store.rotate_session(&s, 0, &by_b, "device:b"),
        );
        let wins = [ra.is_ok(), rb.is_ok()];
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{ra:?} {rb:?}");
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(e.is_conflict(), "{e:?}");
            }
        }
        let after = store.session(&s).await.expect("read").expect("session");
        assert_eq!(after.epoch, 1);
        assert_eq!(store.session_members(&s, 1).await.expect("m").len(), 2);
    }
}

#[tokio::test]
async fn re_enrollment_revokes_old_key_versions_and_marks_the_sessions() {
    let (_tmp, store) = open_store().await;
    let (a, _) = enroll(&store, 0).await;
    let (c, _) = enroll(&store, 2).await;
    let s = session(&store, &[&a, &c]).await;
    let code = format!("reenroll-{}", new_id());
    let hash = hex::encode(enrollment_code_hash(&code));
    let now = now_ms();
    store
        .create_enrollment(&NewEnrollment {
            id: new_id(),
            code_hash: hash.clone(),
            kind: "reenroll",
            device_id: Some(c.clone()),
            name: None,
            issued_by: "test".into(),
            expires_at: now + 60_000,
            created_at: now,
        })
        .await
        .expect("code");
    let keys = crate::envelope::DeviceKeys::generate(2).expect("keys");
    let p = keys.public();
    let out = store
        .complete_enrollment(
            &hash,
            &NewDeviceKey {
                key_version: 2,
                signing_public: crate::envelope::b64_encode(&p.signing_public),
                hpke_public: crate::envelope::b64_encode(&p.hpke_public),
                fingerprint: p.fingerprint().to_string(),
            },
            None,
        )
        .await
        .expect("re-enroll");
    assert!(matches!(out, EnrollOutcome::Enrolled { .. }), "{out:?}");
    assert!(since(&store, &s).await.is_some());
    let marks = events(&store, "session.rotation_required").await;
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].data["reason"], "key_revoked");
}

#[tokio::test]
async fn each_envelope_keeps_the_wire_version_it_arrived_in() {
    let (_tmp, store) = open_store().await;
    let (a, _) = enroll(&store, 0).await;
    let s = session(&store, &[&a]).await;
    // The store keeps what it is given: a later wire version is served back as it came,
    // and the first one stays 1.
    let mut later = item(&s, &a, 0, 2);
    later.v = 2;
    let v = store
        .ingest_batch(&[item(&s, &a, 0, 1), later], LIMITS)
        .await
        .expect("ingest");
    assert!(
        v.iter()
            .all(|v| matches!(v, IngestVerdict::Accepted { .. })),
        "{v:?}"
    );
    let stored = store.envelopes_after(&s, 0, 10).await.expect("read");
    let versions: Vec<i64> = stored.iter().map(|e| e.v).collect();
    assert_eq!(versions, [1, 2]);
}
