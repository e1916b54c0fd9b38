//! The host's export signing key and export signatures (Ed25519).
//!
//! The key is `DATA/host-signing.key`: the 32-byte Ed25519 seed, created on
//! first use through [`happyx_core::keyfile`] (0600, race-free, never replaced).
//! Its public key is shown as standard padded base64 of the 32 key bytes
//! (`happyx host-key`). An export's signature is over
//! `"happyx-export-signature\n1\n" <meta.checksum>`, which covers every table
//! and row (see the module docs of the server's `transfer` module).

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use happyx_core::keyfile::{self, KeyFileError};

/// File name of the signing key in the data dir.
pub const KEY_FILE: &str = "host-signing.key";
/// Value of `meta.signature.algorithm`.
pub const ALGORITHM: &str = "ed25519";
/// What is signed, before the checksum.
const CONTEXT: &[u8] = b"happyx-export-signature\n1\n";

/// The host's signing key. `Debug` shows the public key only.
pub struct HostKey(SigningKey);

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HostKey").field(&self.public()).finish()
    }
}

impl HostKey {
    /// The data dir's key, created on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<HostKey, KeyFileError> {
        let seed = keyfile::load_or_create(data_dir, KEY_FILE)?;
        Ok(HostKey(SigningKey::from_bytes(&seed)))
    }

    /// The data dir's key if it has one.
    pub fn load_existing(data_dir: &Path) -> Result<Option<HostKey>, KeyFileError> {
        Ok(keyfile::load_existing(data_dir, KEY_FILE)?
            .map(|seed| HostKey(SigningKey::from_bytes(&seed))))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature (standard base64) of an export with this checksum.
    pub fn sign(&self, checksum: &str) -> String {
        self.sign_message(&message(checksum))
    }

    /// The signature (standard base64) of `message`, which must carry its own domain
    /// separator (e.g. [`crate::checkpoint::message`]).
    pub fn sign_message(&self, message: &[u8]) -> String {
        STANDARD.encode(self.0.sign(message).to_bytes())
    }
}

fn message(checksum: &str) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(checksum.as_bytes());
    m
}

/// An Ed25519 public key; displays (and parses) as standard padded base64.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl PublicKey {
    /// Parses standard padded base64 of 32 bytes that is a valid Ed25519 point.
    pub fn parse(s: &str) -> Option<PublicKey> {
        let bytes: [u8; 32] = STANDARD.decode(s.trim()).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok().map(PublicKey)
    }

    /// Whether `signature` (standard base64) is this key's signature of an
    /// export with this checksum (`verify_strict`).
    pub fn verifies(&self, checksum: &str, signature: &str) -> bool {
        self.verifies_message(&message(checksum), signature)
    }

    /// Whether `signature` (standard base64 of 64 bytes) is this key's signature of `message`
    /// (`verify_strict`).
    pub fn verifies_message(&self, message: &[u8], signature: &str) -> bool {
        let Some(sig) = STANDARD
            .decode(signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        self.0
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse_changes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let k = HostKey::load_or_create(tmp.path()).expect("key");
        let again = HostKey::load_existing(tmp.path())
            .expect("load")
            .expect("exists");
        assert_eq!(k.public(), again.public());
        let sum = format!("sha256:{}", "a".repeat(64));
        let sig = k.sign(&sum);
        let pk = PublicKey::parse(&k.public().to_string()).expect("parse");
        assert!(pk.verifies(&sum, &sig));
        assert!(!pk.verifies(&format!("sha256:{}", "b".repeat(64)), &sig));
        assert!(!pk.verifies(&sum, "AAAA"));
        let other = tempfile::tempdir().expect("tmp");
        let foreign = HostKey::load_or_create(other.path()).expect("key");
        assert!(!foreign.public().verifies(&sum, &sig));
        assert!(PublicKey::parse("not base64").is_none());
        assert!(PublicKey::parse(&STANDARD.encode([1u8; 31])).is_none());
        assert!(!format!("{k:?}").is_empty());
    }
}
