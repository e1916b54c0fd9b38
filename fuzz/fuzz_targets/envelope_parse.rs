//! Fuzzes the server's stateless envelope path: parse the wire form, then verify the signature.
//! Parsing must never panic; anything it accepts must print back to JSON that parses to the same
//! envelope, and must verify only if it is byte-for-byte the envelope the key signed.
#![no_main]

use std::sync::OnceLock;

use happyx_envelope::{
    ContentKey, DeviceKeys, ENVELOPE_VERSION, Envelope, EnvelopeHeader, SigningPublicKey, seal,
};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    signing: SigningPublicKey,
    genuine: Envelope,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = DeviceKeys::from_secret_bytes(1, &[7; 32], &[8; 32]);
        let header = EnvelopeHeader {
            v: ENVELOPE_VERSION,
            session_id: "session".into(),
            sender_device_id: "device".into(),
            key_version: 1,
            epoch: 1,
            sequence: 1,
            created_at: 1,
        };
        let genuine = seal(&ContentKey::from_bytes([9; 32]), &keys, &header, b"fuzz")
            .expect("sealing the fixture");
        let signing = keys.public().validate().expect("fixture keys are valid");
        Fixture { signing, genuine }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Ok(env) = Envelope::parse(data) else {
        return;
    };
    let again = Envelope::parse(env.to_json().as_bytes()).expect("printed envelopes parse");
    assert_eq!(again, env);
    if env.verify(&fx.signing).is_ok() {
        assert_eq!(env, fx.genuine, "a forged envelope verified");
    }
});
