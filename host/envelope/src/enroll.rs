//! Enrollment proof of possession: a device proves it holds both secret keys it enrolls.
//!
//! The server issues a per-enrollment X25519 challenge key ([`ChallengeKey`]) and sends its
//! public half to the device. The device builds the transcript
//!
//! ```text
//! transcript = "happyx-enroll-v1\0" || lp(codeHash) || lp(challengePublic)
//!              || u64(keyVersion) || lp(signingPublic) || lp(hpkePublic)
//! ```
//!
//! (`lp`/`u64` as in the header encoding; `codeHash` is [`enrollment_code_hash`] of the code) and
//! answers with
//!
//! - `signature`: Ed25519 over the transcript (proves the signing key), and
//! - `hpkeEnc`, `hpkeTag`: an HPKE **auth-mode** seal (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   ChaCha20-Poly1305) of the empty plaintext to the challenge key, with the device's X25519 key
//!   as the authenticating sender key, `info = "happyx-enroll-x25519-v1\0"` and the transcript as
//!   associated data. Auth mode mixes `DH(device secret, challenge public)` into the key schedule,
//!   so only the holder of the device's X25519 secret (or of the challenge secret, which never
//!   leaves the server) can produce a tag that opens.
//!
//! Both public keys are refused if weak before anything else is checked. A proof is bound to one
//! code and one challenge; the server makes both single-use.

use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::error::CryptoError;
use super::header::{put_lp, put_u64};
use super::keys::{DeviceKeys, DevicePublicKeys, SigningPublicKey, b64_32, random_32};
use super::wrap::{Aead, Encapped, HpkePrivate, Kdf, Kem, hpke_keypair, hpke_public};

/// Domain tag opening the enrollment transcript.
pub const ENROLL_DOMAIN: &[u8] = b"happyx-enroll-v1\0";
/// HPKE `info` of the X25519 proof.
pub const ENROLL_HPKE_INFO: &[u8] = b"happyx-enroll-x25519-v1\0";
/// Domain tag of [`enrollment_code_hash`].
pub const ENROLL_CODE_DOMAIN: &[u8] = b"happyx-enroll-code-v1\0";
/// Domain tag of [`ChallengeKey::derive`]'s input keying material.
pub const CHALLENGE_DOMAIN: &[u8] = b"happyx-enroll-challenge-v1\0";

/// `SHA-256("happyx-enroll-code-v1\0" || code)`: the value an enrollment proof binds.
pub fn enrollment_code_hash(code: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(ENROLL_CODE_DOMAIN);
    hash.update(code.as_bytes());
    hash.finalize().into()
}

/// The enrollment transcript both proofs cover (see the module documentation).
pub fn enrollment_transcript(
    code_hash: &[u8; 32],
    challenge_public: &[u8; 32],
    keys: &DevicePublicKeys,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENROLL_DOMAIN.len() + 4 * 36 + 12);
    out.extend_from_slice(ENROLL_DOMAIN);
    put_lp(&mut out, code_hash);
    put_lp(&mut out, challenge_public);
    put_u64(&mut out, keys.key_version);
    put_lp(&mut out, &keys.signing_public);
    put_lp(&mut out, &keys.hpke_public);
    out
}

/// The device's answer to an enrollment challenge. JSON: `{"signature","hpkeEnc","hpkeTag"}`
/// in canonical base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentProof {
    /// Ed25519 signature over the transcript.
    #[serde(with = "b64_64")]
    pub signature: [u8; 64],
    /// HPKE encapsulated key.
    #[serde(with = "b64_32")]
    pub hpke_enc: [u8; 32],
    /// HPKE tag over the empty plaintext with the transcript as associated data.
    #[serde(with = "b64_16")]
    pub hpke_tag: [u8; 16],
}

impl DeviceKeys {
    /// Answers the server's enrollment challenge (see the module documentation).
    pub fn prove_enrollment(
        &self,
        code_hash: &[u8; 32],
        challenge_public: &[u8; 32],
    ) -> Result<EnrollmentProof, CryptoError> {
        let pk_challenge = hpke_public(challenge_public)?;
        let transcript = enrollment_transcript(code_hash, challenge_public, &self.public());
        let signature = self.sign(&transcript);
        let (enc, tag) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
            &OpModeS::Auth(hpke_keypair(self)?),
            &pk_challenge,
            ENROLL_HPKE_INFO,
            b"",
            &transcript,
        )
        .map_err(|_| CryptoError::Encrypt)?;
        let mut hpke_enc = [0u8; 32];
        hpke_enc.copy_from_slice(&enc.to_bytes());
        Ok(EnrollmentProof {
            signature,
            hpke_enc,
            hpke_tag: tag
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::Encrypt)?,
        })
    }
}

/// The server's per-enrollment X25519 challenge key. `Debug` is redacted.
pub struct ChallengeKey {
    secret: HpkePrivate,
    public: [u8; 32],
}

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey([redacted])")
    }
}

impl ChallengeKey {
    /// A fresh random challenge key (store its secret with the enrollment, see
    /// [`ChallengeKey::secret_bytes`]).
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_secret_bytes(&*random_32()?)
    }

    /// Derives the challenge key from a server secret and the enrollment code hash (RFC 9180
    /// `DeriveKeyPair` over `"happyx-enroll-challenge-v1\0" || serverSecret || codeHash`), so the
    /// server need not store one per enrollment.
    pub fn derive(server_secret: &[u8; 32], code_hash: &[u8; 32]) -> Self {
        let mut ikm = Zeroizing::new(Vec::with_capacity(CHALLENGE_DOMAIN.len() + 64));
        ikm.extend_from_slice(CHALLENGE_DOMAIN);
        ikm.extend_from_slice(server_secret);
        ikm.extend_from_slice(code_hash);
        let (secret, public) = Kem::derive_keypair(&ikm);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&public.to_bytes());
        Self { secret, public: pk }
    }

    /// Rebuilds a stored challenge key.
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let secret = HpkePrivate::from_bytes(bytes).map_err(|_| CryptoError::Encrypt)?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&Kem::sk_to_pk(&secret).to_bytes());
        Ok(Self { secret, public })
    }

    /// The secret, for the server's enrollment record only.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.secret.to_bytes());
        out
    }

    /// The public half, sent to the enrolling device.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Checks a device's enrollment proof for `code_hash` and this challenge. Refuses weak keys
    /// (`weak_key`) and proofs that do not verify (`bad_proof`); returns the checked signing key.
    pub fn verify_enrollment(
        &self,
        keys: &DevicePublicKeys,
        code_hash: &[u8; 32],
        proof: &EnrollmentProof,
    ) -> Result<SigningPublicKey, CryptoError> {
        let signing = keys.validate()?;
        let pk_device = hpke_public(&keys.hpke_public)?;
        let transcript = enrollment_transcript(code_hash, &self.public, keys);
        if !signing.verify(&transcript, &proof.signature) {
            return Err(CryptoError::BadProof("signature"));
        }
        let enc =
            Encapped::from_bytes(&proof.hpke_enc).map_err(|_| CryptoError::BadProof("x25519"))?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Auth(pk_device),
            &self.secret,
            &enc,
            ENROLL_HPKE_INFO,
            &proof.hpke_tag,
            &transcript,
        )
        .map_err(|_| CryptoError::BadProof("x25519"))?;
        Ok(signing)
    }
}

mod b64_64 {
    use super::super::b64;

    pub(crate) fn serialize<S: serde::Serializer>(b: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64::encode(b))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; 64], D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        b64::decode_exact::<64>(&s)
            .ok_or_else(|| serde::de::Error::custom("expected canonical base64 of 64 bytes"))
    }
}

mod b64_16 {
    use super::super::b64;

    pub(crate) fn serialize<S: serde::Serializer>(b: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64::encode(b))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; 16], D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        b64::decode_exact::<16>(&s)
            .ok_or_else(|| serde::de::Error::custom("expected canonical base64 of 16 bytes"))
    }
}
