//! The kinds of stored material the retention pass can prune, defined once.
//!
//! [`RetentionKind`] mirrors the WIT `retention.kind` enum of `happyx:policy@0.2.0`; its
//! serialisation names (serde, [`RetentionKind::as_str`], the audit events of the pass, the
//! conformance fixtures) are the WIT case names. The store, the pruning pass, the plugin glue
//! and the contract checks all use this type: no kind is spelled as a string anywhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of prunable item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetentionKind {
    /// A chunk of a run's output (raw and redacted copies).
    RunOutput,
    /// A chunk of a terminal's transcript.
    TranscriptChunk,
    /// A stored end-to-end encrypted envelope (ciphertext).
    Envelope,
    /// An audit event; only ever cut at the oldest end of the log.
    Event,
    /// Secret material that outlived its use: the token hash of a used, denied or expired
    /// approval (the approval record stays), a used or expired enrollment code, a spent or
    /// expired attach ticket.
    Leftover,
}

impl RetentionKind {
    /// Every kind, in the order the pass visits them.
    pub const ALL: [RetentionKind; 5] = [
        RetentionKind::RunOutput,
        RetentionKind::TranscriptChunk,
        RetentionKind::Envelope,
        RetentionKind::Event,
        RetentionKind::Leftover,
    ];

    /// The serialisation name, the same as the WIT enum case.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionKind::RunOutput => "run-output",
            RetentionKind::TranscriptChunk => "transcript-chunk",
            RetentionKind::Envelope => "envelope",
            RetentionKind::Event => "event",
            RetentionKind::Leftover => "leftover",
        }
    }

    /// Whether a component built against `happyx:policy@0.1.0` (kinds as strings) can name
    /// this kind. Items of other kinds are never shown to such a component, and are kept.
    pub fn known_to_v0_1(self) -> bool {
        !matches!(self, RetentionKind::Leftover)
    }
}

impl fmt::Display for RetentionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of [`RetentionKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown retention kind (expected one of: run-output, transcript-chunk, envelope, event, leftover)"
)]
pub struct UnknownKind;

impl UnknownKind {
    pub fn code(&self) -> &'static str {
        "unknown_retention_kind"
    }
}

impl FromStr for RetentionKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetentionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownKind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for k in RetentionKind::ALL {
            let json = serde_json::to_string(&k).expect("ser");
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<RetentionKind>(&json).expect("de"), k);
            assert_eq!(k.as_str().parse::<RetentionKind>(), Ok(k));
        }
        assert_eq!("unknown-kind".parse::<RetentionKind>(), Err(UnknownKind));
    }
}
