//! Device request signatures, the client side: the bytes a device signs for one HTTP request
//! and the four headers that carry the signature (the format is in the server's
//! `devices::auth` docs and `docs/envelope.md`). The server verifies the same bytes with
//! [`request_message`]; clients of any kind sign with [`sign_request`].

use sha2::{Digest as _, Sha256};

use crate::DeviceKeys;

/// Domain separation of device request signatures.
pub const REQUEST_DOMAIN: &[u8] = b"happyx-device-request-v1\0";
/// Header naming the device.
pub const DEVICE_HEADER: &str = "x-happyx-device";
/// Header naming the signing key version.
pub const KEY_VERSION_HEADER: &str = "x-happyx-key-version";
/// Header with the signing time (Unix ms).
pub const TIMESTAMP_HEADER: &str = "x-happyx-timestamp";
/// Header with the base64 signature.
pub const SIGNATURE_HEADER: &str = "x-happyx-signature";
fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The bytes a device signs for one request.
pub fn request_message(
    device_id: &str,
    key_version: u64,
    timestamp: u64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_DOMAIN.len() + 128 + path_and_query.len());
    out.extend_from_slice(REQUEST_DOMAIN);
    put_lp(&mut out, device_id.as_bytes());
    put_lp(&mut out, &key_version.to_be_bytes());
    put_lp(&mut out, &timestamp.to_be_bytes());
    put_lp(&mut out, method.as_bytes());
    put_lp(&mut out, path_and_query.as_bytes());
    put_lp(&mut out, &Sha256::digest(body));
    out
}

/// The four headers for a request signed by `keys` as `device_id`.
pub fn sign_request(
    keys: &DeviceKeys,
    device_id: &str,
    timestamp: u64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> [(&'static str, String); 4] {
    let message = request_message(
        device_id,
        keys.key_version(),
        timestamp,
        method,
        path_and_query,
        body,
    );
    let signature = keys.sign(&message);
    [
        (DEVICE_HEADER, device_id.to_owned()),
        (KEY_VERSION_HEADER, keys.key_version().to_string()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, crate::b64_encode(&signature)),
    ]
}
