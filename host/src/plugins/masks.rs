//! Applying redaction findings, and redacting one stream chunk by chunk.
//!
//! Masks are **same-length**: every byte inside a finding becomes `*`, so
//! offsets in redacted output equal offsets in the raw output (transcripts
//! are addressed by raw byte offset) and chunks can be masked independently.
//! Overlapping or adjacent ranges simply merge.

use super::PluginHost;
use super::types::Finding;

/// The byte that replaces masked bytes.
pub const MASK_BYTE: u8 = b'*';

/// Overlap window [`StreamRedactor`] keeps by default.
pub const DEFAULT_WINDOW: usize = 4096;

/// Returns `data` with every byte inside a finding replaced by `*`.
/// Ranges outside `data` are clipped; empty ranges are ignored.
pub fn apply_masks(data: &[u8], findings: &[Finding]) -> Vec<u8> {
    let mut out = data.to_vec();
    for f in findings {
        let end = f.end.min(out.len());
        if f.start < end {
            out[f.start..end].fill(MASK_BYTE);
        }
    }
    out
}

/// How one chunk of a stream was redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedactionStatus {
    /// The redactor ran and its findings were applied.
    Redacted,
    /// The redactor failed (its error code); the released bytes are fully
    /// masked (fail closed).
    Failed { code: &'static str },
}

/// Output of [`StreamRedactor::push`] / [`StreamRedactor::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedChunk {
    /// Raw stream offset of `masked[0]`.
    pub offset: u64,
    /// Masked bytes released now (same length as the raw bytes they cover).
    pub masked: Vec<u8>,
    /// Findings that start in the released bytes.
    pub findings: usize,
    /// sha256 of the redactor used, if it ran.
    pub policy_hash: Option<String>,
    pub status: RedactionStatus,
}

/// Redacts successive chunks of one stream so a secret split across a chunk
/// boundary is still found.
///
/// It holds back the last `window` raw bytes of what it has seen: each
/// `push` scans `held + chunk` in one redactor call and releases all but the
/// last `window` bytes, masked. A finding that reaches into the held bytes
/// is remembered, so its tail is masked when released even if the next scan
/// (which lacks the secret's beginning) would not match it. Output therefore
/// lags input by up to `window` bytes; call [`StreamRedactor::finish`] at the
/// end of the stream to release the rest. Secrets longer than `window` that
/// start before the held bytes are found only if the redactor matches their
/// remainder on its own.
pub struct StreamRedactor {
    host: PluginHost,
    source: String,
    window: usize,
    held: Vec<u8>,
    held_start: u64,
    /// Absolute ranges already decided to be masked, beyond what was released.
    carry: Vec<(u64, u64)>,
}

impl StreamRedactor {
    /// A redactor for one stream named `source` ("stdout", "pty-output"...).
    pub fn new(host: PluginHost, source: impl Into<String>) -> Self {
        Self::with_window(host, source, DEFAULT_WINDOW)
    }

    /// Same, with an explicit overlap window in bytes.
    pub fn with_window(host: PluginHost, source: impl Into<String>, window: usize) -> Self {
        StreamRedactor {
            host,
            source: source.into(),
            window,
            held: Vec::new(),
            held_start: 0,
            carry: Vec::new(),
        }
    }

    /// Raw bytes pushed so far.
    pub fn raw_len(&self) -> u64 {
        self.held_start + self.held.len() as u64
    }

    /// Scans `chunk` (with the held-back bytes before it) and releases what
    /// is now final.
    pub async fn push(&mut self, chunk: &[u8]) -> RedactedChunk {
        let base = self.held_start;
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        let release = buf.len().saturating_sub(self.window);
        let release_end = base + release as u64;

        let (ranges, findings, policy_hash, status) =
            match self.host.redact(&self.source, &buf).await {
                Ok(r) => {
                    let ranges: Vec<(u64, u64)> = r
                        .findings
                        .iter()
                        .map(|f| (base + f.start as u64, base + f.end as u64))
                        .collect();
                    let count = ranges.iter().filter(|(s, _)| *s < release_end).count();
                    (
                        ranges,
                        count,
                        Some(r.policy_hash),
                        RedactionStatus::Redacted,
                    )
                }
                Err(e) => (
                    vec![(base, release_end)],
                    0,
                    None,
                    RedactionStatus::Failed { code: e.code() },
                ),
            };

        let mut all = std::mem::take(&mut self.carry);
        all.extend(ranges);
        let masked = mask_range(&buf[..release], base, &all);
        self.carry = all
            .into_iter()
            .filter(|(_, e)| *e > release_end)
            .map(|(s, e)| (s.max(release_end), e))
            .collect();
        self.held = buf.split_off(release);
        self.held_start = release_end;
        RedactedChunk {
            offset: base,
            masked,
            findings,
            policy_hash,
            status,
        }
    }

    /// Releases the held-back bytes (end of stream).
    pub fn finish(mut self) -> RedactedChunk {
        let held = std::mem::take(&mut self.held);
        let masked = mask_range(&held, self.held_start, &self.carry);
        RedactedChunk {
            offset: self.held_start,
            masked,
            findings: self.carry.len(),
            policy_hash: None,
            status: RedactionStatus::Redacted,
        }
    }
}

/// Masks `raw` (which starts at absolute offset `base`) with absolute ranges.
fn mask_range(raw: &[u8], base: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let len = out.len() as u64;
    for &(s, e) in ranges {
        let s = s.saturating_sub(base).min(len) as usize;
        let e = e.saturating_sub(base).min(len) as usize;
        if s < e {
            out[s..e].fill(MASK_BYTE);
        }
    }
    out
}
