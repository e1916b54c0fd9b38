//! Signed checkpoints as the operator commands use them: the format, signing and offline checks
//! live with the store ([`happyx_store::checkpoint`], re-exported here); this module adds the
//! check of a running host over HTTP (`happyx audit verify --url URL --checkpoint FILE`).

use serde::Serialize;

pub use happyx_store::checkpoint::*;
use happyx_store::signing::PublicKey;

/// What `happyx audit verify --url URL --checkpoint FILE` established (one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct UrlReport {
    pub checkpoint_seq: i64,
    pub signed_by: String,
    /// The host's latest checkpoint, as published.
    pub latest: Checkpoint,
    /// `contained` (the host still publishes the held `(seq, hash)`), `pruned` (the host's
    /// prune anchor is after it) or `unlisted` (the host keeps fewer checkpoints than that).
    pub standing: &'static str,
    pub detail: String,
}

/// Upper bound of one request of `--url`.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> Result<serde_json::Value, CheckpointError> {
    let fail = |reason: String| CheckpointError::Fetch {
        url: url.to_string(),
        reason,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    resp.json()
        .await
        .map_err(|_| fail("the body is not JSON".into()))
}

/// Checks a running host's latest checkpoint (from `/public/evidence`) against `held`: `held`
/// verifies under `trusted` (or, with none given, under the key it names: pinned), the latest is
/// signed by the same key, is not older, and where the host still publishes `held.seq` (its
/// latest, its prune anchor or `/public/checkpoints`) the hash is the same.
pub async fn check_url(
    url: &str,
    held: &Checkpoint,
    trusted: Vec<PublicKey>,
) -> Result<UrlReport, CheckpointError> {
    let signer = if trusted.is_empty() {
        held.signer()?
    } else {
        held.verify(&trusted)?
    };
    let base = url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| CheckpointError::Fetch {
            url: base.to_string(),
            reason: e.to_string(),
        })?;
    let evidence = get_json(&client, &format!("{base}/public/evidence")).await?;
    let latest = match evidence.get("checkpoint") {
        None | Some(serde_json::Value::Null) => return Err(CheckpointError::NonePublished),
        Some(v) => Checkpoint::parse(&v.to_string())?,
    };
    check_progress(held, &signer, &latest)?;
    let anchor_seq = evidence["chain_anchor_seq"].as_i64().unwrap_or(0);
    let same = |h: &str| h.eq_ignore_ascii_case(&held.head_sha256);
    let (standing, detail) = if latest.seq == held.seq {
        (
            "contained",
            format!(
                "the host's latest checkpoint is the one held (seq {})",
                held.seq
            ),
        )
    } else if held.seq < anchor_seq {
        (
            "pruned",
            format!(
                "seq {} was pruned (the host's prune anchor is seq {anchor_seq}); its latest \
                 checkpoint (seq {}) is signed by the same key and newer",
                held.seq, latest.seq
            ),
        )
    } else if held.seq == anchor_seq && anchor_seq > 0 {
        if !evidence["chain_anchor_sha256"].as_str().is_some_and(same) {
            return Err(CheckpointError::Diverged { seq: held.seq });
        }
        (
            "contained",
            format!("the host's prune anchor is the held seq {}", held.seq),
        )
    } else {
        let list = get_json(
            &client,
            &format!("{base}/public/checkpoints?from_seq={}&limit=1", held.seq),
        )
        .await?;
        let listed = list["items"]
            .as_array()
            .and_then(|a| a.first())
            .map(|v| Checkpoint::parse(&v.to_string()))
            .transpose()?
            .filter(|c| c.seq == held.seq);
        match listed {
            Some(c) => {
                if c.signer()? != signer || !same(&c.head_sha256) {
                    return Err(CheckpointError::Diverged { seq: held.seq });
                }
                (
                    "contained",
                    format!(
                        "the host still publishes the held checkpoint (seq {}) and a newer one \
                         (seq {}) signed by the same key",
                        held.seq, latest.seq
                    ),
                )
            }
            None => (
                "unlisted",
                format!(
                    "the host no longer lists seq {} (it keeps the newest audit.checkpoint_keep); \
                     its latest checkpoint (seq {}) is signed by the same key and newer",
                    held.seq, latest.seq
                ),
            ),
        }
    };
    Ok(UrlReport {
        checkpoint_seq: held.seq,
        signed_by: signer.to_string(),
        latest,
        standing,
        detail,
    })
}
