//! Typed errors: [`EnvelopeError`] carries exactly the API's envelope refusal codes;
//! [`CryptoError`] covers keys, enrollment proofs, key wrapping and sealing.
//!
//! Neither ever holds key material, plaintext or ciphertext: messages name fields and limits only.

/// Why an envelope was refused. [`EnvelopeError::code`] is the stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Malformed, non-canonical or oversize wire form; the message names the field.
    #[error("invalid envelope: {0}")]
    Invalid(String),
    /// The Ed25519 signature does not verify under the sender's key.
    #[error("envelope signature does not verify")]
    BadSignature,
    /// The signature verified but the ciphertext does not decrypt under the content key the
    /// reader holds for this session epoch.
    #[error("invalid envelope: ciphertext does not decrypt under the session epoch key")]
    Undecryptable,
    /// Sequence at or below the sender's cursor (decided by the server).
    #[error("envelope sequence {sequence} is at or below the sender's cursor {cursor}")]
    Replayed {
        /// The envelope's sequence.
        sequence: u64,
        /// The last accepted sequence for this sender in this session.
        cursor: u64,
    },
    /// `createdAt` outside the accepted window (decided by the server).
    #[error("envelope createdAt {created_at} is outside the accepted window")]
    Expired {
        /// The envelope's `createdAt`, Unix milliseconds.
        created_at: u64,
    },
    /// The sender's key version is revoked (decided by the server).
    #[error("device key is revoked")]
    RevokedKey,
    /// The envelope's epoch is not the session's current epoch (decided by the server).
    #[error("envelope epoch {epoch} is not the session's current epoch {current}")]
    StaleEpoch {
        /// The envelope's epoch.
        epoch: u64,
        /// The session's current epoch.
        current: u64,
    },
    /// A member of the session's current epoch was revoked longer than the rotation grace ago
    /// and no surviving member has rotated since: the epoch's key is no longer private to the
    /// members (decided by the server). Rotate to a new epoch and send again. Distinct from
    /// [`Self::StaleEpoch`], which is for an epoch already superseded.
    #[error(
        "session epoch {epoch} must be rotated: a member device was revoked; rotate to a new epoch and send again"
    )]
    RotationRequired {
        /// The envelope's (and the session's current) epoch.
        epoch: u64,
    },
    /// The sender device (or that key version of it) is not known (decided by the server).
    #[error("unknown sender device or key version")]
    UnknownDevice,
}

impl EnvelopeError {
    /// The stable API refusal code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) | Self::Undecryptable => "invalid_envelope",
            Self::BadSignature => "bad_signature",
            Self::Replayed { .. } => "replayed",
            Self::Expired { .. } => "expired",
            Self::RevokedKey => "revoked_key",
            Self::StaleEpoch { .. } => "stale_epoch",
            Self::RotationRequired { .. } => "rotation_required",
            Self::UnknownDevice => "unknown_device",
        }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::Invalid(what.into())
    }
}

/// Failures of key handling, enrollment proofs, key wrapping and sealing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A public key is malformed, non-canonical, low-order or otherwise unusable.
    #[error("weak or invalid {which} public key: {reason}")]
    WeakKey {
        /// Which key: `signing` (Ed25519) or `hpke` (X25519).
        which: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An enrollment proof of possession does not verify.
    #[error("enrollment proof of possession does not verify ({0})")]
    BadProof(&'static str),
    /// A wrapped content key cannot be unwrapped by this device (wrong recipient, wrong binding,
    /// wrong sender or tampered).
    #[error("wrapped content key cannot be unwrapped: {0}")]
    Unwrap(&'static str),
    /// A plaintext exceeds [`super::limits::MAX_PLAINTEXT_LEN`].
    #[error("plaintext of {len} bytes exceeds the limit of {max} bytes")]
    PlaintextTooLarge {
        /// The plaintext's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A header field is invalid (an id outside the allowed charset or length, a wrong version).
    #[error("invalid header field {0}")]
    InvalidField(&'static str),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// An AEAD or HPKE primitive failed unexpectedly while sealing.
    #[error("encryption failed")]
    Encrypt,
}

impl CryptoError {
    /// A stable code for logs, CLI messages and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WeakKey { .. } => "weak_key",
            Self::BadProof(_) => "bad_proof",
            Self::Unwrap(_) => "unwrap_failed",
            Self::PlaintextTooLarge { .. } => "plaintext_too_large",
            Self::InvalidField(_) => "invalid_field",
            Self::Rng => "rng_failed",
            Self::Encrypt => "encrypt_failed",
        }
    }
}
