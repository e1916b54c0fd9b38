//! Explicit size limits for envelopes and their fields, shared by the parser, the sealer and the
//! server's request-body limit.

/// Largest envelope, in bytes of wire JSON, that is parsed at all (the server's body limit).
pub const MAX_ENVELOPE_JSON_LEN: usize = 256 * 1024;

/// Most envelopes one batch request (`POST /v1/sessions/{id}/envelopes/batch`) may carry.
pub const MAX_BATCH_ENVELOPES: usize = 256;

/// Largest batch request body, in bytes (the batch route's own body limit).
pub const MAX_BATCH_JSON_LEN: usize = 1024 * 1024;

/// Largest plaintext one envelope may carry.
pub const MAX_PLAINTEXT_LEN: usize = 128 * 1024;

/// Length of the XChaCha20-Poly1305 authentication tag appended to every ciphertext.
pub const AEAD_TAG_LEN: usize = 16;

/// Largest ciphertext (plaintext plus tag). Its base64 form (~171 KiB) plus the other fields
/// stays well under [`MAX_ENVELOPE_JSON_LEN`].
pub const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + AEAD_TAG_LEN;

/// Smallest ciphertext: an empty plaintext still carries its tag.
pub const MIN_CIPHERTEXT_LEN: usize = AEAD_TAG_LEN;

/// Longest session or device id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Length of an envelope nonce (XChaCha20-Poly1305).
pub const NONCE_LEN: usize = 24;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Length of a session content key.
pub const CONTENT_KEY_LEN: usize = 32;

/// Whether `id` is a valid session or device id: 1 to [`MAX_ID_LEN`] bytes of ASCII letters,
/// digits, `-` and `_` (UUIDs and ULIDs fit).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
