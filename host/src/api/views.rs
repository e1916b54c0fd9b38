//! The API's response types for stored records: what `/v1/…` returns for a task, a session, a
//! permission, a run, an approval, a terminal, an event, a device and envelope metadata.
//!
//! The rule: handlers return views, never store rows. A row is what the store keeps; a view is
//! what the API publishes, field by field, built from a row with `From`. A column added to
//! the store becomes API only when a field is added here (and so to the OpenAPI document).
//! The names and JSON shapes are the API's and do not change with the store's.
//! `/public/…` has its own, narrower views (`api::public`).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::store;
use happyx_core::vocab::ApprovalStatus;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct EventRow {
    pub id: String,
    /// Gap-free position in the log, starting at 1.
    pub seq: i64,
    pub at: i64,
    pub code: String,
    pub actor: String,
    pub subject: String,
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<store::EventRow> for EventRow {
    fn from(r: store::EventRow) -> Self {
        EventRow {
            id: r.id,
            seq: r.seq,
            at: r.at,
            code: r.code,
            actor: r.actor,
            subject: r.subject,
            data: r.data,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub description: String,
    /// `open`, `in_progress`, `done` or `cancelled`.
    pub status: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<store::Task> for Task {
    fn from(r: store::Task) -> Self {
        Task {
            id: r.id,
            title: r.title,
            description: r.description,
            status: r.status.to_string(),
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Session {
    pub id: String,
    pub name: String,
    /// `agent`, `terminal` or `encrypted`.
    pub kind: String,
    /// `open` or `closed`.
    pub status: String,
    pub task_id: Option<String>,
    /// Current key epoch (encrypted sessions).
    pub epoch: i64,
    /// Encrypted sessions: when a member of the current epoch was revoked (Unix ms); the
    /// session owes a rotation to a new epoch, and envelopes under the current one are refused
    /// `rotation_required` once `envelopes.rotation_grace_ms` has passed. `null` otherwise.
    pub rotation_required_since: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<store::Session> for Session {
    fn from(r: store::Session) -> Self {
        Session {
            id: r.id,
            name: r.name,
            kind: r.kind.to_string(),
            status: r.status.to_string(),
            task_id: r.task_id,
            epoch: r.epoch,
            rotation_required_since: r.rotation_required_since,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Permission {
    pub id: String,
    /// Token or device id the grant is for.
    pub subject: String,
    /// Class of action, e.g. `pty.drive`.
    pub action: String,
    /// Where it applies, e.g. `session:<id>` or `*`.
    pub scope: String,
    /// `active` or `revoked`.
    pub status: String,
    pub granted_by: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<store::Permission> for Permission {
    fn from(r: store::Permission) -> Self {
        Permission {
            id: r.id,
            subject: r.subject,
            action: r.action,
            scope: r.scope,
            status: r.status.to_string(),
            granted_by: r.granted_by,
            expires_at: r.expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Public-safe run metadata.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Run {
    pub id: String,
    pub recipe: String,
    pub risk: String,
    /// `queued`, `running`, `succeeded`, `failed`, `timed_out`, `lost`, or `spawn_failed` (the
    /// program could not be started; `error` says why).
    pub status: String,
    pub exit_code: Option<i64>,
    pub session_id: Option<String>,
    pub requested_by: String,
    pub approval_id: Option<String>,
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
    /// Secrets the redactor masked in this run's output.
    pub findings: i64,
    /// Output chunks withheld because the redactor failed on them.
    pub unredacted_chunks: i64,
    /// Output beyond `runs.max_output_bytes` was not kept.
    pub truncated: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    /// Why the program could not be started (`spawn_failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// SHA-256 (hex) of the recipe plugin that rendered this run (as `GET /v1/plugins` shows
    /// it); `null` for runs recorded before hosts kept it.
    #[schema(format = "sha256")]
    pub recipe_plugin_sha256: Option<String>,
    /// The host that owns it (an `id` of `GET /v1/hosts`); absent for rows written before
    /// hosts kept it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
}

impl From<store::Run> for Run {
    fn from(r: store::Run) -> Self {
        Run {
            id: r.id,
            recipe: r.recipe,
            risk: r.risk.to_string(),
            status: r.status.to_string(),
            exit_code: r.exit_code,
            session_id: r.session_id,
            requested_by: r.requested_by,
            approval_id: r.approval_id,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            findings: r.findings,
            unredacted_chunks: r.unredacted_chunks,
            truncated: r.truncated,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
            error: r.error,
            recipe_plugin_sha256: r.recipe_plugin_sha256,
            host_id: r.host_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Approval {
    pub id: String,
    /// `run`, `pty` or `attach`.
    pub kind: String,
    /// SHA-256 over the canonical encoding of the exact action.
    pub action_hash: String,
    /// The action as the operator sees it: recipe, args, rendered command.
    #[schema(value_type = Object)]
    pub action: Value,
    pub requester: String,
    /// `pending`, `approved`, `denied` or `used`.
    pub status: ApprovalStatus,
    pub decider: Option<String>,
    pub decided_at: Option<i64>,
    pub scope: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<store::Approval> for Approval {
    fn from(r: store::Approval) -> Self {
        Approval {
            id: r.id,
            kind: r.kind.to_string(),
            action_hash: r.action_hash,
            action: r.action,
            requester: r.requester,
            status: r.status,
            decider: r.decider,
            decided_at: r.decided_at,
            scope: r.scope,
            expires_at: r.expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Public-safe PTY session metadata (no socket path, no secret hash).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct PtySession {
    pub id: String,
    pub recipe: String,
    pub risk: String,
    /// `starting`, `running`, `exited`, `lost` or `killed`.
    pub state: String,
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    /// Signal number that ended the program, if any.
    pub exit_signal: Option<i64>,
    pub rows: i64,
    pub cols: i64,
    /// Raw output bytes persisted in the transcript so far.
    pub output_bytes: i64,
    /// Secrets the redactor masked in the transcript.
    pub findings: i64,
    /// Transcript chunks withheld because the redactor failed on them.
    pub withheld_chunks: i64,
    /// The transcript reached `[pty] max_transcript_bytes`: output past it was shown to live
    /// viewers but not stored.
    pub truncated: bool,
    pub requested_by: String,
    pub approval_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub exited_at: Option<i64>,
    /// Why the program could not be started (then `exited` with code 127).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// SHA-256 (hex) of the recipe plugin that rendered this terminal's program (as
    /// `GET /v1/plugins` shows it); `null` for terminals recorded before hosts kept it.
    #[schema(format = "sha256")]
    pub recipe_plugin_sha256: Option<String>,
    /// The host that owns it (an `id` of `GET /v1/hosts`); absent for rows written before
    /// hosts kept it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
}

impl From<store::PtySession> for PtySession {
    fn from(r: store::PtySession) -> Self {
        PtySession {
            id: r.id,
            recipe: r.recipe,
            risk: r.risk.to_string(),
            state: r.state.to_string(),
            pid: r.pid,
            exit_code: r.exit_code,
            exit_signal: r.exit_signal,
            rows: r.rows,
            cols: r.cols,
            output_bytes: r.output_bytes,
            findings: r.findings,
            withheld_chunks: r.withheld_chunks,
            truncated: r.truncated,
            requested_by: r.requested_by,
            approval_id: r.approval_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            exited_at: r.exited_at,
            error: r.error,
            recipe_plugin_sha256: r.recipe_plugin_sha256,
            host_id: r.host_id,
        }
    }
}

/// One key version of a device (public halves only).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct DeviceKeyRow {
    pub device_id: String,
    pub key_version: i64,
    /// Ed25519 public key, canonical base64.
    pub signing_public: String,
    /// X25519 public key, canonical base64.
    pub hpke_public: String,
    pub fingerprint: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl From<store::DeviceKeyRow> for DeviceKeyRow {
    fn from(r: store::DeviceKeyRow) -> Self {
        DeviceKeyRow {
            device_id: r.device_id,
            key_version: r.key_version,
            signing_public: r.signing_public,
            hpke_public: r.hpke_public,
            fingerprint: r.fingerprint,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A device and its key versions (metadata for operators).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct DeviceRow {
    pub id: String,
    pub name: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub keys: Vec<DeviceKeyRow>,
}

impl From<store::DeviceRow> for DeviceRow {
    fn from(r: store::DeviceRow) -> Self {
        DeviceRow {
            id: r.id,
            name: r.name,
            status: r.status.to_string(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
            revoke_reason: r.revoke_reason,
            keys: r.keys.into_iter().map(DeviceKeyRow::from).collect(),
        }
    }
}

/// Per-sender envelope metadata of a session (no ciphertext, nonce or signature).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct SenderStats {
    pub sender_device_id: String,
    pub envelopes: i64,
    pub first_sequence: i64,
    pub last_sequence: i64,
    /// Bytes of wire JSON received.
    pub bytes: i64,
}

impl From<store::SenderStats> for SenderStats {
    fn from(r: store::SenderStats) -> Self {
        SenderStats {
            sender_device_id: r.sender_device_id,
            envelopes: r.envelopes,
            first_sequence: r.first_sequence,
            last_sequence: r.last_sequence,
            bytes: r.bytes,
        }
    }
}

/// Envelope metadata of a session, safe for operators and public views.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct EnvelopeStats {
    pub session_id: String,
    pub epoch: i64,
    pub envelopes: i64,
    pub bytes: i64,
    pub senders: Vec<SenderStats>,
}

impl From<store::EnvelopeStats> for EnvelopeStats {
    fn from(r: store::EnvelopeStats) -> Self {
        EnvelopeStats {
            session_id: r.session_id,
            epoch: r.epoch,
            envelopes: r.envelopes,
            bytes: r.bytes,
            senders: r.senders.into_iter().map(SenderStats::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each view serialises exactly as the row did when handlers returned rows: same field
    //! names, order and values, `error` absent when `None`.

    use serde_json::json;

    use super::*;
    use happyx_core::vocab::{
        ActionKind, DeviceStatus, PermissionStatus, PtyState, Risk, RunStatus, SessionKind,
        SessionStatus, TaskStatus,
    };

    fn text<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("json")
    }

    #[test]
    fn a_run_view_serialises_as_before() {
        let mut row = store::Run::queued(
            "r1".into(),
            "echo".into(),
            Risk::Medium,
            Some("s1".into()),
            "token:a".into(),
            5,
        );
        row.status = RunStatus::TimedOut;
        row.recipe_plugin_sha256 = Some("ab".into());
        assert_eq!(
            text(&Run::from(row.clone())),
            r#"{"id":"r1","recipe":"echo","risk":"medium","status":"timed_out","exit_code":null,"session_id":"s1","requested_by":"token:a","approval_id":null,"stdout_bytes":0,"stderr_bytes":0,"findings":0,"unredacted_chunks":0,"truncated":false,"created_at":5,"started_at":null,"finished_at":null,"updated_at":5,"recipe_plugin_sha256":"ab"}"#
        );
        row.status = RunStatus::SpawnFailed;
        row.error = Some("no such file".into());
        let v = serde_json::to_value(Run::from(row)).expect("json");
        assert_eq!(v["status"], "spawn_failed");
        assert_eq!(v["error"], "no such file");
    }

    #[test]
    fn a_terminal_view_serialises_as_before() {
        let row = store::PtySession {
            id: "p1".into(),
            recipe: "shell".into(),
            risk: Risk::High,
            state: PtyState::Killed,
            pid: Some(7),
            exit_code: None,
            exit_signal: Some(9),
            rows: 24,
            cols: 80,
            output_bytes: 3,
            findings: 1,
            withheld_chunks: 0,
            truncated: false,
            requested_by: "token:a".into(),
            approval_id: Some("ap".into()),
            created_at: 1,
            updated_at: 2,
            exited_at: Some(2),
            error: None,
            recipe_plugin_sha256: None,
            host_id: Some("h-00112233aabbccdd".into()),
        };
        assert_eq!(
            text(&PtySession::from(row)),
            r#"{"id":"p1","recipe":"shell","risk":"high","state":"killed","pid":7,"exit_code":null,"exit_signal":9,"rows":24,"cols":80,"output_bytes":3,"findings":1,"withheld_chunks":0,"truncated":false,"requested_by":"token:a","approval_id":"ap","created_at":1,"updated_at":2,"exited_at":2,"recipe_plugin_sha256":null,"host_id":"h-00112233aabbccdd"}"#
        );
    }

    #[test]
    fn record_views_serialise_as_before() {
        let task = store::Task {
            id: "t".into(),
            title: "x".into(),
            description: String::new(),
            status: TaskStatus::InProgress,
            created_by: "token:a".into(),
            created_at: 1,
            updated_at: 2,
        };
        assert_eq!(
            text(&Task::from(task)),
            r#"{"id":"t","title":"x","description":"","status":"in_progress","created_by":"token:a","created_at":1,"updated_at":2}"#
        );
        let session = store::Session {
            id: "s".into(),
            name: "n".into(),
            kind: SessionKind::Encrypted,
            status: SessionStatus::Closed,
            task_id: None,
            epoch: 3,
            rotation_required_since: Some(4),
            created_by: "device:d".into(),
            created_at: 1,
            updated_at: 2,
        };
        assert_eq!(
            text(&Session::from(session)),
            r#"{"id":"s","name":"n","kind":"encrypted","status":"closed","task_id":null,"epoch":3,"rotation_required_since":4,"created_by":"device:d","created_at":1,"updated_at":2}"#
        );
        let p = store::Permission {
            id: "p".into(),
            subject: "tok".into(),
            action: "pty.drive".into(),
            scope: "*".into(),
            status: PermissionStatus::Revoked,
            granted_by: "token:o".into(),
            expires_at: None,
            created_at: 1,
            updated_at: 2,
        };
        assert_eq!(
            text(&Permission::from(p)),
            r#"{"id":"p","subject":"tok","action":"pty.drive","scope":"*","status":"revoked","granted_by":"token:o","expires_at":null,"created_at":1,"updated_at":2}"#
        );
        let ev = store::EventRow {
            id: "e".into(),
            seq: 1,
            at: 2,
            code: "run.created".into(),
            actor: "host".into(),
            subject: "r".into(),
            data: json!({"a": 1}),
        };
        assert_eq!(
            text(&EventRow::from(ev)),
            r#"{"id":"e","seq":1,"at":2,"code":"run.created","actor":"host","subject":"r","data":{"a":1}}"#
        );
    }

    #[test]
    fn an_approval_view_serialises_as_before() {
        let a = store::Approval {
            id: "a".into(),
            kind: ActionKind::Pty,
            action_hash: "h".into(),
            action: json!({"recipe": "shell"}),
            requester: "token:a".into(),
            status: ApprovalStatus::Pending,
            decider: None,
            decided_at: None,
            scope: "*".into(),
            expires_at: 9,
            created_at: 1,
            updated_at: 2,
        };
        assert_eq!(
            text(&Approval::from(a)),
            r#"{"id":"a","kind":"pty","action_hash":"h","action":{"recipe":"shell"},"requester":"token:a","status":"pending","decider":null,"decided_at":null,"scope":"*","expires_at":9,"created_at":1,"updated_at":2}"#
        );
    }

    #[test]
    fn device_and_envelope_views_serialise_as_before() {
        let d = store::DeviceRow {
            id: "d".into(),
            name: Some("laptop".into()),
            status: DeviceStatus::Active,
            created_at: 1,
            updated_at: 2,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            keys: vec![store::DeviceKeyRow {
                device_id: "d".into(),
                key_version: 1,
                signing_public: "sp".into(),
                hpke_public: "hp".into(),
                fingerprint: "fp".into(),
                created_at: 1,
                revoked_at: None,
            }],
        };
        assert_eq!(
            text(&DeviceRow::from(d)),
            r#"{"id":"d","name":"laptop","status":"active","created_at":1,"updated_at":2,"revoked_at":null,"revoked_by":null,"revoke_reason":null,"keys":[{"device_id":"d","key_version":1,"signing_public":"sp","hpke_public":"hp","fingerprint":"fp","created_at":1,"revoked_at":null}]}"#
        );
        let e = store::EnvelopeStats {
            session_id: "s".into(),
            epoch: 1,
            envelopes: 2,
            bytes: 30,
            senders: vec![store::SenderStats {
                sender_device_id: "d".into(),
                envelopes: 2,
                first_sequence: 1,
                last_sequence: 2,
                bytes: 30,
            }],
        };
        assert_eq!(
            text(&EnvelopeStats::from(e)),
            r#"{"session_id":"s","epoch":1,"envelopes":2,"bytes":30,"senders":[{"sender_device_id":"d","envelopes":2,"first_sequence":1,"last_sequence":2,"bytes":30}]}"#
        );
    }

    /// A vocabulary's schema lists the names its JSON carries (`"pending"`, not `"Pending"`):
    /// clients generated from the document must accept what the host sends.
    #[test]
    fn vocabulary_schemas_list_the_wire_names() {
        let doc = serde_json::to_value(crate::api::openapi()).expect("json");
        let schemas = &doc["components"]["schemas"];
        let names = |all: Vec<&str>| -> Vec<serde_json::Value> {
            all.into_iter().map(serde_json::Value::from).collect()
        };
        let expect = [
            (
                "ApprovalStatus",
                names(ApprovalStatus::ALL.iter().map(|v| v.as_str()).collect()),
            ),
            (
                "Role",
                names(crate::vocab::Role::ALL.iter().map(|v| v.as_str()).collect()),
            ),
        ];
        for (schema, wire) in expect {
            assert_eq!(
                schemas[schema]["enum"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                wire,
                "{schema}: {}",
                schemas[schema]
            );
        }
    }

    /// The schemas the document names: adding a row field, a vocabulary enum or a view shows
    /// here first. A view's schema lists exactly the fields its JSON has.
    #[test]
    fn the_document_names_these_schemas_and_views_document_their_fields() {
        let doc = serde_json::to_value(crate::api::openapi()).expect("json");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut names: Vec<&str> = schemas.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names.join(" "),
            "Approval ApprovalList ApprovalRequired ApprovalStatus ApprovalView AttachBody \
             AttachTicket ChallengeRequest ChallengeResponse Checkpoint CompleteEnrollment \
             ConsoleSession Decision DecisionBody DeviceKeyRow DeviceList DeviceRow Enrolled \
             EnrollmentIssued EnvelopeAccepted EnvelopeBatchResult EnvelopeOutcome EnvelopePage \
             EnvelopeStats ErrorBody EventPage EventRow Guarantees Health HostView IssueEnrollment \
             NewPermission NewPtyBody NewRun NewSession NewTask OpenSession Overview PeerKeys \
             Permission PermissionList PermissionStatus PermissionUpdate PtyList PtySession \
             PublicCheckpointList PublicEnvelopes PublicEvidence PublicMigration PublicPlugin \
             PublicPrune PublicRedaction PublicRun PublicRunList PublicSender PublicSession \
             PublicSessionList PublicState PublicTranscript ResizeBody RevokeDevice Role \
             RotateSession Run RunList SecretMark SenderStats Session SessionEpoch SessionKeys \
             SessionKind SessionList SessionStatus SessionUpdate SignIn Status Task TaskList \
             TaskStatus TaskUpdate"
        );
        let mut run = store::Run::queued(
            "r".into(),
            "echo".into(),
            Risk::Low,
            None,
            "token:a".into(),
            1,
        );
        run.error = Some("e".into());
        run.host_id = Some("h-00112233aabbccdd".into());
        let sample = serde_json::to_value(Run::from(run)).expect("json");
        let mut fields: Vec<&String> = sample.as_object().expect("object").keys().collect();
        let mut documented: Vec<&String> = schemas["Run"]["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        fields.sort_unstable();
        documented.sort_unstable();
        assert_eq!(fields, documented);
    }
}
