//! Envelope verification throughput: a bare Ed25519 `verify_strict` over the signature message of
//! a 1 KiB-payload envelope, against the server's full stateless path (size check, strict JSON
//! parse with canonical base64, header encoding, `verify_strict`). Throughput is envelopes/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use happyx::envelope::{
    ContentKey, DeviceKeys, ENVELOPE_VERSION, Envelope, EnvelopeHeader, SigningPublicKey, seal,
};
use std::hint::black_box;

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

criterion_group!(benches, bench);
criterion_main!(benches);
