//! Strict, canonical standard base64 (RFC 4648 §4, with padding) for the binary wire fields.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Encodes with the standard alphabet and padding.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes only the canonical form: standard alphabet, required padding, zero trailing bits, no
/// whitespace. `max_len` bounds the decoded length and is checked before decoding. Returns `None`
/// for anything else; the caller names the field.
pub(crate) fn decode_canonical(text: &str, max_len: usize) -> Option<Vec<u8>> {
    // A canonical encoding of n bytes is exactly 4 * ceil(n / 3) characters.
    if !text.len().is_multiple_of(4) || text.len() / 4 * 3 > max_len + 2 {
        return None;
    }
    let bytes = STANDARD.decode(text).ok()?;
    if bytes.len() > max_len {
        return None;
    }
    // The engine already refuses bad padding and trailing bits; re-encoding is the final word.
    (STANDARD.encode(&bytes) == text).then_some(bytes)
}

/// Decodes a canonical base64 field of exactly `N` bytes.
pub(crate) fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode_canonical(text, N)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_canonical_forms() {
        assert_eq!(decode_canonical("AAEC", 10), Some(vec![0, 1, 2]));
        assert_eq!(decode_canonical("AAE=", 10), Some(vec![0, 1]));
        assert_eq!(decode_canonical("", 10), Some(vec![]));
        // missing padding
        assert_eq!(decode_canonical("AAE", 10), None);
        // non-zero trailing bits
        assert_eq!(decode_canonical("AAF=", 10), None);
        // URL-safe alphabet
        assert_eq!(decode_canonical("-_-_", 10), None);
        // whitespace
        assert_eq!(decode_canonical("AA E=", 10), None);
        assert_eq!(decode_canonical("AAE=\n", 10), None);
        // excess padding
        assert_eq!(decode_canonical("AA==AA==", 10), None);
        // too long
        assert_eq!(decode_canonical("AAEC", 2), None);
        assert_eq!(decode_exact::<2>("AAE="), Some([0, 1]));
        assert_eq!(decode_exact::<2>("AAEC"), None);
    }
}
