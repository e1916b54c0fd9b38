//! End-to-end encrypted envelopes: the wire form, its canonical encodings and the crypto around
//! it (signatures, AEAD, device identities, enrollment proofs and HPKE key wrapping).
//!
//! This crate is pure library code, shared by the server (which parses and verifies envelopes it
//! can never decrypt), the device client (which seals, opens, wraps and unwraps), the fuzzer and
//! third-party clients. It knows nothing of the database, HTTP or an async runtime (no tokio,
//! sqlx, axum or wasmtime: `cargo tree -p happyx-envelope` shows it). `docs/envelope.md`
//! documents every byte encoding defined here.

mod b64;
mod enroll;
mod error;
mod header;
mod keys;
pub mod limits;
pub mod request;
mod seal;
mod wire;
mod wrap;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

pub use enroll::{
    CHALLENGE_DOMAIN, ChallengeKey, ENROLL_CODE_DOMAIN, ENROLL_DOMAIN, ENROLL_HPKE_INFO,
    EnrollmentProof, enrollment_code_hash, enrollment_transcript,
};
pub use error::{CryptoError, EnvelopeError};
pub use header::{EnvelopeHeader, HEADER_DOMAIN, SIGNATURE_DOMAIN, signature_message};
pub use keys::{
    ContentKey, DeviceKeys, DevicePublicKeys, FINGERPRINT_DOMAIN, Fingerprint,
    FingerprintParseError, SigningPublicKey, check_hpke_public,
};
pub use seal::{open, seal};
pub use wire::{ENVELOPE_VERSION, Envelope};
pub use wrap::{
    WRAP_DOMAIN, WRAPPED_CIPHERTEXT_LEN, WrapContext, WrappedKey, unwrap_content_key,
    wrap_content_key,
};

/// Canonical standard base64 with padding, as used on the wire.
pub fn b64_encode(bytes: &[u8]) -> String {
    b64::encode(bytes)
}

/// Decodes canonical standard base64 of exactly 32 bytes.
pub fn b64_decode_32(text: &str) -> Option<[u8; 32]> {
    b64::decode_exact::<32>(text)
}

/// Decodes canonical base64 of exactly 48 bytes (a wrapped content key).
pub fn b64_decode_48(text: &str) -> Option<[u8; 48]> {
    b64::decode_exact::<48>(text)
}

/// Decodes canonical base64 of exactly 64 bytes (a signature).
pub fn b64_decode_64(text: &str) -> Option<[u8; 64]> {
    b64::decode_exact::<64>(text)
}
