//! Envelope ingest: the stateless checks of a single envelope (size, strict parse, sender key
//! lookup, `verify_strict`) run on the caller's task (`devices::check`); the stateful ones (revocation, epoch, cursor,
//! window) and the durable insert run in a single writer task that group-commits whatever
//! arrived concurrently into one transaction ([`crate::store::Store::ingest_batch`]). Every
//! caller gets its own verdict only after its batch committed, so an acknowledged envelope is
//! on disk and a refused one changed nothing.
//!
//! A batch request (`POST /v1/sessions/{id}/envelopes/batch`) is checked on the verification
//! pool (`devices::check`) and queued as one job: its envelopes reach the writer together and in
//! order, so one sender can pipeline many sequences per round trip without any of them being
//! judged out of order.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::check::{KeyCache, Stage, check_batch, parse, verify, verify_pool};
use crate::envelope::{EnvelopeError, SigningPublicKey};
use crate::metrics::Metrics;
use crate::store::{IngestItem, IngestLimits, IngestVerdict, Store};

/// The writer stops gathering requests into a transaction once it holds this many envelopes
/// (a transaction holds at most this many plus one batch request's).
pub const MAX_BATCH: usize = 512;
/// Envelopes that may wait for the writer before callers are held back.
const QUEUE_DEPTH: usize = 8192;
/// Default of `envelopes.rotation_grace_ms`: how long after a member's revocation a session's
/// current epoch is still accepted.
pub const DEFAULT_ROTATION_GRACE_MS: u64 = 10_000;
/// Largest `envelopes.rotation_grace_ms` the configuration accepts (5 minutes).
pub const MAX_ROTATION_GRACE_MS: u64 = 300_000;

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

/// A request's envelopes, queued together so the writer judges them in order.
struct Job {
    items: Vec<IngestItem>,
    reply: oneshot::Sender<Result<Vec<IngestVerdict>, ()>>,
}

/// The ingest path. Cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    store: Store,
    metrics: Arc<Metrics>,
    queue: mpsc::Sender<Job>,
    /// Envelopes queued for or inside the writer; a request waits here for room.
    room: Arc<Semaphore>,
    /// Batch verification: one thread per core at a lower scheduling priority, so the
    /// writer's path (async workers, SQLite's thread) is never starved by it.
    verifiers: Arc<rayon::ThreadPool>,
    keys: Arc<KeyCache>,
}

impl Ingestor {
    /// Envelopes queued for or inside the writer now.
    pub fn queued(&self) -> usize {
        QUEUE_DEPTH.saturating_sub(self.room.available_permits())
    }

    /// Starts the batch verification threads and the writer task (on the current tokio
    /// runtime), with the default rotation grace.
    pub fn start(store: Store, metrics: Arc<Metrics>, window_ms: u64) -> std::io::Result<Self> {
        Self::start_with(store, metrics, window_ms, DEFAULT_ROTATION_GRACE_MS)
    }

    /// [`Self::start`] with an explicit rotation grace (`envelopes.rotation_grace_ms`).
    pub fn start_with(
        store: Store,
        metrics: Arc<Metrics>,
        window_ms: u64,
        rotation_grace_ms: u64,
    ) -> std::io::Result<Self> {
        let verifiers = verify_pool()?;
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let limits = IngestLimits {
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            rotation_grace_ms: i64::try_from(rotation_grace_ms).unwrap_or(i64::MAX),
        };
        tokio::spawn(writer(store.clone(), rx, limits));
        Ok(Self {
            store,
            metrics,
            queue,
            room: Arc::new(Semaphore::new(QUEUE_DEPTH)),
            verifiers: Arc::new(verifiers),
            keys: Arc::default(),
        })
    }

    /// The sender's public signing key: from the cache, else from the store (then cached).
    async fn signing_key(
        &self,
        device_id: &str,
        key_version: u64,
    ) -> Result<Option<SigningPublicKey>, IngestError> {
        if let Some(k) = self.keys.get(device_id, key_version) {
            return Ok(Some(k));
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
        self.keys.put(device_id, key_version, key);
        Ok(Some(key))
    }

    /// Checks and stores one envelope posted to `path_session`. Unauthenticated garbage (bad
    /// form, unknown sender, bad signature) only counts in metrics; refusals of authenticated
    /// envelopes are recorded as events by the writer.
    pub async fn ingest(&self, path_session: &str, body: &[u8]) -> Result<Accepted, IngestError> {
        let result = match self.check(path_session, body).await {
            Ok(v) => self
                .decide(vec![v])
                .await
                .and_then(|r| r.into_iter().next().unwrap_or(Err(IngestError::Storage))),
            Err(e) => Err(e),
        };
        self.count(&result);
        result
    }

    /// The stateless checks of one envelope, all on the caller's task. One `verify_strict`
    /// (about 45 µs) is within what a task may run between two awaits; handing it to the
    /// verification pool cost two thread wake-ups per envelope, more than the check itself saves
    /// the runtime. Batches, up to a thousand signatures, still go to the pool.
    async fn check(&self, path_session: &str, body: &[u8]) -> Result<IngestItem, IngestError> {
        let env = parse(path_session, body)?;
        let Some(key) = self
            .signing_key(&env.sender_device_id, env.key_version)
            .await?
        else {
            return Err(EnvelopeError::UnknownDevice.into());
        };
        verify(env, &key, body.len())
    }

    /// Checks and stores a batch (`{"envelopes":[…]}`, at most
    /// [`crate::envelope::limits::MAX_BATCH_ENVELOPES`]) posted to `path_session`. Each envelope is judged as [`Self::ingest`] would, in the batch's
    /// order, so a sender's envelopes are accepted in sequence; every accepted one is committed
    /// before the answer. `Err` refuses the whole request (not a batch, too many envelopes, or
    /// storage failure): nothing of it was stored. Parsing and `verify_strict` run on the
    /// verification pool.
    pub async fn ingest_batch(
        &self,
        path_session: &str,
        body: Bytes,
    ) -> Result<Vec<Result<Accepted, IngestError>>, IngestError> {
        let (done, rx) = oneshot::channel();
        let (keys, path) = (self.keys.clone(), path_session.to_owned());
        self.verifiers.spawn(move || {
            let _ = done.send(check_batch(&path, &body, &keys));
        });
        let stages = rx.await.map_err(|_| {
            tracing::error!("envelope verification thread failed");
            IngestError::Storage
        })??;
        let mut slots: Vec<Option<Result<Accepted, IngestError>>> = Vec::new();
        let mut verified = Vec::with_capacity(stages.len());
        for stage in stages {
            let judged = match stage {
                Stage::Judged(r) => r,
                // rare: the first envelope of a key since start; verified here
                Stage::KeyMissing(env, size) => {
                    match self
                        .signing_key(&env.sender_device_id, env.key_version)
                        .await?
                    {
                        Some(key) => verify(*env, &key, size),
                        None => Err(EnvelopeError::UnknownDevice.into()),
                    }
                }
            };
            match judged {
                Ok(v) => {
                    verified.push((slots.len(), v));
                    slots.push(None);
                }
                Err(e) => slots.push(Some(Err(e))),
            }
        }
        let (places, items): (Vec<usize>, Vec<IngestItem>) = verified.into_iter().unzip();
        if !items.is_empty() {
            for (slot, r) in places.into_iter().zip(self.decide(items).await?) {
                slots[slot] = Some(r);
            }
        }
        let results: Vec<_> = slots
            .into_iter()
            .map(|r| r.unwrap_or(Err(IngestError::Storage)))
            .collect();
        for r in &results {
            self.count(r);
        }
        Ok(results)
    }

    fn count(&self, result: &Result<Accepted, IngestError>) {
        match result {
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
    }

    /// Queues verified envelopes as one job and maps the writer's verdicts, in order. `Err`
    /// only when storage failed (nothing of the job was acknowledged).
    async fn decide(
        &self,
        items: Vec<IngestItem>,
    ) -> Result<Vec<Result<Accepted, IngestError>>, IngestError> {
        let n = u32::try_from(items.len()).map_err(|_| IngestError::Storage)?;
        let _room = self
            .room
            .acquire_many(n.min(QUEUE_DEPTH as u32))
            .await
            .map_err(|_| IngestError::Storage)?;
        // What each answer needs of its item (the items go to the writer).
        let metas: Vec<Meta> = items
            .iter()
            .map(|it| Meta {
                session_id: it.session_id.clone(),
                sender_device_id: it.sender_device_id.clone(),
                sequence: it.sequence.unsigned_abs(),
                epoch: it.epoch.unsigned_abs(),
                created_at: it.created_at.unsigned_abs(),
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Job { items, reply })
            .await
            .map_err(|_| IngestError::Storage)?;
        let verdicts = rx
            .await
            .map_err(|_| IngestError::Storage)?
            .map_err(|()| IngestError::Storage)?;
        if verdicts.len() != metas.len() {
            return Err(IngestError::Storage);
        }
        Ok(metas
            .into_iter()
            .zip(verdicts)
            .map(|(meta, verdict)| verdict_result(verdict, meta))
            .collect())
    }
}

/// What the answer to one queued envelope needs of it.
struct Meta {
    session_id: String,
    sender_device_id: String,
    sequence: u64,
    epoch: u64,
    created_at: u64,
}

/// The caller-facing result of one writer verdict.
fn verdict_result(verdict: IngestVerdict, meta: Meta) -> Result<Accepted, IngestError> {
    let Meta {
        session_id,
        sender_device_id,
        sequence,
        epoch,
        created_at,
    } = meta;
    match verdict {
        IngestVerdict::Accepted { id, ordinal } => Ok(Accepted {
            id,
            ordinal,
            session_id,
            sender_device_id,
            sequence,
        }),
        IngestVerdict::UnknownSession => Err(IngestError::UnknownSession),
        IngestVerdict::UnknownKey | IngestVerdict::NotMember => {
            Err(EnvelopeError::UnknownDevice.into())
        }
        IngestVerdict::Revoked => Err(EnvelopeError::RevokedKey.into()),
        IngestVerdict::StaleEpoch { current } => Err(EnvelopeError::StaleEpoch {
            epoch,
            current: current.unsigned_abs(),
        }
        .into()),
        IngestVerdict::RotationRequired { current } => Err(EnvelopeError::RotationRequired {
            epoch: current.unsigned_abs(),
        }
        .into()),
        IngestVerdict::Replayed { cursor } => Err(EnvelopeError::Replayed {
            sequence,
            cursor: cursor.unsigned_abs(),
        }
        .into()),
        IngestVerdict::Expired => Err(EnvelopeError::Expired { created_at }.into()),
    }
}

/// The single writer: takes what is queued (whole jobs, until the batch holds at least
/// [`MAX_BATCH`] envelopes), decides and commits it in one transaction, then answers every job
/// of the batch.
async fn writer(store: Store, mut rx: mpsc::Receiver<Job>, limits: IngestLimits) {
    let mut jobs: Vec<Job> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut held = first.items.len();
        jobs.push(first);
        while held < MAX_BATCH {
            let Ok(job) = rx.try_recv() else { break };
            held += job.items.len();
            jobs.push(job);
        }
        let lens: Vec<usize> = jobs.iter().map(|j| j.items.len()).collect();
        let items: Vec<IngestItem> = jobs.iter_mut().flat_map(|j| j.items.drain(..)).collect();
        match store.ingest_batch(&items, limits).await {
            Ok(verdicts) => {
                let mut verdicts = verdicts.into_iter();
                for (job, len) in jobs.drain(..).zip(lens) {
                    let _ = job.reply.send(Ok(verdicts.by_ref().take(len).collect()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = items.len(), "envelope batch failed; none acknowledged");
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(()));
                }
            }
        }
    }
}
