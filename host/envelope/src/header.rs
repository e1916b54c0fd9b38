//! The canonical header encoding (the AEAD's associated data) and the signature message.
//!
//! Both are length-prefixed and domain-separated so that no two distinct inputs encode alike:
//!
//! ```text
//! lp(x)          = u32_be(len(x)) || x
//! u64(n)         = lp(8-byte big-endian n)
//! header_bytes   = "happyx-envelope-header-v1\0"
//!                  || u64(v) || lp(sessionId) || lp(senderDeviceId)
//!                  || u64(keyVersion) || u64(epoch) || u64(sequence) || u64(createdAt)
//! sig_message    = "happyx-envelope-sig-v1\0"
//!                  || lp(header_bytes) || lp(nonce) || lp(ciphertext)
//! ```
//!
//! Ids are their UTF-8 (ASCII) bytes. The AEAD associated data is `header_bytes`; the Ed25519
//! signature covers `sig_message`, i.e. every field but the signature itself.

/// Domain tag opening the header encoding (the AEAD associated data).
pub const HEADER_DOMAIN: &[u8] = b"happyx-envelope-header-v1\0";

/// Domain tag opening the message the sender signs.
pub const SIGNATURE_DOMAIN: &[u8] = b"happyx-envelope-sig-v1\0";

/// Every envelope field that is neither encrypted nor the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Wire format version; always [`super::ENVELOPE_VERSION`].
    pub v: u64,
    /// The encrypted session the envelope belongs to.
    pub session_id: String,
    /// The device that sealed and signed it.
    pub sender_device_id: String,
    /// The sender's key version whose signing key signed it.
    pub key_version: u64,
    /// The session's content-key epoch used for the ciphertext.
    pub epoch: u64,
    /// The sender's per-session sequence number.
    pub sequence: u64,
    /// When the sender sealed it, Unix milliseconds.
    pub created_at: u64,
}

impl EnvelopeHeader {
    /// The canonical header encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_DOMAIN.len()
                + 7 * 4
                + 5 * 8
                + self.session_id.len()
                + self.sender_device_id.len(),
        );
        out.extend_from_slice(HEADER_DOMAIN);
        put_u64(&mut out, self.v);
        put_lp(&mut out, self.session_id.as_bytes());
        put_lp(&mut out, self.sender_device_id.as_bytes());
        put_u64(&mut out, self.key_version);
        put_u64(&mut out, self.epoch);
        put_u64(&mut out, self.sequence);
        put_u64(&mut out, self.created_at);
        out
    }
}

/// The exact bytes the sender's Ed25519 key signs: the signature domain tag, then the header
/// encoding, the nonce and the ciphertext, each length-prefixed.
pub fn signature_message(header_bytes: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        SIGNATURE_DOMAIN.len() + 12 + header_bytes.len() + nonce.len() + ciphertext.len(),
    );
    out.extend_from_slice(SIGNATURE_DOMAIN);
    put_lp(&mut out, header_bytes);
    put_lp(&mut out, nonce);
    put_lp(&mut out, ciphertext);
    out
}

/// Appends `u32_be(len(bytes)) || bytes`. Every input here is bounded far below 4 GiB by the
/// limits; anything longer saturates the prefix, which no parser would accept anyway.
pub(crate) fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an integer as a length-prefixed 8-byte big-endian value.
pub(crate) fn put_u64(out: &mut Vec<u8>, n: u64) {
    put_lp(out, &n.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> EnvelopeHeader {
        EnvelopeHeader {
            v: 1,
            session_id: "s".into(),
            sender_device_id: "d".into(),
            key_version: 2,
            epoch: 3,
            sequence: 4,
            created_at: 5,
        }
    }

    #[test]
    fn encoding_is_length_prefixed_and_domain_separated() {
        let bytes = header().encode();
        assert!(bytes.starts_with(HEADER_DOMAIN));
        let rest = &bytes[HEADER_DOMAIN.len()..];
        assert_eq!(&rest[..12], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&rest[12..17], &[0, 0, 0, 1, b's']);
        assert_eq!(rest.len(), 12 + 5 + 5 + 4 * 12);
    }

    #[test]
    fn moving_bytes_between_ids_changes_the_encoding() {
        let mut a = header();
        a.session_id = "ab".into();
        a.sender_device_id = "c".into();
        let mut b = header();
        b.session_id = "a".into();
        b.sender_device_id = "bc".into();
        assert_ne!(a.encode(), b.encode());
    }
}
