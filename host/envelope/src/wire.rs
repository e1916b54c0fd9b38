//! The envelope wire form: a strict JSON object parsed into [`Envelope`] and printed back.
//!
//! `{"v","sessionId","senderDeviceId","keyVersion","epoch","sequence","createdAt","nonce",
//! "ciphertext","signature"}`: the integers are JSON integers (u64; floats, negatives, strings
//! refused); `nonce`, `ciphertext` and `signature` are canonical standard base64 with padding.
//! Unknown and duplicate keys, trailing data and anything over the limits are refused with
//! `invalid_envelope`. Printing an envelope gives the same field order every time.

use std::fmt;

use serde::Deserialize;

use super::b64;
use super::error::EnvelopeError;
use super::header::EnvelopeHeader;
use super::limits::{
    MAX_CIPHERTEXT_LEN, MAX_ENVELOPE_JSON_LEN, MIN_CIPHERTEXT_LEN, NONCE_LEN, SIGNATURE_LEN,
    is_valid_id,
};

/// The only wire format version this code reads and writes.
pub const ENVELOPE_VERSION: u64 = 1;

/// One end-to-end encrypted message, as relayed and stored by the server.
///
/// `Debug` shows the header and the ciphertext's length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Wire format version ([`ENVELOPE_VERSION`]).
    pub v: u64,
    /// The encrypted session.
    pub session_id: String,
    /// The sending device.
    pub sender_device_id: String,
    /// The sender's key version that signed it.
    pub key_version: u64,
    /// The content-key epoch of the session.
    pub epoch: u64,
    /// The sender's per-session sequence number.
    pub sequence: u64,
    /// Unix milliseconds at sealing.
    pub created_at: u64,
    /// XChaCha20-Poly1305 nonce.
    pub nonce: [u8; NONCE_LEN],
    /// XChaCha20-Poly1305 ciphertext, tag included.
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature over the signature message (see [`super::signature_message`]).
    pub signature: [u8; SIGNATURE_LEN],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire {
    v: u64,
    session_id: String,
    sender_device_id: String,
    key_version: u64,
    epoch: u64,
    sequence: u64,
    created_at: u64,
    nonce: String,
    ciphertext: String,
    signature: String,
}

const FIELDS: [&str; 10] = [
    "v",
    "sessionId",
    "senderDeviceId",
    "keyVersion",
    "epoch",
    "sequence",
    "createdAt",
    "nonce",
    "ciphertext",
    "signature",
];

impl Envelope {
    /// Parses and checks the wire form. Every refusal is [`EnvelopeError::Invalid`]
    /// (`invalid_envelope`); the signature is not checked here (see [`Envelope::verify`]).
    pub fn parse(json: &[u8]) -> Result<Self, EnvelopeError> {
        if json.len() > MAX_ENVELOPE_JSON_LEN {
            return Err(EnvelopeError::invalid(format!(
                "envelope is {} bytes, over the limit of {MAX_ENVELOPE_JSON_LEN}",
                json.len()
            )));
        }
        let wire: Wire = serde_json::from_slice(json).map_err(|e| json_error(&e))?;
        Self::from_wire(wire)
    }

    fn from_wire(w: Wire) -> Result<Self, EnvelopeError> {
        if w.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::invalid(format!(
                "unsupported version {} (expected {ENVELOPE_VERSION})",
                w.v
            )));
        }
        if !is_valid_id(&w.session_id) {
            return Err(EnvelopeError::invalid("sessionId is not a valid id"));
        }
        if !is_valid_id(&w.sender_device_id) {
            return Err(EnvelopeError::invalid("senderDeviceId is not a valid id"));
        }
        let nonce = b64::decode_exact::<NONCE_LEN>(&w.nonce).ok_or_else(|| {
            EnvelopeError::invalid(format!(
                "nonce is not canonical base64 of {NONCE_LEN} bytes"
            ))
        })?;
        let signature = b64::decode_exact::<SIGNATURE_LEN>(&w.signature).ok_or_else(|| {
            EnvelopeError::invalid(format!(
                "signature is not canonical base64 of {SIGNATURE_LEN} bytes"
            ))
        })?;
        let ciphertext =
            b64::decode_canonical(&w.ciphertext, MAX_CIPHERTEXT_LEN).ok_or_else(|| {
                EnvelopeError::invalid(format!(
                    "ciphertext is not canonical base64 of at most {MAX_CIPHERTEXT_LEN} bytes"
                ))
            })?;
        if ciphertext.len() < MIN_CIPHERTEXT_LEN {
            return Err(EnvelopeError::invalid(format!(
                "ciphertext is shorter than the {MIN_CIPHERTEXT_LEN}-byte tag"
            )));
        }
        Ok(Self {
            v: w.v,
            session_id: w.session_id,
            sender_device_id: w.sender_device_id,
            key_version: w.key_version,
            epoch: w.epoch,
            sequence: w.sequence,
            created_at: w.created_at,
            nonce,
            ciphertext,
            signature,
        })
    }

    /// The wire form: one line of JSON with the fields in their documented order.
    pub fn to_json(&self) -> String {
        // `Value`'s Display is infallible and escapes strings correctly.
        let session_id = serde_json::Value::from(self.session_id.as_str());
        let sender = serde_json::Value::from(self.sender_device_id.as_str());
        format!(
            concat!(
                r#"{{"v":{},"sessionId":{},"senderDeviceId":{},"keyVersion":{},"epoch":{},"#,
                r#""sequence":{},"createdAt":{},"nonce":"{}","ciphertext":"{}","signature":"{}"}}"#
            ),
            self.v,
            session_id,
            sender,
            self.key_version,
            self.epoch,
            self.sequence,
            self.created_at,
            b64::encode(&self.nonce),
            b64::encode(&self.ciphertext),
            b64::encode(&self.signature),
        )
    }

    /// The header fields (the AEAD's associated data, before encoding).
    pub fn header(&self) -> EnvelopeHeader {
        EnvelopeHeader {
            v: self.v,
            session_id: self.session_id.clone(),
            sender_device_id: self.sender_device_id.clone(),
            key_version: self.key_version,
            epoch: self.epoch,
            sequence: self.sequence,
            created_at: self.created_at,
        }
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("v", &self.v)
            .field("session_id", &self.session_id)
            .field("sender_device_id", &self.sender_device_id)
            .field("key_version", &self.key_version)
            .field("epoch", &self.epoch)
            .field("sequence", &self.sequence)
            .field("created_at", &self.created_at)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl serde::Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Envelope", FIELDS.len())?;
        s.serialize_field("v", &self.v)?;
        s.serialize_field("sessionId", &self.session_id)?;
        s.serialize_field("senderDeviceId", &self.sender_device_id)?;
        s.serialize_field("keyVersion", &self.key_version)?;
        s.serialize_field("epoch", &self.epoch)?;
        s.serialize_field("sequence", &self.sequence)?;
        s.serialize_field("createdAt", &self.created_at)?;
        s.serialize_field("nonce", &b64::encode(&self.nonce))?;
        s.serialize_field("ciphertext", &b64::encode(&self.ciphertext))?;
        s.serialize_field("signature", &b64::encode(&self.signature))?;
        s.end()
    }
}

impl<'de> serde::Deserialize<'de> for Envelope {
    /// The same strict checks as [`Envelope::parse`] except the overall size limit, which the
    /// caller's body limit enforces.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Self::from_wire(wire).map_err(serde::de::Error::custom)
    }
}

/// Turns a serde_json error into a refusal that names the problem and position but never echoes
/// a peer-supplied value: quoted values are elided, backquoted names kept only if they are ours.
fn json_error(e: &serde_json::Error) -> EnvelopeError {
    let text = e.to_string();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find(['"', '`']) {
        out.push_str(&rest[..i]);
        let quote = &rest[i..=i];
        let after = &rest[i + 1..];
        match after.find(quote) {
            Some(j) => {
                let inner = &after[..j];
                if quote == "`" && FIELDS.contains(&inner) {
                    out.push('`');
                    out.push_str(inner);
                    out.push('`');
                } else {
                    out.push('…');
                }
                rest = &after[j + 1..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    // serde_json appends " at line L column C" to data errors already; syntax errors too.
    EnvelopeError::invalid(format!("malformed JSON: {out}"))
}
