//! Small shared helpers: the clock, identifiers, hashing, and `Debug` for types holding secrets.

use sha2::{Digest, Sha256};

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new time-ordered identifier (UUIDv7, hyphenated lowercase).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Fills a fresh array with operating-system randomness.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all; a host
    // that cannot produce secrets must not pretend it did.
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("operating system randomness unavailable: {e}");
    }
    buf
}

/// Whether `id` looks like one of our identifiers (bounded length, safe charset).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Implements `Debug` for a type that holds secrets (keys, ciphertext, hashes of tokens) by
/// listing only the fields that may appear in logs; the rest show as `..`.
///
/// ```text
/// debug_fields!(WrappedKeyRow { session_id, epoch });  // WrappedKeyRow { session_id: "…", epoch: 2, .. }
/// ```
macro_rules! debug_fields {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))+
                    .finish_non_exhaustive()
            }
        }
    };
}
pub(crate) use debug_fields;
