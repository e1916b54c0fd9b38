//! Sealing (encrypt then sign), signature verification and opening (verify then decrypt).
//!
//! The ciphertext is XChaCha20-Poly1305 under the session epoch's content key, a random 24-byte
//! nonce and the canonical header encoding as associated data. The Ed25519 signature covers the
//! signature message (header, nonce, ciphertext) and is checked with `verify_strict`.

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};

use super::error::{CryptoError, EnvelopeError};
use super::header::{EnvelopeHeader, signature_message};
use super::keys::{ContentKey, DeviceKeys, DevicePublicKeys, SigningPublicKey};
use super::limits::{MAX_PLAINTEXT_LEN, NONCE_LEN, is_valid_id};
use super::wire::{ENVELOPE_VERSION, Envelope};

/// Encrypts `plaintext` under `key` with a fresh random nonce, binds it to `header` and signs the
/// result with `signer`'s Ed25519 key. `header.key_version` must be the signer's key version.
pub fn seal(
    key: &ContentKey,
    signer: &DeviceKeys,
    header: &EnvelopeHeader,
    plaintext: &[u8],
) -> Result<Envelope, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
    seal_with_nonce(key, signer, header, plaintext, nonce)
}

/// [`seal`] with a caller-chosen nonce: for the fixed test vectors only. A nonce must never be
/// reused under one key.
pub(crate) fn seal_with_nonce(
    key: &ContentKey,
    signer: &DeviceKeys,
    header: &EnvelopeHeader,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Envelope, CryptoError> {
    if header.v != ENVELOPE_VERSION {
        return Err(CryptoError::InvalidField("v"));
    }
    if !is_valid_id(&header.session_id) {
        return Err(CryptoError::InvalidField("sessionId"));
    }
    if !is_valid_id(&header.sender_device_id) {
        return Err(CryptoError::InvalidField("senderDeviceId"));
    }
    if header.key_version != signer.key_version() {
        return Err(CryptoError::InvalidField("keyVersion"));
    }
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::PlaintextTooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let aad = header.encode();
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Encrypt)?;
    let signature = signer.sign(&signature_message(&aad, &nonce, &ciphertext));
    Ok(Envelope {
        v: header.v,
        session_id: header.session_id.clone(),
        sender_device_id: header.sender_device_id.clone(),
        key_version: header.key_version,
        epoch: header.epoch,
        sequence: header.sequence,
        created_at: header.created_at,
        nonce,
        ciphertext,
        signature,
    })
}

impl Envelope {
    /// The exact message the sender signed.
    pub fn signed_message(&self) -> Vec<u8> {
        signature_message(&self.header().encode(), &self.nonce, &self.ciphertext)
    }

    /// Checks the signature with `verify_strict` under the sender's key (looked up by
    /// `sender_device_id` and `key_version`). The server needs nothing else to authenticate an
    /// envelope; it never decrypts.
    pub fn verify(&self, sender: &SigningPublicKey) -> Result<(), EnvelopeError> {
        if sender.verify(&self.signed_message(), &self.signature) {
            Ok(())
        } else {
            Err(EnvelopeError::BadSignature)
        }
    }
}

/// Verifies `envelope` against the sender's (pinned) public keys, then decrypts it with the
/// session epoch's content key. A key-version mismatch or weak sender key is `bad_signature`;
/// a ciphertext that does not decrypt is `invalid_envelope`.
pub fn open(
    key: &ContentKey,
    envelope: &Envelope,
    sender: &DevicePublicKeys,
) -> Result<Vec<u8>, EnvelopeError> {
    if envelope.key_version != sender.key_version {
        return Err(EnvelopeError::BadSignature);
    }
    let signing = sender.validate().map_err(|_| EnvelopeError::BadSignature)?;
    let aad = envelope.header().encode();
    let message = signature_message(&aad, &envelope.nonce, &envelope.ciphertext);
    if !signing.verify(&message, &envelope.signature) {
        return Err(EnvelopeError::BadSignature);
    }
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt(
            &XNonce::from(envelope.nonce),
            Payload {
                msg: &envelope.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| EnvelopeError::Undecryptable)
}
