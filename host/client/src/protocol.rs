//! Request and response bodies of the device-facing HTTP routes, shared by the server
//! (`api::devices`, `api::envelopes`) and the device CLI ([`crate::device`]).
//!
//! Field names are snake_case like the rest of the API; embedded crypto objects (public keys,
//! proofs, wrapped keys, envelopes) keep their documented camelCase wire forms.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use happyx_envelope::{DevicePublicKeys, EnrollmentProof, Envelope, WrappedKey};

/// `POST /v1/enrollments` (operator).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueEnrollment {
    /// `enroll` (default): a new device; `reenroll`: a new key version for `device_id`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The device to re-enroll.
    #[serde(default)]
    pub device_id: Option<String>,
    /// A name for the new device.
    #[serde(default)]
    pub name: Option<String>,
    /// Validity in milliseconds (1 000 to 604 800 000; default 900 000).
    #[serde(default)]
    pub ttl_ms: Option<i64>,
}

/// The issued code: shown once, only its hash is kept.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct EnrollmentIssued {
    pub id: String,
    pub code: String,
    pub expires_at: i64,
    pub kind: String,
    pub device_id: Option<String>,
    /// X25519 public key the device proves possession to (canonical base64).
    pub challenge_public: String,
}

happyx_core::debug_fields!(EnrollmentIssued { id, expires_at });

/// `POST /v1/enrollments/challenge` (no token; rate-limited).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    pub code: String,
}

/// The challenge public key for a code (derived; given for any code).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChallengeResponse {
    pub challenge_public: String,
}

/// `POST /v1/enrollments/complete` (no token; the code and the proof authenticate).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteEnrollment {
    pub code: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `{"keyVersion","signingPublic","hpkePublic"}`.
    #[schema(value_type = Object)]
    pub keys: DevicePublicKeys,
    /// `{"signature","hpkeEnc","hpkeTag"}`.
    #[schema(value_type = Object)]
    pub proof: EnrollmentProof,
}

/// The enrolled device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    pub device_id: String,
    pub key_version: u64,
    pub fingerprint: String,
}

/// `POST /v1/devices/{id}/revoke` (operator).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeDevice {
    /// Why (kept with the device and in the event).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A device's public keys of one version, as the host presents them (a device checks them
/// against its pins; it never trusts them on the host's word).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerKeys {
    pub device_id: String,
    /// `{"keyVersion","signingPublic","hpkePublic"}`.
    #[schema(value_type = Object)]
    pub keys: DevicePublicKeys,
}

impl PeerKeys {
    /// The keys of `device_id` at `key_version` among `peers`, if the host sent them.
    pub fn find<'a>(peers: &'a [PeerKeys], device_id: &str, key_version: u64) -> Option<&'a Self> {
        peers
            .iter()
            .find(|p| p.device_id == device_id && p.keys.key_version == key_version)
    }
}

/// `POST /v1/encrypted-sessions` (device-signed).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    /// Chosen by the device (the wrapped keys are bound to it).
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Epoch 0's content key wrapped to every member, the opener included.
    #[schema(value_type = Vec<Object>)]
    pub wrapped_keys: Vec<WrappedKey>,
}

/// `POST /v1/sessions/{id}/epochs` (device-signed).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSession {
    /// The new epoch: exactly the current one plus one.
    pub epoch: u64,
    /// The new epoch's content key wrapped to every remaining member, the caller included.
    #[schema(value_type = Vec<Object>)]
    pub wrapped_keys: Vec<WrappedKey>,
}

/// An encrypted session's id and current epoch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionEpoch {
    pub id: String,
    pub epoch: u64,
}

/// `GET /v1/sessions/{id}/keys` (device-signed): what a member needs to send or rotate.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionKeys {
    pub session_id: String,
    pub epoch: u64,
    /// When a member of the current epoch was revoked (Unix ms), if no one has rotated since:
    /// the current epoch's key is no longer private to the members. A member should rotate
    /// before sending (after `envelopes.rotation_grace_ms` the host refuses the epoch with
    /// `rotation_required`).
    #[serde(default)]
    pub rotation_required_since: Option<i64>,
    /// Live members of the current epoch with their current keys.
    pub members: Vec<PeerKeys>,
    /// Every content key of the session wrapped to the caller.
    #[schema(value_type = Vec<Object>)]
    pub wrapped_keys: Vec<WrappedKey>,
    /// Public keys of every device that wrapped one of them.
    pub wrappers: Vec<PeerKeys>,
}

/// `GET /v1/sessions/{id}/envelopes?after=` (device-signed).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvelopePage {
    pub session_id: String,
    pub epoch: u64,
    /// Envelopes in wire form, in acceptance order.
    #[schema(value_type = Vec<Object>)]
    pub envelopes: Vec<Envelope>,
    /// Pass as `after` for the next page; equal to the request's when the page is empty.
    pub next_after: i64,
    /// Every content key of the session wrapped to the caller.
    #[schema(value_type = Vec<Object>)]
    pub wrapped_keys: Vec<WrappedKey>,
    /// Public keys, per (device, key version), of every sender and wrapper on this page.
    pub devices: Vec<PeerKeys>,
}

/// What became of one envelope of a batch, in the batch's order: `status` is the status the
/// single-envelope route would have answered; `201` carries `id` and `sequence`, any other
/// `code` and `message`.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct EnvelopeOutcome {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The body of `POST /v1/sessions/{id}/envelopes/batch` for envelopes already in wire form:
/// `{"envelopes":[…]}`.
pub fn envelope_batch_body<W: AsRef<[u8]>>(wires: &[W]) -> Vec<u8> {
    let mut body = b"{\"envelopes\":[".to_vec();
    for (i, w) in wires.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(w.as_ref());
    }
    body.extend_from_slice(b"]}");
    body
}

/// `200` body of a batch: one outcome per envelope, in order, and how many were accepted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvelopeBatchResult {
    pub accepted: u64,
    pub results: Vec<EnvelopeOutcome>,
}

/// `201` body of an accepted envelope.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvelopeAccepted {
    pub id: String,
    pub session_id: String,
    pub sender_device_id: String,
    pub sequence: u64,
}
