//! Recomputes the fixed test vectors in `tests/vectors/envelope-v1.json` and compares every
//! field: keys, fingerprint, header bytes (the associated data), signature message, ciphertext,
//! signature and wire JSON.

use serde_json::{Value, json};

use super::header::signature_message;
use super::seal::seal_with_nonce;
use super::*;

const VECTORS: &str = include_str!("../../../tests/vectors/envelope-v1.json");

fn h32(v: &Value) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.as_str().unwrap(), &mut out).unwrap();
    out
}

fn compute(input: &Value) -> Value {
    let keys = DeviceKeys::from_secret_bytes(
        input["keyVersion"].as_u64().unwrap(),
        &h32(&input["signingSeed"]),
        &h32(&input["hpkeSecret"]),
    );
    let content_key = ContentKey::from_bytes(h32(&input["contentKey"]));
    let h = &input["header"];
    let header = EnvelopeHeader {
        v: h["v"].as_u64().unwrap(),
        session_id: h["sessionId"].as_str().unwrap().into(),
        sender_device_id: h["senderDeviceId"].as_str().unwrap().into(),
        key_version: h["keyVersion"].as_u64().unwrap(),
        epoch: h["epoch"].as_u64().unwrap(),
        sequence: h["sequence"].as_u64().unwrap(),
        created_at: h["createdAt"].as_u64().unwrap(),
    };
    let mut nonce = [0u8; 24];
    hex::decode_to_slice(input["nonce"].as_str().unwrap(), &mut nonce).unwrap();
    let plaintext = input["plaintext"].as_str().unwrap().as_bytes();
    let env = seal_with_nonce(&content_key, &keys, &header, plaintext, nonce).unwrap();
    let public = keys.public();
    let aad = header.encode();
    json!({
        "signingPublic": hex::encode(public.signing_public),
        "hpkePublic": hex::encode(public.hpke_public),
        "fingerprint": public.fingerprint().to_string(),
        "headerBytes": hex::encode(&aad),
        "signatureMessage": hex::encode(signature_message(&aad, &env.nonce, &env.ciphertext)),
        "ciphertext": super::b64::encode(&env.ciphertext),
        "signature": super::b64::encode(&env.signature),
        "wire": env.to_json(),
    })
}

#[test]
fn envelope_v1_vectors_match() {
    let file: Value = serde_json::from_str(VECTORS).unwrap();
    let cases = file["vectors"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let got = compute(&case["input"]);
        let want = &case["output"];
        assert_eq!(
            &got,
            want,
            "computed:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );

        // the wire form parses, verifies and opens back to the plaintext
        let env = Envelope::parse(want["wire"].as_str().unwrap().as_bytes()).unwrap();
        let input = &case["input"];
        let keys = DeviceKeys::from_secret_bytes(
            input["keyVersion"].as_u64().unwrap(),
            &h32(&input["signingSeed"]),
            &h32(&input["hpkeSecret"]),
        );
        env.verify(&keys.public().validate().unwrap()).unwrap();
        let ck = ContentKey::from_bytes(h32(&input["contentKey"]));
        let plain = open(&ck, &env, &keys.public()).unwrap();
        assert_eq!(plain, input["plaintext"].as_str().unwrap().as_bytes());
        assert_eq!(
            hex::encode(env.header().encode()),
            want["headerBytes"].as_str().unwrap()
        );
    }
}
