//! Signed checkpoints of the event chain: the host's Ed25519 signature over a head of the
//! chain ([`crate::audit`]), so that whoever keeps one can later hold the host to the history
//! it had signed (`happyx audit verify --checkpoint FILE`).
//!
//! # Byte format (version 1)
//!
//! The host key (`DATA/host-signing.key`, [`crate::signing`]) signs
//!
//! ```text
//! "happyx-checkpoint-v1\n" || u64be(seq) || head (32 bytes) || i64be(at)
//! ```
//!
//! where `seq` is the newest event's `seq`, `head` its chain hash (the raw 32 bytes of the
//! stored hex) and `at` the signing time in Unix milliseconds. The domain separator keeps a
//! checkpoint signature from ever being an export signature or the reverse.
//!
//! # Published form
//!
//! `/public/evidence` (field `checkpoint`) and the files `--checkpoint` reads are this JSON:
//!
//! ```text
//! {"version":1,"seq":42,"head_sha256":"<64 hex>","at":1767225600000,
//!  "public_key":"<standard base64, 32 bytes>","signature":"<standard base64, 64 bytes>"}
//! ```
//!
//! # Checking a data dir or an export against one ([`check_against_chain`])
//!
//! The signature must verify under a trusted key (not merely the key the file names); the
//! chain must verify on its own; then the chain must still contain the checkpoint's
//! `(seq, head)`: the event at `seq` has that hash (or the prune anchor has it when the anchor
//! is exactly at `seq`). A checkpoint older than the anchor was pruned past: that is reported as
//! such, never as a match. A chain that ends before `seq` lost its newest events (the first
//! missing `seq` is named).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{self, ChainSummary};
use crate::signing::{HostKey, PublicKey};

/// Domain separator of the version-1 checkpoint message.
pub const DOMAIN: &[u8] = b"happyx-checkpoint-v1\n";
/// The `version` this binary writes and reads.
pub const VERSION: u32 = 1;
/// Largest checkpoint file `--checkpoint` reads.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A signed checkpoint, as published. Holds only public values (a hash, a public key and a
/// signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    /// Format version (1).
    pub version: u32,
    /// `seq` of the newest event when it was signed.
    pub seq: i64,
    /// The chain hash of that event (see `happyx audit verify`).
    #[schema(format = "sha256")]
    pub head_sha256: String,
    /// When it was signed (Unix ms).
    pub at: i64,
    /// The host's Ed25519 public key (standard base64, 32 bytes; `happyx host-key`).
    pub public_key: String,
    /// Ed25519 signature (standard base64, 64 bytes) of
    /// `"happyx-checkpoint-v1\n" || u64be(seq) || head (32 bytes) || i64be(at)`.
    pub signature: String,
}

/// Why a checkpoint is refused, or does not match. Messages hold sequence numbers and
/// public hashes at most; never key material.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is malformed: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint's signature does not verify under the key it names")]
    BadSignature,
    #[error(
        "the checkpoint is signed by {signer}, which is not a trusted key \
         (pass the host's key with --trusted-key; `happyx host-key` prints it)"
    )]
    Untrusted { signer: String },
    #[error("no trusted key: pass the host's public key with --trusted-key")]
    NoTrustedKey,
    #[error(transparent)]
    Chain(#[from] audit::ChainError),
    #[error(
        "the chain ends at seq {head_seq}, before the checkpoint's seq {seq}: events from seq {} \
         on were removed",
        head_seq + 1
    )]
    Truncated { seq: i64, head_seq: i64 },
    #[error(
        "the chain at seq {seq} is not the history the checkpoint signed: the events up to seq \
         {seq} were rewritten"
    )]
    Diverged { seq: i64 },
    #[error("the host now signs with another key ({now}) than the checkpoint's ({then})")]
    KeyChanged { then: String, now: String },
    #[error(
        "the host's latest checkpoint (seq {now}) is older than the one held (seq {then}): \
         its history was rolled back"
    )]
    Regressed { then: i64, now: i64 },
    #[error("the host publishes no checkpoint yet")]
    NonePublished,
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
}

impl CheckpointError {
    /// Stable, snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "checkpoint_malformed",
            Self::BadSignature => "checkpoint_bad_signature",
            Self::Untrusted { .. } => "checkpoint_untrusted_key",
            Self::NoTrustedKey => "checkpoint_no_trusted_key",
            Self::Chain(e) => e.code(),
            Self::Truncated { .. } => "checkpoint_truncated",
            Self::Diverged { .. } => "checkpoint_diverged",
            Self::KeyChanged { .. } => "checkpoint_key_changed",
            Self::Regressed { .. } => "checkpoint_regressed",
            Self::NonePublished => "checkpoint_none_published",
            Self::Fetch { .. } => "checkpoint_fetch_failed",
        }
    }

    /// The first bad `seq`, when the failure names one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Self::Chain(e) => Some(e.seq),
            Self::Truncated { head_seq, .. } => Some(head_seq + 1),
            Self::Diverged { seq } => Some(*seq),
            _ => None,
        }
    }
}

/// The signed message (see the module docs).
pub fn message(seq: i64, head: &[u8; 32], at: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 8 + 32 + 8);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&(seq as u64).to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&at.to_be_bytes());
    m
}

impl Checkpoint {
    /// Signs `(seq, head, at)` with the host key. `None` when `head_hex` is not a hash.
    pub fn sign(key: &HostKey, seq: i64, head_hex: &str, at: i64) -> Option<Checkpoint> {
        let head = audit::parse_hash(head_hex)?;
        Some(Checkpoint {
            version: VERSION,
            seq,
            head_sha256: hex::encode(head),
            at,
            public_key: key.public().to_string(),
            signature: key.sign_message(&message(seq, &head, at)),
        })
    }

    /// Parses a published checkpoint (a JSON object as above).
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let c: Checkpoint = serde_json::from_str(text)
            .map_err(|_| CheckpointError::Malformed("not a checkpoint JSON object"))?;
        c.well_formed()?;
        Ok(c)
    }

    fn well_formed(&self) -> Result<([u8; 32], PublicKey), CheckpointError> {
        if self.version != VERSION {
            return Err(CheckpointError::Malformed("unsupported version"));
        }
        if self.seq < 0 {
            return Err(CheckpointError::Malformed("seq is negative"));
        }
        let head = audit::parse_hash(&self.head_sha256).ok_or(CheckpointError::Malformed(
            "head_sha256 is not 64 hex digits",
        ))?;
        let key = PublicKey::parse(&self.public_key).ok_or(CheckpointError::Malformed(
            "public_key is not an Ed25519 key",
        ))?;
        Ok((head, key))
    }

    /// The key the checkpoint names, if its signature verifies under it.
    pub fn signer(&self) -> Result<PublicKey, CheckpointError> {
        let (head, key) = self.well_formed()?;
        if key.verifies_message(&message(self.seq, &head, self.at), &self.signature) {
            Ok(key)
        } else {
            Err(CheckpointError::BadSignature)
        }
    }

    /// Checks the signature, and that its signer is one of `trusted`.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<PublicKey, CheckpointError> {
        let signer = self.signer()?;
        if trusted.is_empty() {
            return Err(CheckpointError::NoTrustedKey);
        }
        if !trusted.contains(&signer) {
            return Err(CheckpointError::Untrusted {
                signer: signer.to_string(),
            });
        }
        Ok(signer)
    }

    /// Whether a JSON object is a checkpoint whose signature verifies: its `public_key` and
    /// `signature` are then public by proof (the leak scanner of `verify-public` asks).
    pub fn is_verified_json(v: &serde_json::Map<String, serde_json::Value>) -> bool {
        serde_json::from_value::<Checkpoint>(serde_json::Value::Object(v.clone()))
            .is_ok_and(|c| c.signer().is_ok())
    }
}

/// How a checkpoint relates to a chain that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// The chain still holds the checkpoint's `(seq, hash)`.
    Contained,
    /// The checkpoint's `seq` was pruned: the anchor is after it, so the signed event itself
    /// can no longer be compared (only that nothing was un-pruned or truncated before it).
    Pruned,
}

/// The result of a successful check, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    pub checkpoint_seq: i64,
    pub checkpoint_at: i64,
    pub signed_by: String,
    pub standing: Standing,
    /// A sentence saying what was established.
    pub detail: String,
    pub chain: ChainSummary,
}

/// Checks a verified checkpoint against a chain that verified (`summary`); `hash_at(seq)` reads
/// the stored hash of the event at `seq`, if any (see the module docs).
pub fn check_against_chain(
    cp: &Checkpoint,
    signer: &PublicKey,
    summary: ChainSummary,
    hash_at: Option<String>,
) -> Result<CheckpointReport, CheckpointError> {
    let report = |standing, detail: String, summary| CheckpointReport {
        checkpoint_seq: cp.seq,
        checkpoint_at: cp.at,
        signed_by: signer.to_string(),
        standing,
        detail,
        chain: summary,
    };
    if cp.seq > summary.head_seq {
        return Err(CheckpointError::Truncated {
            seq: cp.seq,
            head_seq: summary.head_seq,
        });
    }
    if cp.seq < summary.anchor_seq {
        let detail = format!(
            "seq {} was pruned: the prune anchor (seq {}) is after it, so the signed event can no \
             longer be compared; the chain from the anchor to seq {} verifies",
            cp.seq, summary.anchor_seq, summary.head_seq
        );
        return Ok(report(Standing::Pruned, detail, summary));
    }
    let stored = if cp.seq == summary.anchor_seq {
        Some(summary.anchor_hash.clone())
    } else {
        hash_at
    };
    let matches = stored
        .as_deref()
        .and_then(audit::parse_hash)
        .zip(audit::parse_hash(&cp.head_sha256))
        .is_some_and(|(a, b)| a == b);
    if !matches {
        return Err(CheckpointError::Diverged { seq: cp.seq });
    }
    let detail = format!(
        "the chain still holds the signed event at seq {} and verifies through seq {}",
        cp.seq, summary.head_seq
    );
    Ok(report(Standing::Contained, detail, summary))
}

/// Checks a host's newest checkpoint (`now`) against an older one held (`then`, already
/// verified under `signer`): same key, not older, and the same hash when at the same `seq`.
pub fn check_progress(
    then: &Checkpoint,
    signer: &PublicKey,
    now: &Checkpoint,
) -> Result<(), CheckpointError> {
    let now_signer = now.signer()?;
    if &now_signer != signer {
        return Err(CheckpointError::KeyChanged {
            then: signer.to_string(),
            now: now_signer.to_string(),
        });
    }
    if now.seq < then.seq {
        return Err(CheckpointError::Regressed {
            then: then.seq,
            now: now.seq,
        });
    }
    if now.seq == then.seq && !now.head_sha256.eq_ignore_ascii_case(&then.head_sha256) {
        return Err(CheckpointError::Diverged { seq: then.seq });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (tempfile::TempDir, HostKey) {
        let tmp = tempfile::tempdir().expect("tmp");
        let k = HostKey::load_or_create(tmp.path()).expect("key");
        (tmp, k)
    }

    fn summary(anchor: i64, head: i64) -> ChainSummary {
        ChainSummary {
            events: (head - anchor) as u64,
            head_seq: head,
            head_hash: "11".repeat(32),
            anchor_seq: anchor,
            anchor_hash: "22".repeat(32),
        }
    }

    #[test]
    fn the_message_layout_is_pinned() {
        let m = message(5, &[7; 32], -1);
        assert_eq!(&m[..DOMAIN.len()], b"happyx-checkpoint-v1\n");
        assert_eq!(&m[DOMAIN.len()..DOMAIN.len() + 8], &5u64.to_be_bytes());
        assert_eq!(&m[DOMAIN.len() + 8..DOMAIN.len() + 40], &[7; 32]);
        assert_eq!(&m[DOMAIN.len() + 40..], &(-1i64).to_be_bytes());
    }

    #[test]
    fn signed_checkpoints_verify_and_changes_are_refused() {
        let (_t, k) = key();
        let cp = Checkpoint::sign(&k, 9, &"ab".repeat(32), 1000).expect("sign");
        let parsed = Checkpoint::parse(&serde_json::to_string(&cp).expect("json")).expect("parse");
        assert_eq!(parsed.verify(&[k.public()]).expect("verify"), k.public());
        for forged in [
            Checkpoint {
                seq: 10,
                ..cp.clone()
            },
            Checkpoint {
                at: 1001,
                ..cp.clone()
            },
            Checkpoint {
                head_sha256: "ac".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                signature: String::new(),
                ..cp.clone()
            },
        ] {
            assert_eq!(
                forged.verify(&[k.public()]).map_err(|e| e.code()),
                Err("checkpoint_bad_signature")
            );
        }
        let (_o, other) = key();
        assert_eq!(
            cp.verify(&[other.public()]).map_err(|e| e.code()),
            Err("checkpoint_untrusted_key")
        );
        assert_eq!(
            cp.verify(&[]).map_err(|e| e.code()),
            Err("checkpoint_no_trusted_key")
        );
        assert!(Checkpoint::parse("{}").is_err());
        let mut v = serde_json::to_value(&cp).expect("json");
        v["version"] = 2.into();
        assert_eq!(
            Checkpoint::parse(&v.to_string()).map_err(|e| e.code()),
            Err("checkpoint_malformed")
        );
        let obj = serde_json::to_value(&cp).expect("json");
        assert!(Checkpoint::is_verified_json(obj.as_object().expect("obj")));
        let forged = serde_json::to_value(Checkpoint { seq: 1, ..cp }).expect("json");
        assert!(!Checkpoint::is_verified_json(
            forged.as_object().expect("obj")
        ));
    }

    #[test]
    fn standing_against_a_chain() {
        let (_t, k) = key();
        let pk = k.public();
        let at = |seq: i64, h: &str| Checkpoint::sign(&k, seq, h, 1).expect("sign");
        let held = at(5, &"33".repeat(32));
        let ok = check_against_chain(&held, &pk, summary(0, 8), Some("33".repeat(32)))
            .expect("contained");
        assert_eq!(ok.standing, Standing::Contained);
        let err = check_against_chain(&held, &pk, summary(0, 8), Some("44".repeat(32)))
            .expect_err("diverged");
        assert_eq!((err.code(), err.seq()), ("checkpoint_diverged", Some(5)));
        // The newest event is the edge: at the head it is contained, one past it truncated.
        let err = check_against_chain(&held, &pk, summary(0, 4), None).expect_err("truncated");
        assert_eq!((err.code(), err.seq()), ("checkpoint_truncated", Some(5)));
        assert!(check_against_chain(&held, &pk, summary(0, 5), Some("33".repeat(32))).is_ok());
        // Pruned past: reported as such; at the anchor exactly, compared with the anchor.
        let pruned = check_against_chain(&held, &pk, summary(6, 8), None).expect("pruned");
        assert_eq!(pruned.standing, Standing::Pruned);
        let at_anchor = at(6, &"22".repeat(32));
        assert_eq!(
            check_against_chain(&at_anchor, &pk, summary(6, 8), None)
                .expect("anchor")
                .standing,
            Standing::Contained
        );
        assert!(check_against_chain(&at(6, &"23".repeat(32)), &pk, summary(6, 8), None).is_err());
    }

    #[test]
    fn progress_needs_the_same_key_and_no_rollback() {
        let (_t, k) = key();
        let pk = k.public();
        let old = Checkpoint::sign(&k, 5, &"33".repeat(32), 1).expect("sign");
        let newer = Checkpoint::sign(&k, 7, &"55".repeat(32), 2).expect("sign");
        assert!(check_progress(&old, &pk, &newer).is_ok());
        assert!(check_progress(&old, &pk, &old).is_ok());
        assert_eq!(
            check_progress(&newer, &pk, &old).map_err(|e| e.code()),
            Err("checkpoint_regressed")
        );
        let same_seq = Checkpoint::sign(&k, 5, &"34".repeat(32), 3).expect("sign");
        assert_eq!(
            check_progress(&old, &pk, &same_seq).map_err(|e| e.code()),
            Err("checkpoint_diverged")
        );
        let (_o, other) = key();
        let foreign = Checkpoint::sign(&other, 9, &"55".repeat(32), 2).expect("sign");
        assert_eq!(
            check_progress(&old, &pk, &foreign).map_err(|e| e.code()),
            Err("checkpoint_key_changed")
        );
    }
}
