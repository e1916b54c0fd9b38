//! The server side of devices and encrypted sessions: enrollment codes and proofs of
//! possession, device request authentication, session opening and rotation with wrapped keys,
//! reads for members, and the envelope ingest path. HTTP lives in `api`; SQL in `store`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::auth::{REQUEST_WINDOW_MS, RateLimiter, ReplayCache, request_message};
use super::ingest::Ingestor;
use super::protocol::{
    ChallengeResponse, CompleteEnrollment, Enrolled, EnrollmentIssued, EnvelopePage,
    IssueEnrollment, OpenSession, PeerKeys, RotateSession, SessionEpoch, SessionKeys,
};
use crate::config::{DevicesConfig, EnvelopesConfig};
use crate::envelope::limits::is_valid_id;
use crate::envelope::{
    ChallengeKey, CryptoError, DevicePublicKeys, Envelope, SigningPublicKey, WrappedKey,
    b64_decode_32, b64_encode, enrollment_code_hash,
};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::{
    DeviceKeyRow, EnrollOutcome, NewDeviceKey, NewEnrollment, Session, StoreError, StoredEnvelope,
    WrappedKeyRow,
};
use crate::util::{new_id, now_ms};
use happyx_core::vocab::{SessionKind, SessionStatus};

/// File in the data dir holding the secret enrollment challenge keys are derived from.
pub const ENROLL_SECRET_FILE: &str = "enroll-secret.key";
/// Default validity of an enrollment code.
pub const DEFAULT_CODE_TTL_MS: i64 = 15 * 60 * 1000;
/// Most members (wrapped keys) per session epoch.
pub const MAX_MEMBERS: usize = 64;
/// Largest page of envelopes returned by one read.
pub const MAX_READ_PAGE: i64 = 500;

/// Why a device operation was refused. Messages never contain codes, keys or ciphertext.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("too many enrollment attempts; retry later")]
    RateLimited,
    #[error("{0}")]
    InvalidField(String),
    #[error(transparent)]
    Crypto(CryptoError),
    #[error("the enrollment code is invalid, used or expired")]
    EnrollmentInvalid,
    #[error("{0}")]
    KeyVersion(String),
    #[error("device authentication failed: {0}")]
    Unauthorized(&'static str),
    #[error("this signed request was already used")]
    ReplayedRequest,
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A rotation must name the epoch after the current one.
    #[error("conflict: the new epoch must be {expected}, the current one plus one")]
    EpochNotNext { expected: u64 },
    #[error("the enrollment secret file cannot be used: {0}")]
    Secret(#[from] crate::keyfile::KeyFileError),
    #[error("cannot start the envelope verification threads: {0}")]
    Threads(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeviceError {
    /// The stable API code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::InvalidField(_) => "invalid_field",
            Self::Crypto(e) => e.code(),
            Self::EnrollmentInvalid => "enrollment_invalid",
            Self::KeyVersion(_) => "invalid_key_version",
            Self::Unauthorized(_) => "device_unauthorized",
            Self::ReplayedRequest => "replayed_request",
            Self::NotFound(_) => "not_found",
            Self::EpochNotNext { .. } => "conflict",
            Self::Secret(_) => "enroll_secret",
            Self::Threads(_) => "threads",
            Self::Store(e) => e.code(),
        }
    }
}

/// A device that signed the current request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCaller {
    pub device_id: String,
    pub key_version: u64,
}

impl DeviceCaller {
    /// The actor name in events.
    pub fn actor(&self) -> String {
        format!("device:{}", self.device_id)
    }
}

/// The signature headers of a request, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub device: Option<&'a str>,
    pub key_version: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Shared device state of the server.
pub struct DeviceService {
    store: Store,
    secret: Zeroizing<[u8; 32]>,
    limiter: RateLimiter,
    replay: ReplayCache,
    /// The envelope ingest path.
    pub ingestor: Ingestor,
}

impl std::fmt::Debug for DeviceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceService")
    }
}

fn invalid(msg: impl Into<String>) -> DeviceError {
    DeviceError::InvalidField(msg.into())
}

/// Reads the enrollment secret, creating it (0600, 32 random bytes) the first time; a damaged
/// one is refused (see [`crate::keyfile`]).
pub fn load_or_create_secret(data_dir: &Path) -> Result<Zeroizing<[u8; 32]>, DeviceError> {
    Ok(crate::keyfile::load_or_create(
        data_dir,
        ENROLL_SECRET_FILE,
    )?)
}

fn peer_keys(row: &DeviceKeyRow) -> Result<PeerKeys, DeviceError> {
    let signing = b64_decode_32(&row.signing_public).ok_or(StoreError::Corrupt("device_keys"))?;
    let hpke = b64_decode_32(&row.hpke_public).ok_or(StoreError::Corrupt("device_keys"))?;
    Ok(PeerKeys {
        device_id: row.device_id.clone(),
        keys: DevicePublicKeys {
            key_version: row.key_version.unsigned_abs(),
            signing_public: signing,
            hpke_public: hpke,
        },
    })
}

fn to_u64(v: i64, what: &'static str) -> Result<u64, DeviceError> {
    u64::try_from(v).map_err(|_| DeviceError::Store(StoreError::Corrupt(what)))
}

fn to_i64(v: u64, field: &str) -> Result<i64, DeviceError> {
    i64::try_from(v).map_err(|_| invalid(format!("`{field}` is too large")))
}

/// The key version row a device's public keys are recorded as (versions start at 1).
fn new_device_key(keys: &DevicePublicKeys) -> Result<NewDeviceKey, DeviceError> {
    let key_version = to_i64(keys.key_version, "keys.keyVersion")?;
    if key_version < 1 {
        return Err(DeviceError::KeyVersion("key versions start at 1".into()));
    }
    Ok(NewDeviceKey {
        key_version,
        signing_public: b64_encode(&keys.signing_public),
        hpke_public: b64_encode(&keys.hpke_public),
        fingerprint: keys.fingerprint().to_string(),
    })
}

/// What claiming a code means for the device: enrolled, or why not.
fn enrolled(outcome: EnrollOutcome, fingerprint: String) -> Result<Enrolled, DeviceError> {
    match outcome {
        EnrollOutcome::Enrolled {
            device_id,
            key_version,
        } => Ok(Enrolled {
            device_id,
            key_version: key_version.unsigned_abs(),
            fingerprint,
        }),
        EnrollOutcome::InvalidCode => Err(DeviceError::EnrollmentInvalid),
        EnrollOutcome::KeyVersionTooLow { minimum } => Err(DeviceError::KeyVersion(format!(
            "re-enrollment needs a new key version of at least {minimum}"
        ))),
        EnrollOutcome::KeyVersionNotOne => Err(DeviceError::KeyVersion(
            "a new device enrolls with key version 1".into(),
        )),
    }
}

/// Records a new device's public keys without the enrollment handshake: a code is issued and
/// claimed at once by whoever already holds the store. This is for provisioning outside any
/// request — benches, the load tool's generated data dirs, the suites; over HTTP a device
/// always proves possession of its keys ([`DeviceService::complete_enrollment`]).
pub async fn provision(
    store: &Store,
    keys: &DevicePublicKeys,
    name: Option<&str>,
    issued_by: &str,
) -> Result<Enrolled, DeviceError> {
    let code_hash = hex::encode(enrollment_code_hash(&new_id()));
    let now = now_ms();
    store
        .create_enrollment(&NewEnrollment {
            id: new_id(),
            code_hash: code_hash.clone(),
            kind: "enroll",
            device_id: None,
            name: None,
            issued_by: issued_by.to_owned(),
            expires_at: now + 60_000,
            created_at: now,
        })
        .await?;
    let key = new_device_key(keys)?;
    let claimed = store.complete_enrollment(&code_hash, &key, name).await?;
    enrolled(claimed, key.fingerprint)
}

fn wrapped_from_row(r: &WrappedKeyRow) -> Result<WrappedKey, DeviceError> {
    let corrupt = || DeviceError::Store(StoreError::Corrupt("session_keys"));
    let enc = b64_decode_32(&r.enc).ok_or_else(corrupt)?;
    let ciphertext = crate::envelope::b64_decode_48(&r.ciphertext).ok_or_else(corrupt)?;
    Ok(WrappedKey {
        session_id: r.session_id.clone(),
        epoch: to_u64(r.epoch, "session_keys")?,
        device_id: r.device_id.clone(),
        key_version: to_u64(r.key_version, "session_keys")?,
        sender_device_id: r.sender_device_id.clone(),
        sender_key_version: to_u64(r.sender_key_version, "session_keys")?,
        enc,
        ciphertext,
    })
}

fn envelope_from_row(r: &StoredEnvelope) -> Result<Envelope, DeviceError> {
    let corrupt = || DeviceError::Store(StoreError::Corrupt("envelopes"));
    Ok(Envelope {
        v: to_u64(r.v, "envelopes")?,
        session_id: r.session_id.clone(),
        sender_device_id: r.sender_device_id.clone(),
        key_version: to_u64(r.key_version, "envelopes")?,
        epoch: to_u64(r.epoch, "envelopes")?,
        sequence: to_u64(r.sequence, "envelopes")?,
        created_at: to_u64(r.created_at, "envelopes")?,
        nonce: r.nonce.as_slice().try_into().map_err(|_| corrupt())?,
        ciphertext: r.ciphertext.clone(),
        signature: r.signature.as_slice().try_into().map_err(|_| corrupt())?,
    })
}

impl DeviceService {
    /// Loads (or creates) the enrollment secret in `data_dir` and starts the ingest writer.
    pub fn start(
        store: Store,
        data_dir: &Path,
        metrics: Arc<Metrics>,
        envelopes: &EnvelopesConfig,
        limits: &DevicesConfig,
    ) -> Result<Self, DeviceError> {
        let secret = load_or_create_secret(data_dir)?;
        let per_sec = |per_minute: u32| f64::from(per_minute) / 60.0;
        Ok(Self {
            ingestor: Ingestor::start_with(
                store.clone(),
                metrics,
                envelopes.window_ms,
                envelopes.rotation_grace_ms,
            )
            .map_err(|e| DeviceError::Threads(e.to_string()))?,
            store,
            secret,
            limiter: RateLimiter::new(
                f64::from(limits.enroll_burst),
                per_sec(limits.enroll_per_minute),
                f64::from(limits.enroll_global_burst),
                per_sec(limits.enroll_global_per_minute),
            ),
            replay: ReplayCache::default(),
        })
    }

    fn challenge_key(&self, code: &str) -> ([u8; 32], ChallengeKey) {
        let hash = enrollment_code_hash(code);
        (hash, ChallengeKey::derive(&self.secret, &hash))
    }

    /// Issues a single-use enrollment (or re-enrollment) code.
    pub async fn issue_enrollment(
        &self,
        req: IssueEnrollment,
        actor: &str,
    ) -> Result<EnrollmentIssued, DeviceError> {
        let kind = match req.kind.as_deref() {
            None | Some("enroll") => "enroll",
            Some("reenroll") => "reenroll",
            Some(_) => return Err(invalid("`kind`: must be enroll or reenroll")),
        };
        let device_id = match (kind, req.device_id) {
            ("reenroll", Some(id)) => {
                if !is_valid_id(&id) || self.store.device(&id).await?.is_none() {
                    return Err(invalid("`device_id`: no such device"));
                }
                Some(id)
            }
            ("reenroll", None) => return Err(invalid("`device_id`: required to re-enroll")),
            (_, Some(_)) => return Err(invalid("`device_id`: only for kind reenroll")),
            (_, None) => None,
        };
        if let Some(n) = &req.name
            && (n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control))
        {
            return Err(invalid("`name`: 1 to 100 printable characters"));
        }
        let ttl = req.ttl_ms.unwrap_or(DEFAULT_CODE_TTL_MS);
        if !(1_000..=7 * 24 * 3_600_000).contains(&ttl) {
            return Err(invalid("`ttl_ms`: between 1000 and 604800000"));
        }
        let (_, code) = crate::auth::mint();
        let code = code.expose().to_owned();
        let (hash, challenge) = self.challenge_key(&code);
        let now = now_ms();
        let row = NewEnrollment {
            id: new_id(),
            code_hash: hex::encode(hash),
            kind,
            device_id: device_id.clone(),
            name: req.name,
            issued_by: actor.to_owned(),
            expires_at: now + ttl,
            created_at: now,
        };
        self.store.create_enrollment(&row).await?;
        Ok(EnrollmentIssued {
            id: row.id,
            code,
            expires_at: row.expires_at,
            kind: kind.into(),
            device_id,
            challenge_public: b64_encode(&challenge.public()),
        })
    }

    /// Takes a token from the enrollment rate limiter.
    pub fn rate_limit(&self, ip: Option<IpAddr>) -> Result<(), DeviceError> {
        if self.limiter.allow(ip, now_ms()) {
            Ok(())
        } else {
            Err(DeviceError::RateLimited)
        }
    }

    /// The challenge public key for a code. Given for any code, so it reveals nothing about
    /// which codes exist.
    pub fn challenge(&self, code: &str) -> Result<ChallengeResponse, DeviceError> {
        if code.is_empty() || code.len() > 200 {
            return Err(invalid("`code`: 1 to 200 characters"));
        }
        let (_, key) = self.challenge_key(code);
        Ok(ChallengeResponse {
            challenge_public: b64_encode(&key.public()),
        })
    }

    /// Verifies the proof of possession, then claims the code and records the key version.
    pub async fn complete_enrollment(
        &self,
        req: CompleteEnrollment,
    ) -> Result<Enrolled, DeviceError> {
        if req.code.is_empty() || req.code.len() > 200 {
            return Err(invalid("`code`: 1 to 200 characters"));
        }
        if let Some(n) = &req.name
            && (n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control))
        {
            return Err(invalid("`name`: 1 to 100 printable characters"));
        }
        let key = new_device_key(&req.keys)?;
        let (hash, challenge) = self.challenge_key(&req.code);
        challenge
            .verify_enrollment(&req.keys, &hash, &req.proof)
            .map_err(DeviceError::Crypto)?;
        let claimed = self
            .store
            .complete_enrollment(&hex::encode(hash), &key, req.name.as_deref())
            .await?;
        enrolled(claimed, key.fingerprint)
    }

    /// Checks a device-signed request: headers present, timestamp within the window, device
    /// and key live, signature valid, signature not seen before.
    pub async fn authenticate(
        &self,
        h: SignedHeaders<'_>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<DeviceCaller, DeviceError> {
        let (Some(device), Some(version), Some(ts), Some(sig)) =
            (h.device, h.key_version, h.timestamp, h.signature)
        else {
            return Err(DeviceError::Unauthorized(
                "missing device signature headers",
            ));
        };
        if !is_valid_id(device) {
            return Err(DeviceError::Unauthorized("bad device id"));
        }
        let version: u64 = version
            .parse()
            .map_err(|_| DeviceError::Unauthorized("bad key version"))?;
        let ts: u64 = ts
            .parse()
            .map_err(|_| DeviceError::Unauthorized("bad timestamp"))?;
        let now = now_ms();
        let ts_i = i64::try_from(ts).map_err(|_| DeviceError::Unauthorized("bad timestamp"))?;
        if (now - ts_i).abs() > REQUEST_WINDOW_MS {
            return Err(DeviceError::Unauthorized("timestamp outside the window"));
        }
        if self.replay.predates(ts_i) {
            return Err(DeviceError::Unauthorized(
                "signed before this host started; sign the request again",
            ));
        }
        let sig = crate::envelope::b64_decode_64(sig)
            .ok_or(DeviceError::Unauthorized("bad signature encoding"))?;
        let state = match i64::try_from(version) {
            Ok(v) => self.store.key_state(device, v).await?,
            Err(_) => None,
        };
        let Some(state) = state.filter(|s| s.is_live()) else {
            return Err(DeviceError::Unauthorized("unknown or revoked device key"));
        };
        let key = b64_decode_32(&state.key.signing_public)
            .and_then(|b| SigningPublicKey::from_bytes(&b).ok())
            .ok_or(StoreError::Corrupt("device_keys"))?;
        let message = request_message(device, version, ts, method, path_and_query, body);
        if !key.verify(&message, &sig) {
            return Err(DeviceError::Unauthorized("bad signature"));
        }
        if !self
            .replay
            .first_use(&sig, now, ts_i + REQUEST_WINDOW_MS + 1)
        {
            return Err(DeviceError::ReplayedRequest);
        }
        Ok(DeviceCaller {
            device_id: device.to_owned(),
            key_version: version,
        })
    }

    /// A device's newest live public keys.
    pub async fn live_keys(&self, device_id: &str) -> Result<PeerKeys, DeviceError> {
        let row = self
            .store
            .live_key(device_id)
            .await?
            .ok_or(DeviceError::NotFound("device"))?;
        peer_keys(&row)
    }

    /// Checks wrapped keys for (session, epoch) from `caller`, returning rows to store.
    async fn check_wrapped(
        &self,
        caller: &DeviceCaller,
        session_id: &str,
        epoch: u64,
        keys: &[WrappedKey],
    ) -> Result<Vec<WrappedKeyRow>, DeviceError> {
        if keys.is_empty() || keys.len() > MAX_MEMBERS {
            return Err(invalid(format!(
                "`wrapped_keys`: 1 to {MAX_MEMBERS} entries"
            )));
        }
        let mut rows = Vec::with_capacity(keys.len());
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            if k.session_id != session_id || k.epoch != epoch {
                return Err(invalid(
                    "`wrapped_keys`: wrapped for another session or epoch",
                ));
            }
            if k.sender_device_id != caller.device_id || k.sender_key_version != caller.key_version
            {
                return Err(invalid("`wrapped_keys`: not wrapped by the signing device"));
            }
            if !seen.insert(k.device_id.clone()) {
                return Err(invalid("`wrapped_keys`: a device appears twice"));
            }
            let live = self.store.live_key(&k.device_id).await?;
            match live {
                Some(l) if l.key_version.unsigned_abs() == k.key_version => {}
                Some(_) => {
                    return Err(invalid(
                        "`wrapped_keys`: wrapped to a key version that is not the device's current one",
                    ));
                }
                None => return Err(invalid("`wrapped_keys`: unknown or revoked device")),
            }
            rows.push(WrappedKeyRow {
                session_id: session_id.to_owned(),
                epoch: to_i64(epoch, "epoch")?,
                device_id: k.device_id.clone(),
                key_version: to_i64(k.key_version, "keyVersion")?,
                sender_device_id: k.sender_device_id.clone(),
                sender_key_version: to_i64(k.sender_key_version, "senderKeyVersion")?,
                enc: b64_encode(&k.enc),
                ciphertext: b64_encode(&k.ciphertext),
            });
        }
        if !seen.contains(&caller.device_id) {
            return Err(invalid("`wrapped_keys`: must include the signing device"));
        }
        Ok(rows)
    }

    /// Opens an encrypted session at epoch 0.
    pub async fn open_session(
        &self,
        caller: &DeviceCaller,
        req: OpenSession,
    ) -> Result<SessionEpoch, DeviceError> {
        if !is_valid_id(&req.id) {
            return Err(invalid("`id`: 1 to 64 of A-Z a-z 0-9 - _"));
        }
        let name = req.name.unwrap_or_else(|| "encrypted session".into());
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(invalid("`name`: 1 to 200 printable characters"));
        }
        let rows = self
            .check_wrapped(caller, &req.id, 0, &req.wrapped_keys)
            .await?;
        let now = now_ms();
        let session = Session {
            id: req.id.clone(),
            name,
            kind: SessionKind::Encrypted,
            status: SessionStatus::Open,
            task_id: None,
            epoch: 0,
            rotation_required_since: None,
            created_by: caller.actor(),
            created_at: now,
            updated_at: now,
        };
        self.store.create_encrypted_session(&session, &rows).await?;
        Ok(SessionEpoch {
            id: req.id,
            epoch: 0,
        })
    }

    async fn encrypted_session(&self, id: &str) -> Result<Session, DeviceError> {
        match self.store.session(id).await? {
            Some(s) if s.kind == SessionKind::Encrypted => Ok(s),
            _ => Err(DeviceError::NotFound("encrypted session")),
        }
    }

    /// Moves a session to the next epoch (the caller must be a member of the current one).
    pub async fn rotate(
        &self,
        caller: &DeviceCaller,
        session_id: &str,
        req: RotateSession,
    ) -> Result<SessionEpoch, DeviceError> {
        let session = self.encrypted_session(session_id).await?;
        let members = self
            .store
            .session_members(session_id, session.epoch)
            .await?;
        if !members.iter().any(|(d, _)| *d == caller.device_id) {
            return Err(DeviceError::NotFound("encrypted session"));
        }
        let next = to_u64(session.epoch, "sessions")? + 1;
        if req.epoch != next {
            return Err(DeviceError::EpochNotNext { expected: next });
        }
        let rows = self
            .check_wrapped(caller, session_id, next, &req.wrapped_keys)
            .await?;
        self.store
            .rotate_session(session_id, session.epoch, &rows, &caller.actor())
            .await?;
        Ok(SessionEpoch {
            id: session_id.to_owned(),
            epoch: next,
        })
    }

    async fn member_session(
        &self,
        caller: &DeviceCaller,
        session_id: &str,
    ) -> Result<Session, DeviceError> {
        let session = self.encrypted_session(session_id).await?;
        if !self
            .store
            .was_session_member(session_id, &caller.device_id)
            .await?
        {
            return Err(DeviceError::NotFound("encrypted session"));
        }
        Ok(session)
    }

    async fn keys_of(&self, pairs: Vec<(String, i64)>) -> Result<Vec<PeerKeys>, DeviceError> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (device, version) in pairs {
            if !seen.insert((device.clone(), version)) {
                continue;
            }
            if let Some(state) = self.store.key_state(&device, version).await? {
                out.push(peer_keys(&state.key)?);
            }
        }
        Ok(out)
    }

    /// What a member needs to send or rotate: the current epoch, its live members and every
    /// content key wrapped to the caller.
    pub async fn session_keys(
        &self,
        caller: &DeviceCaller,
        session_id: &str,
    ) -> Result<SessionKeys, DeviceError> {
        let session = self.member_session(caller, session_id).await?;
        let mut members = Vec::new();
        for (device, _) in self
            .store
            .session_members(session_id, session.epoch)
            .await?
        {
            if let Some(row) = self.store.live_key(&device).await? {
                members.push(peer_keys(&row)?);
            }
        }
        let wrapped = self
            .store
            .wrapped_keys_for(session_id, &caller.device_id)
            .await?;
        let wrappers = self
            .keys_of(
                wrapped
                    .iter()
                    .map(|w| (w.sender_device_id.clone(), w.sender_key_version))
                    .collect(),
            )
            .await?;
        Ok(SessionKeys {
            session_id: session_id.to_owned(),
            epoch: to_u64(session.epoch, "sessions")?,
            rotation_required_since: session.rotation_required_since,
            members,
            wrapped_keys: wrapped
                .iter()
                .map(wrapped_from_row)
                .collect::<Result<_, _>>()?,
            wrappers,
        })
    }

    /// A page of a session's envelopes for a member, with the keys to check them.
    pub async fn envelope_page(
        &self,
        caller: &DeviceCaller,
        session_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<EnvelopePage, DeviceError> {
        let session = self.member_session(caller, session_id).await?;
        let rows = self
            .store
            .envelopes_after(session_id, after, limit.clamp(1, MAX_READ_PAGE))
            .await?;
        let wrapped = self
            .store
            .wrapped_keys_for(session_id, &caller.device_id)
            .await?;
        let devices = self
            .keys_of(
                rows.iter()
                    .map(|r| (r.sender_device_id.clone(), r.key_version))
                    .chain(
                        wrapped
                            .iter()
                            .map(|w| (w.sender_device_id.clone(), w.sender_key_version)),
                    )
                    .collect(),
            )
            .await?;
        Ok(EnvelopePage {
            session_id: session_id.to_owned(),
            epoch: to_u64(session.epoch, "sessions")?,
            next_after: rows.last().map_or(after, |r| r.ordinal),
            envelopes: rows
                .iter()
                .map(envelope_from_row)
                .collect::<Result<_, _>>()?,
            wrapped_keys: wrapped
                .iter()
                .map(wrapped_from_row)
                .collect::<Result<_, _>>()?,
            devices,
        })
    }
}

#[cfg(test)]
mod keyfile_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_open_or_short_enroll_secret_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let a = load_or_create_secret(tmp.path()).expect("created");
        assert_eq!(*load_or_create_secret(tmp.path()).expect("loaded"), *a);
        let path = tmp.path().join(ENROLL_SECRET_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_or_create_secret(tmp.path()).expect_err("open file refused");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::write(&path, [1u8; 31]).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = load_or_create_secret(tmp.path()).expect_err("short file refused");
        assert!(e.to_string().contains("holds 31 bytes"), "{e}");
    }
}
