//! Plain data the plugin host hands to its callers (validated copies of
//! what the guests returned).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use happyx_core::retention_kind::RetentionKind;

/// A secret in scanned data: `data[start..end]`, found by `rule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: String,
    pub start: usize,
    pub end: usize,
}

/// The redactor's answer for one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redaction {
    /// Validated findings, sorted by `(start, end)`.
    pub findings: Vec<Finding>,
    /// sha256 of the redactor component that produced them.
    pub policy_hash: String,
}

/// Risk level of a recipe (defined once, in the shared vocabulary).
pub use happyx_core::vocab::Risk;

/// A recipe parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub description: String,
    pub required: bool,
}

/// A recipe as listed by the recipe plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    pub risk: Risk,
    pub params: Vec<Param>,
}

/// A rendered command, ready to execute without a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub program: String,
    pub args: Vec<String>,
    /// Effective risk: the higher of the listed and the rendered risk.
    pub risk: Risk,
    /// The risk the catalog lists for the recipe.
    pub listed_risk: Risk,
    /// Run timeout the recipe asks for (`None`: the host's default).
    pub timeout: Option<Duration>,
    /// sha256 of the recipe component that rendered it.
    pub plugin_hash: String,
}

/// Per-kind totals over everything stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub kind: RetentionKind,
    pub count: u64,
    pub bytes: u64,
}

/// Metadata of one stored item (never its contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: RetentionKind,
    pub id: String,
    /// Unix milliseconds.
    pub created_at: u64,
    pub bytes: u64,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// The retention plugin's answer: one flag per item, `true` = prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub prune: Vec<bool>,
    /// sha256 of the retention component that decided.
    pub policy_hash: String,
}

/// What `GET /v1/plugins` shows about one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    /// `redactor`, `retention` or `recipes`.
    pub kind: String,
    /// The WIT world, e.g. `recipe-book`.
    pub world: String,
    /// The `happyx:policy` version the component was built against: `0.4.0`, or `0.3.0` (no
    /// trigger groups), `0.2.0` (no redaction prefilter) or `0.1.0` for an older component
    /// served through an adapter.
    pub wit_version: String,
    /// The plugin's self-declared name and version.
    pub name: String,
    pub version: String,
    /// sha256 of the component bytes serving now.
    pub sha256: String,
    /// `builtin` or the configured file path.
    pub source: String,
    /// When the serving version was loaded (Unix ms).
    pub loaded_at: u64,
    /// The last failure of this plugin: a refused reload (the previous version keeps
    /// serving) or a failed call (trap, timeout, memory, bad result), with what was called.
    /// Cleared by a successful reload.
    pub last_error: Option<String>,
    /// When `last_error` happened (Unix ms).
    pub last_error_at: Option<u64>,
    /// Calls made to the serving version, failed calls among them, and time
    /// spent in calls (µs).
    pub calls: u64,
    pub failures: u64,
    pub total_call_us: u64,
}
