//! Operator configuration of the policy plugins (`[plugins]` in the host's
//! config file).
//!
//! ```toml
//! [plugins]
//! watch = true                 # poll configured files every second, reload on change
//!
//! [plugins.redactor]
//! path = "/etc/happyx/plugins/redactor.wasm"
//! sha256 = "…"                 # optional pin; a mismatch refuses the file
//! memory_mib = 64              # limit on the instance's memories + tables
//! timeout_ms = 1000            # epoch deadline per call
//! fixtures = "/etc/happyx/plugins/conformance/redaction"   # optional
//! [plugins.redactor.settings]
//! disable = "jwt"
//! ```
//!
//! A kind without a section (or a section without `path`) uses the sample
//! plugin built into the binary, with the section's settings and limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default memory limit per instance (all memories and tables together).
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// Default deadline per call.
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Largest accepted memory limit (the pooling allocator is sized for it).
pub const MAX_MEMORY_MIB: u32 = 256;
/// Largest accepted deadline.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// All plugin settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    #[serde(default)]
    pub redactor: Option<PluginSpec>,
    #[serde(default)]
    pub retention: Option<PluginSpec>,
    #[serde(default)]
    pub recipes: Option<PluginSpec>,
    /// Poll the configured plugin files (every second) and reload on change.
    #[serde(default)]
    pub watch: bool,
    /// Directory of the compile cache. The host opens it (as a capability)
    /// and hands it to [`super::PluginHost::load`]; `None` means the caller's
    /// default (under the data dir) or no cache.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

/// One plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// The component file; `None` = the built-in sample.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Optional hex sha256 pin of the component file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Passed to the plugin's `configure` on every fresh instance.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Memory limit in MiB over all memories and tables of an instance.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Deadline per call in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Operator fixtures for this plugin's interface (see
    /// `tests/conformance/README.md`), run at load and on every reload.
    #[serde(default)]
    pub fixtures: Option<PathBuf>,
}

/// The kinds of policy plugin, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Redactor,
    Retention,
    Recipes,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 3] = [Kind::Redactor, Kind::Retention, Kind::Recipes];

    /// The config key of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Redactor => "redactor",
            Kind::Retention => "retention",
            Kind::Recipes => "recipes",
        }
    }

    /// The WIT world this kind implements.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Redactor => "redactor",
            Kind::Retention => "retention-policy",
            Kind::Recipes => "recipe-book",
        }
    }

    /// The policy interface this kind exports (also the fixtures folder name).
    pub fn interface(self) -> &'static str {
        match self {
            Kind::Redactor => "redaction",
            Kind::Retention => "retention",
            Kind::Recipes => "recipes",
        }
    }
}

impl PluginsConfig {
    /// The spec for one kind.
    pub fn spec(&self, kind: Kind) -> Option<&PluginSpec> {
        match kind {
            Kind::Redactor => self.redactor.as_ref(),
            Kind::Retention => self.retention.as_ref(),
            Kind::Recipes => self.recipes.as_ref(),
        }
    }
}

/// Limits of one plugin after defaults and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: u64::from(DEFAULT_MEMORY_MIB) << 20,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

impl PluginSpec {
    /// The limits this spec asks for, or a reason they are out of bounds.
    pub fn limits(&self) -> Result<Limits, String> {
        let mib = self.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        if mib == 0 || mib > MAX_MEMORY_MIB {
            return Err(format!("memory_mib must be 1..={MAX_MEMORY_MIB}"));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!("timeout_ms must be 1..={MAX_TIMEOUT_MS}"));
        }
        Ok(Limits {
            memory_bytes: u64::from(mib) << 20,
            timeout_ms,
        })
    }
}
