//! Transcript capture: raw output bytes from the holder, de-duplicated by raw
//! offset, cut into chunks of at most 64 KiB, redacted with the cross-chunk
//! overlap of [`crate::runs::redact_with_overlap`], persisted, and only then
//! acknowledged and published to live viewers (redacted copies only).

use std::sync::Arc;

use tokio::sync::broadcast;

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
        state: String,
        exit_code: Option<i64>,
        signal: Option<i64>,
    },
}

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
}

impl Transcript {
    /// The holder dropped `bytes` of input because the program was not reading it: a
    /// `pty.input_dropped` event for the record, a warning, and word to the live viewers (the
    /// driver is told over its WebSocket).
    pub async fn input_dropped(&self, bytes: u64) -> Result<(), StoreError> {
        tracing::warn!(pty = %self.pty_id, bytes, "the program is not reading its input; input dropped");
        self.store
            .append_event(&NewEvent::new(
                "pty.input_dropped",
                "holder",
                &self.pty_id,
                serde_json::json!({ "bytes": bytes }),
            ))
            .await?;
        let _ = self.live.send(Live::InputDropped { bytes });
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
    ) -> Result<Self, StoreError> {
        let prev = store.last_transcript_chunk(pty_id).await?.map(|c| {
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
        })
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
    /// Returns true when something was persisted.
    pub async fn flush(&mut self, all: bool) -> Result<bool, StoreError> {
        let take = if all {
            self.pending.len()
        } else {
            self.pending.len() / CHUNK_BYTES * CHUNK_BYTES
        };
        if take == 0 {
            return Ok(false);
        }
        let mut chunks = Vec::new();
        let mut prev_fix: Option<(i64, Vec<u8>)> = None;
        let mut at = 0usize;
        while at < take {
            let n = (take - at).min(CHUNK_BYTES);
            let data = self.pending[at..at + n].to_vec();
            let offset = (self.persisted + at as u64) as i64;
            let tail = self
                .prev
                .as_ref()
                .map(|p| p.raw_tail.as_slice())
                .unwrap_or(&[]);
            let (redacted, findings, policy_hash) =
                match redact_with_overlap(&self.plugins, "pty", tail, &data).await {
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
                            code = e.code(),
                            "redaction failed; transcript chunk withheld"
                        );
                        (None, 0, None)
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
        let fix = prev_fix.as_ref().map(|(o, m)| (*o, m.as_slice()));
        let new_end = self
            .store
            .append_transcript(&self.pty_id, &chunks, fix)
            .await?;
        self.pending.drain(..take);
        self.persisted = new_end as u64;
        for c in chunks {
            let _ = self.live.send(Live::Chunk {
                offset: c.byte_offset as u64,
                raw_len: c.data.len() as u64,
                redacted: c.redacted.map(Arc::new),
            });
        }
        Ok(true)
    }
}
