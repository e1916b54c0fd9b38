//! Typed plugin errors with stable codes.
//!
//! `Display` names the plugin (name, author version, sha256) and the kind of
//! failure; it never includes guest output, call input or anything else the
//! plugin could choose, except the plugin's own name and version (bounded and
//! sanitised when read, see `runtime::Meta`).

use std::fmt;

/// Which plugin an error is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginRef {
    /// Plugin kind: `redactor`, `retention` or `recipes` (or `component` for
    /// a component checked on its own).
    pub kind: String,
    /// The plugin's self-declared name (empty before it could be asked).
    pub name: String,
    /// The plugin's self-declared version.
    pub version: String,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} plugin", self.kind)?;
        if !self.name.is_empty() {
            write!(f, " {} {}", self.name, self.version)?;
        }
        match self.sha256.get(..12) {
            Some(short) => write!(f, " (sha256 {short})"),
            None => Ok(()),
        }
    }
}

/// A plugin failure. Every variant has a stable [`PluginError::code`].
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The guest trapped (panic, unreachable, bad memory access...).
    #[error("{plugin} trapped")]
    Trap { plugin: Box<PluginRef> },
    /// The call ran past its epoch deadline.
    #[error("{plugin} ran past its {timeout_ms} ms deadline")]
    Timeout {
        plugin: Box<PluginRef>,
        timeout_ms: u64,
    },
    /// The instance tried to grow its memories and tables past the limit.
    #[error("{plugin} exceeded its memory limit of {limit_bytes} bytes")]
    Memory {
        plugin: Box<PluginRef>,
        limit_bytes: u64,
    },
    /// The plugin returned an answer the host refuses.
    #[error("{plugin} returned a bad result: {reason}")]
    BadResult {
        plugin: Box<PluginRef>,
        reason: String,
    },
    /// The plugin returned an error value (`result::err`) from a policy call.
    #[error("{plugin} reported an error")]
    Failed { plugin: Box<PluginRef> },
    /// The component imports something the host does not provide.
    #[error("{plugin} imports `{import}`, which the host does not provide")]
    UnknownImport {
        plugin: Box<PluginRef>,
        import: String,
    },
    /// The component was built against another `happyx:policy` version.
    #[error("{plugin} implements happyx:policy@{found}, this host speaks happyx:policy@{host}")]
    WitVersion {
        plugin: Box<PluginRef>,
        found: String,
        host: String,
    },
    /// The component implements another world than the one configured.
    #[error("{plugin} implements {found}, expected world {expected}")]
    WrongWorld {
        plugin: Box<PluginRef>,
        expected: String,
        found: String,
    },
    /// The bytes are not a valid component (or could not be compiled).
    #[error("{plugin} is not a valid component: {reason}")]
    Invalid {
        plugin: Box<PluginRef>,
        reason: String,
    },
    /// The component's sha256 differs from the configured pin.
    #[error("{plugin} does not match its sha256 pin {expected}")]
    HashMismatch {
        plugin: Box<PluginRef>,
        expected: String,
    },
    /// The plugin refused its settings, or the configuration is unusable.
    #[error("{plugin} configuration refused: {reason}")]
    Config {
        plugin: Box<PluginRef>,
        reason: String,
    },
    /// The component passed loading but failed a contract check or fixture.
    #[error("{plugin} failed contract check `{check}`")]
    Contract {
        plugin: Box<PluginRef>,
        check: String,
    },
    /// Reading the plugin file or the compile cache failed.
    #[error("{plugin}: {context}: {source}")]
    Io {
        plugin: Box<PluginRef>,
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The host could not run the call (engine, pool or thread failure).
    #[error("{plugin}: host failure: {reason}")]
    Host {
        plugin: Box<PluginRef>,
        reason: String,
    },
}

impl PluginError {
    /// Stable, snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            PluginError::Trap { .. } => "plugin_trap",
            PluginError::Timeout { .. } => "plugin_timeout",
            PluginError::Memory { .. } => "plugin_memory",
            PluginError::BadResult { .. } => "plugin_bad_result",
            PluginError::Failed { .. } => "plugin_failed",
            PluginError::UnknownImport { .. } => "plugin_unknown_import",
            PluginError::WitVersion { .. } => "plugin_wit_version",
            PluginError::WrongWorld { .. } => "plugin_wrong_world",
            PluginError::Invalid { .. } => "plugin_invalid",
            PluginError::HashMismatch { .. } => "plugin_hash_mismatch",
            PluginError::Config { .. } => "plugin_config",
            PluginError::Contract { .. } => "plugin_contract",
            PluginError::Io { .. } => "plugin_io",
            PluginError::Host { .. } => "plugin_host",
        }
    }

    /// The plugin the error is about.
    pub fn plugin(&self) -> &PluginRef {
        match self {
            PluginError::Trap { plugin }
            | PluginError::Timeout { plugin, .. }
            | PluginError::Memory { plugin, .. }
            | PluginError::BadResult { plugin, .. }
            | PluginError::Failed { plugin }
            | PluginError::UnknownImport { plugin, .. }
            | PluginError::WitVersion { plugin, .. }
            | PluginError::WrongWorld { plugin, .. }
            | PluginError::Invalid { plugin, .. }
            | PluginError::HashMismatch { plugin, .. }
            | PluginError::Config { plugin, .. }
            | PluginError::Contract { plugin, .. }
            | PluginError::Io { plugin, .. }
            | PluginError::Host { plugin, .. } => plugin,
        }
    }
}

/// Why a recipe could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown recipe `{0}`")]
    UnknownRecipe(String),
    #[error("missing argument `{0}`")]
    MissingArg(String),
    #[error("unknown argument `{0}`")]
    UnknownArg(String),
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArg { name: String, reason: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl RenderError {
    /// Stable, snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            RenderError::UnknownRecipe(_) => "unknown_recipe",
            RenderError::MissingArg(_) => "missing_arg",
            RenderError::UnknownArg(_) => "unknown_arg",
            RenderError::InvalidArg { .. } => "invalid_arg",
            RenderError::Plugin(e) => e.code(),
        }
    }
}
