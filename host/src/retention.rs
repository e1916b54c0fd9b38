//! The one pruner: asks the retention plugin about batches of item metadata
//! (never contents) with per-kind totals, deletes what it decides in bounded
//! batches, and records what it pruned. Every batch is its own transaction,
//! so a pass killed midway leaves a consistent store, and a rerun reaches the
//! same end state.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plugins::{Item, PluginError, PluginHost, Totals};
use crate::store::{Store, StoreError, retention_kinds};
use crate::util::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("the retention plugin answered {got} decisions for {want} items")]
    BadAnswer { got: usize, want: usize },
}

impl PruneError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(e) => e.code(),
            Self::Plugin(e) => e.code(),
            Self::BadAnswer { .. } => "plugin_bad_result",
        }
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PruneReport {
    /// Items removed per kind.
    pub pruned: BTreeMap<String, u64>,
    /// Items examined per kind.
    pub examined: BTreeMap<String, u64>,
    pub policy_hash: String,
}

/// Runs one pass over every kind.
pub async fn prune_once(
    store: &Store,
    plugins: &PluginHost,
    batch: u32,
) -> Result<PruneReport, PruneError> {
    let mut report = PruneReport::default();
    let now = now_ms().max(0) as u64;
    for kind in retention_kinds() {
        let mut after: Option<(i64, String)> = None;
        let (mut pruned, mut examined) = (0u64, 0u64);
        loop {
            let items = store
                .retention_items(
                    kind,
                    after.as_ref().map(|(a, i)| (*a, i.as_str())),
                    i64::from(batch),
                )
                .await?;
            if items.is_empty() {
                break;
            }
            let mut totals = Vec::new();
            for k in retention_kinds() {
                let (count, bytes) = store.retention_totals(k).await?;
                totals.push(Totals {
                    kind: k.to_string(),
                    count: count.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                });
            }
            let meta: Vec<Item> = items
                .iter()
                .map(|i| Item {
                    kind: kind.to_string(),
                    id: i.id.clone(),
                    created_at: i.created_at.max(0) as u64,
                    bytes: i.bytes.max(0) as u64,
                    session_id: i.session_id.clone(),
                })
                .collect();
            let decision = plugins.decide_retention(now, &totals, &meta).await?;
            if decision.prune.len() != items.len() {
                return Err(PruneError::BadAnswer {
                    got: decision.prune.len(),
                    want: items.len(),
                });
            }
            report.policy_hash = decision.policy_hash.clone();
            examined += items.len() as u64;
            // The event log is only ever cut at its oldest end.
            let take: Vec<String> = if kind == "event" {
                items
                    .iter()
                    .zip(&decision.prune)
                    .take_while(|(_, p)| **p)
                    .map(|(i, _)| i.id.clone())
                    .collect()
            } else {
                items
                    .iter()
                    .zip(&decision.prune)
                    .filter(|(_, p)| **p)
                    .map(|(i, _)| i.id.clone())
                    .collect()
            };
            let kept_all = take.is_empty();
            let stop_events = kind == "event" && take.len() < items.len();
            pruned += store.prune_items(kind, &take).await?;
            if let Some(last) = items.last() {
                after = Some((last.created_at, last.id.clone()));
            }
            // Items come oldest first: once a whole batch is kept, newer ones are too.
            if kept_all || stop_events {
                break;
            }
        }
        report.pruned.insert(kind.to_string(), pruned);
        report.examined.insert(kind.to_string(), examined);
    }
    let counts = serde_json::to_value(&report.pruned).unwrap_or_default();
    store.record_prune(&report.policy_hash, &counts).await?;
    Ok(report)
}
