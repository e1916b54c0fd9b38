//! Executing runs: a rendered command becomes a real child process — as the
//! unprivileged `run_as` user, in a workspace root, with a scrubbed environment
//! and its own process group — whose stdout/stderr are cut into bounded chunks,
//! redacted, and stored. Backpressure is end to end: the readers wait for the
//! store, and the child blocks on a full pipe; no byte is silently dropped below
//! the configured output cap. While a run is live, the newest chunk's overlap window is held
//! back from viewers ([`crate::run_hold`]).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Semaphore, mpsc};

use crate::children::Children;
use crate::config::RunsConfig;
use crate::metrics::Metrics;
use crate::plugins::{Finding, PluginError, PluginHost, Rendered, apply_masks};
use crate::run_hold::{Holds, OUTPUT_HOLD, Served};
use crate::store::{OutputChunk, Store, StoreError};
use happyx_core::vocab::{OutputStream, RunStatus};

/// Largest output chunk stored (bytes).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How long a partial chunk waits for more bytes before it is stored.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
// A secret is split across chunks only by a pause longer than FLUSH_AFTER; the hold of the
// overlap window from live viewers must outlast it.
const _: () = assert!(OUTPUT_HOLD.as_millis() > FLUSH_AFTER.as_millis());
/// Bytes of the previous chunk re-scanned with the next one, so a secret split
/// across a chunk boundary is still found.
pub const OVERLAP: usize = 4096;

/// Starts and supervises runs.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    plugins: PluginHost,
    metrics: Arc<Metrics>,
    children: Children,
    default_timeout: Duration,
    max_output: u64,
    slots: Semaphore,
    holds: Holds,
}

struct Piece {
    stream: OutputStream,
    data: Vec<u8>,
}

impl Runner {
    pub fn new(
        store: Store,
        plugins: PluginHost,
        metrics: Arc<Metrics>,
        children: Children,
        cfg: &RunsConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                plugins,
                metrics,
                children,
                default_timeout: Duration::from_millis(cfg.default_timeout_ms),
                max_output: cfg.max_output_bytes,
                slots: Semaphore::new(cfg.max_concurrent),
                holds: Holds::default(),
            }),
        }
    }

    pub fn plugins(&self) -> &PluginHost {
        &self.inner.plugins
    }

    /// What of a run's redacted output viewers may be served now (see [`crate::run_hold`]);
    /// `None` when this host is not executing the run.
    pub fn served(&self, run_id: &str) -> Option<Served> {
        self.inner.holds.served(run_id)
    }

    /// Executes a created (queued) run of `requester` in the background, as that identity's
    /// child.
    pub fn start(&self, run_id: String, requester: String, cmd: Rendered) {
        let inner = self.inner.clone();
        inner.holds.begin(&run_id);
        tokio::spawn(async move {
            let _slot = inner.slots.acquire().await;
            if let Err(e) = execute(&inner, &run_id, &requester, &cmd).await {
                tracing::error!(run = %run_id, error = %e, "run failed to execute");
                inner.holds.finish(&run_id);
                let _ = inner
                    .store
                    .finish_run(&run_id, RunStatus::Failed, None)
                    .await;
            }
            inner.holds.end(&run_id);
            Metrics::inc(&inner.metrics.runs_finished);
        });
    }
}

async fn execute(
    inner: &Inner,
    run_id: &str,
    requester: &str,
    cmd: &Rendered,
) -> Result<(), StoreError> {
    let ctx = match inner.children.for_actor(requester).await {
        Ok(ctx) => ctx,
        Err(e) => {
            tracing::warn!(run = %run_id, code = e.code(), error = %e, "cannot place the run's child");
            return inner.store.fail_run_spawn(run_id, &e.to_string()).await;
        }
    };
    let spawned = ctx
        .command(&cmd.program, &cmd.args)
        .map(|mut c| c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn());
    let mut child = match spawned {
        Ok(Ok(c)) => c,
        Err(e) => {
            tracing::warn!(run = %run_id, code = e.code(), error = %e, "cannot confine the run's child");
            return inner.store.fail_run_spawn(run_id, &e.to_string()).await;
        }
        Ok(Err(e)) => {
            // Recorded in the run itself (status, message, event), not only in the log.
            let message = format!("cannot start {}: {e}", cmd.program);
            tracing::warn!(run = %run_id, error = %message, "cannot spawn run");
            return inner.store.fail_run_spawn(run_id, &message).await;
        }
    };
    let pid = child.id();
    inner.store.mark_run_started(run_id, pid).await?;
    Metrics::inc(&inner.metrics.runs_started);

    // Readers feed one writer through a small bounded channel: when the store
    // falls behind, the readers stop reading and the child blocks on write.
    let (tx, rx) = mpsc::channel::<Piece>(4);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_stream(
            out,
            OutputStream::Stdout,
            tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_stream(
            err,
            OutputStream::Stderr,
            tx.clone(),
        )));
    }
    drop(tx);
    let writer = write_chunks(inner, run_id, rx);

    let timeout = cmd.timeout.unwrap_or(inner.default_timeout);
    let waited = async {
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => (status.code().map(i64::from), status_name(&status), false),
            Ok(Err(_)) => (None, RunStatus::Failed, false),
            Err(_) => {
                if let Some(pid) = pid {
                    kill_group(pid);
                }
                let _ = child.wait().await;
                (None, RunStatus::TimedOut, true)
            }
        }
    };
    let ((code, status, timed_out), write_result) = tokio::join!(waited, writer);
    if timed_out {
        // Grandchildren may still hold the pipes; the group was killed, so the
        // readers reach EOF promptly.
        tracing::info!(run = %run_id, "run timed out");
    }
    for r in readers {
        let _ = r.await;
    }
    // Every chunk is stored (or never will be): release the holds before the final status.
    inner.holds.finish(run_id);
    write_result?;
    inner.store.finish_run(run_id, status, code).await
}

fn status_name(status: &std::process::ExitStatus) -> RunStatus {
    if status.success() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    }
}

fn kill_group(pid: u32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// Reads a stream into pieces of at most [`CHUNK_BYTES`], flushing a partial
/// piece after [`FLUSH_AFTER`] of silence.
async fn read_stream<R: AsyncRead + Unpin>(
    mut r: R,
    stream: OutputStream,
    tx: mpsc::Sender<Piece>,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut filled = 0usize;
    loop {
        let read = if filled == 0 {
            r.read(&mut buf[filled..]).await
        } else {
            match tokio::time::timeout(FLUSH_AFTER, r.read(&mut buf[filled..])).await {
                Ok(res) => res,
                Err(_) => {
                    let data = buf[..filled].to_vec();
                    filled = 0;
                    if tx.send(Piece { stream, data }).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                filled += n;
                if filled == CHUNK_BYTES {
                    let data = std::mem::replace(&mut buf, vec![0u8; CHUNK_BYTES]);
                    filled = 0;
                    if tx.send(Piece { stream, data }).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    if filled > 0 {
        let _ = tx
            .send(Piece {
                stream,
                data: buf[..filled].to_vec(),
            })
            .await;
    }
}

/// Per-stream redaction state: the previous chunk of the stream (raw tail and
/// its stored masked copy), so a secret split across a boundary is masked on
/// both sides.
#[derive(Default)]
struct Tail {
    offset: i64,
    prev: Option<PrevChunk>,
}

struct PrevChunk {
    index: i64,
    raw_tail: Vec<u8>,
    /// Masked copy of the whole previous chunk (`None`: withheld).
    masked: Option<Vec<u8>>,
}

async fn write_chunks(
    inner: &Inner,
    run_id: &str,
    mut rx: mpsc::Receiver<Piece>,
) -> Result<(), StoreError> {
    let mut index = 0i64;
    let mut kept: u64 = 0;
    let mut truncated = false;
    let mut tails: [Tail; 2] = Default::default();
    while let Some(piece) = rx.recv().await {
        if kept >= inner.max_output {
            if !truncated {
                truncated = true;
                inner.store.mark_run_truncated(run_id).await?;
            }
            continue; // keep draining so the child never blocks forever
        }
        let room = (inner.max_output - kept) as usize;
        let mut data = piece.data;
        let cut = data.len() > room;
        if cut {
            data.truncate(room);
            truncated = true;
        }
        kept += data.len() as u64;
        inner.holds.next_chunk(run_id, piece.stream);
        let tail = &mut tails[usize::from(piece.stream == OutputStream::Stderr)];
        let prev_tail = tail
            .prev
            .as_ref()
            .map(|p| p.raw_tail.as_slice())
            .unwrap_or(&[]);
        let r = redact_with_overlap(&inner.plugins, piece.stream.as_str(), prev_tail, &data).await;
        let (redacted, findings, policy_hash) = match r {
            Ok(o) => {
                // A secret that began in the previous chunk: mask its start there too.
                if let Some(p) = tail.prev.as_mut()
                    && let Some(m) = p.masked.as_mut()
                    && o.mask_previous(m, p.raw_tail.len())
                {
                    inner
                        .store
                        .update_run_output_redaction(run_id, p.index, m)
                        .await?;
                }
                (Some(o.masked), o.findings, Some(o.policy_hash))
            }
            Err(e) => {
                Metrics::inc(&inner.metrics.redaction_failures);
                tracing::warn!(
                    run = %run_id,
                    plugin = %e.plugin(),
                    code = e.code(),
                    "redaction failed; chunk withheld from derived views"
                );
                // The redactor that failed is recorded: the decision to withhold was its.
                (None, 0, withheld_by(&e))
            }
        };
        let chunk = OutputChunk {
            stream: piece.stream,
            chunk_index: index,
            byte_offset: tail.offset,
            data,
            redacted,
            findings,
            policy_hash,
        };
        inner.store.append_run_output(run_id, &chunk, cut).await?;
        tail.offset += chunk.data.len() as i64;
        let keep_from = chunk.data.len().saturating_sub(OVERLAP);
        // Its overlap window may still be re-masked by the next chunk of the stream.
        let hold_from = chunk
            .redacted
            .as_ref()
            .map(|m| m.len().saturating_sub(OVERLAP));
        inner.holds.stored(run_id, piece.stream, index, hold_from);
        tail.prev = Some(PrevChunk {
            index,
            raw_tail: chunk.data[keep_from..].to_vec(),
            masked: chunk.redacted,
        });
        index += 1;
    }
    Ok(())
}

/// The redaction of one chunk scanned together with the previous chunk's tail.
pub struct Overlapped {
    /// The chunk with every secret that touches it masked.
    pub masked: Vec<u8>,
    /// Findings that touch the chunk.
    pub findings: i64,
    /// Ranges (relative to the previous tail) of secrets that began there and
    /// continue into this chunk; the previous chunk's masked copy needs them.
    pub prev_masks: Vec<Finding>,
    pub policy_hash: String,
}

impl Overlapped {
    /// Masks, in the previous chunk's masked copy, the start of any secret
    /// that began there and ends in this chunk. `raw_tail_len` is the length of
    /// the raw tail that was scanned in front of this chunk. Returns whether the
    /// copy changed (and so must be stored again).
    pub fn mask_previous(&self, prev_masked: &mut Vec<u8>, raw_tail_len: usize) -> bool {
        if self.prev_masks.is_empty() {
            return false;
        }
        let base = prev_masked.len().saturating_sub(raw_tail_len);
        let shifted: Vec<Finding> = self
            .prev_masks
            .iter()
            .map(|f| Finding {
                rule: f.rule.clone(),
                start: f.start + base,
                end: f.end + base,
            })
            .collect();
        *prev_masked = apply_masks(prev_masked, &shifted);
        true
    }
}

/// Redacts `data` with `prev` (the previous chunk's raw tail) in front of it.
/// The SHA-256 of the redactor whose failure withheld a chunk (stored as the chunk's
/// `policy_hash`), when the error names it.
pub fn withheld_by(e: &PluginError) -> Option<String> {
    Some(e.plugin().sha256.clone()).filter(|s| !s.is_empty())
}

pub async fn redact_with_overlap(
    plugins: &PluginHost,
    source: &str,
    prev: &[u8],
    data: &[u8],
) -> Result<Overlapped, PluginError> {
    let mut joined = Vec::with_capacity(prev.len() + data.len());
    joined.extend_from_slice(prev);
    joined.extend_from_slice(data);
    let r = plugins.redact(source, &joined).await?;
    let lead = prev.len();
    let mut own = Vec::new();
    let mut prev_masks = Vec::new();
    for f in r.findings.iter().filter(|f| f.end > lead) {
        own.push(Finding {
            rule: f.rule.clone(),
            start: f.start.saturating_sub(lead),
            end: f.end - lead,
        });
        if f.start < lead {
            prev_masks.push(Finding {
                rule: f.rule.clone(),
                start: f.start,
                end: lead,
            });
        }
    }
    Ok(Overlapped {
        masked: apply_masks(data, &own),
        findings: own.len() as i64,
        prev_masks,
        policy_hash: r.policy_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::PluginRef;

    #[test]
    fn a_withheld_chunk_names_the_redactor_that_failed() {
        let failed = |sha256: &str| PluginError::Trap {
            plugin: Box::new(PluginRef {
                kind: "redactor".into(),
                sha256: sha256.into(),
                ..PluginRef::default()
            }),
        };
        let sha = "ab".repeat(32);
        assert_eq!(withheld_by(&failed(&sha)), Some(sha));
        assert_eq!(withheld_by(&failed("")), None);
    }
}
