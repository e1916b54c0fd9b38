//! The stateless checks of an envelope, before the writer sees it: size, strict parse, the
//! path's session, storable integers, the sender's key (cached) and `verify_strict`. Batches
//! are checked on the verification pool: one thread per core at a lower scheduling priority,
//! so CPU-bound verification never starves the latency-bound commit path.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::value::RawValue;

use super::ingest::IngestError;
use crate::envelope::limits::{MAX_BATCH_ENVELOPES, MAX_BATCH_JSON_LEN, MAX_ENVELOPE_JSON_LEN};
use crate::envelope::{Envelope, EnvelopeError, SigningPublicKey};
use crate::store::IngestItem;

/// Fewest envelopes of a batch request verified on one thread.
const MIN_VERIFY_CHUNK: usize = 16;
/// The verification threads' `nice` value (the commit path runs at the process's own).
const VERIFY_NICE: libc::c_int = 10;

/// The verification pool: one thread per core, each at [`VERIFY_NICE`].
pub(super) fn verify_pool() -> std::io::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .thread_name(|i| format!("happyx-verify-{i}"))
        .start_handler(|_| lower_thread_priority())
        // A panic in a job (none is expected: parsing and verification are fuzzed) must not
        // abort the host, which is rayon's default; the job's caller sees its answer channel
        // closed and answers 500.
        .panic_handler(|_| tracing::error!("envelope verification panicked"))
        .build()
        .map_err(std::io::Error::other)
}

/// A batch envelope after the pool's pass: judged, or waiting for its sender's key to be
/// loaded from the store (the key cache missed).
pub(super) enum Stage {
    Judged(Result<IngestItem, IngestError>),
    KeyMissing(Box<Envelope>, usize),
}

/// Public signing keys by (device, key version). Keys never change once stored (only their
/// revocation, which the writer checks in its transaction), so a cached key is never stale.
#[derive(Default)]
pub(super) struct KeyCache(RwLock<HashMap<(String, u64), SigningPublicKey>>);

impl KeyCache {
    /// Most keys held; the cache is emptied when it would grow past this.
    const MAX: usize = 100_000;

    pub(super) fn get(&self, device_id: &str, key_version: u64) -> Option<SigningPublicKey> {
        let keys = self.0.read().ok()?;
        keys.get(&(device_id.to_owned(), key_version)).copied()
    }

    pub(super) fn put(&self, device_id: &str, key_version: u64, key: SigningPublicKey) {
        if let Ok(mut keys) = self.0.write() {
            if keys.len() >= Self::MAX {
                keys.clear();
            }
            keys.insert((device_id.to_owned(), key_version), key);
        }
    }
}

/// A batch request body: `{"envelopes":[…]}`, each element an envelope in wire form.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    envelopes: Vec<&'a RawValue>,
}

/// The batch body, or why it is not one.
fn parse_batch(body: &[u8]) -> Result<BatchBody<'_>, IngestError> {
    let invalid = |m: String| IngestError::Refused(EnvelopeError::Invalid(m));
    if body.len() > MAX_BATCH_JSON_LEN {
        return Err(invalid(format!(
            "batch is {} bytes, over the limit of {MAX_BATCH_JSON_LEN}",
            body.len()
        )));
    }
    let batch: BatchBody<'_> = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "not a batch (an object with one field, \"envelopes\", a list of envelopes): \
             line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    match batch.envelopes.len() {
        0 => Err(invalid("the batch holds no envelopes".into())),
        n if n > MAX_BATCH_ENVELOPES => Err(invalid(format!(
            "the batch holds {n} envelopes, over the limit of {MAX_BATCH_ENVELOPES}"
        ))),
        _ => Ok(batch),
    }
}

/// The cheap checks of one envelope: size, strict parse, the path's session, storable
/// integers.
pub(super) fn parse(path_session: &str, body: &[u8]) -> Result<Envelope, IngestError> {
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
    for (v, field) in [
        (env.key_version, "keyVersion"),
        (env.epoch, "epoch"),
        (env.sequence, "sequence"),
        (env.created_at, "createdAt"),
    ] {
        if i64::try_from(v).is_err() {
            return Err(EnvelopeError::Invalid(format!(
                "{field} is above the largest storable value"
            ))
            .into());
        }
    }
    Ok(env)
}

/// `verify_strict` of one parsed envelope, and its writer item.
pub(super) fn verify(
    env: Envelope,
    key: &SigningPublicKey,
    size: usize,
) -> Result<IngestItem, IngestError> {
    env.verify(key)?;
    // parse() checked every integer fits an i64
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Ok(IngestItem {
        v: int(env.v),
        key_version: int(env.key_version),
        epoch: int(env.epoch),
        sequence: int(env.sequence),
        created_at: int(env.created_at),
        nonce: env.nonce.to_vec(),
        signature: env.signature.to_vec(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        session_id: env.session_id,
        sender_device_id: env.sender_device_id,
        ciphertext: env.ciphertext,
    })
}

/// The pool's pass over a batch: its shape, then each envelope's cheap checks, cached key and
/// `verify_strict`, in parallel when the batch is large enough; in the batch's order.
pub(super) fn check_batch(
    path_session: &str,
    body: &[u8],
    keys: &KeyCache,
) -> Result<Vec<Stage>, IngestError> {
    use rayon::prelude::*;
    let batch = parse_batch(body)?;
    Ok(batch
        .envelopes
        .par_iter()
        .with_min_len(MIN_VERIFY_CHUNK)
        .map(|raw| {
            let bytes = raw.get().as_bytes();
            match parse(path_session, bytes) {
                Err(e) => Stage::Judged(Err(e)),
                Ok(env) => match keys.get(&env.sender_device_id, env.key_version) {
                    Some(key) => Stage::Judged(verify(env, &key, bytes.len())),
                    None => Stage::KeyMissing(Box::new(env), bytes.len()),
                },
            }
        })
        .collect())
}

/// Lowers the calling thread's scheduling priority (Linux: `nice` is per thread), so CPU-bound
/// verification yields to the latency-bound commit path. Best effort.
fn lower_thread_priority() {
    // SAFETY: setpriority on the calling thread's own id; no memory is passed.
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::id_t::try_from(libc::gettid()).unwrap_or(0),
            VERIFY_NICE,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the verification threads' priority");
    }
}
