//! Envelope verification throughput: a bare Ed25519 `verify_strict` over the signature message of
//! a 1 KiB-payload envelope, against the server's full stateless path (size check, strict JSON
//! parse with canonical base64, header encoding, `verify_strict`). Throughput is envelopes/s.
//!
//! Then, in the same run and on the same cores, the full ingest path (parse, key lookup,
//! `verify_strict`, replay guard and durable insert through the group-commit writer, SQLite
//! with synchronous=FULL) for 16 concurrent senders of 1 KiB payloads, against raw
//! `verify_strict` of the same envelopes on as many threads as there are cores: envelopes/s,
//! p99 latency per ingest, and the ratio. Twice: each sender posting one envelope per request
//! and waiting for its answer, and each sender posting batches of [`BATCH`] consecutive
//! envelopes (`/envelopes/batch`), waiting for each batch's answer.

// A bench that cannot set up its data has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group};
use happyx::envelope::{
    ContentKey, DeviceKeys, ENVELOPE_VERSION, Envelope, EnvelopeHeader, SigningPublicKey, seal,
};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use happyx::config::StorageConfig;
use happyx::devices::ingest::Ingestor;
use happyx::devices::protocol::envelope_batch_body;
use happyx::metrics::Metrics;
use happyx::store::{Session, Store, WrappedKeyRow};

fn fixture() -> (SigningPublicKey, Envelope, Vec<u8>) {
    let keys = DeviceKeys::generate(1).expect("keys");
    let header = EnvelopeHeader {
        v: ENVELOPE_VERSION,
        session_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        sender_device_id: "0190a1b2-dead-7eef-8a9b-0c1d2e3f4a5c".into(),
        key_version: 1,
        epoch: 1,
        sequence: 1,
        created_at: 1_750_000_000_000,
    };
    let env = seal(
        &ContentKey::generate().expect("key"),
        &keys,
        &header,
        &[0x42; 1024],
    )
    .expect("seal");
    let wire = env.to_json().into_bytes();
    (keys.public().validate().expect("valid"), env, wire)
}

fn bench(c: &mut Criterion) {
    let (signing, env, wire) = fixture();
    let raw_key = ed25519_dalek::VerifyingKey::from_bytes(&signing.to_bytes()).expect("key");
    let raw_sig = ed25519_dalek::Signature::from_bytes(&env.signature);
    let message = env.signed_message();

    let mut group = c.benchmark_group("envelope_1KiB");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_strict_only", |b| {
        b.iter(|| {
            raw_key
                .verify_strict(black_box(&message), black_box(&raw_sig))
                .expect("verifies")
        })
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| Envelope::parse(black_box(&wire)).expect("parses"))
    });
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            let env = Envelope::parse(black_box(&wire)).expect("parses");
            env.verify(black_box(&signing)).expect("verifies");
        })
    });
    group.bench_function("parse_key_and_verify", |b| {
        // as the server without a key cache: decode and check the sender's key every time
        let key_bytes = signing.to_bytes();
        b.iter(|| {
            let env = Envelope::parse(black_box(&wire)).expect("parses");
            let key = SigningPublicKey::from_bytes(black_box(&key_bytes)).expect("key");
            env.verify(&key).expect("verifies");
        })
    });
    group.finish();
}

const SENDERS: usize = 16;
const PER_SENDER: usize = 2_048;
/// Envelopes per batch request in the batched run.
const BATCH: usize = 64;

/// A store with `SENDERS` enrolled devices, one encrypted session they all belong to, and
/// `PER_SENDER` envelopes per sender in wire form.
async fn ingest_fixture(
    dir: &std::path::Path,
) -> (Store, String, Vec<Vec<Vec<u8>>>, Vec<SigningPublicKey>) {
    let store = Store::open(dir, &StorageConfig::default())
        .await
        .expect("store");
    let session_id = happyx::util::new_id();
    let content = ContentKey::generate().expect("key");
    let mut rows = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let keys = DeviceKeys::generate(1).expect("keys");
        let device_id = happyx::devices::provision(&store, &keys.public(), None, "bench")
            .await
            .expect("enroll")
            .device_id;
        rows.push(WrappedKeyRow {
            session_id: session_id.clone(),
            epoch: 0,
            device_id: device_id.clone(),
            key_version: 1,
            sender_device_id: device_id.clone(),
            sender_key_version: 1,
            enc: B64.encode([1u8; 32]),
            ciphertext: B64.encode([2u8; 48]),
        });
        senders.push((device_id, keys));
    }
    let now = happyx::util::now_ms();
    let session = Session {
        id: session_id.clone(),
        name: "bench".into(),
        kind: happyx::vocab::SessionKind::Encrypted,
        status: happyx::vocab::SessionStatus::Open,
        task_id: None,
        epoch: 0,
        rotation_required_since: None,
        created_by: "bench".into(),
        created_at: now,
        updated_at: now,
    };
    store
        .create_encrypted_session(&session, &rows)
        .await
        .expect("session");
    let created_at = now as u64;
    let mut wires = Vec::new();
    let mut keys = Vec::new();
    for (device_id, dk) in &senders {
        let mut mine = Vec::with_capacity(PER_SENDER);
        for seq in 1..=PER_SENDER as u64 {
            let header = EnvelopeHeader {
                v: ENVELOPE_VERSION,
                session_id: session_id.clone(),
                sender_device_id: device_id.clone(),
                key_version: 1,
                epoch: 0,
                sequence: seq,
                created_at,
            };
            let env = seal(&content, dk, &header, &[0x42; 1024]).expect("seal");
            mine.push(env.to_json().into_bytes());
        }
        wires.push(mine);
        keys.push(dk.public().validate().expect("valid"));
    }
    (store, session_id, wires, keys)
}

/// One sender's key and its (message, signature) pairs.
type RawJob = (
    ed25519_dalek::VerifyingKey,
    Vec<(Vec<u8>, ed25519_dalek::Signature)>,
);

fn raw_verify_rate(wires: &[Vec<Vec<u8>>], keys: &[SigningPublicKey], threads: usize) -> f64 {
    // Pre-parse: the raw figure is verify_strict alone.
    let jobs: Vec<RawJob> = wires
        .iter()
        .zip(keys)
        .map(|(ws, k)| {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&k.to_bytes()).expect("key");
            let msgs = ws
                .iter()
                .map(|w| {
                    let env = Envelope::parse(w).expect("parse");
                    (
                        env.signed_message(),
                        ed25519_dalek::Signature::from_bytes(&env.signature),
                    )
                })
                .collect();
            (vk, msgs)
        })
        .collect();
    let total: usize = jobs.iter().map(|(_, m)| m.len()).sum();
    let start = Instant::now();
    std::thread::scope(|s| {
        for part in jobs.chunks(jobs.len().div_ceil(threads)) {
            s.spawn(move || {
                for (vk, msgs) in part {
                    for (m, sig) in msgs {
                        vk.verify_strict(m, sig).expect("verifies");
                    }
                }
            });
        }
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn ingest_comparison() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let (_, _, wires, keys) = rt.block_on(ingest_fixture(tmp.path()));
    let raw = raw_verify_rate(&wires, &keys, threads);
    let figures = |batch: usize| {
        let tmp = tempfile::tempdir().expect("tmp");
        let (store, session_id, wires, _) = rt.block_on(ingest_fixture(tmp.path()));
        let (rate, p50, p99) = rt.block_on(ingest_rate(&store, &session_id, &wires, batch));
        let stored = rt.block_on(store.envelope_count()).expect("count");
        assert_eq!(stored as usize, SENDERS * PER_SENDER);
        println!(
            "ingest_1KiB_16_senders_batch_{batch}: {rate:.0} envelopes/s, p50 {p50:?}, \
             p99 {p99:?} per envelope; raw verify_strict on {threads} threads: {raw:.0} \
             envelopes/s; ratio {:.2}",
            rate / raw
        );
    };
    figures(1);
    figures(BATCH);
}

/// Ingests every sender's envelopes, the senders concurrently, each waiting for the answer to
/// one request before it sends the next: one envelope per request when `batch` is 1, else
/// `batch` consecutive envelopes per `/envelopes/batch` request. Returns (envelopes/s, p50,
/// p99), the latency of an envelope being that of its request.
async fn ingest_rate(
    store: &Store,
    session_id: &str,
    wires: &[Vec<Vec<u8>>],
    batch: usize,
) -> (f64, std::time::Duration, std::time::Duration) {
    let ingestor =
        Ingestor::start(store.clone(), Arc::new(Metrics::default()), 300_000).expect("ingestor");
    // Request bodies are built before the clock starts, as a client would have them ready.
    let bodies: Vec<Vec<(usize, Vec<u8>)>> = wires
        .iter()
        .map(|mine| {
            if batch == 1 {
                return mine.iter().map(|w| (1, w.clone())).collect();
            }
            mine.chunks(batch)
                .map(|chunk| (chunk.len(), envelope_batch_body(chunk)))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mine in bodies {
        let ingestor = ingestor.clone();
        let sid = session_id.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(mine.len() * batch);
            for (n, body) in mine {
                let t = Instant::now();
                if batch == 1 {
                    ingestor.ingest(&sid, &body).await.expect("accepted");
                } else {
                    let results = ingestor
                        .ingest_batch(&sid, body.into())
                        .await
                        .expect("batch");
                    assert!(results.iter().all(|r| r.is_ok()), "every envelope accepted");
                }
                lat.extend(std::iter::repeat_n(t.elapsed(), n));
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    (lat.len() as f64 / elapsed.as_secs_f64(), p(0.50), p(0.99))
}

criterion_group!(benches, bench);

fn main() {
    benches();
    ingest_comparison();
    Criterion::default().configure_from_args().final_summary();
}
