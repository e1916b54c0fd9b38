//! The legacy JSON state of the old single-process deployment (see
//! `examples/legacy-state/README.md`) and its mapping to HappyX tables.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Result, TransferError};
use crate::store::transfer::ImportTarget;

/// Loads a legacy state directory into `target`.
pub async fn load(dir: &Path, target: &mut ImportTarget) -> Result<BTreeMap<String, u64>> {
    let _ = target;
    Err(TransferError::invalid(
        &dir.display().to_string(),
        "",
        "legacy import is not implemented",
    ))
}
