//! Transcript capture: raw output bytes from the holder, de-duplicated by raw
//! offset, cut into chunks of at most 64 KiB, redacted with the cross-chunk
//! overlap of [`crate::runs::redact_with_overlap`], persisted, and only then
//! acknowledged and published to live viewers (redacted copies only).
//!
//! The last [`OVERLAP`] bytes of the newest chunk may still be re-masked when
//! the next chunk arrives (a secret split across the boundary). They are held
//! back from live viewers until the next chunk is persisted (then released with
//! the corrected mask) or [`LIVE_HOLD`] passes (then released as stored), so a
//! live viewer and the stored transcript mask the same bytes. [`Transcript::released`]
//! is how far viewers may read; catch-up from the store stops there too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::plugins::PluginHost;
use crate::runs::{CHUNK_BYTES, OVERLAP, redact_with_overlap};
use crate::store::{NewEvent, Store, StoreError, TranscriptChunk};

/// What live viewers receive. Only redacted bytes ever travel here.
#[derive(Clone, Debug)]
pub enum Live {
    /// A persisted chunk: raw start offset, raw length, masked copy (`None`: withheld).
    Chunk {
        offset: u64,
        raw_len: u64,
        redacted: Option<Arc<Vec<u8>>>,
    },
    /// The program was not reading its input: this many input bytes were dropped.
    InputDropped { bytes: u64 },
    /// The session ended; every chunk below `end` was published before.
    End {
        end: u64,
        state: happyx_core::vocab::PtyState,
        exit_code: Option<i64>,
        signal: Option<i64>,
    },
}

/// How long the newest chunk's overlap window is held back from live viewers when no more
/// output follows: an interactive program's echo or prompt reaches a viewer this much later
/// than it is persisted (the chunk itself waits up to 15 ms of quiet before it is persisted).
pub const LIVE_HOLD: Duration = Duration::from_millis(60);

/// The newest chunk's tail, not yet sent to live viewers.
struct Held {
    /// Raw offset of the chunk the tail belongs to.
    chunk_offset: i64,
    /// Raw offset of the tail's first byte.
    offset: u64,
    /// The tail's masked copy (same length as the raw tail).
    masked: Vec<u8>,
    until: Instant,
}

#[derive(Clone)]
struct Prev {
    offset: i64,
    raw_tail: Vec<u8>,
    masked: Option<Vec<u8>>,
}

/// The capture state of one session.
pub struct Transcript {
    pty_id: String,
    store: Store,
    plugins: PluginHost,
    metrics: Arc<Metrics>,
    /// Raw offset of the first byte of `pending` (= bytes persisted).
    persisted: u64,
    pending: Vec<u8>,
    prev: Option<Prev>,
    live: broadcast::Sender<Live>,
    dropped: DropTally,
    held: Option<Held>,
    /// Raw offset up to which live viewers have been sent output (shared with the viewers).
    released: Arc<AtomicU64>,
    /// `[pty] max_transcript_bytes`: output past this raw offset is published, not stored.
    cap: u64,
}

/// Input the holder dropped and not yet reported: a flood of drops becomes one event (and one
/// warning, one notice to drivers) per [`DROP_REPORT_EVERY`] with the totals.
#[derive(Default)]
struct DropTally {
    bytes: u64,
    reports: u64,
    last_report: Option<std::time::Instant>,
}

/// Least time between two `pty.input_dropped` events of one terminal.
pub const DROP_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Transcript {
    /// The holder dropped `bytes` of input because the program was not reading it. Reported
    /// at once when nothing was reported in the last [`DROP_REPORT_EVERY`], else added to the
    /// totals that [`Self::report_dropped`] writes when [`Self::dropped_due`] comes.
    pub async fn input_dropped(&mut self, bytes: u64) -> Result<(), StoreError> {
        self.dropped.bytes += bytes;
        self.dropped.reports += 1;
        let quiet = self
            .dropped
            .last_report
            .is_none_or(|at| at.elapsed() >= DROP_REPORT_EVERY);
        if quiet {
            self.report_dropped().await?;
        }
        Ok(())
    }

    /// When the totals of dropped input held back must be reported, if any are.
    pub fn dropped_due(&self) -> Option<tokio::time::Instant> {
        if self.dropped.bytes == 0 {
            return None;
        }
        let at = self
            .dropped
            .last_report
            .unwrap_or_else(std::time::Instant::now)
            + DROP_REPORT_EVERY;
        Some(tokio::time::Instant::from_std(at))
    }

    /// Writes the dropped-input totals held back (if any) as one `pty.input_dropped` event
    /// `{bytes, reports}`, logs one warning, and tells the driving viewers.
    pub async fn report_dropped(&mut self) -> Result<(), StoreError> {
        let DropTally { bytes, reports, .. } = self.dropped;
        if bytes == 0 {
            return Ok(());
        }
        tracing::warn!(pty = %self.pty_id, bytes, reports, "the program is not reading its input; input dropped");
        self.store
            .append_event(&NewEvent::new(
                "pty.input_dropped",
                "holder",
                &self.pty_id,
                serde_json::json!({ "bytes": bytes, "reports": reports }),
            ))
            .await?;
        let _ = self.live.send(Live::InputDropped { bytes });
        self.dropped = DropTally {
            bytes: 0,
            reports: 0,
            last_report: Some(std::time::Instant::now()),
        };
        Ok(())
    }

    /// Resumes after `persisted` bytes, restoring the overlap from the last chunk.
    pub async fn resume(
        pty_id: &str,
        store: Store,
        plugins: PluginHost,
        metrics: Arc<Metrics>,
        persisted: u64,
        live: broadcast::Sender<Live>,
        released: Arc<AtomicU64>,
    ) -> Result<Self, StoreError> {
        // Past the cap the last stored chunk no longer precedes `persisted`: no overlap then.
        let last = store.last_transcript_chunk(pty_id).await?;
        let last = last.filter(|c| (c.byte_offset + c.data.len() as i64) as u64 == persisted);
        let prev = last.map(|c| {
            let keep = c.data.len().saturating_sub(OVERLAP);
            Prev {
                offset: c.byte_offset,
                raw_tail: c.data[keep..].to_vec(),
                masked: c.redacted,
            }
        });
        Ok(Self {
            pty_id: pty_id.to_string(),
            store,
            plugins,
            metrics,
            persisted,
            pending: Vec::new(),
            prev,
            live,
            dropped: DropTally::default(),
            held: None,
            released: {
                released.store(persisted, Ordering::SeqCst);
                released
            },
            cap: u64::MAX,
        })
    }

    /// Stores at most `cap` raw bytes of transcript (`[pty] max_transcript_bytes`).
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap;
        self
    }

    /// When the held-back tail must be released if no more output comes, if one is held.
    pub fn hold_due(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.until)
    }

    /// Sends the held-back tail (if any) to live viewers as it is now stored.
    pub fn release_held(&mut self) {
        if let Some(h) = self.held.take() {
            self.publish(h.offset, h.masked.len() as u64, Some(h.masked));
        }
    }

    /// Raises the released offset, then sends the range (in that order: a viewer that read
    /// the old offset is subscribed already and receives it; one that read the new one finds
    /// it in the store).
    fn publish(&self, offset: u64, raw_len: u64, redacted: Option<Vec<u8>>) {
        if raw_len == 0 {
            return;
        }
        self.released.store(offset + raw_len, Ordering::SeqCst);
        let _ = self.live.send(Live::Chunk {
            offset,
            raw_len,
            redacted: redacted.map(Arc::new),
        });
    }

    /// Next raw offset expected from the holder.
    pub fn end(&self) -> u64 {
        self.persisted + self.pending.len() as u64
    }

    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds output starting at raw `offset`. Bytes already held are skipped (a
    /// holder resends its unacknowledged ring after a reconnect); a gap is an error.
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Result<(), u64> {
        let end = self.end();
        if offset > end {
            return Err(end);
        }
        let skip = (end - offset) as usize;
        if skip < data.len() {
            self.pending.extend_from_slice(&data[skip..]);
        }
        Ok(())
    }

    /// Persists pending bytes: whole 64 KiB chunks, or everything with `all`.
    /// Returns true when something was persisted. [`Self::prepare`], the commit and
    /// [`Self::committed`] in one step, for callers that have nothing to do meanwhile.
    pub async fn flush(&mut self, all: bool) -> Result<bool, StoreError> {
        let Some(batch) = self.prepare(all).await else {
            return Ok(false);
        };
        let (batch, end) = batch.commit().await;
        match end {
            Ok(end) => {
                self.committed(batch, end);
                Ok(true)
            }
            Err(e) => {
                self.abandon(batch);
                Err(e)
            }
        }
    }

    /// Cuts the pending bytes (whole 64 KiB chunks, or everything with `all`) into chunks and
    /// redacts them: the batch [`Batch::commit`] stores. Nothing is taken out of `pending`
    /// until [`Self::committed`], so the offsets the holder resends are still recognized while
    /// the batch is on its way; only one batch may be prepared and not yet committed or
    /// abandoned at a time (the next one's redaction overlap starts where it ends).
    pub async fn prepare(&mut self, all: bool) -> Option<Batch> {
        let take = if all {
            self.pending.len()
        } else {
            self.pending.len() / CHUNK_BYTES * CHUNK_BYTES
        };
        if take == 0 {
            return None;
        }
        let prev_before = self.prev.clone();
        let mut chunks = Vec::new();
        let mut prev_fix: Option<(i64, Vec<u8>)> = None;
        let mut at = 0usize;
        while at < take {
            let start = self.persisted + at as u64;
            let mut n = (take - at).min(CHUNK_BYTES);
            // A chunk ends exactly at the cap, so the stored transcript is its byte-exact prefix.
            if start < self.cap {
                n = n.min((self.cap - start).min(usize::MAX as u64) as usize);
            }
            let data = self.pending[at..at + n].to_vec();
            let offset = start as i64;
            let tail = self
                .prev
                .as_ref()
                .map(|p| p.raw_tail.as_slice())
                .unwrap_or(&[]);
            let (redacted, findings, policy_hash) = match redact_with_overlap(
                &self.plugins,
                crate::plugins::source::PTY_OUTPUT,
                tail,
                &data,
            )
            .await
            {
                Ok(o) => {
                    if let Some(p) = self.prev.as_mut()
                        && let Some(m) = p.masked.as_mut()
                        && o.mask_previous(m, p.raw_tail.len())
                    {
                        if chunks.is_empty() {
                            prev_fix = Some((p.offset, m.clone()));
                        } else if let Some(c) = chunks.last_mut() {
                            let c: &mut TranscriptChunk = c;
                            c.redacted = Some(m.clone());
                        }
                    }
                    (Some(o.masked), o.findings, Some(o.policy_hash))
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.redaction_failures);
                    tracing::warn!(
                        pty = %self.pty_id,
                        plugin = %e.plugin(),
                        code = e.code(),
                        "redaction failed; transcript chunk withheld"
                    );
                    (None, 0, crate::runs::withheld_by(&e))
                }
            };
            let keep = data.len().saturating_sub(OVERLAP);
            self.prev = Some(Prev {
                offset,
                raw_tail: data[keep..].to_vec(),
                masked: redacted.clone(),
            });
            chunks.push(TranscriptChunk {
                byte_offset: offset,
                data,
                redacted,
                findings,
                policy_hash,
            });
            at += n;
        }
        Some(Batch {
            store: self.store.clone(),
            pty_id: self.pty_id.clone(),
            cap: self.cap,
            take,
            chunks,
            prev_fix,
            prev_before,
        })
    }

    /// A batch from [`Self::prepare`] was stored (`new_end`: the persisted offset it returned):
    /// its bytes leave `pending`, and live viewers receive them.
    pub fn committed(&mut self, batch: Batch, new_end: i64) {
        let Batch {
            take,
            chunks,
            prev_fix,
            ..
        } = batch;
        self.pending.drain(..take.min(self.pending.len()));
        self.persisted = new_end as u64;
        // The held tail now has its final mask (the fix just stored, if any).
        if let Some(h) = self.held.as_mut()
            && let Some((off, m)) = &prev_fix
            && *off == h.chunk_offset
            && m.len() >= h.masked.len()
        {
            h.masked = m[m.len() - h.masked.len()..].to_vec();
        }
        self.release_held();
        let last = chunks.len().saturating_sub(1);
        for (i, c) in chunks.into_iter().enumerate() {
            let offset = c.byte_offset as u64;
            let raw_len = c.data.len() as u64;
            match c.redacted {
                // The newest chunk: its overlap window may still be re-masked.
                Some(m) if i == last && m.len() as u64 == raw_len => {
                    let keep = m.len().min(OVERLAP);
                    let cut = m.len() - keep;
                    self.publish(offset, cut as u64, Some(m[..cut].to_vec()));
                    self.held = Some(Held {
                        chunk_offset: c.byte_offset,
                        offset: offset + cut as u64,
                        masked: m[cut..].to_vec(),
                        until: Instant::now() + LIVE_HOLD,
                    });
                }
                r => self.publish(offset, raw_len, r),
            }
        }
    }

    /// A batch from [`Self::prepare`] was not stored: its bytes stay pending and the redaction
    /// overlap is as it was before it, so the next batch redacts them again.
    pub fn abandon(&mut self, batch: Batch) {
        self.prev = batch.prev_before;
    }
}

/// Redacted chunks on their way to the store (from [`Transcript::prepare`]). It owns what its
/// commit needs, so the capture loop keeps reading the holder while it is stored.
pub struct Batch {
    store: Store,
    pty_id: String,
    cap: u64,
    /// Bytes of `pending` it covers.
    take: usize,
    chunks: Vec<TranscriptChunk>,
    /// The earlier chunk's corrected mask (a secret split across the boundary).
    prev_fix: Option<(i64, Vec<u8>)>,
    /// The redaction overlap before this batch, restored if it is abandoned.
    prev_before: Option<Prev>,
}

impl Batch {
    /// Stores the batch in one transaction: the new persisted offset, and the batch back for
    /// [`Transcript::committed`] or [`Transcript::abandon`].
    pub async fn commit(self) -> (Self, Result<i64, StoreError>) {
        let fix = self.prev_fix.as_ref().map(|(o, m)| (*o, m.as_slice()));
        let end = self
            .store
            .append_transcript(&self.pty_id, &self.chunks, fix, self.cap)
            .await;
        (self, end)
    }
}
