//! Key types: session content keys, a device's key pair (Ed25519 signing + X25519 for HPKE), its
//! public half, fingerprints and the weak-key checks every peer-supplied public key goes through.
//!
//! Secret-bearing types zeroize on drop and print `[redacted]` in `Debug`.
//!
//! Fingerprint: `SHA-256("happyx-device-fingerprint-v1\0" || signing_public || hpke_public)`,
//! first 16 bytes, lowercase hex in eight groups of four joined by `-`
//! (e.g. `3f2a-9c01-…`). It does not cover the key version: a new key version has new keys.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

use super::b64;
use super::error::CryptoError;
use super::limits::CONTENT_KEY_LEN;

/// Domain tag of the device fingerprint hash.
pub const FINGERPRINT_DOMAIN: &[u8] = b"happyx-device-fingerprint-v1\0";

/// Fills a fresh 32-byte secret from the operating system's generator.
pub(crate) fn random_32() -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|_| CryptoError::Rng)?;
    Ok(bytes)
}

/// A session's symmetric content key for one epoch (XChaCha20-Poly1305, 32 bytes).
#[derive(Clone)]
pub struct ContentKey([u8; CONTENT_KEY_LEN]);

impl ContentKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(*random_32()?))
    }

    /// Wraps existing key bytes (from an unwrap or the device's key store).
    pub fn from_bytes(bytes: [u8; CONTENT_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes, for the AEAD, for wrapping and for the device's key store.
    pub fn as_bytes(&self) -> &[u8; CONTENT_KEY_LEN] {
        &self.0
    }
}

impl Drop for ContentKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey([redacted])")
    }
}

/// A device's secret keys for one key version: an Ed25519 signing key and an X25519 key used as
/// the HPKE (DHKEM(X25519, HKDF-SHA256)) recipient and sender-authentication key.
pub struct DeviceKeys {
    key_version: u64,
    signing: SigningKey,
    hpke_secret: x25519_dalek::StaticSecret,
}

impl DeviceKeys {
    /// Fresh random keys for `key_version`.
    pub fn generate(key_version: u64) -> Result<Self, CryptoError> {
        let signing = random_32()?;
        let hpke = random_32()?;
        Ok(Self::from_secret_bytes(key_version, &signing, &hpke))
    }

    /// Rebuilds keys from their 32-byte secrets (the Ed25519 seed and the X25519 scalar, which
    /// is clamped when used).
    pub fn from_secret_bytes(
        key_version: u64,
        signing_seed: &[u8; 32],
        hpke_secret: &[u8; 32],
    ) -> Self {
        Self {
            key_version,
            signing: SigningKey::from_bytes(signing_seed),
            hpke_secret: x25519_dalek::StaticSecret::from(*hpke_secret),
        }
    }

    /// The key version these keys belong to.
    pub fn key_version(&self) -> u64 {
        self.key_version
    }

    /// The Ed25519 seed, for the device's key store only.
    pub fn signing_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The X25519 secret, for the device's key store and HPKE only.
    pub fn hpke_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.hpke_secret.to_bytes())
    }

    /// Signs `message` with the Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> DevicePublicKeys {
        DevicePublicKeys {
            key_version: self.key_version,
            signing_public: self.signing.verifying_key().to_bytes(),
            hpke_public: x25519_dalek::PublicKey::from(&self.hpke_secret).to_bytes(),
        }
    }

    /// The fingerprint of the public half.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public().fingerprint()
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("key_version", &self.key_version)
            .field("secrets", &"[redacted]")
            .finish()
    }
}

/// The public half of a device's keys for one key version, as enrolled and as pinned by peers.
/// JSON: `{"keyVersion": u64, "signingPublic": base64, "hpkePublic": base64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevicePublicKeys {
    /// The key version.
    pub key_version: u64,
    /// Ed25519 verifying key.
    #[serde(with = "b64_32")]
    pub signing_public: [u8; 32],
    /// X25519 public key (HPKE recipient key).
    #[serde(with = "b64_32")]
    pub hpke_public: [u8; 32],
}

impl DevicePublicKeys {
    /// Refuses weak or malformed keys (see [`SigningPublicKey::from_bytes`] and
    /// [`check_hpke_public`]) and returns the parsed signing key.
    pub fn validate(&self) -> Result<SigningPublicKey, CryptoError> {
        check_hpke_public(&self.hpke_public)?;
        SigningPublicKey::from_bytes(&self.signing_public)
    }

    /// The human-comparable fingerprint (see the module documentation).
    pub fn fingerprint(&self) -> Fingerprint {
        let mut hash = Sha256::new();
        hash.update(FINGERPRINT_DOMAIN);
        hash.update(self.signing_public);
        hash.update(self.hpke_public);
        let digest = hash.finalize();
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&digest[..16]);
        Fingerprint(fp)
    }
}

/// A validated Ed25519 verifying key: decodes to a curve point, canonical encoding, not of small
/// order. Signatures are checked with `verify_strict`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SigningPublicKey(VerifyingKey);

impl SigningPublicKey {
    /// Parses and checks a 32-byte Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let weak = |reason| CryptoError::WeakKey {
            which: "signing",
            reason,
        };
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| weak("not a curve point"))?;
        if key.is_weak() {
            return Err(weak("small-order point"));
        }
        if key.to_edwards().compress().to_bytes() != *bytes {
            return Err(weak("non-canonical encoding"));
        }
        Ok(Self(key))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// `verify_strict` of `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for SigningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningPublicKey({})", b64::encode(self.0.as_bytes()))
    }
}

/// Refuses an X25519 public key that is non-canonical (high bit set or u ≥ 2^255−19), all-zero
/// or of low order (a Diffie-Hellman with it yields the all-zero secret for every clamped scalar).
pub fn check_hpke_public(bytes: &[u8; 32]) -> Result<(), CryptoError> {
    let weak = |reason| CryptoError::WeakKey {
        which: "hpke",
        reason,
    };
    if bytes[31] & 0x80 != 0 || is_at_least_p(bytes) {
        return Err(weak("non-canonical encoding"));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(weak("all-zero key"));
    }
    // Any clamped scalar is a multiple of the cofactor 8, so the product is the identity (the
    // all-zero output) exactly when the point lies in the small subgroup.
    let probe = x25519_dalek::StaticSecret::from([0x55u8; 32]);
    let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(*bytes));
    if !shared.was_contributory() {
        return Err(weak("low-order point"));
    }
    Ok(())
}

/// Whether the little-endian 255-bit value is ≥ p = 2^255 − 19 (high bit already clear).
fn is_at_least_p(bytes: &[u8; 32]) -> bool {
    bytes[31] == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff) && bytes[0] >= 0xed
}

/// A device fingerprint: 16 bytes of the hash, printed as `xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx`.
/// Parsing accepts upper or lower case, with or without the `-` separators.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{}", hex::encode(pair))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A string that is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a device fingerprint (expected 32 hex digits, optionally in groups of 4 joined by '-')"
)]
pub struct FingerprintParseError;

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 39 {
            return Err(FingerprintParseError);
        }
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        if digits.len() != 32 || (digits.len() != s.len() && !is_grouped(s)) {
            return Err(FingerprintParseError);
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(digits.to_ascii_lowercase(), &mut out)
            .map_err(|_| FingerprintParseError)?;
        Ok(Self(out))
    }
}

fn is_grouped(s: &str) -> bool {
    s.split('-').count() == 8 && s.split('-').all(|g| g.len() == 4)
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for 32-byte keys as canonical standard base64.
pub(crate) mod b64_32 {
    use super::b64;

    pub(crate) fn serialize<S: serde::Serializer>(
        bytes: &[u8; 32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 32], D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        b64::decode_exact::<32>(&s)
            .ok_or_else(|| serde::de::Error::custom("expected canonical base64 of 32 bytes"))
    }
}
