//! Envelope ingest: the stateless checks (size, strict parse, sender key lookup,
//! `verify_strict`) run on the caller's task; the stateful ones (revocation, epoch, cursor,
//! window) and the durable insert run in a single writer task that group-commits whatever
//! arrived concurrently into one transaction ([`crate::store::Store::ingest_batch`]). Every
//! caller gets its own verdict only after its batch committed, so an acknowledged envelope is
//! on disk and a refused one changed nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::envelope::limits::MAX_ENVELOPE_JSON_LEN;
use crate::envelope::{Envelope, EnvelopeError, SigningPublicKey};
use crate::metrics::Metrics;
use crate::store::{IngestItem, IngestVerdict, Store};

/// Most envelopes committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Envelopes that may wait for the writer before callers are held back.
const QUEUE_DEPTH: usize = 8192;

/// Why an envelope was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// One of the API's envelope refusal codes.
    #[error(transparent)]
    Refused(#[from] EnvelopeError),
    /// The path names another session than the envelope, or no encrypted session exists.
    #[error("no such encrypted session")]
    UnknownSession,
    /// The store failed; nothing was acknowledged.
    #[error("storage failed while ingesting")]
    Storage,
}

impl IngestError {
    /// The stable API code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(e) => e.code(),
            Self::UnknownSession => "not_found",
            Self::Storage => "storage_error",
        }
    }
}

/// An accepted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    pub ordinal: i64,
    pub session_id: String,
    pub sender_device_id: String,
    pub sequence: u64,
}

struct Job {
    item: IngestItem,
    reply: oneshot::Sender<Result<IngestVerdict, ()>>,
}

/// The ingest path. Cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    store: Store,
    metrics: Arc<Metrics>,
    queue: mpsc::Sender<Job>,
    /// Public signing keys by (device, key version); keys never change once stored (only
    /// their revocation, which the writer checks in its transaction).
    keys: Arc<RwLock<HashMap<(String, u64), SigningPublicKey>>>,
}

impl Ingestor {
    /// Starts the writer task (on the current tokio runtime).
    pub fn start(store: Store, metrics: Arc<Metrics>, window_ms: u64) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        tokio::spawn(writer(store.clone(), rx, window));
        Self {
            store,
            metrics,
            queue,
            keys: Arc::default(),
        }
    }

    async fn signing_key(
        &self,
        device_id: &str,
        key_version: u64,
    ) -> Result<Option<SigningPublicKey>, IngestError> {
        let cache_key = (device_id.to_owned(), key_version);
        if let Ok(keys) = self.keys.read()
            && let Some(k) = keys.get(&cache_key)
        {
            return Ok(Some(*k));
        }
        let Ok(version) = i64::try_from(key_version) else {
            return Ok(None);
        };
        let state = self
            .store
            .key_state(device_id, version)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "key lookup failed");
                IngestError::Storage
            })?;
        let Some(state) = state else {
            return Ok(None);
        };
        let bytes = crate::envelope::b64_decode_32(&state.key.signing_public);
        let Some(key) = bytes.and_then(|b| SigningPublicKey::from_bytes(&b).ok()) else {
            tracing::error!(device = device_id, "stored signing key is unusable");
            return Ok(None);
        };
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() > 100_000 {
                keys.clear();
            }
            keys.insert(cache_key, key);
        }
        Ok(Some(key))
    }

    /// Checks and stores one envelope posted to `path_session`. Unauthenticated garbage (bad
    /// form, unknown sender, bad signature) only counts in metrics; refusals of authenticated
    /// envelopes are recorded as events by the writer.
    pub async fn ingest(&self, path_session: &str, body: &[u8]) -> Result<Accepted, IngestError> {
        let result = self.check_and_queue(path_session, body).await;
        match &result {
            Ok(_) => Metrics::inc(&self.metrics.envelopes_accepted),
            Err(IngestError::Refused(
                EnvelopeError::Invalid(_)
                | EnvelopeError::BadSignature
                | EnvelopeError::UnknownDevice,
            ))
            | Err(IngestError::UnknownSession) => Metrics::inc(&self.metrics.envelopes_garbage),
            Err(IngestError::Refused(_)) => Metrics::inc(&self.metrics.envelopes_rejected),
            Err(IngestError::Storage) => {}
        }
        result
    }

    async fn check_and_queue(
        &self,
        path_session: &str,
        body: &[u8],
    ) -> Result<Accepted, IngestError> {
        if body.len() > MAX_ENVELOPE_JSON_LEN {
            return Err(EnvelopeError::Invalid(format!(
                "envelope is {} bytes, over the limit of {MAX_ENVELOPE_JSON_LEN}",
                body.len()
            ))
            .into());
        }
        let env = Envelope::parse(body)?;
        if env.session_id != path_session {
            return Err(EnvelopeError::Invalid(
                "sessionId differs from the session in the path".into(),
            )
            .into());
        }
        let as_i64 = |v: u64, field: &str| {
            i64::try_from(v).map_err(|_| {
                IngestError::Refused(EnvelopeError::Invalid(format!(
                    "{field} is above the largest storable value"
                )))
            })
        };
        let key_version = as_i64(env.key_version, "keyVersion")?;
        let epoch = as_i64(env.epoch, "epoch")?;
        let sequence = as_i64(env.sequence, "sequence")?;
        let created_at = as_i64(env.created_at, "createdAt")?;
        let Some(key) = self
            .signing_key(&env.sender_device_id, env.key_version)
            .await?
        else {
            return Err(EnvelopeError::UnknownDevice.into());
        };
        env.verify(&key)?;
        let item = IngestItem {
            session_id: env.session_id,
            sender_device_id: env.sender_device_id,
            key_version,
            epoch,
            sequence,
            created_at,
            nonce: env.nonce.to_vec(),
            ciphertext: env.ciphertext,
            signature: env.signature.to_vec(),
            size: i64::try_from(body.len()).unwrap_or(i64::MAX),
        };
        let (reply, rx) = oneshot::channel();
        let seq = env.sequence;
        let (session_id, sender_device_id) =
            (item.session_id.clone(), item.sender_device_id.clone());
        let env_epoch = env.epoch;
        self.queue
            .send(Job { item, reply })
            .await
            .map_err(|_| IngestError::Storage)?;
        let verdict = rx
            .await
            .map_err(|_| IngestError::Storage)?
            .map_err(|()| IngestError::Storage)?;
        match verdict {
            IngestVerdict::Accepted { id, ordinal } => Ok(Accepted {
                id,
                ordinal,
                session_id,
                sender_device_id,
                sequence: seq,
            }),
            IngestVerdict::UnknownSession => Err(IngestError::UnknownSession),
            IngestVerdict::UnknownKey | IngestVerdict::NotMember => {
                Err(EnvelopeError::UnknownDevice.into())
            }
            IngestVerdict::Revoked => Err(EnvelopeError::RevokedKey.into()),
            IngestVerdict::StaleEpoch { current } => Err(EnvelopeError::StaleEpoch {
                epoch: env_epoch,
                current: current.unsigned_abs(),
            }
            .into()),
            IngestVerdict::Replayed { cursor } => Err(EnvelopeError::Replayed {
                sequence: seq,
                cursor: cursor.unsigned_abs(),
            }
            .into()),
            IngestVerdict::Expired => Err(EnvelopeError::Expired {
                created_at: env.created_at,
            }
            .into()),
        }
    }
}

/// The single writer: takes what is queued (up to [`MAX_BATCH`]), decides and commits it in one
/// transaction, then answers every caller of the batch.
async fn writer(store: Store, mut rx: mpsc::Receiver<Job>, window_ms: i64) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let (items, replies): (Vec<IngestItem>, Vec<_>) =
            jobs.drain(..).map(|j| (j.item, j.reply)).unzip();
        match store.ingest_batch(&items, window_ms).await {
            Ok(verdicts) => {
                for (reply, verdict) in replies.into_iter().zip(verdicts) {
                    let _ = reply.send(Ok(verdict));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = items.len(), "envelope batch failed; none acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(()));
                }
            }
        }
    }
}
