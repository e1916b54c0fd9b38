//! Property tests: parsing never panics and refuses with `invalid_envelope`; sealed envelopes
//! round-trip through the wire form; a single corrupted byte is never accepted as authentic.

use proptest::prelude::*;

use super::*;

fn device() -> DeviceKeys {
    DeviceKeys::from_secret_bytes(5, &[3; 32], &[4; 32])
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(e) = Envelope::parse(&bytes) {
            prop_assert_eq!(e.code(), "invalid_envelope");
        }
    }

    #[test]
    fn parse_never_panics_on_json_like_text(text in r#"\{("[a-zA-Z]{1,14}":(-?[0-9]{1,21}(\.[0-9])?|"[A-Za-z0-9+/=_-]{0,40}"|null|\[\]),?){0,12}\}"#) {
        if let Err(e) = Envelope::parse(text.as_bytes()) {
            prop_assert_eq!(e.code(), "invalid_envelope");
        }
    }

    #[test]
    fn sealed_envelopes_round_trip(
        session_id in id(),
        sender in id(),
        epoch in any::<u64>(),
        sequence in any::<u64>(),
        created_at in any::<u64>(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        key in any::<[u8; 32]>(),
    ) {
        let keys = device();
        let ck = ContentKey::from_bytes(key);
        let header = EnvelopeHeader {
            v: ENVELOPE_VERSION,
            session_id,
            sender_device_id: sender,
            key_version: keys.key_version(),
            epoch,
            sequence,
            created_at,
        };
        let env = seal(&ck, &keys, &header, &plaintext).unwrap();
        let json = env.to_json();
        let parsed = Envelope::parse(json.as_bytes()).unwrap();
        prop_assert_eq!(&parsed, &env);
        prop_assert_eq!(parsed.header(), header);
        parsed.verify(&keys.public().validate().unwrap()).unwrap();
        prop_assert_eq!(open(&ck, &parsed, &keys.public()).unwrap(), plaintext);
    }

    #[test]
    fn one_corrupted_byte_is_never_authentic(
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let keys = device();
        let ck = ContentKey::from_bytes([1; 32]);
        let header = EnvelopeHeader {
            v: ENVELOPE_VERSION,
            session_id: "session".into(),
            sender_device_id: "sender".into(),
            key_version: keys.key_version(),
            epoch: 1,
            sequence: 9,
            created_at: 1_750_000_000_000,
        };
        let env = seal(&ck, &keys, &header, b"a message of some length").unwrap();
        let mut json = env.to_json().into_bytes();
        let i = index.index(json.len());
        json[i] = byte;
        match Envelope::parse(&json) {
            Err(e) => prop_assert_eq!(e.code(), "invalid_envelope"),
            Ok(parsed) if parsed == env => {}
            Ok(parsed) => {
                let signing = keys.public().validate().unwrap();
                prop_assert_eq!(parsed.verify(&signing), Err(EnvelopeError::BadSignature));
            }
        }
    }
}
