//! Property test of the ingest path against a reference model: random sequences of send,
//! replay, reorder, burst, revoke, rotate and restart, in-process against the real store and the
//! group-commit writer (with no rotation grace, so a member's revocation makes the epoch owe a
//! rotation at once), each op's envelopes posted one by one or as one batch request. Every
//! verdict must match the model (a batch is judged as its envelopes posted in order), and the
//! stored count must equal what the model accepted (at most once, across restarts).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;

use super::ingest::Ingestor;
use super::protocol::envelope_batch_body;
use crate::config::StorageConfig;
use crate::envelope::{ContentKey, DeviceKeys, ENVELOPE_VERSION, EnvelopeHeader, seal};
use crate::metrics::Metrics;
use crate::store::{Store, WrappedKeyRow};
use crate::util::now_ms;

const DEVICES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Replay(usize),
    Reorder(usize),
    /// Consecutive new sequences of one sender, the last one repeated.
    Burst(usize, u64),
    Revoke(usize),
    Rotate,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..DEVICES).prop_map(Op::Send),
        4 => any::<usize>().prop_map(Op::Replay),
        2 => (0..DEVICES).prop_map(Op::Reorder),
        2 => ((0..DEVICES), 1..6u64).prop_map(|(s, n)| Op::Burst(s, n)),
        1 => (0..DEVICES).prop_map(Op::Revoke),
        1 => Just(Op::Rotate),
        1 => Just(Op::Restart),
    ]
}

struct Model {
    cursor: [u64; DEVICES],
    next: [u64; DEVICES],
    revoked: [bool; DEVICES],
    /// Members of the current epoch.
    members: [bool; DEVICES],
    /// A member of the current epoch was revoked since the last rotation (the ingestor runs
    /// with no grace, so the epoch is refused at once).
    owes_rotation: bool,
    epoch: u64,
    accepted: i64,
    /// (wire, sender, epoch, sequence) of everything crafted.
    sent: Vec<(Vec<u8>, usize, u64, u64)>,
}

impl Model {
    fn expect(&self, sender: usize, epoch: u64, seq: u64) -> &'static str {
        if self.revoked[sender] {
            "revoked_key"
        } else if epoch != self.epoch {
            "stale_epoch"
        } else if self.owes_rotation {
            "rotation_required"
        } else if seq <= self.cursor[sender] {
            "replayed"
        } else {
            "accepted"
        }
    }

    fn apply(&mut self, sender: usize, seq: u64, verdict: &str) {
        if verdict == "accepted" {
            self.cursor[sender] = seq;
            self.accepted += 1;
        }
    }
}

pub(super) async fn enroll(store: &Store, i: usize) -> (String, DeviceKeys) {
    let keys = DeviceKeys::generate(1).expect("keys");
    let name = format!("prop-{i}");
    let enrolled = super::provision(store, &keys.public(), Some(&name), "test")
        .await
        .expect("enroll");
    (enrolled.device_id, keys)
}

pub(super) fn rows(session: &str, epoch: i64, members: &[&String]) -> Vec<WrappedKeyRow> {
    members
        .iter()
        .map(|d| WrappedKeyRow {
            session_id: session.into(),
            epoch,
            device_id: (*d).clone(),
            key_version: 1,
            sender_device_id: members[0].clone(),
            sender_key_version: 1,
            enc: B64.encode([1u8; 32]),
            ciphertext: B64.encode([2u8; 48]),
        })
        .collect()
}

/// Posts `posts` one by one, or as one batch request; returns each verdict's code.
async fn post(
    ingestor: &Ingestor,
    session: &str,
    posts: &[(Vec<u8>, usize, u64, u64)],
    batched: bool,
) -> Vec<&'static str> {
    if !batched {
        let mut got = Vec::new();
        for (wire, ..) in posts {
            got.push(match ingestor.ingest(session, wire).await {
                Ok(_) => "accepted",
                Err(e) => e.code(),
            });
        }
        return got;
    }
    let wires: Vec<&[u8]> = posts.iter().map(|(w, ..)| w.as_slice()).collect();
    let body = envelope_batch_body(&wires);
    ingestor
        .ingest_batch(session, body.into())
        .await
        .expect("batch taken")
        .into_iter()
        .map(|r| match r {
            Ok(_) => "accepted",
            Err(e) => e.code(),
        })
        .collect()
}

/// The storage of a test on SQLite (a temporary data dir), or on a fresh PostgreSQL database
/// when `postgres`; `None` (skipped) without a test cluster.
async fn storage(postgres: bool) -> Option<StorageConfig> {
    if postgres {
        happyx_store::test_support::postgres_storage().await
    } else {
        Some(StorageConfig::default())
    }
}

/// Runs `ops` against a store on SQLite, or on a fresh PostgreSQL database when `postgres`
/// (skipped without a test cluster).
async fn run(ops: Vec<(Op, bool)>, postgres: bool) {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(cfg) = storage(postgres).await else {
        return;
    };
    let mut store = Store::open(tmp.path(), &cfg).await.expect("store");
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        devices.push(enroll(&store, i).await);
    }
    let ids: Vec<&String> = devices.iter().map(|(d, _)| d).collect();
    let session = super::rotation_tests::session(&store, &ids).await;
    let key = ContentKey::generate().expect("key");
    let metrics = Arc::new(Metrics::default());
    let mut ingestor =
        Ingestor::start_with(store.clone(), metrics.clone(), 300_000, 0).expect("ingestor");
    let mut m = Model {
        cursor: [0; DEVICES],
        next: [0; DEVICES],
        revoked: [false; DEVICES],
        members: [true; DEVICES],
        owes_rotation: false,
        epoch: 0,
        accepted: 0,
        sent: Vec::new(),
    };
    let craft = |m: &mut Model, s: usize, seq: u64| {
        let header = EnvelopeHeader {
            v: ENVELOPE_VERSION,
            session_id: session.clone(),
            sender_device_id: devices[s].0.clone(),
            key_version: 1,
            epoch: m.epoch,
            sequence: seq,
            created_at: now_ms().unsigned_abs(),
        };
        let wire = seal(&key, &devices[s].1, &header, b"payload")
            .expect("seal")
            .to_json()
            .into_bytes();
        m.sent.push((wire.clone(), s, m.epoch, seq));
        wire
    };
    for (op, batched) in ops {
        let mut posts: Vec<(Vec<u8>, usize, u64, u64)> = Vec::new();
        match op {
            Op::Send(s) => {
                m.next[s] += 1;
                let seq = m.next[s];
                let w = craft(&mut m, s, seq);
                posts.push((w, s, m.epoch, seq));
            }
            Op::Replay(i) => {
                if !m.sent.is_empty() {
                    posts.push(m.sent[i % m.sent.len()].clone());
                }
            }
            Op::Reorder(s) => {
                let (a, b) = (m.next[s] + 1, m.next[s] + 2);
                m.next[s] += 2;
                let wb = craft(&mut m, s, b);
                let wa = craft(&mut m, s, a);
                posts.push((wb, s, m.epoch, b));
                posts.push((wa, s, m.epoch, a));
            }
            Op::Burst(s, n) => {
                for _ in 0..n {
                    m.next[s] += 1;
                    let seq = m.next[s];
                    let w = craft(&mut m, s, seq);
                    posts.push((w, s, m.epoch, seq));
                }
                if let Some(last) = posts.last().cloned() {
                    posts.push(last);
                }
            }
            Op::Revoke(s) => {
                store
                    .revoke_device(&devices[s].0, "test", None)
                    .await
                    .expect("revoke");
                if !m.revoked[s] && m.members[s] {
                    m.owes_rotation = true;
                }
                m.revoked[s] = true;
            }
            Op::Rotate => {
                let live: Vec<&String> = (0..DEVICES)
                    .filter(|i| !m.revoked[*i])
                    .map(|i| &devices[i].0)
                    .collect();
                if !live.is_empty() {
                    let next = i64::try_from(m.epoch + 1).expect("epoch");
                    store
                        .rotate_session(&session, next - 1, &rows(&session, next, &live), "test")
                        .await
                        .expect("rotate");
                    m.epoch += 1;
                    m.owes_rotation = false;
                    m.members = std::array::from_fn(|i| !m.revoked[i]);
                }
            }
            Op::Restart => {
                drop(ingestor);
                store.close().await;
                store = Store::open(tmp.path(), &cfg).await.expect("reopen");
                ingestor = Ingestor::start_with(store.clone(), metrics.clone(), 300_000, 0)
                    .expect("ingestor");
            }
        }
        if posts.is_empty() {
            continue;
        }
        let got = post(&ingestor, &session, &posts, batched).await;
        assert_eq!(got.len(), posts.len(), "one verdict per envelope");
        for ((_, s, epoch, seq), got) in posts.iter().zip(got) {
            let want = m.expect(*s, *epoch, *seq);
            assert_eq!(
                got, want,
                "sender {s} epoch {epoch} seq {seq} batched {batched}"
            );
            m.apply(*s, *seq, got);
        }
    }
    assert_eq!(store.envelope_count().await.expect("count"), m.accepted);
    drop(ingestor);
    store.close().await;
}

/// Runs `f` on a fresh two-worker runtime (one per case, as a host has).
fn block_on(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn ingest_matches_the_model(ops in proptest::collection::vec((op(), any::<bool>()), 1..40)) {
        block_on(run(ops, false));
    }
}

proptest! {
    // Each case creates a database on the test cluster: fewer cases, the same model.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn ingest_matches_the_model_on_postgres(
        ops in proptest::collection::vec((op(), any::<bool>()), 1..40),
    ) {
        block_on(run(ops, true));
    }
}

/// One ingest transaction over several sessions records its events as one chained run: an
/// `envelopes.accepted` per session and an `envelope.rejected` per authenticated refusal,
/// numbered on from the log's end without a gap, and the chain still verifies; a refused batch
/// (here: none) would record nothing. Checked on both engines.
#[test]
fn a_batch_over_several_sessions_records_one_chained_event_per_session_and_refusal() {
    for postgres in [false, true] {
        block_on(async move {
            let tmp = tempfile::tempdir().expect("tmp");
            let Some(cfg) = storage(postgres).await else {
                return;
            };
            let store = Store::open(tmp.path(), &cfg).await.expect("store");
            let mut items = Vec::new();
            for i in 0..3 {
                let (device, _) = enroll(&store, i).await;
                let session = super::rotation_tests::session(&store, &[&device]).await;
                // Two sequences each, and the first one again: accepted, accepted, replayed.
                for sequence in [1, 2, 1] {
                    items.push(super::rotation_tests::item(&session, &device, 0, sequence));
                }
            }
            let before = store.events_after(0, i64::MAX).await.expect("events");
            let limits = happyx_store::IngestLimits {
                window_ms: 300_000,
                rotation_grace_ms: 0,
            };
            let verdicts = store.ingest_batch(&items, limits).await.expect("batch");
            use happyx_store::IngestVerdict as V;
            let accepted = verdicts.iter().filter(|v| matches!(v, V::Accepted { .. }));
            let replayed = verdicts.iter().filter(|v| matches!(v, V::Replayed { .. }));
            assert_eq!((accepted.count(), replayed.count()), (6, 3), "{verdicts:?}");
            let after = store.events_after(0, i64::MAX).await.expect("events");
            let added = &after[before.len()..];
            let count = |code: &str| added.iter().filter(|e| e.code == code).count();
            assert_eq!(
                (count("envelopes.accepted"), count("envelope.rejected")),
                (3, 3)
            );
            let seqs: Vec<i64> = after.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=after.len() as i64).collect::<Vec<_>>());
            let verified = store
                .verify_chain(&happyx_core::progress::Progress::hidden())
                .await
                .expect("read");
            assert!(verified.is_ok(), "{verified:?}");
            assert_eq!(store.envelope_count().await.expect("count"), 6);
        });
    }
}
