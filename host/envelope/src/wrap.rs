//! Session content-key wrapping with HPKE (RFC 9180): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305, **auth mode**, so that unwrapping also proves which device wrapped the key.
//!
//! The HPKE `info` binds the key to its session, epoch, recipient and sender:
//!
//! ```text
//! info = "happyx-wrap-v1\0" || lp(sessionId) || u64(epoch)
//!        || lp(recipientDeviceId) || u64(recipientKeyVersion)
//!        || lp(senderDeviceId) || u64(senderKeyVersion)
//! ```
//!
//! (`lp` and `u64` as in the header encoding.) The associated data is empty; the plaintext is the
//! 32-byte content key, so `ciphertext` is 48 bytes.

use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use serde::{Deserialize, Serialize};

use super::error::CryptoError;
use super::header::{put_lp, put_u64};
use super::keys::{ContentKey, DeviceKeys, DevicePublicKeys, b64_32, check_hpke_public};
use super::limits::{CONTENT_KEY_LEN, is_valid_id};

pub(crate) type Kem = hpke::kem::X25519HkdfSha256;
pub(crate) type Kdf = hpke::kdf::HkdfSha256;
pub(crate) type Aead = hpke::aead::ChaCha20Poly1305;
pub(crate) type HpkePrivate = <Kem as hpke::Kem>::PrivateKey;
pub(crate) type HpkePublic = <Kem as hpke::Kem>::PublicKey;
pub(crate) type Encapped = <Kem as hpke::Kem>::EncappedKey;

/// Domain tag opening the HPKE `info` of a wrapped content key.
pub const WRAP_DOMAIN: &[u8] = b"happyx-wrap-v1\0";

/// Length of a wrapped content key's HPKE ciphertext (key plus tag).
pub const WRAPPED_CIPHERTEXT_LEN: usize = CONTENT_KEY_LEN + 16;

/// A device's HPKE key pair in the `hpke` crate's types.
pub(crate) fn hpke_keypair(keys: &DeviceKeys) -> Result<(HpkePrivate, HpkePublic), CryptoError> {
    let secret = keys.hpke_secret();
    let sk = HpkePrivate::from_bytes(secret.as_ref()).map_err(|_| CryptoError::Encrypt)?;
    let pk = Kem::sk_to_pk(&sk);
    Ok((sk, pk))
}

/// A checked peer X25519 public key in the `hpke` crate's type.
pub(crate) fn hpke_public(bytes: &[u8; 32]) -> Result<HpkePublic, CryptoError> {
    check_hpke_public(bytes)?;
    HpkePublic::from_bytes(bytes).map_err(|_| CryptoError::WeakKey {
        which: "hpke",
        reason: "not a public key",
    })
}

/// What a wrapped key is bound to, besides the two devices' key versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapContext {
    /// The encrypted session.
    pub session_id: String,
    /// The content-key epoch.
    pub epoch: u64,
    /// The device that wraps (and authenticates) the key.
    pub sender_device_id: String,
    /// The device the key is wrapped to.
    pub recipient_device_id: String,
}

/// A content key wrapped to one device for one (session, epoch), as stored by the server.
/// JSON: camelCase fields, `enc` and `ciphertext` in canonical base64. `Debug` omits the
/// ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WrappedKey {
    /// The session.
    pub session_id: String,
    /// The epoch.
    pub epoch: u64,
    /// The recipient device.
    pub device_id: String,
    /// The recipient's key version the key is wrapped to.
    pub key_version: u64,
    /// The wrapping device.
    pub sender_device_id: String,
    /// The wrapping device's key version (its X25519 key authenticates the wrap).
    pub sender_key_version: u64,
    /// The HPKE encapsulated key.
    #[serde(with = "b64_32")]
    pub enc: [u8; 32],
    /// The HPKE ciphertext of the content key.
    #[serde(with = "b64_48")]
    pub ciphertext: [u8; WRAPPED_CIPHERTEXT_LEN],
}

happyx_core::debug_fields!(WrappedKey {
    session_id,
    epoch,
    device_id,
    key_version,
    sender_device_id,
    sender_key_version
});

impl WrappedKey {
    /// The HPKE `info` this key was wrapped under (see the module documentation).
    pub fn info(&self) -> Vec<u8> {
        wrap_info(
            &self.session_id,
            self.epoch,
            &self.device_id,
            self.key_version,
            &self.sender_device_id,
            self.sender_key_version,
        )
    }
}

fn wrap_info(
    session_id: &str,
    epoch: u64,
    recipient: &str,
    recipient_version: u64,
    sender: &str,
    sender_version: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(WRAP_DOMAIN.len() + 80 + session_id.len());
    out.extend_from_slice(WRAP_DOMAIN);
    put_lp(&mut out, session_id.as_bytes());
    put_u64(&mut out, epoch);
    put_lp(&mut out, recipient.as_bytes());
    put_u64(&mut out, recipient_version);
    put_lp(&mut out, sender.as_bytes());
    put_u64(&mut out, sender_version);
    out
}

/// Wraps `key` to `recipient` (whose keys are refused if weak), authenticated by `sender`'s
/// X25519 key.
pub fn wrap_content_key(
    key: &ContentKey,
    ctx: &WrapContext,
    sender: &DeviceKeys,
    recipient: &DevicePublicKeys,
) -> Result<WrappedKey, CryptoError> {
    for (id, field) in [
        (&ctx.session_id, "sessionId"),
        (&ctx.sender_device_id, "senderDeviceId"),
        (&ctx.recipient_device_id, "recipientDeviceId"),
    ] {
        if !is_valid_id(id) {
            return Err(CryptoError::InvalidField(field));
        }
    }
    recipient.validate()?;
    let pk_recipient = hpke_public(&recipient.hpke_public)?;
    let sender_pair = hpke_keypair(sender)?;
    let mut wrapped = WrappedKey {
        session_id: ctx.session_id.clone(),
        epoch: ctx.epoch,
        device_id: ctx.recipient_device_id.clone(),
        key_version: recipient.key_version,
        sender_device_id: ctx.sender_device_id.clone(),
        sender_key_version: sender.key_version(),
        enc: [0; 32],
        ciphertext: [0; WRAPPED_CIPHERTEXT_LEN],
    };
    let (enc, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
        &OpModeS::Auth(sender_pair),
        &pk_recipient,
        &wrapped.info(),
        key.as_bytes(),
        b"",
    )
    .map_err(|_| CryptoError::Encrypt)?;
    wrapped.enc.copy_from_slice(&enc.to_bytes());
    wrapped.ciphertext = ciphertext
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Encrypt)?;
    Ok(wrapped)
}

/// Unwraps a content key wrapped to this device. Refused unless the key is wrapped for
/// `session_id`, to `recipient_device_id` at `recipient`'s key version, and authenticated by
/// `sender` — the wrapping device's public keys as pinned by this device (look them up by
/// `wrapped.sender_device_id`). The returned key belongs to `wrapped.epoch`.
pub fn unwrap_content_key(
    wrapped: &WrappedKey,
    session_id: &str,
    recipient_device_id: &str,
    recipient: &DeviceKeys,
    sender: &DevicePublicKeys,
) -> Result<ContentKey, CryptoError> {
    if wrapped.session_id != session_id {
        return Err(CryptoError::Unwrap("wrapped for another session"));
    }
    if wrapped.device_id != recipient_device_id || wrapped.key_version != recipient.key_version() {
        return Err(CryptoError::Unwrap(
            "wrapped for another device or key version",
        ));
    }
    if wrapped.sender_key_version != sender.key_version {
        return Err(CryptoError::Unwrap(
            "sender key version differs from the pinned one",
        ));
    }
    let pk_sender = hpke_public(&sender.hpke_public)?;
    let (sk_recipient, _) = hpke_keypair(recipient)?;
    let enc = Encapped::from_bytes(&wrapped.enc)
        .map_err(|_| CryptoError::Unwrap("malformed encapsulated key"))?;
    let plaintext = zeroize::Zeroizing::new(
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Auth(pk_sender),
            &sk_recipient,
            &enc,
            &wrapped.info(),
            &wrapped.ciphertext,
            b"",
        )
        .map_err(|_| CryptoError::Unwrap("authentication failed"))?,
    );
    let bytes: [u8; CONTENT_KEY_LEN] = plaintext
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Unwrap("wrong content key length"))?;
    Ok(ContentKey::from_bytes(bytes))
}

/// Serde for the 48-byte wrapped ciphertext as canonical standard base64.
mod b64_48 {
    use super::super::b64;
    use super::WRAPPED_CIPHERTEXT_LEN;

    pub(crate) fn serialize<S: serde::Serializer>(
        bytes: &[u8; WRAPPED_CIPHERTEXT_LEN],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; WRAPPED_CIPHERTEXT_LEN], D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        b64::decode_exact::<WRAPPED_CIPHERTEXT_LEN>(&s)
            .ok_or_else(|| serde::de::Error::custom("expected canonical base64 of 48 bytes"))
    }
}
