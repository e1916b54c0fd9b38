//! Applying redaction findings.
//!
//! Masks are **same-length**: every byte inside a finding becomes `*`, so
//! offsets in redacted output equal offsets in the raw output (transcripts
//! are addressed by raw byte offset) and chunks can be masked independently.
//! Overlapping or adjacent ranges simply merge. Streams are redacted chunk by
//! chunk with an overlap by the server's `runs::redact_with_overlap`.

use super::types::Finding;

/// The byte that replaces masked bytes.
pub const MASK_BYTE: u8 = b'*';

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
