//! Unit tests of the envelope module: round trips and every refusal path.

use super::*;
use crate::limits::{MAX_CIPHERTEXT_LEN, MAX_ENVELOPE_JSON_LEN, MAX_PLAINTEXT_LEN};

fn keys(version: u64, seed: u8) -> DeviceKeys {
    DeviceKeys::from_secret_bytes(version, &[seed; 32], &[seed.wrapping_add(100); 32])
}

fn header(keys: &DeviceKeys) -> EnvelopeHeader {
    EnvelopeHeader {
        v: ENVELOPE_VERSION,
        session_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        sender_device_id: "dev_alpha".into(),
        key_version: keys.key_version(),
        epoch: 3,
        sequence: 42,
        created_at: 1_750_000_000_000,
    }
}

fn sealed(plaintext: &[u8]) -> (ContentKey, DeviceKeys, Envelope) {
    let k = keys(1, 7);
    let ck = ContentKey::from_bytes([9; 32]);
    let env = seal(&ck, &k, &header(&k), plaintext).unwrap();
    (ck, k, env)
}

fn signing(k: &DeviceKeys) -> SigningPublicKey {
    k.public().validate().unwrap()
}

fn json_value(env: &Envelope) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(&env.to_json()).unwrap() {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn parse_value(m: &serde_json::Map<String, serde_json::Value>) -> Result<Envelope, EnvelopeError> {
    Envelope::parse(serde_json::Value::Object(m.clone()).to_string().as_bytes())
}

#[test]
fn round_trip_seal_parse_verify_open() {
    let (ck, k, env) = sealed(b"hello, agent");
    let json = env.to_json();
    let parsed = Envelope::parse(json.as_bytes()).unwrap();
    assert_eq!(parsed, env);
    assert_eq!(parsed.to_json(), json);
    parsed.verify(&signing(&k)).unwrap();
    assert_eq!(open(&ck, &parsed, &k.public()).unwrap(), b"hello, agent");
    // serde impls agree with parse/to_json
    let via_serde: Envelope = serde_json::from_str(&json).unwrap();
    assert_eq!(via_serde, env);
    assert_eq!(serde_json::to_string(&env).unwrap(), json);
}

#[test]
fn empty_and_maximal_plaintexts() {
    let (ck, k, env) = sealed(b"");
    assert_eq!(open(&ck, &env, &k.public()).unwrap(), b"");
    let big = vec![0xa5; MAX_PLAINTEXT_LEN];
    let (ck, k, env) = sealed(&big);
    let json = env.to_json();
    assert!(json.len() < MAX_ENVELOPE_JSON_LEN);
    assert_eq!(env.ciphertext.len(), MAX_CIPHERTEXT_LEN);
    let parsed = Envelope::parse(json.as_bytes()).unwrap();
    assert_eq!(open(&ck, &parsed, &k.public()).unwrap(), big);
    let too_big = vec![0; MAX_PLAINTEXT_LEN + 1];
    let err = seal(&ck, &k, &header(&k), &too_big).unwrap_err();
    assert_eq!(err.code(), "plaintext_too_large");
}

#[test]
fn nonces_are_fresh() {
    let k = keys(1, 7);
    let ck = ContentKey::from_bytes([9; 32]);
    let a = seal(&ck, &k, &header(&k), b"x").unwrap();
    let b = seal(&ck, &k, &header(&k), b"x").unwrap();
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn seal_refuses_bad_header_fields() {
    let k = keys(1, 7);
    let ck = ContentKey::from_bytes([9; 32]);
    let mut h = header(&k);
    h.key_version = 2;
    assert_eq!(
        seal(&ck, &k, &h, b"x").unwrap_err(),
        CryptoError::InvalidField("keyVersion")
    );
    let mut h = header(&k);
    h.session_id = "a b".into();
    assert_eq!(
        seal(&ck, &k, &h, b"x").unwrap_err(),
        CryptoError::InvalidField("sessionId")
    );
    let mut h = header(&k);
    h.v = 2;
    assert_eq!(
        seal(&ck, &k, &h, b"x").unwrap_err(),
        CryptoError::InvalidField("v")
    );
}

/// Every signed field, flipped, breaks the signature; the envelope still parses.
#[test]
fn flipping_any_signed_field_is_bad_signature() {
    let (ck, k, env) = sealed(b"payload");
    let pk = signing(&k);
    let mut variants: Vec<Envelope> = Vec::new();
    let mut e = env.clone();
    e.session_id.push('x');
    variants.push(e);
    let mut e = env.clone();
    e.sender_device_id = "dev_alphb".into();
    variants.push(e);
    for f in [
        |e: &mut Envelope| e.key_version ^= 1,
        |e: &mut Envelope| e.epoch ^= 1,
        |e: &mut Envelope| e.sequence ^= 1,
        |e: &mut Envelope| e.created_at ^= 1,
    ] {
        let mut e = env.clone();
        f(&mut e);
        variants.push(e);
    }
    for i in 0..env.nonce.len() {
        let mut e = env.clone();
        e.nonce[i] ^= 0x01;
        variants.push(e);
    }
    for i in 0..env.ciphertext.len() {
        let mut e = env.clone();
        e.ciphertext[i] ^= 0x80;
        variants.push(e);
    }
    let mut e = env.clone();
    e.ciphertext.push(0);
    variants.push(e);
    for i in 0..env.signature.len() {
        let mut e = env.clone();
        e.signature[i] ^= 0x01;
        variants.push(e);
    }
    for e in variants {
        // through the wire, as the server sees it
        let parsed = Envelope::parse(e.to_json().as_bytes()).unwrap();
        let err = parsed.verify(&pk).unwrap_err();
        assert_eq!(err.code(), "bad_signature");
        let mut pinned = k.public();
        pinned.key_version = parsed.key_version;
        assert_eq!(
            open(&ck, &parsed, &pinned).unwrap_err().code(),
            "bad_signature"
        );
    }
}

#[test]
fn wrong_signer_or_key_version_is_bad_signature() {
    let (ck, k, env) = sealed(b"payload");
    let other = keys(1, 8);
    assert_eq!(
        env.verify(&signing(&other)),
        Err(EnvelopeError::BadSignature)
    );
    assert_eq!(
        open(&ck, &env, &other.public()),
        Err(EnvelopeError::BadSignature)
    );
    let mut pinned = k.public();
    pinned.key_version = 2;
    assert_eq!(open(&ck, &env, &pinned), Err(EnvelopeError::BadSignature));
}

#[test]
fn wrong_content_key_is_invalid_envelope() {
    let (_, k, env) = sealed(b"payload");
    let err = open(&ContentKey::from_bytes([10; 32]), &env, &k.public()).unwrap_err();
    assert_eq!(err, EnvelopeError::Undecryptable);
    assert_eq!(err.code(), "invalid_envelope");
}

#[test]
fn signature_by_a_signer_over_tampered_aad_still_fails_to_decrypt() {
    // A sender re-signs after changing the header: the signature is fine, the AEAD is not.
    let (ck, k, env) = sealed(b"payload");
    let mut e = env.clone();
    e.sequence += 1;
    e.signature = k.sign(&e.signed_message());
    e.verify(&signing(&k)).unwrap();
    assert_eq!(
        open(&ck, &e, &k.public()),
        Err(EnvelopeError::Undecryptable)
    );
}

fn assert_invalid(json: &str) {
    let err = Envelope::parse(json.as_bytes()).unwrap_err();
    assert_eq!(err.code(), "invalid_envelope", "{json}: {err}");
}

#[test]
fn malformed_json_is_invalid_envelope() {
    let (_, _, env) = sealed(b"payload");
    let good = env.to_json();
    assert_invalid("");
    assert_invalid("[]");
    assert_invalid("null");
    assert_invalid(&good[..good.len() - 1]);
    assert_invalid(&format!("{good} {{}}"));
    assert_invalid(&format!("{good}x"));
    // trailing whitespace is harmless JSON; the value is unchanged
    assert!(Envelope::parse(format!("{good}\n").as_bytes()).is_ok());
}

#[test]
fn integer_fields_must_be_json_unsigned_integers() {
    let (_, _, env) = sealed(b"payload");
    let m = json_value(&env);
    for field in ["v", "keyVersion", "epoch", "sequence", "createdAt"] {
        for bad in [
            serde_json::json!(1.0),
            serde_json::json!(1.5),
            serde_json::json!(-1),
            serde_json::json!("1"),
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!([1]),
        ] {
            let mut m2 = m.clone();
            m2.insert(field.into(), bad.clone());
            let err = parse_value(&m2).unwrap_err();
            assert_eq!(err.code(), "invalid_envelope", "{field}={bad}");
        }
    }
    // textual variants serde_json::Value would normalise away
    let good = env.to_json();
    let seq = format!("\"sequence\":{}", env.sequence);
    for bad in ["1e2", "42.0", "-0", "18446744073709551616", "0x2a", "042"] {
        assert_invalid(&good.replace(&seq, &format!("\"sequence\":{bad}")));
    }
}

#[test]
fn version_other_than_one_is_refused() {
    let (_, _, env) = sealed(b"payload");
    let mut m = json_value(&env);
    m.insert("v".into(), serde_json::json!(2));
    let err = parse_value(&m).unwrap_err();
    assert!(err.to_string().contains("unsupported version"));
}

#[test]
fn unknown_missing_and_duplicate_fields_are_refused() {
    let (_, _, env) = sealed(b"payload");
    let m = json_value(&env);
    let mut extra = m.clone();
    extra.insert("extra".into(), serde_json::json!(1));
    assert_eq!(parse_value(&extra).unwrap_err().code(), "invalid_envelope");
    for field in m.keys() {
        let mut missing = m.clone();
        missing.remove(field);
        assert_eq!(
            parse_value(&missing).unwrap_err().code(),
            "invalid_envelope"
        );
    }
    let good = env.to_json();
    for dup in [r#""epoch":3,"#, r#""sessionId":"s","#, r#""v":1,"#] {
        assert_invalid(&good.replacen('{', &format!("{{{dup}"), 1));
    }
    assert_invalid(&good.replacen('{', r#"{"nonce":"AAAA","#, 1));
}

#[test]
fn ids_are_limited_in_length_and_charset() {
    let (_, _, env) = sealed(b"payload");
    let m = json_value(&env);
    for field in ["sessionId", "senderDeviceId"] {
        for bad in ["", "a b", "a/b", "é", "a\u{0}b", &"a".repeat(65)] {
            let mut m2 = m.clone();
            m2.insert(field.into(), serde_json::json!(bad));
            assert_eq!(parse_value(&m2).unwrap_err().code(), "invalid_envelope");
        }
        let mut ok = m.clone();
        ok.insert(field.into(), serde_json::json!("A".repeat(64)));
        assert!(parse_value(&ok).is_ok());
    }
}

#[test]
fn non_canonical_base64_is_refused() {
    let (_, _, env) = sealed(b"payload!");
    let m = json_value(&env);
    for field in ["nonce", "ciphertext", "signature"] {
        let s = m[field].as_str().unwrap().to_string();
        let mut bad = vec![
            s.trim_end_matches('=').to_string(),
            format!("{s}="),
            format!(" {s}"),
            format!("{s}\n"),
            format!("{}\n{}", &s[..4], &s[4..]),
            s.replace('+', "-").replace('/', "_"),
            format!("-_{}", &s[2..]),
            String::new(),
        ];
        // non-zero trailing bits: bump the last data character before the padding
        let trimmed = s.trim_end_matches('=');
        if trimmed.len() < s.len() {
            let last = trimmed.chars().last().unwrap();
            let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let i = alphabet.find(last).unwrap();
            let bumped = alphabet.as_bytes()[(i + 1) % 64] as char;
            bad.push(format!(
                "{}{}{}",
                &trimmed[..trimmed.len() - 1],
                bumped,
                &s[trimmed.len()..]
            ));
        }
        for b in bad {
            if b == s {
                continue;
            }
            let mut m2 = m.clone();
            m2.insert(field.into(), serde_json::json!(b));
            let err = parse_value(&m2).unwrap_err();
            assert_eq!(err.code(), "invalid_envelope", "{field}: {b:?}");
        }
    }
}

#[test]
fn nonce_signature_and_ciphertext_lengths_are_checked() {
    let (_, _, env) = sealed(b"payload");
    let m = json_value(&env);
    let b64 = |n: usize| super::b64::encode(&vec![1u8; n]);
    for (field, len) in [
        ("nonce", 23),
        ("nonce", 25),
        ("signature", 63),
        ("signature", 65),
        ("ciphertext", 15),
        ("ciphertext", MAX_CIPHERTEXT_LEN + 1),
    ] {
        let mut m2 = m.clone();
        m2.insert(field.into(), serde_json::json!(b64(len)));
        assert_eq!(
            parse_value(&m2).unwrap_err().code(),
            "invalid_envelope",
            "{field} {len}"
        );
    }
}

#[test]
fn oversize_input_is_refused_before_parsing() {
    let mut big = vec![b' '; MAX_ENVELOPE_JSON_LEN + 1];
    big[0] = b'{';
    let err = Envelope::parse(&big).unwrap_err();
    assert_eq!(err.code(), "invalid_envelope");
    assert!(err.to_string().contains("over the limit"));
}

#[test]
fn errors_and_debug_never_show_ciphertext_or_keys() {
    let (ck, k, env) = sealed(b"top secret plaintext");
    let ct = super::b64::encode(&env.ciphertext);
    let dbg = format!("{env:?} {ck:?} {k:?}");
    assert!(!dbg.contains(&ct[..16]));
    assert!(dbg.contains("[redacted]"));
    assert!(!format!("{ck:?}").contains("9, 9"));
    // a type error that would quote the value does not echo it
    let mut m = json_value(&env);
    m.insert("sequence".into(), serde_json::json!(ct.clone()));
    let err = parse_value(&m).unwrap_err().to_string();
    assert!(!err.contains(&ct[..16]), "{err}");
    assert!(err.contains("invalid type"), "{err}");
    let mut m = json_value(&env);
    m.insert(ct.clone(), serde_json::json!(1));
    let err = parse_value(&m).unwrap_err().to_string();
    assert!(!err.contains(&ct[..16]), "{err}");
}

#[test]
fn server_side_codes_are_stable() {
    let cases = [
        (
            EnvelopeError::Replayed {
                sequence: 1,
                cursor: 2,
            },
            "replayed",
        ),
        (EnvelopeError::Expired { created_at: 1 }, "expired"),
        (EnvelopeError::RevokedKey, "revoked_key"),
        (
            EnvelopeError::StaleEpoch {
                epoch: 1,
                current: 2,
            },
            "stale_epoch",
        ),
        (EnvelopeError::UnknownDevice, "unknown_device"),
        (EnvelopeError::BadSignature, "bad_signature"),
        (EnvelopeError::invalid("x"), "invalid_envelope"),
    ];
    for (e, code) in cases {
        assert_eq!(e.code(), code);
    }
}

// ---- device keys, weak keys, fingerprints -------------------------------------------------

/// The eight-torsion points of edwards25519, in canonical encoding.
const ED25519_SMALL_ORDER: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
];

/// Low-order and non-canonical X25519 u-coordinates (from the curve25519 "bad points" list).
const X25519_BAD: [&str; 7] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

fn h32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).unwrap();
    out
}

#[test]
fn weak_signing_keys_are_refused() {
    for p in ED25519_SMALL_ORDER {
        let err = SigningPublicKey::from_bytes(&h32(p)).unwrap_err();
        assert_eq!(err.code(), "weak_key", "{p}");
    }
    // a non-canonical encoding of the base point's y (y + p) does not round-trip
    let mut y = h32("5866666666666666666666666666666666666666666666666666666666666666");
    assert!(SigningPublicKey::from_bytes(&y).is_ok());
    y[0] = 0xed;
    y[31] = 0x7f;
    for b in &mut y[1..31] {
        *b = 0xff;
    }
    assert!(SigningPublicKey::from_bytes(&y).is_err());
    // y = 2 is not on the curve
    assert!(
        SigningPublicKey::from_bytes(&h32(
            "0200000000000000000000000000000000000000000000000000000000000000"
        ))
        .is_err()
    );
}

#[test]
fn weak_hpke_keys_are_refused() {
    for p in X25519_BAD {
        let err = check_hpke_public(&h32(p)).unwrap_err();
        assert_eq!(err.code(), "weak_key", "{p}");
    }
    // high bit set
    let mut good = keys(1, 1).public().hpke_public;
    check_hpke_public(&good).unwrap();
    good[31] |= 0x80;
    assert!(check_hpke_public(&good).is_err());
}

#[test]
fn generated_keys_validate_and_fingerprint_is_stable() {
    let k = DeviceKeys::generate(1).unwrap();
    let public = k.public();
    public.validate().unwrap();
    let fp = public.fingerprint();
    let text = fp.to_string();
    assert_eq!(text.len(), 39);
    assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(
        text.replace('-', "")
            .to_uppercase()
            .parse::<Fingerprint>()
            .unwrap(),
        fp
    );
    assert!("abcd".parse::<Fingerprint>().is_err());
    assert!(text.replacen('-', "", 1).parse::<Fingerprint>().is_err());
    assert!(text.replace('-', ":").parse::<Fingerprint>().is_err());
    assert_ne!(DeviceKeys::generate(1).unwrap().fingerprint(), fp);
    // the public keys round-trip through their JSON form
    let json = serde_json::to_string(&public).unwrap();
    assert_eq!(
        serde_json::from_str::<DevicePublicKeys>(&json).unwrap(),
        public
    );
    assert!(!format!("{k:?}").contains(&hex::encode(*k.signing_seed())));
}

// ---- enrollment proof of possession ---------------------------------------------------------

#[test]
fn enrollment_proof_round_trip_and_refusals() {
    let k = DeviceKeys::generate(1).unwrap();
    let code_hash = enrollment_code_hash("ENROLL-1234");
    let challenge = ChallengeKey::generate().unwrap();
    let proof = k.prove_enrollment(&code_hash, &challenge.public()).unwrap();
    challenge
        .verify_enrollment(&k.public(), &code_hash, &proof)
        .unwrap();
    // via JSON
    let json = serde_json::to_string(&proof).unwrap();
    let back: EnrollmentProof = serde_json::from_str(&json).unwrap();
    challenge
        .verify_enrollment(&k.public(), &code_hash, &back)
        .unwrap();

    // another code
    let other_code = enrollment_code_hash("ENROLL-1235");
    let err = challenge
        .verify_enrollment(&k.public(), &other_code, &proof)
        .unwrap_err();
    assert_eq!(err.code(), "bad_proof");
    // another challenge
    let other_challenge = ChallengeKey::generate().unwrap();
    assert!(
        other_challenge
            .verify_enrollment(&k.public(), &code_hash, &proof)
            .is_err()
    );
    // a swapped-in X25519 key the device does not hold: signature re-made by the signer still
    // cannot fake the X25519 proof
    let stranger = DeviceKeys::generate(1).unwrap();
    let mut claimed = k.public();
    claimed.hpke_public = stranger.public().hpke_public;
    let mut forged = proof.clone();
    forged.signature = k.sign(&enrollment_transcript(
        &code_hash,
        &challenge.public(),
        &claimed,
    ));
    assert_eq!(
        challenge
            .verify_enrollment(&claimed, &code_hash, &forged)
            .unwrap_err(),
        CryptoError::BadProof("x25519")
    );
    // another key version
    let mut bumped = k.public();
    bumped.key_version = 2;
    assert!(
        challenge
            .verify_enrollment(&bumped, &code_hash, &proof)
            .is_err()
    );
    // tampered parts
    let mut p = proof.clone();
    p.signature[0] ^= 1;
    assert_eq!(
        challenge
            .verify_enrollment(&k.public(), &code_hash, &p)
            .unwrap_err(),
        CryptoError::BadProof("signature")
    );
    let mut p = proof.clone();
    p.hpke_tag[0] ^= 1;
    assert!(
        challenge
            .verify_enrollment(&k.public(), &code_hash, &p)
            .is_err()
    );
    let mut p = proof.clone();
    p.hpke_enc[0] ^= 1;
    assert!(
        challenge
            .verify_enrollment(&k.public(), &code_hash, &p)
            .is_err()
    );
    // weak keys refused before the proof is looked at
    let mut weak = k.public();
    weak.signing_public = h32(ED25519_SMALL_ORDER[0]);
    assert_eq!(
        challenge
            .verify_enrollment(&weak, &code_hash, &proof)
            .unwrap_err()
            .code(),
        "weak_key"
    );
    let mut weak = k.public();
    weak.hpke_public = h32(X25519_BAD[2]);
    assert_eq!(
        challenge
            .verify_enrollment(&weak, &code_hash, &proof)
            .unwrap_err()
            .code(),
        "weak_key"
    );
    // the device refuses a weak challenge key
    assert_eq!(
        k.prove_enrollment(&code_hash, &[0; 32]).unwrap_err().code(),
        "weak_key"
    );
}

#[test]
fn derived_and_stored_challenge_keys_are_stable() {
    let code_hash = enrollment_code_hash("c");
    let a = ChallengeKey::derive(&[1; 32], &code_hash);
    let b = ChallengeKey::derive(&[1; 32], &code_hash);
    assert_eq!(a.public(), b.public());
    assert_ne!(
        a.public(),
        ChallengeKey::derive(&[2; 32], &code_hash).public()
    );
    let c = ChallengeKey::from_secret_bytes(&a.secret_bytes()).unwrap();
    assert_eq!(c.public(), a.public());
    assert_eq!(format!("{a:?}"), "ChallengeKey([redacted])");
}

// ---- HPKE key wrapping ----------------------------------------------------------------------

fn ctx(recipient: &str) -> WrapContext {
    WrapContext {
        session_id: "sess1".into(),
        epoch: 4,
        sender_device_id: "alice".into(),
        recipient_device_id: recipient.into(),
    }
}

#[test]
fn wrap_unwrap_round_trip_and_refusals() {
    let alice = DeviceKeys::generate(1).unwrap();
    let bob = DeviceKeys::generate(3).unwrap();
    let carol = DeviceKeys::generate(1).unwrap();
    let ck = ContentKey::generate().unwrap();
    let w = wrap_content_key(&ck, &ctx("bob"), &alice, &bob.public()).unwrap();
    assert_eq!((w.epoch, w.key_version, w.sender_key_version), (4, 3, 1));
    let got = unwrap_content_key(&w, "sess1", "bob", &bob, &alice.public()).unwrap();
    assert_eq!(got.as_bytes(), ck.as_bytes());
    // through JSON
    let json = serde_json::to_string(&w).unwrap();
    let back: WrappedKey = serde_json::from_str(&json).unwrap();
    assert_eq!(back, w);
    assert!(!format!("{w:?}").contains(&super::b64::encode(&w.ciphertext)));

    let code = |r: Result<ContentKey, CryptoError>| r.unwrap_err().code();
    // another device cannot unwrap, even claiming to be bob
    assert_eq!(
        code(unwrap_content_key(
            &w,
            "sess1",
            "carol",
            &carol,
            &alice.public()
        )),
        "unwrap_failed"
    );
    let carol_v3 = DeviceKeys::generate(3).unwrap();
    assert_eq!(
        code(unwrap_content_key(
            &w,
            "sess1",
            "bob",
            &carol_v3,
            &alice.public()
        )),
        "unwrap_failed"
    );
    // wrong session
    assert_eq!(
        code(unwrap_content_key(
            &w,
            "sess2",
            "bob",
            &bob,
            &alice.public()
        )),
        "unwrap_failed"
    );
    // not wrapped by the pinned sender
    assert_eq!(
        code(unwrap_content_key(
            &w,
            "sess1",
            "bob",
            &bob,
            &carol.public()
        )),
        "unwrap_failed"
    );
    // the host rewrites any bound field
    for f in [
        |w: &mut WrappedKey| w.epoch += 1,
        |w: &mut WrappedKey| w.sender_device_id = "mallory".into(),
        |w: &mut WrappedKey| w.enc[3] ^= 1,
        |w: &mut WrappedKey| w.ciphertext[0] ^= 1,
        |w: &mut WrappedKey| w.ciphertext[47] ^= 1,
    ] {
        let mut t = w.clone();
        f(&mut t);
        assert_eq!(
            code(unwrap_content_key(
                &t,
                "sess1",
                "bob",
                &bob,
                &alice.public()
            )),
            "unwrap_failed"
        );
    }
    // weak recipient keys are refused at wrap time
    let mut weak = bob.public();
    weak.hpke_public = [0; 32];
    assert_eq!(
        wrap_content_key(&ck, &ctx("bob"), &alice, &weak)
            .unwrap_err()
            .code(),
        "weak_key"
    );
    assert_eq!(
        wrap_content_key(&ck, &ctx("b o b"), &alice, &bob.public()).unwrap_err(),
        CryptoError::InvalidField("recipientDeviceId")
    );
}
